//! The missed-beat counter of seed 003, with per-session deadlines.
//!
//! Seed 003 sweeps every session each interval and drops it at a count of 5,
//! so a session dies anywhere between 5 and 6 intervals after its last beat.
//! Here the count is derived from the time of the last frame, so each check
//! happens exactly when the next interval of silence completes and the
//! session dies exactly `max_missed × interval` after its last frame.

use std::time::{Duration, Instant};

use super::stats::ArrivalStats;
use super::{intervals_missed, CheckOutcome, Detector, HeartbeatOutcome, Liveness, Transition};
use crate::client::ping_after;

/// Parameters of the counter policy. The interval is per session (granted
/// at the handshake) and passed to [`Detector::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterConfig {
    /// Missed beats at which the session is dead.
    pub max_missed: u32,
}

impl Default for CounterConfig {
    /// Seed 003's value: dead after 5 missed beats (15 s at its 3 s interval).
    fn default() -> Self {
        Self { max_missed: 5 }
    }
}

/// Counter detector; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterDetector {
    config: CounterConfig,
}

/// Per-session state of the counter detector: 32 bytes. The interval is
/// kept in whole milliseconds, as the server grants it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterState {
    last_seen: Instant,
    /// The granted interval, whole ms: 4 bytes instead of a `Duration`'s 16,
    /// in a state every session holds.
    interval_ms: u32,
    /// Missed beats as of the last check; reset by any frame.
    missed: u32,
    /// Not used for verdicts; kept so that operators see the same mean
    /// inter-arrival whichever policy runs.
    stats: ArrivalStats,
}

impl CounterState {
    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }
}

impl CounterDetector {
    /// A counter detector with this configuration.
    ///
    /// # Panics
    /// If `max_missed` is zero: no session could live.
    pub fn new(config: CounterConfig) -> Self {
        assert!(config.max_missed > 0, "max_missed must be positive");
        Self { config }
    }

    /// The configuration in force.
    pub fn config(&self) -> CounterConfig {
        self.config
    }

    /// Silence after which a session with this state is dead.
    pub fn deadline_after(&self, state: &CounterState) -> Duration {
        state.interval() * self.config.max_missed
    }

    fn missed_at(&self, state: &CounterState, now: Instant) -> u32 {
        intervals_missed(state.last_seen, state.interval(), now)
    }
}

impl Detector for CounterDetector {
    type State = CounterState;

    fn start(&self, now: Instant, interval: Duration) -> (CounterState, Instant) {
        let state = CounterState {
            last_seen: now,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            missed: 0,
            stats: ArrivalStats::seeded(ping_after(interval)),
        };
        (state, now + interval)
    }

    fn heartbeat(&self, state: &mut CounterState, now: Instant) -> HeartbeatOutcome {
        if now > state.last_seen {
            state.stats.record(now - state.last_seen);
            state.last_seen = now;
        }
        let was_suspect = state.missed > 0;
        state.missed = 0;
        HeartbeatOutcome {
            transition: was_suspect.then_some(Transition::Recovered),
            // Deadlines only move later with new frames.
            earlier_check: None,
        }
    }

    fn check(&self, state: &mut CounterState, now: Instant) -> CheckOutcome {
        let missed = self.missed_at(state, now);
        if missed >= self.config.max_missed {
            return CheckOutcome {
                transition: Some(Transition::Dead {
                    silent_for: now.saturating_duration_since(state.last_seen),
                }),
                next_check: None,
            };
        }
        let transition = (missed > state.missed).then_some(Transition::Suspected { missed });
        state.missed = missed;
        CheckOutcome {
            transition,
            next_check: Some(state.last_seen + state.interval() * (missed + 1)),
        }
    }

    fn liveness(&self, state: &CounterState, now: Instant) -> Liveness {
        match self.missed_at(state, now) {
            0 => Liveness::Alive,
            missed if missed >= self.config.max_missed => Liveness::Dead,
            missed => Liveness::Suspect { missed },
        }
    }

    fn last_seen(&self, state: &CounterState) -> Instant {
        state.last_seen
    }

