//! Credentials: who may claim which name.
//!
//! A HELLO's `credential` is either a signed token (`lubdub1.…`, checked
//! with one HMAC, inline) or a secret whose argon2id hash is in the auth
//! file (checked in milliseconds, so the server runs it on a verifier
//! thread). [`Authenticator::check`] answers at once when it can and
//! otherwise hands back the [`PasswordCheck`] to run elsewhere.
//!
//! Layout: [`token`] (mint, verify, the secret file), [`file`] (the auth
//! file: parse, edit), [`password`] (generate, hash, verify secrets),
//! [`private_file`] (secret files: created 0600, replaced keeping their
//! owner, exposed modes warned about),
//! [`cache`] (verified secrets, by keyed hash), [`verifier`] (the threads
//! that run argon2), [`fair_queue`] (the order they take secrets in:
//! round robin across sources), [`suspects`] (sources whose secrets failed
//! lately, served last), [`credential`] (the client's side), [`certificate`]
//! (the names a client certificate grants), this module (the
//! [`Authenticator`] combining them and the server's [`AuthConfig`]).
//! Sans-IO except loading files and the verifier threads: time is passed in.

pub mod cache;
pub mod certificate;
pub mod credential;
pub mod fair_queue;
pub mod file;
pub mod grants;
pub mod password;
pub mod private_file;
pub mod suspects;
pub mod token;
pub mod verifier;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use cache::{Fingerprint, VerifiedCache};
pub use certificate::{CertificateDenial, CertificateNames};
pub use credential::{Credential, CredentialError, MAX_CREDENTIAL_LEN};
pub use file::{AuthFile, AuthFileError};
pub use token::{SecretError, TokenError, TokenSecret};

/// How a server checks credentials. With neither file set, names are
/// first come, first served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Auth file (`name:$argon2id$...` lines): a HELLO may carry the secret
    /// of its name's line.
    pub auth_file: Option<PathBuf>,
    /// Token secret file: a HELLO may carry a token signed with it.
    pub token_secret_file: Option<PathBuf>,
    /// Threads that verify auth-file secrets (never the event loop's).
    /// Default: one per core, so that a flood of wrong secrets is worked
    /// off as fast as the machine can; the loop needs little CPU and the
    /// kernel shares the cores fairly between it and them.
    pub verifier_threads: usize,
    /// Secrets waiting for a verifier thread (in all) beyond which a HELLO
    /// is answered REJECT `server_busy` at once (the client retries with
    /// backoff). Each source may have at most 8 of them waiting, and they
    /// are served round robin across sources.
    pub verifier_queue: usize,
    /// A secret not taken by a verifier thread within this wait is not
    /// checked: its HELLO is answered REJECT `server_busy`. With the
    /// handshake timeout (which bounds the wait for the HELLO) it bounds
    /// how long a connection can stay open unverified.
    pub verifier_queue_wait: Duration,
    /// Successful verifications remembered (keyed hashes, never secrets),
    /// so reconnects cost no argon2 run; 0 disables the cache.
    pub cache_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            auth_file: None,
            token_secret_file: None,
            verifier_threads: cores,
            verifier_queue: 1024,
            // Round robin makes a source wait for about one check (20-40 ms)
            // per other source waiting: 2 s serves a first login behind
            // some 100 flooding sources on 2 cores, and leaves the client
            // (which waits 5 s for an answer) time to hear why.
            verifier_queue_wait: Duration::from_secs(2),
            // About 100 bytes each: 1.6 MB when full.
            cache_entries: 16_384,
        }
    }
}

impl AuthConfig {
    /// Whether a credential is required.
    pub fn is_enabled(&self) -> bool {
        self.auth_file.is_some() || self.token_secret_file.is_some()
    }

    /// What a client must present, for the startup message; `None` without auth.
    pub fn describe(&self) -> Option<String> {
        let file = self
            .auth_file
            .as_ref()
            .map(|path| format!("the name's secret from the auth file {}", path.display()));
        let token = self.token_secret_file.as_ref().map(|path| {
            format!(
                "a token for the name signed with the secret in {}",
                path.display()
            )
        });
        match (file, token) {
            (Some(file), Some(token)) => Some(format!("{token}, or {file}")),
            (one, other) => one.or(other),
        }
    }
}

/// Why the credentials could not be set up; the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The auth file is unreadable or wrong.
    #[error(transparent)]
    File(#[from] AuthFileError),
    /// The token secret is unreadable or too short.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The decoy hash could not be made.
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// The verifier threads could not be started.
    #[error("cannot start the credential verifier threads: {0}")]
    Threads(std::io::Error),
}

