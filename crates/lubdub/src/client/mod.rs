//! The lubdub client for embedding: connect, send, receive, and a stream of
//! status changes. Heartbeats, server-death detection and reconnection run in
//! a background task.
//!
//! Data flow: [`Client::connect`] dials and completes the handshake, then
//! spawns the session task. The task `select!`s over inbound frames, the
//! application's outgoing messages and the next deadline of
//! [`ClientSchedule`](lubdub_core::client::ClientSchedule), which decides
//! when to PING and when the server is dead. Messages and status changes
//! reach the application as [`ClientEvent`]s.
//!
//! Layout: [`transport`] (dial, handshake, frames over tokio), [`stream`]
//! (plain or TLS bytes under the frames), [`tls`] (trust, names, client
//! certificates, and what TLS errors mean), [`backoff`] (reconnect delays),
//! `first_connect` (retries before the first session), `session` (the
//! session task and reconnection), `stop` ([`StopCause`]: why a client
//! stopped for good), this module (the public API).

pub mod backoff;
mod first_connect;
pub mod presence;
mod session;
mod stop;
pub mod stream;
pub mod tls;
pub mod transport;

use std::time::Duration;

use lubdub_core::protocol::{Message, Reason, DEFAULT_MAX_FRAME_LEN};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use lubdub_core::protocol::rooms::{PresenceUpdate, UpdateKind, WatchMode};
pub use stop::StopCause;
pub use tls::{ClientTls, TlsConnector};
pub use transport::ConnectError;
use transport::{Established, HelloParams};

/// How a client connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address, `host:port`.
    pub server: String,
    /// Name to claim; kept across reconnects.
    pub name: String,
    /// Heartbeat interval to ask for; `None` takes the server's default.
    pub interval: Option<Duration>,
    /// One-way heartbeats: the server never answers, so the client can only
    /// notice a dead server through TCP errors.
    pub one_way: bool,
    /// Time allowed for TCP connect and for the answer to HELLO, each.
    pub connect_timeout: Duration,
    /// Reconnect delays after the server is lost, and between attempts of
    /// the first connect.
    pub backoff: Backoff,
    /// How long the first connect keeps retrying failures that a later
    /// attempt can cure (no server listening yet, unreachable, a name that
    /// does not resolve yet, a busy server, no answer to HELLO), as every
    /// reconnect does; `None`: until it succeeds or fails for good (a
    /// refusal the same HELLO would get again is returned at once).
    /// 60 s by default.
    pub first_connect_patience: Option<Duration>,
    /// Largest inbound frame accepted.
    pub max_frame_len: usize,
    /// Let the kernel watch the connection too: TCP keepalive after one
    /// idle granted interval, and `TCP_USER_TIMEOUT` of one deadline, so
    /// that a server whose host vanished while our data was unacknowledged
    /// is noticed even in one-way mode. On by default.
    pub tcp_liveness: bool,
    /// Credential for the name (a token or an auth-file secret), for
    /// servers that require one; empty by default. Never printed.
    pub credential: crate::auth::Credential,
    /// Speak TLS; `None` (the default) speaks plain TCP.
    pub tls: Option<ClientTls>,
    /// The status the session starts with (sent in HELLO); `None` by
    /// default. [`Client::set_status`] changes it, and a reconnect starts
    /// with the latest.
    pub status: Option<String>,
    /// The last will registered after every connect, if any: the MSG the
    /// server sends for this client if its session ends without a BYE of
    /// its own (see [`Client::set_will`]). `None` by default.
    pub will: Option<lubdub_core::protocol::Will>,
    /// Rooms joined after every connect (`#lobby`); [`Client::join`] and
    /// [`Client::leave`] keep it current. Empty by default.
    pub rooms: Vec<String>,
    /// Names and rooms watched after every connect, each with its mode
    /// (full or count); [`Client::watch`] and the like keep it current.
    /// Every connect's watches start with a fresh snapshot.
    pub watches: Vec<(String, WatchMode)>,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the server and the name.
    pub fn new(server: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            name: name.into(),
            interval: None,
            one_way: false,
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            first_connect_patience: Some(Duration::from_secs(60)),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            tcp_liveness: true,
            credential: crate::auth::Credential::default(),
            tls: None,
            status: None,
            will: None,
            rooms: Vec::new(),
            watches: Vec::new(),
        }
    }
}