    fn dead_at(&self, state: &CounterState) -> Instant {
        state.last_seen + self.deadline_after(state)
    }

    fn mean_interarrival(&self, state: &CounterState) -> Duration {
        state.stats.mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn detector() -> CounterDetector {
        CounterDetector::new(CounterConfig { max_missed: 5 })
    }

    #[test]
    fn first_check_is_one_interval_after_joining() {
        let t0 = Instant::now();
        let (_, first_check) = detector().start(t0, 100 * MS);
        assert_eq!(first_check, t0 + 100 * MS);
    }

    #[test]
    fn silence_is_counted_once_per_interval_until_dead_at_exactly_the_deadline() {
        let detector = detector();
        let t0 = Instant::now();
        let (mut state, mut due) = detector.start(t0, 100 * MS);
        for expected_missed in 1..=4 {
            let outcome = detector.check(&mut state, due);
            assert_eq!(
                outcome.transition,
                Some(Transition::Suspected {
                    missed: expected_missed
                })
            );
            due = outcome.next_check.expect("alive sessions get a next check");
            assert_eq!(due, t0 + 100 * MS * (expected_missed + 1));
        }
        assert_eq!(due, t0 + 500 * MS);
        let just_before = detector.check(&mut state, due - Duration::from_nanos(1));
        assert_eq!(
            just_before.transition, None,
            "still 4 missed just before the deadline"
        );
        assert_eq!(just_before.next_check, Some(t0 + 500 * MS));
        let at_deadline = detector.check(&mut state, due);
        assert_eq!(
            at_deadline.transition,
            Some(Transition::Dead {
                silent_for: 500 * MS
            })
        );
        assert_eq!(at_deadline.next_check, None);
    }

    #[test]
    fn any_frame_recovers_a_suspect_session_and_moves_its_deadline() {
        let detector = detector();
        let t0 = Instant::now();
        let (mut state, due) = detector.start(t0, 100 * MS);
        assert_eq!(
            detector.check(&mut state, due).transition,
            Some(Transition::Suspected { missed: 1 })
        );
        assert_eq!(
            detector.liveness(&state, t0 + 150 * MS),
            Liveness::Suspect { missed: 1 }
        );
        assert_eq!(
            detector.heartbeat(&mut state, t0 + 150 * MS).transition,
            Some(Transition::Recovered)
        );
        assert_eq!(detector.liveness(&state, t0 + 150 * MS), Liveness::Alive);
        // The check that was pending (at 200 ms) finds the session alive and
        // moves on to one interval after the new frame.
        let outcome = detector.check(&mut state, t0 + 200 * MS);
        assert_eq!(outcome.transition, None);
        assert_eq!(outcome.next_check, Some(t0 + 250 * MS));
        // Dead only five intervals after the last frame, not after the first silence.
        let late = detector.check(&mut state, t0 + 649 * MS);
        assert_eq!(late.transition, Some(Transition::Suspected { missed: 4 }));
        let dead = detector.check(&mut state, t0 + 650 * MS);
        assert!(matches!(dead.transition, Some(Transition::Dead { .. })));
    }

    #[test]
    fn heartbeats_of_an_alive_session_report_nothing() {
        let detector = detector();
        let t0 = Instant::now();
        let (mut state, _) = detector.start(t0, 100 * MS);
        assert_eq!(
            detector.heartbeat(&mut state, t0 + 50 * MS),
            HeartbeatOutcome {
                transition: None,
                earlier_check: None
            }
        );
        assert_eq!(detector.last_seen(&state), t0 + 50 * MS);
    }

    #[test]
    fn a_late_check_after_a_long_gap_reports_the_whole_silence_at_once() {
        let detector = detector();
        let t0 = Instant::now();
        let (mut state, _) = detector.start(t0, 100 * MS);
        let outcome = detector.check(&mut state, t0 + 320 * MS);
        assert_eq!(
            outcome.transition,
            Some(Transition::Suspected { missed: 3 })
        );
        assert_eq!(outcome.next_check, Some(t0 + 400 * MS));
    }
}
