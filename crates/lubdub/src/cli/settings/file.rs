//! The configuration file (`lubdub server --config FILE`): TOML, one
//! top-level key per flag of `lubdub server`, named like the flag without
//! its dashes (`max-missed = 5`, `interval = "3s"`, `tls-client-cert-names
//! = true`). Each value becomes the flag's argument (`--max-missed=5`) and
//! is parsed by that flag's own parser, so the file says exactly what the
//! flags can, with the same defaults, ranges and messages.
//!
//! Errors name the file, the line and the key; an unknown key names the
//! closest known one, or all of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One key of the file, as the flag argument it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// The key, which is the flag's long name.
    pub key: String,
    /// Its line in the file, from 1.
    pub line: usize,
    /// `--key=value`, or `--key` for a switch set to true; `None` for a
    /// switch set to false (its default).
    pub argument: Option<OsString>,
}

/// A configuration file read and checked key by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    path: PathBuf,
    settings: Vec<FileSetting>,
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}, line {line}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped.
        line: usize,
        /// What it expected.
        message: String,
    },
    /// A key that is no flag of `lubdub server`.
    #[error("{}, line {line}: unknown key `{key}`; {hint}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key.
        key: String,
        /// The closest known key, or the list of them.
        hint: String,
    },
    /// A value its flag would refuse.
    #[error("{}, line {line}: {key}: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
}

impl ConfigFile {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`FileError`] naming the file, and the line and key at fault.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, the contents of the file at `path`: every key must be
    /// a flag of `lubdub server` and every value one its flag accepts.
    ///
    /// # Errors
    /// The first [`FileError`] by line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let table = DeTable::parse(text).map_err(|error| FileError::Syntax {
            path: path.to_owned(),
            line: line_of(text, error.span().map_or(0, |span| span.start)),
            message: error.message().to_owned(),
        })?;
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let known = super::keys();
        let mut settings = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let line = line_of(text, key.span().start);
            let key = key.get_ref().to_string();
            let Some(&(_, takes_value)) = known.iter().find(|(known, _)| *known == key) else {
                let hint = match closest(&key, known.iter().map(|(known, _)| known.as_str())) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!(
                        "the keys are the flags of `lubdub server` without their dashes: {}",
                        known
                            .iter()
                            .map(|(known, _)| known.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(FileError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    key,
                    hint,
                });
            };
            let value_error = |message: String| FileError::Value {
                path: path.to_owned(),
                line,
                key: key.clone(),
                message,
            };
            let argument = argument(&key, takes_value, value.get_ref()).map_err(value_error)?;
            if let Some(argument) = &argument {
                super::parse(std::slice::from_ref(argument))
                    .map_err(|error| value_error(clap_message(&error)))?;
            }
            settings.push(FileSetting {
                key,
                line,
                argument,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            settings,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its keys, in the file's order.
    pub fn settings(&self) -> &[FileSetting] {
        &self.settings
    }
}

/// The line, from 1, of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.matches('\n').count() + 1
}

/// The flag argument a TOML value stands for: strings and numbers as the
/// flag's text, `true` and `false` for a switch.
fn argument(key: &str, takes_value: bool, value: &DeValue<'_>) -> Result<Option<OsString>, String> {
    if !takes_value {
        return match value {
            DeValue::Boolean(true) => Ok(Some(format!("--{key}").into())),
            DeValue::Boolean(false) => Ok(None),
            other => Err(format!("takes true or false, not {}", other.type_str())),
        };
    }
    let text = match value {
        DeValue::String(text) => text.to_string(),
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .map_err(|error| format!("{error}"))?
            .to_string(),
        DeValue::Float(float) => float.as_str().to_owned(),
        DeValue::Boolean(value) => value.to_string(),
        other => {
            return Err(format!(
                "takes one value (a string or a number), not {}",
                other.type_str()
            ))
        }
    };
    Ok(Some(format!("--{key}={text}").into()))
}

/// What clap said about a value on one line, without its `error: ` prefix
/// and the usage and `--help` lines (which speak of the command line).
pub fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let said: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let said = said.join(" ");
    said.strip_prefix("error: ").unwrap_or(&said).to_owned()
}

