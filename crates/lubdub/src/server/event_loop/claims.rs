//! Claims and releases of names in the registry, for the machines that
//! ask. A claim that takes a name over from a session of this loop ends
//! that session first (BYE `taken_over`); one held elsewhere is the
//! registry's to fence. The registry's own errors are for the log: the
//! peer is told what the machine chooses.

use lubdub_core::connection::{ClaimAnswer, Now};
use lubdub_core::detector::Detector;
use tracing::warn;

use super::super::registry::{Claim, RegistryError};
use super::{session_id, split_session_id, Command, ConnKey, EventLoop};
use crate::escape::Escaped;

impl<D: Detector> EventLoop<D> {
    /// Claims `name` for connection `key` and gives its machine the answer.
    pub(super) fn claim(&mut self, now: Now, key: ConnKey, name: String) {
        let session_id = session_id(self.loop_index, key.0, key.1);
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
                // Back within a will's delay: that will is not sent.
                if self.will_board.name_back(&name) {
                    tracing::info!(name = %Escaped(&name), "back online within its last will's delay: the will is not sent");
                }
                let replaced = claimed
                    .previous
                    .as_ref()
                    .map(|previous| previous.session_id);
                if let Some(previous) = claimed
                    .previous
                    .filter(|previous| previous.node == self.node)
                {
                    let new_peer = peer.to_string();
                    let loop_index = self.loop_of(previous.session_id);
                    if loop_index == self.loop_index {
                        self.take_over(now, previous.session_id, &new_peer);
                    } else {
                        self.tell(
                            loop_index,
                            Command::TakeOver {
                                session_id: previous.session_id,
                                new_peer,
                            },
                        );
                    }
                }
                ClaimAnswer::Claimed {
                    session_id,
                    epoch: claimed.epoch,
                    wall_ms: wall_clock_ms(),
                    replaced,
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
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_claim(now, answer, rules, out);
        });
        let established = self
            .slots
            .get(key.0)
            .is_some_and(|slot| slot.machine.session().is_some());
        if established {
            self.names.insert(&name, key.0);
        }
    }

    /// Ends the session of this loop that held a name just claimed by a
    /// connection from `new_peer`.
    fn take_over(&mut self, now: Now, old_session_id: u64, new_peer: &str) {
        let (_, index, generation) = split_session_id(old_session_id);
        let key = (index, generation);
        if !self.is_current(key) {
            return;
        }
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_taken_over(now, new_peer, rules, out);
        });
    }

    /// Releases `name` for the claim of `epoch` of the session of `key`,
    /// which is ending (fenced: a newer claim of the name is not touched).
    ///
    /// A newer claim holding the name means the session was taken over
    /// before it ended, by a session this loop has not heard of yet: on
    /// another loop whose takeover command is still unread, or on another
    /// node. Its end is then reported as a takeover (`superseded`): the
    /// name never went offline, and no will is sent for it.
    pub(super) fn release(&mut self, key: ConnKey, name: &str, epoch: u64) {
        match self.registry.release(name, epoch) {
            Ok(true) => {}
            Ok(false) => {
                // Only on this rare path: the holder is looked up.
                let newer = self
                    .registry
                    .lookup(name)
                    .ok()
                    .flatten()
                    .is_some_and(|holder| holder.epoch > epoch);
                if newer {
                    self.superseded = Some(key);
                }
            }
            Err(error) => warn!(name = %Escaped(name), %error, "could not release name"),
        }
    }

    /// The slab index of the established session of this loop holding
    /// `name` (its index of names: no lock).
    pub(super) fn local_session(&self, name: &str) -> Option<usize> {
        let slots = &self.slots;
        self.names.find(name, |index| {
            slots
                .get(index)
                .and_then(|slot| slot.machine.session())
                .map(|session| session.name())
        })
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
