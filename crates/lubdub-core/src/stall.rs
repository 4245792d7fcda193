//! Local health: time during which this process could not run is nobody
//! else's silence.
//!
//! A process that is stopped (SIGSTOP, a debugger), paused (a VM migrated or
//! starved of CPU) or blocked sees, when it runs again, a gap in its clock.
//! Heartbeats sent by healthy peers meanwhile sit unread in socket buffers.
//! Mosquitto, stopped for 15 s, drops every such client. The remedy here is
//! Lifeguard's idea of local health made concrete: the owner reports, at
//! each sleep and each wake-up, the monotonic time, the CPU time its whole
//! process has used (every thread's) and how long it asked to sleep. Wall
//! time that is explained neither by the requested sleep nor by CPU the
//! process used is time in which it could not run; beyond a tolerance it is
//! a stall, and is removed from the *listening clock* that every deadline is
//! judged by.
//!
//! Busy work is not a stall: a loop that spends 300 ms reading a flood of
//! frames used 300 ms of CPU, so those 300 ms count as listening time and
//! sessions are still judged while the server is loaded. Nor is work done
//! by the process's other threads (an admin thread serialising a long
//! listing, a verifier hashing passwords): when they take the CPU the owner
//! wanted, the process was running, not stopped, so that time is listening
//! time too. Counting only the owner thread's CPU once made 20 admin pollers
//! look like 0.4–1.7 s of "stall", removed from every deadline. A stopped
//! process or a paused VM uses no CPU in any thread, so it is still told
//! apart; only time in which no thread of the process ran is left out.
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
    /// The last instant and process CPU time reported, and how long the owner then
    /// meant to wait (zero: it was working; `None`: waiting with no deadline).
    last: Instant,
    last_cpu: Duration,
    allowed: Option<Duration>,
    /// When `last_cpu` was read: it is refreshed only when a stall is
    /// possible or [`CPU_READ_PERIOD`] has passed.
    cpu_read_at: Instant,
}

/// Longest time the owner's CPU reading may be reused. A process's CPU time
/// has no vDSO fast path: each reading is a system call, and an idle server
/// woken once per heartbeat made two per heartbeat, about a tenth of its
/// cost. A reading at most this old understates a later stall by at most
/// this much, against a tolerance ten times larger.
pub const CPU_READ_PERIOD: Duration = Duration::from_millis(10);

/// What [`ListeningClock::woke`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// The wake-up instant in listening time.
    pub listening: Instant,
    /// The stall just detected (since the previous report), if any.
    pub stalled: Option<Duration>,
}

