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
//! `first_connect` (retries of a busy server before the first session),
//! this module (the session task and the public API).

pub mod backoff;
mod first_connect;
pub mod stream;
pub mod tls;
pub mod transport;

use std::time::{Duration, Instant};

use lubdub_core::client::{ClientAction, ClientSchedule};
use lubdub_core::protocol::{Bye, Frame, Message, Reason, ReasonCode, DEFAULT_MAX_FRAME_LEN};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use backoff::Backoff;
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
    /// the first connect while the server is busy.
    pub backoff: Backoff,
    /// How long the first connect keeps retrying a server that answers
    /// REJECT `server_busy` or does not answer HELLO (other failures of
    /// the first connect are returned at once).
    pub first_connect_patience: Duration,
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
            first_connect_patience: Duration::from_secs(60),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            tcp_liveness: true,
            credential: crate::auth::Credential::default(),
            tls: None,
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
    /// client, the server rejected the session, or [`Client::close`] was called.
    Stopped {
        /// Why, for humans.
        reason: String,
    },
}

/// What the client hands to the application.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A chat message; `to` is empty for a broadcast.
    Message(Message),
    /// A non-fatal error from the server (for example an unknown recipient).
    Notice(Reason),
    /// The connection changed.
    Status(Status),
}

/// The client was closed; nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is closed")]
pub struct ClientClosed;

enum Outgoing {
    Message { to: String, body: Vec<u8> },
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
            Outgoing::Close => f.write_str("Close"),
        }
    }
}

impl Client {
    /// Connects and completes the handshake, then keeps the session alive in
    /// the background, reconnecting with backoff when the server is lost.
    /// A busy server (REJECT `server_busy`, or no answer to HELLO) is
    /// retried with backoff for up to `first_connect_patience`; each retry
    /// is logged.
    ///
    /// # Errors
    /// [`ConnectError`] when the first connect fails; nothing keeps running then.
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        Self::connect_reporting(config, |error, delay| {
            tracing::info!(%error, delay_ms = delay.as_millis() as u64, "server busy; retrying");
        })
        .await
    }

    /// [`connect`](Self::connect), telling `on_retry` about each busy
    /// answer of the first connect and the delay before the next attempt.
    ///
    /// # Errors
    /// [`ConnectError`] when the first connect fails; nothing keeps running then.
    pub async fn connect_reporting(
        config: ClientConfig,
        mut on_retry: impl FnMut(&ConnectError, Duration),
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
        let task = tokio::spawn(run(config, tls, established, outgoing_rx, events_tx));
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
        },
        config.connect_timeout,
        config.max_frame_len,
        tls,
    )
    .await
}

/// How one session ended.
enum SessionEnd {
    /// The application closed the client.
    Closed,
    /// Reconnecting makes sense, after at least `retry_after`.
    Lost {
        reason: String,
        retry_after: Duration,
    },
    /// Reconnecting would not help.
    Final { reason: String },
}

async fn run(
    config: ClientConfig,
    tls: Option<TlsConnector>,
    first: Established,
    mut outgoing: mpsc::Receiver<Outgoing>,
    events: mpsc::UnboundedSender<ClientEvent>,
) {
    let emit = |status: Status| {
        // The application may have stopped listening; the session goes on.
        let _ = events.send(ClientEvent::Status(status));
    };
    let mut next = Some(first);
    let mut attempt: u32 = 0;
    let mut retry_after = Duration::ZERO;
    loop {
        let established = match next.take() {
            Some(established) => established,
            None => {
                // The server's hint plus our own jitter: a server that sent
                // every session the same hint would otherwise get them all
                // back in the same instant.
                let delay = retry_after + config.backoff.delay(attempt, rand::random::<f64>());
                attempt += 1;
                emit(Status::Reconnecting { attempt, delay });
                if wait_or_close(delay, &mut outgoing).await {
                    emit(Status::Stopped {
                        reason: "closed by the application".into(),
                    });
                    return;
                }
                match dial(&config, tls.as_ref()).await {
                    Ok(established) => established,
                    Err(error) if error.is_retryable() => {
                        emit(Status::ServerLost {
                            reason: error.to_string(),
                        });
                        retry_after = Duration::ZERO;
                        continue;
                    }
                    Err(error) => {
                        emit(Status::Stopped {
                            reason: error.to_string(),
                        });
                        return;
                    }
                }
            }
        };
        let welcome = established.welcome;
        let session_started = Instant::now();
        let healthy_after = Duration::from_millis(u64::from(welcome.granted_interval_ms))
            * u32::from(welcome.max_missed);
        emit(Status::Connected {
            server: config.server.clone(),
            session_id: welcome.session_id,
            epoch: welcome.epoch,
            interval: Duration::from_millis(u64::from(welcome.granted_interval_ms)),
            max_missed: u32::from(welcome.max_missed),
        });
        let end = drive(&config, established, &mut outgoing, &events).await;
        // Only a session that lasted a whole deadline resets the backoff, so
        // a server that accepts and drops at once is not hammered.
        if session_started.elapsed() >= healthy_after {
            attempt = 0;
        }
        match end {
            SessionEnd::Closed => {
                emit(Status::Stopped {
                    reason: "closed by the application".into(),
                });
                return;
            }
            SessionEnd::Final { reason } => {
                emit(Status::Stopped { reason });
                return;
            }
            SessionEnd::Lost {
                reason,
                retry_after: hint,
            } => {
                emit(Status::ServerLost { reason });
                retry_after = hint;
            }
        }
    }
}

