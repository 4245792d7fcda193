//! Remembers successful password verifications, so that a client that
//! reconnects (or ten thousand after a network blip) costs one HMAC instead
//! of one argon2 run each.
//!
//! Entries are keyed by an HMAC-SHA256, under a key drawn at random when
//! the cache is made, of the name, the stored hash and the presented
//! secret: the cache never holds a secret, a key cannot be computed
//! without the process's memory, and a changed secret (or a changed line
//! in the auth file) simply misses. Bounded: the oldest entry goes first.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A keyed hash of one (name, stored hash, secret) triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Verified credentials, oldest first out.
#[derive(Debug)]
pub struct VerifiedCache {
    key: [u8; 32],
    remembered: HashSet<Fingerprint>,
    /// Insertion order, for eviction.
    order: VecDeque<Fingerprint>,
    capacity: usize,
}

impl VerifiedCache {
    /// An empty cache of at most `capacity` entries (0 disables it), with a
    /// fresh random key.
    pub fn new(capacity: usize) -> Self {
        Self {
            key: super::random_bytes(),
            remembered: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The fingerprint of a secret presented for `name`, whose stored hash is `stored`.
    pub fn fingerprint(&self, name: &str, stored: &str, secret: &[u8]) -> Fingerprint {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [name.as_bytes(), stored.as_bytes(), secret] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Fingerprint(mac.finalize().into_bytes().into())
    }

    /// Whether this fingerprint was verified before (and is still remembered).
    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.remembered.contains(fingerprint)
    }

    /// Remembers a verified fingerprint, forgetting the oldest when full.
    pub fn remember(&mut self, fingerprint: Fingerprint) {
        if self.capacity == 0 || !self.remembered.insert(fingerprint) {
            return;
        }
        self.order.push_back(fingerprint);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.remembered.remove(&oldest);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_secret_hits_and_a_changed_one_misses() {
        let mut cache = VerifiedCache::new(10);
        let alice = cache.fingerprint("alice", "$argon2id$hash", b"secret");
        assert!(!cache.contains(&alice));
        cache.remember(alice);
        assert!(cache.contains(&cache.fingerprint("alice", "$argon2id$hash", b"secret")));
        assert!(!cache.contains(&cache.fingerprint("alice", "$argon2id$hash", b"secreT")));
        assert!(!cache.contains(&cache.fingerprint("alice", "$argon2id$other", b"secret")));
        assert!(!cache.contains(&cache.fingerprint("alicesecret", "$argon2id$hash", b"")));
    }

    #[test]
    fn fingerprints_depend_on_the_cache_key() {
        let (one, two) = (VerifiedCache::new(1), VerifiedCache::new(1));
        assert_ne!(
            one.fingerprint("a", "h", b"s"),
            two.fingerprint("a", "h", b"s")
        );
    }

    #[test]
    fn the_oldest_entry_is_forgotten_first() {
        let mut cache = VerifiedCache::new(2);
        let [a, b, c] = ["a", "b", "c"].map(|name| cache.fingerprint(name, "h", b"s"));
        cache.remember(a);
        cache.remember(b);
        cache.remember(b);
        assert_eq!(cache.len(), 2);
        cache.remember(c);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&a));
        assert!(cache.contains(&b) && cache.contains(&c));
        let mut disabled = VerifiedCache::new(0);
        disabled.remember(a);
        assert!(disabled.is_empty());
    }
}
