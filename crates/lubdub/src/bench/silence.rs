//! The silence scenario: N sessions heartbeat, then all stop at one instant;
//! each measures how long after its deadline the server ended it.
//!
//! Data flow: the coordinator ([`run`]) spawns one task per session ([`drive`]),
//! counts handshakes, then announces the instant of silence through a
//! `watch` channel. Each task handshakes (a semaphore bounds how many at
//! once), heartbeats at its own phase, stops at the silence (or, when
//! synchronized, sends one last PING exactly then), and reads until BYE or
//! EOF. Outcomes go to [`SilenceReport::build`].
//!
//! One tokio task per session: each read is stamped the moment it returns,
//! so a drop is observed as soon as the runtime polls that task; no shared
//! reader queues the observations behind one another. A session's socket is
//! closed only when the whole run is over, as a hung client would leave it:
//! closing it on the BYE would add the client's close and the server's EOF
//! handling to the very window being measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_core::client::ping_after;
use lubdub_core::protocol::{Frame, Welcome};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

use super::limits::OpenFiles;
use super::outcome::{Ending, SessionOutcome, SilentSession};
use super::report::{Settings, SilenceReport};
use super::session::{RawSession, Received, SessionError};
use super::BenchError;

/// Pause before retrying a failed handshake, multiplied by the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Granted intervals of heartbeating after the last WELCOME when no warm-up
/// is given: enough for every session to have sent several PINGs at its
/// own phase.
const DEFAULT_WARMUP_INTERVALS: u32 = 5;

/// Parameters of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceConfig {
    /// Address of the lubdub server under test.
    pub server: SocketAddr,
    /// Sessions to open.
    pub sessions: usize,
    /// Interval each HELLO asks for (the server clamps it); zero asks for the server's default.
    pub interval: Duration,
    /// Heartbeating after the last handshake, before the silence; `None`
    /// for five granted intervals.
    pub warmup: Option<Duration>,
    /// Every session sends its last PING at the silence instant, so that all
    /// deadlines coincide: the server's worst case.
    pub synchronized: bool,
    /// How long past its deadline a session is waited for before it counts
    /// as never dropped.
    pub grace: Duration,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Time one handshake (connect, HELLO, WELCOME) may take.
    pub handshake_timeout: Duration,
    /// Attempts per session before it counts as a failed handshake.
    pub connect_attempts: u32,
    /// Ask for a PONG to every PING, as the interactive client does.
    pub acks_wanted: bool,
    /// When not 0, session `i` joins room `#fleet-{i % rooms}` after its
    /// WELCOME (for watchers of those rooms, `lubdub bench presence`).
    pub rooms: usize,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        Self {
            server: SocketAddr::from(([127, 0, 0, 1], 7070)),
            sessions: 1000,
            interval: Duration::from_millis(100),
            warmup: None,
            synchronized: false,
            grace: Duration::from_secs(1),
            connect_concurrency: 500,
            handshake_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            acks_wanted: false,
            rooms: 0,
        }
    }
}

impl SilenceConfig {
    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |text: &str| Err(BenchError::InvalidConfig(text.to_owned()));
        if self.sessions == 0 {
            return invalid("sessions must be at least 1");
        }
        if self.connect_concurrency == 0 {
            return invalid("connect concurrency must be at least 1");
        }
        if self.connect_attempts == 0 {
            return invalid("connect attempts must be at least 1");
        }
        if self.interval.as_millis() > u128::from(u32::MAX) {
            return invalid("the interval must fit the protocol's u32 milliseconds");
        }
        Ok(())
    }
}

/// Where a run is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Handshakes are starting.
    Connecting {
        /// Sessions to open.
        sessions: usize,
        /// Handshakes in flight at once.
        concurrency: usize,
    },
    /// Every handshake has an outcome; sessions heartbeat until the silence.
    WarmingUp {
        /// Sessions open.
        established: usize,
        /// Sessions that got no WELCOME.
        failed: usize,
        /// Time the handshakes took.
        connect_time: Duration,
        /// Heartbeating left before the silence.
        warmup: Duration,
    },
    /// The silence has begun; drops are awaited.
    Silent {
        /// Longest the run may still wait: one ping period, the deadline and the grace.
        wait_at_most: Duration,
    },
}

