//! `lubdub server`: the event loop on its thread, the admin API on tokio, and
//! a clean shutdown on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lubdub::server::{self, DetectorPolicy, InMemoryRegistry, ServerConfig, TlsFiles};
use tracing::{debug, info, warn};

use super::systemd::Notifier;
use super::{
    parse_addr, parse_admin_addr, parse_duration, parse_duration_or_off, DurationOrOff, LogFormat,
};

/// Flags of `lubdub server`; each maps to a field of [`ServerConfig`].
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address the heartbeat protocol listens on, host:port (a host name
    /// is resolved once, at start).
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    listen: SocketAddr,
    /// Address of the admin HTTP API, host:port: GET /sessions (who is
    /// online), /healthz and /metrics (Prometheus).
    #[arg(long, default_value = super::DEFAULT_ADMIN, value_parser = parse_admin_addr)]
    admin: SocketAddr,
    /// Heartbeat interval granted to clients that ask for none. A session
    /// silent this long is suspect.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    interval: Duration,
    /// Shortest interval granted; shorter requests are raised to it.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    min_interval: Duration,
    /// Longest interval granted; longer requests are lowered to it.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    max_interval: Duration,
    /// Silent intervals after which a session is dropped (5 × 3s = 15s).
    #[arg(long, default_value_t = 5)]
    max_missed: u32,
    /// Time a new connection has to send HELLO before it is closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Limits")]
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
    phi_min_std_dev: Duration,
    /// Silence beyond a session's mean gap that phi tolerates before it
    /// starts to rise (phi detector): the longest pause (GC, radio wake-up)
    /// you want never to be fatal.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
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
    max_connections: Option<usize>,
    /// Admin API connections open at once; more are answered 503 and
    /// closed. This many descriptors are kept back from the protocol
    /// port's default --max-connections.
    #[arg(long, default_value_t = lubdub::admin::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    admin_max_connections: u64,
    /// Time an admin client has to send a request's headers (on a new or a
    /// kept-alive connection) before the connection is closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Limits")]
    admin_header_timeout: Duration,
    /// Longest an admin connection stays open, whatever it does (a slow
    /// reader of a long listing, back-to-back requests); then it is closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    admin_connection_timeout: Duration,
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
    slow_consumer_timeout: Duration,
    /// Unsent bytes queued for all sessions together. At the cap, messages
    /// are refused (NOTICE server_busy) and the largest queues that are not
    /// draining are dropped as slow consumers. Default: 1/16 of the
    /// machine's memory, between 64 MiB and 4 GiB.
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
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
    log_format: LogFormat,
    /// On SIGTERM or Ctrl-C, how long to wait for every session's BYE to
    /// be delivered and its client to close before closing the rest.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    // Credentials: with either flag, every HELLO must carry a credential
    // for its name, else REJECT unauthorized.
    /// Require credentials: a file of `name:$argon2id$...` lines, written
    /// with `lubdub passwd`. A HELLO may carry the secret of its name's
    /// line (verified off the event loop; successes are cached).
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Require credentials: a HELLO may carry a token minted with
    /// `lubdub token --secret-file FILE` (create FILE with
    /// `lubdub token --new-secret FILE`). With --auth-file too, either works.
    #[arg(long, value_name = "FILE")]
    token_secret: Option<PathBuf>,
    /// Threads that check --auth-file secrets (argon2, never on the event
    /// loop); by default one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    verifier_threads: Option<u16>,
    /// Secrets waiting for a verifier thread, in all, beyond which a HELLO
    /// is answered REJECT server_busy at once (each address may have 8
    /// waiting; addresses take turns).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    verifier_queue: u32,
    /// A secret not taken by a verifier thread within this wait is not
    /// checked: its HELLO is answered REJECT server_busy.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Limits")]
    verifier_queue_wait: Duration,

    // TLS: off unless --tls-cert and --tls-key are given (together).
    /// Serve TLS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Clients then connect with `lubdub client --tls` (or
    /// --tls-ca FILE); a plain client is answered REJECT tls_required.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by a CA in
    /// this PEM file (mutual TLS); needs --tls-cert and --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Bind names to client certificates: a client may claim only a name
    /// its certificate carries, as a subject common name (CN) or a DNS
    /// subject alternative name, equal byte for byte (no case folding, no
    /// wildcards; IP, e-mail and URI names do not count). Any other name
    /// is answered REJECT unauthorized saying which names the certificate
    /// grants. Checked before --auth-file or --token-secret credentials,
    /// which are still required when set. Needs --tls-client-ca.
    #[arg(long, requires = "tls_client_ca")]
    tls_client_cert_names: bool,
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        let defaults = lubdub::auth::AuthConfig::default();
        ServerConfig {
            listen: self.listen,
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
}

impl ServerArgs {
    /// The admin port's limits.
    fn admin_config(&self) -> lubdub::admin::AdminConfig {
        lubdub::admin::AdminConfig {
            max_connections: usize::try_from(self.admin_max_connections).unwrap_or(usize::MAX),
            header_timeout: self.admin_header_timeout,
            connection_timeout: self.admin_connection_timeout,
        }
    }

    /// The TLS files, when both --tls-cert and --tls-key are given (clap
    /// refuses one without the other).
    fn tls_files(&self) -> Option<TlsFiles> {
        let (cert, key) = self.tls_cert.clone().zip(self.tls_key.clone())?;
        Some(TlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            client_cert_names: self.tls_client_cert_names,
        })
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let _log_writer = super::init_logging("info", args.log_format);
    // Under systemd (Type=notify): READY=1 once both ports serve,
    // STOPPING=1 when a signal starts the shutdown.
    let supervisor = match Notifier::from_environment() {
        Ok(notifier) => notifier,
        Err(error) => {
            warn!("{error}; the service manager will not hear that the server is ready");
            None
        }
    };
    let config = args.config();
    let admin_config = args.admin_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("lubdub-admin")
        .build()
        .context("cannot start the admin runtime")?;
    runtime.block_on(async move {
        let admin_listener = lubdub::admin::bind(args.admin)
            .await
            .with_context(|| format!("cannot listen on {} for the admin API", args.admin))?;
        let admin_address = admin_listener.local_addr()?;
        let handle = server::start(config.clone(), Arc::new(InMemoryRegistry::new()))?;
        let ceiling = humantime::format_duration(config.interval * config.max_missed);
        match config.detector {
            DetectorPolicy::Counter => info!(
                listen = %handle.local_addr(),
                admin = %admin_address,
                interval = %humantime::format_duration(config.interval),
                max_missed = config.max_missed,
                dead_after = %ceiling,
                detector = %"counter",
                "lubdub server ready"
            ),
            DetectorPolicy::Phi => info!(
                listen = %handle.local_addr(),
                admin = %admin_address,
                interval = %humantime::format_duration(config.interval),
                max_missed = config.max_missed,
                detector = %"phi",
                phi_threshold = config.phi_threshold,
                acceptable_pause_ms = config.phi_acceptable_pause.as_millis() as u64,
                min_std_dev_ms = config.phi_min_std_dev.as_millis() as u64,
                dead_at_most_after = %ceiling,
                "lubdub server ready"
            ),
        }
        info!(
            max_connections = config.connection_cap(),
            max_connections_per_ip = config.max_connections_per_ip,
            accept_rate_per_ip = config.accept_rate_per_ip,
            max_messages_per_sec = config.max_messages_per_sec,
            max_pings_per_interval = config.max_pings_per_interval,
            max_outbound_bytes = config.max_outbound_bytes,
            max_outbound_total = config.outbound_total_cap(),
            slow_consumer_timeout = %humantime::format_duration(config.slow_consumer_timeout),
            max_deliveries_per_sec = config.max_deliveries_per_sec,
            max_fanout_bytes_per_sec = config.max_fanout_bytes_per_sec,
            max_deliveries_per_sec_total = config.max_deliveries_per_sec_total,
            max_fanout_bytes_per_sec_total = config.max_fanout_bytes_per_sec_total,
            max_frame = config.max_frame_len,
            handshake_timeout = %humantime::format_duration(config.handshake_timeout),
            "limits (0 = none; see --help)"
        );
        info!(
            admin_max_connections = admin_config.max_connections,
            admin_header_timeout = %humantime::format_duration(admin_config.header_timeout),
            admin_connection_timeout = %humantime::format_duration(admin_config.connection_timeout),
            "admin API limits"
        );
        match &config.tls {
            Some(tls) => info!(
                cert = %tls.cert.display(),
                client_certificates = match (&tls.client_ca, tls.client_cert_names) {
                    (None, _) => "not asked for",
                    (Some(_), false) => "required",
                    (Some(_), true) => "required; a client may claim only a name its certificate carries (subject CN or DNS SAN)",
                },
                "TLS on: plain clients are answered REJECT tls_required"
            ),
            None => info!("TLS off (--tls-cert, --tls-key): clients connect in plain TCP"),
        }
        match config.auth.describe() {
            Some(required) => info!(
                verifier_threads = config.auth.verifier_threads,
                verifier_queue = config.auth.verifier_queue,
                verifier_queue_wait = %humantime::format_duration(config.auth.verifier_queue_wait),
                "credentials required: every HELLO must carry {required}"
            ),
            None => info!("no credentials configured: names are first come, first served"),
        }
        let control = handle.control();
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(lubdub::admin::serve(
            admin_listener,
            control.clone(),
            admin_config,
            async {
                let _ = admin_stopped.await;
            },
        ));
        notify(
            supervisor.as_ref(),
            &format!(
                "READY=1\nSTATUS=serving on {}, admin API on {}",
                handle.local_addr(),
                admin_address
            ),
        );
        shutdown_signal().await;
        info!("signal received, shutting down");
        notify(
            supervisor.as_ref(),
            "STOPPING=1\nSTATUS=shutting down: BYE to every session",
        );
        let _ = stop_admin.send(());
        tokio::task::spawn_blocking(move || handle.stop())
            .await
            .context("the event loop thread failed")?
            .context("the event loop failed")?;
        admin.await.context("the admin task failed")??;
        Ok(ExitCode::SUCCESS)
    })
}

/// Tells the service manager `state`, if one listens; a failure is
/// logged, never fatal (the server serves either way).
fn notify(supervisor: Option<&Notifier>, state: &str) {
    if let Some(supervisor) = supervisor {
        match supervisor.notify(state) {
            Ok(()) => debug!(state, "service manager notified"),
            Err(error) => warn!("{error}"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler only fails outside a runtime");
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
}
