//! The registry of who is online: name → session record, and confusable
//! skeleton → name, so that two names that look alike are never both online.
//!
//! The event loop consults it on join, leave, takeover and direct messages,
//! never on a heartbeat. [`Registry`] stores plain data (ids, epochs, the
//! owning node) rather than handles to connections, so that a backend shared
//! by several server processes can implement it later; [`InMemoryRegistry`]
//! is the single-process implementation.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use lubdub_core::protocol::name::confusable_skeleton;

/// Identifies one server process among those sharing a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NodeId(pub u64);

/// What the registry knows about one online session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Name the session holds.
    pub name: String,
    /// Session id, unique within its node.
    pub session_id: u64,
    /// Fencing epoch assigned by the registry at claim time.
    pub epoch: u64,
    /// Server process that holds the connection.
    pub node: NodeId,
}

/// A request to hold a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Name to hold.
    pub name: String,
    /// Session that will hold it.
    pub session_id: u64,
    /// Node of that session.
    pub node: NodeId,
}

/// The result of a successful claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Epoch of the new holder: larger than every epoch handed out before.
    pub epoch: u64,
    /// The session that held the name until now, which its node must close.
    pub previous: Option<SessionRecord>,
}

/// Why the registry could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The backend could not be reached or answered with an error; nothing
    /// changed. The in-memory registry never fails so.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The claimed name looks like `online`, a different name that is
    /// online (their confusable skeletons are equal); nothing changed. The
    /// text is sent to the peer: `online` is a valid name, so it carries
    /// no invisible or control character.
    #[error(
        "name looks like {online:?}, which is online; choose a name that cannot be mistaken for it"
    )]
    Confusable {
        /// The online name the claim looks like.
        online: String,
    },
}

/// Name → session, shared by every connection of a server.
///
/// Implementations must make `claim` and `release` atomic per name and per
/// confusable skeleton (at most one online name per skeleton), and
/// `release` must be fenced by the epoch: it only removes the record when
/// the name is still held under the given epoch, so a late release from an
/// old, taken-over connection can never remove its successor.
pub trait Registry: Send + Sync + 'static {
    /// Makes `claim.session_id` the holder of `claim.name`, taking it over
    /// from whoever held it, unless a different online name has the same
    /// confusable skeleton.
    ///
    /// # Errors
    /// [`RegistryError::Confusable`] when a different name that looks the
    /// same is online; [`RegistryError::Unavailable`] when the backend
    /// fails. The name is then unchanged.
    fn claim(&self, claim: Claim) -> Result<Claimed, RegistryError>;

    /// Removes `name` if, and only if, it is still held under `epoch` (the
    /// epoch its holder was given at claim time). Returns whether it did.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    fn release(&self, name: &str, epoch: u64) -> Result<bool, RegistryError>;

    /// The current holder of `name`.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    fn lookup(&self, name: &str) -> Result<Option<SessionRecord>, RegistryError>;

    /// Number of names held.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    fn count(&self) -> Result<usize, RegistryError>;
}

/// In-process registry: a mutex around a hash map. The lock is taken on join,
/// leave and direct messages only, never per heartbeat.
///
/// Epochs start at the wall clock in microseconds, not at 1, so that they
/// keep growing across restarts of the server (as long as the clock does
/// not step back and claims stay below a million a second): a client that
/// compares the epochs of its sessions never sees a newer one smaller.
#[derive(Debug)]
pub struct InMemoryRegistry {
    state: Mutex<InMemoryState>,
    /// Keys the skeleton hashes, at random per registry, so that no peer
    /// can choose two skeletons that share a hash.
    skeleton_hasher: RandomState,
}

#[derive(Debug, Default)]
struct InMemoryState {
    sessions: HashMap<Box<str>, Holder>,
    /// Keyed hash of a confusable skeleton → the one online name that has
    /// it. The hash stands for the skeleton to save its string: 107 → 64
    /// bytes per online name, measured at 100,000 names. Two different
    /// skeletons share a hash with a chance of one in 2^64 per pair
    /// (10^-11 for any pair among 19,000 names); the claim would then be
    /// refused as confusable with an unrelated name.
    skeletons: HashMap<u64, Box<str>>,
    last_epoch: u64,
}

/// The record minus its name, which is the map key. Only what claims,
/// releases and lookups need: with 19,000 sessions the map's buckets are a
/// fifth of the server's memory, so the peer address and connect time stay
/// with the session in the event loop, which already holds them.
#[derive(Debug, Clone)]
struct Holder {
    session_id: u64,
    epoch: u64,
    node: NodeId,
}

impl Holder {
    fn record(&self, name: &str) -> SessionRecord {
        SessionRecord {
            name: name.to_owned(),
            session_id: self.session_id,
            epoch: self.epoch,
            node: self.node,
        }
    }
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(0));
        Self {
            state: Mutex::new(InMemoryState {
                sessions: HashMap::new(),
                skeletons: HashMap::new(),
                last_epoch: now_us,
            }),
            skeleton_hasher: RandomState::new(),
        }
    }
}