/// A change in the client's connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// A session is open.
    Connected {
        /// Server address.
        server: String,
        /// Session id from WELCOME.
        session_id: u64,
        /// Fencing epoch from WELCOME.
        epoch: u64,
        /// Granted heartbeat interval.
        interval: Duration,
        /// Silent intervals after which either side gives up.
        max_missed: u32,
    },
    /// The session ended for a reason worth reconnecting after.
    ServerLost {
        /// What happened, for humans.
        reason: String,
    },
    /// The next connection attempt starts after `delay`.
    Reconnecting {
        /// Attempt number, from 1.
        attempt: u32,
        /// Time until the attempt.
        delay: Duration,
    },
    /// The client stopped for good: the name was taken over by another
    /// client, the server refused the session for a reason that
    /// reconnecting cannot cure, or [`Client::close`] was called. No
    /// event follows.
    Stopped {
        /// Why, for humans.
        reason: String,
        /// Why, for programs.
        cause: StopCause,
    },
}

/// What the client hands to the application. Later versions may add
/// kinds of event: a `match` needs an arm for the others.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A chat message; `to` is empty for a broadcast.
    Message(Message),
    /// A non-fatal error from the server (for example an unknown recipient).
    Notice(Reason),
    /// The connection changed.
    Status(Status),
    /// A change of a watched name or room, or a line of its snapshot.
    Presence(PresenceUpdate),
}

/// The client was closed; nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is closed")]
pub struct ClientClosed;

enum Outgoing {
    Message { to: String, body: Vec<u8> },
    Status(String),
    Will(lubdub_core::protocol::Will),
    Join(String),
    Leave(String),
    Watch(String, WatchMode),
    Close,
}

/// A connected client. Dropping it ends the session with BYE.
#[derive(Debug)]
pub struct Client {
    outgoing: mpsc::Sender<Outgoing>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    task: Option<JoinHandle<()>>,
    welcome: lubdub_core::protocol::Welcome,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Message { to, body } => write!(f, "Message(to={to:?}, {} bytes)", body.len()),
            Outgoing::Status(status) => write!(f, "Status({status:?})"),
            Outgoing::Will(will) => write!(f, "Will(to={:?}, {} bytes)", will.to, will.body.len()),
            Outgoing::Join(room) => write!(f, "Join({room:?})"),
            Outgoing::Leave(room) => write!(f, "Leave({room:?})"),
            Outgoing::Watch(target, mode) => write!(f, "Watch({target:?}, {})", mode.label()),
            Outgoing::Close => f.write_str("Close"),
        }
    }
}

