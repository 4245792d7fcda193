//! The auth file: which names may be claimed with which secret, as
//! `name:$argon2id$...` lines (the secret's argon2id PHC string, never the
//! secret), with `#` comments and blank lines. Read once when the server
//! starts; written by `lubdub passwd`.
//!
//! Parsing and editing are pure functions of the text; [`AuthFile::load`]
//! is the only IO (`lubdub passwd` writes with [`super::private_file::replace`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::Params;
use lubdub_core::protocol::handshake::{validate_name, NameError};

/// What is wrong with one line of an auth file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No `:` between a name and a hash.
    #[error("expected name:$argon2id$..., found no ':'")]
    MissingSeparator,
    /// The name breaks the naming rules.
    #[error("invalid name {name:?}: {rule}")]
    InvalidName {
        /// The name as written.
        name: String,
        /// The rule it breaks.
        rule: NameError,
    },
    /// The part after the name is not an argon2id PHC string.
    #[error("{0}")]
    BadHash(String),
    /// The name was already given a hash on an earlier line.
    #[error("duplicate name {name:?} (first on line {first_line})")]
    Duplicate {
        /// The name.
        name: String,
        /// Where it first appeared.
        first_line: usize,
    },
}

/// An auth file that cannot be used; no line of it is used then.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read the auth file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A line is wrong.
    #[error("{path}, line {line}: {error}")]
    Line {
        /// The file (empty when parsed from text).
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        error: LineError,
    },
}

/// Names and the argon2id hashes of their secrets.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    /// Shared with verifier threads without copying the string.
    hashes: HashMap<Box<str>, Arc<str>>,
    /// Parameters of the costliest hash in the file: what a secret for an
    /// unknown name is checked against, so that an unknown name costs at
    /// least as much as any known one and timing does not tell them apart
    /// (lines hashed before a change of parameters keep their old ones).
    costliest_params: Option<Params>,
}

/// One meaningful line: name and hash, or `None` for comments and blanks.
fn parse_line(line: &str) -> Result<Option<(&str, &str)>, LineError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    // PHC strings never contain ':', names may: split at the last one.
    let (name, hash) = trimmed
        .rsplit_once(':')
        .ok_or(LineError::MissingSeparator)?;
    validate_name(name).map_err(|rule| LineError::InvalidName {
        name: name.to_owned(),
        rule,
    })?;
    Ok(Some((name, hash)))
}

impl AuthFile {
    /// Parses the text of an auth file.
    ///
    /// # Errors
    /// The first wrong line, numbered from 1 ([`AuthFileError::Line`] with an empty path).
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut file = AuthFile::default();
        let mut first_lines: HashMap<&str, usize> = HashMap::new();
        for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line)) {
            let line_error = |error| AuthFileError::Line {
                path: PathBuf::new(),
                line: number,
                error,
            };
            let Some((name, hash)) = parse_line(line).map_err(line_error)? else {
                continue;
            };
            let params = super::password::check_phc(hash)
                .map_err(|reason| line_error(LineError::BadHash(reason)))?;
            if let Some(&first_line) = first_lines.get(name) {
                return Err(line_error(LineError::Duplicate {
                    name: name.to_owned(),
                    first_line,
                }));
            }
            first_lines.insert(name, number);
            let cost = |params: &Params| u64::from(params.m_cost()) * u64::from(params.t_cost());
            if file
                .costliest_params
                .as_ref()
                .is_none_or(|costliest| cost(&params) > cost(costliest))
            {
                file.costliest_params = Some(params);
            }
            file.hashes.insert(name.into(), hash.into());
        }
        Ok(file)
    }

    /// Reads and parses an auth file.
    ///
    /// # Errors
    /// [`AuthFileError`], naming the file and, for a wrong line, its number.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| AuthFileError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text).map_err(|error| match error {
            AuthFileError::Line { line, error, .. } => AuthFileError::Line {
                path: path.to_owned(),
                line,
                error,
            },
            other => other,
        })
    }

    /// The stored hash of `name`'s secret.
    pub fn hash_of(&self, name: &str) -> Option<&Arc<str>> {
        self.hashes.get(name)
    }

    /// How many names the file grants.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the file grants no name.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Parameters of the costliest hash, if any.
    pub fn costliest_params(&self) -> Option<Params> {
        self.costliest_params.clone()
    }
}

