//! The heartbeat server: an acceptor thread and `--threads` event loop
//! threads, each owning its share of the connections, plus a
//! [`ServerHandle`] through which other threads (the admin API, signal
//! handlers, tests) list sessions and ask for shutdown.
//!
//! Layout: [`config`] (what the operator sets), `acceptor` (the one
//! accepting thread, the process-wide admission limits), `admission`
//! (connection limits per source), [`registry`] (name →
//! session, behind a trait), `event_loop` (read, decode, judge, relay:
//! one per thread), `connection` (one socket's buffers), `outbox` (unsent bytes in
//! chunks from the loop's pool), [`snapshot`] (the admin view),
//! `auth_gate` (credentials: inline checks, verifier threads, the cache),
//! [`tls`] (certificate files → `rustls::ServerConfig`), `tls_session` (one
//! TLS connection's rustls state and IO), [`reload`] (what a running server
//! takes on from a new configuration).

mod acceptor;
mod admission;
mod auth_gate;
pub mod changes;
pub mod config;
mod config_error;
mod connection;
mod control;
mod event_loop;
pub mod hub;
pub mod metrics;
mod outbox;
pub mod presence;
pub mod registry;
pub mod reload;
pub mod rooms;
pub mod snapshot;
pub mod tls;
mod tls_session;
pub mod updates;
pub mod wills;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use lubdub_core::detector::{CounterConfig, CounterDetector, Detector, PhiDetector};
use mio::{Interest, Poll, Waker};
use socket2::{Domain, Socket, Type};

pub use config::{ConfigError, DetectorPolicy, ServerConfig};
pub use control::{ServerControl, ServerStopped};
pub use event_loop::MAX_SESSIONS_PER_PAGE;
pub use hub::{FeedItem, PresenceFeed, PresenceHub};
pub use metrics::{ServerMetrics, StateCounts};
pub use presence::{DropReason, PresenceEvent, PresenceKind};
pub use registry::{InMemoryRegistry, Registry};
pub use reload::{prepare_reload, Reload};
pub use snapshot::{SessionInfo, SessionPage, SessionState};
pub use tls::{TlsError, TlsFiles};

use acceptor::{Acceptor, SharedAdmission};
use event_loop::{Command, EventLoop, LoopHandle, LoopPlace, WAKER};
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

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    control: ServerControl,
    hub: Arc<PresenceHub>,
    /// The loops' threads, then the acceptor's.
    threads: Vec<JoinHandle<io::Result<()>>>,
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

    /// Whether every event loop has stopped.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
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
        let mut result = Ok(());
        for thread in self.threads {
            let ended = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
            if result.is_ok() {
                result = ended;
            }
        }
        result
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
    let hub = Arc::new(PresenceHub::new(config.event_history));
    start_with_hub(config, registry, hub)
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
    let loops = config.loops();
    let origin = Instant::now();
    let metrics = ServerMetrics::new();
    let node = NodeId(rand::random());
    let admission = Arc::new(SharedAdmission::new(config.admission_limits(), origin));
    let mut polls = Vec::with_capacity(loops);
    let mut handles = Vec::with_capacity(loops);
    for _ in 0..loops {
        let poll = Poll::new().map_err(StartError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Poll)?);
        let (commands, receiver) = mpsc::channel();
        handles.push(LoopHandle::new(commands, Arc::clone(&waker)));
        polls.push((poll, waker, receiver));
    }
    let siblings: Arc<[LoopHandle]> = handles.into();
    hub.set_loops(
        polls
            .iter()
            .map(|(_, waker, _)| hub::LoopWake::new(Arc::clone(waker)))
            .collect(),
    );
    let cpu: Arc<[AtomicU64]> = (0..loops).map(|_| AtomicU64::new(0)).collect();
    let held_everywhere = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let will_board = Arc::new(wills::WillBoard::default());
    // One set of verifier threads, one fair queue and one cache for the
    // process; each loop's gate is a handle on them (the first one here
    // only makes the others).
    let gates = authenticator
        .map(|authenticator| {
            auth_gate::AuthGate::new(
                authenticator,
                &config.auth,
                Arc::clone(&polls[0].1),
                metrics.auth().clone(),
            )
        })
        .transpose()
        .map_err(crate::auth::AuthSetupError::Threads)?;
    let mut threads = Vec::with_capacity(loops + 1);
    for (loop_index, (poll, waker, commands)) in polls.into_iter().enumerate() {
        let auth_gate = gates.as_ref().map(|gate| gate.share(waker));
        let parts = LoopParts {
            poll,
            place: LoopPlace {
                loop_index,
                siblings: Arc::clone(&siblings),
                cpu: Arc::clone(&cpu),
                admission: Arc::clone(&admission),
                held_everywhere: Arc::clone(&held_everywhere),
                origin,
                will_board: Arc::clone(&will_board),
            },
            registry: Arc::clone(&registry),
            commands,
            node,
            presence: presence::Presence::new(Arc::clone(&hub)),
            metrics: metrics.clone(),
            auth_gate,
            tls: tls.clone(),
        };
        // One loop type per policy: the detector's per-session state is
        // stored inline in each session, so the policy is a type
        // parameter, not a trait object.
        let thread = match config.detector {
            DetectorPolicy::Counter => {
                let detector = CounterDetector::new(CounterConfig {
                    max_missed: config.max_missed,
                });
                spawn_loop(parts, detector, config.clone())
            }
            DetectorPolicy::Phi => {
                let detector = PhiDetector::new(config.phi_config()).map_err(ConfigError::from)?;
                spawn_loop(parts, detector, config.clone())
            }
        }
        .map_err(StartError::Poll)?;
        threads.push(thread);
    }
    let mut listener = mio::net::TcpListener::from_std(std_listener);
    let acceptor_poll = Poll::new().map_err(StartError::Poll)?;
    acceptor_poll
        .registry()
        .register(&mut listener, acceptor::LISTENER, Interest::READABLE)
        .map_err(StartError::Poll)?;
    let acceptor_waker =
        Arc::new(Waker::new(acceptor_poll.registry(), acceptor::WAKER).map_err(StartError::Poll)?);
    let (acceptor_commands, acceptor_receiver) = mpsc::channel();
    let acceptor = Acceptor {
        poll: acceptor_poll,
        listener,
        commands: acceptor_receiver,
        admission,
        loops: Arc::clone(&siblings),
        plain: tls.is_none(),
        metrics: metrics.clone(),
    };
    threads.push(
        std::thread::Builder::new()
            .name("lubdub-accept".into())
            .spawn(move || acceptor.run())
            .map_err(StartError::Poll)?,
    );
    Ok(ServerHandle {
        local_addr,
        control: ServerControl::new(
            siblings,
            (acceptor_commands, acceptor_waker),
            metrics,
            Arc::clone(&hub),
        ),
        hub,
        threads,
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
    place: LoopPlace,
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
    let name = format!("lubdub-loop-{}", parts.place.loop_index);
    let event_loop = EventLoop::new(
        parts.poll,
        parts.place,
        detector,
        parts.registry,
        config,
        parts.commands,
        parts.node,
        parts.presence,
        parts.metrics,
        parts.tls,
    )
    .with_auth(parts.auth_gate);
    std::thread::Builder::new()
        .name(name)
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
