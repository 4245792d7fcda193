//! Snapshots of watched targets: the one a WATCH is answered with
//! (charged to the watcher's fan-out budget), and the fresh ones a loop
//! that fell behind the hub's ring owes its watchers after `resync`,
//! built once per target and kind and shared.

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use lubdub_core::protocol::rooms::{is_room, PresenceUpdate, UpdateKind, MAX_LISTED_MEMBERS};
use lubdub_core::protocol::{Reason, ReasonCode};

use super::super::budgets::FanoutRefusal;
use super::super::{ConnKey, EventLoop};
use super::{push_update, Watcher, Watching};

/// A target's state as a watcher sees it, encoded as PRESENCE frames.
struct Snapshot {
    /// The hub's number it reflects: later events follow it.
    seq: u64,
    encoded: Vec<u8>,
    frames: u64,
}

impl<D: Detector> EventLoop<D> {
    /// Sends session `key` a snapshot of `target`: its sequence number
    /// (returned), then, unless counting, its members. `None` when it was
    /// refused or could not be queued. Charged to the session's fan-out
    /// budget (a resync's snapshots, which the loop owes, are not).
    pub(super) fn send_snapshot(
        &mut self,
        now: Now,
        key: ConnKey,
        target: &str,
        watching: Watching,
    ) -> Option<u64> {
        // A snapshot is a fan-out to one: charged to the watcher's budget
        // (and the loop's), so that WATCHes of large rooms cannot make the
        // loop list them at the message rate.
        if let Err(refusal) = self.check_fanout(now, key.0) {
            let (code, whose) = match refusal {
                FanoutRefusal::Gone => return None,
                FanoutRefusal::Sender { .. } => (ReasonCode::RateLimited, "this session's"),
                FanoutRefusal::Loop { .. } | FanoutRefusal::Memory => {
                    (ReasonCode::ServerBusy, "the server's")
                }
            };
            let again = refusal.wait().map_or_else(
                || "later".to_owned(),
                |wait| format!("in {} ms", wait.as_millis() + 1),
            );
            let text = format!(
                "watch of {target} not answered: a snapshot counts as one delivery per \
                 member against {whose} fan-out budget, which is spent; watch again {again}"
            );
            self.refuse_request(now, key, Reason::new(code, text));
            return None;
        }
        let snapshot = match self.snapshot(target, watching) {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                self.refuse_request(now, key, reason);
                return None;
            }
        };
        let deliveries = u32::try_from(snapshot.frames).unwrap_or(u32::MAX);
        self.charge_fanout(now, key.0, deliveries, snapshot.encoded.len());
        self.metrics.presence_updates(snapshot.frames);
        self.send(now, key, &snapshot.encoded)
            .then_some(snapshot.seq)
    }

    /// `target` as a watcher of `watching` sees it now, encoded: or why it
    /// cannot be listed (a room too large for a snapshot or for a queue).
    fn snapshot(&self, target: &str, watching: Watching) -> Result<Snapshot, Reason> {
        let hub = std::sync::Arc::clone(self.presence.hub());
        // Read before the state it numbers: what the snapshot shows is
        // at least as new as `seq`, and every later event follows it
        // (applied by session id, a change already shown changes nothing).
        let seq = hub.last_seq();
        let members: Vec<(Box<str>, u64)>;
        let count;
        if is_room(target) {
            let limit = if watching == Watching::Count {
                0
            } else {
                MAX_LISTED_MEMBERS + 1
            };
            let listed = hub.rooms().members(target, limit);
            if listed.listed.len() > MAX_LISTED_MEMBERS {
                let text = format!(
                    "watch of {target} refused: it has {} members, more than the \
                     {MAX_LISTED_MEMBERS} a snapshot lists; watch its count instead",
                    listed.count
                );
                return Err(Reason::new(ReasonCode::InvalidWatch, text));
            }
            count = listed.count;
            members = listed.listed;
        } else {
            members = match self.registry.lookup(target) {
                Ok(Some(record)) => vec![(target.into(), record.session_id)],
                _ => Vec::new(),
            };
            count = members.len() as u32;
        }
        let marks = hub.marks(members.iter().map(|(name, _)| &**name));
        let mut snapshot = PresenceUpdate::new(seq, UpdateKind::Snapshot, target);
        snapshot.count = count;
        let mut encoded = Vec::new();
        let mut frames = 1u64;
        push_update(&mut encoded, snapshot);
        for ((name, session_id), mark) in members.into_iter().zip(marks) {
            let mut member = PresenceUpdate::new(seq, UpdateKind::Member, target);
            member.name = name.into();
            member.session_id = session_id;
            if let Some(mark) = mark.filter(|mark| mark.session_id == session_id) {
                member.suspect = mark.suspect;
                member.text = mark.status.map(String::from).unwrap_or_default();
            }
            push_update(&mut encoded, member);
            frames += 1;
        }
        if encoded.len() > self.message_share() {
            let text = format!(
                "watch of {target} refused: its snapshot of {count} members takes {} bytes, \
                 more than the {} this session's queue holds for it; watch its count instead",
                encoded.len(),
                self.message_share()
            );
            return Err(Reason::new(ReasonCode::InvalidWatch, text));
        }
        Ok(Snapshot {
            seq,
            encoded,
            frames,
        })
    }

    /// The loop fell behind the hub's ring: every watcher is told
    /// `resync` and sent a fresh snapshot, one built per target and kind
    /// of watch and shared by its watchers (a loop that fell behind is
    /// busy: a thousand watchers of a room cost one listing, not a
    /// thousand). The frames sent.
    pub(super) fn resync_watchers(&mut self, now: Now) -> usize {
        self.metrics.watch_resync();
        // The changes before the gap go first.
        self.flush_batches(now, super::Until::Done);
        let targets: Vec<(Box<str>, Vec<Watcher>)> = self
            .watches
            .by_target
            .iter()
            .map(|(target, watchers)| (target.clone(), watchers.clone()))
            .collect();
        let mut sent = 0;
        for (target, watchers) in targets {
            for watching in [Watching::Full, Watching::Count] {
                let of_kind: Vec<Watcher> = watchers
                    .iter()
                    .filter(|watcher| watcher.watching == watching)
                    .copied()
                    .collect();
                if !of_kind.is_empty() {
                    sent += self.resync_target(now, &target, watching, &of_kind);
                }
            }
        }
        sent
    }

    /// Sends `watchers` of `target` (all watching it as `watching`)
    /// `resync` and one fresh snapshot; the frames sent.
    fn resync_target(
        &mut self,
        now: Now,
        target: &str,
        watching: Watching,
        watchers: &[Watcher],
    ) -> usize {
        let snapshot = self.snapshot(target, watching);
        let mut framed = Vec::new();
        push_update(
            &mut framed,
            PresenceUpdate::new(0, UpdateKind::Resync, target),
        );
        if let Ok(snapshot) = &snapshot {
            framed.extend_from_slice(&snapshot.encoded);
        }
        let mut sent = 0;
        for watcher in watchers {
            if !self.send(now, watcher.key, &framed) {
                continue;
            }
            match &snapshot {
                Ok(snapshot) => {
                    let fresh = Watcher {
                        since: snapshot.seq,
                        ..*watcher
                    };
                    self.watches.add(target, fresh);
                    sent += 1 + snapshot.frames as usize;
                }
                // Not snapshotted (told why): no longer watched, rather
                // than watched with a hole in its changes.
                Err(reason) => {
                    self.refuse_request(now, watcher.key, reason.clone());
                    if self.watches.remove(watcher.key, target) {
                        self.metrics.watches_changed(-1);
                    }
                    self.report_holdings(watcher.key);
                    sent += 1;
                }
            }
        }
        sent
    }
}
