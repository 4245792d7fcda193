//! The heartbeat server: a listener and one event loop thread that owns every
//! connection, plus a [`ServerHandle`] through which other threads (the admin
//! API, signal handlers, tests) list sessions and ask for shutdown.
//!
//! Layout: [`config`] (what the operator sets), `admission` (connection
//! limits per source), [`registry`] (name →
//! session, behind a trait), `event_loop` (accept, read, decode, judge,
//! relay), `connection` (one socket's buffers), `outbox` (unsent bytes in
//! chunks from the loop's pool), [`snapshot`] (the admin view),
//! `auth_gate` (credentials: inline checks, verifier threads, the cache),
//! [`tls`] (certificate files → `rustls::ServerConfig`), `tls_session` (one
//! TLS connection's rustls state and IO), [`reload`] (what a running server
//! takes on from a new configuration).

mod admission;
mod auth_gate;
pub mod config;
mod config_error;
mod connection;
mod event_loop;
pub mod hub;
pub mod metrics;
mod outbox;
pub mod presence;
pub mod registry;
pub mod reload;
pub mod snapshot;
pub mod tls;
mod tls_session;

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use lubdub_core::detector::{CounterConfig, CounterDetector, Detector, PhiDetector};
use mio::{Interest, Poll, Waker};
use socket2::{Domain, Socket, Type};

pub use config::{ConfigError, DetectorPolicy, ServerConfig};
pub use event_loop::MAX_SESSIONS_PER_PAGE;
pub use hub::{FeedItem, PresenceFeed, PresenceHub};
pub use metrics::{ServerMetrics, StateCounts};
pub use presence::{DropReason, PresenceEvent, PresenceKind};
pub use registry::{InMemoryRegistry, Registry};
pub use reload::{prepare_reload, Reload};
pub use snapshot::{SessionInfo, SessionPage, SessionState};
pub use tls::{TlsError, TlsFiles};

use event_loop::{Command, EventLoop, LISTENER, WAKER};
use registry::NodeId;

/// Listen backlog: large enough that a burst of thousands of connects is not
/// refused while the loop accepts (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The event loop could not be set up.
    #[error("cannot start the event loop: {0}")]
    Poll(io::Error),
    /// The credentials (auth file, token secret) cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The server stopped before it could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server has stopped")]
pub struct ServerStopped;

/// Cloneable access to a running server from other threads.
#[derive(Debug, Clone)]
pub struct ServerControl {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    metrics: ServerMetrics,
}

impl ServerControl {
    fn command(&self, command: Command) -> Result<(), ServerStopped> {
        self.commands.send(command).map_err(|_| ServerStopped)?;
        self.waker.wake().map_err(|_| ServerStopped)
    }

    /// Every established session, in slab order, gathered page by page:
    /// the loop is held for one page at a time, so sessions that come or
    /// go meanwhile may be missing or present (see [`SessionPage`]).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, ServerStopped> {
        let mut listing = Vec::new();
        let mut after = None;
        loop {
            let page = self.sessions_page(after, MAX_SESSIONS_PER_PAGE).await?;
            listing.extend(page.sessions);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(listing),
            }
        }
    }

    /// One page of established sessions: up to `limit` (at most
    /// [`MAX_SESSIONS_PER_PAGE`]) after the cursor `after` (`None`: from
    /// the start), answered by the loop in one bounded turn.
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn sessions_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<SessionPage, ServerStopped> {
        let (reply, page) = tokio::sync::oneshot::channel();
        self.command(Command::SessionPage {
            after,
            limit,
            reply,
        })?;
        page.await.map_err(|_| ServerStopped)
    }

    /// The established session holding `name`, found through the registry
    /// without looking at any other session.
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn session_named(&self, name: &str) -> Result<Option<SessionInfo>, ServerStopped> {
        let (reply, session) = tokio::sync::oneshot::channel();
        self.command(Command::SessionNamed {
            name: name.to_owned(),
            reply,
        })?;
        session.await.map_err(|_| ServerStopped)
    }

    /// How many connections are in each state, counted a few thousand slots
    /// per turn of the loop (not one instant, but no turn held for all).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn state_counts(&self) -> Result<StateCounts, ServerStopped> {
        let mut total = StateCounts::default();
        let mut from = 0;
        loop {
            let (reply, counts) = tokio::sync::oneshot::channel();
            self.command(Command::Counts { from, reply })?;
            let (counts, next) = counts.await.map_err(|_| ServerStopped)?;
            total.add(counts);
            match next {
                Some(next) => from = next,
                None => return Ok(total),
            }
        }
    }

    /// The server's metrics (shared counters; see [`ServerMetrics::encode`]).
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// Hands the loop a new configuration (see [`prepare_reload`]): it
    /// takes on the live settings between two turns
    /// ([`ServerConfig::with_live_settings`]) and keeps every session.
    /// Returns once they apply.
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn reload(&self, reload: Reload) -> Result<(), ServerStopped> {
        let (reply, applied) = tokio::sync::oneshot::channel();
        self.command(Command::Reload {
            reload: Box::new(reload),
            reply,
        })?;
        applied.await.map_err(|_| ServerStopped)
    }

    /// Asks the loop to shut down gracefully: it closes its port, sends
    /// every session BYE `shutdown` with a reconnect hint, and stops once
    /// the farewells are delivered and the peers closed, or after
    /// [`ServerConfig::shutdown_timeout`]. Returns at once; see
    /// [`ServerHandle::join`].
    pub fn shutdown(&self) {
        // Already stopped is as good as stopped.
        let _ = self.command(Command::Shutdown);
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    control: ServerControl,
    hub: Arc<PresenceHub>,
    thread: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cloneable control of the server.
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// The hub the server publishes its presence events to:
    /// [`PresenceHub::subscribe`] reads every event from then on.
    pub fn presence(&self) -> &Arc<PresenceHub> {
        &self.hub
    }

    /// Whether the event loop has stopped.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Shuts down and waits for the loop to finish.
    ///
    /// # Errors
    /// The IO error that stopped the loop, if it failed rather than shut down.
    pub fn stop(self) -> io::Result<()> {
        self.control.shutdown();
        self.join()
    }

    /// Waits for the loop to finish.
    ///
    /// # Errors
    /// The IO error that stopped the loop, if it failed rather than shut down.
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the event loop panicked")))
    }
}

