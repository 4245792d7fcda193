//! The loop's own sessions by name, so that a direct message to a session
//! of the same loop finds it without the registry's lock.
//!
//! A table of (slab index, 32-bit name hash) pairs, 8 bytes each, compared
//! against the name each slot's session already holds: no second copy of
//! the name (a `HashMap<Box<str>, _>` would cost a second allocation of
//! every name and 40-odd bytes more). The hash is kept so that the table
//! can grow while a session it lists is closing and has no name to hash.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Names of established sessions → their slab index.
#[derive(Debug, Default)]
pub(super) struct LocalNames {
    table: HashTable<(u32, u32)>,
    hasher: DefaultHashBuilder,
}

/// A 32-bit hash spread over both ends of the 64 bits the table uses
/// (its bucket from the low bits, its tag from the high ones).
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

impl LocalNames {
    fn hash(&self, name: &str) -> u32 {
        self.hasher.hash_one(name) as u32
    }

    /// The slab index of the session named `name`; `name_of` gives the
    /// name of the session at an index, if it has one.
    pub(super) fn find<'a>(
        &self,
        name: &str,
        name_of: impl Fn(usize) -> Option<&'a str>,
    ) -> Option<usize> {
        let hash = self.hash(name);
        self.table
            .find(spread(hash), |&(index, held)| {
                held == hash && name_of(index as usize) == Some(name)
            })
            .map(|&(index, _)| index as usize)
    }

    /// Records that the session at `index` holds `name`.
    pub(super) fn insert(&mut self, name: &str, index: usize) {
        let hash = self.hash(name);
        self.table
            .insert_unique(spread(hash), (index as u32, hash), |&(_, held)| {
                spread(held)
            });
    }

    /// Forgets that the session at `index` holds `name`.
    pub(super) fn remove(&mut self, name: &str, index: usize) {
        let hash = self.hash(name);
        if let Ok(entry) = self.table.find_entry(spread(hash), |&(held_index, held)| {
            held == hash && held_index as usize == index
        }) {
            entry.remove();
        }
    }

    /// Sessions listed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_inserted_and_removed_by_index() {
        let held = ["alice", "bob", "carol"];
        let name_of = |index: usize| held.get(index).copied();
        let mut names = LocalNames::default();
        for (index, name) in held.iter().enumerate() {
            names.insert(name, index);
        }
        assert_eq!(names.find("bob", name_of), Some(1));
        assert_eq!(names.find("dave", name_of), None);
        // A takeover: the old holder's entry goes by its index only.
        names.insert("bob", 7);
        names.remove("bob", 1);
        let moved = |index: usize| {
            if index == 7 {
                Some("bob")
            } else {
                name_of(index)
            }
        };
        assert_eq!(names.find("bob", moved), Some(7));
        assert_eq!(names.len(), 3);
    }
}
