//! Running statistics of a session's inter-arrival times in O(1) memory.
//!
//! Akka and Cassandra keep a window of up to 1,000 samples per monitored
//! node. At tens of thousands of sessions per process (and a million on a
//! large machine) such windows would cost gigabytes, so lubdub keeps an
//! exponentially weighted mean and variance instead: two `f32`, updated in a
//! handful of floating-point operations per arrival (Finch, "Incremental
//! calculation of weighted mean and variance", 2009, §9).

use std::time::Duration;

/// Weight of the newest sample. 1/32 makes the estimate follow roughly the
/// last 60 arrivals (2/(N+1) ≈ α): slow enough that one late heartbeat does
/// not collapse the mean, fast enough to follow a network whose jitter changes
/// within minutes.
pub const SMOOTHING: f64 = 1.0 / 32.0;

/// Exponentially weighted mean and variance of inter-arrival times, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalStats {
    mean: f32,
    variance: f32,
}

impl ArrivalStats {
    /// Statistics before any sample: mean `expected`, standard deviation a
    /// quarter of it (Akka's `first-heartbeat-estimate` seeding), so that the
    /// first gaps are judged leniently until real samples arrive.
    pub fn seeded(expected: Duration) -> Self {
        let mean = expected.as_secs_f64();
        Self {
            mean: mean as f32,
            variance: (mean / 4.0).powi(2) as f32,
        }
    }

    /// Adds one inter-arrival gap.
    pub fn record(&mut self, gap: Duration) {
        let sample = gap.as_secs_f64();
        let mean = f64::from(self.mean);
        let diff = sample - mean;
        let increment = SMOOTHING * diff;
        self.mean = (mean + increment) as f32;
        self.variance = ((1.0 - SMOOTHING) * (f64::from(self.variance) + diff * increment)) as f32;
    }

    /// Mean gap, in seconds.
    pub fn mean_secs(&self) -> f64 {
        f64::from(self.mean)
    }

    /// Standard deviation of the gaps, in seconds.
    pub fn std_dev_secs(&self) -> f64 {
        f64::from(self.variance).max(0.0).sqrt()
    }

    /// Mean gap as a duration.
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.mean_secs().max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_gaps_converge_to_their_value_with_vanishing_spread() {
        let mut stats = ArrivalStats::seeded(Duration::from_secs(2));
        for _ in 0..1000 {
            stats.record(Duration::from_millis(500));
        }
        assert!((stats.mean_secs() - 0.5).abs() < 1e-4, "{stats:?}");
        assert!(stats.std_dev_secs() < 1e-3, "{stats:?}");
    }

    #[test]
    fn one_update_matches_the_hand_computed_recurrence() {
        // mean 1.0, variance 0.0625; sample 2.0: diff 1, increment 1/32.
        let mut stats = ArrivalStats::seeded(Duration::from_secs(1));
        stats.record(Duration::from_secs(2));
        assert!((stats.mean_secs() - 1.031_25).abs() < 1e-6);
        // (31/32) × (0.0625 + 1/32) = 0.090_820_312_5
        let variance = stats.std_dev_secs().powi(2);
        assert!((variance - 0.090_820_312_5).abs() < 1e-6, "{variance}");
    }

    #[test]
    fn alternating_gaps_estimate_their_mean_and_spread() {
        let mut stats = ArrivalStats::seeded(Duration::from_secs(1));
        for i in 0..2000 {
            let ms = if i % 2 == 0 { 900 } else { 1100 };
            stats.record(Duration::from_millis(ms));
        }
        assert!((stats.mean_secs() - 1.0).abs() < 0.01, "{stats:?}");
        assert!((stats.std_dev_secs() - 0.1).abs() < 0.01, "{stats:?}");
    }
}
