//! Who may use the admin API: with `--admin-token-file`, every route but
//! `/healthz` asks for `Authorization: Bearer TOKEN`; without it, the API is
//! open, which the server allows only on a loopback address (SECURITY.md).
//!
//! The API streams everyone's presence (`/events`), so a token is the
//! least it needs once it is reachable from other hosts. The token is kept
//! as its SHA-256 digest and compared digest to digest: the comparison
//! takes the same time whatever prefix of the token a guess gets right.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Shortest token accepted: 16 characters of a random token are 96 bits
/// and more; anything shorter is a password someone chose.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin API's bearer token, kept as its digest.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("cannot read the admin token file {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// It holds no token, or a token too short or with inner whitespace.
    #[error(
        "the admin token file {path} {problem}; put one line of at least \
         {MIN_TOKEN_LEN} characters in it, e.g. `openssl rand -hex 32 > {path}`"
    )]
    Unusable {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl AdminToken {
    /// The token `text` (surrounding whitespace, such as the file's final
    /// newline, is not part of it).
    ///
    /// # Errors
    /// The problem, when the token is empty, too short or holds whitespace.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        let token = text.trim();
        if token.is_empty() {
            return Err("is empty");
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err("holds a token shorter than 16 characters");
        }
        if token.chars().any(char::is_whitespace) {
            return Err("holds more than one word (a token has no spaces or line breaks)");
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The token in the file at `path`, warning if others may read it.
    ///
    /// # Errors
    /// The file cannot be read, or holds no usable token.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        crate::auth::private_file::warn_if_exposed(path, "--admin-token-file");
        let text = std::fs::read_to_string(path).map_err(|error| TokenFileError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        Self::new(&text).map_err(|problem| TokenFileError::Unusable {
            path: path.display().to_string(),
            problem,
        })
    }

    /// Whether an `Authorization` header value presents this token.
    pub fn admits(&self, authorization: &[u8]) -> bool {
        let Some(presented) = bearer(authorization) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest == self.digest
    }
}

/// The credentials of a `Bearer` authorization (the scheme is
/// case-insensitive, RFC 7235).
fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = authorization.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Middleware: passes a request that presents the token, answers 401 to
/// one that does not. `None`: the API is open.
pub(super) async fn require_token(
    State(token): State<Option<Arc<AdminToken>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request.headers().get(header::AUTHORIZATION);
    if presented.is_some_and(|value| token.admits(value.as_bytes())) {
        return next.run(request).await;
    }
    let text = if presented.is_some() {
        "the admin token presented is not the server's\n"
    } else {
        "this admin API needs a token: send `Authorization: Bearer TOKEN` \
         (lubdub sessions --admin-token-file FILE, curl -H @FILE ...)\n"
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"lubdub admin\"")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn the_token_is_admitted_as_a_bearer_and_nothing_else_is() {
        let token = AdminToken::new(&format!("{TOKEN}\n")).expect("a token");
        assert!(token.admits(format!("Bearer {TOKEN}").as_bytes()));
        assert!(token.admits(format!("bearer  {TOKEN} ").as_bytes()));
        assert!(!token.admits(format!("Basic {TOKEN}").as_bytes()));
        assert!(!token.admits(format!("Bearer {TOKEN}x").as_bytes()));
        assert!(!token.admits(b"Bearer "));
        assert!(!token.admits(b""));
        assert!(!token.admits(TOKEN.as_bytes()));
    }

    #[test]
    fn unusable_tokens_say_what_is_wrong() {
        assert_eq!(AdminToken::new(" \n"), Err("is empty"));
        assert_eq!(
            AdminToken::new("short"),
            Err("holds a token shorter than 16 characters")
        );
        assert!(AdminToken::new("0123456789abcdef 0123456789abcdef").is_err());
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let token = AdminToken::new(TOKEN).expect("a token");
        assert_eq!(format!("{token:?}"), "AdminToken(…)");
    }
}
