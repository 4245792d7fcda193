//! The room directory: which sessions are in which room, for the whole
//! process. Loops add and remove members as their sessions JOIN, LEAVE and
//! end; the admin API lists rooms and members; watches snapshot rooms from
//! here. A member is a name with the session that joined under it, so that
//! a session taken over cannot remove its successor's membership (as the
//! registry's releases are fenced by epoch).
//!
//! One mutex: taken on joins, leaves, room messages and listings, never per
//! heartbeat. Only rooms with members are kept; a session in no room costs
//! nothing here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What a JOIN changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The room's members now.
    pub count: u32,
    /// Whether this session was not a member before.
    pub changed: bool,
}

/// One room's members, as a listing shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Members in all.
    pub count: u32,
    /// Up to the limit asked for, by name: (name, session id).
    pub listed: Vec<(Box<str>, u64)>,
}

/// A room's members: name → the session that joined under it.
type RoomMembers = HashMap<Box<str>, u64>;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    rooms: Mutex<HashMap<Box<str>, RoomMembers>>,
}

impl RoomDirectory {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, RoomMembers>> {
        // A poisoned lock means a loop panicked mid-update of one map
        // entry; the maps themselves are still whole.
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `session` the member of `room` under `name` (a new session of
    /// the name replaces the old one's membership).
    pub fn join(&self, room: &str, name: &str, session: u64) -> Membership {
        let mut rooms = self.rooms();
        let members = rooms.entry(room.into()).or_default();
        let before = members.insert(name.into(), session);
        Membership {
            count: count(members),
            changed: before != Some(session),
        }
    }

    /// Ends `session`'s membership of `room`; the room's members after,
    /// or `None` when `session` was not a member (fenced: a newer session
    /// of the name keeps its own).
    pub fn leave(&self, room: &str, name: &str, session: u64) -> Option<u32> {
        let mut rooms = self.rooms();
        let members = rooms.get_mut(room)?;
        if members.get(name) != Some(&session) {
            return None;
        }
        members.remove(name);
        let left = count(members);
        if members.is_empty() {
            rooms.remove(room);
        }
        Some(left)
    }

    /// Whether `session` is a member of `room` under `name`.
    pub fn is_member(&self, room: &str, name: &str, session: u64) -> bool {
        self.rooms()
            .get(room)
            .is_some_and(|members| members.get(name) == Some(&session))
    }

    /// The room's members in all (0: no such room).
    pub fn count(&self, room: &str) -> u32 {
        self.rooms().get(room).map_or(0, count)
    }

    /// The room's member count and, by name, up to `limit` of them.
    pub fn members(&self, room: &str, limit: usize) -> Members {
        let rooms = self.rooms();
        let Some(members) = rooms.get(room) else {
            return Members {
                count: 0,
                listed: Vec::new(),
            };
        };
        let count = count(members);
        if limit == 0 {
            // A count: no listing to sort.
            return Members {
                count,
                listed: Vec::new(),
            };
        }
        let sorted: BTreeMap<&Box<str>, &u64> = members.iter().collect();
        Members {
            count,
            listed: sorted
                .into_iter()
                .take(limit)
                .map(|(name, session)| (name.clone(), *session))
                .collect(),
        }
    }

    /// Every room with its member count, by name.
    pub fn list(&self) -> Vec<(Box<str>, u32)> {
        let mut rooms: Vec<_> = self
            .rooms()
            .iter()
            .map(|(room, members)| (room.clone(), count(members)))
            .collect();
        rooms.sort_unstable();
        rooms
    }
}

fn count(members: &RoomMembers) -> u32 {
    u32::try_from(members.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_fenced_by_session_and_empty_rooms_vanish() {
        let rooms = RoomDirectory::default();
        assert_eq!(
            rooms.join("#a", "bob", 1),
            Membership {
                count: 1,
                changed: true
            }
        );
        assert!(!rooms.join("#a", "bob", 1).changed);
        rooms.join("#a", "carol", 2);
        // bob's name taken over by session 3: session 1 no longer leaves.
        assert!(rooms.join("#a", "bob", 3).changed);
        assert_eq!(rooms.leave("#a", "bob", 1), None);
        assert!(rooms.is_member("#a", "bob", 3));
        assert_eq!(rooms.leave("#a", "bob", 3), Some(1));
        assert_eq!(rooms.members("#a", 10).listed, vec![("carol".into(), 2)]);
        assert_eq!(rooms.leave("#a", "carol", 2), Some(0));
        assert_eq!(rooms.list(), vec![]);
        assert_eq!(rooms.count("#a"), 0);
    }
}
