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
//!
//! The hub also keeps the latest `capacity` events in order of their
//! numbers (a second ring, `history`), so that a reader that comes back
//! (an event stream resumed with `Last-Event-ID`) gets exactly the events
//! after the last one it saw, or learns that they are gone
//! ([`Resumed::resync`]) and must rebuild its state from a listing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::presence::{PresenceEvent, PresenceKind};
use super::rooms::RoomDirectory;

/// Events a hub keeps for readers that fall behind, by default: about
/// 300 bytes each with its name and rooms (tests/faults.rs saw 2.2 MB for
/// some 7,500 events), so about 5 MB when full, more once event streams
/// have rendered their JSON.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Where every loop publishes its presence events; see the module documentation.
#[derive(Debug)]
pub struct PresenceHub {
    /// Held while an event is numbered and sent, so that the ring's order
    /// and the numbers agree whichever loop publishes, and so that a
    /// reader joins at one exact point of the sequence.
    state: Mutex<Numbered>,
    /// Events are shared, not copied, by the history, the ring and every
    /// reader: a burst of changes to a hundred readers is one allocation
    /// per change.
    ring: broadcast::Sender<Arc<PresenceEvent>>,
    capacity: usize,
    /// Which sessions are in which rooms (kept here, beside the events
    /// their joins and leaves publish, for loops and the admin API alike).
    rooms: RoomDirectory,
    /// One per event loop, once they exist: a loop with watchers is woken
    /// when an event is published, to pass it on (`event_loop/watches.rs`).
    loops: OnceLock<Box<[LoopWake]>>,
}

/// How the hub wakes an event loop that has watchers.
#[derive(Debug)]
pub(crate) struct LoopWake {
    waker: Arc<mio::Waker>,
    /// The loop has at least one watcher: it wants to hear of events.
    pub(crate) watching: AtomicBool,
    /// Woken and not yet read: one wake-up is enough for any number of
    /// events published meanwhile.
    pub(crate) pending: AtomicBool,
}

impl LoopWake {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Self {
        Self {
            waker,
            watching: AtomicBool::new(false),
            pending: AtomicBool::new(false),
        }
    }
}

/// What the hub remembers of a name between its events, for the
/// snapshots of watches: kept only while the name has a status or is
/// suspect, so a session with neither costs nothing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The session it is about.
    pub session_id: u64,
    /// Its status, if it set one.
    pub status: Option<Box<str>>,
    /// Whether it is suspect.
    pub suspect: bool,
}

/// The hub's numbering and the events kept for readers that resume.
#[derive(Debug)]
struct Numbered {
    next_seq: u64,
    history: VecDeque<Arc<PresenceEvent>>,
    marks: HashMap<Box<str>, Mark>,
}

impl Numbered {
    /// Keeps `marks` true to the events published so far.
    fn mark(&mut self, event: &PresenceEvent) {
        let name = event.name.as_str();
        let ours = |mark: &Mark| mark.session_id == event.session_id;
        match event.kind {
            PresenceKind::Joined { .. } => match event.status.as_deref() {
                Some(status) => {
                    let mark = Mark {
                        session_id: event.session_id,
                        status: Some(status.into()),
                        suspect: false,
                    };
                    self.marks.insert(name.into(), mark);
                }
                None => {
                    self.marks.remove(name);
                }
            },
            PresenceKind::StatusChanged
            | PresenceKind::Suspected { .. }
            | PresenceKind::Recovered => {
                let mark = self.marks.entry(name.into()).or_insert(Mark {
                    session_id: event.session_id,
                    status: None,
                    suspect: false,
                });
                if !ours(mark) {
                    *mark = Mark {
                        session_id: event.session_id,
                        status: None,
                        suspect: false,
                    };
                }
                match event.kind {
                    PresenceKind::StatusChanged => {
                        mark.status = event
                            .status
                            .as_deref()
                            .filter(|status| !status.is_empty())
                            .map(Into::into);
                    }
                    PresenceKind::Suspected { .. } => mark.suspect = true,
                    _ => mark.suspect = false,
                }
                if mark.status.is_none() && !mark.suspect {
                    self.marks.remove(name);
                }
            }
            PresenceKind::Dropped { .. } => {
                if self.marks.get(name).is_some_and(ours) {
                    self.marks.remove(name);
                }
            }
            PresenceKind::RoomJoined | PresenceKind::RoomLeft => {}
        }
    }
}

/// A reader joining the sequence after a given event (see
/// [`PresenceHub::resume`]).
#[derive(Debug)]
pub struct Resumed {
    /// The events after the one asked for that the hub still held, in order.
    pub backlog: Vec<Arc<PresenceEvent>>,
    /// Some events after the one asked for are no longer held (or the
    /// number was never given, by this run of the server): the reader must
    /// rebuild its state from a listing before it applies `backlog`.
    pub resync: bool,
    /// Every event published from now on.
    pub feed: PresenceFeed,
}

