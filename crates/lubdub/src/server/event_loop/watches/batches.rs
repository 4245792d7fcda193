//! The PRESENCE frames a loop owes its watchers, per watcher, written one
//! send per watcher (a mass outage is thousands of changes to each), in
//! the order the watchers were first owed something.
//!
//! A loop writes them a slice of time at a time (`flush_batches`): on
//! loopback or a busy host a send costs more than the frames in it, and
//! 500 watchers' sends can take several milliseconds, during which no
//! verdict is made. What a slice does not write waits, in order, for the
//! next turn; the watchers first in line then are those left over, so no
//! watcher waits behind others turn after turn.

use std::collections::VecDeque;
use std::time::Instant;

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;

use super::super::{ConnKey, EventLoop};

/// Sends between two looks at the clock while writing.
const CLOCK_EVERY_SENDS: u32 = 16;

/// What each watcher is owed, and in which order they are written.
#[derive(Debug, Default)]
pub(in super::super) struct Batches {
    bytes: HashMap<ConnKey, Vec<u8>>,
    order: VecDeque<ConnKey>,
}

impl Batches {
    /// Owes `encoded` to the watcher `key`, after what it is owed already.
    pub(super) fn add(&mut self, key: ConnKey, encoded: &[u8]) {
        match self.bytes.entry(key) {
            Entry::Occupied(owed) => owed.into_mut().extend_from_slice(encoded),
            Entry::Vacant(none) => {
                none.insert(encoded.to_vec());
                self.order.push_back(key);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn pop(&mut self) -> Option<(ConnKey, Vec<u8>)> {
        let key = self.order.pop_front()?;
        self.bytes.remove(&key).map(|bytes| (key, bytes))
    }
}

/// How long a flush may write.
#[derive(Debug, Clone, Copy)]
pub(super) enum Until {
    /// Everything owed (before a resync's snapshots, which must follow it).
    Done,
    /// Until `stop_at` (real time) or the deadline `due` (listening time),
    /// whichever comes first.
    Slice {
        stop_at: Instant,
        due: Option<Instant>,
    },
}

impl<D: Detector> EventLoop<D> {
    /// Writes what the watchers are owed, each watcher's in one send, for
    /// as long as `until` allows. Returns whether everything was written.
    pub(super) fn flush_batches(&mut self, now: Now, until: Until) -> bool {
        let mut sends = 0u32;
        while let Some((key, bytes)) = self.watches.batches.pop() {
            let established = self
                .slots
                .get(key.0)
                .is_some_and(|slot| slot.generation == key.1 && slot.machine.session().is_some());
            if established {
                self.send(now, key, &bytes);
                sends += 1;
            }
            if let Until::Slice { stop_at, due } = until {
                if sends % CLOCK_EVERY_SENDS == 0 && sends > 0 {
                    let real = Instant::now();
                    let listening = self.clock.listening(real);
                    if real >= stop_at || due.is_some_and(|due| listening >= due) {
                        break;
                    }
                }
            }
        }
        self.watches.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(batches: &mut Batches) -> Vec<(ConnKey, Vec<u8>)> {
        std::iter::from_fn(|| batches.pop()).collect()
    }

    #[test]
    fn each_watcher_is_owed_its_frames_in_order_and_in_line_by_its_first() {
        let mut batches = Batches::default();
        batches.add((1, 0), b"a1");
        batches.add((2, 0), b"b1");
        batches.add((1, 0), b"a2");
        assert_eq!(
            drain(&mut batches),
            vec![((1, 0), b"a1a2".to_vec()), ((2, 0), b"b1".to_vec())]
        );
        assert!(batches.is_empty());
    }

    #[test]
    fn a_watcher_left_over_by_a_slice_is_written_before_those_owed_since() {
        let mut batches = Batches::default();
        batches.add((1, 0), b"a1");
        batches.add((2, 0), b"b1");
        batches.add((3, 0), b"c1");
        // A slice wrote the first only.
        assert_eq!(batches.pop(), Some(((1, 0), b"a1".to_vec())));
        // The next pass owes the first again, and the last more.
        batches.add((1, 0), b"a2");
        batches.add((3, 0), b"c2");
        assert_eq!(
            drain(&mut batches),
            vec![
                ((2, 0), b"b1".to_vec()),
                ((3, 0), b"c1c2".to_vec()),
                ((1, 0), b"a2".to_vec()),
            ]
        );
    }
}
