//! A client's credential: the bytes sent in HELLO's `credential` field, a
//! token or an auth-file secret. Kept out of `Debug` output and logs.

use std::path::Path;

/// Most bytes HELLO's `credential` field may carry.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// Why a credential cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read the credential file {path}: {error}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Longer than HELLO can carry.
    #[error("the credential is {len} bytes, more than the protocol's {MAX_CREDENTIAL_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Nothing left after trimming.
    #[error("the credential is empty")]
    Empty,
}

/// Credential bytes; empty means none. `Debug` shows only the length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential(Vec<u8>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({} bytes, redacted)", self.0.len())
    }
}

impl Credential {
    /// A credential from text as people write it: surrounding whitespace
    /// (the newline `echo` adds to a file) is not part of it.
    ///
    /// # Errors
    /// [`CredentialError::Empty`] or [`CredentialError::TooLong`].
    pub fn from_text(text: &str) -> Result<Self, CredentialError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CredentialError::Empty);
        }
        if trimmed.len() > MAX_CREDENTIAL_LEN {
            return Err(CredentialError::TooLong { len: trimmed.len() });
        }
        Ok(Self(trimmed.as_bytes().to_vec()))
    }

    /// Reads a credential file (a token or a secret, one line).
    ///
    /// # Errors
    /// [`CredentialError`].
    pub fn from_file(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|error| CredentialError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_text(&text)
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is no credential.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Credential {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&str> for Credential {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_checked_and_never_printed() {
        let credential = Credential::from_text("lubdub1.abc.def\n").expect("valid");
        assert_eq!(credential.as_bytes(), b"lubdub1.abc.def");
        assert_eq!(format!("{credential:?}"), "Credential(15 bytes, redacted)");
        assert!(matches!(
            Credential::from_text(" \n"),
            Err(CredentialError::Empty)
        ));
        assert!(matches!(
            Credential::from_text(&"x".repeat(4097)),
            Err(CredentialError::TooLong { len: 4097 })
        ));
    }
}