/// What every session task shares.
#[derive(Debug)]
struct Plan {
    config: SilenceConfig,
    /// Names are `<prefix>-<index>`: a random prefix per run, so that two
    /// runs against one server never take over each other's sessions.
    name_prefix: String,
}

/// Runs the scenario and reports it. `progress` is called from the
/// coordinating task at each [`Stage`].
///
/// # Errors
/// [`BenchError::TooManySessions`] before anything is opened when this
/// process cannot hold the sessions; [`BenchError::NoSessions`] when not one
/// handshake succeeded; [`BenchError::InvalidConfig`].
pub async fn run(
    config: &SilenceConfig,
    mut progress: impl FnMut(Stage),
) -> Result<SilenceReport, BenchError> {
    config.validate()?;
    check_open_files(config.sessions)?;
    let plan = Arc::new(Plan {
        config: config.clone(),
        name_prefix: format!("bench-{:08x}", rand::random::<u32>()),
    });
    let permits = Arc::new(Semaphore::new(config.connect_concurrency));
    let (handshake_sender, mut handshakes) = mpsc::unbounded_channel();
    let (silence_sender, silence) = watch::channel(None);

    progress(Stage::Connecting {
        sessions: config.sessions,
        concurrency: config.connect_concurrency,
    });
    let started = Instant::now();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    for index in 0..config.sessions {
        tasks.spawn(drive(
            Arc::clone(&plan),
            index,
            Arc::clone(&permits),
            handshake_sender.clone(),
            silence.clone(),
        ));
    }
    // From here the channel closes when the last task has reported, even
    // if one panicked before reporting.
    drop(handshake_sender);

    let mut first_welcome: Option<Welcome> = None;
    let mut longest_interval = Duration::ZERO;
    let (mut established, mut failed) = (0, 0);
    while let Some(handshake) = handshakes.recv().await {
        match handshake {
            Some(welcome) => {
                established += 1;
                first_welcome.get_or_insert(welcome);
                longest_interval = longest_interval.max(interval_of(&welcome));
            }
            None => failed += 1,
        }
    }
    let connect_time = started.elapsed();

    if established == 0 {
        let (outcomes, _) = join_all(&mut tasks).await;
        let error = outcomes
            .iter()
            .find_map(|outcome| match outcome {
                SessionOutcome::HandshakeFailed { error } => Some(error.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "no handshake outcome".to_owned());
        return Err(BenchError::NoSessions {
            server: config.server,
            error,
        });
    }

    let warmup = config
        .warmup
        .unwrap_or(longest_interval * DEFAULT_WARMUP_INTERVALS);
    let silence_at = Instant::now() + warmup;
    silence_sender.send_replace(Some(silence_at));
    progress(Stage::WarmingUp {
        established,
        failed,
        connect_time,
        warmup,
    });
    let longest_deadline = first_welcome
        .map(|welcome| interval_of(&welcome) * u32::from(welcome.max_missed))
        .unwrap_or_default();
    let stage_at_silence = async {
        tokio::time::sleep_until(silence_at.into()).await;
    };
    let (outcomes, sockets) = {
        let joined = join_all(&mut tasks);
        tokio::pin!(joined);
        tokio::select! {
            outcomes = &mut joined => outcomes,
            () = stage_at_silence => {
                progress(Stage::Silent {
                    wait_at_most: ping_after(longest_interval) + longest_deadline + config.grace,
                });
                joined.await
            }
        }
    };
    drop(silence_sender);
    // Every end is recorded: the held sockets may close now.
    drop(sockets);

    let settings = Settings {
        server: config.server.to_string(),
        sessions: config.sessions,
        requested_interval_ms: config.interval.as_millis() as u64,
        granted_interval_ms: first_welcome.map(|w| u64::from(w.granted_interval_ms)),
        max_missed: first_welcome.map(|w| w.max_missed),
        deadline_ms: first_welcome.map(|_| longest_deadline.as_millis() as u64),
        warmup_ms: warmup.as_millis() as u64,
        grace_ms: config.grace.as_millis() as u64,
        synchronized: config.synchronized,
        acks_wanted: config.acks_wanted,
        connect_concurrency: config.connect_concurrency,
        connect_ms: connect_time.as_secs_f64() * 1e3,
    };
    Ok(SilenceReport::build(settings, &outcomes))
}

fn interval_of(welcome: &Welcome) -> Duration {
    Duration::from_millis(u64::from(welcome.granted_interval_ms))
}

/// Refuses a run this process cannot hold: better one clear message up
/// front than thousands of "too many open files" half-way through.
pub(super) fn check_open_files(sessions: usize) -> Result<(), BenchError> {
    match OpenFiles::of_this_process() {
        Ok(files) if files.session_capacity() < sessions as u64 => {
            Err(BenchError::TooManySessions {
                requested: sessions,
                capacity: files.session_capacity(),
                files,
            })
        }
        Ok(_) => Ok(()),
        Err(error) => {
            // Without /proc the limit is unknown; descriptor exhaustion then
            // shows up as per-session handshake errors in the report.
            warn!(%error, "cannot read the open-file limit; not checking it");
            Ok(())
        }
    }
}

/// What a session task leaves behind: its outcome, and its socket when it
/// is still open, to be closed once every session has ended.
type Finished = (SessionOutcome, Option<RawSession>);

async fn join_all(tasks: &mut JoinSet<Finished>) -> (Vec<SessionOutcome>, Vec<RawSession>) {
    let mut outcomes = Vec::with_capacity(tasks.len());
    let mut sockets = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((outcome, socket)) => {
                outcomes.push(outcome);
                sockets.extend(socket);
            }
            Err(error) => outcomes.push(SessionOutcome::LostDuringWarmup {
                error: format!("session task failed: {error}"),
            }),
        }
    }
    (outcomes, sockets)
}

