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
//! Rooms: `adopt.rs` (a connection the acceptor admitted), `reading.rs`
//! (fair reads),
//! `dispatch.rs` (the machines' outputs), `timers.rs` (deadlines and
//! paced farewells), `auth.rs` (credentials), `claims.rs` (the registry),
//! `relay.rs` (MSG fan-out), `outbound.rs` (queues, the cap, draining),
//! `listing.rs` (admin reads), `reload.rs`, `shutdown.rs`, `siblings.rs`
//! (the other loops of the process). Time is passed down as a [`Now`],
//! never left in a field.
//!
//! A process runs `--threads` loops; the acceptor (`super::acceptor`)
//! hands each a share of the connections. A session id names its loop, so
//! a takeover, a direct message or a listing of another loop's session is
//! a command to that loop; nothing of a session is shared between threads.
//!
//! Hand-written instead of a tokio task per connection: a task cell and its
//! `ScheduledIo` registration are each cache-padded to 128 bytes and a task
//! future holding a read loop is several hundred more, which alone exceeds
//! the 0.5 KiB per idle session that lubdub targets. Here an idle session
//! costs its slab entry and its registry record, and a heartbeat costs one
//! read, one decode, one store of `last_seen` with an update of the gap
//! statistics, two pushes and pops of the output queue, one atomic counter
//! increment and one write: no lock, no allocation, no timer operation.
//!
//! Size: the loop's state and its turn (poll, stall detection, the order
//! of reads, commands, verdicts and writes), about 490 lines; every job of
//! a turn is in a room of its own, the loop's instants in `clock.rs`.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_core::connection::{self as machine, Now, Outputs, Rules};
use lubdub_core::detector::Detector;
use lubdub_core::stall::ListeningClock;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::acceptor::SharedAdmission;
use super::config::ServerConfig;
use super::connection::Connection;
use super::metrics::ServerMetrics;
use super::outbox::{self as chunked, ChunkPool};
use super::presence::Presence;
use super::registry::{NodeId, Registry};

// Taking on a connection the acceptor admitted.
mod adopt;
// What other threads ask of a loop, carried out between turns.
mod commands;
pub(crate) use commands::{Command, LoopHandle};
// Credentials: HELLO → auth gate → claim or refuse (see auth.rs).
mod auth;
// The fan-out budgets and the outbound cap, before a MSG is relayed.
mod budgets;
// Claims and releases of names in the registry; takeovers.
mod claims;
// The loop's instants: `now`, stalls, microseconds since its origin.
mod clock;
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
// Rooms: JOIN, LEAVE, memberships ending with sessions, room MSGs.
mod rooms;
// Watches: snapshots, then the hub's events passed on as PRESENCE.
mod watches;
// This loop's sessions by name (direct messages without a lock).
mod names;
// Graceful shutdown: farewells with reconnect hints, then stop.
mod shutdown;
// The other loops of the process: takeovers, messages, CPU time.
mod siblings;
// The deadline wheel and the paced farewells of verdicts.
mod timers;
// Last wills: kept per session, sent (or not) when it ends, delayed.
mod wills;
pub use listing::MAX_SESSIONS_PER_PAGE;

pub(crate) const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// Slots one loop may hold: a session id keeps the slab index in 24 bits
/// (16.7 million connections per loop, far beyond any descriptor limit).
const MAX_SLOTS: usize = 1 << 24;
/// Loops one process may run: a session id keeps the loop in 8 bits.
pub(crate) const MAX_LOOPS: usize = 256;
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

/// Where a loop stands among the process's loops.
pub(crate) struct LoopPlace {
    pub(crate) loop_index: usize,
    pub(crate) siblings: Arc<[LoopHandle]>,
    pub(crate) cpu: Arc<[AtomicU64]>,
    pub(crate) admission: Arc<SharedAdmission>,
    /// Bytes every loop holds on the way out, against the process's cap.
    pub(crate) held_everywhere: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) origin: Instant,
    /// Wills waiting for their delay, for every loop.
    pub(crate) will_board: Arc<super::wills::WillBoard>,
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

