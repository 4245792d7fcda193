//! The one process-wide path of presence events out of the event loops,
//! for whatever reads them (tests today; subscribers, an event stream and
//! webhooks next).
//!
//! Bounded, and never in a loop's way: the hub keeps the latest `capacity`
//! events in a ring (tokio's broadcast channel); publishing never waits and
//! never allocates per reader, so a reader that falls behind cannot grow a
//! loop's memory or delay a verdict. A reader that falls further behind
//! than the ring loses the oldest events, and is told how many it lost as
//! a [`FeedItem::Gap`] before the next event it gets. Each event carries a
//! process-wide sequence number, given in publishing order, and the wall-
//! clock time the loop observed it.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::presence::PresenceEvent;

/// Events a hub keeps for readers that fall behind, by default: with the
/// name and peer of each, about 2 MB when full.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Where every loop publishes its presence events; see the module documentation.
#[derive(Debug)]
pub struct PresenceHub {
    /// The next sequence number, held while an event is sent, so that the
    /// ring's order and the numbers agree whichever loop publishes.
    next_seq: Mutex<u64>,
    ring: broadcast::Sender<PresenceEvent>,
}

impl PresenceHub {
    /// A hub keeping the latest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (ring, _) = broadcast::channel(capacity.max(1));
        Self {
            next_seq: Mutex::new(1),
            ring,
        }
    }

    /// Numbers, stamps and publishes `event`; never waits for readers.
    pub(crate) fn publish(&self, mut event: PresenceEvent, wall: SystemTime) {
        // A poisoned lock only means a publisher panicked mid-send; the
        // number it holds is still the next one.
        let mut next_seq = self
            .next_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        event.seq = *next_seq;
        event.wall = wall;
        *next_seq += 1;
        // No reader is no error: the event is counted and gone.
        let _ = self.ring.send(event);
    }

    /// A reader of every event published from now on.
    pub fn subscribe(&self) -> PresenceFeed {
        PresenceFeed {
            ring: self.ring.subscribe(),
            missed: 0,
        }
    }
}

impl Default for PresenceHub {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

/// What a reader gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// The next event.
    Event(PresenceEvent),
    /// The reader fell behind the ring and lost this many events (the
    /// oldest it had not read); the events after them follow.
    Gap {
        /// Events lost.
        missed: u64,
    },
}

/// One reader of a [`PresenceHub`].
#[derive(Debug)]
pub struct PresenceFeed {
    ring: broadcast::Receiver<PresenceEvent>,
    missed: u64,
}

impl PresenceFeed {
    /// The next event or gap; `None` once the server has stopped and every
    /// event was read.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        match self.ring.recv().await {
            Ok(event) => Some(FeedItem::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(self.gap(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event or gap if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<FeedItem> {
        match self.ring.try_recv() {
            Ok(event) => Some(FeedItem::Event(event)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(self.gap(missed)),
            Err(_) => None,
        }
    }

    /// Events this reader lost so far, in all.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    fn gap(&mut self, missed: u64) -> FeedItem {
        self.missed += missed;
        FeedItem::Gap { missed }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::server::presence::PresenceKind;

    fn event(name: &str) -> PresenceEvent {
        PresenceEvent::new(
            Instant::now(),
            name.to_owned(),
            1,
            "127.0.0.1:1".parse().expect("an address"),
            PresenceKind::Recovered,
        )
    }

    #[test]
    fn events_are_numbered_stamped_and_a_reader_behind_is_told_its_gap() {
        let hub = PresenceHub::new(4);
        let mut feed = hub.subscribe();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for index in 0..10 {
            hub.publish(event(&format!("e{index}")), wall);
        }
        assert_eq!(feed.try_recv(), Some(FeedItem::Gap { missed: 6 }));
        for seq in 7..=10 {
            match feed.try_recv() {
                Some(FeedItem::Event(event)) => {
                    assert_eq!(event.seq, seq);
                    assert_eq!(event.name, format!("e{}", seq - 1));
                    assert_eq!(event.wall, wall);
                }
                other => panic!("expected event {seq}, got {other:?}"),
            }
        }
        assert_eq!(feed.try_recv(), None);
        assert_eq!(feed.missed(), 6);
    }

    #[test]
    fn publishing_without_readers_still_numbers() {
        let hub = PresenceHub::new(2);
        hub.publish(event("unread"), SystemTime::now());
        let mut feed = hub.subscribe();
        hub.publish(event("read"), SystemTime::now());
        match feed.try_recv() {
            Some(FeedItem::Event(event)) => {
                assert_eq!((event.seq, event.name.as_str()), (2, "read"))
            }
            other => panic!("{other:?}"),
        }
    }
}
