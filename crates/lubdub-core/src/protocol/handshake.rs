//! Handshake rules: which names may be claimed (the rules live in
//! [`super::name`]) and how the heartbeat interval is negotiated. Pure
//! functions, shared by the server (which enforces them) and the client
//! (which checks its own name before dialling).

use std::time::Duration;

pub use super::name::{validate_name, NameError};

/// The interval range a server grants and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalPolicy {
    /// Granted when the client asks for 0 (no preference).
    pub default: Duration,
    /// Shortest interval granted; shorter requests are raised to it.
    pub min: Duration,
    /// Longest interval granted; longer requests are lowered to it.
    pub max: Duration,
}

impl IntervalPolicy {
    /// The interval granted for a request of `requested_ms` milliseconds
    /// (0 meaning no preference): the request clamped to `[min, max]`.
    pub fn grant(&self, requested_ms: u32) -> Duration {
        if requested_ms == 0 {
            return self.default.clamp(self.min, self.max);
        }
        Duration::from_millis(u64::from(requested_ms)).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_clamped_to_the_policy() {
        let policy = IntervalPolicy {
            default: Duration::from_secs(3),
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(policy.grant(0), Duration::from_secs(3));
        assert_eq!(policy.grant(10), Duration::from_millis(100));
        assert_eq!(policy.grant(500), Duration::from_millis(500));
        assert_eq!(policy.grant(u32::MAX), Duration::from_secs(60));
    }
}
