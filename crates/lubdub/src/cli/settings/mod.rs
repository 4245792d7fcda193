//! `lubdub server`'s settings: the flags (their clap definition is the one
//! list of settings, with their defaults and help) and what they mean as a
//! [`ServerConfig`]. The configuration file (`file`) has one key per flag,
//! each parsed by that flag's own parser; `layers` stacks defaults, the
//! file, the environment and the flags; `pairs` checks the settings that
//! need each other; `render` prints the result as TOML; `reload` decides
//! what a running server takes on.

pub mod file;
pub mod layers;
mod pairs;
pub mod reload;
pub mod render;
mod urls;

pub use pairs::MissingPair;
pub use urls::WebhookUrls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lubdub::server::{DetectorPolicy, ServerConfig, TlsFiles};

use super::{
    parse_addr, parse_admin_addr, parse_duration, parse_duration_or_off, DurationOrOff, LogFormat,
};

/// Every setting of `lubdub server`, as a flag and as a key of the
/// configuration file of the same name (`--max-missed` is `max-missed`);
/// each maps to a field of [`ServerConfig`] or of the admin API's config.
#[derive(Debug, Clone, PartialEq, Args, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerSettings {
    /// Address the heartbeat protocol listens on, host:port (a host name
    /// is resolved once, at start).
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    listen: SocketAddr,
    /// Address of the admin HTTP API, host:port: GET /sessions (who is
    /// online), /healthz and /metrics (Prometheus).
    #[arg(long, default_value = super::DEFAULT_ADMIN, value_parser = parse_admin_addr)]
    pub admin: SocketAddr,
    /// Event loops (threads) serving connections; each gets an equal share
    /// of them, handed out in turn by one accepting thread. Default: one per
    /// available core.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u64>,
    /// Heartbeat interval granted to clients that ask for none. A session
    /// silent this long is suspect.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    interval: Duration,
    /// Shortest interval granted; shorter requests are raised to it.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    min_interval: Duration,
    /// Longest interval granted; longer requests are lowered to it.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    max_interval: Duration,
    /// Silent intervals after which a session is dropped (5 × 3s = 15s).
    #[arg(long, default_value_t = 5)]
    max_missed: u32,
    /// Time a new connection has to send HELLO before it is closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(serialize_with = "super::duration_text")]
    handshake_timeout: Duration,
    /// Largest frame accepted, in bytes; a longer length prefix ends the
    /// connection before its payload is read.
    #[arg(long, default_value_t = lubdub::core::protocol::DEFAULT_MAX_FRAME_LEN, help_heading = "Limits")]
    max_frame: usize,
    /// Failure detector. `counter`: suspect after one silent interval, dead
    /// after --max-missed. `phi`: phi accrual, which learns each session's
    /// rhythm; suspect at half --phi-threshold, dead at it, and never later
    /// than --max-missed intervals. See docs/DETECTION.md.
    #[arg(long, value_enum, default_value_t = DetectorPolicy::Counter)]
    detector: DetectorPolicy,
    /// Phi at which a session is dead (phi detector): 8 means the chance
    /// that the next frame is merely late has fallen to 1 in 10^8.
    #[arg(long, default_value_t = 8.0)]
    phi_threshold: f64,
    /// Floor under the measured standard deviation of a session's gaps
    /// between frames (phi detector), so that very regular sessions are not
    /// dropped for the first small delay.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    phi_min_std_dev: Duration,
    /// Silence beyond a session's mean gap that phi tolerates before it
    /// starts to rise (phi detector): the longest pause (GC, radio wake-up)
    /// you want never to be fatal.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    phi_acceptable_pause: Duration,
    /// Idle time before TCP keepalive probes start, also their spacing, or
    /// `off`. The heartbeat already drops a silent client at its deadline;
    /// set this only to keep idle NAT or firewall state alive, and well
    /// above the deadline (probes near the deadline were measured to reset
    /// live sessions before their BYE).
    #[arg(long, default_value = "off", value_parser = parse_duration_or_off)]
    tcp_keepalive: DurationOrOff,
    /// TCP_USER_TIMEOUT: how long data the server sent may stay
    /// unacknowledged before the kernel aborts the connection, or `off`
    /// (the system's retransmission limit, about 15 minutes).
    #[arg(long, default_value = "off", value_parser = parse_duration_or_off)]
    tcp_user_timeout: DurationOrOff,
    /// Most connections open at once (handshaking, established and
    /// closing); more are answered REJECT server_full (a TLS server closes
    /// them without it, which TLS clients could not read). Default: the
    /// process's open-file limit minus 64 kept for the server's own files
    /// and minus --admin-max-connections kept for the admin API.
    #[arg(long, help_heading = "Limits")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    /// Admin API connections open at once; more are answered 503 and
    /// closed. This many descriptors are kept back from the protocol
    /// port's default --max-connections.
    #[arg(long, default_value_t = lubdub::admin::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    admin_max_connections: u64,
    /// Time an admin client has to send a request's headers (on a new or a
    /// kept-alive connection) before the connection is closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(serialize_with = "super::duration_text")]
    admin_header_timeout: Duration,
    /// Longest an admin connection stays open, whatever it does (a slow
    /// reader of a long listing, back-to-back requests); then it is closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(serialize_with = "super::duration_text")]
    admin_connection_timeout: Duration,
    /// File holding the admin API's bearer token (one line, at least 16
    /// characters; `openssl rand -hex 32 > FILE`). With it every route but
    /// /healthz needs `Authorization: Bearer TOKEN`. Required when --admin
    /// is not a loopback address: the API lists and streams everyone's
    /// presence.
    #[arg(long, value_name = "FILE", env = "LUBDUB_ADMIN_TOKEN_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Presence events the server keeps (about 130 bytes each) so that an
    /// event stream (GET /events) that reconnects with Last-Event-ID
    /// misses none; a stream asking for older ones is told to resync.
    #[arg(long, value_name = "N", default_value_t = lubdub::server::hub::DEFAULT_CAPACITY as u64, value_parser = clap::value_parser!(u64).range(16..=1_048_576), help_heading = "Limits")]
    event_history: u64,
    /// POST every change of presence (as GET /events shows it) to these
    /// URLs, comma-separated: JSON batches signed with HMAC-SHA256 in the
    /// Lubdub-Signature header, retried with backoff. Needs
    /// --webhook-secret-file.
    #[arg(long, value_name = "URL[,URL...]", value_parser = urls::parse_webhook_urls)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookUrls>,
    /// File holding the key webhook bodies are signed with (at least 16
    /// characters; `openssl rand -hex 32 > FILE`), shared with the receivers.
    #[arg(long, value_name = "FILE", env = "LUBDUB_WEBHOOK_SECRET_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Most changes in one webhook POST.
    #[arg(long, value_name = "N", default_value_t = lubdub::webhook::DEFAULT_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    webhook_batch: u64,
    /// Longest a webhook POST may take; a slower receiver's POST counts
    /// as failed and is retried.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    webhook_timeout: Duration,
    /// Most connections open at once from one source address (IPv6: one
    /// /64); 0 for no limit. Raise it for fleets behind one NAT gateway.
    #[arg(long, default_value_t = 1_000, help_heading = "Limits")]
    max_connections_per_ip: u32,
    /// New connections a second from one source address, in bursts of as
    /// many; 0 for no limit. Refused ones get REJECT server_full and retry
    /// with backoff.
    #[arg(long, default_value_t = 200, help_heading = "Limits")]
    accept_rate_per_ip: u32,
    /// MSGs a second one session may send, in bursts of as many; 0 for no
    /// limit. Beyond it MSGs are not delivered and the sender gets NOTICE
    /// rate_limited.
    #[arg(long, default_value_t = 100, help_heading = "Limits")]
    max_messages_per_sec: u32,
    /// PINGs per granted interval a session may send (4 with a 3s interval:
    /// one every 750ms, in bursts of one deadline's worth); 0 for no limit.
    /// Beyond it PINGs go unanswered, the first with a NOTICE warning, and a
    /// flood that goes on ends the session with BYE too_many_pings.
    #[arg(long, default_value_t = 4, help_heading = "Limits")]
    max_pings_per_interval: u32,
    /// Unsent bytes queued for one session. Messages from others may fill
    /// half of it; beyond that they are not queued and their senders get
    /// NOTICE recipient_busy, so a client that reads is never dropped for
    /// what others send it. A client whose queue would exceed the whole is
    /// dropped (slow consumer).
    #[arg(long, default_value_t = 1024 * 1024, help_heading = "Limits")]
    max_outbound: usize,
    /// How long queued bytes may wait: a client whose queue did not drain
    /// what it held this long ago (it does not read, or reads a trickle)
    /// is dropped as a slow consumer, however small the queue.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(serialize_with = "super::duration_text")]
    slow_consumer_timeout: Duration,
    /// Memory for unsent bytes of all sessions together. The queues and
    /// the messages waiting to be fanned out are held to 7/8 of it; the
    /// rest covers what they cannot count (partial inbound frames, the
    /// allocator's holes). There, messages are refused (NOTICE
    /// server_busy) and the largest queues that are not draining are
    /// dropped as slow consumers. Default: 1/16 of the machine's memory,
    /// between 64 MiB and 4 GiB.
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_outbound_total: Option<usize>,
    /// Deliveries a second one session may cause (a direct MSG is one, a
    /// broadcast one per recipient), with a second's worth at once; a
    /// broadcast larger than that goes out when the sender is at rest and
    /// it then waits. Beyond: NOTICE rate_limited. 0 for no limit.
    #[arg(long, default_value_t = 2_000, help_heading = "Limits")]
    max_deliveries_per_sec: u32,
    /// Bytes a second one session may have delivered (a broadcast counts
    /// its size once per recipient). 0 for no limit.
    #[arg(long, default_value_t = 2 * 1024 * 1024, help_heading = "Limits")]
    max_fanout_bytes_per_sec: u64,
    /// Deliveries a second of all sessions together, so that relaying can
    /// never take the loop from heartbeats and verdicts. Beyond: NOTICE
    /// server_busy. 0 for no limit.
    #[arg(long, default_value_t = 50_000, help_heading = "Limits")]
    max_deliveries_per_sec_total: u32,
    /// Bytes a second delivered by all sessions together. 0 for no limit.
    #[arg(long, default_value_t = 64 * 1024 * 1024, help_heading = "Limits")]
    max_fanout_bytes_per_sec_total: u64,
    /// Strikes for MSGs refused (over the session's rates or budgets) that
    /// close it with BYE rate_limited: one per second in which refusals go
    /// on, and one per 255 refused MSGs (a paste over the rate is one).
    /// 0 never closes.
    #[arg(long, default_value_t = 5, help_heading = "Limits")]
    max_refusal_strikes: u8,
    /// Log format on stderr: `text`, one readable line per event, or
    /// `json`, one JSON object per line (`timestamp`, `level`, `target`,
    /// `message` and the event's fields at the top level) for log
    /// collectors. RUST_LOG sets the level either way.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// On SIGTERM or Ctrl-C, how long to wait for every session's BYE to
    /// be delivered and its client to close before closing the rest.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "super::duration_text")]
    shutdown_timeout: Duration,

    // Credentials: with either flag, every HELLO must carry a credential
    // for its name, else REJECT unauthorized.
    /// Require credentials: a file of `name:$argon2id$...` lines, written
    /// with `lubdub passwd`. A HELLO may carry the secret of its name's
    /// line (verified off the event loop; successes are cached).
    #[arg(long, value_name = "FILE", env = "LUBDUB_AUTH_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_file: Option<PathBuf>,
    /// Require credentials: a HELLO may carry a token minted with
    /// `lubdub token --secret-file FILE` (create FILE with
    /// `lubdub token --new-secret FILE`). With --auth-file too, either works.
    #[arg(long, value_name = "FILE", env = "LUBDUB_TOKEN_SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_secret: Option<PathBuf>,
    /// Threads that check --auth-file secrets (argon2, never on the event
    /// loop); by default one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    verifier_threads: Option<u16>,
    /// Secrets waiting for a verifier thread, in all, beyond which a HELLO
    /// is answered REJECT server_busy at once (each address may have 8
    /// waiting; addresses take turns).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    verifier_queue: u32,
    /// A secret not taken by a verifier thread within this wait is not
    /// checked: its HELLO is answered REJECT server_busy.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(serialize_with = "super::duration_text")]
    verifier_queue_wait: Duration,

    // TLS: off unless --tls-cert and --tls-key are given (together).
    /// Serve TLS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Clients then connect with `lubdub client --tls` (or
    /// --tls-ca FILE); a plain client is answered REJECT tls_required.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, value_name = "FILE", env = "LUBDUB_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by a CA in
    /// this PEM file (mutual TLS); needs --tls-cert and --tls-key.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_ca: Option<PathBuf>,
    /// Bind names to client certificates: a client may claim only a name
    /// its certificate carries, as a subject common name (CN) or a DNS
    /// subject alternative name, equal byte for byte (no case folding, no
    /// wildcards; IP, e-mail and URI names do not count). Any other name
    /// is answered REJECT unauthorized saying which names the certificate
    /// grants. Checked before --auth-file or --token-secret credentials,
    /// which are still required when set. Needs --tls-client-ca.
    #[arg(long)]
    tls_client_cert_names: bool,
}

