//! MSG fan-out: what one sender may make the loop write, and to whom.
//!
//! Data flow: a MSG admitted by the session's `Conduct` (its frame rate)
//! → the sender's and the loop's fan-out budgets (deliveries and bytes,
//! `lubdub_core::budget`) → the server-wide outbound cap → one delivery per
//! recipient, each refused when the recipient's queue already holds its
//! share of messages. Refusals go back to the sender as NOTICEs; those for
//! its own budget count as strikes (`Conduct::refuse_message`). The
//! receiver is never punished for what others send it. Accepted fan-outs
//! wait in one FIFO and are written a slice per turn.
//!
//! The budgets are `budgets.rs`; the queues themselves (their accounting,
//! the cap's shedding, the drain rule) are `outbound.rs`.
//!
//! Size: one job (where a MSG goes: this loop's sessions, another loop's,
//! everyone) and its delivery a slice per turn; about 430 lines.

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec;
use lubdub_core::protocol::rooms::is_room;
use lubdub_core::protocol::{Frame, Message, ReasonCode};

use std::sync::Arc;

use super::super::outbox::Outbox;
use super::{Command, ConnKey, EventLoop};

/// Deliveries written per turn of the loop: a broadcast to 1,000 sessions
/// written in one turn held every PONG behind it (10–16 ms p99 in release
/// builds, issue 12's attack 1); in slices of 256 a PONG waits for one.
const DELIVERIES_PER_TURN: usize = 256;
/// Deliveries that may wait in the fan-out queue; beyond, MSGs are refused
/// as for the loop's budget (which normally keeps it far lower).
pub(super) const MAX_PENDING_DELIVERIES: usize = 200_000;

/// A MSG accepted for fan-out, written a slice per turn.
pub(super) struct Fanout {
    /// The sender's slot and generation, told at the end; `None` for a
    /// MSG from another loop's session (its own loop answers it).
    sender: Option<ConnKey>,
    /// When the MSG was read, µs, for the sender's `Conduct`.
    at_us: u64,
    /// The encoded MSG, in chunks from the loop's pool like the queues it
    /// is copied into: MSGs and queue chunks of different sizes, freed in
    /// turn, fragmented the heap (resident memory 9 MB over the cap when
    /// the waiting MSGs were `Vec`s, in one run of attack 3b in four).
    encoded: Outbox,
    /// Slot and generation of each recipient, as when the MSG was read.
    recipients: Vec<(usize, u32)>,
    /// The next recipient to write to.
    next: usize,
    /// The recipient of a direct MSG, for the notice.
    direct_to: Option<String>,
    /// For a direct MSG from another loop's session: its session id, told
    /// (through its loop) when the recipient's queue was full.
    remote_sender: Option<u64>,
    delivered: u64,
    busy: u64,
}

impl Fanout {
    /// Gives its MSG's chunks back to the pool (a fan-out dropped unsent).
    pub(super) fn release(mut self, pool: &mut super::super::outbox::ChunkPool) {
        self.encoded.release(pool);
    }

    /// Memory the fan-out holds while it waits: its MSG and its list of
    /// recipients (16 bytes each: 3 MiB at the most deliveries that may wait).
    fn held_bytes(&self) -> usize {
        self.encoded.held_bytes() + self.recipients.capacity() * std::mem::size_of::<(usize, u32)>()
    }
}

/// What became of one delivery.
enum Delivery {
    /// Written or queued.
    Delivered,
    /// Not queued: the recipient's queue holds its share of messages.
    Busy,
    /// Not queued: the server-wide outbound cap is reached.
    OverCap,
    /// The recipient is gone (closed now, as a slow consumer or on a
    /// socket error).
    Gone,
}

impl<D: Detector> EventLoop<D> {
    /// Bytes of messages from others a recipient's queue may hold: half of
    /// `--max-outbound`, so that the other half is always free for its
    /// PONGs, NOTICEs and farewell, and a flood aimed at it fills neither.
    pub(super) fn message_share(&self) -> usize {
        self.config.max_outbound_bytes / 2
    }