/// Why a HELLO's credential does not grant its name. The text goes to the
/// client in REJECT `unauthorized`; no text says whether a name is in the
/// auth file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The HELLO carried no credential.
    #[error("no credential given for name {name}; this server requires one")]
    NoCredential {
        /// The name claimed.
        name: String,
    },
    /// The secret does not match (or the name has no line: indistinguishable on purpose).
    #[error("no valid credential for name {name}")]
    NotGranted {
        /// The name claimed.
        name: String,
    },
    /// The token does not grant the name.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client certificate does not carry the name (`--tls-client-cert-names`).
    #[error(transparent)]
    Certificate(#[from] CertificateDenial),
}

impl Denial {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Denial::NoCredential { .. } => "no_credential",
            Denial::NotGranted { .. } => "not_granted",
            Denial::Token(TokenError::Malformed(_)) => "token_malformed",
            Denial::Token(TokenError::BadSignature) => "token_bad_signature",
            Denial::Token(TokenError::OtherName) => "token_other_name",
            Denial::Token(TokenError::Expired { .. }) => "token_expired",
            Denial::Certificate(_) => "certificate_name",
        }
    }
}

/// An auth-file secret to check against a stored hash: slow (argon2), so
/// run where waiting hurts no one.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCheck {
    name: Box<str>,
    /// The name's hash, or the decoy when the name has no line.
    stored: Arc<str>,
    secret: Vec<u8>,
    /// Whether `stored` is the name's own hash (a decoy never grants).
    known: bool,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// Runs argon2: milliseconds of CPU. Unknown names are checked against
    /// a decoy hash with the file's costliest parameters, so they take at
    /// least as long as any known name and
    /// fail with the same text as a wrong secret.
    ///
    /// # Errors
    /// [`Denial::NotGranted`] when the secret does not match.
    pub fn run(&self) -> Result<(), Denial> {
        let matches = password::verify(&self.secret, &self.stored);
        if matches && self.known {
            Ok(())
        } else {
            Err(Denial::NotGranted {
                name: self.name.to_string(),
            })
        }
    }

    /// The name claimed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cache key of this check.
    pub fn fingerprint(&self, cache: &VerifiedCache) -> Fingerprint {
        cache.fingerprint(&self.name, &self.stored, &self.secret)
    }

    /// Whether the name has a line in the auth file; only such checks may
    /// be answered from the cache.
    pub fn is_known(&self) -> bool {
        self.known
    }
}

/// What [`Authenticator::check`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The credential grants the name, and these rooms and watches (a
    /// token's; none for an auth-file secret).
    Granted(grants::Grants),
    /// It does not; the reason is for the client.
    Denied(Denial),
    /// An auth-file secret: run this check (slow) to decide.
    CheckPassword(PasswordCheck),
}

/// Decides whether a credential grants a name, from an auth file, a token
/// secret, or both.
#[derive(Debug, Clone)]
pub struct Authenticator {
    passwords: Option<AuthFile>,
    tokens: Option<TokenSecret>,
    /// A hash of a random secret, checked when a name has no line.
    decoy: Arc<str>,
}

impl Authenticator {
    /// An authenticator from what is configured; with neither, every name is granted.
    ///
    /// # Errors
    /// When the decoy hash cannot be made (the file's parameters are out of range).
    pub fn new(
        passwords: Option<AuthFile>,
        tokens: Option<TokenSecret>,
    ) -> Result<Self, password::HashError> {
        let decoy = match &passwords {
            Some(file) => {
                let params = file
                    .costliest_params()
                    .unwrap_or_else(password::default_params);
                password::hash(password::generate_secret().as_bytes(), params)?
            }
            None => String::new(),
        };
        Ok(Self {
            passwords,
            tokens,
            decoy: decoy.into(),
        })
    }

