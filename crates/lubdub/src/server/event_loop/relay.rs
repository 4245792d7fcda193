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

use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec;
use lubdub_core::protocol::{Frame, Message, Reason, ReasonCode};
use lubdub_core::session::Inbound;

use super::super::outbox::Outbox;
use super::super::presence::DropReason;
use super::{EventLoop, State};

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
    fn message_share(&self) -> usize {
        self.config.max_outbound_bytes / 2
    }

    /// Relays a MSG from the session at `index`. Returns whether the
    /// sender's connection is still open.
    pub(super) fn relay(&mut self, index: usize, message: Message) -> bool {
        let max_body = codec::max_msg_body(self.config.max_frame_len);
        if message.body.len() > max_body {
            // Relayed, it would carry the sender's name and could exceed what
            // recipients accept; refuse it here so that no recipient is hurt.
            let text = format!(
                "message body of {} bytes exceeds the maximum of {max_body}; not delivered",
                message.body.len()
            );
            return self.notify(index, ReasonCode::FrameTooLarge, text);
        }
        let Some(State::Established(session)) = self.slots.get(index).map(|slot| &slot.state)
        else {
            return false;
        };
        let outbound = Frame::Msg(Message {
            from: session.name.to_string(),
            to: message.to,
            body: message.body,
        });
        let mut encoded = Vec::new();
        if let Err(error) = codec::encode(&outbound, &mut encoded) {
            self.refuse(index, ReasonCode::MalformedFrame, error.to_string());
            return false;
        }
        let Frame::Msg(outbound) = outbound else {
            unreachable!("built as a MSG above");
        };
        let broadcast = outbound.to.is_empty();
        // The budgets are checked before the recipients are looked for: a
        // refused broadcast must not cost a walk over every session.
        if let Err(refusal) = self.check_fanout(index) {
            return self.refuse_fanout(index, refusal);
        }
        let generation_of = |slots: &slab::Slab<super::Slot<D::State>>, index: usize| {
            slots.get(index).map_or(0, |slot| slot.generation)
        };
        let recipients: Vec<(usize, u32)> = if broadcast {
            self.slots
                .iter()
                .filter(|(other, slot)| {
                    *other != index && matches!(slot.state, State::Established(_))
                })
                .map(|(other, slot)| (other, slot.generation))
                .collect()
        } else {
            match self.local_session(&outbound.to) {
                Some(recipient) => vec![(recipient, generation_of(&self.slots, recipient))],
                None => {
                    let text = format!("no session named {}", outbound.to);
                    return self.notify(index, ReasonCode::NoSuchSession, text);
                }
            }
        };
        if recipients.is_empty() {
            return true;
        }
        let deliveries = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        self.charge_fanout(index, deliveries, encoded.len());
        self.pending_deliveries += recipients.len();
        let mut chunked = Outbox::default();
        chunked.push(&encoded, &mut self.chunks);
        let fanout = Fanout {
            sender: (index, generation_of(&self.slots, index)),
            at_us: self.arrival_us,
            encoded: chunked,
            recipients,
            next: 0,
            direct_to: (!broadcast).then_some(outbound.to),
            delivered: 0,
            busy: 0,
        };
        self.pending_bytes += fanout.held_bytes();
        self.fanouts.push_back(fanout);
        true
    }

    /// Writes queued fan-outs, oldest first, at most [`DELIVERIES_PER_TURN`]
    /// deliveries this turn: a broadcast to thousands of sessions is written
    /// over several turns, between which the loop reads, judges and
    /// answers PINGs. One FIFO for every sender keeps each sender's
    /// messages in order for each recipient.
    pub(super) fn deliver_fanouts(&mut self) {
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
                    slot.generation == generation && matches!(slot.state, State::Established(_))
                });
                if !current {
                    continue;
                }
                match self.deliver(recipient, &encoded) {
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
                self.shed();
            }
            if fanout.next < fanout.recipients.len() {
                self.fanouts.push_front(fanout);
                return;
            }
            self.pending_bytes -= fanout.held_bytes();
            fanout.encoded.release(&mut self.chunks);
            self.finish_fanout(fanout);
        }
    }

    /// A fan-out is written: counted, and its sender told of recipients
    /// whose queues were full.
    fn finish_fanout(&mut self, fanout: Fanout) {
        self.metrics.delivered(fanout.delivered);
        let busy = fanout.busy;
        if busy > 0 {
            self.metrics.deliveries_skipped("recipient_busy", busy);
        }
        let (index, generation) = fanout.sender;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        let State::Established(session) = &mut slot.state else {
            return;
        };
        session.conduct.message_delivered(fanout.at_us);
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
        self.notify(index, ReasonCode::RecipientBusy, text);
    }

    /// Whether the sender's and the loop's fan-out budgets and the
    /// server-wide outbound cap let a fan-out start now. The budgets allow
    /// a start by the debt alone, whatever its size (see
    /// `lubdub_core::budget`), so this is decided before the recipients
    /// are counted.
    fn check_fanout(&mut self, index: usize) -> Result<(), FanoutRefusal> {
        let now_us = self.arrival_us;
        let sender_limits = self.config.sender_fanout_limits();
        let loop_limits = self.config.loop_fanout_limits();
        let Some(State::Established(session)) = self.slots.get(index).map(|slot| &slot.state)
        else {
            return Err(FanoutRefusal::Gone);
        };
        if let Err(wait) = session.fanout.check(now_us, &sender_limits) {
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
            self.shed();
            if self.outbound_held() >= self.outbound_cap {
                return Err(FanoutRefusal::Memory);
            }
        }
        Ok(())
    }

    /// Charges a fan-out of `deliveries` writes of `len` bytes to the
    /// sender's and the loop's budgets.
    fn charge_fanout(&mut self, index: usize, deliveries: u32, len: usize) {
        let now_us = self.arrival_us;
        let sender_limits = self.config.sender_fanout_limits();
        let loop_limits = self.config.loop_fanout_limits();
        self.loop_fanout
            .charge(now_us, deliveries, len, &loop_limits);
        if let Some(State::Established(session)) =
            self.slots.get_mut(index).map(|slot| &mut slot.state)
        {
            session
                .fanout
                .charge(now_us, deliveries, len, &sender_limits);
        }
    }

    /// Tells the sender its MSG was not delivered and counts a strike;
    /// returns whether its connection is still open.
    fn refuse_fanout(&mut self, index: usize, refusal: FanoutRefusal) -> bool {
        let (budget, code, text) = match refusal {
            FanoutRefusal::Gone => return false,
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
        self.metrics.frame_refused(code);
        let now_us = self.arrival_us;
        let limits = self.conduct_limits;
        let Some(State::Established(session)) =
            self.slots.get_mut(index).map(|slot| &mut slot.state)
        else {
            return false;
        };
        if budget != "sender" {
            // The loop's budget and the memory cap are shared: a sender
            // refused for them may be an innocent bystander of someone
            // else's flood, so this is no strike (one NOTICE per run).
            return if session.conduct.refuse_message_without_strike() {
                self.notify(index, code, text)
            } else {
                true
            };
        }
        match session
            .conduct
            .refuse_message(now_us, &limits, code, || text)
        {
            Ok(Inbound::Refused {
                notice: Some(text), ..
            }) => self.notify(index, code, text),
            Ok(_) => true,
            Err(violation) => {
                self.refuse(index, violation.code, violation.text);
                false
            }
        }
    }

    /// Writes or queues an encoded MSG for `recipient`, unless its queue
    /// already holds its share of messages or it stopped draining.
    fn deliver(&mut self, recipient: usize, encoded: &[u8]) -> Delivery {
        let clock = self.queue_clock();
        let share = self.message_share();
        let Some(slot) = self.slots.get(recipient) else {
            return Delivery::Gone;
        };
        if slot.conn.is_stuck(clock.now_ms) {
            self.close(recipient, DropReason::SlowConsumer);
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
        if self.send(recipient, encoded) {
            Delivery::Delivered
        } else {
            Delivery::Gone
        }
    }

    /// Sends the session a NOTICE, unless its own queue already holds its
    /// share: a sender that does not read gets no pile of notices. Returns
    /// whether its connection is still open.
    pub(super) fn notify(&mut self, index: usize, code: ReasonCode, text: String) -> bool {
        let share = self.message_share();
        match self.slots.get(index) {
            None => false,
            Some(slot) if slot.conn.queued_len() > share => true,
            Some(_) => self.send_frame(index, &Frame::Notice(Reason::new(code, text))),
        }
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