/// Session ids encode where the session lives: generation in the high
/// half, then the loop in 8 bits and the slab index in 24, so a takeover
/// or a message finds the loop and the connection without a second map.
fn session_id(loop_index: usize, index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | ((loop_index as u64 & 0xff) << 24) | (index as u64 & 0xff_ffff)
}

/// The loop, slab index and generation a session id names.
pub(crate) fn split_session_id(session_id: u64) -> (usize, usize, u32) {
    (
        ((session_id >> 24) & 0xff) as usize,
        (session_id & 0xff_ffff) as usize,
        (session_id >> 32) as u32,
    )
}

pub(crate) struct EventLoop<D: Detector> {
    poll: Poll,
    /// Which of the process's loops this is (in every session id).
    loop_index: usize,
    /// Every loop of the process, this one included, by index.
    siblings: Arc<[LoopHandle]>,
    /// Each loop's CPU time, for telling this loop's stalls from the work
    /// of other loops (see `siblings.rs`).
    cpu: Arc<[AtomicU64]>,
    /// The process-wide admission limits: told when a connection closes.
    admission: Arc<SharedAdmission>,
    /// Origin of the microsecond times the rate limits take.
    origin: Instant,
    /// Set when a shutdown began: the instant by which the loop stops,
    /// whatever is still open.
    draining_until: Option<Instant>,
    slots: Slab<Slot<D::State>>,
    timers: timers::Timers,
    /// The rules every connection machine of this loop is judged by.
    rules: Rules<D>,
    /// What the machines asked for, carried out in order (`dispatch.rs`).
    outputs: Outputs<ConnKey>,
    /// This loop's established sessions by name (`names.rs`).
    names: names::LocalNames,
    /// The statuses of this loop's sessions that set one, by slot index:
    /// kept beside the slots, so that a session without a status costs
    /// nothing for it.
    statuses: hashbrown::HashMap<usize, Box<str>>,
    /// The last wills of this loop's sessions that set one, by slot index
    /// (`wills.rs`), and those of ended sessions waiting for their delay.
    wills: hashbrown::HashMap<usize, lubdub_core::protocol::Will>,
    will_deadlines: std::collections::BinaryHeap<wills::WillDeadline>,
    will_board: Arc<super::wills::WillBoard>,
    /// What the tokens of this loop's sessions grant beyond their names
    /// (rooms to join, targets to watch), by slot index with the
    /// connection's generation; only for tokens that grant something.
    grants: hashbrown::HashMap<usize, (u32, Arc<crate::auth::grants::Grants>)>,
    /// This loop's sessions' rooms (`rooms.rs`).
    rooms: rooms::LocalRooms,
    /// This loop's sessions' watches (`watches.rs`).
    watches: watches::LocalWatches,
    registry: Arc<dyn Registry>,
    /// The ending session whose release found its name held by a newer
    /// claim: its end is reported as a takeover (`claims.rs`).
    superseded: Option<ConnKey>,
    config: ServerConfig,
    commands: mpsc::Receiver<Command>,
    node: NodeId,
    next_generation: u32,
    scratch: Vec<u8>,
    reads: reading::FairReads,
    /// The MSG being fanned out, copied out of its chunks (`relay.rs`).
    delivery_buf: Vec<u8>,
    /// Bytes queued for sending over this loop's connections.
    outbound_total: usize,
    /// What every loop of the process holds on the way out (queues,
    /// waiting fan-outs, MSGs handed from one loop to another), against
    /// `outbound_cap` (see `outbound.rs`).
    held_everywhere: Arc<std::sync::atomic::AtomicUsize>,
    /// 7/8 of `--max-outbound-total` (`ServerConfig::outbound_queue_cap`),
    /// for the whole process.
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
        place: LoopPlace,
        detector: D,
        registry: Arc<dyn Registry>,
        config: ServerConfig,
        commands: mpsc::Receiver<Command>,
        node: NodeId,
        presence: Presence,
        metrics: ServerMetrics,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let LoopPlace {
            loop_index,
            siblings,
            cpu,
            admission,
            held_everywhere,
            origin,
            will_board,
        } = place;
        let outbound_cap = config.outbound_queue_cap();
        let cpu_for_clock = Arc::clone(&cpu);
        let siblings_count = siblings.len().max(1);
        Self {
            poll,
            loop_index,
            siblings,
            cpu,
            admission,
            origin,
            draining_until: None,
            slots: Slab::new(),
            timers: timers::Timers::new(origin),
            rules: Rules::new(config.connection_config(), detector),
            outputs: Outputs::default(),
            names: names::LocalNames::default(),
            statuses: hashbrown::HashMap::new(),
            wills: hashbrown::HashMap::new(),
            will_deadlines: std::collections::BinaryHeap::new(),
            will_board,
            grants: hashbrown::HashMap::new(),
            rooms: rooms::LocalRooms::default(),
            watches: watches::LocalWatches::default(),
            registry,
            superseded: None,
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
            held_everywhere,
            outbound_cap,
            // The free chunks kept are shared out over the loops, so that
            // more loops keep no more memory idle.
            chunks: ChunkPool::new(chunked::FREE_CHUNKS_KEPT / siblings_count),
            loop_fanout: lubdub_core::budget::FanoutBudget::new(),
            last_shed: origin,
            fanouts: std::collections::VecDeque::new(),
            pending_deliveries: 0,
            pending_bytes: 0,
            presence,
            metrics,
            clock: ListeningClock::new(
                origin,
                siblings::cpu_explaining_stalls(&cpu_for_clock, loop_index),
                STALL_TOLERANCE,
            ),
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
            let cpu = self.cpu_explaining_stalls();
            let stalled = self.clock.sleeping(before, &cpu, timeout);
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
            let wake = self.clock.woke(woke, &cpu);
            self.publish_cpu();
            self.stalled(woke, wake.stalled);
            // Every decision of this wake-up is made at this instant, except
            // what reads date by their own arrival (see `reading.rs`).
            let now = Now {
                listening: wake.listening,
                real_us: self.micros_since_origin(woke),
            };
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
            self.send_due_wills(now);
            self.deliver_fanouts(now);
            self.pass_on_presence(now);
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
            || self.watches.behind
            || self.commands_waiting
        {
            Some(Duration::ZERO)
        } else {
            let next = match (self.timers.next_expiry(), self.next_will_due()) {
                (Some(timer), Some(will)) => Some(timer.min(will)),
                (timer, will) => timer.or(will),
            };
            next.map(|at| {
                at.saturating_duration_since(self.clock.listening(before))
                    .min(WAIT_CAP)
            })
        };
        match self.draining_until {
            Some(until) => {
                let left = until.saturating_duration_since(before);
                Some(timeout.map_or(left, |timeout| timeout.min(left)))
            }
            None => timeout,
        }
    }

    /// Hands an input to the machine of connection `key`, if it is still
    /// there, lending it the loop's rules and the queue its outputs go to.
    fn tell_machine(
        &mut self,
        key: ConnKey,
        input: impl FnOnce(
            &mut machine::Connection<D::State>,
            &Rules<D>,
            &mut machine::Tagged<'_, ConnKey>,
        ),
    ) {
        let Self {
            slots,
            rules,
            outputs,
            ..
        } = self;
        if let Some(slot) = slots.get_mut(key.0).filter(|slot| slot.generation == key.1) {
            input(&mut slot.machine, rules, &mut outputs.to(key));
        }
    }

    /// Whether `key` still names the connection it was made for.
    fn is_current(&self, (index, generation): ConnKey) -> bool {
        self.slots
            .get(index)
            .is_some_and(|slot| slot.generation == generation)
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