    /// Relays a MSG (its sender's name set by the machine) from the
    /// session `key`.
    pub(super) fn relay(&mut self, now: Now, key: ConnKey, outbound: Message) {
        let index = key.0;
        let outbound = Frame::Msg(outbound);
        let encoded = match codec::encode_to_vec(&outbound) {
            Ok(encoded) => encoded,
            Err(error) => {
                self.tell_machine(key, |machine, rules, out| {
                    machine.refuse(
                        now,
                        ReasonCode::MalformedFrame,
                        error.to_string(),
                        rules,
                        out,
                    )
                });
                return;
            }
        };
        let Frame::Msg(outbound) = outbound else {
            unreachable!("built as a MSG above");
        };
        let broadcast = outbound.to.is_empty();
        // The budgets are checked before the recipients are looked for: a
        // refused broadcast must not cost a walk over every session.
        if let Err(refusal) = self.check_fanout(now, index) {
            return self.refuse_fanout(now, key, refusal);
        }
        let (recipients, elsewhere) = if is_room(&outbound.to) {
            match self.room_recipients(key, &outbound.to) {
                Ok((here, 0)) => (here, None),
                Ok((here, elsewhere)) => (here, Some(Elsewhere::Room(elsewhere))),
                Err(reason) => return self.notify(now, key, reason.code, reason.text),
            }
        } else if broadcast {
            let here: Vec<ConnKey> = self
                .slots
                .iter()
                .filter(|(other, slot)| *other != index && slot.machine.session().is_some())
                .map(|(other, slot)| (other, slot.generation))
                .collect();
            let elsewhere = (self.siblings.len() > 1).then_some(Elsewhere::EveryOtherLoop);
            (here, elsewhere)
        } else {
            match self.find_recipient(&outbound.to) {
                Recipient::Here(recipient) => (vec![recipient], None),
                Recipient::OtherLoop(loop_index, session_id) => {
                    (Vec::new(), Some(Elsewhere::Session(loop_index, session_id)))
                }
                Recipient::Nowhere => {
                    let text = format!("no session named {}", outbound.to);
                    return self.notify(now, key, ReasonCode::NoSuchSession, text);
                }
            }
        };
        let remote = match elsewhere {
            None => 0,
            Some(Elsewhere::Session(..)) => 1,
            Some(Elsewhere::EveryOtherLoop) => self.sessions_elsewhere(recipients.len() + 1),
            Some(Elsewhere::Room(members)) => members,
        };
        if recipients.is_empty() && remote == 0 {
            return;
        }
        let deliveries = u32::try_from(recipients.len() + remote).unwrap_or(u32::MAX);
        self.charge_fanout(now, index, deliveries, encoded.len());
        match elsewhere {
            None => {}
            Some(Elsewhere::Session(loop_index, session_id)) => {
                let encoded = Arc::from(encoded.as_slice());
                let from = super::session_id(self.loop_index, key.0, key.1);
                self.hand_over(
                    loop_index,
                    Command::Deliver {
                        session_id,
                        from,
                        to: outbound.to.clone(),
                        encoded,
                    },
                );
            }
            Some(Elsewhere::EveryOtherLoop) => {
                let shared: Arc<[u8]> = Arc::from(encoded.as_slice());
                for loop_index in 0..self.siblings.len() {
                    if loop_index != self.loop_index {
                        let encoded = Arc::clone(&shared);
                        self.hand_over(loop_index, Command::Broadcast { encoded });
                    }
                }
            }
            Some(Elsewhere::Room(_)) => self.room_to_other_loops(&outbound.to, &encoded),
        }
        if recipients.is_empty() {
            // Handed to another loop, which tells nothing back: as far as
            // this sender's rates go, it was delivered.
            if let Some(slot) = self.slots.get_mut(index) {
                slot.machine.message_delivered(now.real_us);
            }
            return;
        }
        let direct_to = (!broadcast && !is_room(&outbound.to)).then_some(outbound.to);
        self.queue_fanout(now, Some(key), &encoded, recipients, direct_to, None);
    }

