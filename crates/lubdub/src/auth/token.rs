//! Signed tokens: `lubdub1.<payload>.<mac>`, a name and an expiry signed with
//! HMAC-SHA256 under a server secret. Minted by `lubdub token`, verified by
//! the server inline (a microsecond: one HMAC), so tokens suit large fleets.
//!
//! Sans-IO apart from [`TokenSecret::load`] and [`TokenSecret::create`]:
//! minting and verifying take the wall-clock instant as an argument.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use lubdub_core::protocol::handshake::{validate_name, NameError};
use sha2::Sha256;

use super::grants::Grants;

/// Every token starts with this; a later format gets another number, so
/// that old servers refuse new tokens instead of misreading them.
pub const TOKEN_PREFIX: &str = "lubdub1.";
/// Shortest secret accepted: HMAC-SHA256's own output size. A shorter key
/// would make the 256-bit MAC only as strong as the key.
pub const MIN_SECRET_LEN: usize = 32;
/// Bytes of a secret made by [`TokenSecret::create`].
const NEW_SECRET_LEN: usize = 32;
/// Longest TTL [`parse_ttl`] accepts: a token cannot be revoked short of
/// changing the secret, so an unbounded one would be a standing risk.
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Bytes of the expiry at the start of the payload (Unix seconds, big-endian).
const EXPIRY_LEN: usize = 8;
/// Between the name and the grants in a token's payload.
const GRANTS_SEPARATOR: u8 = b'\n';

type HmacSha256 = Hmac<Sha256>;

/// Why a token secret cannot be used or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the token secret file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file holds too few bytes to be a safe HMAC key.
    #[error("the token secret file {path} holds {len} bytes; at least {MIN_SECRET_LEN} random bytes are needed (create one with `lubdub token --new-secret FILE`)")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Bytes it holds.
        len: usize,
    },
    /// [`TokenSecret::create`] found the file already there.
    #[error("{path} already exists; refusing to overwrite a token secret (tokens signed with it would stop working)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("cannot create the token secret file {path}: {error}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// Why a token does not grant a name. The texts go to the client in REJECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `lubdub1.<payload>.<mac>`, or the payload is not a token's.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The MAC does not match: the token was altered, forged or signed with another secret.
    #[error("token signature does not verify (altered, forged or minted with another secret)")]
    BadSignature,
    /// A genuine token for a name other than the one claimed.
    #[error("token was issued for another name")]
    OtherName,
    /// A genuine token past its expiry.
    #[error("token expired at {}", humantime::format_rfc3339_seconds(*.at))]
    Expired {
        /// When it expired.
        at: SystemTime,
    },
}

/// The server's token key: the exact bytes of the secret file.
#[derive(Clone)]
pub struct TokenSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, not even in a debug dump of the configuration.
        write!(f, "TokenSecret({} bytes)", self.key.len())
    }
}

