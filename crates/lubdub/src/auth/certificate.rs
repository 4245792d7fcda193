//! Names a client certificate grants, for servers run with
//! `--tls-client-cert-names`: a client that authenticated with a TLS client
//! certificate may claim only a name the certificate carries.
//!
//! The names that count are the subject's common names (CN, in a
//! UTF8String, PrintableString, IA5String or NumericString) and the DNS
//! names of the subject alternative name extension (SAN `dNSName`).
//! Nothing else counts: not IP, e-mail or URI SANs, not other subject
//! attributes. A claimed name must equal one of them byte for byte: no case
//! folding, no wildcards (`*.example` grants only the name `*.example`,
//! which no valid lubdub name is). [`CertificateNames::read`] parses the
//! certificate rustls already verified; [`grants`] decides, purely.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// Names shown in a refusal at most; a certificate may carry hundreds.
const NAMES_SHOWN: usize = 4;

/// The names a client certificate carries that may be claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// The subject's common names (CN), in certificate order.
    pub common_names: Vec<String>,
    /// The DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
}

/// Why a client certificate does not grant the name claimed. The text goes
/// to the client in REJECT `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateDenial {
    /// The TLS session has no client certificate (the server asks for one
    /// whenever names are bound, so this means a misconfiguration).
    #[error("no client certificate was presented; this server binds names to client certificates")]
    NoCertificate,
    /// The certificate could not be read for its names.
    #[error("the client certificate cannot be read for its names: {0}")]
    Unreadable(String),
    /// The certificate carries no name that may be claimed.
    #[error("the client certificate carries no name (no subject CN, no DNS subject alternative name) and cannot claim {claimed}")]
    Nameless {
        /// The name claimed.
        claimed: String,
    },
    /// The certificate carries names, none of them the one claimed.
    #[error("name {claimed} is not in the client certificate, which grants {shown}")]
    OtherNames {
        /// The name claimed.
        claimed: String,
        /// The certificate's names, as listed in the text.
        shown: String,
    },
}

impl CertificateNames {
    /// The names in a DER certificate.
    ///
    /// # Errors
    /// [`CertificateDenial::Unreadable`] when it does not parse, or its
    /// subject alternative name extension is malformed or repeated.
    pub fn read(der: &[u8]) -> Result<Self, CertificateDenial> {
        let unreadable =
            |error: &dyn std::fmt::Display| CertificateDenial::Unreadable(error.to_string());
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|error| unreadable(&error))?;
        let common_names = certificate
            .subject()
            .iter_common_name()
            .filter_map(|attribute| attribute.as_str().ok())
            .map(str::to_owned)
            .collect();
        let dns_names = match certificate
            .subject_alternative_name()
            .map_err(|error| unreadable(&error))?
        {
            Some(extension) => extension
                .value
                .general_names
                .iter()
                .filter_map(|general| match general {
                    GeneralName::DNSName(name) => Some((*name).to_owned()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            common_names,
            dns_names,
        })
    }

    fn all(&self) -> impl Iterator<Item = &str> {
        self.common_names
            .iter()
            .chain(&self.dns_names)
            .map(String::as_str)
    }
}

/// Whether a certificate carrying `names` may claim `claimed`: only when
/// `claimed` equals one of its common names or DNS names, byte for byte.
///
/// # Errors
/// [`CertificateDenial::Nameless`] or [`CertificateDenial::OtherNames`],
/// whose text lists (some of) the names the certificate does grant.
pub fn grants(names: &CertificateNames, claimed: &str) -> Result<(), CertificateDenial> {
    if names.all().any(|name| name == claimed) {
        return Ok(());
    }
    let mut distinct: Vec<&str> = Vec::new();
    for name in names.all() {
        if !distinct.contains(&name) {
            distinct.push(name);
        }
    }
    if distinct.is_empty() {
        return Err(CertificateDenial::Nameless {
            claimed: claimed.to_owned(),
        });
    }
    let mut shown = distinct
        .iter()
        .take(NAMES_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if distinct.len() > NAMES_SHOWN {
        shown.push_str(&format!(" and {} more", distinct.len() - NAMES_SHOWN));
    }
    Err(CertificateDenial::OtherNames {
        claimed: claimed.to_owned(),
        shown,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn names(common: &[&str], dns: &[&str]) -> CertificateNames {
        CertificateNames {
            common_names: common.iter().map(|n| (*n).to_owned()).collect(),
            dns_names: dns.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn a_common_name_or_a_dns_name_grants_itself_exactly() {
        let device = names(&["dev1"], &["dev1", "dev1-backup"]);
        assert_eq!(grants(&device, "dev1"), Ok(()));
        assert_eq!(grants(&device, "dev1-backup"), Ok(()));
        // Byte for byte: no case folding, no prefixes.
        for other in ["Dev1", "DEV1", "dev", "dev10", "notdev1", "dev1.", ""] {
            assert!(grants(&device, other).is_err(), "{other:?}");
        }
        // The CN alone counts, and a SAN alone counts.
        assert_eq!(grants(&names(&["only-cn"], &[]), "only-cn"), Ok(()));
        assert_eq!(grants(&names(&[], &["only-san"]), "only-san"), Ok(()));
    }

    #[test]
    fn wildcards_are_plain_text() {
        let wildcard = names(&[], &["*.fleet.example"]);
        assert!(grants(&wildcard, "dev1.fleet.example").is_err());
    }

    #[test]
    fn a_refusal_lists_what_the_certificate_grants() {
        let error = grants(&names(&["dev1"], &["dev1"]), "notdev1").expect_err("mismatch");
        assert_eq!(
            error.to_string(),
            "name notdev1 is not in the client certificate, which grants dev1"
        );
        let many = names(&["a"], &["b", "c", "d", "e", "f"]);
        assert_eq!(
            grants(&many, "z").expect_err("mismatch").to_string(),
            "name z is not in the client certificate, which grants a, b, c, d and 2 more"
        );
        assert_eq!(
            grants(&CertificateNames::default(), "dev1"),
            Err(CertificateDenial::Nameless {
                claimed: "dev1".to_owned()
            })
        );
    }

    #[test]
    fn names_are_read_from_the_subject_cn_and_dns_sans_only() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "dev1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "not-a-name");
        params.subject_alt_names = vec![
            SanType::DnsName("dev1.fleet.example".try_into().expect("DNS name")),
            SanType::IpAddress("127.0.0.1".parse().expect("IP")),
            SanType::Rfc822Name("ops@example.org".try_into().expect("e-mail")),
            SanType::URI("spiffe://fleet/dev2".try_into().expect("URI")),
        ];
        let certificate = params.self_signed(&key).expect("signed");
        let read = CertificateNames::read(certificate.der()).expect("parses");
        assert_eq!(read, names(&["dev1"], &["dev1.fleet.example"]));
    }

    #[test]
    fn bytes_that_are_no_certificate_are_unreadable() {
        assert!(matches!(
            CertificateNames::read(b"not DER"),
            Err(CertificateDenial::Unreadable(_))
        ));
    }
}
