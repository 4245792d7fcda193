//! Watches on one loop: a WATCH is answered with a snapshot (its sequence
//! number first, then the members), and from then on every presence
//! event the hub publishes after that number is passed on, in order, as
//! PRESENCE frames to this loop's watchers of its name or rooms.
//!
//! A loop reads the hub's ring only while it has watchers (the hub wakes
//! it when an event is published), a bounded number of frames per turn,
//! after its verdicts, and writes them a slice of time at a time
//! (`batches.rs`): watching never delays a verdict by more than a slice.
//! A watcher that does not read fills its queue and is ended as a slow
//! consumer, like any peer that does not read; no one else waits for it.
//! A loop that falls further behind than the hub's ring sends each of its
//! watchers `resync` and a fresh snapshot.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use lubdub_core::connection::{too_many_watches, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec;
use lubdub_core::protocol::rooms::{is_room, PresenceUpdate, WatchMode, MAX_WATCHES_PER_SESSION};
use lubdub_core::protocol::{Frame, Reason, ReasonCode};

use super::super::hub::{FeedItem, PresenceFeed};
use super::super::presence::PresenceEvent;
use super::super::updates::{self, Watching};
use super::{ConnKey, EventLoop};

mod batches;
mod snapshots;

use batches::{Batches, Until};

/// PRESENCE frames a loop queues per turn, at most (an event's frames to
/// all its watchers are queued together, so a turn may pass this by one
/// event's worth): a mass outage's events reach watchers a slice per
/// turn, between which the loop reads and judges.
const UPDATES_PER_TURN: usize = 4096;

/// Events passed on between two looks at the clock for a deadline due.
const CLOCK_EVERY_EVENTS: u32 = 16;

/// How long one turn's pass may take. A pass that stops at the end of its
/// slice (or at a deadline due) goes on next turn, after the verdicts.
const PASS_SLICE: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Watcher {
    key: ConnKey,
    watching: Watching,
    /// The snapshot's sequence number: events up to it are in it.
    since: u64,
}

/// This loop's watches; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct LocalWatches {
    by_target: HashMap<Box<str>, Vec<Watcher>>,
    /// The targets each watching session watches, by slot index.
    of: HashMap<usize, Vec<Box<str>>>,
    /// The loop's reader of the hub, while it has watchers.
    feed: Option<PresenceFeed>,
    /// Events were left unread last turn (the turn's budget was spent).
    pub(super) behind: bool,
    /// The PRESENCE frames owed to each watcher (`batches.rs`).
    batches: Batches,
}

impl LocalWatches {
    /// Targets the session in slot `index` watches.
    pub(super) fn count_of(&self, index: usize) -> usize {
        self.of.get(&index).map_or(0, Vec::len)
    }

    /// Whether the session in slot `index` watches `target`.
    fn watches(&self, index: usize, target: &str) -> bool {
        self.of
            .get(&index)
            .is_some_and(|targets| targets.iter().any(|held| &**held == target))
    }

    fn add(&mut self, target: &str, watcher: Watcher) -> bool {
        let watchers = self.by_target.entry(target.into()).or_default();
        if let Some(held) = watchers.iter_mut().find(|held| held.key == watcher.key) {
            *held = watcher;
            return false;
        }
        watchers.push(watcher);
        self.of
            .entry(watcher.key.0)
            .or_default()
            .push(target.into());
        true
    }

    fn remove(&mut self, key: ConnKey, target: &str) -> bool {
        let Some(targets) = self.of.get_mut(&key.0) else {
            return false;
        };
        let before = targets.len();
        targets.retain(|held| &**held != target);
        let removed = targets.len() < before;
        if targets.is_empty() {
            self.of.remove(&key.0);
        }
        if let Some(watchers) = self.by_target.get_mut(target) {
            watchers.retain(|watcher| watcher.key.0 != key.0);
            if watchers.is_empty() {
                self.by_target.remove(target);
            }
        }
        removed
    }
}

impl<D: Detector> EventLoop<D> {
    /// Carries out a WATCH of session `key`.
    pub(super) fn watch(
        &mut self,
        now: Now,
        key: ConnKey,
        name: &str,
        mode: WatchMode,
        target: String,
    ) {
        if mode == WatchMode::Stop {
            if self.watches.remove(key, &target) {
                self.metrics.watches_changed(-1);
            }
            self.stop_reading_hub_if_idle();
            return self.report_holdings(key);
        }
        let watching = match mode {
            WatchMode::Count if !is_room(&target) => {
                let text = format!("watch of {target} refused: a count watches a room");
                self.refuse_request(now, key, Reason::new(ReasonCode::InvalidWatch, text));
                return self.report_holdings(key);
            }
            WatchMode::Count => Watching::Count,
            _ => Watching::Full,
        };
        if let Err(reason) = self.permits(key, name, false, &target) {
            self.refuse_request(now, key, reason);
            return self.report_holdings(key);
        }
        // As for JOIN: the loop holds the exact watches and keeps the bound.
        if mode != WatchMode::Once
            && !self.watches.watches(key.0, &target)
            && self.watches.count_of(key.0) >= MAX_WATCHES_PER_SESSION
        {
            self.refuse_request(now, key, too_many_watches(&target));
            return self.report_holdings(key);
        }
        // Reading from before the snapshot's number, so that no event
        // after it can be missed.
        if mode != WatchMode::Once {
            self.start_reading_hub();
        }
        let Some(since) = self.send_snapshot(now, key, &target, watching) else {
            self.stop_reading_hub_if_idle();
            return self.report_holdings(key);
        };
        if mode != WatchMode::Once {
            let watcher = Watcher {
                key,
                watching,
                since,
            };
            if self.watches.add(&target, watcher) {
                self.metrics.watches_changed(1);
            }
        }
        self.report_holdings(key);
    }

