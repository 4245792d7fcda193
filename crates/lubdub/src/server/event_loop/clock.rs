//! The loop's instants: `now` read afresh (telling the listening clock,
//! which notices a stall of the loop), the real instant of a `Now`, what a
//! stall does when noticed, and microseconds since the loop's origin.

use std::time::{Duration, Instant};

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use tracing::warn;

use super::{siblings, EventLoop};

impl<D: Detector> EventLoop<D> {
    /// Now, read afresh: for work dated by its own instant (a read, an
    /// accept late in a busy turn, a verdict of a credential check).
    ///
    /// The clock is told too: a process stopped in the middle of a turn
    /// resumes here, and the PINGs held up by that stop must find its
    /// allowance in place before they are judged (a stop noticed only at
    /// the next poll came after the first backlog was read as a flood).
    pub(super) fn now(&mut self) -> Now {
        let real = Instant::now();
        // Borrowed, not the `Arc` clone `cpu_explaining_stalls` makes: this
        // runs for every read.
        let (cpu, me) = (&self.cpu, self.loop_index);
        let wake = self
            .clock
            .woke(real, || siblings::cpu_explaining_stalls(cpu, me));
        self.stalled(real, wake.stalled);
        Now {
            listening: wake.listening,
            real_us: self.micros_since_origin(real),
        }
    }

    /// The real instant of `now`.
    pub(super) fn real_instant(&self, now: Now) -> Instant {
        self.origin + Duration::from_micros(now.real_us)
    }

    /// A stall of the loop, if `stalled`, ended at `resumed`: said, and
    /// the PINGs held up by it are allowed through.
    pub(super) fn stalled(&mut self, resumed: Instant, stalled: Option<Duration>) {
        let Some(stalled) = stalled else {
            return;
        };
        warn!(
            stalled_ms = stalled.as_millis() as u64,
            "the server could not run for {}; that time is not counted as anyone's silence",
            humantime::format_duration(Duration::from_millis(stalled.as_millis() as u64))
        );
        self.rules
            .stalled(self.micros_since_origin(resumed), stalled);
    }

    pub(super) fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }
}
