//! Failure detection: policies that turn arrival times into verdicts.
//!
//! A [`Detector`] is a policy plus per-session state it owns. It never reads a
//! clock: the caller passes `now` in. The IO layer calls
//! [`Detector::heartbeat`] on every inbound frame (this must stay O(1) and
//! cheap: it runs once per heartbeat) and [`Detector::check`] when the
//! deadline it was last given comes due. Deadlines themselves are kept
//! outside, in one [`DeadlineWheel`](crate::wheel::DeadlineWheel) for all
//! sessions.
//!
//! Two policies: [`CounterDetector`] (seed 003's missed-beat count) and
//! [`PhiDetector`] (phi accrual). Both keep fixed-size state per session and
//! both stop at the same hard ceiling of `max_missed × interval`.

mod counter;
mod phi;
mod stats;

pub use counter::{CounterConfig, CounterDetector, CounterState};
pub use phi::{phi, sigmas_for_phi, PhiConfig, PhiConfigError, PhiDetector, PhiState};
pub use stats::{ArrivalStats, SMOOTHING};

use std::time::{Duration, Instant};

/// Whole `interval`s of silence between `last_seen` and `now`: the "missed
/// beats" both policies report.
fn intervals_missed(last_seen: Instant, interval: Duration, now: Instant) -> u32 {
    let silent = now.saturating_duration_since(last_seen);
    let whole = silent.as_nanos() / interval.as_nanos().max(1);
    u32::try_from(whole).unwrap_or(u32::MAX)
}

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

/// What [`Detector::heartbeat`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// [`Transition::Recovered`] when the session was suspect.
    pub transition: Option<Transition>,
    /// A check to schedule in addition to the pending one, because the new
    /// arrival moved the session's next verdict before it. Rare (only an
    /// adaptive policy can ask for it); the pending check then finds itself
    /// superseded and returns no next check.
    pub earlier_check: Option<Instant>,
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

    /// A frame arrived at `now`. Usually only records it: the pending check
    /// notices the new arrival when it comes due.
    fn heartbeat(&self, state: &mut Self::State, now: Instant) -> HeartbeatOutcome;

    /// The check scheduled for this session came due at `now` (or later).
    fn check(&self, state: &mut Self::State, now: Instant) -> CheckOutcome;

    /// Liveness at `now`, without changing state.
    fn liveness(&self, state: &Self::State, now: Instant) -> Liveness;

    /// When the last frame arrived.
    fn last_seen(&self, state: &Self::State) -> Instant;

    /// The instant at which the session is dead if nothing arrives: the
    /// due time a `Dead` verdict is measured against.
    fn dead_at(&self, state: &Self::State) -> Instant;

    /// Mean gap between arrivals, as the admin API shows it.
    fn mean_interarrival(&self, state: &Self::State) -> Duration;

    /// Current phi, for policies that compute one.
    fn phi(&self, _state: &Self::State, _now: Instant) -> Option<f64> {
        None
    }
}