    /// Session `key` ended: its watches end with it.
    pub(super) fn watches_ended(&mut self, key: ConnKey) {
        let targets = self.watches.of.get(&key.0).cloned().unwrap_or_default();
        for target in &targets {
            self.watches.remove(key, target);
        }
        if !targets.is_empty() {
            self.metrics.watches_changed(-(targets.len() as i64));
            self.stop_reading_hub_if_idle();
        }
    }

    fn start_reading_hub(&mut self) {
        if self.watches.feed.is_some() {
            return;
        }
        let hub = self.presence.hub();
        self.watches.feed = Some(hub.subscribe());
        if let Some(wake) = hub.loop_wake(self.loop_index) {
            wake.watching.store(true, Ordering::Relaxed);
        }
    }

    fn stop_reading_hub_if_idle(&mut self) {
        if !self.watches.by_target.is_empty() || self.watches.feed.is_none() {
            return;
        }
        self.watches.feed = None;
        self.watches.behind = false;
        if let Some(wake) = self.presence.hub().loop_wake(self.loop_index) {
            wake.watching.store(false, Ordering::Relaxed);
        }
    }

    /// Passes the events published since the last turn on to this loop's
    /// watchers, up to [`UPDATES_PER_TURN`] frames, and never past the
    /// moment a deadline falls due: a verdict goes first, the rest of the
    /// events next turn.
    pub(super) fn pass_on_presence(&mut self, now: Now) {
        let Some(mut feed) = self.watches.feed.take() else {
            return;
        };
        if let Some(wake) = self.presence.hub().loop_wake(self.loop_index) {
            wake.pending.store(false, Ordering::Release);
        }
        let mut sent = 0;
        self.watches.behind = false;
        let due = self.timers.next_expiry();
        let slice = Until::Slice {
            stop_at: Instant::now() + PASS_SLICE,
            due,
        };
        // What the last pass could not write goes first; nothing more is
        // read until it is written, which bounds what the batches hold.
        if !self.flush_batches(now, slice) {
            self.watches.behind = true;
            self.watches.feed = Some(feed);
            return self.carry_out(now);
        }
        let mut events = 0u32;
        while sent < UPDATES_PER_TURN {
            events += 1;
            // The clock is read every few events, not every one: an
            // event's frames take a microsecond or so a watcher.
            if events % CLOCK_EVERY_EVENTS == 0
                && due.is_some_and(|due| self.clock.listening(Instant::now()) >= due)
            {
                self.watches.behind = true;
                break;
            }
            match feed.try_recv() {
                None => break,
                Some(FeedItem::Event(event)) => sent += self.pass_on(&event),
                Some(FeedItem::Gap { missed }) => {
                    tracing::info!(
                        loop_index = self.loop_index,
                        missed,
                        "this loop fell behind the presence ring: its watchers are sent resync and fresh snapshots"
                    );
                    // Read on from now, not through the backlog: what was
                    // lost and what followed it up to the fresh snapshots
                    // is in them (subscribed before they are taken, so
                    // nothing after them is missed).
                    feed = self.presence.hub().subscribe();
                    sent += self.resync_watchers(now);
                }
            }
            if sent >= UPDATES_PER_TURN {
                self.watches.behind = true;
            }
        }
        if !self.flush_batches(now, slice) {
            self.watches.behind = true;
        }
        self.metrics.presence_updates(sent as u64);
        // Put back unless the last watcher went meanwhile.
        if !self.watches.by_target.is_empty() {
            self.watches.feed = Some(feed);
        }
        self.carry_out(now);
    }

    /// Sends `event` to every watcher of its name and rooms; the frames sent.
    fn pass_on(&mut self, event: &PresenceEvent) -> usize {
        let mut sent = 0;
        if self.watches.by_target.contains_key(event.name.as_str()) {
            if let Some(update) = updates::for_name(event) {
                sent += self.send_to_watchers(&event.name, event.seq, None, update);
            }
        }
        for (room, count) in &event.rooms {
            if !self.watches.by_target.contains_key(&**room) {
                continue;
            }
            let full = updates::for_room(event, room, *count, Watching::Full);
            let counted = updates::for_room(event, room, *count, Watching::Count);
            if let Some(update) = full {
                sent += self.send_to_watchers(room, event.seq, Some(Watching::Full), update);
            }
            if let Some(update) = counted {
                sent += self.send_to_watchers(room, event.seq, Some(Watching::Count), update);
            }
        }
        sent
    }

    /// Adds `update` to this turn's batch of every watcher of `target`
    /// (of the kind `only`, if given) that has not seen it; how many.
    fn send_to_watchers(
        &mut self,
        target: &str,
        seq: u64,
        only: Option<Watching>,
        update: PresenceUpdate,
    ) -> usize {
        let watchers: Vec<ConnKey> = self
            .watches
            .by_target
            .get(target)
            .into_iter()
            .flatten()
            .filter(|watcher| {
                watcher.since < seq && only.is_none_or(|only| only == watcher.watching)
            })
            .map(|watcher| watcher.key)
            .collect();
        if watchers.is_empty() {
            return 0;
        }
        let mut encoded = Vec::new();
        push_update(&mut encoded, update);
        for key in &watchers {
            self.watches.batches.add(*key, &encoded);
        }
        watchers.len()
    }
}

fn push_update(encoded: &mut Vec<u8>, update: PresenceUpdate) {
    // Every field is bounded by the rules (names, rooms, statuses, reason
    // labels all fit a str8), so encoding cannot fail.
    let _ = codec::encode(&Frame::Presence(update), encoded);
}
