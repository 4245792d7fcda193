//! The server's connection loop: one thread, one epoll, every session.
//!
//! Data flow: the listener and sockets wake `mio`; bytes are read into one
//! shared scratch buffer, decoded by `lubdub_core::protocol`, admitted by
//! `lubdub_core::session`, and acted on here (PONG, relay, claim, close).
//! Every deadline (handshake timeouts and liveness checks) sits in one
//! [`DeadlineWheel`]; the loop sleeps until its next expiry, or at most
//! [`WAIT_CAP`], and judges every deadline by a [`ListeningClock`] that
//! leaves out the time the loop itself could not run.
//!
//! This file still holds about fifteen jobs in one `impl` (1,500 lines):
//! issue 14 splits it into one job per file around a connection state
//! machine in `lubdub-core`. Issue 12's additions went into rooms of their
//! own (`relay.rs`, `outbound.rs`, `listing.rs`) rather than here.
//!
//! Hand-written instead of a tokio task per connection: a task cell and its
//! `ScheduledIo` registration are each cache-padded to 128 bytes and a task
//! future holding a read loop is several hundred more, which alone exceeds
//! the 0.5 KiB per idle session that lubdub targets. Here an idle session
//! costs its slab entry and its registry record, and a heartbeat costs one
//! read, one decode, one store of `last_seen` with an update of the gap
//! statistics, one atomic counter increment and one write: no lock, no
//! allocation, no timer operation (phi alone, when a burst of frames pulls
//! its verdict more than 5 ms earlier, inserts one extra wheel entry).
//!
//! Size: this file still holds several jobs (accept, reading and fairness,
//! handshakes and claims, verdicts, closing); relay, outbound queues,
//! listing, auth and reload have rooms of their own under `event_loop/`.
//! Issue 14 (item 2) moves the rest into rooms and the connection's rules
//! into `lubdub-core`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lubdub_core::backlog::StallGrace;
use lubdub_core::detector::{CheckOutcome, Detector, Transition};
use lubdub_core::protocol::codec::{self, pong_bytes};
use lubdub_core::protocol::inbox::{self, Fed};
use lubdub_core::protocol::{Frame, Hello, ReasonCode, Welcome};
use lubdub_core::session::{admit, Conduct, ConductLimits, Inbound, Phase};
use lubdub_core::stall::ListeningClock;
use lubdub_core::wheel::DeadlineWheel;
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, info, warn};

use super::admission::Admission;
use super::config::ServerConfig;
use super::connection::{flag, Connection, ReadOutcome, SendOutcome};
use super::metrics::{ServerMetrics, StateCounts};
use super::outbox::{self as chunked, ChunkPool};
use super::presence::{DropReason, Presence, PresenceEvent, PresenceKind};
use super::registry::{Claim, NodeId, Registry, RegistryError};
use super::snapshot::{SessionInfo, SessionPage};
use super::tls::{looks_like_client_hello, TLS_ON_PLAIN_TEXT, TLS_REQUIRED_TEXT};
use super::tls_session::TlsSession;
use crate::escape::Escaped;

// Credentials: HELLO → auth gate → establish or refuse (see auth.rs).
mod auth;
// A new configuration's live settings, between two turns.
mod reload;
// MSG fan-out under budgets and fair delivery.
mod relay;
// The outbound queues: the server-wide cap, shedding, the drain rule.
mod outbound;
// The admin API's reads, one bounded page per command.
mod listing;
pub use listing::MAX_SESSIONS_PER_PAGE;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
const EVENTS_CAPACITY: usize = 1024;
/// One read takes up to this much; a connection's partial frame is copied out
/// of it, so the scratch is shared by all connections.
const SCRATCH_LEN: usize = 64 * 1024;
/// How long a connection we are closing is kept after its farewell (REJECT
/// or BYE): its input is read and discarded meanwhile, so that closing does
/// not reset the connection and destroy the farewell before the peer reads it.
const LINGER: Duration = Duration::from_secs(2);
/// BYEs to sessions declared dead written per turn of the loop. Each costs
/// a few microseconds of socket calls (on loopback the sender also runs the
/// receiver's side), so after 10,000 simultaneous verdicts the loop writes a
/// slice, then reads and judges again: no verdict and no heartbeat waits
/// more than about one slice (about 0.4 ms) behind other sessions' farewells.
const FAREWELLS_PER_TURN: usize = 64;
/// Full 64 KiB reads from one socket per turn of the loop; a peer sending
/// faster than that waits for the next turn instead of monopolising it.
const MAX_FULL_READS_PER_TURN: u32 = 2;
/// Full 64 KiB reads per turn from all sockets together: however many
/// peers flood at once, a turn decodes at most 1 MiB before it accepts,
/// judges and writes again. Sockets beyond it are read next turn, first,
/// in the order they were cut short (round robin). Fifty flooding
/// sockets from one address (issue 12, attack 4) got four reads each, a
/// 13 MiB turn that held new handshakes for seconds.
const FULL_READS_PER_TURN: u32 = 16;
/// Time a turn may spend reading before the budget of full reads counts
/// as spent: what a 64 KiB read costs depends on what it holds (4,681
/// ten-byte MSGs cost 10 ms in a debug build), so the bound is in time
/// too. A bystander's frame waits at most about one such slice.
const READ_SLICE: Duration = Duration::from_millis(5);
/// Spacing of the instants at which suspicion checks (not verdicts) are
/// made: a session turns suspect up to this much after its first missed
/// interval, and the loop wakes for suspicion at most 32 times a second.
/// 32 ms divides the wheel's 4,096 slots, so the grid lines fall on the
/// same 128 slots every revolution; with 25 ms they wandered over all
/// 4,096 in turn, each allocating its vector: a megabyte of resident
/// memory grown over two minutes, whatever the number of sessions.
const SUSPICION_GRID: Duration = Duration::from_millis(32);
/// Longest single wait, so that a stall of the loop (SIGSTOP, VM pause,
/// starvation) shows as a late wake-up even when traffic ends the wait.
/// Ten idle wake-ups a second cost nothing measurable.
const WAIT_CAP: Duration = Duration::from_millis(100);
/// Wall time neither asked for as a wait nor spent on the CPU by any thread
/// of the process (it was stopped, paused, or runnable while other
/// processes had every CPU) beyond which the loop counts the time as a
/// stall of its own. Shorter delays are ordinary scheduling
/// noise, and frames that arrived meanwhile are read before anyone is
/// judged anyway.
const STALL_TOLERANCE: Duration = Duration::from_millis(100);

/// Requests from other threads (the admin API, signal handlers).
#[derive(Debug)]
pub(crate) enum Command {
    /// Reply with one page of established sessions (see `listing`).
    SessionPage {
        after: Option<u64>,
        limit: usize,
        reply: tokio::sync::oneshot::Sender<SessionPage>,
    },
    /// Reply with the established session holding `name`, if any.
    SessionNamed {
        name: String,
        reply: tokio::sync::oneshot::Sender<Option<SessionInfo>>,
    },
    /// Reply with how many connections are in each state among one range
    /// of slots, and where the next range starts.
    Counts {
        from: usize,
        reply: tokio::sync::oneshot::Sender<(StateCounts, Option<usize>)>,
    },
    /// Stop accepting, send every session BYE `shutdown` with a reconnect
    /// hint, and stop once the farewells are delivered (or at the shutdown
    /// timeout).
    Shutdown,
    /// Take on the live settings of a new configuration (see `reload.rs`),
    /// then reply.
    Reload {
        reload: Box<super::Reload>,
        reply: tokio::sync::oneshot::Sender<()>,
    },
}

