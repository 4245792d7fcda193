//! Whether a session's outbound queue drains: the time rule for slow
//! consumers.
//!
//! A size bound alone misses a peer that reads just enough to keep its
//! queue parked under the bound (holding the server's memory for ever), and
//! punishes a peer that reads well but was flooded. The rule here is about
//! time: every byte queued must leave within `patience`. When the queue
//! becomes non-empty a checkpoint is set: the bytes queued so far must all
//! be written by `now + patience`. When they are, the next checkpoint covers
//! what is queued then. A reader at any useful speed meets every
//! checkpoint however much is sent to it; a peer that does not read, or
//! reads a trickle, misses one within `patience`.

/// A queue's progress, kept beside its bytes (only while it holds any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainWatch {
    /// Bytes written to the socket since the watch began.
    written: u64,
    /// `written` must reach this by `due_ms` (meaningful while `due_ms` is set).
    target: u64,
    /// When the current checkpoint falls due, ms since the caller's origin.
    due_ms: Option<u64>,
    /// When bytes last left the queue (or it became non-empty), ms.
    progress_ms: u64,
}

impl DrainWatch {
    /// A watch over an empty queue.
    pub const fn new() -> Self {
        Self {
            written: 0,
            target: 0,
            due_ms: None,
            progress_ms: 0,
        }
    }

    /// Bytes were queued at `now_ms`; the queue now holds `queued` bytes.
    pub fn queued(&mut self, now_ms: u64, queued: usize, patience_ms: u64) {
        if self.due_ms.is_none() && queued > 0 {
            self.due_ms = Some(now_ms.saturating_add(patience_ms));
            self.target = self.written.saturating_add(queued as u64);
            self.progress_ms = now_ms;
        }
    }

    /// `n` bytes left the queue at `now_ms`; `queued` bytes remain.
    pub fn written(&mut self, now_ms: u64, n: usize, queued: usize, patience_ms: u64) {
        if n == 0 {
            return;
        }
        self.written = self.written.saturating_add(n as u64);
        self.progress_ms = now_ms;
        if self.due_ms.is_some() && self.written >= self.target {
            self.due_ms = None;
            self.queued(now_ms, queued, patience_ms);
        }
    }

    /// Whether the queue missed its checkpoint: bytes queued more than
    /// `patience` ago are still waiting at `now_ms`.
    pub fn is_stuck(&self, now_ms: u64) -> bool {
        self.due_ms.is_some_and(|due| now_ms >= due)
    }

    /// When the current checkpoint falls due, ms, if the queue holds bytes.
    pub fn due_ms(&self) -> Option<u64> {
        self.due_ms
    }

    /// How long no byte has left a non-empty queue, in ms (0 when empty).
    pub fn idle_ms(&self, now_ms: u64) -> u64 {
        match self.due_ms {
            Some(_) => now_ms.saturating_sub(self.progress_ms),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: u64 = 10_000;

    #[test]
    fn a_queue_that_does_not_drain_is_stuck_at_its_checkpoint() {
        let mut watch = DrainWatch::new();
        watch.queued(1_000, 500, PATIENCE);
        assert!(!watch.is_stuck(10_999));
        assert!(watch.is_stuck(11_000));
        assert_eq!(watch.idle_ms(11_000), 10_000);
    }

    #[test]
    fn a_trickle_reader_parked_under_the_bound_is_caught() {
        // 1 MB queued, one byte read a second, new bytes keep it full.
        let mut watch = DrainWatch::new();
        watch.queued(0, 1_000_000, PATIENCE);
        for second in 1..=10 {
            watch.written(second * 1_000, 1, 1_000_000, PATIENCE);
            watch.queued(second * 1_000, 1_000_000, PATIENCE);
        }
        assert!(watch.is_stuck(10_000));
    }

    #[test]
    fn a_flooded_reader_that_keeps_up_is_never_stuck() {
        // 512 KiB always queued (senders refill it), 2 MB/s read: each
        // checkpoint is met in about a quarter of a second.
        let mut watch = DrainWatch::new();
        let queue = 512 * 1024;
        watch.queued(0, queue, PATIENCE);
        for tick in 1..=60_000u64 {
            // every ms: 2,000 bytes leave, 2,000 arrive.
            watch.written(tick, 2_000, queue, PATIENCE);
            watch.queued(tick, queue, PATIENCE);
            assert!(!watch.is_stuck(tick), "stuck at {tick} ms");
        }
    }

    #[test]
    fn an_emptied_queue_has_no_checkpoint() {
        let mut watch = DrainWatch::new();
        watch.queued(0, 100, PATIENCE);
        watch.written(5, 100, 0, PATIENCE);
        assert!(!watch.is_stuck(1_000_000));
        assert_eq!(watch.idle_ms(1_000_000), 0);
        // A later queue gets a fresh checkpoint from its own start.
        watch.queued(500_000, 10, PATIENCE);
        assert!(!watch.is_stuck(509_999));
        assert!(watch.is_stuck(510_000));
    }
}
