//! Deadlines: one wheel for every connection's (the machines' handshake,
//! liveness and linger timers, and the loop's own credential-queue and
//! drain checkpoints), and the paced writing of verdicts' farewells.
//! A deadline of a connection that moved on is recognised by its
//! generation and skipped, so nothing is ever cancelled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lubdub_core::connection::{Now, Timer};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::Frame;
use lubdub_core::wheel::DeadlineWheel;

use super::{ConnKey, EventLoop};

/// BYEs to sessions declared dead written per turn of the loop. Each costs
/// a few microseconds of socket calls (on loopback the sender also runs the
/// receiver's side), so after 10,000 simultaneous verdicts the loop writes a
/// slice, then reads and judges again: no verdict and no heartbeat waits
/// more than about one slice (about 0.4 ms) behind other sessions' farewells.
pub(super) const FAREWELLS_PER_TURN: usize = 64;
/// Spacing of the instants at which suspicion checks (not verdicts) are
/// made: a session turns suspect up to this much after its first missed
/// interval, and the loop wakes for suspicion at most 32 times a second.
/// 32 ms divides the wheel's 4,096 slots, so the grid lines fall on the
/// same 128 slots every revolution; with 25 ms they wandered over all
/// 4,096 in turn, each allocating its vector: a megabyte of resident
/// memory grown over two minutes, whatever the number of sessions.
const SUSPICION_GRID: Duration = Duration::from_millis(32);

/// Which deadline a wheel entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    /// The HELLO must have arrived.
    Handshake,
    /// A HELLO's secret must have left the verification queue.
    Verification,
    Liveness,
    Linger,
    /// An outbound queue's drain checkpoint (see `outbound.rs`).
    Drain,
}

/// A wheel entry: the slab index plus the generation of the connection it was
/// scheduled for.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimerKey {
    index: u32,
    generation: u32,
    kind: TimerKind,
}

/// The loop's deadlines and its farewells waiting to be written.
#[derive(Debug)]
pub(super) struct Timers {
    wheel: DeadlineWheel<TimerKey>,
    /// Entries that came due, handed out one by one.
    due: Vec<TimerKey>,
    /// BYEs of sessions already declared dead, waiting to be written,
    /// oldest first; see [`FAREWELLS_PER_TURN`].
    farewells: VecDeque<(ConnKey, Frame)>,
}

impl Timers {
    pub(super) fn new(origin: Instant) -> Self {
        Self {
            wheel: DeadlineWheel::new(origin),
            due: Vec::new(),
            farewells: VecDeque::new(),
        }
    }

    /// Schedules `kind` for connection `key` at `at`, or on the suspicion
    /// grid up to `latest` when it may be late.
    pub(super) fn schedule(
        &mut self,
        (index, generation): ConnKey,
        kind: TimerKind,
        at: Instant,
        latest: Option<Instant>,
    ) {
        let key = TimerKey {
            index: index as u32,
            generation,
            kind,
        };
        match latest {
            Some(latest) => self.wheel.insert_coalesced(at, SUSPICION_GRID, latest, key),
            None => self.wheel.insert(at, key),
        }
    }

    /// The earliest instant a deadline may be due.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.wheel.next_expiry()
    }

    /// Whether farewells wait to be written.
    pub(super) fn has_farewells(&self) -> bool {
        !self.farewells.is_empty()
    }

    /// Queues a verdict's BYE to be written in its turn.
    pub(super) fn queue_farewell(&mut self, key: ConnKey, bye: Frame) {
        self.farewells.push_back((key, bye));
    }

    /// Every farewell waiting, oldest first (at shutdown).
    pub(super) fn take_farewell(&mut self) -> Option<(ConnKey, Frame)> {
        self.farewells.pop_front()
    }
}

impl<D: Detector> EventLoop<D> {
    /// Runs every deadline due at `now`. With a `backlog` (the last poll
    /// returned a full batch, or reads are owed), a session about to be
    /// declared dead is read first: its socket may hold proof of life.
    pub(super) fn expire_timers(&mut self, now: Now, backlog: bool) {
        self.timers
            .wheel
            .expire(now.listening, &mut self.timers.due);
        while let Some(due) = self.timers.due.pop() {
            let (key, kind) = ((due.index as usize, due.generation), due.kind);
            if !self.is_current(key) {
                continue;
            }
            let timer = match kind {
                TimerKind::Handshake => Timer::Handshake,
                TimerKind::Liveness => {
                    if self.drop_if_stuck(now, key) {
                        continue;
                    }
                    if backlog && self.would_die(now, key) {
                        self.read(key.0, false);
                        if !self.is_current(key) {
                            continue;
                        }
                    }
                    Timer::Liveness
                }
                TimerKind::Linger => Timer::Linger,
                TimerKind::Verification => {
                    self.verification_overdue(now, key);
                    continue;
                }
                TimerKind::Drain => {
                    self.check_drain(now, key);
                    continue;
                }
            };
            self.tell_machine(key, |machine, rules, out| {
                machine.handle_timeout(now, timer, rules, out)
            });
            self.carry_out(now);
        }
    }

    /// Whether the machine of `key` would declare its session dead now.
    fn would_die(&self, now: Now, key: ConnKey) -> bool {
        self.slots
            .get(key.0)
            .is_some_and(|slot| slot.machine.would_die(now, &self.rules))
    }

    /// Writes up to `limit` queued BYEs of sessions already declared dead.
    ///
    /// Verdicts are given (names released, `dropped` reported) as soon as
    /// they are due; their BYEs are queued and written a slice per turn, so
    /// that one session's verdict never waits behind thousands of others'
    /// socket calls.
    pub(super) fn write_farewells(&mut self, now: Now, limit: usize) {
        for _ in 0..limit {
            let Some((key, bye)) = self.timers.take_farewell() else {
                return;
            };
            self.bid_farewell(now, key, &bye);
        }
    }
}
