//! Local health: time during which this process could not run is nobody
//! else's silence.
//!
//! A process that is stopped (SIGSTOP, a debugger), paused (a VM migrated or
//! starved of CPU) or blocked sees, when it runs again, a gap in its clock.
//! Heartbeats sent by healthy peers meanwhile sit unread in socket buffers.
//! Mosquitto, stopped for 15 s, drops every such client. The remedy here is
//! Lifeguard's idea of local health made concrete: the owner reports when
//! it goes to sleep and for how long it asked to sleep; any wake-up later
//! than that by more than a tolerance (or any stretch of work longer than
//! the tolerance) was time in which it could not listen, and is removed
//! from the *listening clock* that every deadline is judged by.
//!
//! The listening clock is the monotonic clock minus all stalls so far, so
//! it stays monotonic, costs O(1) however many sessions there are, and a
//! session that really died during a stall is still judged on the silence
//! observed before and after it: dropped within one deadline of the resume.
//!
//! A stall is only seen if the owner never sleeps longer than a bounded
//! time (its wait cap): a process stopped in the middle of a long wait that
//! is then ended early by traffic looks like a long wait. The undetectable
//! part of a stall is therefore at most the wait cap plus the tolerance.

use std::time::{Duration, Instant};

/// Converts monotonic instants into listening time; see the module documentation.
#[derive(Debug, Clone)]
pub struct ListeningClock {
    tolerance: Duration,
    /// Sum of all stalls so far.
    paused: Duration,
    /// The last instant reported, and how long the owner then meant to wait
    /// (`None`: it was working, or waiting with no deadline).
    last: Instant,
    allowed: Option<Duration>,
}

/// What [`ListeningClock::woke`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// The wake-up instant in listening time.
    pub listening: Instant,
    /// The stall just detected (since the previous report), if any.
    pub stalled: Option<Duration>,
}

impl ListeningClock {
    /// A clock starting at `now`; gaps up to `tolerance` beyond what was
    /// expected are ordinary scheduling delay, not stalls.
    pub fn new(now: Instant, tolerance: Duration) -> Self {
        Self {
            tolerance,
            paused: Duration::ZERO,
            last: now,
            allowed: Some(Duration::ZERO),
        }
    }

    /// `real` expressed in listening time.
    pub fn listening(&self, real: Instant) -> Instant {
        // Stalls are part of this process's lifetime, which began after the
        // clock's epoch, so this never underflows in practice.
        real.checked_sub(self.paused).unwrap_or(real)
    }

    /// Total stall time discounted so far.
    pub fn paused(&self) -> Duration {
        self.paused
    }

    /// The owner is about to wait at `now` for at most `timeout` (`None`:
    /// until something happens, when there is nothing to judge). The time
    /// since the last report (work, or a wait that ended without a wake-up
    /// report, such as one interrupted by a signal) is checked for a stall,
    /// which is returned.
    pub fn sleeping(&mut self, now: Instant, timeout: Option<Duration>) -> Option<Duration> {
        let stalled = self.absorb(now);
        self.allowed = timeout;
        stalled
    }

    /// The owner woke at `now`.
    pub fn woke(&mut self, now: Instant) -> Wake {
        let stalled = self.absorb(now);
        self.allowed = Some(Duration::ZERO);
        Wake {
            listening: self.listening(now),
            stalled,
        }
    }

    fn absorb(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let excess = gap.checked_sub(self.allowed?)?;
        if excess <= self.tolerance {
            return None;
        }
        self.paused += excess;
        Some(excess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn punctual_wake_ups_leave_the_clocks_equal() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        let mut now = t0;
        for _ in 0..100 {
            now += 2 * MS;
            clock.sleeping(now, Some(100 * MS));
            // Woken by traffic early, or by the timer up to 50 ms late.
            now += 120 * MS;
            let wake = clock.woke(now);
            assert_eq!(
                wake,
                Wake {
                    listening: now,
                    stalled: None
                }
            );
        }
    }

    #[test]
    fn a_late_wake_up_is_removed_from_listening_time() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        clock.sleeping(t0, Some(100 * MS));
        // SIGSTOP for 10 s in the middle of the wait.
        let resumed = t0 + 10_100 * MS;
        let wake = clock.woke(resumed);
        assert_eq!(wake.stalled, Some(10_000 * MS));
        assert_eq!(wake.listening, t0 + 100 * MS);
        // Later instants keep the same offset: the clock stays monotonic.
        assert_eq!(clock.listening(resumed + 5 * MS), t0 + 105 * MS);
    }

    #[test]
    fn a_long_stretch_of_work_counts_as_a_stall() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        clock.woke(t0);
        let stalled = clock.sleeping(t0 + 3000 * MS, Some(10 * MS));
        assert_eq!(stalled, Some(3000 * MS));
        assert_eq!(clock.listening(t0 + 3000 * MS), t0);
    }

    #[test]
    fn a_wait_interrupted_by_the_stop_is_caught_by_the_next_sleep() {
        // epoll_wait returns EINTR after SIGSTOP/SIGCONT: no wake-up report.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        clock.sleeping(t0, Some(100 * MS));
        assert_eq!(
            clock.sleeping(t0 + 2100 * MS, Some(100 * MS)),
            Some(2000 * MS)
        );
        assert_eq!(clock.woke(t0 + 2110 * MS).listening, t0 + 110 * MS);
    }

    #[test]
    fn waits_without_a_deadline_prove_nothing() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        clock.sleeping(t0, None);
        let wake = clock.woke(t0 + 60_000 * MS);
        assert_eq!(wake.stalled, None);
        assert_eq!(wake.listening, t0 + 60_000 * MS);
    }

    #[test]
    fn stalls_accumulate() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 50 * MS);
        clock.sleeping(t0, Some(100 * MS));
        clock.woke(t0 + 1100 * MS);
        clock.sleeping(t0 + 1100 * MS, Some(100 * MS));
        let wake = clock.woke(t0 + 3200 * MS);
        assert_eq!(wake.stalled, Some(2000 * MS));
        assert_eq!(clock.paused(), 3000 * MS);
        assert_eq!(wake.listening, t0 + 200 * MS);
    }
}
