//! Rooms on one loop: carrying out JOIN and LEAVE (the process's room
//! directory, the loop's own index of members for fan-out, the presence
//! event), ending a session's memberships with it, and where a MSG to a
//! room goes.
//!
//! The directory (in the hub) answers "who is in `#lobby`" for the whole
//! process; the loop keeps, for its own sessions only, which rooms each is
//! in and each room's local members, so that a MSG to a room is fanned out
//! without a lock per recipient. A session in no room costs nothing here.

use std::sync::Arc;

use hashbrown::HashMap;
use lubdub_core::connection::{too_many_rooms, Holdings, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::rooms::MAX_ROOMS_PER_SESSION;
use lubdub_core::protocol::{Reason, ReasonCode};

use super::super::presence::{PresenceEvent, PresenceKind};
use super::{session_id, Command, ConnKey, EventLoop};

/// This loop's sessions' rooms; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct LocalRooms {
    /// The rooms of each session in one, by slot index.
    of: HashMap<usize, Vec<Box<str>>>,
    /// The local members of each room with one here.
    members: HashMap<Box<str>, Vec<ConnKey>>,
}

impl LocalRooms {
    /// Whether session `key` is in `room`.
    pub(super) fn is_in(&self, key: ConnKey, room: &str) -> bool {
        self.of
            .get(&key.0)
            .is_some_and(|rooms| rooms.iter().any(|held| &**held == room))
    }

    /// How many rooms the session in slot `index` is in.
    pub(super) fn count_of(&self, index: usize) -> usize {
        self.of.get(&index).map_or(0, Vec::len)
    }

    /// The rooms of the session in slot `index`, for its events.
    pub(super) fn rooms_of(&self, index: usize) -> Vec<(Box<str>, u32)> {
        self.of.get(&index).map_or_else(Vec::new, |rooms| {
            rooms.iter().map(|room| (room.clone(), 0)).collect()
        })
    }

    /// This loop's members of `room`, but `except`.
    pub(super) fn local_members(&self, room: &str, except: Option<ConnKey>) -> Vec<ConnKey> {
        self.members.get(room).map_or_else(Vec::new, |members| {
            members
                .iter()
                .copied()
                .filter(|member| Some(*member) != except)
                .collect()
        })
    }

    fn add(&mut self, key: ConnKey, room: &str) {
        self.of.entry(key.0).or_default().push(room.into());
        self.members.entry(room.into()).or_default().push(key);
    }