impl TokenSecret {
    /// A secret from raw bytes.
    ///
    /// # Errors
    /// [`SecretError::TooShort`] (with `path` as given) below [`MIN_SECRET_LEN`] bytes.
    pub fn from_bytes(key: Vec<u8>, path: &Path) -> Result<Self, SecretError> {
        if key.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: path.to_owned(),
                len: key.len(),
            });
        }
        Ok(Self { key })
    }

    /// Reads a secret file. Every byte is key material, a final newline
    /// included, so a file is used exactly as written.
    ///
    /// # Errors
    /// [`SecretError::Read`] or [`SecretError::TooShort`].
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let key = fs::read(path).map_err(|error| SecretError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_bytes(key, path)
    }

    /// Creates a new secret file of 32 random bytes, readable by its owner
    /// only (mode 0600). Never overwrites: tokens signed with an existing
    /// secret would all stop working.
    ///
    /// # Errors
    /// [`SecretError::Exists`] or [`SecretError::Create`].
    pub fn create(path: &Path) -> Result<Self, SecretError> {
        let key: [u8; NEW_SECRET_LEN] = super::random_bytes();
        let create_error = |error: io::Error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                SecretError::Exists {
                    path: path.to_owned(),
                }
            } else {
                SecretError::Create {
                    path: path.to_owned(),
                    error,
                }
            }
        };
        let mut file = super::private_file::create(path).map_err(create_error)?;
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .map_err(create_error)?;
        Self::from_bytes(key.to_vec(), path)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// A token granting `name` until `expires_at` (whole seconds, rounded down).
    ///
    /// # Errors
    /// The rule the name breaks.
    pub fn mint(&self, name: &str, expires_at: SystemTime) -> Result<String, NameError> {
        self.mint_with(name, expires_at, &Grants::default())
    }

    /// Mints a token for `name` that also grants `grants` (rooms to join,
    /// names and rooms to watch), kept after the name in the signed payload.
    ///
    /// # Errors
    /// [`NameError`] when `name` is not a valid name.
    pub fn mint_with(
        &self,
        name: &str,
        expires_at: SystemTime,
        grants: &Grants,
    ) -> Result<String, NameError> {
        validate_name(name)?;
        let expiry = expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut payload = Vec::with_capacity(EXPIRY_LEN + name.len());
        payload.extend_from_slice(&expiry.to_be_bytes());
        payload.extend_from_slice(name.as_bytes());
        // A line break never occurs in a name: what follows it is grants.
        if !grants.is_empty() {
            payload.push(GRANTS_SEPARATOR);
            payload.extend_from_slice(grants.text().as_bytes());
        }
        let mut token = String::from(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let mut mac = self.mac();
        // The MAC covers the version prefix too: a token cannot be replayed
        // as another version's.
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut token);
        Ok(token)
    }

    /// Checks that `token` is genuine, was issued for `name` and has not
    /// expired at `now`; returns what else it grants. The MAC is compared
    /// in constant time, and checked before anything in the payload is
    /// believed.
    ///
    /// # Errors
    /// The first check that fails, as a [`TokenError`].
    pub fn verify(&self, token: &[u8], name: &str, now: SystemTime) -> Result<Grants, TokenError> {
        let token =
            std::str::from_utf8(token).map_err(|_| TokenError::Malformed("not UTF-8 text"))?;
        let signed_part_len = token
            .rfind('.')
            .filter(|&dot| dot >= TOKEN_PREFIX.len())
            .ok_or(TokenError::Malformed(
                "expected lubdub1.<payload>.<signature>",
            ))?;
        let (signed, tag) = (&token[..signed_part_len], &token[signed_part_len + 1..]);
        let payload = signed
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Malformed("not a lubdub1 token"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        if payload.len() <= EXPIRY_LEN {
            return Err(TokenError::Malformed("payload too short"));
        }
        let (expiry, issued) = payload.split_at(EXPIRY_LEN);
        let (issued_for, grants) = match issued.iter().position(|&byte| byte == GRANTS_SEPARATOR) {
            Some(at) => (&issued[..at], Some(&issued[at + 1..])),
            None => (issued, None),
        };
        if issued_for != name.as_bytes() {
            return Err(TokenError::OtherName);
        }
        let grants = match grants {
            None => Grants::default(),
            Some(text) => std::str::from_utf8(text)
                .ok()
                .and_then(|text| Grants::parse(text).ok())
                .ok_or(TokenError::Malformed("its grants cannot be read"))?,
        };
        let expiry = u64::from_be_bytes(expiry.try_into().expect("split at EXPIRY_LEN"));
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(expiry);
        if now >= expires_at {
            return Err(TokenError::Expired { at: expires_at });
        }
        Ok(grants)
    }
}

/// Whether a credential looks like a token rather than an auth-file secret.
pub fn is_token(credential: &[u8]) -> bool {
    credential.starts_with(TOKEN_PREFIX.as_bytes())
}

