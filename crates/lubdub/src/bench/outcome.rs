//! What happened to one benchmark session, and the arithmetic of its
//! detection error. Plain data and pure functions: the scenario fills these
//! in, the report aggregates them, and unit tests use synthetic instants.

use std::time::{Duration, Instant};

use lubdub_core::protocol::ReasonCode;

/// How the end of a silent session was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server sent BYE with this reason.
    Bye(ReasonCode),
    /// The server closed the connection without a BYE.
    Closed,
    /// The socket failed (a reset, for example), or the server sent garbage.
    Failed(String),
}

impl Ending {
    /// Whether this is the ending the protocol prescribes for a silent
    /// session: BYE `timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Ending::Bye(ReasonCode::Timeout))
    }
}

/// A session that heartbeated through the warm-up and then fell silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilentSession {
    /// Instant just before its last PING (or its HELLO) was written.
    pub last_sent: Instant,
    /// Granted interval × max missed, from its WELCOME.
    pub deadline: Duration,
    /// When and how the server ended it; `None` when it was still open at
    /// `last_sent + deadline + grace`.
    pub end: Option<(Instant, Ending)>,
}

impl SilentSession {
    /// When the server may drop it at the earliest: `last_sent + deadline`.
    pub fn due(&self) -> Instant {
        self.last_sent + self.deadline
    }

    /// Its detection error in nanoseconds (see [`detection_error_ns`]), or
    /// `None` when no end was observed.
    pub fn error_ns(&self) -> Option<i64> {
        self.end
            .as_ref()
            .map(|(at, _)| detection_error_ns(self.last_sent, self.deadline, *at))
    }
}

/// What became of one session of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// It never got a WELCOME.
    HandshakeFailed {
        /// Why, as displayed.
        error: String,
    },
    /// It ended before the silence began, so it measures nothing.
    LostDuringWarmup {
        /// How, as displayed.
        error: String,
    },
    /// It fell silent as planned.
    Silent(SilentSession),
}

/// Detection error: `observed_end − (last_sent + deadline)`, in nanoseconds.
/// Positive means the drop came late by that much; negative means it came
/// before the deadline, which the protocol forbids.
pub fn detection_error_ns(last_sent: Instant, deadline: Duration, observed_end: Instant) -> i64 {
    let due = last_sent + deadline;
    match observed_end.checked_duration_since(due) {
        Some(late) => saturating_nanos(late),
        None => -saturating_nanos(due - observed_end),
    }
}

fn saturating_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_drop_after_the_deadline_has_a_positive_error() {
        let t0 = Instant::now();
        assert_eq!(
            detection_error_ns(t0, 500 * MS, t0 + 503 * MS),
            3_000_000,
            "3 ms late"
        );
    }

    #[test]
    fn a_drop_before_the_deadline_has_a_negative_error() {
        let t0 = Instant::now();
        assert_eq!(detection_error_ns(t0, 500 * MS, t0 + 499 * MS), -1_000_000);
        assert_eq!(detection_error_ns(t0, 500 * MS, t0 + 500 * MS), 0);
    }

    #[test]
    fn a_silent_session_measures_from_its_own_last_ping() {
        let t0 = Instant::now();
        let session = SilentSession {
            last_sent: t0 + 70 * MS,
            deadline: 500 * MS,
            end: Some((t0 + 572 * MS, Ending::Bye(ReasonCode::Timeout))),
        };
        assert_eq!(session.due(), t0 + 570 * MS);
        assert_eq!(session.error_ns(), Some(2_000_000));
        let never = SilentSession {
            end: None,
            ..session
        };
        assert_eq!(never.error_ns(), None);
    }

    #[test]
    fn only_bye_timeout_counts_as_the_prescribed_ending() {
        assert!(Ending::Bye(ReasonCode::Timeout).is_timeout());
        assert!(!Ending::Bye(ReasonCode::Shutdown).is_timeout());
        assert!(!Ending::Closed.is_timeout());
        assert!(!Ending::Failed("reset".into()).is_timeout());
    }
}
