//! Where each setting comes from, lowest first: the built-in defaults (the
//! flags' defaults), the configuration file, the environment (the secrets'
//! paths only: `LUBDUB_AUTH_FILE`, `LUBDUB_TOKEN_SECRET`, `LUBDUB_TLS_KEY`),
//! the flags. A flag or variable overrides the file only when it was
//! actually given (clap's value source), never by its default.
//!
//! Data flow: command line → [`Given`] (read once, kept for reloads) ┐
//!            `--config FILE` → `ConfigFile` (read at start and at SIGHUP) ┴→
//!            [`resolve`] → one argument list parsed by the flags' parser →
//!            [`Resolved`] (settings and where each came from).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use lubdub::server::{ConfigError, ServerConfig};

use super::file::{clap_message, ConfigFile};
use super::{definition, MissingPair, ServerSettings};

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it: the flag's default.
    Default,
    /// This line of the configuration file.
    File(usize),
    /// This environment variable.
    Environment(String),
    /// A flag on the command line.
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(line) => write!(f, "line {line} of the configuration file"),
            Origin::Environment(variable) => write!(f, "${variable}"),
            Origin::Flag => f.write_str("the command line"),
        }
    }
}

/// One setting given on the command line or in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GivenSetting {
    key: String,
    arguments: Vec<OsString>,
    origin: Origin,
}

/// The settings the command line and the environment gave, as flag
/// arguments: read once at start, laid over the file at every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    settings: Vec<GivenSetting>,
}

impl Given {
    /// The settings `matches` (of a command with the server's flags) got
    /// from the command line or the environment, not from defaults.
    pub fn from_matches(matches: &ArgMatches) -> Self {
        let settings = definition()
            .get_arguments()
            .filter_map(|arg| {
                let key = arg.get_long()?.to_owned();
                let id = arg.get_id().as_str();
                let origin = match matches.value_source(id)? {
                    ValueSource::CommandLine => Origin::Flag,
                    ValueSource::EnvVariable => {
                        Origin::Environment(arg.get_env()?.to_string_lossy().into_owned())
                    }
                    _ => return None,
                };
                let arguments = if arg.get_action().takes_values() {
                    matches
                        .get_raw(id)
                        .into_iter()
                        .flatten()
                        .map(|value| {
                            let mut argument = OsString::from(format!("--{key}="));
                            argument.push(value);
                            argument
                        })
                        .collect()
                } else {
                    vec![OsString::from(format!("--{key}"))]
                };
                Some(GivenSetting {
                    key,
                    arguments,
                    origin,
                })
            })
            .collect();
        Self { settings }
    }

    fn gives(&self, key: &str) -> bool {
        self.settings.iter().any(|setting| setting.key == key)
    }
}

/// The settings in effect and where each came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The settings.
    pub settings: ServerSettings,
    /// Where each key's value came from; keys not listed are defaults.
    pub origins: BTreeMap<String, Origin>,
    /// The configuration file, if one was read.
    pub file: Option<PathBuf>,
}

impl Resolved {
    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> &Origin {
        self.origins.get(key).unwrap_or(&Origin::Default)
    }

    /// Where `key`'s value came from, for a message (the file by its
    /// path); `None` for a default.
    pub fn whence(&self, key: &str) -> Option<String> {
        match (self.origin(key), &self.file) {
            (Origin::Default, _) => None,
            (Origin::File(line), Some(file)) => Some(format!("line {line} of {}", file.display())),
            (origin, _) => Some(origin.to_string()),
        }
    }

    /// The server's configuration, validated; an error says where each
    /// setting it is about came from.
    ///
    /// # Errors
    /// [`ResolveError::Invalid`].
    pub fn server_config(&self) -> Result<ServerConfig, ResolveError> {
        let config = self.settings.server_config();
        config.validate().map_err(|error| {
            let whence: Vec<String> = error
                .keys()
                .iter()
                .filter_map(|key| Some(format!("{key} comes from {}", self.whence(key)?)))
                .collect();
            ResolveError::Invalid { error, whence }
        })?;
        Ok(config)
    }
}

/// Settings that do not work together.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// One of two settings that need each other; `whence` says where the
    /// one given came from.
    #[error("{pair} ({} comes from {whence})", pair.key)]
    Pair {
        /// The pair.
        pair: MissingPair,
        /// Where the half given came from.
        whence: String,
    },
    /// Values that cannot work (together); `whence` says where those not
    /// at their defaults came from.
    #[error("{error}{}", whence.iter().map(|whence| format!("; {whence}")).collect::<String>())]
    Invalid {
        /// What is wrong.
        error: ConfigError,
        /// Where the settings came from.
        whence: Vec<String>,
    },
    /// The arguments together were refused (cannot happen with each
    /// accepted alone, unless a flag gains a conflict).
    #[error("{0}")]
    Arguments(String),
}

