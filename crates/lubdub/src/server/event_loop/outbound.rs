//! The outbound queues as a whole: their server-wide count against
//! `--max-outbound-total`, shedding at the cap, and the drain rule that
//! decides slow consumers by time.
//!
//! Queues hold their bytes in chunks the loop lends them (`outbox.rs`);
//! every call that may change a queue goes through `EventLoop::with_queue`,
//! which counts the change, so the count is exact in whole chunks.
//!
//! Every queue is watched for draining (`lubdub_core::drain`): a session
//! whose queued bytes do not leave within `--slow-consumer-timeout` is
//! dropped as a slow consumer, checked by a `Drain` wheel entry while its
//! queue holds bytes, when something is delivered to it and at each of its
//! liveness checks.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;

use super::super::connection::{flag, Connection, QueueClock};
use super::super::outbox::ChunkPool;
use super::timers::TimerKind;
use super::{ConnKey, EventLoop};

/// How often, at most, the loop looks for stuck queues to shed when the
/// server-wide outbound cap is reached: the search walks every connection.
const SHED_SCAN_SPACING: Duration = Duration::from_millis(100);
/// A queue that took no byte for this long counts as not draining when
/// the loop must shed queues to stay under the cap.
const SHED_IDLE_MS: u64 = 1_000;

