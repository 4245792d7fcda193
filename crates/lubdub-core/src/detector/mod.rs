//! Failure detection: policies that turn arrival times into verdicts.
//!
//! A [`Detector`] is a policy plus per-session state it owns. It never reads a
//! clock: the caller passes `now` in. The IO layer calls
//! [`Detector::heartbeat`] on every inbound frame (this must stay O(1) and
//! cheap: it runs once per heartbeat) and [`Detector::check`] when the
//! deadline it was last given comes due. Deadlines themselves are kept
//! outside, in one [`DeadlineWheel`](crate::wheel::DeadlineWheel) for all
//! sessions.

mod counter;

pub use counter::{CounterConfig, CounterDetector, CounterState};

use std::time::{Duration, Instant};

/// A change of a session's liveness that callers report as a presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The session has been silent for `missed` intervals (it may be
    /// reported again with a larger count).
    Suspected {
        /// Whole intervals of silence so far.
        missed: u32,
    },
    /// A frame arrived from a session that was suspect.
    Recovered,
    /// The session reached its deadline and must be dropped.
    Dead {
        /// How long the session had been silent.
        silent_for: Duration,
    },
}

/// A session's liveness at one instant, as shown by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from within the last interval.
    Alive,
    /// Silent for at least one interval.
    Suspect {
        /// Whole intervals of silence.
        missed: u32,
    },
    /// Past its deadline.
    Dead,
}

/// What [`Detector::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The change to report, if any.
    pub transition: Option<Transition>,
    /// When to check this session next; `None` once it is dead.
    pub next_check: Option<Instant>,
}

/// A failure-detection policy.
///
/// Implementations keep per-session state small and fixed-size (the server
/// holds one per session, tens of thousands per process) and must be
/// deterministic functions of the times passed in.
pub trait Detector {
    /// Per-session state.
    type State;

    /// State for a session granted `interval` whose first frame arrived at
    /// `now`, and when to check it first. Intervals are per session because
    /// each client negotiates its own.
    fn start(&self, now: Instant, interval: Duration) -> (Self::State, Instant);

    /// A frame arrived at `now`. Returns [`Transition::Recovered`] when the
    /// session was suspect. Must not schedule anything: the pending check
    /// notices the new arrival when it comes due.
    fn heartbeat(&self, state: &mut Self::State, now: Instant) -> Option<Transition>;

    /// The check scheduled for this session came due at `now` (or later).
    fn check(&self, state: &mut Self::State, now: Instant) -> CheckOutcome;

    /// Liveness at `now`, without changing state.
    fn liveness(&self, state: &Self::State, now: Instant) -> Liveness;

    /// When the last frame arrived.
    fn last_seen(&self, state: &Self::State) -> Instant;
}
