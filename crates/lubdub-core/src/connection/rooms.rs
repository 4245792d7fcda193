//! An established session's room and watch requests: the machine turns
//! each admitted JOIN, LEAVE and WATCH into a request the IO layer
//! carries out (it holds the room directory and the watch index), and
//! says, from what the IO layer reports it holds for the session, whether
//! one more room or watch is within the session's bounds.

use super::output::{Event, Output, OutputSink, Request};
use super::Connection;
use crate::protocol::rooms::{WatchMode, MAX_ROOMS_PER_SESSION, MAX_WATCHES_PER_SESSION};
use crate::protocol::{Reason, ReasonCode};

/// What the IO layer holds for a session (it reports it with
/// [`Connection::set_holdings`] after each request it carried out): the
/// machine's bounds are checked against it. Two bytes in every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holdings {
    /// Rooms the session is in.
    pub rooms: u8,
    /// Targets it watches.
    pub watches: u8,
}

impl<S> Connection<S> {
    /// An admitted JOIN: a request to join, unless the session is already
    /// in as many rooms as it may be.
    pub(super) fn join(&mut self, room: String, out: &mut impl OutputSink) {
        let Some(session) = self.session_mut() else {
            return;
        };
        if usize::from(session.held.rooms) >= MAX_ROOMS_PER_SESSION {
            push_notice(out, too_many_rooms(&room));
            return;
        }
        // Counted now, corrected by `set_holdings` once carried out: the
        // JOINs of one read are all judged before any is carried out.
        session.held.rooms = session.held.rooms.saturating_add(1);
        out.push(Output::Request(Request::Join {
            name: session.name.clone(),
            room,
        }));
    }

    /// An admitted LEAVE.
    pub(super) fn leave(&mut self, room: String, out: &mut impl OutputSink) {
        if let Some(session) = self.session_mut() {
            // Counted out now, so that a LEAVE and a JOIN read together
            // are judged as sent; a LEAVE of a room it was not in is
            // corrected by `set_holdings`, and the IO layer, which holds
            // the exact rooms, keeps the bound.
            session.held.rooms = session.held.rooms.saturating_sub(1);
            out.push(Output::Request(Request::Leave {
                name: session.name.clone(),
                room,
            }));
        }
    }

    /// An admitted WATCH: a request to watch (or stop), unless it would
    /// be one watch more than the session may hold.
    pub(super) fn watch(&mut self, mode: WatchMode, target: String, out: &mut impl OutputSink) {
        let Some(session) = self.session_mut() else {
            return;
        };
        // A `once` watch is answered at once and is never held.
        let adds = matches!(mode, WatchMode::Full | WatchMode::Count);
        if adds && usize::from(session.held.watches) >= MAX_WATCHES_PER_SESSION {
            push_notice(out, too_many_watches(&target));
            return;
        }
        if adds {
            // As for JOIN: counted now, corrected once carried out.
            session.held.watches = session.held.watches.saturating_add(1);
        } else if mode == WatchMode::Stop {
            // As for LEAVE: counted out now, corrected once carried out.
            session.held.watches = session.held.watches.saturating_sub(1);
        }
        out.push(Output::Request(Request::Watch {
            name: session.name.clone(),
            mode,
            target,
        }));
    }

    /// What the IO layer holds for the session now, after carrying out a
    /// JOIN, LEAVE or WATCH (a JOIN of a room it is in, or a second watch
    /// of a target, adds nothing).
    pub fn set_holdings(&mut self, held: Holdings) {
        if let Some(session) = self.session_mut() {
            session.held = held;
        }
    }
}

/// Why a JOIN past [`MAX_ROOMS_PER_SESSION`] is refused.
pub fn too_many_rooms(room: &str) -> Reason {
    let text = format!(
        "{room} not joined: a session may be in at most {MAX_ROOMS_PER_SESSION} \
         rooms; leave one first"
    );
    Reason::new(ReasonCode::TooManyRooms, text)
}

/// Why a WATCH past [`MAX_WATCHES_PER_SESSION`] is refused.
pub fn too_many_watches(target: &str) -> Reason {
    let text = format!(
        "watch of {target} refused: a session may watch at most \
         {MAX_WATCHES_PER_SESSION} names and rooms; stop one first"
    );
    Reason::new(ReasonCode::TooManyWatches, text)
}

fn push_notice(out: &mut impl OutputSink, reason: Reason) {
    let (code, text) = (reason.code, reason.text.clone());
    out.push(Output::Transmit(super::output::Transmit::Notice(reason)));
    out.push(Output::Event(Event::FrameRefused {
        code,
        notice: Some(text),
    }));
}
