//! Reading the PEM files TLS needs, for the server and the client alike:
//! certificate chains, CA bundles and private keys, with errors that name
//! the file and what was missing from it. Parsing is rustls-pki-types's.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read the TLS {what} file {}: {cause}", path.display())]
    Read {
        /// Which file: "certificate", "key", "CA" or "client CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (not a `source`: the message already says it).
        cause: std::io::Error,
    },
    /// The file holds no PEM item of the kind needed, or a broken one.
    #[error("no {what} in {}: {detail}", path.display())]
    Missing {
        /// What was looked for, with its PEM marker.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
}

/// Every certificate in a PEM file; at least one. `what` names the file's
/// role in messages ("certificate", "CA", ...).
///
/// # Errors
/// [`PemError::Read`], or [`PemError::Missing`] when none is found or one is broken.
pub fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path, what)?;
    let missing = |detail: String| PemError::Missing {
        what: "certificate (-----BEGIN CERTIFICATE-----)",
        path: path.to_owned(),
        detail,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| missing(error.to_string()))?;
    if certificates.is_empty() {
        return Err(missing("the file holds no certificate".into()));
    }
    Ok(certificates)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`PemError::Read`], or [`PemError::Missing`] when none is found or it is broken.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| PemError::Missing {
        what: "private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        path: path.to_owned(),
        detail: match error {
            rustls_pki_types::pem::Error::NoItemsFound => "the file holds no private key".into(),
            other => other.to_string(),
        },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|cause| PemError::Read {
        what,
        path: path.to_owned(),
        cause,
    })
}
