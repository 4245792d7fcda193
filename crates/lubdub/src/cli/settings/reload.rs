//! What a reload (SIGHUP) changes, key by key: the settings in effect
//! against the settings wanted, which changes a running server takes on
//! ([`LIVE`]) and which need a restart, and the settings that result.
//! Pure: the server's side (`lubdub::server::reload`) applies the same
//! rule to its configuration, and a test holds the two together.

use std::path::Path;

use super::file::ConfigFile;
use super::layers::{resolve, Given, ResolveError};
use super::ServerSettings;

/// Keys a running server takes on: limits and timeouts that apply to the
/// next connection, frame, HELLO or fan-out, the credential files while
/// credentials stay required, and the TLS files while TLS stays on.
pub const LIVE: &[&str] = &[
    "handshake-timeout",
    "tcp-keepalive",
    "tcp-user-timeout",
    "max-connections",
    "max-connections-per-ip",
    "accept-rate-per-ip",
    "max-messages-per-sec",
    "max-pings-per-interval",
    "max-outbound",
    "slow-consumer-timeout",
    "max-outbound-total",
    "max-deliveries-per-sec",
    "max-fanout-bytes-per-sec",
    "max-deliveries-per-sec-total",
    "max-fanout-bytes-per-sec-total",
    "max-refusal-strikes",
    "shutdown-timeout",
    "verifier-queue-wait",
    "auth-file",
    "token-secret",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "tls-client-cert-names",
];

const CREDENTIALS: [&str; 2] = ["auth-file", "token-secret"];
const TLS: [&str; 4] = [
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "tls-client-cert-names",
];

/// One key whose wanted value differs from the one in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// Its value in effect (`None`: not set).
    pub old: Option<toml::Value>,
    /// Its value wanted.
    pub new: Option<toml::Value>,
    /// Why it waits for a restart; `None` when it applies now.
    pub restart: Option<&'static str>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = |value: &Option<toml::Value>| {
            value
                .as_ref()
                .map_or_else(|| "(not set)".to_owned(), ToString::to_string)
        };
        write!(
            f,
            "{}: {} → {}",
            self.key,
            value(&self.old),
            value(&self.new)
        )
    }
}

/// What a reload does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every key that differs, in the order of `--help`.
    pub changes: Vec<Change>,
    /// The settings in effect after the reload: the running ones with the
    /// changes that apply now.
    pub applied: ServerSettings,
}

/// Compares the settings `running` with those `wanted`.
///
/// # Errors
/// When a value does not read back (a path that is not UTF-8).
pub fn plan(running: &ServerSettings, wanted: &ServerSettings) -> Result<Plan, ResolveError> {
    let unprintable = |error: toml::ser::Error| ResolveError::Arguments(error.to_string());
    let running = toml::Table::try_from(running).map_err(unprintable)?;
    let wanted = toml::Table::try_from(wanted).map_err(unprintable)?;
    let credentials = |table: &toml::Table| CREDENTIALS.iter().any(|key| table.contains_key(*key));
    let tls = |table: &toml::Table| table.contains_key("tls-cert");
    let mut applied = running.clone();
    let mut changes = Vec::new();
    for (key, _) in super::keys() {
        let (old, new) = (running.get(&key), wanted.get(&key));
        if old == new {
            continue;
        }
        let restart = if !LIVE.contains(&key.as_str()) {
            Some("needs a restart")
        } else if CREDENTIALS.contains(&key.as_str())
            && credentials(&running) != credentials(&wanted)
        {
            Some("turning credentials on or off needs a restart")
        } else if TLS.contains(&key.as_str()) && tls(&running) != tls(&wanted) {
            Some("turning TLS on or off needs a restart")
        } else {
            None
        };
        if restart.is_none() {
            match new {
                Some(value) => applied.insert(key.clone(), value.clone()),
                None => applied.remove(&key),
            };
        }
        changes.push(Change {
            key,
            old: old.cloned(),
            new: new.cloned(),
            restart,
        });
    }
    // Read back as a file would be: the same parsers, the same defaults.
    let text = toml::to_string(&applied).map_err(unprintable)?;
    let file = ConfigFile::parse(Path::new("(settings after the reload)"), &text)
        .map_err(|error| ResolveError::Arguments(error.to_string()))?;
    let applied = resolve(Some(&file), &Given::default())?.settings;
    Ok(Plan { changes, applied })
}

#[cfg(test)]
mod tests {
    use super::super::from_flags as settings;
    use super::*;