impl ServerSettings {
    /// The server's configuration these settings describe.
    pub fn server_config(&self) -> ServerConfig {
        let defaults = lubdub::auth::AuthConfig::default();
        ServerConfig {
            listen: self.listen,
            threads: self.threads.map(|threads| threads as usize),
            interval: self.interval,
            min_interval: self.min_interval,
            max_interval: self.max_interval,
            max_missed: self.max_missed,
            handshake_timeout: self.handshake_timeout,
            max_frame_len: self.max_frame,
            detector: self.detector,
            phi_threshold: self.phi_threshold,
            phi_min_std_dev: self.phi_min_std_dev,
            phi_acceptable_pause: self.phi_acceptable_pause,
            tcp_keepalive: self.tcp_keepalive.0,
            tcp_user_timeout: self.tcp_user_timeout.0,
            max_connections: self.max_connections,
            admin_connections: self.admin_config().max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            accept_rate_per_ip: self.accept_rate_per_ip,
            max_messages_per_sec: self.max_messages_per_sec,
            max_pings_per_interval: self.max_pings_per_interval,
            max_outbound_bytes: self.max_outbound,
            slow_consumer_timeout: self.slow_consumer_timeout,
            max_outbound_total: self.max_outbound_total,
            max_deliveries_per_sec: self.max_deliveries_per_sec,
            max_fanout_bytes_per_sec: self.max_fanout_bytes_per_sec,
            max_deliveries_per_sec_total: self.max_deliveries_per_sec_total,
            max_fanout_bytes_per_sec_total: self.max_fanout_bytes_per_sec_total,
            max_refusal_strikes: self.max_refusal_strikes,
            shutdown_timeout: self.shutdown_timeout,
            event_history: usize::try_from(self.event_history).unwrap_or(usize::MAX),
            auth: lubdub::auth::AuthConfig {
                auth_file: self.auth_file.clone(),
                token_secret_file: self.token_secret.clone(),
                verifier_threads: self
                    .verifier_threads
                    .map_or(defaults.verifier_threads, usize::from),
                verifier_queue: self.verifier_queue as usize,
                verifier_queue_wait: self.verifier_queue_wait,
                ..defaults
            },
            tls: self.tls_files(),
        }
    }

