//! The loop's side of last wills: the will each of its sessions set (kept
//! beside the slots, so that a session without one costs nothing), what
//! becomes of it when the session ends (`DropReason::sends_will` decides),
//! the delays it waits on (the process-wide [`WillBoard`]), and its
//! delivery, as a MSG from the session's name, through the relay.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_core::connection::{DropReason, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::rooms::is_room;
use lubdub_core::protocol::{codec, Frame, Message, Will};
use tracing::{info, warn};

use super::relay::Recipient;
use super::{Command, ConnKey, EventLoop};
use crate::escape::Escaped;
use crate::server::wills::MAX_WAITING_WILLS;

/// A will waiting for its delay: when (listening time), whose.
pub(super) type WillDeadline = Reverse<(Instant, u64, String)>;

impl<D: Detector> EventLoop<D> {
    /// Session `key` set (or, with an empty body, cleared) its will.
    pub(super) fn will_set(&mut self, key: ConnKey, will: Will) {
        if will.body.is_empty() {
            self.wills.remove(&key.0);
        } else {
            self.wills.insert(key.0, will);
        }
    }

    /// Session `key`, `name`, ended for `reason`: its will, if it had one
    /// and `reason` sends it, goes out now or waits for its delay.
    ///
    /// A will to a room goes out only if the session was in that room
    /// when it ended (`rooms`): a will is no way into a room.
    pub(super) fn session_ended(
        &mut self,
        now: Now,
        key: ConnKey,
        session_id: u64,
        name: &str,
        reason: DropReason,
        rooms: &[(Box<str>, u32)],
    ) {
        let Some(will) = self.wills.remove(&key.0) else {
            return;
        };
        if !reason.sends_will() {
            return;
        }
        if is_room(&will.to) && !rooms.iter().any(|(room, _)| **room == *will.to) {
            info!(name = %Escaped(name), to = %Escaped(&will.to), "last will not sent: the session was not in that room");
            return;
        }
        if will.delay_ms == 0 {
            return self.send_will(now, session_id, name, will);
        }
        let due = now.listening + Duration::from_millis(u64::from(will.delay_ms));
        match self.will_board.wait(name, session_id, will) {
            Ok(()) => self.wait_for_will(due, session_id, name),
            Err(will) => {
                warn!(name = %Escaped(name), "{MAX_WAITING_WILLS} last wills wait already: this one is sent now, its delay cut short");
                self.send_will(now, session_id, name, will);
            }
        }
    }

    /// Remembers when the will of `session_id` under `name` is due. The
    /// deadlines of wills whose name came back stay until due; when they
    /// are as many as the wills that may wait, those no longer waiting are
    /// dropped, so that a client that vanishes and comes back again and
    /// again under one name cannot grow them for the hour a delay lasts.
    fn wait_for_will(&mut self, due: Instant, session_id: u64, name: &str) {
        if self.will_deadlines.len() >= MAX_WAITING_WILLS {
            let board = &self.will_board;
            self.will_deadlines
                .retain(|Reverse((_, owner, name))| board.holds(name, *owner));
        }
        self.will_deadlines
            .push(Reverse((due, session_id, name.to_owned())));
    }

    /// When the next will's delay is over, if one waits.
    pub(super) fn next_will_due(&self) -> Option<Instant> {
        self.will_deadlines.peek().map(|Reverse((due, ..))| *due)
    }

    /// Sends the wills whose delay is over and whose name did not come back.
    pub(super) fn send_due_wills(&mut self, now: Now) {
        while let Some(Reverse((due, ..))) = self.will_deadlines.peek() {
            if *due > now.listening {
                return;
            }
            let Some(Reverse((_, session_id, name))) = self.will_deadlines.pop() else {
                return;
            };
            if let Some(will) = self.will_board.take(&name, session_id) {
                self.send_will(now, session_id, &name, will);
            }
        }
    }

    /// Delivers `will` as a MSG from `name`: to its recipient wherever it
    /// is, or to every session. Under the loop's fan-out limits, like any
    /// MSG; its sender is gone, so nobody is told of a refusal.
    fn send_will(&mut self, now: Now, sender: u64, name: &str, will: Will) {
        // Under the loop's fan-out budget: a mass outage's wills go out at
        // the pace the server relays anything, never all at once. One that
        // finds it spent waits and is tried again (its name may come back
        // meanwhile, which cancels it, as during its delay).
        if let Err(refusal) = self.check_loop_fanout(now) {
            let wait = refusal.wait().unwrap_or(Duration::from_millis(100));
            if self.will_board.wait(name, sender, will).is_ok() {
                self.wait_for_will(now.listening + wait, sender, name);
            } else {
                warn!(name = %Escaped(name), "last will not sent: the server's relaying budget is spent and {MAX_WAITING_WILLS} wills wait already");
            }
            return;
        }
        let deliveries = if is_room(&will.to) {
            self.presence.hub().rooms().count(&will.to).max(1)
        } else if will.to.is_empty() {
            u32::try_from(self.registry.count().unwrap_or(1)).unwrap_or(u32::MAX)
        } else {
            1
        };
        let message = Message {
            from: name.to_owned(),
            to: will.to,
            body: will.body,
        };
        let Ok(encoded) = codec::encode_to_vec(&Frame::Msg(message.clone())) else {
            return;
        };
        let loop_limits = self.config.loop_fanout_limits();
        self.loop_fanout
            .charge(now.real_us, deliveries, encoded.len(), &loop_limits);
        let to = if message.to.is_empty() {
            "everyone".to_owned()
        } else {
            message.to.clone()
        };
        info!(name = %Escaped(name), to = %Escaped(&to), bytes = message.body.len(), "last will sent");
        self.metrics.will_sent();
        if is_room(&message.to) {
            return self.will_to_room(now, &message.to, &encoded);
        }
        if message.to.is_empty() {
            let recipients: Vec<ConnKey> = self
                .slots
                .iter()
                .filter(|(_, slot)| slot.machine.session().is_some())
                .map(|(index, slot)| (index, slot.generation))
                .collect();
            let shared: Arc<[u8]> = Arc::from(encoded.as_slice());
            for loop_index in 0..self.siblings.len() {
                if loop_index != self.loop_index {
                    let encoded = Arc::clone(&shared);
                    self.hand_over(loop_index, Command::Broadcast { encoded });
                }
            }
            return self.queue_fanout(now, None, &encoded, recipients, None, None);
        }
        match self.find_recipient(&message.to) {
            Recipient::Here(recipient) => {
                let to = Some(message.to);
                self.queue_fanout(now, None, &encoded, vec![recipient], to, None);
            }
            Recipient::OtherLoop(loop_index, session_id) => {
                let command = Command::Deliver {
                    session_id,
                    // Gone: a refusal told back finds nobody.
                    from: sender,
                    to: message.to,
                    encoded: Arc::from(encoded.as_slice()),
                };
                self.hand_over(loop_index, command);
            }
            Recipient::Nowhere => {
                info!(name = %Escaped(name), to = %Escaped(&to), "last will not sent: its recipient is not online");
            }
        }
    }
}
