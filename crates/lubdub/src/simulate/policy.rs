//! The policies a simulation compares, and the detectors they stand for.
//!
//! `Detector` has an associated state type, so the two policies cannot share
//! a trait object; this enum picks the right generic replay instead.

use std::time::Duration;

use lubdub_core::detector::{CounterConfig, CounterDetector, PhiConfig, PhiDetector};

use super::model::Heartbeat;
use super::replay::{self, SessionOutcome};
use super::SimulateError;

/// Max-missed values tried for the counter.
pub const COUNTER_MAX_MISSED: std::ops::RangeInclusive<u32> = 1..=5;
/// Thresholds tried for phi.
pub const PHI_THRESHOLDS: std::ops::RangeInclusive<u32> = 1..=16;

/// One policy with one parameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// The missed-beat counter.
    Counter {
        /// Dead after this many silent intervals.
        max_missed: u32,
    },
    /// Phi accrual, with the shared guards of [`PhiGuards`].
    Phi {
        /// Phi at which a session is dead.
        threshold: f64,
    },
}

impl Policy {
    /// The policy's name, as the table and the JSON show it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Counter { .. } => "counter",
            Self::Phi { .. } => "phi",
        }
    }

    /// The value that varies: max-missed or threshold.
    pub fn parameter(&self) -> f64 {
        match *self {
            Self::Counter { max_missed } => f64::from(max_missed),
            Self::Phi { threshold } => threshold,
        }
    }
}

/// Phi's parameters other than the threshold, the same for every phi policy
/// of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiGuards {
    /// Floor under the measured standard deviation.
    pub min_std_dev: Duration,
    /// Silence beyond the mean tolerated before phi rises.
    pub acceptable_pause: Duration,
    /// Hard ceiling, in intervals.
    pub max_missed: u32,
}

impl Default for PhiGuards {
    /// The core's defaults.
    fn default() -> Self {
        let config = PhiConfig::default();
        Self {
            min_std_dev: config.min_std_dev,
            acceptable_pause: config.acceptable_pause,
            max_missed: config.max_missed,
        }
    }
}

/// Every policy a run compares: the counter at each max-missed, then phi at
/// each threshold.
pub fn all() -> Vec<Policy> {
    COUNTER_MAX_MISSED
        .map(|max_missed| Policy::Counter { max_missed })
        .chain(PHI_THRESHOLDS.map(|threshold| Policy::Phi {
            threshold: f64::from(threshold),
        }))
        .collect()
}

/// A policy made concrete, ready to replay sessions.
#[derive(Debug, Clone, Copy)]
pub enum Judge {
    /// A counter detector.
    Counter(CounterDetector),
    /// A phi detector.
    Phi(PhiDetector),
}

impl Judge {
    /// Builds the detector for `policy`.
    ///
    /// # Errors
    /// [`SimulateError::Phi`] when the phi guards cannot work, and
    /// [`SimulateError::Model`] for a counter with `max_missed` 0.
    pub fn new(policy: Policy, guards: PhiGuards) -> Result<Self, SimulateError> {
        match policy {
            Policy::Counter { max_missed: 0 } => {
                Err(SimulateError::Model("max-missed must be positive".into()))
            }
            Policy::Counter { max_missed } => {
                Ok(Self::Counter(CounterDetector::new(CounterConfig {
                    max_missed,
                })))
            }
            Policy::Phi { threshold } => Ok(Self::Phi(PhiDetector::new(PhiConfig {
                threshold,
                min_std_dev: guards.min_std_dev,
                acceptable_pause: guards.acceptable_pause,
                max_missed: guards.max_missed,
            })?)),
        }
    }

    /// Silence after which this policy drops any session, whatever it
    /// has learnt.
    pub fn ceiling(&self, interval: Duration) -> Duration {
        let max_missed = match self {
            Self::Counter(detector) => detector.config().max_missed,
            Self::Phi(detector) => detector.config().max_missed,
        };
        interval * max_missed
    }

    /// Replays one session; see [`replay::session`].
    pub fn replay(
        &self,
        interval: Duration,
        beats: &[Heartbeat],
        end: Duration,
        crashes: &[Duration],
    ) -> SessionOutcome {
        let ceiling = self.ceiling(interval);
        match self {
            Self::Counter(detector) => {
                replay::session(detector, interval, ceiling, beats, end, crashes)
            }
            Self::Phi(detector) => {
                replay::session(detector, interval, ceiling, beats, end, crashes)
            }
        }
    }
}