    /// The webhooks' configuration, reading the secret file; `None`
    /// without --webhook (`check_pairs` refuses --webhook without a secret).
    ///
    /// # Errors
    /// The secret file cannot be used.
    pub fn webhook_config(
        &self,
    ) -> Result<Option<lubdub::webhook::WebhookConfig>, lubdub::webhook::SecretFileError> {
        let (Some(urls), Some(secret_file)) = (&self.webhook, &self.webhook_secret_file) else {
            return Ok(None);
        };
        Ok(Some(lubdub::webhook::WebhookConfig {
            urls: urls.0.clone(),
            secret: lubdub::webhook::read_secret(secret_file)?,
            batch: usize::try_from(self.webhook_batch).unwrap_or(usize::MAX),
            timeout: self.webhook_timeout,
            backoff: lubdub::client::backoff::Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
        }))
    }

    /// The admin port's limits.
    pub fn admin_config(&self) -> lubdub::admin::AdminConfig {
        lubdub::admin::AdminConfig {
            max_connections: usize::try_from(self.admin_max_connections).unwrap_or(usize::MAX),
            header_timeout: self.admin_header_timeout,
            connection_timeout: self.admin_connection_timeout,
        }
    }

    /// The TLS files, when both --tls-cert and --tls-key are given
    /// (`check_pairs` refuses one without the other).
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let (cert, key) = self.tls_cert.clone().zip(self.tls_key.clone())?;
        Some(TlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            client_cert_names: self.tls_client_cert_names,
        })
    }
}
/// The settings' clap definition: one argument per setting, with its
/// long name (the key), default, parser and environment variable.
pub fn definition() -> clap::Command {
    ServerSettings::augment_args(clap::Command::new("lubdub server").no_binary_name(true))
}