/// Parses a token lifetime such as `30d`, `12h` or `90m`.
///
/// # Errors
/// A message saying what is wrong: unreadable, zero, or above [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write a TTL like 30d, 12h or 90m"))?;
    if ttl < Duration::from_secs(1) {
        return Err("a token's TTL must be at least 1s".to_owned());
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "a token's TTL may be at most {} (tokens cannot be revoked, short of changing the secret); mint a new token when it expires",
            humantime::format_duration(MAX_TTL)
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> TokenSecret {
        TokenSecret::from_bytes(vec![byte; 32], Path::new("test")).expect("32 bytes")
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_token_carries_its_grants_under_its_signature() {
        let secret = secret(7);
        let grants = Grants::new(&["#lobby".into()], &["bob,#lobby".into()]).expect("valid");
        let token = secret
            .mint_with("alice", at(1_000), &grants)
            .expect("minted");
        assert_eq!(secret.verify(token.as_bytes(), "alice", at(1)), Ok(grants));
        // The name is still the whole name: grants are no part of it.
        assert_eq!(
            secret.verify(token.as_bytes(), "alice\njoin=#lobby", at(1)),
            Err(TokenError::OtherName)
        );
        // Another secret's grants are not believed.
        assert_eq!(
            self::secret(8).verify(token.as_bytes(), "alice", at(1)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_minted_token_verifies_for_its_name_until_it_expires() {
        let secret = secret(7);
        let token = secret.mint("alice", at(1_000)).expect("valid name");
        assert!(token.starts_with("lubdub1."));
        assert!(is_token(token.as_bytes()));
        assert_eq!(
            secret.verify(token.as_bytes(), "alice", at(999)),
            Ok(Grants::default())
        );
        assert_eq!(
            secret.verify(token.as_bytes(), "alice", at(1_000)),
            Err(TokenError::Expired { at: at(1_000) })
        );
        assert_eq!(
            TokenError::Expired { at: at(1_000) }.to_string(),
            "token expired at 1970-01-01T00:16:40Z"
        );
        assert_eq!(
            secret.verify(token.as_bytes(), "bob", at(0)),
            Err(TokenError::OtherName)
        );
    }

    #[test]
    fn a_token_from_another_secret_is_refused() {
        let token = secret(7).mint("alice", at(1_000)).expect("valid name");
        assert_eq!(
            secret(8).verify(token.as_bytes(), "alice", at(0)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let secret = secret(7);
        let token = secret.mint("alice", at(1_000)).expect("valid name");
        // Swapping the name or stretching the expiry means re-encoding the payload.
        let mut payload = at(u64::MAX / 2)
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs()
            .to_be_bytes()
            .to_vec();
        payload.extend_from_slice(b"alice");
        let signature = token.rsplit('.').next().expect("three parts");
        let stretched = format!("lubdub1.{}.{signature}", URL_SAFE_NO_PAD.encode(&payload));
        assert_eq!(
            secret.verify(stretched.as_bytes(), "alice", at(2_000)),
            Err(TokenError::BadSignature)
        );
        for position in TOKEN_PREFIX.len()..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[position] = if altered[position] == b'A' {
                b'B'
            } else {
                b'A'
            };
            assert!(
                secret.verify(&altered, "alice", at(0)).is_err(),
                "altered byte {position} was accepted"
            );
        }
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let secret = secret(7);
        for (token, expected) in [
            (
                &b"lubdub1."[..],
                "malformed token: expected lubdub1.<payload>.<signature>",
            ),
            (
                b"hello",
                "malformed token: expected lubdub1.<payload>.<signature>",
            ),
            (b"lubdub2.abc.def", "malformed token: not a lubdub1 token"),
            (
                b"lubdub1.abc.d*f",
                "malformed token: signature is not base64url",
            ),
            (b"\xff\xfe", "malformed token: not UTF-8 text"),
        ] {
            let error = secret.verify(token, "alice", at(0)).expect_err("refused");
            assert_eq!(error.to_string(), expected);
        }
        assert_eq!(
            secret
                .verify(b"lubdub1.abc.AAAA", "alice", at(0))
                .expect_err("refused"),
            TokenError::BadSignature
        );
    }

    #[test]
    fn minting_checks_the_name() {
        assert!(secret(7).mint("a b", at(1)).is_err());
        assert!(secret(7).mint("", at(1)).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        let error = TokenSecret::from_bytes(vec![1; 31], Path::new("/etc/s")).expect_err("short");
        assert!(
            error.to_string().contains("holds 31 bytes; at least 32"),
            "{error}"
        );
    }

    #[test]
    fn ttls_are_checked() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("90m"), Ok(Duration::from_secs(5_400)));
        assert!(parse_ttl("0s").expect_err("zero").contains("at least 1s"));
        assert!(parse_ttl("soon").expect_err("text").contains("like 30d"));
        assert!(parse_ttl("20000d").expect_err("long").contains("at most"));
    }

    #[test]
    fn creating_a_secret_never_overwrites_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lubdub-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("secret");
        let _ = fs::remove_file(&path);
        let created = TokenSecret::create(&path).expect("created");
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = TokenSecret::load(&path).expect("loads");
        assert_eq!(created.key, loaded.key);
        assert!(matches!(
            TokenSecret::create(&path),
            Err(SecretError::Exists { .. })
        ));
        fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