    fn remove(&mut self, key: ConnKey, room: &str) {
        if let Some(rooms) = self.of.get_mut(&key.0) {
            rooms.retain(|held| &**held != room);
            if rooms.is_empty() {
                self.of.remove(&key.0);
            }
        }
        if let Some(members) = self.members.get_mut(room) {
            members.retain(|member| member.0 != key.0);
            if members.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// Forgets every room of the session in slot `index`; returns them.
    fn remove_all(&mut self, key: ConnKey) -> Vec<Box<str>> {
        let rooms = self.of.remove(&key.0).unwrap_or_default();
        for room in &rooms {
            if let Some(members) = self.members.get_mut(room) {
                members.retain(|member| member.0 != key.0);
                if members.is_empty() {
                    self.members.remove(room);
                }
            }
        }
        rooms
    }
}

impl<D: Detector> EventLoop<D> {
    /// Whether session `key`, `name`, may join (`joining`) or watch
    /// `target`: always without credentials; with them, only what its
    /// token grants (an auth-file secret or a certificate grants none).
    pub(super) fn permits(
        &self,
        key: ConnKey,
        name: &str,
        joining: bool,
        target: &str,
    ) -> Result<(), Reason> {
        if self.auth.is_none() {
            return Ok(());
        }
        let granted = self
            .grants
            .get(&key.0)
            .filter(|(generation, _)| *generation == key.1)
            .is_some_and(|(_, grants)| {
                if joining {
                    grants.allows_join(target)
                } else {
                    grants.allows_watch(target)
                }
            });
        if granted {
            return Ok(());
        }
        let what = if joining { "join" } else { "watch" };
        let text = format!(
            "not permitted: the credential of {name} does not grant to {what} {target} \
             (a token minted with `lubdub token --{what}` can)"
        );
        Err(Reason::new(ReasonCode::NotPermitted, text))
    }

    /// Carries out a JOIN of session `key`, `name`.
    pub(super) fn join_room(&mut self, now: Now, key: ConnKey, name: &str, room: String) {
        if let Err(reason) = self.permits(key, name, true, &room) {
            self.refuse_request(now, key, reason);
            return self.report_holdings(key);
        }
        // The machine counts a LEAVE read with this JOIN before either is
        // carried out; the loop holds the exact rooms and keeps the bound.
        if !self.rooms.is_in(key, &room) && self.rooms.count_of(key.0) >= MAX_ROOMS_PER_SESSION {
            self.refuse_request(now, key, too_many_rooms(&room));
            return self.report_holdings(key);
        }
        let session = session_id(self.loop_index, key.0, key.1);
        let hub = self.presence.hub();
        let joined = hub.rooms().join(&room, name, session);
        if joined.changed {
            self.rooms.add(key, &room);
            self.metrics.room_joined();
            self.publish_room_change(
                now,
                key,
                name,
                PresenceKind::RoomJoined,
                &room,
                joined.count,
            );
        }
        self.report_holdings(key);
    }

    /// Carries out a LEAVE of session `key`, `name`.
    pub(super) fn leave_room(&mut self, now: Now, key: ConnKey, name: &str, room: String) {
        let session = session_id(self.loop_index, key.0, key.1);
        let Some(count) = self.presence.hub().rooms().leave(&room, name, session) else {
            let text = format!("{room} not left: this session is not in it");
            self.refuse_request(now, key, Reason::new(ReasonCode::NotInRoom, text));
            // The machine counted the LEAVE out: its count is put right.
            return self.report_holdings(key);
        };
        self.rooms.remove(key, &room);
        self.metrics.room_left(1);
        self.publish_room_change(now, key, name, PresenceKind::RoomLeft, &room, count);
        self.report_holdings(key);
    }

    /// Session `key`, `name`, ended: it leaves every room it was in. The
    /// rooms, each with its members after, go into its `Dropped` event.
    pub(super) fn rooms_ended(&mut self, key: ConnKey, name: &str) -> Vec<(Box<str>, u32)> {
        let rooms = self.rooms.remove_all(key);
        if rooms.is_empty() {
            return Vec::new();
        }
        let session = session_id(self.loop_index, key.0, key.1);
        let directory = self.presence.hub().rooms();
        let left: Vec<(Box<str>, u32)> = rooms
            .into_iter()
            .filter_map(|room| {
                let count = directory.leave(&room, name, session)?;
                Some((room, count))
            })
            .collect();
        self.metrics.room_left(left.len());
        left
    }

    fn publish_room_change(
        &mut self,
        now: Now,
        key: ConnKey,
        name: &str,
        kind: PresenceKind,
        room: &str,
        count: u32,
    ) {
        let Some(peer) = self.slots.get(key.0).map(|slot| slot.conn.peer) else {
            return;
        };
        let session = session_id(self.loop_index, key.0, key.1);
        let event =
            PresenceEvent::new(self.real_instant(now), name.to_owned(), session, peer, kind)
                .with_rooms(vec![(room.into(), count)]);
        self.presence.report(event, None);
    }

    /// Tells session `key`'s machine what it holds now.
    pub(super) fn report_holdings(&mut self, key: ConnKey) {
        let held = Holdings {
            rooms: u8::try_from(self.rooms.count_of(key.0)).unwrap_or(u8::MAX),
            watches: u8::try_from(self.watches.count_of(key.0)).unwrap_or(u8::MAX),
        };
        self.tell_machine(key, |machine, _, _| machine.set_holdings(held));
    }

    /// A LEAVE or WATCH of session `key` could not be carried out (not in
    /// the room, a room too large to list): NOTICE now, in the order of
    /// the frames that session sent (no strike: it was well-formed).
    pub(super) fn refuse_request(&mut self, now: Now, key: ConnKey, reason: Reason) {
        self.metrics.frame_refused(reason.code);
        self.notify(now, key, reason.code, reason.text);
    }

    /// Where a MSG of session `key` to `room` goes: this loop's other
    /// members, and (by `RoomBroadcast`) every other loop's; with the
    /// number of deliveries to charge. `Err` when the sender is not in it.
    pub(super) fn room_recipients(
        &self,
        key: ConnKey,
        room: &str,
    ) -> Result<(Vec<ConnKey>, usize), Reason> {
        if !self.rooms.is_in(key, room) {
            let text =
                format!("message not delivered: this session is not in {room}; JOIN it first");
            return Err(Reason::new(ReasonCode::NotInRoom, text));
        }
        let here = self.rooms.local_members(room, Some(key));
        let elsewhere = if self.siblings.len() > 1 {
            let everyone = self.presence.hub().rooms().count(room) as usize;
            everyone.saturating_sub(here.len() + 1)
        } else {
            0
        };
        Ok((here, elsewhere))
    }

    /// Hands an encoded MSG to `room` to every other loop.
    pub(super) fn room_to_other_loops(&self, room: &str, encoded: &[u8]) {
        let shared: Arc<[u8]> = Arc::from(encoded);
        let room: Arc<str> = Arc::from(room);
        for loop_index in 0..self.siblings.len() {
            if loop_index != self.loop_index {
                let command = Command::RoomBroadcast {
                    room: Arc::clone(&room),
                    encoded: Arc::clone(&shared),
                };
                self.hand_over(loop_index, command);
            }
        }
    }

    /// A last will to `room` (its sender, ended, is no member any more):
    /// to every member, this loop's and the others'.
    pub(super) fn will_to_room(&mut self, now: Now, room: &str, encoded: &[u8]) {
        let here = self.rooms.local_members(room, None);
        if self.siblings.len() > 1 {
            self.room_to_other_loops(room, encoded);
        }
        self.queue_fanout(now, None, encoded, here, None, None);
    }

    /// A MSG to `room` from another loop: to this loop's members of it.
    pub(super) fn room_from_elsewhere(&mut self, now: Now, room: &str, encoded: &[u8]) {
        // Landed: from here on it is this loop's, counted in its fan-out.
        self.held_changed(encoded.len(), 0);
        let recipients = self.rooms.local_members(room, None);
        self.queue_fanout(now, None, encoded, recipients, None, None);
    }
}
