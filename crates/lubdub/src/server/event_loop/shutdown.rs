//! Graceful shutdown: the listening socket closes, every connection's
//! machine says its farewell (BYE `shutdown` with a spread reconnect hint,
//! REJECT to handshakes), and the loop runs on until every farewell is
//! delivered and its connection closed, or until the shutdown timeout.

use std::time::{Duration, Instant};

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use tracing::{info, warn};

use super::EventLoop;

/// The earliest reconnect hint given at shutdown: a restart usually takes
/// about this long.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How widely the reconnect hints given at shutdown are spread, so that the
/// sessions do not all come back in the same instant: half a millisecond
/// per connection, between 1 s and 10 s (19,000 sessions: 9.5 s, about
/// 2,000 handshakes a second, which one loop serves with ease).
fn reconnect_spread(connections: usize) -> Duration {
    (Duration::from_micros(500) * u32::try_from(connections).unwrap_or(u32::MAX))
        .clamp(Duration::from_secs(1), Duration::from_secs(10))
}

impl<D: Detector> EventLoop<D> {
    /// Starts a graceful shutdown (once).
    pub(super) fn begin_shutdown(&mut self, now: Now) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(Instant::now() + self.config.shutdown_timeout);
        self.write_farewells(now, usize::MAX);
        // Every session is told to go: messages not yet written are not.
        for fanout in self.fanouts.drain(..) {
            fanout.release(&mut self.chunks);
        }
        self.pending_deliveries = 0;
        self.set_pending_bytes(0);
        let keys: Vec<_> = self
            .slots
            .iter()
            .map(|(index, slot)| (index, slot.generation))
            .collect();
        let spread = reconnect_spread(keys.len());
        info!(
            connections = keys.len(),
            reconnect_within = %humantime::format_duration(RECONNECT_AFTER + spread),
            timeout = %humantime::format_duration(self.config.shutdown_timeout),
            "shutting down: no new connections; telling every session to reconnect later"
        );
        for key in keys {
            let retry_after = RECONNECT_AFTER + spread.mul_f64(rand::random::<f64>());
            self.tell_machine(key, |machine, rules, out| {
                machine.handle_shutdown(now, retry_after, rules, out)
            });
            self.carry_out(now);
        }
    }

    /// Whether a shutdown is complete: every connection closed, or the
    /// shutdown timeout passed.
    pub(super) fn shutdown_complete(&self) -> bool {
        match self.draining_until {
            None => false,
            Some(until) => {
                let done = self.slots.is_empty() || Instant::now() >= until;
                if done && !self.slots.is_empty() {
                    warn!(
                        connections = self.slots.len(),
                        "shutdown timeout reached: closing connections whose peers did not close"
                    );
                }
                done
            }
        }
    }
}
