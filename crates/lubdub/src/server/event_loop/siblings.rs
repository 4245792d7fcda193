//! The other loops of the process: what this loop asks of them and does
//! for them. A takeover of a name held on another loop, a direct message
//! to a session there and a broadcast are commands to that loop, carried
//! out between its turns like any other; nothing of a session is shared.
//!
//! Stalls: each loop publishes its own CPU time every turn, and judges its
//! stalls by the process's CPU time less the other loops': time another
//! loop spent working on another core explains nothing of this loop's
//! silence (and, counted, would hide a stall of this loop while the others
//! are busy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;

use super::{process_cpu_time, split_session_id, Command, EventLoop};

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// The process's CPU time less what the loops other than `me` published.
pub(super) fn cpu_explaining_stalls(cpu: &[AtomicU64], me: usize) -> Duration {
    let others: u64 = cpu
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != me)
        .map(|(_, nanos)| nanos.load(Ordering::Relaxed))
        .sum();
    process_cpu_time().saturating_sub(Duration::from_nanos(others))
}

impl<D: Detector> EventLoop<D> {
    /// The CPU time this loop's listening clock is kept by (see the module
    /// documentation); with one loop, the process's.
    pub(super) fn cpu_explaining_stalls(&self) -> impl Fn() -> Duration {
        let cpu = Arc::clone(&self.cpu);
        let me = self.loop_index;
        move || cpu_explaining_stalls(&cpu, me)
    }

    /// Publishes this loop's CPU time for the others (not needed alone).
    pub(super) fn publish_cpu(&self) {
        if self.siblings.len() > 1 {
            let nanos = u64::try_from(thread_cpu_time().as_nanos()).unwrap_or(u64::MAX);
            self.cpu[self.loop_index].store(nanos, Ordering::Relaxed);
        }
    }

    /// Whether `session_id` names a session of another loop of this process.
    pub(super) fn loop_of(&self, session_id: u64) -> usize {
        split_session_id(session_id).0
    }

    /// Hands `command` to loop `loop_index`; a loop that is gone (shutting
    /// down) has no one left to tell.
    pub(super) fn tell(&self, loop_index: usize, command: Command) {
        if let Some(sibling) = self.siblings.get(loop_index) {
            let _ = sibling.send(command);
        }
    }

    /// Hands a MSG (`Deliver` or `Broadcast`) to loop `loop_index`: its
    /// bytes count against the process's outbound cap until that loop
    /// takes them into a fan-out of its own.
    pub(super) fn hand_over(&self, loop_index: usize, command: Command) {
        let len = match &command {
            Command::Deliver { encoded, .. }
            | Command::Broadcast { encoded }
            | Command::RoomBroadcast { encoded, .. } => encoded.len(),
            _ => 0,
        };
        self.held_changed(0, len);
        let delivered = self
            .siblings
            .get(loop_index)
            .is_some_and(|sibling| sibling.send(command).is_ok());
        if !delivered {
            self.held_changed(len, 0);
        }
    }

    /// A session of another loop claimed the name of this loop's session
    /// `session_id` (if it is still here): it ends with BYE `taken_over`.
    pub(super) fn taken_over_elsewhere(&mut self, now: Now, session_id: u64, new_peer: &str) {
        let (_, index, generation) = split_session_id(session_id);
        let key = (index, generation);
        if !self.is_current(key) {
            return;
        }
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_taken_over(now, new_peer, rules, out)
        });
        self.carry_out(now);
    }

    /// A MSG from another loop's session, for this loop's session
    /// `to` (a direct message) or for every established session here (a
    /// broadcast): queued for fan-out like a local one, under this loop's
    /// share rules (the sender's budgets were charged on its own loop).
    pub(super) fn deliver_from_elsewhere(
        &mut self,
        now: Now,
        direct: Option<(u64, u64, String)>,
        encoded: &[u8],
    ) {
        // Landed: from here on it is this loop's, counted in its fan-out.
        self.held_changed(encoded.len(), 0);
        let (recipients, direct_to, from): (Vec<(usize, u32)>, _, _) = match direct {
            Some((session_id, from, to)) => {
                let (_, index, generation) = split_session_id(session_id);
                let here = self.slots.get(index).is_some_and(|slot| {
                    slot.generation == generation && slot.machine.session().is_some()
                });
                if !here {
                    return;
                }
                (vec![(index, generation)], Some(to), Some(from))
            }
            None => {
                let everyone = self
                    .slots
                    .iter()
                    .filter(|(_, slot)| slot.machine.session().is_some())
                    .map(|(index, slot)| (index, slot.generation))
                    .collect();
                (everyone, None, None)
            }
        };
        self.queue_fanout(now, None, encoded, recipients, direct_to, from);
    }

    /// A direct MSG of this loop's session `session_id` was not delivered
    /// to `to` on another loop (its queue was full): NOTICE `recipient_busy`.
    pub(super) fn not_delivered_elsewhere(&mut self, now: Now, session_id: u64, to: &str) {
        let (_, index, generation) = split_session_id(session_id);
        let key = (index, generation);
        if self.is_current(key) {
            let text = super::relay::recipient_busy_text(to);
            self.notify(
                now,
                key,
                lubdub_core::protocol::ReasonCode::RecipientBusy,
                text,
            );
            self.carry_out(now);
        }
    }
}
