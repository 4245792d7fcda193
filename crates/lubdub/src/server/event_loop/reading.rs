//! Reading sockets fairly, and handing what is read to the machines.
//!
//! A turn reads, in this order: sockets that got no read last turn, this
//! turn's readiness events, then sockets cut short last turn (floods),
//! within one budget of full reads ([`FULL_READS_PER_TURN`]) and time
//! ([`READ_SLICE`]); one socket gets at most [`MAX_FULL_READS_PER_TURN`].
//! Each read is dated by its own instant (a frame read late in a long
//! wake-up is not dated to its start, which would move its session's
//! deadline earlier than the truth) and handed to the connection's machine.

use std::time::{Duration, Instant};

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use lubdub_core::protocol::inbox::Fed;
use mio::event::Event;
use mio::Events;

use super::super::connection::{flag, ReadOutcome};
use super::{ConnKey, EventLoop, FIRST_CONNECTION, WAKER};

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

/// The reads owed from one turn to the next, and this turn's budget.
#[derive(Debug)]
pub(super) struct FairReads {
    /// Sockets whose reading was cut short by [`MAX_FULL_READS_PER_TURN`],
    /// each at most once (its connection's `flag::READ_PENDING`), read
    /// after the next turn's events. Listed twice, a socket got a share per
    /// entry, and a flooder gained an entry a turn.
    cut_short: Vec<ConnKey>,
    /// Sockets that had data but got no read at all because the turn's
    /// [`FULL_READS_PER_TURN`] were spent: read first next turn, before
    /// the sockets cut short, so that floods never starve a quiet peer.
    waiting: Vec<ConnKey>,
    /// The lists being worked through this turn (last turn's), kept to
    /// reuse their memory.
    waiting_now: Vec<ConnKey>,
    cut_short_now: Vec<ConnKey>,
    /// Full reads left in this turn, of [`FULL_READS_PER_TURN`].
    full_reads_left: u32,
    /// When this turn's [`READ_SLICE`] ends.
    slice_ends: Instant,
    /// This turn's number, wrapping: a socket's `read_turn` is compared
    /// with it (a wrapped stamp at worst defers one read by one turn).
    turn: u8,
}

impl FairReads {
    pub(super) fn new(origin: Instant) -> Self {
        Self {
            cut_short: Vec::new(),
            waiting: Vec::new(),
            waiting_now: Vec::new(),
            cut_short_now: Vec::new(),
            full_reads_left: FULL_READS_PER_TURN,
            slice_ends: origin,
            turn: 0,
        }
    }

    /// Whether sockets wait for a read owed from an earlier turn.
    pub(super) fn has_backlog(&self) -> bool {
        !self.cut_short.is_empty() || !self.waiting.is_empty()
    }

    /// A new turn that began at `real`: a fresh budget, and last turn's
    /// lists become this turn's work.
    fn begin(&mut self, real: Instant) {
        self.full_reads_left = FULL_READS_PER_TURN;
        self.turn = self.turn.wrapping_add(1);
        self.slice_ends = real + READ_SLICE;
        std::mem::swap(&mut self.waiting, &mut self.waiting_now);
        std::mem::swap(&mut self.cut_short, &mut self.cut_short_now);
    }
}

/// Which of last turn's lists a socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Waiting,
    CutShort,
}

impl<D: Detector> EventLoop<D> {
    /// One turn's reads: owed reads, then `events`, then floods. Returns
    /// how many events the poll reported.
    pub(super) fn read_turn(&mut self, now: Now, events: &Events) -> usize {
        self.reads.begin(self.real_instant(now));
        self.resume_reads(Owed::Waiting);
        let mut ready = 0;
        for event in events.iter() {
            ready += 1;
            match event.token() {
                WAKER => {
                    self.commands_waiting = true;
                    // The verifier threads wake the loop this way too.
                    self.finish_verifications();
                }
                token => self.connection_ready(now, token.0 - FIRST_CONNECTION, event),
            }
        }
        self.resume_reads(Owed::CutShort);
        ready
    }

