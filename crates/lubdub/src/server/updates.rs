//! What a watching session is told of a presence event: the PRESENCE
//! frame (if any) for a watch of the event's name, and for a watch of
//! each of its rooms, full or by count. Pure: the loop passes events in
//! and sends what comes out (`event_loop/watches.rs`).
//!
//! A name is one continuous presence across a takeover (`takeover`, never
//! `offline` then `online`), and a session turns `suspect` once, as in the
//! event stream (`server::changes`). A room's watchers see its members
//! come (`join`) and go (`leave`, with `left` or the reason the session
//! ended) and what happens to them meanwhile; a count-only watcher sees
//! only the count.

use lubdub_core::protocol::rooms::{PresenceUpdate, UpdateKind};

use super::presence::{DropReason, PresenceEvent, PresenceKind};

/// How a target is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watching {
    /// Every change (a name, or a room's members).
    Full,
    /// A room's member count only.
    Count,
}

/// The update a watcher of `event.name` gets, if any.
pub fn for_name(event: &PresenceEvent) -> Option<PresenceUpdate> {
    let (kind, text) = match event.kind {
        PresenceKind::Joined { replaced: None, .. } => (UpdateKind::Online, status(event)),
        PresenceKind::Joined { .. } => (UpdateKind::Takeover, status(event)),
        PresenceKind::Suspected { first: true, .. } => (UpdateKind::Suspect, ""),
        PresenceKind::Recovered => (UpdateKind::Recovered, ""),
        PresenceKind::StatusChanged => (UpdateKind::Status, status(event)),
        PresenceKind::Dropped {
            reason: DropReason::TakenOver,
            ..
        }
        | PresenceKind::Suspected { .. }
        | PresenceKind::RoomJoined
        | PresenceKind::RoomLeft => return None,
        PresenceKind::Dropped { reason, .. } => (UpdateKind::Offline, reason.label()),
    };
    Some(update(event, kind, &event.name, text, 0))
}

/// The update a watcher of `room` (one of `event.rooms`, with `count`
/// its members after the event) gets, if any.
pub fn for_room(
    event: &PresenceEvent,
    room: &str,
    count: u32,
    watching: Watching,
) -> Option<PresenceUpdate> {
    let membership = match event.kind {
        PresenceKind::RoomJoined => Some((UpdateKind::Joined, status(event))),
        PresenceKind::RoomLeft => Some((UpdateKind::Left, "left")),
        PresenceKind::Dropped { reason, .. } => Some((UpdateKind::Left, reason.label())),
        _ => None,
    };
    if watching == Watching::Count {
        return membership.map(|_| update(event, UpdateKind::Count, room, "", count));
    }
    let (kind, text) = match (membership, event.kind) {
        (Some(change), _) => change,
        (None, PresenceKind::Suspected { first: true, .. }) => (UpdateKind::Suspect, ""),
        (None, PresenceKind::Recovered) => (UpdateKind::Recovered, ""),
        (None, PresenceKind::StatusChanged) => (UpdateKind::Status, status(event)),
        _ => return None,
    };
    let count = if membership.is_some() { count } else { 0 };
    Some(update(event, kind, room, text, count))
}

fn status(event: &PresenceEvent) -> &str {
    event.status.as_deref().unwrap_or("")
}

fn update(
    event: &PresenceEvent,
    kind: UpdateKind,
    target: &str,
    text: &str,
    count: u32,
) -> PresenceUpdate {
    let mut update = PresenceUpdate::new(event.seq, kind, target);
    update.count = count;
    update.session_id = event.session_id;
    if kind != UpdateKind::Count {
        update.name.clone_from(&event.name);
    }
    update.text = text.to_owned();
    update
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn event(kind: PresenceKind, rooms: &[(&str, u32)]) -> PresenceEvent {
        let mut event = PresenceEvent::new(
            Instant::now(),
            "bob".to_owned(),
            7,
            "127.0.0.1:4000".parse().expect("an address"),
            kind,
        )
        .with_rooms(rooms.iter().map(|(r, c)| ((*r).into(), *c)).collect());
        event.seq = 9;
        event
    }

    fn dropped(reason: DropReason) -> PresenceKind {
        PresenceKind::Dropped {
            reason,
            silent_for: Duration::ZERO,
        }
    }

    #[test]
    fn a_name_watcher_sees_one_presence_through_a_takeover() {
        let joined = |replaced| PresenceKind::Joined {
            epoch: 1,
            interval: Duration::from_secs(1),
            replaced,
        };
        let kind = |event: &PresenceEvent| for_name(event).map(|update| update.kind);
        assert_eq!(kind(&event(joined(None), &[])), Some(UpdateKind::Online));
        assert_eq!(
            kind(&event(joined(Some(3)), &[])),
            Some(UpdateKind::Takeover)
        );
        assert_eq!(kind(&event(dropped(DropReason::TakenOver), &[])), None);
        let offline = for_name(&event(dropped(DropReason::Timeout), &[])).expect("offline");
        assert_eq!(
            (
                offline.kind,
                offline.text.as_str(),
                offline.seq,
                offline.session_id
            ),
            (UpdateKind::Offline, "timeout", 9, 7)
        );
        let again = PresenceKind::Suspected {
            missed: 3,
            first: false,
        };
        assert_eq!(kind(&event(again, &[])), None);
    }

    #[test]
    fn a_room_watcher_sees_members_come_and_go_and_a_counter_only_counts() {
        let joined = event(PresenceKind::RoomJoined, &[("#a", 4)]);
        let full = for_room(&joined, "#a", 4, Watching::Full).expect("join");
        assert_eq!(
            (full.kind, full.name.as_str(), full.count),
            (UpdateKind::Joined, "bob", 4)
        );
        let gone = event(dropped(DropReason::TakenOver), &[("#a", 3)]);
        let left = for_room(&gone, "#a", 3, Watching::Full).expect("leave");
        assert_eq!(
            (left.kind, left.text.as_str()),
            (UpdateKind::Left, "taken_over")
        );
        let count = for_room(&gone, "#a", 3, Watching::Count).expect("count");
        assert_eq!(
            (count.kind, count.count, count.name.as_str()),
            (UpdateKind::Count, 3, "")
        );
        let suspect = PresenceKind::Suspected {
            missed: 1,
            first: true,
        };
        let suspect = event(suspect, &[("#a", 0)]);
        assert_eq!(
            for_room(&suspect, "#a", 0, Watching::Full).map(|u| u.kind),
            Some(UpdateKind::Suspect)
        );
        assert_eq!(for_room(&suspect, "#a", 0, Watching::Count), None);
    }
}