/// Which deadline a wheel entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// The HELLO must have arrived.
    Handshake,
    /// A HELLO's secret must have left the verification queue.
    Verification,
    Liveness,
    Linger,
    /// An outbound queue's drain checkpoint (see `relay.rs`).
    Drain,
}

/// A wheel entry: the slab index plus the generation of the connection it was
/// scheduled for. A closed connection's entries are recognised as stale by the
/// generation and skipped, so nothing is ever cancelled.
#[derive(Debug, Clone, Copy)]
struct TimerKey {
    index: u32,
    generation: u32,
    kind: TimerKind,
}

/// The last change of a session's state, as `/sessions` explains it.
/// Compact (12 bytes): every session holds one.
#[derive(Debug, Clone, Copy)]
enum StateChange {
    Joined,
    Suspected { missed: u32, phi: Option<f32> },
    Recovered { after_ms: u32 },
}

impl StateChange {
    fn describe(self, phi_threshold: f64) -> String {
        match self {
            StateChange::Joined => "joined".to_owned(),
            StateChange::Suspected { phi: Some(phi), .. } => format!(
                "suspect: phi {phi:.2} reached half the threshold {}",
                phi_threshold / 2.0
            ),
            StateChange::Suspected { missed, phi: None } => {
                format!("suspect: {missed} interval(s) without a frame")
            }
            StateChange::Recovered { after_ms } => format!(
                "recovered: a frame arrived after {} of silence",
                humantime::format_duration(Duration::from_millis(u64::from(after_ms)))
            ),
        }
    }
}

/// CPU time this process has used, all threads together; the listening
/// clock tells busy work (CPU used by the loop, or by the admin or verifier
/// threads that took the CPU from it) from a stall (wall time passing with
/// no thread of the process running). Zero if the clock cannot be read,
/// which makes long work count as a stall, the safe side for sessions.
fn process_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// Schedules a liveness check. A check before the session's verdict
/// instant can at most make it suspect, an informational state, so it is
/// put on a [`SUSPICION_GRID`] shared with every other session's: every
/// healthy session has one such check per interval, and waking for each
/// separately cost more CPU than its heartbeats. It is never moved past
/// halfway to the verdict, so that a session is still seen suspect before
/// it is declared dead (phi's two thresholds can be a few ms apart). The
/// verdict itself is scheduled exactly.
fn schedule_check(
    wheel: &mut DeadlineWheel<TimerKey>,
    at: Instant,
    dead_at: Instant,
    key: TimerKey,
) {
    if at < dead_at {
        let latest = at + (dead_at - at) / 2;
        wheel.insert_coalesced(at, SUSPICION_GRID, latest, key);
    } else {
        wheel.insert(at, key);
    }
}