/// Sleeps for `delay`; returns true when the application closed the client meanwhile.
async fn wait_or_close(delay: Duration, outgoing: &mut mpsc::Receiver<Outgoing>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            command = outgoing.recv() => match command {
                // Messages typed while disconnected are dropped, not queued for ever.
                Some(Outgoing::Message { .. }) => continue,
                Some(Outgoing::Close) | None => return true,
            },
        }
    }
}

/// Runs one established session until it ends.
async fn drive(
    config: &ClientConfig,
    established: Established,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> SessionEnd {
    let Established {
        welcome,
        mut reader,
        mut writer,
        ..
    } = established;
    let interval = Duration::from_millis(u64::from(welcome.granted_interval_ms));
    let mut schedule = ClientSchedule::new(
        Instant::now(),
        interval,
        u32::from(welcome.max_missed),
        !config.one_way,
    );
    // A write that blocks this long means the server stopped reading.
    let write_limit = schedule.deadline_after();
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        retry_after: Duration::ZERO,
    };
    loop {
        let wake = tokio::time::Instant::from_std(schedule.poll_timeout());
        let to_send = tokio::select! {
            // Inbound first: after this process was stopped or starved, the
            // frames waiting in the socket are read before the expired timer
            // can blame the server for our own silence.
            biased;
            frame = reader.read_frame() => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return lost("the server closed the connection".into()),
                    Err(error) => return lost(format!("read failed: {error}")),
                };
                let pong_seq = match frame {
                    Frame::Pong { seq } => Some(seq),
                    _ => None,
                };
                schedule.on_received(Instant::now(), pong_seq);
                match frame {
                    Frame::Msg(message) => {
                        let _ = events.send(ClientEvent::Message(message));
                    }
                    Frame::Notice(reason) => {
                        let _ = events.send(ClientEvent::Notice(reason));
                    }
                    Frame::Pong { .. } => {}
                    Frame::Bye(bye) => return end_for_bye(bye),
                    other => {
                        let text = format!("{:?} is not sent by servers", other.kind());
                        let _ = writer.write_frame(&Frame::bye(ReasonCode::UnexpectedFrame, text.clone())).await;
                        return lost(format!("protocol error: {text}"));
                    }
                }
                // With inbound first, a steady stream of messages could keep
                // the timer branch from ever running: send a due PING here.
                due_ping(&mut schedule)
            }
            command = outgoing.recv() => match command {
                Some(Outgoing::Message { to, body }) => Some(Frame::Msg(Message { from: String::new(), to, body })),
                Some(Outgoing::Close) | None => {
                    let _ = writer.write_frame(&Frame::bye(ReasonCode::Normal, "quit")).await;
                    return SessionEnd::Closed;
                }
            },
            () = tokio::time::sleep_until(wake) => match schedule.handle_timeout(Instant::now()) {
                ClientAction::SendPing { seq, rtt_us } => Some(Frame::Ping { seq, rtt_us }),
                ClientAction::ServerDead { silent_for } => {
                    return lost(format!(
                        "no answer from the server for {} ({} missed intervals)",
                        humantime::format_duration(Duration::from_millis(silent_for.as_millis() as u64)),
                        welcome.max_missed
                    ));
                }
                ClientAction::Wait => None,
            },
        };
        if let Some(frame) = to_send {
            match tokio::time::timeout(write_limit, writer.write_frame(&frame)).await {
                Ok(Ok(())) => schedule.on_sent(Instant::now()),
                Ok(Err(error)) => return lost(format!("write failed: {error}")),
                Err(_) => return lost("the server stopped reading".into()),
            }
        }
    }
}

/// The PING to send now, if one is due. The server is alive (a frame just
/// arrived), so only a PING can be due here.
fn due_ping(schedule: &mut ClientSchedule) -> Option<Frame> {
    let now = Instant::now();
    if now < schedule.poll_timeout() {
        return None;
    }
    match schedule.handle_timeout(now) {
        ClientAction::SendPing { seq, rtt_us } => Some(Frame::Ping { seq, rtt_us }),
        ClientAction::Wait | ClientAction::ServerDead { .. } => None,
    }
}

fn end_for_bye(bye: Bye) -> SessionEnd {
    let reason = format!("server said BYE: {} ({})", bye.reason.text, bye.reason.code);
    match bye.reason.code {
        // Reconnecting would steal the name back, and the two clients would
        // take it from each other for ever.
        ReasonCode::TakenOver => SessionEnd::Final { reason },
        _ => SessionEnd::Lost {
            reason,
            retry_after: Duration::from_millis(u64::from(bye.retry_after_ms)),
        },
    }
}
