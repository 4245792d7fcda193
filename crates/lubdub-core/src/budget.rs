//! Work budgets for fan-out: a sender's messages cost what they make the
//! server do (deliveries and bytes written), not the frames it sent.
//!
//! One MSG to `#everyone` at 2,000 sessions is 2,000 writes; a frame rate
//! alone let one session make the loop write 200,000 frames a second. A
//! [`FanoutBudget`] is a GCRA over *work time*: each delivery costs
//! `1 / deliveries_per_sec` seconds of budget and each byte
//! `1 / bytes_per_sec`. A fan-out is allowed while the flow's debt is within
//! its burst window, and is then charged in full, however large: a broadcast
//! to more sessions than one burst allows is still delivered when the flow
//! is at rest, and the sender waits for it afterwards. Over any window `T`
//! a flow gets at most `T + burst` of work plus one fan-out. The server
//! keeps one budget per session and one for its whole loop.

use std::time::Duration;

/// How much fan-out work a flow may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Deliveries (one MSG written to one recipient) a second; 0 is unlimited.
    pub deliveries_per_sec: u32,
    /// Bytes written to recipients a second; 0 is unlimited.
    pub bytes_per_sec: u64,
    /// Work that may be done at once beyond the steady rate.
    pub burst: Duration,
}

impl FanoutLimits {
    /// No limit at all.
    pub const UNLIMITED: FanoutLimits = FanoutLimits {
        deliveries_per_sec: 0,
        bytes_per_sec: 0,
        burst: Duration::ZERO,
    };

    /// Whether this limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.deliveries_per_sec == 0 && self.bytes_per_sec == 0
    }

    /// The budget, in nanoseconds, that `deliveries` writes of `bytes_each`
    /// bytes cost.
    pub fn cost_ns(&self, deliveries: u32, bytes_each: usize) -> u64 {
        let per_delivery = if self.deliveries_per_sec == 0 {
            0
        } else {
            1_000_000_000 / u64::from(self.deliveries_per_sec)
        };
        let bytes = u64::from(deliveries).saturating_mul(bytes_each as u64);
        let for_bytes = if self.bytes_per_sec == 0 {
            0
        } else {
            // u128: a billion times a large byte count overflows u64.
            u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec))
                .unwrap_or(u64::MAX)
        };
        u64::from(deliveries)
            .saturating_mul(per_delivery)
            .saturating_add(for_bytes)
    }
}

/// One flow's fan-out debt: 8 bytes, kept per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutBudget {
    /// When the work charged so far is paid off, in ns since the caller's
    /// origin (0: never charged).
    paid_off_ns: u64,
}

impl FanoutBudget {
    /// A flow that has done no work: a whole burst is allowed.
    pub const fn new() -> Self {
        Self { paid_off_ns: 0 }
    }

    /// Whether a fan-out may start at `now_us` (µs since the caller's
    /// origin); if not, how long until it may.
    ///
    /// # Errors
    /// The wait until the flow's debt is back within its burst.
    pub fn check(&self, now_us: u64, limits: &FanoutLimits) -> Result<(), Duration> {
        if limits.is_unlimited() {
            return Ok(());
        }
        let now_ns = now_us.saturating_mul(1_000);
        let debt = self.paid_off_ns.saturating_sub(now_ns);
        let burst = u64::try_from(limits.burst.as_nanos()).unwrap_or(u64::MAX);
        if debt <= burst {
            Ok(())
        } else {
            Err(Duration::from_nanos(debt - burst))
        }
    }

    /// Charges a fan-out of `deliveries` writes of `bytes_each` bytes at
    /// `now_us`. Call after [`check`](Self::check) allowed it (and any other
    /// budget that must agree did too).
    pub fn charge(
        &mut self,
        now_us: u64,
        deliveries: u32,
        bytes_each: usize,
        limits: &FanoutLimits,
    ) {
        if limits.is_unlimited() {
            return;
        }
        let now_ns = now_us.saturating_mul(1_000);
        self.paid_off_ns = self
            .paid_off_ns
            .max(now_ns)
            .saturating_add(limits.cost_ns(deliveries, bytes_each));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FanoutLimits {
        FanoutLimits {
            deliveries_per_sec: 1_000,
            bytes_per_sec: 1_000_000,
            burst: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_delivery_costs_its_share_of_both_rates() {
        // 1 ms for the delivery, 0.5 ms for its 500 bytes.
        assert_eq!(limits().cost_ns(1, 500), 1_500_000);
        assert_eq!(limits().cost_ns(2_000, 500), 3_000_000_000);
        assert_eq!(FanoutLimits::UNLIMITED.cost_ns(1_000_000, 60_000), 0);
    }

    #[test]
    fn a_broadcast_larger_than_the_burst_goes_out_at_rest_then_the_sender_waits() {
        let limits = limits();
        let mut budget = FanoutBudget::new();
        let start = 10_000_000;
        assert_eq!(budget.check(start, &limits), Ok(()));
        // 3 s of work: delivered, and the flow owes 3 s.
        budget.charge(start, 2_000, 500, &limits);
        // Allowed again once the debt is back within the 1 s burst.
        assert_eq!(
            budget.check(start, &limits),
            Err(Duration::from_secs(2)),
            "the refusal says how long to wait"
        );
        assert!(budget.check(start + 1_999_999, &limits).is_err());
        assert_eq!(budget.check(start + 2_000_000, &limits), Ok(()));
    }

    #[test]
    fn small_messages_flow_at_the_steady_rate_after_a_burst() {
        let limits = limits();
        let mut budget = FanoutBudget::new();
        let mut now = 5_000_000u64;
        let mut allowed = 0;
        // One direct message of 100 bytes (1.1 ms of work) offered every
        // 0.1 ms for 10 s: a burst of about 1 s of work, then one per 1.1 ms.
        for _ in 0..100_000 {
            if budget.check(now, &limits).is_ok() {
                budget.charge(now, 1, 100, &limits);
                allowed += 1;
            }
            now += 100;
        }
        // (10 s + 1 s burst) / 1.1 ms = 10,000, plus the one charged last.
        assert!((9_990..=10_002).contains(&allowed), "{allowed}");
    }

    #[test]
    fn unlimited_allows_everything_and_charges_nothing() {
        let mut budget = FanoutBudget::new();
        for _ in 0..1_000 {
            assert_eq!(budget.check(0, &FanoutLimits::UNLIMITED), Ok(()));
            budget.charge(0, u32::MAX, usize::MAX, &FanoutLimits::UNLIMITED);
        }
        assert_eq!(budget, FanoutBudget::new());
    }

    proptest::proptest! {
        /// Over any run, the work allowed is at most the time elapsed plus
        /// the burst plus the last fan-out charged: the bound SECURITY.md
        /// states.
        #[test]
        fn never_more_work_than_time_plus_burst_plus_one(
            offers in proptest::collection::vec((0u64..50_000, 1u32..3_000, 1usize..65_536), 1..300),
        ) {
            let limits = limits();
            let mut budget = FanoutBudget::new();
            let mut now = 0u64;
            let mut work_ns = 0u64;
            let mut largest = 0u64;
            for (gap, deliveries, bytes) in offers {
                now += gap;
                if budget.check(now, &limits).is_ok() {
                    let cost = limits.cost_ns(deliveries, bytes);
                    budget.charge(now, deliveries, bytes, &limits);
                    work_ns += cost;
                    largest = largest.max(cost);
                }
            }
            let bound = now * 1_000 + 1_000_000_000 + largest;
            proptest::prop_assert!(work_ns <= bound, "{work_ns} > {bound}");
        }
    }
}