/// One session from connect to drop. Reports its handshake on `handshakes`
/// (`Some(welcome)` or `None`) exactly once, before heartbeating. Returns
/// the socket of a session that fell silent, still open.
async fn drive(
    plan: Arc<Plan>,
    index: usize,
    permits: Arc<Semaphore>,
    handshakes: mpsc::UnboundedSender<Option<Welcome>>,
    mut silence: watch::Receiver<Option<Instant>>,
) -> Finished {
    let name = format!("{}-{index}", plan.name_prefix);
    let opened = match permits.acquire().await {
        // The permit is held for the handshake only, then returned.
        Ok(_permit) => open_with_retries(&plan.config, &name)
            .await
            .map_err(|error| error.to_string()),
        Err(_) => Err("the connect semaphore was closed".to_owned()),
    };
    let (mut session, hello_sent) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = handshakes.send(None);
            return (SessionOutcome::HandshakeFailed { error }, None);
        }
    };
    if plan.config.rooms > 0 {
        let room = format!("#fleet-{}", index % plan.config.rooms);
        if let Err(error) = session
            .send(&lubdub_core::protocol::Frame::Join { room })
            .await
        {
            let _ = handshakes.send(None);
            let error = error.to_string();
            return (SessionOutcome::HandshakeFailed { error }, None);
        }
    }
    // The coordinator may have stopped listening; the session goes on regardless.
    let _ = handshakes.send(Some(session.welcome()));
    drop(handshakes);

    let deadline = session.deadline();
    let last_sent = match heartbeat_until_silence(
        &mut session,
        hello_sent,
        plan.config.synchronized,
        &mut silence,
    )
    .await
    {
        Ok(last_sent) => last_sent,
        Err(error) => return (SessionOutcome::LostDuringWarmup { error }, None),
    };
    let end = await_end(&mut session, last_sent + deadline + plan.config.grace).await;
    let outcome = SessionOutcome::Silent(SilentSession {
        last_sent,
        deadline,
        end,
    });
    (outcome, Some(session))
}