impl InMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key of `name`'s confusable skeleton in `skeletons`.
    fn skeleton_key(&self, name: &str) -> u64 {
        self.skeleton_hasher.hash_one(confusable_skeleton(name))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, InMemoryState> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Registry for InMemoryRegistry {
    fn claim(&self, claim: Claim) -> Result<Claimed, RegistryError> {
        // Computed before the lock: the skeleton is the only costly part.
        let skeleton = self.skeleton_key(&claim.name);
        let mut state = self.state();
        match state.skeletons.get(&skeleton) {
            Some(online) if **online != *claim.name => {
                return Err(RegistryError::Confusable {
                    online: online.to_string(),
                });
            }
            Some(_) => {}
            None => {
                state.skeletons.insert(skeleton, claim.name.as_str().into());
            }
        }
        state.last_epoch += 1;
        let epoch = state.last_epoch;
        let holder = Holder {
            session_id: claim.session_id,
            epoch,
            node: claim.node,
        };
        let previous = state
            .sessions
            .insert(claim.name.as_str().into(), holder)
            .map(|old| old.record(&claim.name));
        Ok(Claimed { epoch, previous })
    }

    fn release(&self, name: &str, epoch: u64) -> Result<bool, RegistryError> {
        let skeleton = self.skeleton_key(name);
        let mut state = self.state();
        let held = state
            .sessions
            .get(name)
            .is_some_and(|holder| holder.epoch == epoch);
        if held {
            state.sessions.remove(name);
            // Fenced with the name: only the holder's release frees the
            // skeleton, and it maps to this very name.
            state.skeletons.remove(&skeleton);
        }
        Ok(held)
    }

    fn lookup(&self, name: &str) -> Result<Option<SessionRecord>, RegistryError> {
        Ok(self
            .state()
            .sessions
            .get(name)
            .map(|holder| holder.record(name)))
    }

    fn count(&self) -> Result<usize, RegistryError> {
        Ok(self.state().sessions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, session_id: u64) -> Claim {
        Claim {
            name: name.to_owned(),
            session_id,
            node: NodeId(1),
        }
    }

    #[test]
    fn a_second_claim_takes_over_with_a_larger_epoch() {
        let registry = InMemoryRegistry::new();
        let first = registry
            .claim(claim("alice", 1))
            .expect("in-memory never fails");
        assert_eq!(first.previous, None);
        let second = registry
            .claim(claim("alice", 2))
            .expect("in-memory never fails");
        assert!(second.epoch > first.epoch);
        assert_eq!(second.previous.map(|p| p.session_id), Some(1));
        assert_eq!(
            registry.lookup("alice").expect("ok").map(|r| r.session_id),
            Some(2)
        );
    }

    #[test]
    fn a_late_release_of_a_taken_over_session_leaves_the_new_holder() {
        let registry = InMemoryRegistry::new();
        let old = registry.claim(claim("alice", 1)).expect("ok");
        let new = registry.claim(claim("alice", 1)).expect("ok");
        // Even with the same session id (a reused slot), the old epoch is fenced off.
        assert_eq!(registry.release("alice", old.epoch), Ok(false));
        assert_eq!(registry.count(), Ok(1));
        assert_eq!(registry.release("alice", new.epoch), Ok(true));
        assert_eq!(registry.count(), Ok(0));
    }

    #[test]
    fn epochs_keep_growing_across_registries() {
        let first = InMemoryRegistry::new()
            .claim(claim("alice", 1))
            .expect("ok");
        // Not synchronisation: a restart takes far longer than the
        // microsecond the epochs would otherwise share.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let restarted = InMemoryRegistry::new()
            .claim(claim("alice", 1))
            .expect("ok");
        assert!(
            restarted.epoch > first.epoch,
            "a restarted server's epochs continue above the old ones"
        );
    }

    #[test]
    fn a_look_alike_of_an_online_name_is_refused_until_it_leaves() {
        let registry = InMemoryRegistry::new();
        let alice = registry.claim(claim("alice", 1)).expect("ok");
        for look_alike in ["Alice", "ALICE", "a1ice", "\u{430}lice"] {
            assert_eq!(
                registry.claim(claim(look_alike, 2)),
                Err(RegistryError::Confusable {
                    online: "alice".to_owned()
                }),
                "{look_alike}"
            );
        }
        assert_eq!(registry.count(), Ok(1), "a refused claim changes nothing");
        assert!(
            registry.claim(claim("bob", 3)).is_ok(),
            "other names are free"
        );
        // The very same name is a takeover, not a look-alike.
        let again = registry.claim(claim("alice", 4)).expect("takeover");
        assert_eq!(again.previous.map(|p| p.session_id), Some(1));
        // A late release of the taken-over session frees nothing.
        assert_eq!(registry.release("alice", alice.epoch), Ok(false));
        assert!(registry.claim(claim("Alice", 5)).is_err());
        assert_eq!(registry.release("alice", again.epoch), Ok(true));
        let capital = registry
            .claim(claim("Alice", 5))
            .expect("free once alice left");
        assert_eq!(
            registry.claim(claim("alice", 6)),
            Err(RegistryError::Confusable {
                online: "Alice".to_owned()
            })
        );
        assert_eq!(registry.release("Alice", capital.epoch), Ok(true));
        assert!(registry.claim(claim("alice", 6)).is_ok());
    }
}
