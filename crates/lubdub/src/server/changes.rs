//! What applications see of presence: one change of a name's state per
//! event, as JSON, for the event stream (`GET /events`) and the webhooks.
//!
//! The hub's events are per session; applications ask about names. So a
//! takeover (the same name on a new connection) is one `takeover` change,
//! the name never offline: the old session's `Dropped` (reason
//! `taken_over`), which may come before or after it when the two sessions
//! are on different loops, is no change of the name. And a session turns
//! `suspect` once: the counter's further silent intervals are detail.
//! Room memberships are changes too: `join` and `leave` (a LEAVE, or a
//! takeover, which ends the old session's memberships); an `offline`
//! change lists the rooms the name was in, which it left.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::presence::{DropReason, PresenceEvent, PresenceKind};

/// The kinds of change, as named in JSON and in `?kinds=` filters.
pub const KINDS: [&str; 8] = [
    "online",
    "takeover",
    "status",
    "suspect",
    "recovered",
    "offline",
    "join",
    "leave",
];

/// The rooms of a change, serialized as a list of their names (borrowed
/// from the event: a stream builds a change for every event it filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomNames<'a>(pub &'a [(Box<str>, u32)]);

impl RoomNames<'_> {
    /// No rooms (then the field is left out).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `room` is among them.
    pub fn contains(&self, room: &str) -> bool {
        self.0.iter().any(|(name, _)| &**name == room)
    }
}

impl Serialize for RoomNames<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(room, _)| &**room))
    }
}

/// One change of a name's presence, as applications see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change<'a> {
    /// The hub's number of the event: the stream's `id`, and what a
    /// listing's `seq` is compared with.
    pub seq: u64,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// The name.
    pub name: &'a str,
    /// The session now (or, for `offline`, last) holding the name.
    pub session: u64,
    /// Its peer address (a string in JSON). Kept as the address, not its
    /// text: a stream builds a change for every event it filters.
    pub addr: SocketAddr,
    /// When the server observed it, ms since the Unix epoch.
    pub at_ms: u64,
    /// `online`, `takeover`: the heartbeat interval granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// `online`, `takeover`: the status it starts with, if any; `status`:
    /// the new one (empty: cleared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// `takeover`: the session the name moved from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<u64>,
    /// `suspect`: whole intervals of silence so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u32>,
    /// `offline`: why (`quit`, `timeout`, `closed_by_peer`,
    /// `slow_consumer`, `shutdown`, a protocol error's code, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// `offline`: how long the session had been silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<u64>,
    /// The rooms the name is in (`offline`, `leave`: was in and left;
    /// `join`: the room joined). Left out when none.
    #[serde(skip_serializing_if = "RoomNames::is_empty")]
    pub rooms: RoomNames<'a>,
    /// `join`, and `leave` by a LEAVE: the room's member count after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl<'a> Change<'a> {
    /// The change `event` makes to its name, if any.
    pub fn of(event: &'a PresenceEvent) -> Option<Self> {
        let mut change = Change {
            seq: event.seq,
            kind: "",
            name: &event.name,
            session: event.session_id,
            addr: event.peer,
            at_ms: millis_since_epoch(event.wall),
            interval_ms: None,
            status: event.status.as_deref(),
            replaced: None,
            missed: None,
            reason: None,
            silent_ms: None,
            rooms: RoomNames(&event.rooms),
            count: None,
        };
        match event.kind {
            PresenceKind::Joined {
                interval, replaced, ..
            } => {
                change.kind = if replaced.is_some() {
                    "takeover"
                } else {
                    "online"
                };
                change.interval_ms = Some(interval.as_millis() as u64);
                change.replaced = replaced;
            }
            PresenceKind::Suspected { first: false, .. } => return None,
            PresenceKind::Suspected { missed, .. } => {
                change.kind = "suspect";
                change.missed = Some(missed);
            }
            PresenceKind::Recovered => change.kind = "recovered",
            PresenceKind::StatusChanged => change.kind = "status",
            PresenceKind::Dropped {
                reason: DropReason::TakenOver,
                ..
            } if event.rooms.is_empty() => return None,
            PresenceKind::Dropped {
                reason: DropReason::TakenOver,
                ..
            } => {
                // The name stays online; the old session's rooms are left.
                change.kind = "leave";
                change.reason = Some(DropReason::TakenOver.label());
            }
            PresenceKind::RoomJoined | PresenceKind::RoomLeft => {
                change.kind = if matches!(event.kind, PresenceKind::RoomJoined) {
                    "join"
                } else {
                    "leave"
                };
                change.count = event.rooms.first().map(|(_, count)| *count);
            }
            PresenceKind::Dropped { reason, silent_for } => {
                change.kind = "offline";
                change.reason = Some(reason.label());
                change.silent_ms = Some(silent_for.as_millis() as u64);
            }
        }
        Some(change)
    }
}