/// Answers a connection refused at accept with REJECT `server_full` (when
/// `text` is given: plain servers) and closes it. The socket is fresh, so the REJECT fits its send buffer; the
/// input already there is read first, so that the close sends FIN, not a
/// reset that could destroy the REJECT before the peer reads it. Not
/// registered and not lingering: under a flood of refused connects, each
/// costs one accept, one write and one close.
fn refuse_at_accept(mut stream: mio::net::TcpStream, text: Option<&str>) {
    use std::io::{Read, Write};
    let mut encoded = Vec::new();
    if let Some(text) = text {
        if codec::encode(&Frame::reject(ReasonCode::ServerFull, text), &mut encoded).is_ok() {
            // The peer may already be gone; nothing else to do for it then.
            let _ = stream.write(&encoded);
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // What the peer already sent is read and dropped, so that the close
    // does not reset the connection before the REJECT is read; but only so
    // much: a peer that keeps sending would otherwise hold the loop here.
    let mut discard = [0u8; 4096];
    for _ in 0..REFUSED_INPUT_READS {
        if !matches!(stream.read(&mut discard), Ok(n) if n > 0) {
            break;
        }
    }
}

/// REJECT `server_busy` text when the registry cannot take a claim.
const REGISTRY_UNAVAILABLE_TEXT: &str =
    "the server cannot register names right now; retry in a few seconds";

/// A run of failed accepts: since when, the next delay, and when to retry.
#[derive(Debug, Clone, Copy)]
struct AcceptBackoff {
    since: Instant,
    delay: Duration,
    retry_at: Instant,
}

/// The first retry after a failed accept, and the longest delay between retries.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Reads of 4 KiB a refused connection's input gets before it is closed
/// (64 KiB: a HELLO and more; anything beyond is a flood, and is reset).
const REFUSED_INPUT_READS: usize = 16;

/// Durations rounded to milliseconds, for messages people read.
fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// A session after its HELLO was accepted.
///
/// Held for every session, so kept small: times in whole milliseconds in
/// 32 or 64 bits rather than `Duration` and `SystemTime` (16 bytes each).
#[derive(Debug)]
struct Session<S> {
    name: Box<str>,
    // No session id: it is the slot's index and generation
    // ([`session_id`]), and 8 bytes here are paid by every session.
    epoch: u64,
    /// When the session was established, ms since the Unix epoch.
    connected_at_ms: u64,
    /// Granted heartbeat interval, ms (as granted in WELCOME).
    interval_ms: u32,
    /// Client-reported round trip in microseconds; 0 until known.
    rtt_us: u32,
    acks_wanted: bool,
    last_change: StateChange,
    /// Its PING and MSG rates so far.
    conduct: Conduct,
    /// Its fan-out work so far (deliveries and bytes, see `relay.rs`).
    fanout: lubdub_core::budget::FanoutBudget,
    liveness: S,
}

impl<S> Session<S> {
    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }
}

/// Milliseconds, saturating at `u32::MAX` (49 days).
fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[derive(Debug)]
enum State<S> {
    AwaitingHello,
    /// HELLO received, its credential being verified off the loop (the
    /// HELLO is kept, its credential taken out); frames are handled as
    /// before the handshake.
    Verifying(Hello),
    Established(Session<S>),
    /// Farewell sent, write side shut; input is discarded until EOF or the linger timeout.
    Closing,
}

#[derive(Debug)]
struct Slot<S> {
    conn: Connection,
    generation: u32,
    state: State<S>,
}

/// A presence event about `session`.
fn session_event<S>(
    at: Instant,
    session: &Session<S>,
    session_id: u64,
    peer: SocketAddr,
    kind: PresenceKind,
) -> PresenceEvent {
    PresenceEvent::new(at, session.name.to_string(), session_id, peer, kind)
}

/// Session ids encode where the session lives: generation in the high half,
/// slab index in the low half, so a takeover finds the old connection
/// without a second map.
fn session_id(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

fn split_session_id(session_id: u64) -> (usize, u32) {
    (
        (session_id & 0xffff_ffff) as usize,
        (session_id >> 32) as u32,
    )
}

pub(crate) struct EventLoop<D: Detector> {
    poll: Poll,
    /// `None` once a shutdown began: the port is closed, so connection
    /// attempts are refused by the kernel and clients back off.
    listener: Option<TcpListener>,
    admission: Admission,
    conduct_limits: ConductLimits,
    /// Origin of the microsecond times the rate limits take.
    origin: Instant,
    /// When the bytes being handled were read, in real time (µs since
    /// `origin`), for the rate limits: PINGs held up by a stall of this
    /// loop arrive together in real time too; the limits allow one
    /// deadline's worth at once, and the stall's worth more after it
    /// (`stall_grace`).
    arrival_us: u64,
    /// The PING allowance after the latest stall.
    stall_grace: StallGrace,
    /// Set while accepting fails (out of descriptors): when to try again.
    accept_backoff: Option<AcceptBackoff>,
    /// Set when a shutdown began: the instant by which the loop stops,
    /// whatever is still open.
    draining_until: Option<Instant>,
    slots: Slab<Slot<D::State>>,
    wheel: DeadlineWheel<TimerKey>,
    detector: D,
    registry: Arc<dyn Registry>,
    config: ServerConfig,
    commands: mpsc::Receiver<Command>,
    node: NodeId,
    next_generation: u32,
    scratch: Vec<u8>,
    encode_buf: Vec<u8>,
    /// The MSG being fanned out, copied out of its chunks (`relay.rs`).
    delivery_buf: Vec<u8>,
    due: Vec<TimerKey>,
    /// Sockets whose reading was cut short by [`MAX_FULL_READS_PER_TURN`]:
    /// slab index and generation, each at most once (its connection's
    /// `flag::READ_PENDING`), read after the next turn's events. Listed twice, a
    /// socket got a share per entry, and a flooder gained an entry a turn.
    unfinished_reads: Vec<(usize, u32)>,
    /// Sockets that had data but got no read at all because the turn's
    /// [`FULL_READS_PER_TURN`] were spent: read first next turn, before
    /// the sockets cut short, so that floods never starve a quiet peer.
    waiting_reads: Vec<(usize, u32)>,
    /// Full reads left in this turn, of [`FULL_READS_PER_TURN`].
    full_reads_left: u32,
    /// When this turn's [`READ_SLICE`] ends.
    read_slice_ends: Instant,
    /// This turn's number, wrapping: a socket's `read_turn` is compared
    /// with it (a wrapped stamp at worst defers one read by one turn).
    turn: u8,
    /// Bytes queued for sending over all connections, against
    /// `outbound_cap` (see `relay.rs`).
    outbound_total: usize,
    /// 7/8 of `--max-outbound-total` (`ServerConfig::outbound_queue_cap`).
    outbound_cap: usize,
    /// The chunks the outbound queues hold their bytes in, lent from here
    /// (see `outbox.rs`).
    chunks: ChunkPool,
    /// The whole loop's fan-out budget, shared by every sender.
    loop_fanout: lubdub_core::budget::FanoutBudget,
    /// When the largest stuck queues were last looked for (at the cap).
    last_shed: Instant,
    /// MSGs accepted for fan-out, written a slice per turn (`relay.rs`).
    fanouts: VecDeque<relay::Fanout>,
    /// Deliveries waiting in `fanouts`.
    pending_deliveries: usize,
    /// Memory the fan-outs waiting in `fanouts` hold (their MSGs and lists
    /// of recipients), counted against the outbound cap with the queues.
    pending_bytes: usize,
    /// BYEs of sessions already declared dead, waiting to be written,
    /// oldest first; see [`FAREWELLS_PER_TURN`].
    farewells: VecDeque<(usize, u32, Frame)>,
    presence: Presence,
    metrics: ServerMetrics,
    clock: ListeningClock,
    /// The instant of the current wake-up in listening time: the clock is
    /// read once, right after each poll, and every decision of that wake-up
    /// uses it.
    now: Instant,
    /// The same instant on the monotonic clock, for presence events.
    real_now: Instant,
    /// When the bytes being handled were read, in listening time: the clock
    /// is read after each read that returns data, so that a frame read late
    /// in a long wake-up is not dated to its start (which would move its
    /// session's deadline earlier than the truth).
    arrival: Instant,
    /// The last poll returned a full batch: more sockets may be readable
    /// than were read, so a session is read once more before it is declared
    /// dead.
    backlog: bool,
    /// Commands from other threads may be waiting: the waker rang, or the
    /// last turn left some (see `handle_commands`).
    commands_waiting: bool,
    /// Credentials, when the server requires them (see `auth.rs`).
    auth: Option<super::auth_gate::AuthGate>,
    /// Shared TLS settings when the server speaks TLS; every accepted
    /// connection then gets its own session (see `tls_session`).
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl<D: Detector> EventLoop<D> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        poll: Poll,
        listener: TcpListener,
        detector: D,
        registry: Arc<dyn Registry>,
        config: ServerConfig,
        commands: mpsc::Receiver<Command>,
        node: NodeId,
        origin: Instant,
        presence: Presence,
        metrics: ServerMetrics,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let outbound_cap = config.outbound_queue_cap();
        Self {
            poll,
            listener: Some(listener),
            admission: Admission::new(config.admission_limits()),
            conduct_limits: config.conduct_limits(),
            origin,
            arrival_us: 0,
            stall_grace: StallGrace::new(),
            accept_backoff: None,
            draining_until: None,
            slots: Slab::new(),
            wheel: DeadlineWheel::new(origin),
            detector,
            registry,
            config,
            commands,
            node,
            // Random start: session ids rarely repeat across restarts, which
            // keeps logs of successive runs apart.
            next_generation: rand::random(),
            scratch: vec![0; SCRATCH_LEN],
            encode_buf: Vec::new(),
            delivery_buf: Vec::new(),
            due: Vec::new(),
            unfinished_reads: Vec::new(),
            waiting_reads: Vec::new(),
            full_reads_left: FULL_READS_PER_TURN,
            read_slice_ends: origin,
            turn: 0,
            outbound_total: 0,
            outbound_cap,
            chunks: ChunkPool::new(chunked::FREE_CHUNKS_KEPT),
            loop_fanout: lubdub_core::budget::FanoutBudget::new(),
            last_shed: origin,
            fanouts: VecDeque::new(),
            pending_deliveries: 0,
            pending_bytes: 0,
            farewells: VecDeque::new(),
            presence,
            metrics,
            clock: ListeningClock::new(origin, process_cpu_time(), STALL_TOLERANCE),
            now: origin,
            real_now: origin,
            arrival: origin,
            backlog: false,
            commands_waiting: false,
            auth: None,
            tls,
        }
    }

    /// Runs until a [`Command::Shutdown`] or a fatal poll error.
    ///
    /// # Errors
    /// The poll error that stopped the loop.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let before = Instant::now();
            // With nothing scheduled there is no one to judge, and so no
            // stall to notice: sleep until something happens.
            let timeout = if self.farewells.is_empty()
                && self.unfinished_reads.is_empty()
                && self.waiting_reads.is_empty()
                && self.fanouts.is_empty()
                && !self.commands_waiting
            {
                self.wheel.next_expiry().map(|at| {
                    at.saturating_duration_since(self.clock.listening(before))
                        .min(WAIT_CAP)
                })
            } else {
                Some(Duration::ZERO)
            };
            let wake_by = [
                self.draining_until,
                self.accept_backoff.as_ref().map(|backoff| backoff.retry_at),
            ];
            let timeout = wake_by.into_iter().flatten().fold(timeout, |timeout, at| {
                let left = at.saturating_duration_since(before);
                Some(timeout.map_or(left, |timeout| timeout.min(left)))
            });
            let stalled = self.clock.sleeping(before, process_cpu_time, timeout);
            self.stalled(before, stalled);
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                // After SIGSTOP and SIGCONT epoll_wait fails with EINTR; the
                // next `sleeping` report catches the stall.
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.begin_shutdown();
                return Err(error);
            }
            self.real_now = Instant::now();
            let wake = self.clock.woke(self.real_now, process_cpu_time);
            self.now = wake.listening;
            self.stalled(self.real_now, wake.stalled);
            if self
                .accept_backoff
                .as_ref()
                .is_some_and(|backoff| backoff.retry_at <= self.real_now)
            {
                self.accept();
            }
            // A turn reads, in this order: sockets that got no read last
            // turn, this turn's events, then sockets cut short last turn
            // (floods), within one budget of full reads. A listed socket is
            // not read for its new events too: one share a turn, not two.
            self.full_reads_left = FULL_READS_PER_TURN;
            self.turn = self.turn.wrapping_add(1);
            self.read_slice_ends = self.real_now + READ_SLICE;
            let waiting = std::mem::take(&mut self.waiting_reads);
            let cut_short = std::mem::take(&mut self.unfinished_reads);
            self.resume_reads(waiting, false);
            let mut ready = 0;
            for event in events.iter() {
                ready += 1;
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        self.commands_waiting = true;
                        // The verifier threads wake the loop this way too.
                        self.finish_verifications();
                    }
                    token => self.connection_ready(token.0 - FIRST_CONNECTION, event),
                }
            }
            if self.commands_waiting {
                self.handle_commands();
            }
            self.resume_reads(cut_short, true);
            // Judge after every batch, so that a flood of readiness never
            // delays a verdict by more than one batch. Every socket this
            // poll reported was read; when the batch was full (or a socket
            // still holds unread bytes), others may hold unread frames, and
            // a session about to be declared dead is read first (see `judge`).
            self.backlog = ready == EVENTS_CAPACITY
                || !self.unfinished_reads.is_empty()
                || !self.waiting_reads.is_empty();
            // Judge with the instant taken right after the poll: a deadline
            // that passed while this batch was handled is judged after the
            // next poll, once the frames that arrived meanwhile are read.
            self.expire_timers();
            self.deliver_fanouts();
            self.write_farewells(FAREWELLS_PER_TURN);
            if self.shutdown_complete() {
                return Ok(());
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                // Shutting down: nothing to retry.
                self.accept_backoff = None;
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors or memory: the rest stay in the
                    // backlog. Readiness is edge-triggered, so no event
                    // will come for them unless a new connection arrives:
                    // retry on a timer, backing off.
                    self.accept_failed(&error);
                    return;
                }
            };
            if let Some(backoff) = self.accept_backoff.take() {
                info!(
                    failed_for_ms = backoff.since.elapsed().as_millis() as u64,
                    "accepting connections again"
                );
            }
            let now_us = self.micros_since_origin(self.real_now);
            match self.admission.admit(peer.ip(), self.slots.len(), now_us) {
                Ok(()) => self.register(stream, peer),
                Err(refusal) => {
                    self.metrics.connection_refused(refusal.label());
                    debug!(%peer, limit = refusal.label(), "connection refused");
                    // A TLS client cannot read a plain REJECT (it would
                    // report a server that does not speak TLS): it gets
                    // the close alone, which it retries with backoff.
                    let text = self.tls.is_none().then(|| refusal.text());
                    refuse_at_accept(stream, text.as_deref());
                }
            }
        }
    }

    /// Schedules the next accept after a failure: 10 ms, then twice as long
    /// each time up to a second, until one succeeds. Said once per run of
    /// failures, not per retry.
    fn accept_failed(&mut self, error: &io::Error) {
        let backoff = self.accept_backoff.get_or_insert_with(|| {
            warn!(%error, "cannot accept connections (out of file descriptors or memory?); they wait in the backlog, retried with backoff");
            AcceptBackoff {
                since: Instant::now(),
                delay: ACCEPT_RETRY_FIRST,
                retry_at: Instant::now(),
            }
        });
        backoff.retry_at = self.real_now + backoff.delay;
        backoff.delay = (backoff.delay * 2).min(ACCEPT_RETRY_MAX);
    }

    /// A stall of the loop, if `stalled`, ended at `resumed`: said, and
    /// the PINGs held up by it are allowed through.
    fn stalled(&mut self, resumed: Instant, stalled: Option<Duration>) {
        let Some(stalled) = stalled else {
            return;
        };
        warn!(
            stalled_ms = stalled.as_millis() as u64,
            "the server could not run for {}; that time is not counted as anyone's silence",
            humantime::format_duration(whole_millis(stalled))
        );
        self.stall_grace
            .stalled(self.micros_since_origin(resumed), stalled);
    }

    fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    fn register(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        // Read the clock again, as for frames: `self.now` is the start of
        // this turn, and a connection accepted late in a busy turn (or one
        // that arrived during it) would lose the turn's length from its
        // handshake timeout.
        let now = self.clock.listening(Instant::now());
        let tls = match self.tls.as_ref().map(TlsSession::accept).transpose() {
            Ok(tls) => tls,
            Err(error) => {
                warn!(%peer, %error, "could not start a TLS session");
                self.admission.closed(peer.ip());
                return;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        if let Err(error) = crate::tcp_options::apply(
            socket2::SockRef::from(&stream),
            self.config.tcp_keepalive,
            self.config.tcp_user_timeout,
        ) {
            debug!(%peer, %error, "could not set TCP keepalive or user timeout");
        }
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        let token = Token(index + FIRST_CONNECTION);
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(%peer, %error, "could not register connection");
            self.admission.closed(peer.ip());
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let generation = self.next_generation;
        entry.insert(Slot {
            conn: Connection::new(stream, peer, tls),
            generation,
            state: State::AwaitingHello,
        });
        self.wheel.insert(
            now + self.config.handshake_timeout,
            TimerKey {
                index: index as u32,
                generation,
                kind: TimerKind::Handshake,
            },
        );
        debug!(%peer, "connection accepted");
    }

    fn connection_ready(&mut self, index: usize, event: &Event) {
        if event.is_writable() {
            let clock = self.queue_clock();
            let flushed = self.with_queue(index, |conn, chunks| {
                conn.flush(clock, chunks)?;
                // Not merely `Closing`: a session declared dead may still wait
                // for its BYE in the farewell queue, and a FIN now would lose it.
                if conn.farewell_written() && conn.is_flushed() {
                    conn.shutdown_write(chunks);
                }
                Ok(())
            });
            match flushed {
                None => return,
                Some(Err(error)) => {
                    self.fail(index, &error);
                    return;
                }
                Some(Ok(())) => {}
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // When the peer's FIN came with the data, it raises no new edge:
            // read on to the end of the stream to see it.
            let until_eof = event.is_read_closed() || event.is_error();
            if let Some(slot) = self.slots.get_mut(index) {
                if slot.conn.flags.get(flag::READ_PENDING) {
                    // Listed to be read next turn already.
                    if until_eof {
                        slot.conn.flags.set(flag::READ_TO_EOF, true);
                    }
                    return;
                }
            }
            let read_this_turn = self
                .slots
                .get(index)
                .is_some_and(|slot| slot.conn.read_turn == self.turn);
            if self.full_reads_left == 0 || read_this_turn {
                self.defer_read(index, until_eof, false);
                return;
            }
            self.read(index, until_eof);
        }
    }

    /// Lists a socket to be read next turn (once, however often this is
    /// called for it): among the floods when it was `cut_short` after its
    /// share, else among those waiting for their first read.
    fn defer_read(&mut self, index: usize, until_eof: bool, cut_short: bool) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if until_eof {
            slot.conn.flags.set(flag::READ_TO_EOF, true);
        }
        if !slot.conn.flags.replace(flag::READ_PENDING, true) {
            let list = if cut_short {
                &mut self.unfinished_reads
            } else {
                &mut self.waiting_reads
            };
            list.push((index, slot.generation));
        }
    }

    /// Reads the sockets listed last turn, while the turn's budget lasts;
    /// the rest stay listed, in order, in the list they came from.
    fn resume_reads(&mut self, listed: Vec<(usize, u32)>, cut_short: bool) {
        for (index, generation) in listed {
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.generation != generation || !slot.conn.flags.get(flag::READ_PENDING) {
                continue;
            }
            if self.full_reads_left == 0 {
                let list = if cut_short {
                    &mut self.unfinished_reads
                } else {
                    &mut self.waiting_reads
                };
                list.push((index, generation));
                continue;
            }
            slot.conn.flags.set(flag::READ_PENDING, false);
            let until_eof = slot.conn.flags.replace(flag::READ_TO_EOF, false);
            self.read(index, until_eof);
        }
    }

    fn read(&mut self, index: usize, until_eof: bool) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.conn.read_turn = self.turn;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut full_reads = 0;
        // TLS reads may write (handshake records, alerts, queued data).
        while let Some(outcome) =
            self.with_queue(index, |conn, chunks| conn.read_into(&mut scratch, chunks))
        {
            let Some(slot) = self.slots.get_mut(index) else {
                break;
            };
            match outcome {
                Ok(ReadOutcome::Data(n)) => {
                    let read_at = Instant::now();
                    if read_at >= self.read_slice_ends {
                        self.full_reads_left = 0;
                    }
                    self.arrival = self.clock.listening(read_at);
                    self.arrival_us = self.micros_since_origin(read_at);
                    let open = self.process_bytes(index, &scratch[..n]);
                    // A short read drained the socket; with edge-triggered
                    // readiness, later bytes raise a new event.
                    if !open || (n < scratch.len() && !until_eof) {
                        break;
                    }
                    full_reads += 1;
                    self.full_reads_left = self.full_reads_left.saturating_sub(1);
                    if full_reads >= MAX_FULL_READS_PER_TURN || self.full_reads_left == 0 {
                        // A peer that sends as fast as we read would keep
                        // the loop here for ever; its socket is read again
                        // next turn (no new edge will announce it), after
                        // the verdicts.
                        self.defer_read(index, until_eof, true);
                        break;
                    }
                }
                Ok(ReadOutcome::WouldBlock) => break,
                // Plain lubdub on a TLS server: answered in plain, then the
                // rest of its input is read and discarded like any farewell.
                Ok(ReadOutcome::TlsRequired) => {
                    self.refuse(index, ReasonCode::TlsRequired, TLS_REQUIRED_TEXT.into());
                }
                Ok(ReadOutcome::Closed) => {
                    let reason = if !slot.conn.has_partial_frame()
                        || matches!(slot.state, State::Closing)
                    {
                        DropReason::ClosedByPeer
                    } else {
                        warn!(peer = %slot.conn.peer, "protocol error: connection closed in the middle of a frame (truncated frame)");
                        DropReason::ProtocolError(ReasonCode::MalformedFrame)
                    };
                    self.close(index, reason);
                    break;
                }
                Err(error) => {
                    self.fail(index, &error);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Decodes and handles every complete frame in the connection's partial
    /// frame followed by `fresh`. Returns whether the connection is still open.
    fn process_bytes(&mut self, index: usize, fresh: &[u8]) -> bool {
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        if matches!(slot.state, State::Closing) {
            // Read and discarded: only the peer's EOF matters now.
            return true;
        }
        let awaiting_hello = matches!(slot.state, State::AwaitingHello);
        let mut partial = slot.conn.take_inbox();
        // Said plainly, rather than as the length prefix too large that
        // `16 03` makes.
        let tls_on_plain = awaiting_hello
            && self.tls.is_none()
            && looks_like_client_hello(if partial.is_empty() { fresh } else { &partial });
        let max_frame_len = self.config.max_frame_len;
        match inbox::feed(&mut partial, fresh, max_frame_len, |frame| {
            self.handle_frame(index, frame)
        }) {
            Fed::Waiting => {}
            Fed::Stopped => return false,
            Fed::Failed { first: true, .. } if tls_on_plain => {
                self.refuse(index, ReasonCode::MalformedFrame, TLS_ON_PLAIN_TEXT.into());
                return false;
            }
            Fed::Failed { error, .. } => {
                self.refuse(index, error.reason_code(), error.to_string());
                return false;
            }
        }
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        slot.conn.set_inbox(partial);
        true
    }

    /// Returns whether the connection is still open.
    fn handle_frame(&mut self, index: usize, frame: Frame) -> bool {
        let now = self.arrival;
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let admitted = match &mut slot.state {
            State::Closing => return false,
            State::AwaitingHello | State::Verifying(_) => admit(Phase::AwaitingHello, frame),
            State::Established(session) => {
                // Any complete frame is proof of life, whatever it turns out to be.
                let silence =
                    now.saturating_duration_since(self.detector.last_seen(&session.liveness));
                let outcome = self.detector.heartbeat(&mut session.liveness, now);
                self.metrics.heartbeat();
                if let Some(earlier) = outcome.earlier_check {
                    let dead_at = self.detector.dead_at(&session.liveness);
                    schedule_check(
                        &mut self.wheel,
                        earlier,
                        dead_at,
                        TimerKey {
                            index: index as u32,
                            generation: slot.generation,
                            kind: TimerKind::Liveness,
                        },
                    );
                }
                if let Some(Transition::Recovered) = outcome.transition {
                    session.last_change = StateChange::Recovered {
                        after_ms: millis_u32(silence),
                    };
                    self.presence.report(
                        session_event(
                            self.real_now,
                            session,
                            session_id(index, slot.generation),
                            slot.conn.peer,
                            PresenceKind::Recovered,
                        ),
                        None,
                    );
                }
                session.conduct.admit_held_up(
                    frame,
                    self.arrival_us,
                    self.stall_grace.grace_at(self.arrival_us),
                    session.interval(),
                    &self.conduct_limits,
                )
            }
        };
        match admitted {
            Ok(Inbound::Ping { seq, rtt_us }) => {
                let State::Established(session) = &mut slot.state else {
                    unreachable!("admit only yields Ping on established sessions");
                };
                if rtt_us != 0 {
                    session.rtt_us = rtt_us;
                    self.metrics
                        .round_trip(Duration::from_micros(u64::from(rtt_us)));
                }
                if session.acks_wanted {
                    return self.send(index, &pong_bytes(seq));
                }
                true
            }
            Ok(Inbound::Hello(hello)) => self.authenticate(index, hello),
            Ok(Inbound::Message(message)) => self.relay(index, message),
            Ok(Inbound::Bye(bye)) => {
                debug!(peer = %slot.conn.peer, code = %bye.reason.code, text = %Escaped(&bye.reason.text), "BYE from peer");
                self.close(index, DropReason::Quit);
                false
            }
            Ok(Inbound::Refused { code, notice }) => {
                self.metrics.frame_refused(code);
                match notice {
                    Some(text) => {
                        warn!(peer = %slot.conn.peer, %code, "{}", Escaped(&text));
                        self.notify(index, code, text)
                    }
                    None => true,
                }
            }
            Err(violation) => {
                self.refuse(index, violation.code, violation.text);
                false
            }
        }
    }

    fn establish(&mut self, index: usize, hello: Hello) -> bool {
        let now = self.arrival;
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let interval = self
            .config
            .interval_policy()
            .grant(hello.requested_interval_ms);
        let session_id = session_id(index, slot.generation);
        let peer = slot.conn.peer;
        let connected_at = SystemTime::now();
        let claimed = match self.registry.claim(Claim {
            name: hello.name.clone(),
            session_id,
            node: self.node,
        }) {
            Ok(claimed) => claimed,
            Err(error @ RegistryError::Confusable { .. }) => {
                self.refuse(index, ReasonCode::ConfusableName, error.to_string());
                return false;
            }
            Err(RegistryError::Unavailable(detail)) => {
                // What the backend said (addresses, reasons) is for the
                // operator, not for any peer that connects.
                warn!(%peer, name = %Escaped(&hello.name), %detail, "cannot claim a name: the registry is unavailable");
                self.refuse(
                    index,
                    ReasonCode::ServerBusy,
                    REGISTRY_UNAVAILABLE_TEXT.into(),
                );
                return false;
            }
        };
        if let Some(previous) = claimed
            .previous
            .filter(|previous| previous.node == self.node)
        {
            self.take_over(previous.session_id, peer);
        }
        let (liveness, first_check) = self.detector.start(now, interval);
        let dead_at = self.detector.dead_at(&liveness);
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let generation = slot.generation;
        slot.state = State::Established(Session {
            name: hello.name.as_str().into(),
            epoch: claimed.epoch,
            acks_wanted: hello.acks_wanted(),
            rtt_us: 0,
            connected_at_ms: connected_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                }),
            interval_ms: millis_u32(interval),
            last_change: StateChange::Joined,
            conduct: Conduct::new(),
            fanout: lubdub_core::budget::FanoutBudget::new(),
            liveness,
        });
        let welcome = Frame::Welcome(Welcome {
            session_id,
            epoch: claimed.epoch,
            granted_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            max_missed: u16::try_from(self.config.max_missed).unwrap_or(u16::MAX),
        });
        schedule_check(
            &mut self.wheel,
            first_check,
            dead_at,
            TimerKey {
                index: index as u32,
                generation,
                kind: TimerKind::Liveness,
            },
        );
        let one_way = !hello.acks_wanted();
        self.presence.report(
            PresenceEvent::new(
                self.real_now,
                hello.name,
                session_id,
                peer,
                PresenceKind::Joined {
                    epoch: claimed.epoch,
                    interval,
                },
            ),
            one_way.then_some("one-way"),
        );
        self.send_frame(index, &welcome)
    }

    /// Closes the local connection that held a name just claimed by `new_peer`.
    fn take_over(&mut self, old_session_id: u64, new_peer: SocketAddr) {
        let (old_index, old_generation) = split_session_id(old_session_id);
        let holds_it = self.slots.get(old_index).is_some_and(|slot| {
            slot.generation == old_generation && matches!(&slot.state, State::Established(_))
        });
        if holds_it {
            let bye = Frame::bye(
                ReasonCode::TakenOver,
                format!("name taken over by a new connection from {new_peer}"),
            );
            self.end(old_index, DropReason::TakenOver, Some(&bye), None);
        }
    }

    /// The slab index of the established local session holding `name`.
    fn local_session(&self, name: &str) -> Option<usize> {
        let record = self.registry.lookup(name).ok().flatten()?;
        if record.node != self.node {
            return None;
        }
        let (index, generation) = split_session_id(record.session_id);
        let slot = self.slots.get(index)?;
        (slot.generation == generation && matches!(slot.state, State::Established(_)))
            .then_some(index)
    }

    fn send_frame(&mut self, index: usize, frame: &Frame) -> bool {
        let mut encoded = std::mem::take(&mut self.encode_buf);
        encoded.clear();
        let open = match codec::encode(frame, &mut encoded) {
            Ok(()) => self.send(index, &encoded),
            Err(error) => {
                warn!(%error, "could not encode an outbound frame");
                true
            }
        };
        self.encode_buf = encoded;
        open
    }

    /// Sends bytes, dropping the connection when its queue is full or the
    /// socket fails. Returns whether the connection is still open.
    fn send(&mut self, index: usize, bytes: &[u8]) -> bool {
        let clock = self.queue_clock();
        let max_queued = self.config.max_outbound_bytes;
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        let (generation, was_empty) = (slot.generation, slot.conn.is_flushed());
        let Some(sent) = self.with_queue(index, |conn, chunks| {
            conn.send(bytes, max_queued, clock, chunks)
        }) else {
            return false;
        };
        if was_empty {
            // A no-op when the socket took everything.
            self.watch_drain(index, generation);
        }
        match sent {
            Ok(SendOutcome::Sent) => true,
            Ok(SendOutcome::QueueFull) => {
                self.close(index, DropReason::SlowConsumer);
                false
            }
            Err(error) => {
                self.fail(index, &error);
                false
            }
        }
    }

    /// Answers a protocol violation (REJECT before the handshake, BYE after),
    /// logs it once and closes.
    fn refuse(&mut self, index: usize, code: ReasonCode, text: String) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let established = matches!(slot.state, State::Established(_));
        warn!(peer = %slot.conn.peer, %code, "{}: {}", if established { "protocol error" } else { "handshake refused" }, Escaped(&text));
        let answer = if established {
            Frame::bye(code, text.clone())
        } else {
            Frame::reject(code, text.clone())
        };
        self.end(
            index,
            DropReason::ProtocolError(code),
            Some(&answer),
            Some(text),
        );
    }

    /// Ends the connection after a socket error.
    fn fail(&mut self, index: usize, error: &io::Error) {
        // A reset or a write to a socket the peer has closed is the peer
        // going away (killed, or closed with unread data), not a fault here.
        let reason = match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => DropReason::ClosedByPeer,
            _ => DropReason::IoError,
        };
        self.end(index, reason, None, Some(error.to_string()));
    }

    /// Ends the connection without a farewell.
    fn close(&mut self, index: usize, reason: DropReason) {
        self.end(index, reason, None, None);
    }

    /// Ends the connection: releases its name and reports `dropped` (for an
    /// established session), then sends `farewell` and lingers, or closes at
    /// once when there is no farewell or it cannot be written.
    fn end(
        &mut self,
        index: usize,
        reason: DropReason,
        farewell: Option<&Frame>,
        detail: Option<String>,
    ) {
        let Some(generation) = self.retire(index, reason, detail) else {
            return;
        };
        match farewell {
            Some(frame) => self.bid_farewell(index, generation, frame),
            None => self.remove(index),
        }
    }

    /// The first half of [`end`](Self::end): the connection moves to
    /// `Closing`, its name is released and `dropped` reported. Returns the
    /// connection's generation, or `None` when it was closing already (it
    /// is then removed).
    fn retire(&mut self, index: usize, reason: DropReason, detail: Option<String>) -> Option<u32> {
        let slot = self.slots.get_mut(index)?;
        let peer = slot.conn.peer;
        let generation = slot.generation;
        match std::mem::replace(&mut slot.state, State::Closing) {
            State::Closing => {
                self.remove(index);
                return None;
            }
            previous @ (State::AwaitingHello | State::Verifying(_)) => {
                if let (State::Verifying(_), Some(gate)) = (&previous, self.auth.as_mut()) {
                    // Its secret need not be checked any more.
                    gate.cancel(index, generation);
                }
                self.metrics.handshake_failed(reason);
                debug!(%peer, reason = reason.label(), detail, "connection closed before HELLO");
            }
            State::Established(session) => {
                // A taken-over session's name already belongs to its successor.
                if reason != DropReason::TakenOver {
                    if let Err(error) = self.registry.release(&session.name, session.epoch) {
                        warn!(name = %Escaped(&session.name), %error, "could not release name");
                    }
                }
                // Read the clock again: with thousands of verdicts in one
                // wake-up, the reported silence and instant must be those of
                // this drop, not of the wake-up's start.
                let real = Instant::now();
                let silent_for = self
                    .clock
                    .listening(real)
                    .saturating_duration_since(self.detector.last_seen(&session.liveness));
                self.metrics.dropped(reason);
                let dropped = PresenceKind::Dropped { reason, silent_for };
                self.presence.report(
                    session_event(real, &session, session_id(index, generation), peer, dropped),
                    detail.as_deref(),
                );
            }
        }
        Some(generation)
    }

    /// The second half of [`end`](Self::end): writes the farewell and lingers,
    /// or removes the connection when the farewell cannot be written. Does
    /// nothing if the slot now holds another connection.
    fn bid_farewell(&mut self, index: usize, generation: u32, frame: &Frame) {
        if self.slots.get(index).map(|slot| slot.generation) != Some(generation) {
            return;
        }
        if self.write_farewell(index, frame) {
            self.wheel.insert(
                self.clock.listening(Instant::now()) + LINGER,
                TimerKey {
                    index: index as u32,
                    generation,
                    kind: TimerKind::Linger,
                },
            );
        } else {
            self.remove(index);
        }
    }

    /// Queues the last frame and shuts the write side once it is out.
    /// Returns false when it could not be queued.
    fn write_farewell(&mut self, index: usize, frame: &Frame) -> bool {
        let mut encoded = std::mem::take(&mut self.encode_buf);
        encoded.clear();
        let clock = self.queue_clock();
        let max_queued = self.config.max_outbound_bytes;
        let queued = codec::encode(frame, &mut encoded).is_ok()
            && self.with_queue(index, |conn, chunks| {
                let sent = matches!(
                    conn.send(&encoded, max_queued, clock, chunks),
                    Ok(SendOutcome::Sent)
                );
                if sent {
                    conn.mark_farewell_written();
                    if conn.is_flushed() {
                        conn.shutdown_write(chunks);
                    }
                }
                sent
            }) == Some(true);
        self.encode_buf = encoded;
        queued
    }

    /// Deregisters and drops the socket.
    fn remove(&mut self, index: usize) {
        if let Some(mut slot) = self.slots.try_remove(index) {
            self.account(slot.conn.held_bytes(), 0);
            slot.conn.release(&mut self.chunks);
            self.admission.closed(slot.conn.peer.ip());
            if let Err(error) = self.poll.registry().deregister(&mut slot.conn.stream) {
                debug!(%error, "deregister failed");
            }
        }
    }

    fn expire_timers(&mut self) {
        let now = self.now;
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now, &mut due);
        for key in due.drain(..) {
            let index = key.index as usize;
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.generation != key.generation {
                continue;
            }
            match (key.kind, &slot.state) {
                // Once the HELLO is in, the verification queue's own wait
                // bounds the handshake (see `verification_overdue`).
                (TimerKind::Handshake, State::AwaitingHello) => {
                    let text = format!(
                        "no HELLO within the handshake timeout of {}",
                        humantime::format_duration(self.config.handshake_timeout)
                    );
                    self.refuse(index, ReasonCode::HandshakeTimeout, text);
                }
                (TimerKind::Verification, State::Verifying(_)) => {
                    self.verification_overdue(index, key.generation);
                }
                (TimerKind::Liveness, State::Established(_)) => {
                    if let Some(bye) = self.judge(index, key) {
                        self.farewells.push_back((index, key.generation, bye));
                    }
                }
                (TimerKind::Linger, State::Closing) => self.remove(index),
                (TimerKind::Drain, State::Established(_)) => {
                    self.check_drain(index, key.generation)
                }
                // The connection moved on since this entry was scheduled.
                _ => {}
            }
        }
        self.due = due;
    }

    /// Writes up to `limit` queued BYEs of sessions already declared dead.
    ///
    /// Verdicts are given (names released, `dropped` reported) as soon as
    /// they are due; their BYEs are queued and written a slice per turn, so
    /// that one session's verdict never waits behind thousands of others'
    /// socket calls.
    fn write_farewells(&mut self, limit: usize) {
        for _ in 0..limit {
            let Some((index, generation, bye)) = self.farewells.pop_front() else {
                return;
            };
            self.bid_farewell(index, generation, &bye);
        }
    }

    /// Runs the detector's check for a session whose check came due.
    /// Returns the BYE to send when the session was declared dead (it is
    /// already ended: name released, `dropped` reported).
    fn judge(&mut self, index: usize, key: TimerKey) -> Option<Frame> {
        if self.drop_if_stuck(index) {
            return None;
        }
        let now = self.now;
        let mut outcome = self.check(index, now)?;
        if self.backlog && matches!(outcome.transition, Some(Transition::Dead { .. })) {
            // The last poll returned a full batch, so this socket may hold
            // frames not read yet: proof of life must be read before a verdict.
            self.read(index, false);
            outcome = self.check(index, now)?;
        }
        let slot = self.slots.get_mut(index)?;
        let State::Established(session) = &mut slot.state else {
            return None;
        };
        let dead_at = self.detector.dead_at(&session.liveness);
        let mut farewell = None;
        match outcome.transition {
            Some(Transition::Suspected { missed }) => {
                let phi = self.detector.phi(&session.liveness, now);
                session.last_change = StateChange::Suspected {
                    missed,
                    phi: phi.map(|phi| phi as f32),
                };
                let detail = phi.map(|phi| format!("phi={phi:.2}"));
                self.presence.report(
                    session_event(
                        self.real_now,
                        session,
                        session_id(index, slot.generation),
                        slot.conn.peer,
                        PresenceKind::Suspected { missed },
                    ),
                    detail.as_deref(),
                );
            }
            Some(Transition::Dead { silent_for }) => {
                let ceiling = session.interval() * self.config.max_missed;
                let verdict = match self.detector.phi(&session.liveness, now) {
                    Some(phi) if silent_for < ceiling => {
                        format!("phi {phi:.2} reached {}", self.config.phi_threshold)
                    }
                    _ => format!(
                        "{} × the {} interval",
                        self.config.max_missed,
                        humantime::format_duration(session.interval())
                    ),
                };
                let text = format!(
                    "no frame for {}: declared dead ({verdict})",
                    humantime::format_duration(whole_millis(silent_for))
                );
                let due = dead_at;
                self.retire(index, DropReason::Timeout, None);
                self.metrics.detection_delay(
                    self.clock
                        .listening(Instant::now())
                        .saturating_duration_since(due),
                );
                farewell = Some(Frame::bye(ReasonCode::Timeout, text));
            }
            Some(Transition::Recovered) | None => {}
        }
        if let Some(next_check) = outcome.next_check {
            schedule_check(&mut self.wheel, next_check, dead_at, key);
        }
        farewell
    }

    /// The detector's check of an established session, if it still is one.
    fn check(&mut self, index: usize, now: Instant) -> Option<CheckOutcome> {
        match &mut self.slots.get_mut(index)?.state {
            State::Established(session) => Some(self.detector.check(&mut session.liveness, now)),
            _ => None,
        }
    }

    /// Carries out waiting commands, at most [`listing::PAGES_PER_TURN`]
    /// pages of them: 20 admin pollers each waiting for a page must not
    /// make one turn build 20 pages while every session waits.
    fn handle_commands(&mut self) {
        let mut pages = 0;
        self.commands_waiting = false;
        while let Ok(command) = self.commands.try_recv() {
            if matches!(
                command,
                Command::SessionPage { .. } | Command::Counts { .. }
            ) {
                pages += 1;
                // The rest wait for the next turn, which does not sleep.
                self.commands_waiting = pages >= listing::PAGES_PER_TURN;
            }
            match command {
                // The requester may have given up; nothing to do then.
                Command::SessionPage {
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.session_page(after, limit));
                }
                Command::SessionNamed { name, reply } => {
                    let _ = reply.send(self.session_named(&name));
                }
                Command::Counts { from, reply } => {
                    let _ = reply.send(self.count_page(from));
                }
                Command::Shutdown => self.begin_shutdown(),
                Command::Reload { reload, reply } => {
                    self.reload(*reload);
                    let _ = reply.send(());
                }
            }
            if self.commands_waiting {
                return;
            }
        }
    }

    /// Starts a graceful shutdown: closes the listening socket, tells every
    /// session BYE `shutdown` with a reconnect hint (REJECT to connections
    /// still in their handshake), and lets the loop run on until every
    /// farewell is delivered and its connection closed, or until the
    /// shutdown timeout.
    fn begin_shutdown(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(Instant::now() + self.config.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            if let Err(error) = self.poll.registry().deregister(&mut listener) {
                debug!(%error, "deregistering the listener failed");
            }
        }
        self.write_farewells(usize::MAX);
        // Every session is told to go: messages not yet written are not.
        self.fanouts.clear();
        self.pending_deliveries = 0;
        self.pending_bytes = 0;
        let indices: Vec<usize> = self.slots.iter().map(|(index, _)| index).collect();
        let spread = reconnect_spread(indices.len());
        info!(
            connections = indices.len(),
            reconnect_within = %humantime::format_duration(RECONNECT_AFTER + spread),
            timeout = %humantime::format_duration(self.config.shutdown_timeout),
            "shutting down: no new connections; telling every session to reconnect later"
        );
        for index in indices {
            let farewell = match self.slots.get(index).map(|slot| &slot.state) {
                Some(State::Established(_)) => {
                    let retry_after = RECONNECT_AFTER + spread.mul_f64(rand::random::<f64>());
                    Frame::Bye(lubdub_core::protocol::Bye {
                        reason: lubdub_core::protocol::Reason::new(
                            ReasonCode::Shutdown,
                            format!(
                                "server shutting down; reconnect after {}",
                                humantime::format_duration(whole_millis(retry_after))
                            ),
                        ),
                        retry_after_ms: millis_u32(retry_after),
                    })
                }
                Some(State::AwaitingHello | State::Verifying(_)) => {
                    Frame::reject(ReasonCode::Shutdown, "server shutting down")
                }
                Some(State::Closing) | None => continue,
            };
            self.end(index, DropReason::Shutdown, Some(&farewell), None);
        }
    }

    /// Whether a shutdown is complete: every connection closed, or the
    /// shutdown timeout passed.
    fn shutdown_complete(&self) -> bool {
        match self.draining_until {
            None => false,
            Some(until) => {
                let done = self.slots.is_empty() || Instant::now() >= until;
                if done && !self.slots.is_empty() {
                    warn!(
                        connections = self.slots.len(),
                        "shutdown timeout reached: closing connections whose peers did not close"
                    );
                }
                done
            }
        }
    }
}

