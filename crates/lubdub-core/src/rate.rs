//! Rate limits by the generic cell rate algorithm (GCRA).
//!
//! One `u64` of state per limited flow: the *theoretical arrival time* of
//! the next event if the flow kept exactly to its rate. An event is allowed
//! when it comes no earlier than that time minus the burst tolerance. A
//! token bucket decides the same, but needs a token count and a refill
//! instant; every established session carries two of these limiters, so
//! the smaller state is worth having. Time is passed in as microseconds
//! since an origin of the caller's choosing.

use std::time::Duration;

/// A flow's rate: a steady spacing between events, plus a burst of events
/// that may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Steady spacing between events, in microseconds; 0 means unlimited.
    pub spacing_us: u64,
    /// Events allowed at once (at least 1).
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        spacing_us: 0,
        burst: 1,
    };

    /// `per_second` events a second with bursts of `burst`; 0 per second is unlimited.
    pub fn per_second(per_second: u32, burst: u32) -> Rate {
        if per_second == 0 {
            return Rate::UNLIMITED;
        }
        Rate {
            spacing_us: (1_000_000 / u64::from(per_second)).max(1),
            burst: burst.max(1),
        }
    }

    /// One event per `spacing` with bursts of `burst`; a zero spacing is
    /// unlimited.
    ///
    /// The spacing is rounded *up* to whole microseconds, so that the limit
    /// is never more lenient than asked. Rounded down (`as_micros`), any
    /// spacing under 1 µs became 0, which means unlimited: a session granted
    /// 1 ms with more than 1,000 PINGs allowed per interval could send PINGs
    /// without any limit (found by the `session_machine` fuzz target).
    pub fn every(spacing: Duration, burst: u32) -> Rate {
        Rate {
            spacing_us: u64::try_from(spacing.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX),
            burst: burst.max(1),
        }
    }

    /// Whether this rate limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.spacing_us == 0
    }

    fn tolerance_us(&self) -> u64 {
        self.spacing_us
            .saturating_mul(u64::from(self.burst.max(1) - 1))
    }
}

/// The limiter state of one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Theoretical arrival time of the next event, µs since the caller's origin.
    next_us: u64,
}

impl Gcra {
    /// A flow that has seen no events: a whole burst is allowed.
    pub const fn new() -> Self {
        Self { next_us: 0 }
    }

    /// Counts an event at `now_us` if `rate` allows it; a refused event is
    /// not counted, so a flow that slows down to its rate is allowed again.
    pub fn allow(&mut self, now_us: u64, rate: Rate) -> bool {
        self.allow_with_grace(now_us, rate, 0)
    }

    /// [`allow`](Self::allow) with `grace_us` more burst tolerance: events
    /// that may have been held up that long arrive together.
    pub fn allow_with_grace(&mut self, now_us: u64, rate: Rate, grace_us: u64) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        let next = self.next_us.max(now_us);
        if next - now_us > rate.tolerance_us().saturating_add(grace_us) {
            return false;
        }
        self.next_us = next.saturating_add(rate.spacing_us);
        true
    }

    /// Whether the flow has come back to rest by `now_us`: a full burst is
    /// allowed again, and the state can be forgotten.
    pub fn is_idle(&self, now_us: u64) -> bool {
        self.next_us <= now_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let rate = Rate::per_second(10, 3);
        let mut flow = Gcra::new();
        let start = 5_000_000;
        assert!((0..3).all(|_| flow.allow(start, rate)), "burst of 3");
        assert!(!flow.allow(start, rate), "4th at once is refused");
        // One spacing (100 ms) later, one more is allowed, then refused again.
        assert!(!flow.allow(start + 99_999, rate));
        assert!(flow.allow(start + 100_000, rate));
        assert!(!flow.allow(start + 100_000, rate));
    }

    #[test]
    fn refused_events_are_not_counted() {
        let rate = Rate::per_second(10, 1);
        let mut flow = Gcra::new();
        assert!(flow.allow(0, rate));
        for t in (1..100_000).step_by(1_000) {
            assert!(!flow.allow(t, rate));
        }
        assert!(
            flow.allow(100_000, rate),
            "a flood does not push the next slot back"
        );
    }

    #[test]
    fn an_idle_flow_gets_its_whole_burst_back() {
        let rate = Rate::per_second(100, 5);
        let mut flow = Gcra::new();
        assert!((0..5).all(|_| flow.allow(1_000, rate)));
        assert!(!flow.is_idle(1_000));
        assert!(flow.is_idle(51_000));
        assert!((0..5).all(|_| flow.allow(51_000, rate)));
    }

    #[test]
    fn a_spacing_is_rounded_up_never_down_to_unlimited() {
        // Regression (fuzz, session_machine): 1 ms / 2,000 PINGs per
        // interval is 500 ns, which `as_micros` turned into 0: unlimited.
        let rate = Rate::every(Duration::from_millis(1) / 2_000, 1);
        assert_eq!(rate.spacing_us, 1);
        assert!(!rate.is_unlimited());
        let mut flow = Gcra::new();
        assert!(flow.allow(0, rate));
        assert!(!flow.allow(0, rate), "a second event at once is refused");
        assert_eq!(
            Rate::every(Duration::from_nanos(250_250), 1).spacing_us,
            251
        );
        assert_eq!(
            Rate::every(Duration::from_millis(750), 1).spacing_us,
            750_000
        );
        assert!(Rate::every(Duration::ZERO, 1).is_unlimited());
    }

    #[test]
    fn zero_is_unlimited() {
        let mut flow = Gcra::new();
        assert!((0..10_000).all(|_| flow.allow(0, Rate::per_second(0, 0))));
    }

    proptest::proptest! {
        /// Over any window, a flow is allowed at most its burst plus one
        /// event per spacing: the bound the server's limits promise.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_second in 1u32..10_000,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..20_000, 1..400),
        ) {
            let rate = Rate::per_second(per_second, burst);
            let mut flow = Gcra::new();
            let mut now = 0;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                if flow.allow(now, rate) {
                    allowed += 1;
                }
            }
            let bound = u64::from(burst) + now / rate.spacing_us;
            proptest::prop_assert!(allowed <= bound, "{allowed} > {bound}");
        }
    }
}