impl PresenceEvent {
    /// The change this event makes, as JSON ([`Change`]); `None` when it
    /// makes none. Rendered once, by whichever reader asks first.
    pub fn change_json(&self) -> Option<&str> {
        self.rendered
            .0
            .get_or_init(|| {
                let change = Change::of(self)?;
                serde_json::to_string(&change).ok().map(Into::into)
            })
            .as_deref()
    }
}

fn millis_since_epoch(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn event(kind: PresenceKind) -> PresenceEvent {
        let mut event = PresenceEvent::new(
            Instant::now(),
            "bob".to_owned(),
            7,
            "127.0.0.1:4000".parse().expect("an address"),
            kind,
        );
        event.seq = 3;
        event.wall = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        event
    }

    fn json(kind: PresenceKind) -> Option<String> {
        let event = event(kind);
        let json =
            Change::of(&event).map(|change| serde_json::to_string(&change).expect("serializes"));
        assert_eq!(
            event.change_json(),
            json.as_deref(),
            "rendered once, the same"
        );
        json
    }

    #[test]
    fn each_change_of_a_name_is_one_json_object() {
        let joined = PresenceKind::Joined {
            epoch: 1,
            interval: Duration::from_secs(3),
            replaced: None,
        };
        assert_eq!(
            json(joined).as_deref(),
            Some(
                r#"{"seq":3,"kind":"online","name":"bob","session":7,"addr":"127.0.0.1:4000","at_ms":1800000000123,"interval_ms":3000}"#
            )
        );
        let dropped = PresenceKind::Dropped {
            reason: DropReason::Timeout,
            silent_for: Duration::from_secs(15),
        };
        assert!(json(dropped)
            .expect("a change")
            .ends_with(r#""kind":"offline","name":"bob","session":7,"addr":"127.0.0.1:4000","at_ms":1800000000123,"reason":"timeout","silent_ms":15000}"#));
    }

    #[test]
    fn a_takeover_is_one_change_and_the_name_is_never_offline() {
        let joined = PresenceKind::Joined {
            epoch: 2,
            interval: Duration::from_secs(3),
            replaced: Some(5),
        };
        let change = json(joined).expect("a change");
        assert!(change.contains(r#""kind":"takeover""#), "{change}");
        assert!(change.contains(r#""replaced":5"#), "{change}");
        let old_session_dropped = PresenceKind::Dropped {
            reason: DropReason::TakenOver,
            silent_for: Duration::ZERO,
        };
        assert_eq!(json(old_session_dropped), None);
    }

    #[test]
    fn a_session_turns_suspect_once() {
        let first = PresenceKind::Suspected {
            missed: 2,
            first: true,
        };
        assert!(json(first).expect("news").contains(r#""missed":2"#));
        let again = PresenceKind::Suspected {
            missed: 3,
            first: false,
        };
        assert_eq!(json(again), None);
    }
}