impl ListeningClock {
    /// A clock starting at `now`, when the owner's process had used `cpu`
    /// (all its threads together); gaps up to
    /// `tolerance` beyond what was expected are ordinary scheduling delay,
    /// not stalls.
    pub fn new(now: Instant, cpu: Duration, tolerance: Duration) -> Self {
        Self {
            tolerance,
            paused: Duration::ZERO,
            last: now,
            last_cpu: cpu,
            allowed: Some(Duration::ZERO),
            cpu_read_at: now,
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
    /// which is returned. `cpu` reads the CPU time of the owner's process
    /// (every thread's, the owner's own included); it is called only when
    /// the answer could matter (see [`CPU_READ_PERIOD`]).
    pub fn sleeping(
        &mut self,
        now: Instant,
        cpu: impl FnOnce() -> Duration,
        timeout: Option<Duration>,
    ) -> Option<Duration> {
        let stalled = self.absorb(now, cpu);
        self.allowed = timeout;
        stalled
    }

    /// The owner woke at `now`, or is running at `now` in the middle of its
    /// work; `cpu` reads the CPU time its process has used so far (all
    /// threads). Reported before each decision dated by its own instant,
    /// it catches a stop that came during the work before that decision.
    pub fn woke(&mut self, now: Instant, cpu: impl FnOnce() -> Duration) -> Wake {
        let stalled = self.absorb(now, cpu);
        self.allowed = Some(Duration::ZERO);
        Wake {
            listening: self.listening(now),
            stalled,
        }
    }

    fn absorb(&mut self, now: Instant, cpu: impl FnOnce() -> Duration) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // A gap within what was allowed plus the tolerance is no stall
        // whatever the CPU time says: skip the reading unless it is getting old.
        let stall_possible = self
            .allowed
            .is_some_and(|allowed| gap > allowed + self.tolerance);
        if !stall_possible && now.saturating_duration_since(self.cpu_read_at) < CPU_READ_PERIOD {
            return None;
        }
        let cpu = cpu();
        // `last_cpu` may be up to CPU_READ_PERIOD older than `last`: the
        // CPU used in between counts as used now, understating a stall by
        // at most that much. On several cores the process may use more CPU
        // than wall time passed; the subtraction saturates at no stall.
        let used = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = self.last_cpu.max(cpu);
        self.cpu_read_at = now;
        let unexplained = gap.saturating_sub(used).checked_sub(self.allowed?)?;
        if unexplained <= self.tolerance {
            return None;
        }
        self.paused += unexplained;
        Some(unexplained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const NO_CPU: Duration = Duration::ZERO;

    #[test]
    fn punctual_wake_ups_leave_the_clocks_equal() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        let mut now = t0;
        let mut cpu = NO_CPU;
        for _ in 0..100 {
            // 2 ms of work, all of it on the CPU.
            now += 2 * MS;
            cpu += 2 * MS;
            clock.sleeping(now, || cpu, Some(100 * MS));
            // Woken by traffic early, or by the timer up to 50 ms late.
            now += 120 * MS;
            let wake = clock.woke(now, || cpu);
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
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.sleeping(t0, || NO_CPU, Some(100 * MS));
        // SIGSTOP for 10 s in the middle of the wait.
        let resumed = t0 + 10_100 * MS;
        let wake = clock.woke(resumed, || NO_CPU);
        assert_eq!(wake.stalled, Some(10_000 * MS));
        assert_eq!(wake.listening, t0 + 100 * MS);
        // Later instants keep the same offset: the clock stays monotonic.
        assert_eq!(clock.listening(resumed + 5 * MS), t0 + 105 * MS);
    }

    #[test]
    fn a_long_stretch_of_work_without_cpu_is_a_stall() {
        // Stopped (or starved of CPU) in the middle of its work.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.woke(t0, || NO_CPU);
        let stalled = clock.sleeping(t0 + 3000 * MS, || 10 * MS, Some(10 * MS));
        assert_eq!(stalled, Some(2990 * MS));
        assert_eq!(clock.listening(t0 + 3000 * MS), t0 + 10 * MS);
    }

    #[test]
    fn the_cpu_time_is_read_only_when_a_stall_is_possible_or_the_reading_is_old() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        let reads = std::cell::Cell::new(0u32);
        let cpu = || {
            reads.set(reads.get() + 1);
            NO_CPU
        };
        // A second of busy turns: 1 ms of work, then a wait of at most 1 ms.
        let mut now = t0;
        for _ in 0..500 {
            now += MS;
            clock.sleeping(now, cpu, Some(MS));
            now += MS;
            clock.woke(now, cpu);
        }
        let per_period = (1000 * MS).as_nanos() / CPU_READ_PERIOD.as_nanos();
        assert!(
            u128::from(reads.get()) <= per_period + 1,
            "{} readings",
            reads.get()
        );
        // A gap that could be a stall is always measured.
        let before = reads.get();
        clock.sleeping(now, cpu, Some(MS));
        assert!(clock.woke(now + 500 * MS, cpu).stalled.is_some());
        assert_eq!(reads.get(), before + 1);
    }

    #[test]
    fn busy_work_is_listening_time() {
        // 300 ms spent handling a flood of frames is not a stall: sessions
        // must still be judged while the server is loaded.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.woke(t0, || NO_CPU);
        assert_eq!(clock.sleeping(t0 + 300 * MS, || 290 * MS, Some(MS)), None);
        assert_eq!(
            clock.woke(t0 + 301 * MS, || 290 * MS).listening,
            t0 + 301 * MS
        );
    }

    #[test]
    fn cpu_taken_by_the_processs_other_threads_is_listening_time() {
        // The loop asked for no wait, but an admin thread serialising a
        // long listing had the only free CPU for 400 ms: the loop itself
        // used 5 ms, the process 395 ms. The process was running, so no
        // deadline may be pushed back by that time.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.woke(t0, || NO_CPU);
        assert_eq!(clock.sleeping(t0 + 400 * MS, || 395 * MS, Some(MS)), None);
        assert_eq!(
            clock.woke(t0 + 401 * MS, || 396 * MS).listening,
            t0 + 401 * MS
        );
        assert_eq!(clock.paused(), Duration::ZERO);
    }

    #[test]
    fn a_stopped_process_is_told_apart_from_a_busy_one() {
        // The same 400 ms, in which no thread of the process ran (SIGSTOP,
        // a paused VM): a stall.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, 30 * MS, 50 * MS);
        clock.woke(t0, || 30 * MS);
        assert_eq!(
            clock.sleeping(t0 + 400 * MS, || 30 * MS, Some(MS)),
            Some(400 * MS)
        );
        assert_eq!(clock.listening(t0 + 400 * MS), t0);
    }

    #[test]
    fn other_threads_explain_only_the_time_they_ran() {
        // Stopped for 2 s of a 2.2 s gap; the process's threads ran 150 ms
        // of it (on another core, or before the stop): only the rest is a
        // stall, minus the 50 ms the owner asked to wait.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.sleeping(t0, || NO_CPU, Some(50 * MS));
        let wake = clock.woke(t0 + 2200 * MS, || 150 * MS);
        assert_eq!(wake.stalled, Some(2000 * MS));
    }

    #[test]
    fn a_process_using_more_cpu_than_wall_time_is_no_stall() {
        // Two threads busy on two cores: 200 ms of CPU in 100 ms of wall time.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.woke(t0, || NO_CPU);
        assert_eq!(clock.sleeping(t0 + 100 * MS, || 200 * MS, Some(MS)), None);
        assert_eq!(
            clock.woke(t0 + 400 * MS, || 200 * MS).stalled,
            Some(299 * MS)
        );
    }

    #[test]
    fn a_wait_interrupted_by_the_stop_is_caught_by_the_next_sleep() {
        // epoll_wait returns EINTR after SIGSTOP/SIGCONT: no wake-up report.
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.sleeping(t0, || NO_CPU, Some(100 * MS));
        assert_eq!(
            clock.sleeping(t0 + 2100 * MS, || NO_CPU, Some(100 * MS)),
            Some(2000 * MS)
        );
        assert_eq!(
            clock.woke(t0 + 2110 * MS, || NO_CPU).listening,
            t0 + 110 * MS
        );
    }

    #[test]
    fn waits_without_a_deadline_prove_nothing() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.sleeping(t0, || NO_CPU, None);
        let wake = clock.woke(t0 + 60_000 * MS, || NO_CPU);
        assert_eq!(wake.stalled, None);
        assert_eq!(wake.listening, t0 + 60_000 * MS);
    }

    #[test]
    fn stalls_accumulate() {
        let t0 = Instant::now();
        let mut clock = ListeningClock::new(t0, NO_CPU, 50 * MS);
        clock.sleeping(t0, || NO_CPU, Some(100 * MS));
        clock.woke(t0 + 1100 * MS, || NO_CPU);
        clock.sleeping(t0 + 1100 * MS, || NO_CPU, Some(100 * MS));
        let wake = clock.woke(t0 + 3200 * MS, || NO_CPU);
        assert_eq!(wake.stalled, Some(2000 * MS));
        assert_eq!(clock.paused(), 3000 * MS);
        assert_eq!(wake.listening, t0 + 200 * MS);
    }
}