impl<D: Detector> EventLoop<D> {
    /// The clock the outbound queues' drain watches are kept by.
    pub(super) fn queue_clock(&self, now: Now) -> QueueClock {
        QueueClock {
            now_ms: u64::try_from(
                now.listening
                    .saturating_duration_since(self.origin)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            patience_ms: u64::try_from(self.config.slow_consumer_timeout.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// Runs `act` on the connection at `index`, lending it the loop's
    /// chunks, and counts what its queue gained or lost against the cap.
    /// `None` when there is no connection there.
    pub(super) fn with_queue<R>(
        &mut self,
        index: usize,
        act: impl FnOnce(&mut Connection, &mut ChunkPool) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(index)?;
        let before = slot.conn.held_bytes();
        let result = act(&mut slot.conn, &mut self.chunks);
        let after = slot.conn.held_bytes();
        self.account(before, after);
        Some(result)
    }

    /// Memory held on the way out by every loop of the process, against
    /// the cap: the queues' chunks, the fan-outs waiting to be written, and
    /// the MSGs on their way from one loop to another.
    pub(super) fn outbound_held(&self) -> usize {
        self.held_everywhere.load(Ordering::Relaxed)
    }

    /// The process's count of bytes held on the way out went from
    /// `before` to `after` for something of this loop's.
    pub(super) fn held_changed(&self, before: usize, after: usize) {
        let total = if after >= before {
            self.held_everywhere
                .fetch_add(after - before, Ordering::Relaxed)
                .saturating_add(after - before)
        } else {
            self.held_everywhere
                .fetch_sub(before - after, Ordering::Relaxed)
                .saturating_sub(before - after)
        };
        self.metrics.outbound_queued(total);
    }

    /// Keeps the count of queued bytes when one queue went from `before`
    /// to `after` bytes.
    pub(super) fn account(&mut self, before: usize, after: usize) {
        if before == after {
            return;
        }
        self.outbound_total = (self.outbound_total + after).saturating_sub(before);
        self.held_changed(before, after);
    }

    /// Waiting fan-outs of this loop went from `before` to `after` bytes.
    pub(super) fn set_pending_bytes(&mut self, after: usize) {
        let before = std::mem::replace(&mut self.pending_bytes, after);
        self.held_changed(before, after);
    }

    /// At the server-wide cap: drops the largest queues that are not
    /// draining (no byte taken for [`SHED_IDLE_MS`]) as slow consumers,
    /// until what is held (queues and waiting fan-outs) is under nine
    /// tenths of the cap. Queues that
    /// drain are left alone; new fan-out waits for them instead.
    pub(super) fn shed(&mut self, now: Now) {
        let real = Instant::now();
        if real.saturating_duration_since(self.last_shed) < SHED_SCAN_SPACING {
            return;
        }
        self.last_shed = real;
        // Counted afresh, a check on the running total (which follows
        // every change made through `with_queue`).
        let counted = self
            .slots
            .iter()
            .map(|(_, slot)| slot.conn.held_bytes())
            .sum();
        let before = std::mem::replace(&mut self.outbound_total, counted);
        self.held_changed(before, counted);
        if self.outbound_held() < self.outbound_cap {
            return;
        }
        let clock = self.queue_clock(now);
        let mut stuck: Vec<(usize, ConnKey)> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.machine.session().is_some())
            .map(|(index, slot)| (slot.conn.held_bytes(), index, slot))
            .filter(|(queued, _, slot)| {
                *queued > 0 && slot.conn.idle_ms(clock.now_ms) >= SHED_IDLE_MS
            })
            .map(|(queued, index, slot)| (queued, (index, slot.generation)))
            .collect();
        stuck.sort_unstable_by_key(|&(queued, _)| std::cmp::Reverse(queued));
        let target = self.outbound_cap / 10 * 9;
        for (_, key) in stuck {
            if self.outbound_held() <= target {
                break;
            }
            self.slow_consumer(now, key);
            // Carried out at once: the close gives the queue's bytes back.
            self.carry_out(now);
        }
    }

    /// Schedules the check of the queue of connection `key` that just
    /// became non-empty, at its checkpoint.
    pub(super) fn watch_drain(&mut self, key: ConnKey) {
        let Some(slot) = self.slots.get_mut(key.0) else {
            return;
        };
        let Some(due_ms) = slot.conn.drain_due_ms() else {
            return;
        };
        if slot.conn.flags.replace(flag::DRAIN_TIMER_ARMED, true) {
            return;
        }
        let due = self.origin + Duration::from_millis(due_ms);
        self.timers.schedule(key, TimerKind::Drain, due, None);
    }

    /// A drain checkpoint came due: the session is dropped if its queue
    /// did not drain, else the next checkpoint (if any) is watched.
    pub(super) fn check_drain(&mut self, now: Now, key: ConnKey) {
        if let Some(slot) = self.slots.get_mut(key.0) {
            slot.conn.flags.set(flag::DRAIN_TIMER_ARMED, false);
        }
        if !self.drop_if_stuck(now, key) {
            self.watch_drain(key);
        }
    }

    /// Whether the session `key` stopped draining its queue; it is then
    /// closed as a slow consumer. Run at each of its liveness checks, so
    /// that a session nobody sends to any more is caught too.
    pub(super) fn drop_if_stuck(&mut self, now: Now, key: ConnKey) -> bool {
        let now_ms = self.queue_clock(now).now_ms;
        let stuck = self
            .slots
            .get(key.0)
            .is_some_and(|slot| slot.machine.session().is_some() && slot.conn.is_stuck(now_ms));
        if stuck {
            self.slow_consumer(now, key);
            self.carry_out(now);
        }
        stuck
    }

    /// Writes what the queue of connection `index` holds, now that its
    /// socket is writable, and shuts the write side after a farewell.
    /// Returns whether the connection is still there.
    pub(super) fn flush(&mut self, now: Now, index: usize) -> bool {
        let clock = self.queue_clock(now);
        let flushed = self.with_queue(index, |conn, chunks| {
            conn.flush(clock, chunks)?;
            // Not merely closing: a session declared dead may still wait
            // for its BYE in the farewell queue, and a FIN now would lose it.
            if conn.farewell_written() && conn.is_flushed() {
                conn.shutdown_write(chunks);
            }
            Ok(())
        });
        match flushed {
            None => false,
            Some(Err(error)) => {
                let Some(generation) = self.slots.get(index).map(|slot| slot.generation) else {
                    return false;
                };
                self.failed(now, (index, generation), &error);
                self.carry_out(now);
                self.slots.contains(index)
            }
            Some(Ok(())) => true,
        }
    }
}
