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
//! The queues themselves (their accounting, the cap's shedding, the drain
//! rule) are `outbound.rs`.

use std::time::Duration;

use lubdub_core::connection::{MessageRefusal, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec;
use lubdub_core::protocol::{Frame, Message, ReasonCode};

use super::super::outbox::Outbox;
use super::{ConnKey, EventLoop};

/// Deliveries written per turn of the loop: a broadcast to 1,000 sessions
/// written in one turn held every PONG behind it (10–16 ms p99 in release
/// builds, issue 12's attack 1); in slices of 256 a PONG waits for one.
const DELIVERIES_PER_TURN: usize = 256;
/// Deliveries that may wait in the fan-out queue; beyond, MSGs are refused
/// as for the loop's budget (which normally keeps it far lower).
const MAX_PENDING_DELIVERIES: usize = 200_000;

/// A MSG accepted for fan-out, written a slice per turn.
pub(super) struct Fanout {
    /// The sender's slot and generation, told at the end.
    sender: (usize, u32),
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
    delivered: u64,
    busy: u64,
}

impl Fanout {
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
                let Self {
                    slots,
                    rules,
                    outputs,
                    ..
                } = self;
                if let Some(slot) = slots.get_mut(index) {
                    slot.machine.refuse(
                        now,
                        ReasonCode::MalformedFrame,
                        error.to_string(),
                        rules,
                        &mut outputs.to(key),
                    );
                }
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
        let generation_of = |slots: &slab::Slab<super::Slot<D::State>>, index: usize| {
            slots.get(index).map_or(0, |slot| slot.generation)
        };
        let recipients: Vec<(usize, u32)> = if broadcast {
            self.slots
                .iter()
                .filter(|(other, slot)| *other != index && slot.machine.session().is_some())
                .map(|(other, slot)| (other, slot.generation))
                .collect()
        } else {
            match self.local_session(&outbound.to) {
                Some(recipient) => vec![(recipient, generation_of(&self.slots, recipient))],
                None => {
                    let text = format!("no session named {}", outbound.to);
                    return self.notify(now, key, ReasonCode::NoSuchSession, text);
                }
            }
        };
        if recipients.is_empty() {
            return;
        }
        let deliveries = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        self.charge_fanout(now, index, deliveries, encoded.len());
        self.pending_deliveries += recipients.len();
        let mut chunked = Outbox::default();
        chunked.push(&encoded, &mut self.chunks);
        let fanout = Fanout {
            sender: key,
            at_us: now.real_us,
            encoded: chunked,
            recipients,
            next: 0,
            direct_to: (!broadcast).then_some(outbound.to),
            delivered: 0,
            busy: 0,
        };
        self.pending_bytes += fanout.held_bytes();
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
            self.pending_bytes -= fanout.held_bytes();
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
        let key = fanout.sender;
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
            Some(to) => format!(
                "message not delivered: {to} is sent more than it reads (its queue is \
                 full); retry later"
            ),
        };
        self.notify(now, key, ReasonCode::RecipientBusy, text);
    }

    /// Whether the sender's and the loop's fan-out budgets and the
    /// server-wide outbound cap let a fan-out start now. The budgets allow
    /// a start by the debt alone, whatever its size (see
    /// `lubdub_core::budget`), so this is decided before the recipients
    /// are counted.
    fn check_fanout(&mut self, now: Now, index: usize) -> Result<(), FanoutRefusal> {
        let now_us = now.real_us;
        let sender_limits = self.config.sender_fanout_limits();
        let loop_limits = self.config.loop_fanout_limits();
        let Some(session) = self
            .slots
            .get(index)
            .and_then(|slot| slot.machine.session())
        else {
            return Err(FanoutRefusal::Gone);
        };
        if let Err(wait) = session.fanout().check(now_us, &sender_limits) {
            return Err(FanoutRefusal::Sender { wait });
        }
        if let Err(wait) = self.loop_fanout.check(now_us, &loop_limits) {
            return Err(FanoutRefusal::Loop { wait });
        }
        if self.pending_deliveries >= MAX_PENDING_DELIVERIES {
            return Err(FanoutRefusal::Loop {
                wait: Duration::from_millis(100),
            });
        }
        if self.outbound_held() >= self.outbound_cap {
            self.shed(now);
            if self.outbound_held() >= self.outbound_cap {
                return Err(FanoutRefusal::Memory);
            }
        }
        Ok(())
    }

    /// Charges a fan-out of `deliveries` writes of `len` bytes to the
    /// sender's and the loop's budgets.
    fn charge_fanout(&mut self, now: Now, index: usize, deliveries: u32, len: usize) {
        let now_us = now.real_us;
        let sender_limits = self.config.sender_fanout_limits();
        let loop_limits = self.config.loop_fanout_limits();
        self.loop_fanout
            .charge(now_us, deliveries, len, &loop_limits);
        if let Some(session) = self
            .slots
            .get_mut(index)
            .and_then(|slot| slot.machine.session_mut())
        {
            session
                .fanout_mut()
                .charge(now_us, deliveries, len, &sender_limits);
        }
    }

    /// Tells the sender its MSG was not delivered; a strike when its own
    /// budget refused it.
    fn refuse_fanout(&mut self, now: Now, key: ConnKey, refusal: FanoutRefusal) {
        let (budget, code, text) = match refusal {
            FanoutRefusal::Gone => return,
            FanoutRefusal::Sender { wait } => (
                "sender",
                ReasonCode::RateLimited,
                format!(
                    "message not delivered: this session may cause at most {} deliveries \
                     and {} bytes a second (a broadcast is one delivery per recipient); \
                     send again in {}",
                    self.config.max_deliveries_per_sec,
                    self.config.max_fanout_bytes_per_sec,
                    humantime::format_duration(round_up_ms(wait))
                ),
            ),
            FanoutRefusal::Loop { wait } => (
                "loop",
                ReasonCode::ServerBusy,
                format!(
                    "message not delivered: the server is relaying as many messages as \
                     it allows for all sessions together; send again in {}",
                    humantime::format_duration(round_up_ms(wait))
                ),
            ),
            FanoutRefusal::Memory => (
                "memory",
                ReasonCode::ServerBusy,
                "message not delivered: the server holds as many unsent bytes as it \
                 allows; send again later"
                    .to_owned(),
            ),
        };
        self.metrics.fanout_refused(budget);
        let refusal = MessageRefusal {
            code,
            text,
            strike: budget == "sender",
        };
        let Self {
            slots,
            rules,
            outputs,
            ..
        } = self;
        if let Some(slot) = slots.get_mut(key.0) {
            slot.machine
                .handle_message_refused(now, refusal, rules, &mut outputs.to(key));
        }
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

/// Why a fan-out was not made.
enum FanoutRefusal {
    /// The sender closed meanwhile.
    Gone,
    /// The sender's own budget is spent for `wait`.
    Sender { wait: Duration },
    /// The loop's budget (all senders) is spent for `wait`.
    Loop { wait: Duration },
    /// The server-wide outbound cap is reached.
    Memory,
}

/// A wait rounded up to whole milliseconds, for messages people read.
fn round_up_ms(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}
