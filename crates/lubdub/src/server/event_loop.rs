//! The server's connection loop: one thread, one epoll, every session.
//!
//! Data flow: the listener and sockets wake `mio`; bytes are read into one
//! shared scratch buffer (`reading.rs`) and handed to each connection's
//! state machine (`lubdub_core::connection`), which decides everything
//! about its life and pushes outputs to one queue; `dispatch.rs` carries
//! them out in order (frames to send, presence events, registry and
//! credential requests, deadlines, closes). Every deadline sits in one
//! [`DeadlineWheel`] (`timers.rs`); the loop sleeps until its next
//! expiry, or at most [`WAIT_CAP`], and judges by a [`ListeningClock`]
//! that leaves out the time the loop itself could not run.
//!
//! Rooms: `accept.rs` (admission, backoff), `reading.rs` (fair reads),
//! `dispatch.rs` (the machines' outputs), `timers.rs` (deadlines and
//! paced farewells), `auth.rs` (credentials), `claims.rs` (the registry),
//! `relay.rs` (MSG fan-out), `outbound.rs` (queues, the cap, draining),
//! `listing.rs` (admin reads), `reload.rs`, `shutdown.rs`. Time is passed
//! down as a [`Now`], never left in a field.
//!
//! Hand-written instead of a tokio task per connection: a task cell and its
//! `ScheduledIo` registration are each cache-padded to 128 bytes and a task
//! future holding a read loop is several hundred more, which alone exceeds
//! the 0.5 KiB per idle session that lubdub targets. Here an idle session
//! costs its slab entry and its registry record, and a heartbeat costs one
//! read, one decode, one store of `last_seen` with an update of the gap
//! statistics, two pushes and pops of the output queue, one atomic counter
//! increment and one write: no lock, no allocation, no timer operation.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_core::connection::{self as machine, Now, Outputs, Rules};
use lubdub_core::detector::Detector;
use lubdub_core::stall::ListeningClock;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use slab::Slab;
use tracing::warn;

use super::admission::Admission;
use super::config::ServerConfig;
use super::connection::Connection;
use super::metrics::{ServerMetrics, StateCounts};
use super::outbox::{self as chunked, ChunkPool};
use super::presence::Presence;
use super::registry::{NodeId, Registry};
use super::snapshot::{SessionInfo, SessionPage};

// Accepting connections: admission, refusals, backoff on EMFILE.
mod accept;
// Credentials: HELLO → auth gate → claim or refuse (see auth.rs).
mod auth;
// Claims and releases of names in the registry; takeovers.
mod claims;
// Carrying out what the connection machines ask for.
mod dispatch;
// The admin API's reads, one bounded page per command.
mod listing;
// The outbound queues: the server-wide cap, shedding, the drain rule.
mod outbound;
// Reading sockets fairly: per-socket and per-turn budgets.
mod reading;
// MSG fan-out under budgets and fair delivery.
mod relay;
// A new configuration's live settings, between two turns.
mod reload;
// Graceful shutdown: farewells with reconnect hints, then stop.
mod shutdown;
// The deadline wheel and the paced farewells of verdicts.
mod timers;
pub use listing::MAX_SESSIONS_PER_PAGE;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
const EVENTS_CAPACITY: usize = 1024;
/// One read takes up to this much; a connection's partial frame is copied out
/// of it, so the scratch is shared by all connections.
const SCRATCH_LEN: usize = 64 * 1024;
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

/// A connection's place in the loop: its slab index and the generation of
/// the connection there, so that an output, a timer or a fan-out meant for
/// a closed connection is never applied to its slot's next occupant.
type ConnKey = (usize, u32);