    /// The session named `name`: on this loop (its index of names, no
    /// lock), on another loop of this process (the registry), or nowhere.
    pub(super) fn find_recipient(&self, name: &str) -> Recipient {
        if let Some(index) = self.local_session(name) {
            let generation = self.slots.get(index).map_or(0, |slot| slot.generation);
            return Recipient::Here((index, generation));
        }
        if self.siblings.len() == 1 {
            return Recipient::Nowhere;
        }
        match self.registry.lookup(name) {
            Ok(Some(record)) if record.node == self.node => {
                let loop_index = self.loop_of(record.session_id);
                if loop_index == self.loop_index {
                    Recipient::Nowhere
                } else {
                    Recipient::OtherLoop(loop_index, record.session_id)
                }
            }
            _ => Recipient::Nowhere,
        }
    }

    /// How many sessions the other loops hold, for charging a broadcast:
    /// every name registered less the `here` sessions of this loop (one
    /// look at the registry per broadcast, not per recipient).
    fn sessions_elsewhere(&self, here: usize) -> usize {
        let established_here = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.machine.session().is_some())
            .count()
            .max(here);
        self.registry
            .count()
            .map_or(0, |names| names.saturating_sub(established_here))
    }

    /// Queues a fan-out of `encoded` to `recipients`, written a slice per
    /// turn (see [`deliver_fanouts`](Self::deliver_fanouts)).
    pub(super) fn queue_fanout(
        &mut self,
        now: Now,
        sender: Option<ConnKey>,
        encoded: &[u8],
        recipients: Vec<ConnKey>,
        direct_to: Option<String>,
        remote_sender: Option<u64>,
    ) {
        if recipients.is_empty() {
            return;
        }
        self.pending_deliveries += recipients.len();
        let mut chunked = Outbox::default();
        chunked.push(encoded, &mut self.chunks);
        let fanout = Fanout {
            sender,
            at_us: now.real_us,
            encoded: chunked,
            recipients,
            next: 0,
            direct_to,
            remote_sender,
            delivered: 0,
            busy: 0,
        };
        self.set_pending_bytes(self.pending_bytes + fanout.held_bytes());
        self.fanouts.push_back(fanout);
    }

    /// Writes queued fan-outs, oldest first, at most [`DELIVERIES_PER_TURN`]
    /// deliveries this turn: a broadcast to thousands of sessions is written
    /// over several turns, between which the loop reads, judges and
    /// answers PINGs. One FIFO for every sender keeps each sender's
    /// messages in order for each recipient.
    pub(super) fn deliver_fanouts(&mut self, now: Now) {
        let mut left = DELIVERIES_PER_TURN;
        while left > 0 {
            let Some(mut fanout) = self.fanouts.pop_front() else {
                return;
            };
            // Copied out of its chunks once per turn, not per delivery.
            let mut encoded = std::mem::take(&mut self.delivery_buf);
            fanout.encoded.copy_to(&mut encoded);
            let mut over_cap = 0u64;
            while left > 0 && fanout.next < fanout.recipients.len() {
                let (recipient, generation) = fanout.recipients[fanout.next];
                fanout.next += 1;
                left -= 1;
                self.pending_deliveries -= 1;
                let current = self.slots.get(recipient).is_some_and(|slot| {
                    slot.generation == generation && slot.machine.session().is_some()
                });
                if !current {
                    continue;
                }
                match self.deliver(now, (recipient, generation), &encoded) {
                    Delivery::Delivered => fanout.delivered += 1,
                    Delivery::Busy => fanout.busy += 1,
                    Delivery::OverCap => over_cap += 1,
                    Delivery::Gone => {}
                }
            }
            self.delivery_buf = encoded;
            if over_cap > 0 {
                self.metrics.deliveries_skipped("memory", over_cap);
                fanout.busy += over_cap;
                self.shed(now);
            }
            // Recipients found slow or failed end now, before the next
            // fan-out looks at them.
            self.carry_out(now);
            if fanout.next < fanout.recipients.len() {
                self.fanouts.push_front(fanout);
                return;
            }
            self.set_pending_bytes(self.pending_bytes - fanout.held_bytes());
            fanout.encoded.release(&mut self.chunks);
            self.finish_fanout(now, fanout);
            self.carry_out(now);
        }
    }

    /// A fan-out is written: counted, and its sender told of recipients
    /// whose queues were full.
    fn finish_fanout(&mut self, now: Now, fanout: Fanout) {
        self.metrics.delivered(fanout.delivered);
        let busy = fanout.busy;
        if busy > 0 {
            self.metrics.deliveries_skipped("recipient_busy", busy);
        }
        let Some(key) = fanout.sender else {
            // From another loop's session: its loop tells it.
            if let (Some(from), Some(to), true) = (fanout.remote_sender, fanout.direct_to, busy > 0)
            {
                let command = Command::NotDelivered {
                    session_id: from,
                    to,
                };
                self.tell(self.loop_of(from), command);
            }
            return;
        };
        if !self.is_current(key) {
            return;
        }
        let Some(slot) = self.slots.get_mut(key.0) else {
            return;
        };
        if slot.machine.session().is_none() {
            return;
        }
        slot.machine.message_delivered(fanout.at_us);
        if busy == 0 {
            return;
        }
        let text = match fanout.direct_to {
            None => format!(
                "delivered to {} of {} sessions; {busy} of them are sent more than they \
                 read (or the server holds as many unsent bytes as it may) and did not get it",
                fanout.delivered,
                fanout.delivered + busy
            ),
            Some(to) => recipient_busy_text(&to),
        };
        self.notify(now, key, ReasonCode::RecipientBusy, text);
    }

    /// Writes or queues an encoded MSG for `recipient`, unless its queue
    /// already holds its share of messages or it stopped draining.
    fn deliver(&mut self, now: Now, key: ConnKey, encoded: &[u8]) -> Delivery {
        let clock = self.queue_clock(now);
        let share = self.message_share();
        let Some(slot) = self.slots.get(key.0) else {
            return Delivery::Gone;
        };
        if slot.conn.is_stuck(clock.now_ms) {
            self.slow_consumer(now, key);
            return Delivery::Gone;
        }
        let queued = slot.conn.queued_len();
        // An empty queue takes any message (the socket may take it whole):
        // a share smaller than the largest frame must not block them all.
        if queued > 0 && queued + encoded.len() > share {
            return Delivery::Busy;
        }
        // Checked per delivery, not only per fan-out, so that one broadcast
        // cannot carry the total past the cap by its whole size; and for an
        // empty queue too (the cap is at least one queue, so at least one
        // frame), else every idle session could take one frame beyond it.
        // The fan-outs waiting are held too: left out, they let resident
        // memory pass the cap by up to 26 MB (attack 3b).
        let growth = slot.conn.held_growth_for(encoded.len());
        if self.outbound_held() + growth > self.outbound_cap {
            return Delivery::OverCap;
        }
        if self.send(now, key, encoded) {
            Delivery::Delivered
        } else {
            Delivery::Gone
        }
    }

    /// Sends the session a NOTICE, unless its own queue already holds its
    /// share: a sender that does not read gets no pile of notices.
    pub(super) fn notify(&mut self, now: Now, key: ConnKey, code: ReasonCode, text: String) {
        let notice = lubdub_core::connection::Transmit::Notice(lubdub_core::protocol::Reason::new(
            code, text,
        ));
        self.transmit(now, key, notice);
    }
}

/// Where the recipient of a direct MSG is.
pub(super) enum Recipient {
    /// A session of this loop.
    Here(ConnKey),
    /// A session of another loop of this process: its loop and session id.
    OtherLoop(usize, u64),
    /// No session holds the name in this process.
    Nowhere,
}

/// The part of a fan-out other loops deliver.
enum Elsewhere {
    /// One session of another loop.
    Session(usize, u64),
    /// Every session of every other loop (a broadcast).
    EveryOtherLoop,
    /// The members of a room on other loops: this many.
    Room(usize),
}

/// NOTICE `recipient_busy` for a direct MSG that was not delivered.
pub(super) fn recipient_busy_text(to: &str) -> String {
    format!(
        "message not delivered: {to} is sent more than it reads (its queue is full); retry later"
    )
}