/// The earliest reconnect hint given at shutdown: a restart usually takes
/// about this long.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How widely the reconnect hints given at shutdown are spread, so that the
/// sessions do not all come back in the same instant: half a millisecond
/// per connection, between 1 s and 10 s (19,000 sessions: 9.5 s, about
/// 2,000 handshakes a second, which one loop serves with ease).
fn reconnect_spread(connections: usize) -> Duration {
    (Duration::from_micros(500) * u32::try_from(connections).unwrap_or(u32::MAX))
        .clamp(Duration::from_secs(1), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub_core::detector::CounterDetector;

    /// Every idle session costs its slot: a field added here is paid
    /// 19,000 times over (docs/ARCHITECTURE.md, "What an idle session costs").
    #[test]
    fn a_session_slot_stays_small() {
        let slot = std::mem::size_of::<Slot<<CounterDetector as Detector>::State>>();
        println!(
            "slot: {slot} bytes; session {}; conduct {}; connection {}; state {}",
            std::mem::size_of::<Session<<CounterDetector as Detector>::State>>(),
            std::mem::size_of::<Conduct>(),
            std::mem::size_of::<Connection>(),
            std::mem::size_of::<State<<CounterDetector as Detector>::State>>(),
        );
        // Exact, so that no growth goes unnoticed: 184 bytes in release,
        // 200 in debug builds, where mio's socket carries a debug-only
        // field (its selector id).
        let expected = if cfg!(debug_assertions) { 200 } else { 184 };
        assert_eq!(
            slot, expected,
            "the slot changed size: say so in docs/ARCHITECTURE.md"
        );
    }
}
