//! Presence events: joined, suspect, recovered, dropped.
//!
//! Each event is logged as one `info` line through `tracing` and published
//! to the process's [`PresenceHub`], which numbers it and keeps it for its
//! readers (tests read detection delays from there). Events happen on
//! joins, silences and closes, never per heartbeat.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info};

use super::hub::PresenceHub;
use crate::escape::Escaped;

pub use lubdub_core::connection::DropReason;

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// The handshake completed.
    Joined {
        /// Fencing epoch of the claim.
        epoch: u64,
        /// Granted heartbeat interval.
        interval: Duration,
        /// The session it took the name over from, if any: for the name,
        /// one continuous online state (that session's `Dropped`, reason
        /// `taken_over`, may come before or after this event).
        replaced: Option<u64>,
    },
    /// Silent for `missed` whole intervals.
    Suspected {
        /// Whole intervals of silence.
        missed: u32,
        /// Not suspect before: the news; later ones (the counter reports
        /// each further silent interval) are detail.
        first: bool,
    },
    /// A frame arrived from a suspect session.
    Recovered,
    /// The session set its status (the event's `status`; empty: cleared).
    StatusChanged,
    /// The session joined the room in the event's `rooms` (its one entry,
    /// with the room's member count after).
    RoomJoined,
    /// The session left the room in the event's `rooms` (as for
    /// `RoomJoined`) by a LEAVE; a session that ends leaves its rooms in
    /// its `Dropped` event instead.
    RoomLeft,
    /// The session ended.
    Dropped {
        /// Why.
        reason: DropReason,
        /// How long the session had been silent (no frame from it) when it
        /// was dropped, whatever the reason.
        silent_for: Duration,
    },
}

/// One presence event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Its place among every event of the process, from 1, in publishing
    /// order (given by the [`PresenceHub`](super::hub::PresenceHub)).
    pub seq: u64,
    /// When the server observed it, on the wall clock.
    pub wall: SystemTime,
    /// When the server observed it, on the monotonic clock.
    pub at: Instant,
    /// Session name.
    pub name: String,
    /// Session id.
    pub session_id: u64,
    /// Peer address.
    pub peer: SocketAddr,
    /// What happened.
    pub kind: PresenceKind,
    /// The session's status: for `Joined`, the one it starts with; for
    /// `StatusChanged`, the new one. `None` otherwise.
    pub status: Option<String>,
    /// The rooms the session is in when the event happens, each with its
    /// member count after the event; for `Dropped`, those it was in (the
    /// counts without it); for `RoomJoined` and `RoomLeft`, that room
    /// only. Empty for a session in no room (no allocation).
    pub rooms: Vec<(Box<str>, u32)>,
    /// Its change as JSON, once a reader asked for it
    /// ([`PresenceEvent::change_json`]).
    pub(crate) rendered: Rendered,
}

/// An event's change as JSON, rendered by the first reader that asks and
/// shared by the rest: a hundred event streams encode a change once, not a
/// hundred times, on the admin thread that competes with the loops for
/// the CPU. No part of the event's identity: events compare equal whether
/// rendered or not.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rendered(pub(crate) OnceLock<Option<Box<str>>>);

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl PresenceEvent {
    /// An event observed at `at`, not yet published: the hub numbers it
    /// and stamps it on the wall clock.
    pub fn new(
        at: Instant,
        name: String,
        session_id: u64,
        peer: SocketAddr,
        kind: PresenceKind,
    ) -> Self {
        Self {
            seq: 0,
            wall: SystemTime::UNIX_EPOCH,
            at,
            name,
            session_id,
            peer,
            kind,
            status: None,
            rooms: Vec::new(),
            rendered: Rendered::default(),
        }
    }

    /// This event with `rooms` (see [`PresenceEvent::rooms`]).
    pub fn with_rooms(mut self, rooms: Vec<(Box<str>, u32)>) -> Self {
        self.rooms = rooms;
        self
    }

    /// This event with `status` (see [`PresenceEvent::status`]).
    pub fn with_status(mut self, status: Option<String>) -> Self {
        self.status = status;
        self
    }
}

/// Logs presence events and publishes them to the process's hub.
#[derive(Debug)]
pub(crate) struct Presence {
    hub: Arc<PresenceHub>,
}

impl Presence {
    pub(crate) fn new(hub: Arc<PresenceHub>) -> Self {
        Self { hub }
    }

    /// The hub it publishes to.
    pub(crate) fn hub(&self) -> &Arc<PresenceHub> {
        &self.hub
    }

    /// Logs and forwards one event. `detail` adds context to the log line
    /// (an IO error's text, for example).
    pub(crate) fn report(&mut self, event: PresenceEvent, detail: Option<&str>) {
        let PresenceEvent {
            name,
            session_id,
            peer,
            kind,
            ..
        } = &event;
        // A name is checked at HELLO, but the log must not trust that rule.
        let name = Escaped(name);
        match kind {
            PresenceKind::Joined {
                epoch,
                interval,
                replaced,
            } => {
                info!(%name, %peer, session = session_id, epoch, interval_ms = interval.as_millis() as u64, replaced, "joined");
            }
            // The first suspicion is news; each further silent interval of
            // the counter is detail (a mass silence would log four lines
            // per session at info).
            PresenceKind::Suspected {
                missed,
                first: true,
            } => {
                info!(%name, %peer, session = session_id, missed, detail, "suspect")
            }
            PresenceKind::Suspected { missed, .. } => {
                debug!(%name, %peer, session = session_id, missed, detail, "suspect")
            }
            PresenceKind::Recovered => info!(%name, %peer, session = session_id, "recovered"),
            PresenceKind::StatusChanged => {
                let status = event.status.as_deref().map(Escaped);
                debug!(%name, %peer, session = session_id, status = status.map(tracing::field::display), "status")
            }
            PresenceKind::RoomJoined | PresenceKind::RoomLeft => {
                let (room, members) = event
                    .rooms
                    .first()
                    .map_or(("", 0), |(room, count)| (&**room, *count));
                let what = if matches!(kind, PresenceKind::RoomJoined) {
                    "joined room"
                } else {
                    "left room"
                };
                debug!(%name, %peer, session = session_id, room, members, "{what}")
            }
            PresenceKind::Dropped { reason, silent_for } => {
                let silent_ms = silent_for.as_millis() as u64;
                let code = match reason {
                    DropReason::ProtocolError(code) => Some(code.label()),
                    _ => None,
                };
                info!(%name, %peer, session = session_id, reason = %reason.label(), code, silent_ms, detail, "dropped");
            }
        }
        // Only the first suspicion is published: the later ones change
        // nobody's presence, and a mass silence would otherwise put five
        // events a session into the hub's ring instead of two, pushing the
        // offline changes out of it before slow readers reach them.
        if matches!(event.kind, PresenceKind::Suspected { first: false, .. }) {
            return;
        }
        self.hub.publish(event, SystemTime::now());
    }
}
