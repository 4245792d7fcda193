//! Reconnect delays: exponential backoff with full jitter.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads
//! a fleet that lost the same server over the whole window instead of
//! reconnecting in synchronised waves. The random draw is passed in, so the
//! arithmetic is tested without randomness.

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Cap of the first retry's window.
    pub initial: Duration,
    /// Largest window, however many attempts failed.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Window for retry number `attempt` (0 for the first): `initial × 2^attempt`, capped at `max`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay for retry `attempt`, given `unit`, a uniform draw in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.window(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_until_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let windows: Vec<u64> = (0..6)
            .map(|a| backoff.window(a).as_millis() as u64)
            .collect();
        assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.window(500), Duration::from_secs(1));
    }

    #[test]
    fn delays_span_zero_to_the_window() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(2, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(400));
        assert!(backoff.delay(2, 0.999) < backoff.window(2));
    }
}
