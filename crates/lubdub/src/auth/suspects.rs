//! Sources whose secrets failed verification recently. The verification
//! queue serves the others first, so that addresses flooding wrong secrets
//! wait behind first logins from everywhere else, not in front of them.
//!
//! Sans-IO: the verifier threads pass the time in and keep one of these
//! beside the [`FairQueue`](super::fair_queue::FairQueue), behind its mutex.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a failed secret makes its source a suspect. A flood renews it
/// with every check; a user who mistyped once is served after the others
/// (still in turn) for a minute.
pub const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// Sources remembered at most: 65,536 entries of about 48 bytes, 3 MB.
pub const CAPACITY: usize = 65_536;

/// The last failure of each source, for [`REMEMBER_FOR`].
#[derive(Debug)]
pub struct Suspects<K> {
    remember_for: Duration,
    capacity: usize,
    last_failure: HashMap<K, Instant>,
}

impl<K: Hash + Eq> Default for Suspects<K> {
    fn default() -> Self {
        Self::new(REMEMBER_FOR, CAPACITY)
    }
}

impl<K: Hash + Eq> Suspects<K> {
    /// Remembers failures for `remember_for`, of at most `capacity` sources.
    pub fn new(remember_for: Duration, capacity: usize) -> Self {
        Self {
            remember_for,
            capacity: capacity.max(1),
            last_failure: HashMap::new(),
        }
    }

    /// A secret of `source` failed at `now`.
    pub fn failed(&mut self, source: K, now: Instant) {
        if self.last_failure.len() >= self.capacity && !self.last_failure.contains_key(&source) {
            let remember_for = self.remember_for;
            self.last_failure
                .retain(|_, at| now.saturating_duration_since(*at) < remember_for);
            if self.last_failure.len() >= self.capacity {
                // More failing sources than can be remembered: forget them
                // all rather than grow; they are served in turn again, as
                // if no one had failed (round robin still bounds the wait).
                self.last_failure.clear();
            }
        }
        self.last_failure.insert(source, now);
    }

    /// Whether a secret of `source` failed within the memory before `now`.
    pub fn is_suspect(&self, source: &K, now: Instant) -> bool {
        self.last_failure
            .get(source)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.remember_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_remembered_for_its_time_only() {
        let t0 = Instant::now();
        let mut suspects = Suspects::new(Duration::from_secs(60), 10);
        assert!(!suspects.is_suspect(&'a', t0));
        suspects.failed('a', t0);
        assert!(suspects.is_suspect(&'a', t0 + Duration::from_secs(59)));
        assert!(!suspects.is_suspect(&'a', t0 + Duration::from_secs(60)));
        assert!(!suspects.is_suspect(&'b', t0));
        // A new failure renews it.
        suspects.failed('a', t0 + Duration::from_secs(50));
        assert!(suspects.is_suspect(&'a', t0 + Duration::from_secs(100)));
    }

    #[test]
    fn memory_is_bounded_stale_entries_go_first() {
        let t0 = Instant::now();
        let mut suspects = Suspects::new(Duration::from_secs(60), 2);
        suspects.failed(1, t0);
        suspects.failed(2, t0 + Duration::from_secs(30));
        // 1 is stale by now and makes room; 2 is kept.
        suspects.failed(3, t0 + Duration::from_secs(61));
        let now = t0 + Duration::from_secs(61);
        assert!(suspects.is_suspect(&2, now));
        assert!(suspects.is_suspect(&3, now));
        // Nothing stale: all are forgotten rather than the map grown.
        suspects.failed(4, now);
        assert!(!suspects.is_suspect(&2, now));
        assert!(!suspects.is_suspect(&3, now));
        assert!(suspects.is_suspect(&4, now));
    }
}
