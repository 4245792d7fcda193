//! `lubdub server`: the event loop on its thread, the admin API on tokio, and
//! a clean shutdown on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lubdub::server::{self, InMemoryRegistry, ServerConfig};
use tracing::info;

use super::{parse_addr, parse_duration};

/// Flags of `lubdub server`; each maps to a field of [`ServerConfig`].
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address the heartbeat protocol listens on.
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    listen: SocketAddr,
    /// Address of the admin HTTP API (GET /sessions, GET /healthz).
    #[arg(long, default_value = super::DEFAULT_ADMIN, value_parser = parse_addr)]
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
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = lubdub::core::protocol::DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            interval: self.interval,
            min_interval: self.min_interval,
            max_interval: self.max_interval,
            max_missed: self.max_missed,
            handshake_timeout: self.handshake_timeout,
            max_frame_len: self.max_frame,
            ..ServerConfig::default()
        }
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let config = args.config();
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
        let handle = server::start(config.clone(), Arc::new(InMemoryRegistry::new()))?;
        info!(
            listen = %handle.local_addr(),
            admin = %admin_listener.local_addr()?,
            interval = %humantime::format_duration(config.interval),
            max_missed = config.max_missed,
            dead_after = %humantime::format_duration(config.interval * config.max_missed),
            "lubdub server ready"
        );
        info!("no credentials configured: names are first come, first served");
        let control = handle.control();
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(lubdub::admin::serve(
            admin_listener,
            control.clone(),
            async {
                let _ = admin_stopped.await;
            },
        ));
        shutdown_signal().await;
        info!("signal received, shutting down");
        let _ = stop_admin.send(());
        tokio::task::spawn_blocking(move || handle.stop())
            .await
            .context("the event loop thread failed")?
            .context("the event loop failed")?;
        admin.await.context("the admin task failed")??;
        Ok(ExitCode::SUCCESS)
    })
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