/// [`definition`] without environment variables: a parser of arguments
/// alone, for the layers (which read the environment once, at start).
pub fn parser() -> clap::Command {
    definition().mut_args(|arg| arg.env(None))
}

/// Parses `args` (`--key=value` words) alone, defaults for the rest.
///
/// # Errors
/// clap's error, for a value its flag would refuse.
pub fn parse(args: &[std::ffi::OsString]) -> Result<ServerSettings, clap::Error> {
    let matches = parser().try_get_matches_from(args)?;
    <ServerSettings as clap::FromArgMatches>::from_arg_matches(&matches)
}

/// A setting's key and whether it takes a value (a switch such as
/// `tls-client-cert-names` does not), in the order of `--help`.
pub fn keys() -> Vec<(String, bool)> {
    definition()
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            Some((long.to_owned(), arg.get_action().takes_values()))
        })
        .collect()
}

/// The settings these flags (`--key=value` words) give; for tests.
#[cfg(test)]
pub fn from_flags(args: &[&str]) -> ServerSettings {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    parse(&args).expect("valid arguments")
}

#[cfg(test)]
mod tests {
    use super::from_flags as settings;
    use super::*;

    #[test]
    fn every_key_is_printed_under_its_flag_name() {
        // Every optional setting set, so that every field is serialized.
        let all = settings(&[
            "--threads=2",
            "--max-connections=10",
            "--max-outbound-total=10000000",
            "--verifier-threads=2",
            "--auth-file=a",
            "--token-secret=s",
            "--tls-cert=c",
            "--tls-key=k",
            "--tls-client-ca=ca",
            "--admin-token-file=t",
            "--webhook=http://h/x",
            "--webhook-secret-file=s",
        ]);
        let table = toml::Table::try_from(&all).expect("serializes");
        let printed: Vec<&String> = table.keys().collect();
        let mut flags: Vec<String> = keys().into_iter().map(|(key, _)| key).collect();
        flags.sort();
        assert_eq!(printed, flags.iter().collect::<Vec<_>>());
    }
}
