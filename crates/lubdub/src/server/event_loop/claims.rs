//! Claims and releases of names in the registry, for the machines that
//! ask. A claim that takes a name over from a session of this loop ends
//! that session first (BYE `taken_over`); one held elsewhere is the
//! registry's to fence. The registry's own errors are for the log: the
//! peer is told what the machine chooses.

use lubdub_core::connection::{ClaimAnswer, Now};
use lubdub_core::detector::Detector;
use tracing::warn;

use super::super::registry::{Claim, RegistryError};
use super::{session_id, split_session_id, ConnKey, EventLoop};
use crate::escape::Escaped;

impl<D: Detector> EventLoop<D> {
    /// Claims `name` for connection `key` and gives its machine the answer.
    pub(super) fn claim(&mut self, now: Now, key: ConnKey, name: String) {
        let session_id = session_id(key.0, key.1);
        let Some(peer) = self.slots.get(key.0).map(|slot| slot.conn.peer) else {
            return;
        };
        let claimed = self.registry.claim(Claim {
            name: name.clone(),
            session_id,
            node: self.node,
        });
        let answer = match claimed {
            Ok(claimed) => {
                if let Some(previous) = claimed
                    .previous
                    .filter(|previous| previous.node == self.node)
                {
                    self.take_over(now, previous.session_id, &peer.to_string());
                }
                ClaimAnswer::Claimed {
                    session_id,
                    epoch: claimed.epoch,
                    wall_ms: wall_clock_ms(),
                }
            }
            Err(error @ RegistryError::Confusable { .. }) => ClaimAnswer::Confusable {
                text: error.to_string(),
            },
            Err(RegistryError::Unavailable(detail)) => {
                warn!(%peer, name = %Escaped(&name), %detail, "cannot claim a name: the registry is unavailable");
                ClaimAnswer::Unavailable
            }
        };
        let Self {
            slots,
            rules,
            outputs,
            ..
        } = self;
        if let Some(slot) = slots.get_mut(key.0) {
            slot.machine
                .handle_claim(now, answer, rules, &mut outputs.to(key));
        }
    }

    /// Ends the session of this loop that held a name just claimed by a
    /// connection from `new_peer`.
    fn take_over(&mut self, now: Now, old_session_id: u64, new_peer: &str) {
        let key = split_session_id(old_session_id);
        if !self.is_current(key) {
            return;
        }
        let Self {
            slots,
            rules,
            outputs,
            ..
        } = self;
        if let Some(slot) = slots.get_mut(key.0) {
            slot.machine
                .handle_taken_over(now, new_peer, rules, &mut outputs.to(key));
        }
    }

    /// Releases `name` for the claim of `epoch` (fenced: a newer claim of
    /// the name is not touched).
    pub(super) fn release(&mut self, name: &str, epoch: u64) {
        if let Err(error) = self.registry.release(name, epoch) {
            warn!(name = %Escaped(name), %error, "could not release name");
        }
    }

    /// The slab index of the established local session holding `name`.
    pub(super) fn local_session(&self, name: &str) -> Option<usize> {
        let record = self.registry.lookup(name).ok().flatten()?;
        if record.node != self.node {
            return None;
        }
        let (index, generation) = split_session_id(record.session_id);
        let slot = self.slots.get(index)?;
        (slot.generation == generation && slot.machine.session().is_some()).then_some(index)
    }
}

/// Wall-clock time, ms since the Unix epoch (0 before it).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