#[derive(Debug)]
struct Slot<S> {
    conn: Connection,
    generation: u32,
    machine: machine::Connection<S>,
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
    /// Origin of the microsecond times the rate limits take.
    origin: Instant,
    /// Set while accepting fails (out of descriptors): when to try again.
    accept_backoff: Option<accept::AcceptBackoff>,
    /// Set when a shutdown began: the instant by which the loop stops,
    /// whatever is still open.
    draining_until: Option<Instant>,
    slots: Slab<Slot<D::State>>,
    timers: timers::Timers,
    /// The rules every connection machine of this loop is judged by.
    rules: Rules<D>,
    /// What the machines asked for, carried out in order (`dispatch.rs`).
    outputs: Outputs<ConnKey>,
    registry: Arc<dyn Registry>,
    config: ServerConfig,
    commands: mpsc::Receiver<Command>,
    node: NodeId,
    next_generation: u32,
    scratch: Vec<u8>,
    reads: reading::FairReads,
    /// The MSG being fanned out, copied out of its chunks (`relay.rs`).
    delivery_buf: Vec<u8>,
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
    fanouts: std::collections::VecDeque<relay::Fanout>,
    /// Deliveries waiting in `fanouts`.
    pending_deliveries: usize,
    /// Memory the fan-outs waiting in `fanouts` hold (their MSGs and lists
    /// of recipients), counted against the outbound cap with the queues.
    pending_bytes: usize,
    presence: Presence,
    metrics: ServerMetrics,
    clock: ListeningClock,
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
            origin,
            accept_backoff: None,
            draining_until: None,
            slots: Slab::new(),
            timers: timers::Timers::new(origin),
            rules: Rules::new(config.connection_config(), detector),
            outputs: Outputs::default(),
            registry,
            config,
            commands,
            node,
            // Random start: session ids rarely repeat across restarts, which
            // keeps logs of successive runs apart.
            next_generation: rand::random(),
            scratch: vec![0; SCRATCH_LEN],
            reads: reading::FairReads::new(origin),
            delivery_buf: Vec::new(),
            outbound_total: 0,
            outbound_cap,
            chunks: ChunkPool::new(chunked::FREE_CHUNKS_KEPT),
            loop_fanout: lubdub_core::budget::FanoutBudget::new(),
            last_shed: origin,
            fanouts: std::collections::VecDeque::new(),
            pending_deliveries: 0,
            pending_bytes: 0,
            presence,
            metrics,
            clock: ListeningClock::new(origin, process_cpu_time(), STALL_TOLERANCE),
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
            let timeout = self.wait_for(before);
            let stalled = self.clock.sleeping(before, process_cpu_time, timeout);
            self.stalled(before, stalled);
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                // After SIGSTOP and SIGCONT epoll_wait fails with EINTR; the
                // next `sleeping` report catches the stall.
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let now = self.now();
                self.begin_shutdown(now);
                return Err(error);
            }
            let woke = Instant::now();
            let wake = self.clock.woke(woke, process_cpu_time);
            self.stalled(woke, wake.stalled);
            // Every decision of this wake-up is made at this instant, except
            // what reads date by their own arrival (see `reading.rs`).
            let now = Now {
                listening: wake.listening,
                real_us: self.micros_since_origin(woke),
            };
            self.retry_accept(now);
            let ready = self.read_turn(now, &events);
            // Every output is carried out where it was pushed, so that no
            // admin read sees a machine's state ahead of the registry's.
            debug_assert!(self.outputs.is_empty(), "outputs left after the reads");
            if self.commands_waiting {
                self.handle_commands(now);
            }
            // Judge after every batch, so that a flood of readiness never
            // delays a verdict by more than one batch. Every socket this
            // poll reported was read; when the batch was full (or a socket
            // still holds unread bytes), others may hold unread frames, and
            // a session about to be declared dead is read first.
            let backlog = ready == EVENTS_CAPACITY || self.reads.has_backlog();
            // Judge with the instant taken right after the poll: a deadline
            // that passed while this batch was handled is judged after the
            // next poll, once the frames that arrived meanwhile are read.
            self.expire_timers(now, backlog);
            self.deliver_fanouts(now);
            self.write_farewells(now, timers::FAREWELLS_PER_TURN);
            self.carry_out(now);
            debug_assert!(self.outputs.is_empty(), "outputs left after the turn");
            if self.shutdown_complete() {
                return Ok(());
            }
        }
    }

    /// How long the next poll may wait from `before`.
    fn wait_for(&self, before: Instant) -> Option<Duration> {
        // With nothing scheduled there is no one to judge, and so no
        // stall to notice: sleep until something happens.
        let timeout = if self.timers.has_farewells()
            || self.reads.has_backlog()
            || !self.fanouts.is_empty()
            || self.commands_waiting
        {
            Some(Duration::ZERO)
        } else {
            self.timers.next_expiry().map(|at| {
                at.saturating_duration_since(self.clock.listening(before))
                    .min(WAIT_CAP)
            })
        };
        let wake_by = [
            self.draining_until,
            self.accept_backoff.as_ref().map(|backoff| backoff.retry_at),
        ];
        wake_by.into_iter().flatten().fold(timeout, |timeout, at| {
            let left = at.saturating_duration_since(before);
            Some(timeout.map_or(left, |timeout| timeout.min(left)))
        })
    }

    /// Now, read afresh: for work dated by its own instant (a read, an
    /// accept late in a busy turn, a verdict of a credential check).
    fn now(&self) -> Now {
        let real = Instant::now();
        Now {
            listening: self.clock.listening(real),
            real_us: self.micros_since_origin(real),
        }
    }

    /// The real instant of `now`.
    fn real_instant(&self, now: Now) -> Instant {
        self.origin + Duration::from_micros(now.real_us)
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
            humantime::format_duration(Duration::from_millis(stalled.as_millis() as u64))
        );
        self.rules
            .stalled(self.micros_since_origin(resumed), stalled);
    }

    fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether `key` still names the connection it was made for.
    fn is_current(&self, (index, generation): ConnKey) -> bool {
        self.slots
            .get(index)
            .is_some_and(|slot| slot.generation == generation)
    }

    /// Carries out waiting commands, at most [`listing::PAGES_PER_TURN`]
    /// pages of them: 20 admin pollers each waiting for a page must not
    /// make one turn build 20 pages while every session waits.
    fn handle_commands(&mut self, now: Now) {
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
                    let _ = reply.send(self.session_page(now, after, limit));
                }
                Command::SessionNamed { name, reply } => {
                    let _ = reply.send(self.session_named(now, &name));
                }
                Command::Counts { from, reply } => {
                    let _ = reply.send(self.count_page(now, from));
                }
                Command::Shutdown => self.begin_shutdown(now),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub_core::detector::CounterDetector;

    /// Every idle session costs its slot: a field added here is paid
    /// 19,000 times over (docs/ARCHITECTURE.md, "What an idle session costs").
    #[test]
    fn a_session_slot_stays_small() {
        type State = <CounterDetector as Detector>::State;
        let slot = std::mem::size_of::<Slot<State>>();
        println!(
            "slot: {slot} bytes; machine {}; session {}; connection {}",
            std::mem::size_of::<machine::Connection<State>>(),
            std::mem::size_of::<machine::Session<State>>(),
            std::mem::size_of::<Connection>(),
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
