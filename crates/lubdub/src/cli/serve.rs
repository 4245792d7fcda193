//! `lubdub server`: the event loop on its thread, the admin API on tokio,
//! a reload of the configuration on SIGHUP (`super::reload`), and a clean
//! shutdown on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args};
use lubdub::server::{self, DetectorPolicy, InMemoryRegistry};
use tracing::{debug, info, warn};

use super::reload::Reloader;
use super::settings::layers::{self, Given};
use super::settings::ServerSettings;
use super::systemd::Notifier;

/// Flags of `lubdub server`: a configuration file, and every setting.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Read settings from this TOML file: one key per flag below, named
    /// like the flag without its dashes (`max-missed = 5`, `interval =
    /// "3s"`, `tls-client-cert-names = true`). Flags and LUBDUB_*
    /// variables given override it. SIGHUP reads it again, with the files
    /// it names, and applies what can change while running. Check one with
    /// `lubdub config check FILE`; `lubdub config example` prints every key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    // Read from the matches by `settings::layers`, with the file.
    #[allow(dead_code)]
    #[command(flatten)]
    settings: ServerSettings,
}

/// Runs the server with the settings `matches` (of `lubdub server`) give,
/// laid over the file of `args.config`.
///
/// # Errors
/// A configuration that cannot work, or a port that cannot be bound.
pub fn run(args: ServerArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    one_malloc_arena();
    let given = Given::from_matches(matches);
    let resolved = layers::load(args.config.as_deref(), &given)?;
    let config = resolved.server_config()?;
    let settings = resolved.settings;
    let _log_writer = super::init_logging("info", settings.log_format);
    if let Some(file) = &args.config {
        info!(
            "settings read from {} (flags and LUBDUB_* variables given override it; SIGHUP reads it again)",
            file.display()
        );
    }
    // Under systemd (Type=notify): READY=1 once both ports serve,
    // STOPPING=1 when a signal starts the shutdown.
    let supervisor = match Notifier::from_environment() {
        Ok(notifier) => notifier,
        Err(error) => {
            warn!("{error}; the service manager will not hear that the server is ready");
            None
        }
    };
    let admin_config = settings.admin_config();
    let admin_address = settings.admin;
    let admin_token = settings
        .admin_token_file
        .as_deref()
        .map(lubdub::admin::AdminToken::from_file)
        .transpose()?
        .map(Arc::new);
    let webhooks = settings.webhook_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("lubdub-admin")
        .on_thread_start(yield_to_the_loops)
        .build()
        .context("cannot start the admin runtime")?;
    runtime.block_on(async move {
        // Before anything else: until a handler is installed, SIGHUP ends
        // the process.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install a SIGHUP handler")?;
        let admin_listener = lubdub::admin::bind(admin_address)
            .await
            .with_context(|| format!("cannot listen on {admin_address} for the admin API"))?;
        let admin_address = admin_listener.local_addr()?;
        let hub = Arc::new(server::PresenceHub::new(config.event_history));
        let webhook_feeds = webhooks
            .as_ref()
            .map(|webhooks| lubdub::webhook::feeds(webhooks, &hub))
            .unwrap_or_default();
        let handle =
            server::start_with_hub(config.clone(), Arc::new(InMemoryRegistry::new()), hub)?;
        give_back_freed_memory(handle.control().metrics().clone());
        let ceiling = humantime::format_duration(config.interval * config.max_missed);
        match config.detector {
            DetectorPolicy::Counter => info!(
                listen = %handle.local_addr(),
                admin = %admin_address,
                loops = handle.control().loops(),
                interval = %humantime::format_duration(config.interval),
                max_missed = config.max_missed,
                dead_after = %ceiling,
                detector = %"counter",
                "lubdub server ready"
            ),
            DetectorPolicy::Phi => info!(
                listen = %handle.local_addr(),
                admin = %admin_address,
                loops = handle.control().loops(),
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
        if admin_token.is_some() {
            info!("admin API: every route but /healthz needs the bearer token of --admin-token-file");
        } else {
            info!("admin API: open to local processes (no --admin-token-file)");
        }
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
        let (stop_webhooks, webhooks_stopped) = tokio::sync::watch::channel(false);
        let webhook_tasks = match &webhooks {
            Some(webhooks) => {
                info!(
                    urls = %webhooks.urls.join(","),
                    batch = webhooks.batch,
                    timeout = %humantime::format_duration(webhooks.timeout),
                    "webhooks: every change of presence is POSTed, signed"
                );
                lubdub::webhook::spawn(
                    webhooks,
                    webhook_feeds,
                    control.metrics().webhooks().clone(),
                    &webhooks_stopped,
                )
            }
            None => Vec::new(),
        };
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(lubdub::admin::serve(
            admin_listener,
            control.clone(),
            admin_config,
            admin_token,
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
        let mut reloader = Reloader::new(args.config, given, settings, control);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(()) = hangup.recv() => reloader.reload().await,
            }
        }
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
        // The sessions' last changes (offline, shutdown) are in the hub:
        // one last attempt each, bounded.
        let _ = stop_webhooks.send(true);
        let last_attempts = futures_util::future::join_all(webhook_tasks);
        if tokio::time::timeout(WEBHOOK_LAST_ATTEMPT, last_attempts)
            .await
            .is_err()
        {
            warn!("webhooks: the last changes were not all delivered before exit");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// How long the webhooks' last attempt may hold up the exit.
const WEBHOOK_LAST_ATTEMPT: Duration = Duration::from_secs(3);

/// Tells the service manager `state`, if one listens; a failure is
/// logged, never fatal (the server serves either way).
/// Makes glibc's malloc keep one arena for every thread. The loops'
/// outbound chunks are freed by whichever loop drains them, and glibc keeps
/// freed memory in the arena of the thread that allocated it: with an
/// arena per loop, two loops under a broadcast flood held 109 MB resident
/// against a 64 MiB `--max-outbound-total` (attack 3 of tests/attacks.rs),
/// 66 MB with one arena. The heartbeat path allocates nothing, so the
/// shared arena's lock is taken on handshakes and fan-outs only.
#[allow(unsafe_code)]
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread of the server exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How far the admin runtime's threads (the admin API, its event streams,
/// the webhooks' deliveries) stand back from the event loops: ten steps of
/// nice, about a tenth of a loop's weight when both want the CPU. A mass
/// verdict read by a hundred event streams is where they meet: the loops'
/// verdicts are the server's job and must be on time; a reader a few
/// milliseconds late loses nothing, as the hub's ring holds its changes.
/// When the loops leave CPU spare, the admin threads get it at once.
const ADMIN_NICE_STEPS: libc::c_int = 10;

/// Lowers the calling thread's priority by [`ADMIN_NICE_STEPS`]; run by
/// every thread of the admin runtime as it starts.
#[allow(unsafe_code)]
fn yield_to_the_loops() {
    #[cfg(target_os = "linux")]
    // SAFETY: these calls only read and set the calling thread's nice
    // value (on Linux, a per-thread attribute); a refusal leaves it as it
    // was, which is harmless.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, (now + ADMIN_NICE_STEPS).min(19));
    }
}

/// With one arena, memory the outbound queues freed sits between blocks
/// still in use, and glibc gives back only the top of its heap by itself:
/// after a flood of slow consumers, resident memory stayed 9.5 MB above
/// its baseline (tests/faults.rs). Once a second, when what the process
/// holds on the way out has fallen by 4 MiB or more since the last look,
/// or has fallen to nothing after any burst, `malloc_trim` returns the free
/// pages (a walk of the heap, about a
/// millisecond; the heartbeat path allocates nothing, so it waits for it
/// only when it accepts or relays).
#[allow(unsafe_code)]
fn give_back_freed_memory(metrics: lubdub::server::ServerMetrics) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const FALL: u64 = 4 * 1024 * 1024;
        let spawned = std::thread::Builder::new()
            .name("lubdub-trim".into())
            .spawn(move || {
                let mut high = 0u64;
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let held = metrics.outbound_held();
                    high = high.max(held);
                    // A large fall, or the end of any burst: the queues are
                    // not all the memory a burst takes (reads, fan-outs
                    // waiting, chunks kept), so a small burst that ends
                    // can leave more than its queues behind (seen: 4-6 MB
                    // after 1 MB of queues, tests/faults.rs).
                    if high >= held + FALL || (held == 0 && high > 0) {
                        // SAFETY: malloc_trim only returns free memory to
                        // the system; it is safe to call from any thread.
                        unsafe {
                            libc::malloc_trim(0);
                        }
                        high = held;
                    }
                }
            });
        if let Err(error) = spawned {
            warn!(%error, "could not start the thread that gives freed memory back");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = metrics;
}

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