impl PresenceHub {
    /// A hub keeping the latest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (ring, _) = broadcast::channel(capacity);
        Self {
            state: Mutex::new(Numbered {
                next_seq: 1,
                history: VecDeque::new(),
                marks: HashMap::new(),
            }),
            ring,
            capacity,
            rooms: RoomDirectory::default(),
            loops: OnceLock::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Numbered> {
        // A poisoned lock only means a publisher panicked mid-send; the
        // number it holds is still the next one.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Numbers, stamps and publishes `event`; never waits for readers.
    pub(crate) fn publish(&self, mut event: PresenceEvent, wall: SystemTime) {
        let mut state = self.state();
        event.seq = state.next_seq;
        event.wall = wall;
        state.next_seq += 1;
        if state.history.len() == self.capacity {
            state.history.pop_front();
        }
        state.mark(&event);
        let event = Arc::new(event);
        state.history.push_back(Arc::clone(&event));
        // No reader is no error: the event is counted and gone.
        let _ = self.ring.send(event);
        drop(state);
        for wake in self.loops.get().into_iter().flatten() {
            if wake.watching.load(Ordering::Relaxed) && !wake.pending.swap(true, Ordering::AcqRel) {
                // A loop whose poll is gone has stopped anyway.
                let _ = wake.waker.wake();
            }
        }
    }

    /// The room directory.
    pub fn rooms(&self) -> &RoomDirectory {
        &self.rooms
    }

    /// What the hub remembers of each of `names` (see [`Mark`]), as of
    /// the latest event published.
    pub fn marks<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<Option<Mark>> {
        let state = self.state();
        names
            .into_iter()
            .map(|name| state.marks.get(name).cloned())
            .collect()
    }

    /// Gives the hub the event loops' wake-ups (once, at start).
    pub(crate) fn set_loops(&self, loops: Box<[LoopWake]>) {
        let _ = self.loops.set(loops);
    }

    /// Loop `index`'s wake-up, once set.
    pub(crate) fn loop_wake(&self, index: usize) -> Option<&LoopWake> {
        self.loops.get().and_then(|loops| loops.get(index))
    }

    /// The number of the latest event published (0: none yet). A listing
    /// taken after this call reflects every event up to it.
    pub fn last_seq(&self) -> u64 {
        self.state().next_seq - 1
    }

    /// A reader of every event published from now on.
    pub fn subscribe(&self) -> PresenceFeed {
        PresenceFeed {
            ring: self.ring.subscribe(),
            missed: 0,
        }
    }

    /// A reader of every event after number `after`: those still held,
    /// then every one published from now on, with none missed or repeated
    /// between the two.
    pub fn resume(&self, after: u64) -> Resumed {
        let state = self.state();
        let feed = self.subscribe();
        let oldest = state
            .history
            .front()
            .map_or(state.next_seq, |event| event.seq);
        let resync = after >= state.next_seq || after + 1 < oldest;
        let backlog = state
            .history
            .iter()
            .filter(|event| event.seq > after)
            .cloned()
            .collect();
        Resumed {
            backlog,
            resync,
            feed,
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
    Event(Arc<PresenceEvent>),
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
    ring: broadcast::Receiver<Arc<PresenceEvent>>,
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
    fn a_reader_resumes_after_any_event_still_held_or_is_told_to_resync() {
        let hub = PresenceHub::new(4);
        let wall = SystemTime::now();
        for index in 1..=6 {
            hub.publish(event(&format!("e{index}")), wall);
        }
        assert_eq!(hub.last_seq(), 6);
        let seqs = |resumed: &Resumed| -> Vec<u64> {
            resumed.backlog.iter().map(|event| event.seq).collect()
        };
        // Held: 3 to 6. After 2, nothing is missing; after 1, event 2 is.
        let resumed = hub.resume(2);
        assert_eq!((seqs(&resumed), resumed.resync), (vec![3, 4, 5, 6], false));
        let resumed = hub.resume(1);
        assert_eq!((seqs(&resumed), resumed.resync), (vec![3, 4, 5, 6], true));
        let resumed = hub.resume(6);
        assert_eq!((seqs(&resumed), resumed.resync), (vec![], false));
        // A number this run never gave (a restarted server): resync.
        let mut resumed = hub.resume(40);
        assert!(resumed.resync);
        // The feed goes on exactly after the backlog.
        hub.publish(event("e7"), wall);
        match resumed.feed.try_recv() {
            Some(FeedItem::Event(event)) => assert_eq!(event.seq, 7),
            other => panic!("{other:?}"),
        }
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