/// The known key closest to `key`, if one is close enough to be a typo
/// (at most a third of its letters wrong, and at most three).
pub fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (key.chars().count() / 3).clamp(1, 3);
    known
        .map(|candidate| (strsim::levenshtein(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, FileError> {
        ConfigFile::parse(Path::new("/etc/lubdub/lubdub.toml"), text)
    }

    fn arguments(text: &str) -> Vec<Option<String>> {
        parse(text)
            .expect("valid")
            .settings()
            .iter()
            .map(|setting| {
                setting
                    .argument
                    .as_ref()
                    .map(|argument| argument.to_string_lossy().into_owned())
            })
            .collect()
    }

    #[test]
    fn values_become_the_flags_arguments_in_the_files_order() {
        let text = "# comment\nmax-missed = 7\ninterval = \"4s\"\nphi-threshold = 9.5\n\
                    tls-client-cert-names = true\nmax-outbound = 0x200000\n";
        assert_eq!(
            arguments(text),
            [
                Some("--max-missed=7"),
                Some("--interval=4s"),
                Some("--phi-threshold=9.5"),
                Some("--tls-client-cert-names"),
                Some("--max-outbound=2097152"),
            ]
            .map(|argument| argument.map(str::to_owned))
        );
        assert_eq!(arguments("tls-client-cert-names = false"), [None]);
        assert_eq!(
            parse("max-missed = 7").expect("valid").settings()[0].line,
            1
        );
    }

    #[test]
    fn every_flag_is_a_key() {
        // Derived from the clap definition: a new flag is a key at once,
        // and any value its flag refuses is refused with the flag's reason.
        for (key, takes_value) in super::super::keys() {
            let text = if takes_value {
                format!("{key} = \"\"")
            } else {
                format!("{key} = true")
            };
            match parse(&text) {
                Ok(_) | Err(FileError::Value { .. }) => {}
                Err(error) => panic!("{key} is no key: {error}"),
            }
        }
    }

    #[test]
    fn an_unknown_key_names_the_closest_one_or_all() {
        let error = parse("interval = \"3s\"\n\nmax_missed = 5\n").expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "/etc/lubdub/lubdub.toml, line 3: unknown key `max_missed`; did you mean `max-missed`?"
        );
        let error = parse("[limits]\nmax-missed = 5\n").expect_err("no tables");
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/lubdub/lubdub.toml, line 1: unknown key `limits`; the keys are the flags of `lubdub server` without their dashes: listen, admin, threads, interval,"),
            "{text}"
        );
        assert!(text.contains("tls-client-cert-names"), "{text}");
        assert_eq!(closest("config", ["listen", "admin"].into_iter()), None);
        assert_eq!(closest("adm", ["listen", "admin"].into_iter()), None);
        assert_eq!(
            closest("admn", ["listen", "admin"].into_iter()),
            Some("admin")
        );
    }

    #[test]
    fn a_bad_value_names_line_key_and_the_flags_reason() {
        let error = parse("max-missed = 5\ninterval = \"3 parsecs\"\n").expect_err("bad");
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/lubdub/lubdub.toml, line 2: interval: invalid value '3 parsecs' for '--interval <INTERVAL>'"),
            "{text}"
        );
        assert!(text.contains("write durations like 3s"), "{text}");
        let error = parse("verifier-threads = 0").expect_err("out of range");
        assert!(
            error
                .to_string()
                .contains("line 1: verifier-threads: invalid value '0'"),
            "{error}"
        );
        let error = parse("detector = \"psi\"").expect_err("no such detector");
        assert!(
            error
                .to_string()
                .contains("[possible values: counter, phi]"),
            "{error}"
        );
        let error = parse("tls-client-cert-names = \"yes\"").expect_err("a switch");
        assert_eq!(
            error.to_string(),
            "/etc/lubdub/lubdub.toml, line 1: tls-client-cert-names: takes true or false, not string"
        );
        let error = parse("listen = [\"a\", \"b\"]").expect_err("one value");
        assert!(
            error
                .to_string()
                .ends_with("takes one value (a string or a number), not array"),
            "{error}"
        );
    }

    #[test]
    fn broken_toml_names_the_line() {
        let error = parse("max-missed = 5\ninterval = 3s\n").expect_err("not TOML");
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/lubdub/lubdub.toml, line 2: not valid TOML: "),
            "{text}"
        );
    }
}
