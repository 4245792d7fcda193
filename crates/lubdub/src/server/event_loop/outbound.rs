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

use std::time::{Duration, Instant};

use lubdub_core::detector::Detector;

use super::super::connection::{flag, Connection, QueueClock};
use super::super::outbox::ChunkPool;
use super::super::presence::DropReason;
use super::{EventLoop, State, TimerKey, TimerKind};

/// How often, at most, the loop looks for stuck queues to shed when the
/// server-wide outbound cap is reached: the search walks every connection.
const SHED_SCAN_SPACING: Duration = Duration::from_millis(100);
/// A queue that took no byte for this long counts as not draining when
/// the loop must shed queues to stay under the cap.
const SHED_IDLE_MS: u64 = 1_000;

impl<D: Detector> EventLoop<D> {
    /// The clock the outbound queues' drain watches are kept by.
    pub(super) fn queue_clock(&self) -> QueueClock {
        QueueClock {
            now_ms: u64::try_from(self.now.saturating_duration_since(self.origin).as_millis())
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

    /// Memory held on the way out, against the cap: the queues' chunks and
    /// the fan-outs waiting to be written.
    pub(super) fn outbound_held(&self) -> usize {
        self.outbound_total + self.pending_bytes
    }

    /// Keeps the server-wide count of queued bytes when one queue went
    /// from `before` to `after` bytes.
    pub(super) fn account(&mut self, before: usize, after: usize) {
        if before == after {
            return;
        }
        self.outbound_total = (self.outbound_total + after).saturating_sub(before);
        self.metrics.outbound_queued(self.outbound_total);
    }

    /// At the server-wide cap: drops the largest queues that are not
    /// draining (no byte taken for [`SHED_IDLE_MS`]) as slow consumers,
    /// until what is held (queues and waiting fan-outs) is under nine
    /// tenths of the cap. Queues that
    /// drain are left alone; new fan-out waits for them instead.
    pub(super) fn shed(&mut self) {
        let now = Instant::now();
        if now.saturating_duration_since(self.last_shed) < SHED_SCAN_SPACING {
            return;
        }
        self.last_shed = now;
        // Counted afresh, a check on the running total (which follows
        // every change made through `with_queue`).
        self.outbound_total = self
            .slots
            .iter()
            .map(|(_, slot)| slot.conn.held_bytes())
            .sum();
        self.metrics.outbound_queued(self.outbound_total);
        if self.outbound_held() < self.outbound_cap {
            return;
        }
        let clock = self.queue_clock();
        let mut stuck: Vec<(usize, usize)> = self
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot.state, State::Established(_)))
            .map(|(index, slot)| (slot.conn.held_bytes(), index, slot))
            .filter(|(queued, _, slot)| {
                *queued > 0 && slot.conn.idle_ms(clock.now_ms) >= SHED_IDLE_MS
            })
            .map(|(queued, index, _)| (queued, index))
            .collect();
        stuck.sort_unstable_by_key(|&(queued, _)| std::cmp::Reverse(queued));
        let target = self.outbound_cap / 10 * 9;
        for (_, index) in stuck {
            if self.outbound_held() <= target {
                break;
            }
            self.close(index, DropReason::SlowConsumer);
        }
    }

    /// Schedules the check of the queue of the connection at `index`
    /// (of `generation`) that just became non-empty, at its checkpoint.
    pub(super) fn watch_drain(&mut self, index: usize, generation: u32) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(due_ms) = slot.conn.drain_due_ms() else {
            return;
        };
        if slot.conn.flags.replace(flag::DRAIN_TIMER_ARMED, true) {
            return;
        }
        self.wheel.insert(
            self.origin + Duration::from_millis(due_ms),
            TimerKey {
                index: index as u32,
                generation,
                kind: TimerKind::Drain,
            },
        );
    }

    /// A drain checkpoint came due: the session is dropped if its queue
    /// did not drain, else the next checkpoint (if any) is watched.
    pub(super) fn check_drain(&mut self, index: usize, generation: u32) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.conn.flags.set(flag::DRAIN_TIMER_ARMED, false);
        }
        if !self.drop_if_stuck(index) {
            self.watch_drain(index, generation);
        }
    }

    /// Whether the established session at `index` stopped draining its
    /// queue; it is then closed as a slow consumer. Run at each of its
    /// liveness checks, so that a session nobody sends to any more is
    /// caught too.
    pub(super) fn drop_if_stuck(&mut self, index: usize) -> bool {
        let now_ms = self.queue_clock().now_ms;
        let stuck = self
            .slots
            .get(index)
            .is_some_and(|slot| slot.conn.is_stuck(now_ms));
        if stuck {
            self.close(index, DropReason::SlowConsumer);
        }
        stuck
    }
}