/// Starts a server on its own thread.
///
/// # Errors
/// [`StartError`] when the configuration is invalid or the address cannot be bound.
pub fn start(
    config: ServerConfig,
    registry: Arc<dyn Registry>,
) -> Result<ServerHandle, StartError> {
    start_with_hub(config, registry, Arc::new(PresenceHub::default()))
}

/// Like [`start`], publishing presence events to `hub` (a test may want a
/// larger ring; see [`ServerHandle::presence`] to read them).
///
/// # Errors
/// [`StartError`] when the configuration is invalid or the address cannot be bound.
pub fn start_with_hub(
    config: ServerConfig,
    registry: Arc<dyn Registry>,
    hub: Arc<PresenceHub>,
) -> Result<ServerHandle, StartError> {
    // Files are read before binding, so a wrong file stops the start.
    let (authenticator, tls) = load_files(&config)?;
    let std_listener = bind(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = std_listener.local_addr().map_err(StartError::Poll)?;
    let mut listener = mio::net::TcpListener::from_std(std_listener);
    let poll = Poll::new().map_err(StartError::Poll)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(StartError::Poll)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Poll)?);
    let (commands, command_receiver) = mpsc::channel();
    let node = NodeId(rand::random());
    let parts = LoopParts {
        poll,
        listener,
        registry,
        commands: command_receiver,
        node,
        presence: presence::Presence::new(Arc::clone(&hub)),
        metrics: ServerMetrics::new(),
        auth_gate: None,
        tls,
    };
    let metrics = parts.metrics.clone();
    let auth_gate = authenticator
        .map(|authenticator| {
            auth_gate::AuthGate::new(
                authenticator,
                &config.auth,
                Arc::clone(&waker),
                metrics.auth().clone(),
            )
        })
        .transpose()
        .map_err(crate::auth::AuthSetupError::Threads)?;
    let parts = LoopParts { auth_gate, ..parts };
    // One loop type per policy: the detector's per-session state is stored
    // inline in each session, so the policy is a type parameter, not a
    // trait object.
    let thread = match config.detector {
        DetectorPolicy::Counter => {
            let detector = CounterDetector::new(CounterConfig {
                max_missed: config.max_missed,
            });
            spawn_loop(parts, detector, config)
        }
        DetectorPolicy::Phi => {
            let detector = PhiDetector::new(config.phi_config()).map_err(ConfigError::from)?;
            spawn_loop(parts, detector, config)
        }
    }
    .map_err(StartError::Poll)?;
    Ok(ServerHandle {
        local_addr,
        control: ServerControl {
            commands,
            waker,
            metrics,
        },
        hub,
        thread,
    })
}

/// Checks `config` as a start would, without binding its ports: the
/// values together, the auth file, token secret and TLS files (warning
/// about secret files others may read, as a start does).
///
/// # Errors
/// The [`StartError`] a start would fail with before binding.
pub fn check(config: &ServerConfig) -> Result<(), StartError> {
    load_files(config).map(drop)
}

/// Validates `config` and reads the credentials and TLS files it names.
fn load_files(
    config: &ServerConfig,
) -> Result<
    (
        Option<crate::auth::Authenticator>,
        Option<Arc<rustls::ServerConfig>>,
    ),
    StartError,
> {
    config.validate()?;
    let authenticator = crate::auth::Authenticator::load(&config.auth)?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    Ok((authenticator, tls))
}

/// What every event loop is built from, whatever its detector.
struct LoopParts {
    poll: Poll,
    listener: mio::net::TcpListener,
    registry: Arc<dyn Registry>,
    commands: mpsc::Receiver<Command>,
    node: NodeId,
    presence: presence::Presence,
    metrics: ServerMetrics,
    /// Credentials, when required.
    auth_gate: Option<auth_gate::AuthGate>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

fn spawn_loop<D>(
    parts: LoopParts,
    detector: D,
    config: ServerConfig,
) -> io::Result<JoinHandle<io::Result<()>>>
where
    D: Detector + Send + 'static,
    D::State: Send,
{
    let event_loop = EventLoop::new(
        parts.poll,
        parts.listener,
        detector,
        parts.registry,
        config,
        parts.commands,
        parts.node,
        Instant::now(),
        parts.presence,
        parts.metrics,
        parts.tls,
    )
    .with_auth(parts.auth_gate);
    std::thread::Builder::new()
        .name("lubdub-server".into())
        .spawn(move || event_loop.run())
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
