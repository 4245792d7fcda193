//! One timing wheel for every deadline of a server: O(1) insert, O(1) per
//! expiry, no timer object per session.
//!
//! A hashed wheel of 1 ms slots. An entry due more than one revolution ahead
//! sits in its slot until the revolution it is due in. Entries are never
//! cancelled: a caller recognises a stale one (its session gone, or
//! refreshed) by the key it stored, typically a slab index plus a generation,
//! and ignores or re-inserts it. This is what keeps the heartbeat path free of
//! any wheel operation: a heartbeat only moves `last_seen`, and the pending
//! entry re-schedules itself when it fires.
//!
//! Time is passed in; the wheel only stores ticks relative to its origin.

use std::time::{Duration, Instant};

/// Width of one slot. Deadlines are rounded up to it, so nothing fires early
/// and nothing fires more than one slot late (given a caller that wakes at
/// [`DeadlineWheel::next_expiry`]).
pub const SLOT: Duration = Duration::from_millis(1);

/// Number of slots: one revolution covers 4.096 s, more than the default
/// interval, so most entries are visited only when due.
const SLOT_COUNT: usize = 4096;
const WORD_BITS: usize = 64;
/// Capacity an emptied slot keeps; larger buffers are freed. Small: over
/// time every one of the 4,096 slots serves some entry, and what each
/// keeps is resident for good (4 entries: 64 bytes a slot, 256 KiB in all).
const KEPT_CAPACITY: usize = 4;

/// Deadlines of type-`K` keys, ordered by 1 ms tick.
#[derive(Debug)]
pub struct DeadlineWheel<K> {
    origin: Instant,
    /// Every tick up to and including this one has been expired.
    expired_through: u64,
    /// Per slot, each entry's revolution (its tick divided by the slot
    /// count; the slot gives the remainder) and key. A `u32` revolution
    /// lasts 556 years of 4.096 s revolutions and keeps an entry with a
    /// 12-byte key at 16 bytes instead of 24: every session has one.
    slots: Vec<Vec<(u32, K)>>,
    /// Bit `i` set when slot `i` is non-empty, so the next expiry is found by
    /// scanning 64 words rather than 4,096 slots.
    occupied: Vec<u64>,
    len: usize,
}