    fn connection_ready(&mut self, now: Now, index: usize, event: &Event) {
        if event.is_writable() && !self.flush(now, index) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // When the peer's FIN came with the data, it raises no new edge:
            // read on to the end of the stream to see it.
            let until_eof = event.is_read_closed() || event.is_error();
            let Some(slot) = self.slots.get_mut(index) else {
                return;
            };
            if slot.conn.flags.get(flag::READ_PENDING) {
                // Listed to be read next turn already.
                if until_eof {
                    slot.conn.flags.set(flag::READ_TO_EOF, true);
                }
                return;
            }
            let read_this_turn = slot.conn.read_turn == self.reads.turn;
            if self.reads.full_reads_left == 0 || read_this_turn {
                self.defer_read(index, until_eof, Owed::Waiting);
                return;
            }
            self.read(index, until_eof);
        }
    }

    /// Lists a socket to be read next turn (once, however often this is
    /// called for it).
    fn defer_read(&mut self, index: usize, until_eof: bool, owed: Owed) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if until_eof {
            slot.conn.flags.set(flag::READ_TO_EOF, true);
        }
        if !slot.conn.flags.replace(flag::READ_PENDING, true) {
            let list = match owed {
                Owed::CutShort => &mut self.reads.cut_short,
                Owed::Waiting => &mut self.reads.waiting,
            };
            list.push((index, slot.generation));
        }
    }

    /// Reads the sockets listed last turn, while the turn's budget lasts;
    /// the rest stay listed, in order, in the list they came from.
    fn resume_reads(&mut self, owed: Owed) {
        let mut position = 0;
        while let Some(&(index, generation)) = match owed {
            Owed::Waiting => self.reads.waiting_now.get(position),
            Owed::CutShort => self.reads.cut_short_now.get(position),
        } {
            position += 1;
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.generation != generation || !slot.conn.flags.get(flag::READ_PENDING) {
                continue;
            }
            if self.reads.full_reads_left == 0 {
                let list = match owed {
                    Owed::CutShort => &mut self.reads.cut_short,
                    Owed::Waiting => &mut self.reads.waiting,
                };
                list.push((index, generation));
                continue;
            }
            slot.conn.flags.set(flag::READ_PENDING, false);
            let until_eof = slot.conn.flags.replace(flag::READ_TO_EOF, false);
            self.read(index, until_eof);
        }
        match owed {
            Owed::Waiting => self.reads.waiting_now.clear(),
            Owed::CutShort => self.reads.cut_short_now.clear(),
        }
    }

    /// Reads the socket at `index` (up to its share), handing each read
    /// to its machine and carrying out what the machine asks.
    pub(super) fn read(&mut self, index: usize, until_eof: bool) {
        let turn = self.reads.turn;
        let mut full_reads = 0;
        loop {
            let Some(slot) = self.slots.get_mut(index) else {
                return;
            };
            slot.conn.read_turn = turn;
            let generation = slot.generation;
            let before = slot.conn.held_bytes();
            // TLS reads may write (handshake records, alerts, queued data).
            let outcome = slot.conn.read_into(&mut self.scratch, &mut self.chunks);
            let after = slot.conn.held_bytes();
            self.account(before, after);
            let now = self.now();
            let key = (index, generation);
            match outcome {
                Ok(ReadOutcome::Data(n)) => {
                    if self.real_instant(now) >= self.reads.slice_ends {
                        self.reads.full_reads_left = 0;
                    }
                    let open = self.feed(now, key, n);
                    // A short read drained the socket; with edge-triggered
                    // readiness, later bytes raise a new event.
                    if !open || (n < self.scratch.len() && !until_eof) {
                        return;
                    }
                    full_reads += 1;
                    self.reads.full_reads_left = self.reads.full_reads_left.saturating_sub(1);
                    if full_reads >= MAX_FULL_READS_PER_TURN || self.reads.full_reads_left == 0 {
                        // A peer that sends as fast as we read would keep
                        // the loop here for ever; its socket is read again
                        // next turn (no new edge will announce it), after
                        // the verdicts.
                        self.defer_read(index, until_eof, Owed::CutShort);
                        return;
                    }
                }
                Ok(ReadOutcome::WouldBlock) => return,
                // Plain lubdub on a TLS server: answered in plain, then the
                // rest of its input is read and discarded like any farewell.
                Ok(ReadOutcome::TlsRequired) => {
                    self.tell_machine(key, |machine, rules, out| {
                        machine.handle_tls_required(now, rules, out)
                    });
                    self.carry_out(now);
                }
                Ok(ReadOutcome::Closed) => {
                    let truncated = self
                        .slots
                        .get(index)
                        .is_some_and(|slot| slot.conn.has_partial_frame());
                    self.tell_machine(key, |machine, rules, out| {
                        machine.handle_closed(now, truncated, rules, out);
                    });
                    self.carry_out(now);
                    return;
                }
                Err(error) => {
                    self.failed(now, key, &error);
                    self.carry_out(now);
                    return;
                }
            }
        }
    }

    /// Hands the `n` bytes just read into the scratch to the machine of
    /// `key`, then carries out its outputs. After a HELLO the machine
    /// pauses; what followed the HELLO is fed once its answer is carried
    /// out. Returns whether the connection is still open.
    fn feed(&mut self, now: Now, key: ConnKey, n: usize) -> bool {
        // The bytes after a HELLO are kept in the partial frame by the
        // machine, so later rounds have nothing fresh.
        let mut fresh_len = n;
        loop {
            let Self {
                slots,
                rules,
                outputs,
                scratch,
                ..
            } = self;
            let Some(slot) = slots.get_mut(key.0) else {
                return false;
            };
            let machine = &mut slot.machine;
            let fresh = &scratch[..fresh_len];
            let fed = slot.conn.with_inbox(|partial| {
                machine.handle_bytes(now, partial, fresh, rules, &mut outputs.to(key))
            });
            self.carry_out(now);
            match fed {
                Fed::Paused => fresh_len = 0,
                Fed::Waiting => return self.is_current(key),
                Fed::Stopped | Fed::Failed { .. } => return false,
            }
        }
    }
}