/// `text` with `name`'s line set to `name:hash`: the existing line is
/// replaced where it stands, or a line is appended. Comments, blank lines
/// and every other line are kept as written.
///
/// # Errors
/// The text's first wrong line: a broken file is not edited.
pub fn set_entry(text: &str, name: &str, hash: &str) -> Result<String, AuthFileError> {
    AuthFile::parse(text)?;
    let mut edited = String::with_capacity(text.len() + name.len() + hash.len() + 2);
    let mut replaced = false;
    for line in text.lines() {
        let is_this_name =
            matches!(parse_line(line), Ok(Some((line_name, _))) if line_name == name);
        if is_this_name {
            let _ = writeln!(edited, "{name}:{hash}");
            replaced = true;
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    if !replaced {
        let _ = writeln!(edited, "{name}:{hash}");
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::{self, tests::cheap};

    fn line_error(text: &str) -> (usize, LineError) {
        match AuthFile::parse(text) {
            Err(AuthFileError::Line { line, error, .. }) => (line, error),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    fn sample_hash() -> String {
        password::hash(b"a secret of some length", cheap()).expect("hashes")
    }

    #[test]
    fn names_comments_and_blank_lines_parse() {
        let hash = sample_hash();
        let text = format!("# who may connect\n\nalice:{hash}\n  # indented comment\nbob:{hash}\n");
        let file = AuthFile::parse(&text).expect("parses");
        assert_eq!(file.len(), 2);
        assert_eq!(file.hash_of("alice").map(|h| &**h), Some(hash.as_str()));
        assert!(file.hash_of("carol").is_none());
        assert_eq!(file.costliest_params().map(|p| p.m_cost()), Some(256));
        assert!(AuthFile::parse("").expect("empty is fine").is_empty());
    }

    #[test]
    fn names_may_contain_colons() {
        let hash = sample_hash();
        let file = AuthFile::parse(&format!("svc:eu:{hash}\n")).expect("parses");
        assert!(file.hash_of("svc:eu").is_some());
    }

    #[test]
    fn each_error_names_its_line_and_what_is_wrong() {
        let hash = sample_hash();
        assert_eq!(
            line_error("# ok\nalice\n"),
            (2, LineError::MissingSeparator)
        );
        let (line, error) = line_error(&format!("a@b:{hash}"));
        assert_eq!(line, 1);
        assert!(matches!(error, LineError::InvalidName { ref name, .. } if name == "a@b"));
        assert!(
            error
                .to_string()
                .starts_with("invalid name \"a@b\": name contains U+0040 '@'"),
            "{error}"
        );
        assert!(matches!(
            line_error(&format!(":{hash}")).1,
            LineError::InvalidName { .. }
        ));
        let (line, error) = line_error("\n\nalice:plaintext\n");
        assert_eq!(line, 3);
        assert!(
            error.to_string().starts_with("not a PHC hash string"),
            "{error}"
        );
        let argon2i = hash.replacen("$argon2id$", "$argon2i$", 1);
        assert_eq!(
            line_error(&format!("alice:{argon2i}")).1.to_string(),
            "only argon2id hashes are accepted, found argon2i"
        );
        assert_eq!(
            line_error(&format!("alice:{hash}\nbob:{hash}\nalice:{hash}\n")),
            (
                3,
                LineError::Duplicate {
                    name: "alice".into(),
                    first_line: 1
                }
            )
        );
    }

    #[test]
    fn errors_from_a_file_name_the_file() {
        let dir = std::env::temp_dir().join(format!("lubdub-authfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("auth");
        std::fs::write(&path, "# header\nalice\n").expect("written");
        let error = AuthFile::load(&path).expect_err("bad line");
        assert_eq!(
            error.to_string(),
            format!(
                "{}, line 2: expected name:$argon2id$..., found no ':'",
                path.display()
            )
        );
        let missing = AuthFile::load(&dir.join("missing")).expect_err("no file");
        assert!(
            missing.to_string().starts_with("cannot read the auth file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn set_entry_replaces_in_place_or_appends() {
        let (old, new) = (sample_hash(), sample_hash());
        let text = format!("# team\nalice:{old}\n\nbob:{old}\n");
        let edited = set_entry(&text, "alice", &new).expect("edits");
        assert_eq!(edited, format!("# team\nalice:{new}\n\nbob:{old}\n"));
        let appended = set_entry(&edited, "carol", &new).expect("edits");
        assert_eq!(appended, format!("{edited}carol:{new}\n"));
        assert_eq!(
            set_entry("", "dave", &new).expect("edits"),
            format!("dave:{new}\n")
        );
        assert!(set_entry("broken\n", "alice", &new).is_err());
    }
}