impl<K: Copy> DeadlineWheel<K> {
    /// An empty wheel whose tick 0 is `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            expired_through: 0,
            slots: (0..SLOT_COUNT).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOT_COUNT / WORD_BITS],
            len: 0,
        }
    }

    /// Number of entries waiting, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `key` at `deadline`. A deadline already past fires at the
    /// next [`expire`](Self::expire).
    pub fn insert(&mut self, deadline: Instant, key: K) {
        let tick = self.tick_ceil(deadline);
        self.insert_at_tick(tick, key);
    }

    /// Schedules `key` at `deadline` rounded up to a multiple of `grid` (counted
    /// from the origin), but not after `latest`. Entries that need not be
    /// punctual then share a few slots, and a caller that sleeps until the
    /// next expiry wakes once for all of them instead of once each.
    pub fn insert_coalesced(&mut self, deadline: Instant, grid: Duration, latest: Instant, key: K) {
        let grid_ticks = (grid.as_nanos() / SLOT.as_nanos()).max(1) as u64;
        let aligned = self.tick_ceil(deadline).div_ceil(grid_ticks) * grid_ticks;
        self.insert_at_tick(aligned.min(self.tick_ceil(latest)), key);
    }

    fn insert_at_tick(&mut self, tick: u64, key: K) {
        let tick = tick.max(self.expired_through + 1);
        let slot = (tick % SLOT_COUNT as u64) as usize;
        let revolution = u32::try_from(tick / SLOT_COUNT as u64).unwrap_or(u32::MAX);
        self.slots[slot].push((revolution, key));
        self.occupied[slot / WORD_BITS] |= 1 << (slot % WORD_BITS);
        self.len += 1;
    }

    /// The earliest instant at which an entry may be due, or `None` when the
    /// wheel is empty. It can be early by whole revolutions for an entry
    /// scheduled far ahead (the caller then wakes, finds nothing, and asks again).
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let start = self.expired_through + 1;
        let start_slot = (start % SLOT_COUNT as u64) as usize;
        let distance = self.next_occupied_distance(start_slot)?;
        Some(self.instant_of(start + distance as u64))
    }

    /// Moves every entry due at or before `now` into `due`, in no particular order.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<K>) {
        let now_tick = self.tick_floor(now);
        if now_tick <= self.expired_through {
            return;
        }
        let first = self.expired_through + 1;
        // After a long gap every slot is visited once, not once per elapsed tick.
        let last = now_tick.min(first + SLOT_COUNT as u64 - 1);
        let mut tick = first;
        while tick <= last {
            let slot = (tick % SLOT_COUNT as u64) as usize;
            match self.next_occupied_distance(slot) {
                Some(distance) if tick + distance as u64 <= last => {
                    tick += distance as u64;
                    let slot = (tick % SLOT_COUNT as u64) as usize;
                    self.expire_slot(slot, now_tick, due);
                    tick += 1;
                }
                _ => break,
            }
        }
        self.expired_through = now_tick;
    }

    fn expire_slot(&mut self, slot: usize, now_tick: u64, due: &mut Vec<K>) {
        let entries = &mut self.slots[slot];
        let before = entries.len();
        entries.retain(|&(revolution, key)| {
            let tick = u64::from(revolution) * SLOT_COUNT as u64 + slot as u64;
            if tick <= now_tick {
                due.push(key);
                false
            } else {
                true
            }
        });
        self.len -= before - entries.len();
        if entries.is_empty() {
            self.occupied[slot / WORD_BITS] &= !(1 << (slot % WORD_BITS));
            // A slot that once held a crowd (a burst of handshakes, the
            // grid line of many sessions' checks) would keep that capacity
            // for ever, and with short intervals every slot of the ring
            // gets its crowd in turn: memory proportional to the peak of
            // each slot instead of the entries alive. Freed, it is reused
            // by whichever slot fills next.
            if entries.capacity() > KEPT_CAPACITY {
                *entries = Vec::new();
            }
        }
    }

    /// Slots from `slot` (inclusive) to the next occupied one, wrapping around.
    fn next_occupied_distance(&self, slot: usize) -> Option<usize> {
        let words = self.occupied.len();
        let first_word = slot / WORD_BITS;
        let masked = self.occupied[first_word] & (!0u64 << (slot % WORD_BITS));
        if masked != 0 {
            return Some(first_word * WORD_BITS + masked.trailing_zeros() as usize - slot);
        }
        for step in 1..=words {
            let word_index = (first_word + step) % words;
            let word = self.occupied[word_index];
            if word != 0 {
                let found = word_index * WORD_BITS + word.trailing_zeros() as usize;
                return Some((found + SLOT_COUNT - slot) % SLOT_COUNT);
            }
        }
        None
    }

    fn tick_floor(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    fn tick_ceil(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos.div_ceil(SLOT.as_nanos())).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + Duration::from_nanos(tick.saturating_mul(SLOT.as_nanos() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_emptied_crowded_slot_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        for key in 0..1000 {
            wheel.insert(t0 + 5 * MS, key);
        }
        let mut due = Vec::new();
        wheel.expire(t0 + 5 * MS, &mut due);
        assert_eq!(due.len(), 1000);
        assert_eq!(wheel.slots[5].capacity(), 0);
        for key in 0..3 {
            wheel.insert(t0 + 6 * MS, key);
        }
        wheel.expire(t0 + 6 * MS, &mut due);
        assert!(wheel.slots[6].capacity() > 0, "small slots keep theirs");
    }

    #[test]
    fn coalesced_entries_share_grid_slots_but_keep_their_latest() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        wheel.insert_coalesced(t0 + 3 * MS, 25 * MS, t0 + 1000 * MS, 'a');
        wheel.insert_coalesced(t0 + 24 * MS, 25 * MS, t0 + 1000 * MS, 'b');
        wheel.insert_coalesced(t0 + 26 * MS, 25 * MS, t0 + 30 * MS, 'c');
        assert_eq!(wheel.next_expiry(), Some(t0 + 25 * MS));
        let mut due = Vec::new();
        wheel.expire(t0 + 24 * MS, &mut due);
        assert!(
            due.is_empty(),
            "nothing fires before its deadline's grid line"
        );
        wheel.expire(t0 + 25 * MS, &mut due);
        assert_eq!(due, ['a', 'b']);
        due.clear();
        wheel.expire(t0 + 30 * MS, &mut due);
        assert_eq!(
            due,
            ['c'],
            "capped at its latest instant, not the grid line at 50 ms"
        );
    }

    fn expired(wheel: &mut DeadlineWheel<u32>, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        wheel.expire(now, &mut due);
        due.sort_unstable();
        due
    }

    #[test]
    fn entries_fire_at_their_deadline_never_before() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        wheel.insert(t0 + 10 * MS, 1);
        wheel.insert(t0 + 10 * MS + Duration::from_micros(300), 2);
        assert_eq!(wheel.next_expiry(), Some(t0 + 10 * MS));
        assert_eq!(expired(&mut wheel, t0 + 9 * MS), Vec::<u32>::new());
        assert_eq!(expired(&mut wheel, t0 + 10 * MS), vec![1]);
        // Rounded up to the next slot, never down.
        assert_eq!(wheel.next_expiry(), Some(t0 + 11 * MS));
        assert_eq!(expired(&mut wheel, t0 + 11 * MS), vec![2]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_expiry(), None);
    }

    #[test]
    fn entries_beyond_one_revolution_wait_for_their_own() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        let far = t0 + SLOT * (SLOT_COUNT as u32 + 5);
        wheel.insert(t0 + 5 * MS, 1);
        wheel.insert(far, 2);
        assert_eq!(expired(&mut wheel, t0 + 5 * MS), vec![1]);
        assert_eq!(expired(&mut wheel, far - MS), Vec::<u32>::new());
        assert_eq!(wheel.len(), 1);
        assert_eq!(expired(&mut wheel, far), vec![2]);
    }

    #[test]
    fn a_long_gap_expires_everything_due_in_one_call() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        for i in 0..10_000u32 {
            wheel.insert(t0 + MS * (i % 9_000 + 1), i);
        }
        let due = expired(&mut wheel, t0 + Duration::from_secs(60));
        assert_eq!(due.len(), 10_000);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_deadline_in_the_past_fires_at_the_next_expire() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        assert!(expired(&mut wheel, t0 + 50 * MS).is_empty());
        wheel.insert(t0 + 10 * MS, 7);
        assert_eq!(wheel.next_expiry(), Some(t0 + 51 * MS));
        assert_eq!(expired(&mut wheel, t0 + 51 * MS), vec![7]);
    }

    #[test]
    fn next_expiry_wraps_around_the_end_of_the_wheel() {
        let t0 = Instant::now();
        let mut wheel = DeadlineWheel::new(t0);
        let late = t0 + SLOT * (SLOT_COUNT as u32 - 2);
        wheel.insert(late, 1);
        assert_eq!(expired(&mut wheel, late), vec![1]);
        wheel.insert(late + 10 * MS, 2);
        assert_eq!(wheel.next_expiry(), Some(late + 10 * MS));
        assert_eq!(expired(&mut wheel, late + 10 * MS), vec![2]);
    }
}
