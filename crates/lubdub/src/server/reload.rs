//! Reloading a running server: which settings it takes on while running
//! and which need a restart, decided in one pure function
//! ([`ServerConfig::with_live_settings`]); the files a configuration names
//! are read before the loop hears of it ([`prepare_reload`]), so a broken
//! file leaves the running server as it was.
//!
//! Data flow: new `ServerConfig` → [`prepare_reload`] (validate, read the
//! auth file, token secret and TLS files) → [`Reload`] →
//! `ServerControl::reload` → `Command::Reload` → the loop applies the live
//! settings between two turns (`event_loop::reload`). No session is
//! dropped: what changes applies to decisions made from then on.

use std::sync::Arc;

use super::{load_files, ServerConfig, StartError};
use crate::auth::{AuthConfig, Authenticator};

/// A configuration checked and its files read, ready for a running server.
#[derive(Debug, Clone)]
pub struct Reload {
    pub(crate) config: ServerConfig,
    pub(crate) authenticator: Option<Authenticator>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

impl Reload {
    /// How many names the auth file just read grants; `None` without one.
    pub fn auth_file_names(&self) -> Option<usize> {
        self.authenticator.as_ref().and_then(Authenticator::names)
    }
}

/// Validates `config` and reads the files it names, as a start would
/// (with the same warnings about exposed secret files).
///
/// # Errors
/// The [`StartError`] a start with `config` would fail with, except that
/// no port is bound.
pub fn prepare_reload(config: ServerConfig) -> Result<Reload, StartError> {
    let (authenticator, tls) = load_files(&config)?;
    Ok(Reload {
        config,
        authenticator,
        tls,
    })
}

impl ServerConfig {
    /// `self` (the running configuration) with the settings a running
    /// server can take on copied from `wanted`; everything else stays.
    ///
    /// Live: the limits (connections, accept rate, MSG and PING rates,
    /// fan-out budgets, outbound queues, refusal strikes), the handshake,
    /// verifier-queue and shutdown timeouts, TCP keepalive and user
    /// timeout (for new connections), the credential files while
    /// credentials stay required, and the TLS files while TLS stays on.
    /// Not live: the addresses, intervals, detector and its parameters,
    /// the frame size (a partial frame may be in flight), the admin API's
    /// connection share and the verifier threads and queue; turning
    /// credentials or TLS on or off (sessions admitted under one rule
    /// would stay under it).
    pub fn with_live_settings(&self, wanted: &ServerConfig) -> ServerConfig {
        let credentials_stay = self.auth.is_enabled() == wanted.auth.is_enabled();
        let auth = AuthConfig {
            verifier_queue_wait: wanted.auth.verifier_queue_wait,
            ..if credentials_stay {
                AuthConfig {
                    auth_file: wanted.auth.auth_file.clone(),
                    token_secret_file: wanted.auth.token_secret_file.clone(),
                    ..self.auth.clone()
                }
            } else {
                self.auth.clone()
            }
        };
        let tls = match (&self.tls, &wanted.tls) {
            (Some(_), Some(files)) => Some(files.clone()),
            (running, _) => running.clone(),
        };
        ServerConfig {
            handshake_timeout: wanted.handshake_timeout,
            tcp_keepalive: wanted.tcp_keepalive,
            tcp_user_timeout: wanted.tcp_user_timeout,
            max_connections: wanted.max_connections,
            max_connections_per_ip: wanted.max_connections_per_ip,
            accept_rate_per_ip: wanted.accept_rate_per_ip,
            max_messages_per_sec: wanted.max_messages_per_sec,
            max_pings_per_interval: wanted.max_pings_per_interval,
            max_refusal_strikes: wanted.max_refusal_strikes,
            max_outbound_bytes: wanted.max_outbound_bytes,
            slow_consumer_timeout: wanted.slow_consumer_timeout,
            max_outbound_total: wanted.max_outbound_total,
            max_deliveries_per_sec: wanted.max_deliveries_per_sec,
            max_fanout_bytes_per_sec: wanted.max_fanout_bytes_per_sec,
            max_deliveries_per_sec_total: wanted.max_deliveries_per_sec_total,
            max_fanout_bytes_per_sec_total: wanted.max_fanout_bytes_per_sec_total,
            shutdown_timeout: wanted.shutdown_timeout,
            auth,
            tls,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::server::{DetectorPolicy, TlsFiles};

    fn tls(cert: &str) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: cert.into(),
            key: "key.pem".into(),
            client_ca: None,
            client_cert_names: false,
        })
    }

    #[test]
    fn limits_are_taken_and_the_heartbeat_contract_is_kept() {
        let running = ServerConfig::default();
        let wanted = ServerConfig {
            listen: "0.0.0.0:9".parse().expect("address"),
            interval: Duration::from_secs(4),
            max_missed: 9,
            detector: DetectorPolicy::Phi,
            max_frame_len: 100_000,
            max_messages_per_sec: 7,
            max_outbound_bytes: 2 << 20,
            handshake_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let applied = running.with_live_settings(&wanted);
        let expected = ServerConfig {
            max_messages_per_sec: 7,
            max_outbound_bytes: 2 << 20,
            handshake_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        assert_eq!(applied, expected);
    }

    #[test]
    fn credential_files_change_while_credentials_stay_required() {
        let with = |file: Option<&str>, secret: Option<&str>| ServerConfig {
            auth: AuthConfig {
                auth_file: file.map(Into::into),
                token_secret_file: secret.map(Into::into),
                ..AuthConfig::default()
            },
            ..ServerConfig::default()
        };
        let running = with(Some("/a"), None);
        let wanted = with(Some("/b"), Some("/s"));
        assert_eq!(running.with_live_settings(&wanted), wanted);
        // Turning them off, or on, waits for a restart.
        let off = with(None, None);
        assert_eq!(running.with_live_settings(&off), running);
        assert_eq!(off.with_live_settings(&running), off);
    }

    #[test]
    fn tls_files_change_while_tls_stays_on() {
        let running = ServerConfig {
            tls: tls("old.pem"),
            ..ServerConfig::default()
        };
        let wanted = ServerConfig {
            tls: tls("new.pem"),
            ..ServerConfig::default()
        };
        assert_eq!(running.with_live_settings(&wanted), wanted);
        let plain = ServerConfig::default();
        assert_eq!(running.with_live_settings(&plain), running);
        assert_eq!(plain.with_live_settings(&running), plain);
    }
}
