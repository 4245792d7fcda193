//! The admin API's reads of the loop's state, one bounded slice per
//! command: a page of sessions after a slab-index cursor, one session by
//! name (a registry look-up, no scan), and state counts over a range of
//! slots. No command holds the loop for the whole list: built in one turn,
//! a listing of 19,000 sessions held it for tens of milliseconds per poller.

use std::time::{Duration, SystemTime};

use lubdub_core::connection::Now;
use lubdub_core::detector::{Detector, Liveness};

use super::super::metrics::StateCounts;
use super::super::snapshot::{SessionInfo, SessionPage, SessionState};
use super::EventLoop;

/// Most sessions one page holds, whatever the requester asks for: about
/// 0.3 MB of JSON, and a fraction of a millisecond of the loop's time.
pub const MAX_SESSIONS_PER_PAGE: usize = 1_000;
/// Pages (of sessions or of counts) built per turn of the loop; further
/// requests wait for the next turn, after the sockets are read again.
pub(super) const PAGES_PER_TURN: usize = 1;
/// Most slots one command looks at (vacant, handshaking and closing ones
/// included), so that a page over sparse slots is bounded too.
pub(crate) const SLOTS_PER_COMMAND: usize = 4_096;

impl<D: Detector> EventLoop<D> {
    /// Up to `limit` (at most [`MAX_SESSIONS_PER_PAGE`]) established
    /// sessions in slab order, starting after the slot `after`; the page's
    /// `next` is the cursor of the following page, `None` at the end.
    pub(super) fn session_page(&self, now: Now, after: Option<u64>, limit: usize) -> SessionPage {
        let limit = limit.clamp(1, MAX_SESSIONS_PER_PAGE);
        let start = after.map_or(0, |cursor| {
            usize::try_from(cursor)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        });
        let end = self.slots.capacity();
        let mut sessions = Vec::new();
        let mut index = start;
        while index < end && sessions.len() < limit && index - start < SLOTS_PER_COMMAND {
            sessions.extend(self.session_info(now, index));
            index += 1;
        }
        SessionPage {
            sessions,
            // `index > start` here: at least one slot was looked at.
            next: (index < end).then(|| index as u64 - 1),
            // Numbered by `ServerControl`, which reads the hub.
            seq: 0,
        }
    }

    /// The established local session holding `name`, if any.
    pub(super) fn session_named(&self, now: Now, name: &str) -> Option<SessionInfo> {
        self.session_info(now, self.local_session(name)?)
    }

    /// Connections by state among the slots from `from` on, at most
    /// [`SLOTS_PER_COMMAND`] of them, and where the next range starts
    /// (`None`: this was the last, and it includes the registry's count).
    pub(super) fn count_page(&self, now: Now, from: usize) -> (StateCounts, Option<usize>) {
        let end = self.slots.capacity();
        let to = from.saturating_add(SLOTS_PER_COMMAND).min(end);
        let mut counts = StateCounts::default();
        for index in from..to {
            let Some(slot) = self.slots.get(index) else {
                continue;
            };
            if slot.machine.is_closing() {
                counts.closing += 1;
                continue;
            }
            let Some(session) = slot.machine.session() else {
                counts.handshaking += 1;
                continue;
            };
            match self
                .rules
                .detector
                .liveness(session.liveness(), now.listening)
            {
                Liveness::Alive => counts.alive += 1,
                // Dead but not judged yet counts as suspect, as in `/sessions`.
                Liveness::Suspect { .. } | Liveness::Dead => counts.suspect += 1,
            }
        }
        if to < end {
            return (counts, Some(to));
        }
        // Read in the same turn as the last slots: with the in-memory
        // registry the sum agrees with the slots' unless sessions came or
        // went between the pages.
        counts.registered = self
            .registry
            .count()
            .map_or(0, |names| u64::try_from(names).unwrap_or(u64::MAX));
        (counts, None)
    }

    /// The admin view of the slot at `index`, if it holds an established session.
    fn session_info(&self, now: Now, index: usize) -> Option<SessionInfo> {
        let slot = self.slots.get(index)?;
        let session = slot.machine.session()?;
        let detector = &self.rules.detector;
        let now = now.listening;
        let (state, missed) = match detector.liveness(session.liveness(), now) {
            Liveness::Alive => (SessionState::Alive, 0),
            Liveness::Suspect { missed } => (SessionState::Suspect, missed),
            // Dead but its check has not run yet (it runs this very wake-up).
            Liveness::Dead => (SessionState::Suspect, self.config.max_missed),
        };
        let last_seen = detector.last_seen(session.liveness());
        Some(SessionInfo {
            name: session.name().to_owned(),
            addr: slot.conn.peer,
            state,
            missed,
            last_seen_ms: now.saturating_duration_since(last_seen).as_millis() as u64,
            connected_at: humantime::format_rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_millis(session.connected_at_ms()),
            )
            .to_string(),
            epoch: session.epoch(),
            session_id: super::session_id(self.loop_index, index, slot.generation),
            loop_index: self.loop_index,
            one_way: !session.acks_wanted(),
            rtt_ms: (session.rtt_us() != 0).then(|| f64::from(session.rtt_us()) / 1000.0),
            interval_ms: session.interval().as_millis() as u64,
            mean_interarrival_ms: detector.mean_interarrival(session.liveness()).as_secs_f64()
                * 1000.0,
            phi: detector.phi(session.liveness(), now),
            last_change: session.last_change().describe(self.config.phi_threshold),
            status: self.statuses.get(&index).map(ToString::to_string),
        })
    }
}
