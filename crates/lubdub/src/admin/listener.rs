//! The admin port's accept loop: each accepted connection takes a permit of
//! a semaphore of [`AdminConfig::max_connections`]; beyond it a connection
//! is answered 503 and closed at once (so the server never holds more than
//! the cap plus one admin descriptor), accept errors back off, and each
//! connection is served by hyper under a header-read timeout and a
//! whole-connection time limit, then closed. A connection that carries an
//! event stream (`/events`) has no time limit: it lasts until its client
//! or the server goes, holding its place under the cap.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{router, AdminConfig, AdminToken};
use crate::server::{ServerControl, ServerMetrics};

/// First pause after a failed accept (for example `EMFILE`), doubled after
/// each further failure up to [`MAX_ACCEPT_BACKOFF`]: retrying at once
/// would spin the admin thread on a condition that lasts.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves the admin API on `listener` (behind `token`, if any) until
/// `shutdown` completes, then
/// lets the open connections finish their current response (each within
/// its time limit) and returns.
///
/// # Errors
/// None today: accept errors are logged and retried after a pause. The
/// `Result` is kept so that a fatal listener error can be reported.
pub async fn serve(
    listener: TcpListener,
    control: ServerControl,
    config: AdminConfig,
    token: Option<Arc<AdminToken>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = control.metrics().clone();
    let routes = router(control, token);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    warn!(%error, pause_ms = backoff.as_millis() as u64, "admin API: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        // Refused rather than left waiting in the kernel's queue: there a
        // legitimate request would wait behind every queued attacker's
        // header timeout in turn; refused, it learns at once and retries.
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refuse(&stream);
            metrics.admin_limited("max_connections");
            continue;
        };
        backoff = FIRST_ACCEPT_BACKOFF;
        connections.spawn(serve_connection(
            stream,
            routes.clone(),
            config,
            permit,
            stopped.clone(),
            metrics.clone(),
        ));
        // Reap finished connections so that the set stays small.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Nobody may be listening any more; that is fine.
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// How long an event stream has, once the server stops, to send what it
/// holds and end.
const STREAM_END_GRACE: Duration = Duration::from_secs(1);

/// What a handler may know of the connection it serves (a request
/// extension): it may say it streams, and learn when the server stops.
#[derive(Debug, Clone)]
pub(super) struct AdminConnection {
    streaming: Arc<AtomicBool>,
    stopped: watch::Receiver<bool>,
}

impl AdminConnection {
    /// The response is a stream: the connection's time limit no longer
    /// applies.
    pub(super) fn streaming(&self) {
        self.streaming.store(true, Ordering::Relaxed);
    }

    fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    /// Turns `true` when the server stops serving the admin API.
    pub(super) fn stopped(&self) -> watch::Receiver<bool> {
        self.stopped.clone()
    }
}

/// Answer to a connection beyond the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Answers 503 to a connection beyond the cap, without waiting: its send
/// buffer is empty, so the write fits, and the descriptor is closed when
/// `stream` is dropped.
fn refuse(stream: &TcpStream) {
    // A peer that is already gone needs no answer.
    let _ = stream.try_write(BUSY);
}

/// Serves one admin connection until the client closes it, its headers are
/// late, its time is up or the server shuts down; `_permit` returns the
/// connection's place under the cap when this ends.
async fn serve_connection(
    stream: TcpStream,
    routes: Router,
    config: AdminConfig,
    _permit: OwnedSemaphorePermit,
    mut stopped: watch::Receiver<bool>,
    metrics: ServerMetrics,
) {
    let deadline = tokio::time::Instant::now() + config.connection_timeout;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let this = AdminConnection {
        streaming: Arc::new(AtomicBool::new(false)),
        stopped: stopped.clone(),
    };
    let routes = routes.layer(axum::Extension(this.clone()));
    let mut connection =
        pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(routes)));
    let ended = |result: Result<(), hyper::Error>| {
        if let Err(error) = result {
            if error.is_timeout() {
                metrics.admin_limited("header_timeout");
            }
            debug!(%error, "admin connection ended");
        }
    };
    tokio::select! {
        result = connection.as_mut() => ended(result),
        () = tokio::time::sleep_until(deadline) => {
            if this.is_streaming() {
                // An event stream: it ends with its client, or ends
                // itself when the server stops.
                tokio::select! {
                    result = connection.as_mut() => ended(result),
                    _ = stopped.changed() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(STREAM_END_GRACE, connection).await;
                    }
                }
            } else {
                metrics.admin_limited("connection_timeout");
                debug!("admin connection closed at its time limit");
            }
        }
        _ = stopped.changed() => {
            // Finish the response in progress, if any, then close.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout_at(deadline, connection).await;
        }
    }
}