/// Reads the configuration file at `path`, if any, and lays `given` over it.
///
/// # Errors
/// The file's error (naming it, the line and the key), or settings that
/// do not work together.
pub fn load(path: Option<&Path>, given: &Given) -> anyhow::Result<Resolved> {
    let file = path.map(ConfigFile::read).transpose()?;
    Ok(resolve(file.as_ref(), given)?)
}

/// Lays `given` over `file` over the defaults.
///
/// # Errors
/// [`ResolveError`] when the settings do not work together.
pub fn resolve(file: Option<&ConfigFile>, given: &Given) -> Result<Resolved, ResolveError> {
    let mut origins = BTreeMap::new();
    let mut arguments = Vec::new();
    for setting in file.map(ConfigFile::settings).unwrap_or_default() {
        if given.gives(&setting.key) {
            continue;
        }
        origins.insert(setting.key.clone(), Origin::File(setting.line));
        arguments.extend(setting.argument.clone());
    }
    for setting in &given.settings {
        origins.insert(setting.key.clone(), setting.origin.clone());
        arguments.extend(setting.arguments.iter().cloned());
    }
    let settings =
        super::parse(&arguments).map_err(|error| ResolveError::Arguments(clap_message(&error)))?;
    let resolved = Resolved {
        settings,
        origins,
        file: file.map(|file| file.path().to_owned()),
    };
    if let Err(pair) = resolved.settings.check_pairs() {
        let whence = resolved.whence(pair.key).unwrap_or_default();
        return Err(ResolveError::Pair { pair, whence });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(args: &[&str]) -> Given {
        let matches = definition()
            .try_get_matches_from(args)
            .expect("valid arguments");
        Given::from_matches(&matches)
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("lubdub.toml"), text).expect("valid file")
    }

    fn rendered(resolved: &Resolved) -> toml::Table {
        toml::Table::try_from(&resolved.settings).expect("serializes")
    }

    #[test]
    fn only_what_was_given_is_given_not_defaults() {
        let given = given(&["--max-missed", "7", "--tls-client-cert-names"]);
        let keys: Vec<&str> = given
            .settings
            .iter()
            .map(|setting| setting.key.as_str())
            .collect();
        assert_eq!(keys, ["max-missed", "tls-client-cert-names"]);
        assert_eq!(
            given.settings[0].arguments,
            [OsString::from("--max-missed=7")]
        );
        assert_eq!(given.settings[0].origin, Origin::Flag);
    }

    #[test]
    fn an_invalid_value_is_said_with_where_it_came_from() {
        let file = file("\ninterval = \"4s\"\n");
        let resolved = resolve(Some(&file), &given(&["--min-interval", "5s"])).expect("parses");
        let error = resolved.server_config().expect_err("5s > 4s");
        assert!(
            error.to_string().ends_with(
                "; min-interval comes from the command line; interval comes from line 2 of lubdub.toml"
            ),
            "{error}"
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let file = file("max-missed = 9\ninterval = \"4s\"\n");
        let resolved = resolve(Some(&file), &given(&["--max-missed", "7"])).expect("valid");
        let table = rendered(&resolved);
        assert_eq!(table["max-missed"].as_integer(), Some(7));
        assert_eq!(table["interval"].as_str(), Some("4s"));
        assert_eq!(table["min-interval"].as_str(), Some("100ms"));
        assert_eq!(resolved.origin("max-missed"), &Origin::Flag);
        assert_eq!(resolved.origin("interval"), &Origin::File(2));
        assert_eq!(resolved.origin("min-interval"), &Origin::Default);
        // A flag left at its default does not hide the file's value.
        let resolved = resolve(Some(&file), &Given::default()).expect("valid");
        assert_eq!(rendered(&resolved)["max-missed"].as_integer(), Some(9));
    }

    #[test]
    fn halves_of_a_pair_may_come_from_different_layers() {
        let file = file("tls-cert = \"cert.pem\"\n");
        let resolved = resolve(Some(&file), &given(&["--tls-key", "key.pem"])).expect("a pair");
        assert!(resolved.settings.tls_files().is_some());
        let error = resolve(None, &given(&["--tls-key", "key.pem"])).expect_err("half");
        assert_eq!(
            error.to_string(),
            "tls-key is set but tls-cert is not: TLS needs the key's certificate \
             (tls-key comes from the command line)"
        );
    }
}
