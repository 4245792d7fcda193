//! The client's TLS: which CA to trust, which name to verify, which client
//! certificate to present ([`ClientTls`]); the connector built from them
//! once per [`Client`](super::Client); and the translation of rustls's
//! errors into [`ConnectError`]s that say what is wrong and what to do.
//!
//! Trust comes from the system's store (rustls-native-certs) unless a CA
//! file is given: the operator's own CAs and the distribution's updates
//! apply, rather than a copy of Mozilla's list frozen in at build time
//! (webpki-roots).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::transport::ConnectError;
use crate::pem::{load_certificates, load_private_key};

/// How a client speaks TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Trust only the CA certificates in this PEM file; `None` trusts the
    /// system's root certificates.
    pub ca: Option<PathBuf>,
    /// Name the server's certificate must be valid for; `None` takes the
    /// host part of the server address.
    pub server_name: Option<String>,
    /// Client certificate chain (PEM), for servers that require one; needs `key`.
    pub cert: Option<PathBuf>,
    /// Private key of `cert` (PEM).
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Reads the files and builds the connector for `server` (`host:port`).
    ///
    /// # Errors
    /// [`ConnectError::TlsSetup`]: an unreadable or empty CA, certificate or
    /// key file, a certificate without its key, no system roots, or a name
    /// that cannot be a TLS server name.
    pub fn connector(&self, server: &str) -> Result<TlsConnector, ConnectError> {
        let setup = |error: &dyn std::fmt::Display| ConnectError::TlsSetup(error.to_string());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                for certificate in load_certificates(path, "CA").map_err(|e| setup(&e))? {
                    roots.add(certificate).map_err(|error| {
                        setup(&format!(
                            "cannot trust the CA in {}: {error}",
                            path.display()
                        ))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(setup(&format!(
                        "no trusted root certificates in the system store ({} error(s) reading it); pass the server's CA with --tls-ca",
                        found.errors.len()
                    )));
                }
            }
        }
        // Explicit provider: the process default would be ambiguous if
        // another crate in the build enabled aws-lc-rs.
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?
        .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    load_certificates(cert, "certificate").map_err(|e| setup(&e))?,
                    load_private_key(key).map_err(|e| setup(&e))?,
                )
                .map_err(|error| {
                    setup(&format!(
                        "cannot use the client certificate {} with the key {}: {error}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            _ => {
                return Err(setup(
                    &"a client certificate needs both --tls-cert and --tls-key",
                ))
            }
        };
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(server).to_owned());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            setup(&format!(
                "{name:?} cannot be a TLS server name; set --tls-server-name"
            ))
        })?;
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// What a client needs for each TLS handshake; cheap to share across reconnects.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Runs the TLS handshake over `tcp`.
    ///
    /// # Errors
    /// A [`ConnectError`] explaining the failure (see [`Self::explain`]).
    pub(crate) async fn handshake(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|error| {
                if error.kind() == io::ErrorKind::UnexpectedEof {
                    ConnectError::TlsHandshake {
                        addr: addr.to_owned(),
                        detail: "the server closed the connection during the TLS handshake".into(),
                    }
                } else {
                    self.explain(addr, error)
                }
            })
    }

    /// Turns an IO error from a TLS stream into a [`ConnectError`] that says
    /// what went wrong: not trusted, wrong name, not TLS at all, client
    /// certificate refused. Errors that are not TLS's stay [`ConnectError::Io`].
    pub(crate) fn explain(&self, addr: &str, error: io::Error) -> ConnectError {
        let Some(tls_error) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return ConnectError::Io(error);
        };
        let addr = addr.to_owned();
        let detail = tls_error.to_string();
        match tls_error {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => ConnectError::CertificateNameMismatch {
                addr,
                name: server_name_text(&self.server_name),
                detail,
            },
            rustls::Error::InvalidCertificate(_) => {
                ConnectError::CertificateNotTrusted { addr, detail }
            }
            // A plain lubdub answer (REJECT, length prefix 00 ..) or
            // anything else that is not a TLS record.
            rustls::Error::InvalidMessage(_) | rustls::Error::PeerSentOversizedRecord => {
                ConnectError::NotTls { addr }
            }
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                ConnectError::ClientCertificateRefused {
                    addr,
                    detail:
                        "the server requires a client certificate: pass --tls-cert and --tls-key"
                            .into(),
                }
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied,
            ) => ConnectError::ClientCertificateRefused { addr, detail },
            _ => ConnectError::TlsHandshake { addr, detail },
        }
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(server: &str) -> &str {
    if let Some(bracketed) = server.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match server.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_part() {
        assert_eq!(host_of("example.com:7070"), "example.com");
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let settings = ClientTls {
            cert: Some("/nonexistent/client.crt".into()),
            ..ClientTls::default()
        };
        let error = settings
            .connector("localhost:7070")
            .expect_err("needs a key");
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let settings = ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientTls::default()
        };
        let error = settings.connector("localhost:7070").expect_err("no file");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        assert!(!error.is_retryable());
    }
}