    /// Loads the files `config` names; `None` when it names none. A file
    /// that group or others may read or write is loaded with a warning
    /// ([`private_file::warn_if_exposed`]).
    ///
    /// # Errors
    /// [`AuthSetupError`] naming the file and what is wrong with it.
    pub fn load(config: &AuthConfig) -> Result<Option<Self>, AuthSetupError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let passwords = config
            .auth_file
            .as_deref()
            .map(|path| {
                private_file::warn_if_exposed(path, "--auth-file");
                AuthFile::load(path)
            })
            .transpose()?;
        let tokens = config
            .token_secret_file
            .as_deref()
            .map(|path| {
                private_file::warn_if_exposed(path, "--token-secret");
                TokenSecret::load(path)
            })
            .transpose()?;
        Ok(Some(Self::new(passwords, tokens)?))
    }

    /// How many names the auth file grants; `None` without an auth file.
    pub fn names(&self) -> Option<usize> {
        self.passwords.as_ref().map(AuthFile::len)
    }

    /// Decides what it can at once (at `now`, for token expiry): a missing
    /// credential and tokens are decided here in microseconds; an
    /// auth-file secret comes back as a [`PasswordCheck`] to run.
    ///
    /// With both configured, a credential starting `lubdub1.` is a token
    /// and anything else a secret; with one, every credential is of its kind.
    pub fn check(&self, name: &str, credential: &[u8], now: SystemTime) -> Decision {
        if credential.is_empty() {
            return Decision::Denied(Denial::NoCredential {
                name: name.to_owned(),
            });
        }
        let as_token = |tokens: &TokenSecret| match tokens.verify(credential, name, now) {
            Ok(grants) => Decision::Granted(grants),
            Err(error) => Decision::Denied(error.into()),
        };
        match (&self.tokens, &self.passwords) {
            (Some(tokens), None) => as_token(tokens),
            (Some(tokens), Some(_)) if token::is_token(credential) => as_token(tokens),
            (_, Some(passwords)) => {
                let own = passwords.hash_of(name);
                Decision::CheckPassword(PasswordCheck {
                    name: name.into(),
                    stored: Arc::clone(own.unwrap_or(&self.decoy)),
                    secret: credential.to_vec(),
                    known: own.is_some(),
                })
            }
            (None, None) => Decision::Granted(grants::Grants::default()),
        }
    }

    /// [`check`](Self::check), running any password check on this thread.
    ///
    /// # Errors
    /// The [`Denial`].
    pub fn authenticate(
        &self,
        name: &str,
        credential: &[u8],
        now: SystemTime,
    ) -> Result<(), Denial> {
        match self.check(name, credential, now) {
            Decision::Granted(_) => Ok(()),
            Decision::Denied(denial) => Err(denial),
            Decision::CheckPassword(check) => check.run(),
        }
    }
}

/// `N` bytes from the thread's CSPRNG (ChaCha, seeded from the OS).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    bytes
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::password::tests::cheap;
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn secret() -> TokenSecret {
        TokenSecret::from_bytes(vec![9; 32], std::path::Path::new("s")).expect("long enough")
    }

    fn file() -> AuthFile {
        let hash = password::hash(b"alice's long secret", cheap()).expect("hashes");
        AuthFile::parse(&format!("alice:{hash}\n")).expect("parses")
    }

    #[test]
    fn tokens_alone_decide_inline() {
        let auth = Authenticator::new(None, Some(secret())).expect("built");
        let token = secret().mint("alice", at(100)).expect("minted");
        assert_eq!(
            auth.check("alice", token.as_bytes(), at(50)),
            Decision::Granted(grants::Grants::default())
        );
        assert_eq!(
            auth.check("bob", token.as_bytes(), at(50)),
            Decision::Denied(Denial::Token(TokenError::OtherName))
        );
        assert_eq!(
            auth.check("alice", b"not a token", at(50)),
            Decision::Denied(Denial::Token(TokenError::Malformed(
                "expected lubdub1.<payload>.<signature>"
            )))
        );
        assert_eq!(
            auth.authenticate("alice", b"", at(50))
                .expect_err("empty")
                .to_string(),
            "no credential given for name alice; this server requires one"
        );
    }

    #[test]
    fn secrets_are_checked_off_the_caller_and_unknown_names_look_like_wrong_secrets() {
        let auth = Authenticator::new(Some(file()), Some(secret())).expect("built");
        let Decision::CheckPassword(check) = auth.check("alice", b"alice's long secret", at(0))
        else {
            panic!("a secret needs argon2");
        };
        assert!(check.is_known());
        assert_eq!(check.run(), Ok(()));
        let wrong = auth
            .authenticate("alice", b"alice's long secreT", at(0))
            .expect_err("wrong secret");
        let unknown = auth
            .authenticate("mallory", b"alice's long secret", at(0))
            .expect_err("no line");
        assert_eq!(wrong.to_string(), "no valid credential for name alice");
        assert_eq!(unknown.to_string(), "no valid credential for name mallory");
        // With both configured, tokens still work.
        let token = secret().mint("alice", at(100)).expect("minted");
        assert_eq!(auth.authenticate("alice", token.as_bytes(), at(50)), Ok(()));
        assert_eq!(
            auth.authenticate("alice", token.as_bytes(), at(100)),
            Err(Denial::Token(TokenError::Expired { at: at(100) }))
        );
    }

    #[test]
    fn the_decoy_never_grants() {
        let auth = Authenticator::new(Some(AuthFile::default()), None).expect("built");
        let Decision::CheckPassword(check) = auth.check("x", b"anything at all", at(0)) else {
            panic!("a secret needs argon2");
        };
        assert!(!check.is_known());
        assert!(check.run().is_err());
    }

    #[test]
    fn the_description_names_what_is_required() {
        let mut config = AuthConfig::default();
        assert_eq!(config.describe(), None);
        config.token_secret_file = Some("/s".into());
        config.auth_file = Some("/a".into());
        assert_eq!(
            config.describe().expect("enabled"),
            "a token for the name signed with the secret in /s, or the name's secret from the auth file /a"
        );
    }
}