impl Client {
    /// Connects and completes the handshake, then keeps the session alive in
    /// the background, reconnecting with backoff when the server is lost.
    /// The first connect retries as every reconnect does (no server yet, a
    /// busy one, no answer to HELLO) for up to `first_connect_patience`;
    /// each retry is logged.
    ///
    /// # Errors
    /// [`ConnectError`] when the first connect fails for good or its
    /// patience runs out ([`StopCause::of_connect`] says which); nothing
    /// keeps running then.
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        Self::connect_reporting(config, |error, delay| {
            let error = crate::report::chain(error);
            tracing::info!(%error, delay_ms = delay.as_millis() as u64, "cannot connect yet; retrying");
        })
        .await
    }

    /// [`connect`](Self::connect), telling `on_retry` about each failed
    /// attempt of the first connect and the delay before the next one.
    ///
    /// # Errors
    /// [`ConnectError`] when the first connect fails; nothing keeps running then.
    pub async fn connect_reporting(
        config: ClientConfig,
        mut on_retry: impl FnMut(&ConnectError, Duration) + Send,
    ) -> Result<Client, ConnectError> {
        // Built once: the files are read and checked before the first dial,
        // and reconnects reuse the configuration.
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls.connector(&config.server))
            .transpose()?;
        let established = first_connect::establish(&config, tls.as_ref(), &mut on_retry).await?;
        let welcome = established.welcome;
        let (outgoing, outgoing_rx) = mpsc::channel(256);
        // Unbounded: the session task must never wait for the application,
        // or its heartbeats would stop while a message sits unread. Events
        // queue until the application reads them.
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(session::run(
            config,
            tls,
            established,
            outgoing_rx,
            events_tx,
        ));
        Ok(Client {
            outgoing,
            events,
            task: Some(task),
            welcome,
        })
    }

    /// The WELCOME of the first session.
    pub fn welcome(&self) -> lubdub_core::protocol::Welcome {
        self.welcome
    }

    /// Sends `body` to the session named `to`.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn send_to(&self, to: &str, body: impl Into<Vec<u8>>) -> Result<(), ClientClosed> {
        self.outgoing
            .send(Outgoing::Message {
                to: to.to_owned(),
                body: body.into(),
            })
            .await
            .map_err(|_| ClientClosed)
    }

    /// Sets the session's status (`away`, `in match 42`; empty clears it):
    /// shown in `/sessions`, the event stream and to watchers, and carried
    /// into every reconnect's HELLO. A status the server refuses (over 128
    /// bytes, a control character, faster than the message rate) is
    /// answered with a NOTICE event.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn set_status(&self, status: impl Into<String>) -> Result<(), ClientClosed> {
        self.outgoing
            .send(Outgoing::Status(status.into()))
            .await
            .map_err(|_| ClientClosed)
    }

    /// Registers the session's last will: if it ends without a BYE of its
    /// own (silence, a lost connection), the server sends `body` as a MSG
    /// from this client's name to `to` (empty: every other session), after
    /// `delay` unless the name is back online by then. Registered again
    /// after every reconnect; an empty `body` clears it. Not sent after
    /// [`close`](Self::close), a takeover or a server shutdown. At most
    /// 1 KiB and a delay of one hour; beyond, a NOTICE event says why.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn set_will(
        &self,
        to: &str,
        body: impl Into<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), ClientClosed> {
        let will = lubdub_core::protocol::Will {
            delay_ms: u32::try_from(delay.as_millis()).unwrap_or(u32::MAX),
            to: to.to_owned(),
            body: body.into(),
        };
        self.outgoing
            .send(Outgoing::Will(will))
            .await
            .map_err(|_| ClientClosed)
    }

    /// Sends `body` to every other session.
    ///
    /// # Errors
    /// [`ClientClosed`] once the client has stopped.
    pub async fn broadcast(&self, body: impl Into<Vec<u8>>) -> Result<(), ClientClosed> {
        self.send_to("", body).await
    }

    /// The next message, notice or status change; `None` once the client has
    /// stopped and every event was received. Events queue without bound
    /// until read, so an embedding program should keep reading them.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Ends the session with BYE `normal` and waits for the background task.
    pub async fn close(mut self) {
        // A stopped task has nothing left to close.
        let _ = self.outgoing.send(Outgoing::Close).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn dial(
    config: &ClientConfig,
    tls: Option<&TlsConnector>,
) -> Result<Established, ConnectError> {
    transport::connect(
        &config.server,
        &HelloParams {
            name: &config.name,
            interval: config.interval,
            one_way: config.one_way,
            credential: config.credential.as_bytes(),
            tcp_liveness: config.tcp_liveness,
            status: config.status.as_deref(),
        },
        config.connect_timeout,
        config.max_frame_len,
        tls,
    )
    .await
}
