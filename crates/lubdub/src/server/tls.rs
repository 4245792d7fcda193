//! The server's TLS settings: which PEM files to load ([`TlsFiles`]) and the
//! `rustls::ServerConfig` built from them once at start, shared by every
//! connection; plus the first-byte tests that tell TLS from plain lubdub
//! when a client and the server disagree.
//!
//! Loading happens before the event loop starts, so every mistake (missing
//! file, no certificate in it, a key that does not match) stops the server
//! with a message naming the file instead of failing each handshake later.

use std::path::PathBuf;
use std::sync::Arc;

use crate::pem::{load_certificates, load_private_key, PemError};

use lubdub_core::connection::texts::looks_like_client_hello;
pub use lubdub_core::connection::texts::{TLS_ON_PLAIN_TEXT, TLS_REQUIRED_TEXT};

/// Where the server's TLS certificate and key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// Private key of the leaf certificate: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of the CAs
    /// in this file (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
    /// A client may claim only a name its certificate carries: a subject
    /// CN or a DNS subject alternative name, byte for byte
    /// (`--tls-client-cert-names`; see [`crate::auth::certificate`]).
    /// Needs `client_ca`.
    #[serde(default)]
    pub client_cert_names: bool,
}

/// Why the TLS settings cannot be used; each message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable, or lacks what it should hold.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The private key is not the key of the certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Names bound to client certificates, but no client certificates asked for.
    #[error("binding names to client certificates (--tls-client-cert-names) needs --tls-client-ca: without it clients present no certificate")]
    CertNamesWithoutClientCa,
    /// rustls refused the certificate, key or CA for another reason.
    #[error("cannot use {}: {detail}", path.display())]
    Unusable {
        /// The file at fault.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
}

/// Builds the shared server configuration from the files.
///
/// # Errors
/// [`TlsError`] naming the file that is missing, empty, broken or mismatched.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    if files.client_cert_names && files.client_ca.is_none() {
        return Err(TlsError::CertNamesWithoutClientCa);
    }
    let chain = load_certificates(&files.cert, "certificate")?;
    crate::auth::private_file::warn_if_exposed(&files.key, "--tls-key");
    let key = load_private_key(&files.key)?;
    // Explicit provider: another crate in the build enabling aws-lc-rs
    // must not make the process-wide default ambiguous.
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| TlsError::Unusable {
        path: files.cert.clone(),
        detail: error.to_string(),
    })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in load_certificates(path, "client CA")? {
                roots.add(certificate).map_err(|error| TlsError::Unusable {
                    path: path.clone(),
                    detail: error.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .map_err(|error| TlsError::Unusable {
                path: path.clone(),
                detail: error.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                }
            }
            other => TlsError::Unusable {
                path: files.key.clone(),
                detail: other.to_string(),
            },
        })?;
    Ok(Arc::new(config))
}

/// Whether a connection's first byte opens a TLS handshake.
pub(crate) fn is_tls_record_start(first: u8) -> bool {
    looks_like_client_hello(&[first, 0x03])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lubdub-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    fn generated(name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("rcgen generates");
        (
            write_temp(&format!("{name}.crt"), &certified.cert.pem()),
            write_temp(
                &format!("{name}.key"),
                &certified.signing_key.serialize_pem(),
            ),
        )
    }

    fn files(cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles {
            cert,
            key,
            client_ca: None,
            client_cert_names: false,
        }
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let (cert, key) = generated("good");
        server_config(&files(cert, key)).expect("loads");
    }

    #[test]
    fn a_missing_file_is_named() {
        let (_, key) = generated("missing");
        let error =
            server_config(&files("/nonexistent/lubdub.crt".into(), key)).expect_err("missing file");
        assert!(matches!(
            error,
            TlsError::Pem(PemError::Read {
                what: "certificate",
                ..
            })
        ));
        assert!(
            error.to_string().contains("/nonexistent/lubdub.crt"),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let (_, key) = generated("nocert");
        let empty = write_temp("empty.crt", "not a certificate\n");
        let error = server_config(&files(empty, key.clone())).expect_err("no certificate");
        assert!(error.to_string().contains("no certificate"), "{error}");
        // A key file given as the certificate holds no certificate either.
        let error = server_config(&files(key.clone(), key)).expect_err("key as cert");
        assert!(
            matches!(error, TlsError::Pem(PemError::Missing { .. })),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_a_key_is_refused() {
        let (cert, _) = generated("nokey");
        let error = server_config(&files(cert.clone(), cert)).expect_err("no key");
        assert!(error.to_string().contains("no private key"), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = generated("mismatch-a");
        let (_, other_key) = generated("mismatch-b");
        let error = server_config(&files(cert, other_key)).expect_err("mismatch");
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn names_bound_to_client_certificates_need_a_client_ca() {
        let (cert, key) = generated("names");
        let mut files = files(cert.clone(), key);
        files.client_cert_names = true;
        let error = server_config(&files).expect_err("no client CA");
        assert!(
            matches!(error, TlsError::CertNamesWithoutClientCa),
            "{error}"
        );
        files.client_ca = Some(cert);
        server_config(&files).expect("with a client CA");
    }

    #[test]
    fn the_first_bytes_tell_tls_from_lubdub() {
        assert!(is_tls_record_start(0x16));
        assert!(!is_tls_record_start(0x00));
        assert!(looks_like_client_hello(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_client_hello(&[0x00, 0x00, 0x00, 0x0f, 0x01]));
        assert!(!looks_like_client_hello(b"GET / HTTP/1.1"));
    }
}
