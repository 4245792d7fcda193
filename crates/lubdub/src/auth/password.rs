//! Auth-file secrets: generating them, hashing them into argon2id PHC
//! strings, and checking a presented secret against a stored hash.
//!
//! [`verify`] is deliberately slow (milliseconds of CPU and megabytes of
//! memory), so the server never runs it on its event loop: see
//! `server::auth_gate`, which sends it to a verifier thread.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Memory cost of new hashes in KiB (8 MiB), with [`TIME_COST`] passes and
/// one lane.
///
/// Why below OWASP's argon2id floor of 19 MiB × 2 passes: the server pays
/// this on every uncached HELLO, and after a restart every client
/// reconnects at once, so cost per verification decides how long a fleet
/// waits: `time lubdub passwd` measured 14 ms here, process start
/// included, and the floor's memory × passes is 2.4 times as much work
/// (10,000 uncached sessions: about 2 minutes of CPU instead of 5). The
/// hash's strength only matters
/// when the auth file leaks, and only for guessable secrets: the default
/// secret is 192 random bits, which no hash parameters make easier or
/// harder to guess, and `--secret-stdin` refuses secrets shorter than
/// [`MIN_CHOSEN_SECRET_LEN`]. Large fleets should use tokens (one HMAC).
/// The parameters are stored in each hash, so raising them later only
/// affects lines written from then on.
pub const MEMORY_COST_KIB: u32 = 8 * 1024;
/// Passes over the memory; see [`MEMORY_COST_KIB`].
pub const TIME_COST: u32 = 2;
/// Bytes of randomness in a generated secret: 192 bits.
const GENERATED_SECRET_BYTES: usize = 24;
/// Shortest secret `lubdub passwd --secret-stdin` accepts.
pub const MIN_CHOSEN_SECRET_LEN: usize = 16;

/// Why a secret cannot be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Too short to resist guessing if the file leaks.
    #[error("the secret is {len} bytes; at least {MIN_CHOSEN_SECRET_LEN} are needed (or let `lubdub passwd` generate one)")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// It would be taken for a token by a server that also accepts tokens.
    #[error("the secret starts with `lubdub1.`, which servers read as a token; choose another")]
    LooksLikeToken,
    /// The hasher failed (parameters out of range).
    #[error("cannot hash the secret: {0}")]
    Hasher(String),
}

/// The argon2id hasher for new hashes.
fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The parameters of new hashes.
pub fn default_params() -> Params {
    Params::new(MEMORY_COST_KIB, TIME_COST, 1, None).expect("constant parameters are in range")
}

/// A fresh high-entropy secret: 24 random bytes as 32 base64url characters,
/// easy to paste and safe in a file, an environment variable or a shell.
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(super::random_bytes::<GENERATED_SECRET_BYTES>())
}

/// Checks a secret someone chose before it is hashed.
///
/// # Errors
/// [`HashError::TooShort`] or [`HashError::LooksLikeToken`].
pub fn check_chosen_secret(secret: &[u8]) -> Result<(), HashError> {
    if secret.len() < MIN_CHOSEN_SECRET_LEN {
        return Err(HashError::TooShort { len: secret.len() });
    }
    if super::token::is_token(secret) {
        return Err(HashError::LooksLikeToken);
    }
    Ok(())
}

/// The PHC string of `secret` hashed with `params` and a random salt.
///
/// # Errors
/// [`HashError::Hasher`] when the parameters are out of range.
pub fn hash(secret: &[u8], params: Params) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&super::random_bytes::<16>())
        .map_err(|error| HashError::Hasher(error.to_string()))?;
    hasher(params)
        .hash_password(secret, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashError::Hasher(error.to_string()))
}

/// Whether `secret` matches the PHC string `stored` (argon2id, with the
/// parameters stored in it). The comparison is in constant time. A string
/// that does not parse matches nothing (the auth file was checked when it
/// was loaded).
pub fn verify(secret: &[u8], stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(secret, &hash).is_ok())
}

/// Checks that `phc` is an argon2id hash this module can verify.
///
/// # Errors
/// What is wrong with it, for a parse error's message.
pub fn check_phc(phc: &str) -> Result<Params, String> {
    let hash =
        PasswordHash::new(phc).map_err(|error| format!("not a PHC hash string ({error})"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "only argon2id hashes are accepted, found {}",
            hash.algorithm
        ));
    }
    if hash.hash.is_none() {
        return Err("the PHC string has no hash part".to_owned());
    }
    Params::try_from(&hash).map_err(|error| format!("unusable argon2 parameters ({error})"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parameters cheap enough for tests that hash many times.
    pub(crate) fn cheap() -> Params {
        Params::new(256, 1, 1, None).expect("in range")
    }

    #[test]
    fn a_hash_verifies_its_secret_only() {
        let stored = hash(b"correct horse battery", cheap()).expect("hashes");
        assert!(
            stored.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
            "{stored}"
        );
        assert!(verify(b"correct horse battery", &stored));
        assert!(!verify(b"correct horse batterz", &stored));
        assert!(!verify(b"", &stored));
        assert!(!verify(b"correct horse battery", "not a hash"));
    }

    #[test]
    fn default_parameters_are_the_documented_ones() {
        let stored = hash(b"some long enough secret", default_params()).expect("hashes");
        assert!(
            stored.starts_with("$argon2id$v=19$m=8192,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(check_phc(&stored).map(|params| params.m_cost()), Ok(8192));
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(check_chosen_secret(a.as_bytes()), Ok(()));
    }

    #[test]
    fn chosen_secrets_are_checked() {
        assert_eq!(
            check_chosen_secret(b"short"),
            Err(HashError::TooShort { len: 5 })
        );
        assert_eq!(
            check_chosen_secret(b"lubdub1.long enough to pass"),
            Err(HashError::LooksLikeToken)
        );
    }

    #[test]
    fn only_argon2id_phc_strings_pass() {
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, cheap())
            .hash_password(b"x", &SaltString::encode_b64(&[1; 16]).expect("salt"))
            .expect("hashes")
            .to_string();
        assert!(check_phc(&argon2i)
            .expect_err("argon2i")
            .contains("only argon2id hashes are accepted, found argon2i"));
        assert!(check_phc("$2b$12$abc")
            .expect_err("bcrypt")
            .starts_with("not a PHC hash string"));
    }
}
