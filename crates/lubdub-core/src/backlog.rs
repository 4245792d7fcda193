//! Frames held up by a stall of the server are nobody's flood.
//!
//! While the server cannot run (SIGSTOP, a paused VM), healthy clients go
//! on sending PINGs on their schedule; when it resumes, every PING sent
//! meanwhile is read at once. The PING rate rule allows one deadline's
//! worth at once (a network pause longer than that ends the session as
//! silent anyway), but a stall is not silence ([`crate::stall`]), so a
//! session outlives a stall of any length and its backlog can be longer
//! than any burst. Counted as a flood, it earned healthy clients a warning
//! after every long stall.
//!
//! [`StallGrace`] is the allowance: for a while after a stall of `S`, the
//! PING rule tolerates `S` more than its burst, which is what a client that
//! kept to its schedule can have sent meanwhile. The allowance lasts twice
//! the stall: the backlog is read at the resume, but the debt it leaves
//! drains only as fast as the client's spacing exceeds the allowed one
//! (with 2 PINGs allowed per interval and a PING every 4/5 interval, a
//! backlog of `S` needs up to 1.7 × `S` to drain). A flooder gains at
//! most `S` worth of PINGs, once per stall.

use std::time::Duration;

/// The PING allowance after the latest stall; one per event loop, O(1)
/// however many sessions there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallGrace {
    /// When the loop resumed, µs since the caller's origin.
    resumed_us: u64,
    /// The allowance: the stall's length, plus what was left of an earlier
    /// allowance when the stall came.
    grace_us: u64,
}

impl StallGrace {
    /// No stall yet: no allowance.
    pub const fn new() -> Self {
        Self {
            resumed_us: 0,
            grace_us: 0,
        }
    }

    /// The loop resumed at `resumed_us` from a stall of `stalled`.
    pub fn stalled(&mut self, resumed_us: u64, stalled: Duration) {
        let stalled_us = u64::try_from(stalled.as_micros()).unwrap_or(u64::MAX);
        // Stalls in quick succession: PINGs of both may still be unread.
        let carried = self.grace_at(resumed_us);
        self.resumed_us = resumed_us;
        self.grace_us = stalled_us.saturating_add(carried);
    }

    /// Extra tolerance of the PING rule for frames read at `now_us`.
    pub fn grace_at(&self, now_us: u64) -> u64 {
        let ends_us = self
            .resumed_us
            .saturating_add(self.grace_us.saturating_mul(2));
        if now_us < ends_us {
            self.grace_us
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_stall_no_grace() {
        assert_eq!(StallGrace::new().grace_at(0), 0);
        assert_eq!(StallGrace::new().grace_at(u64::MAX), 0);
    }

    #[test]
    fn the_stall_is_allowed_for_twice_its_length() {
        let mut grace = StallGrace::new();
        grace.stalled(10_000_000, Duration::from_secs(20));
        assert_eq!(grace.grace_at(10_000_000), 20_000_000);
        assert_eq!(grace.grace_at(49_999_999), 20_000_000);
        assert_eq!(grace.grace_at(50_000_000), 0);
    }

    #[test]
    fn a_stall_within_the_grace_of_another_adds_to_it() {
        let mut grace = StallGrace::new();
        grace.stalled(1_000_000, Duration::from_secs(2));
        grace.stalled(2_000_000, Duration::from_secs(3));
        assert_eq!(grace.grace_at(2_000_000), 5_000_000);
        grace.stalled(100_000_000, Duration::from_secs(1));
        assert_eq!(grace.grace_at(100_000_000), 1_000_000, "long over");
    }
}