    #[test]
    fn live_keys_apply_and_the_others_wait_for_a_restart() {
        let running = settings(&["--max-messages-per-sec=100", "--max-missed=5"]);
        let wanted = settings(&["--max-messages-per-sec=10", "--max-missed=7"]);
        let plan = plan(&running, &wanted).expect("plans");
        let said: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            ["max-missed: 5 → 7", "max-messages-per-sec: 100 → 10"]
        );
        assert_eq!(plan.changes[0].restart, Some("needs a restart"));
        assert_eq!(plan.changes[1].restart, None);
        assert_eq!(
            plan.applied,
            settings(&["--max-messages-per-sec=10", "--max-missed=5"])
        );
    }

    /// Another value `key` accepts than `value`, its default: a number one
    /// more, a duration one second longer, another address port, another
    /// choice; `None` for the credential and TLS keys (tested above and in
    /// `lubdub::server::reload`, whose liveness depends on the others).
    fn another_value(key: &str, value: Option<&toml::Value>) -> Option<String> {
        if CREDENTIALS.contains(&key) || TLS.contains(&key) {
            return None;
        }
        if key == "webhook" {
            return Some("http://127.0.0.1:9/hook".to_owned());
        }
        let definition = super::super::definition();
        let arg = definition
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key))
            .expect("a flag");
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|choice| choice.get_name().to_owned())
            .collect();
        Some(match value {
            None => "3".to_owned(),
            Some(toml::Value::Integer(number)) => (number + 1).to_string(),
            Some(toml::Value::Float(number)) => (number + 1.0).to_string(),
            Some(toml::Value::String(text)) if !choices.is_empty() => choices
                .into_iter()
                .find(|choice| choice != text)
                .expect("another choice"),
            Some(toml::Value::String(text)) if text == "off" => "1m".to_owned(),
            Some(toml::Value::String(text)) => match text.parse::<std::net::SocketAddr>() {
                Ok(address) => format!("{}:{}", address.ip(), address.port() + 1),
                Err(_) => {
                    let duration = humantime::parse_duration(text).expect("a duration");
                    humantime::format_duration(duration + std::time::Duration::from_secs(1))
                        .to_string()
                }
            },
            Some(other) => panic!("{key} = {other}: no other value known"),
        })
    }

    #[test]
    fn the_live_keys_are_the_settings_the_server_takes_on() {
        // Derived from the clap definition: each key changed alone must be
        // taken on by `ServerConfig::with_live_settings` exactly when LIVE
        // lists it, so a new flag the loop reads live, or a LIVE key the
        // loop ignores, fails here.
        let defaults = settings(&[]);
        let table = toml::Table::try_from(&defaults).expect("serializes");
        let running = defaults.server_config();
        let mut checked = 0;
        for (key, _) in super::super::keys() {
            let Some(value) = another_value(&key, table.get(&key)) else {
                continue;
            };
            let wanted = settings(&[&format!("--{key}={value}")]).server_config();
            let taken = running.with_live_settings(&wanted) != running;
            assert_eq!(
                taken,
                LIVE.contains(&key.as_str()),
                "{key} = {value}: taken on live: {taken}"
            );
            checked += 1;
        }
        assert!(checked > 30, "{checked}");
    }

    #[test]
    fn nothing_changes_when_nothing_differs() {
        let running = settings(&["--auth-file=/a"]);
        let plan = plan(&running, &running.clone()).expect("plans");
        assert!(plan.changes.is_empty());
        assert_eq!(plan.applied, running);
    }

    #[test]
    fn credential_files_change_but_credentials_do_not_turn_on_or_off() {
        let file_only = settings(&["--auth-file=/a"]);
        let both = settings(&["--auth-file=/b", "--token-secret=/s"]);
        let plan_both = plan(&file_only, &both).expect("plans");
        assert!(plan_both
            .changes
            .iter()
            .all(|change| change.restart.is_none()));
        assert_eq!(plan_both.applied, both);

        let none = settings(&[]);
        let off = plan(&file_only, &none).expect("plans");
        assert_eq!(off.changes.len(), 1);
        assert_eq!(off.changes[0].to_string(), "auth-file: \"/a\" → (not set)");
        assert_eq!(
            off.changes[0].restart,
            Some("turning credentials on or off needs a restart")
        );
        assert_eq!(off.applied, file_only);
        assert_eq!(plan(&none, &file_only).expect("plans").applied, none);
    }

    #[test]
    fn tls_files_change_but_tls_does_not_turn_on_or_off() {
        let old = settings(&["--tls-cert=/old.pem", "--tls-key=/k"]);
        let new = settings(&["--tls-cert=/new.pem", "--tls-key=/k"]);
        assert_eq!(plan(&old, &new).expect("plans").applied, new);
        let plain = settings(&[]);
        let off = plan(&old, &plain).expect("plans");
        assert!(off
            .changes
            .iter()
            .all(|change| change.restart == Some("turning TLS on or off needs a restart")));
        assert_eq!(off.applied, old);
    }
}