async fn open_with_retries(
    config: &SilenceConfig,
    name: &str,
) -> Result<(RawSession, Instant), SessionError> {
    let mut attempt = 1;
    loop {
        let opened = RawSession::open(
            config.server,
            name,
            config.interval,
            config.acks_wanted,
            config.handshake_timeout,
        )
        .await;
        match opened {
            Ok(opened) => return Ok(opened),
            // The server said no; asking again would get the same answer.
            Err(error @ SessionError::Rejected(_)) => return Err(error),
            Err(error) if attempt >= config.connect_attempts => return Err(error),
            Err(_) => {
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
                attempt += 1;
            }
        }
    }
}

/// Heartbeats like the real client (a PING when nothing was sent for 4/5 of
/// the granted interval) until the silence; returns the instant the last
/// frame was written. Any end of the session meanwhile is an error.
async fn heartbeat_until_silence(
    session: &mut RawSession,
    hello_sent: Instant,
    synchronized: bool,
    silence: &mut watch::Receiver<Option<Instant>>,
) -> Result<Instant, String> {
    let period = ping_after(session.granted_interval());
    let mut last_sent = hello_sent;
    // A random first PING within one period gives every session its own
    // phase, so heartbeats and deadlines spread evenly over the period
    // rather than following the order in which the handshakes completed.
    let mut next_ping = Instant::now() + period.mul_f64(rand::random::<f64>());
    let mut final_ping = false;
    loop {
        let silence_at = *silence.borrow_and_update();
        if let Some(at) = silence_at {
            if !final_ping && next_ping >= at {
                if !synchronized {
                    return Ok(last_sent);
                }
                next_ping = at;
                final_ping = true;
            }
        }
        tokio::select! {
            changed = silence.changed(), if silence_at.is_none() => {
                if changed.is_err() {
                    return Err("the benchmark stopped before the silence".to_owned());
                }
            }
            received = session.next() => match received {
                Ok((Received::Frame(Frame::Pong { .. }), _)) => {}
                Ok((Received::Frame(Frame::Bye(bye)), _)) => {
                    return Err(format!("BYE {} during warm-up", bye.reason.code));
                }
                Ok((Received::Frame(other), _)) => {
                    return Err(format!("unexpected {:?} during warm-up", other.kind()));
                }
                Ok((Received::Closed, _)) => {
                    return Err("closed by the server during warm-up".to_owned());
                }
                Err(error) => return Err(error.to_string()),
            },
            () = tokio::time::sleep_until(next_ping.into()) => {
                last_sent = session
                    .ping()
                    .await
                    .map_err(|error| format!("PING failed: {error}"))?;
                if final_ping {
                    return Ok(last_sent);
                }
                next_ping = last_sent + period;
            }
        }
    }
}

/// Reads until the server ends the session or `give_up` passes; returns
/// when (the instant the read returned) and how it ended.
async fn await_end(session: &mut RawSession, give_up: Instant) -> Option<(Instant, Ending)> {
    loop {
        match tokio::time::timeout_at(give_up.into(), session.next()).await {
            Err(_elapsed) => return None,
            Ok(Ok((Received::Frame(Frame::Bye(bye)), at))) => {
                return Some((at, Ending::Bye(bye.reason.code)))
            }
            // A PONG still in flight when the silence began.
            Ok(Ok((Received::Frame(_), _))) => {}
            Ok(Ok((Received::Closed, at))) => return Some((at, Ending::Closed)),
            Ok(Err(error)) => return Some((Instant::now(), Ending::Failed(error.to_string()))),
        }
    }
}
