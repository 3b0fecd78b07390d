//! A hash map for the folds that hold one entry per stock item or reservation id (millions of
//! entries, held for the life of the process): its entries sit in a dense vector, and its
//! hash table holds only their 4-byte indices.
//!
//! A `HashMap` keeps the entries themselves in its table, which is between 44 % and 87 % full
//! (at a million entries, just past a doubling: half empty), so each entry costs up to twice
//! its size. `indexmap::IndexMap` keeps them dense, but stores each entry's 8-byte hash beside
//! it and 8-byte indices in its table (about 2 slots per entry just past a doubling). Here an
//! entry costs its own size plus about 9 bytes of table: the hash is computed again when the
//! table grows (the keys are short; `foldhash` hashes one in a few nanoseconds), and indices
//! are `u32`, so a map holds at most `u32::MAX` entries.
//!
//! Entries keep their index until they are removed: [`DenseMap::pop`] removes the last one,
//! and [`DenseMap::swap_remove`] moves the last one into the gap.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// The maps' hasher: much faster than SipHash on short string keys, seeded per process.
pub type FastHash = foldhash::fast::RandomState;

pub struct DenseMap<K, V> {
    entries: Vec<(K, V)>,
    table: HashTable<u32>,
    hasher: FastHash,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> DenseMap<K, V> {
        DenseMap {
            entries: Vec::new(),
            table: HashTable::new(),
            hasher: FastHash::default(),
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_map()
            .entries(self.entries.iter().map(|(key, value)| (key, value)))
            .finish()
    }
}

fn index(position: u32) -> usize {
    position as usize
}

impl<K: Hash + Eq, V> DenseMap<K, V> {
    pub fn new() -> DenseMap<K, V> {
        DenseMap::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of `key`'s entry.
    pub fn get_index_of(&self, key: &K) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&at| self.entries[index(at)].0 == *key)
            .map(|&at| index(at))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.get_index_of(key).map(|at| &self.entries[at].1)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get_index_of(key).is_some()
    }

    /// The entry at `index`, in the order of insertion (changed only by removals).
    pub fn get_index(&self, index: usize) -> Option<(&K, &V)> {
        self.entries.get(index).map(|(key, value)| (key, value))
    }

    pub fn get_index_mut(&mut self, index: usize) -> Option<(&K, &mut V)> {
        self.entries
            .get_mut(index)
            .map(|(key, value)| (&*key, value))
    }

    /// Inserts or replaces `key`'s value; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.get_index_of(&key) {
            Some(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            None => {
                self.push(key, value);
                None
            }
        }
    }

    /// Adds an entry for a key the map does not hold; returns its index.
    fn push(&mut self, key: K, value: V) -> usize {
        let at = self.entries.len();
        let position = u32::try_from(at).expect("a DenseMap holds at most u32::MAX entries");
        let hash = self.hasher.hash_one(&key);
        let entries = &self.entries;
        let hasher = &self.hasher;
        self.table.insert_unique(hash, position, |&other| {
            hasher.hash_one(&entries[index(other)].0)
        });
        self.entries.push((key, value));
        at
    }

    /// The index of `key`'s entry, made with `make()` if it is missing.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> usize {
        match self.get_index_of(&key) {
            Some(at) => at,
            None => self.push(key, make()),
        }
    }

    /// Removes the last entry.
    pub fn pop(&mut self) -> Option<(K, V)> {
        let (key, value) = self.entries.pop()?;
        let last = self.entries.len() as u32;
        let hash = self.hasher.hash_one(&key);
        match self.table.find_entry(hash, |&at| at == last) {
            Ok(slot) => {
                slot.remove();
            }
            Err(_) => unreachable!("every entry has a slot in the table"),
        }
        Some((key, value))
    }

    /// Removes `key`'s entry, moving the last entry into its place.
    pub fn swap_remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let (position, _) = self
            .table
            .find_entry(hash, |&at| entries[index(at)].0 == *key)
            .ok()?
            .remove();
        let at = index(position);
        let last = self.entries.len() - 1;
        if at != last {
            // The last entry moves to `at`: its slot (the only one holding `last`) follows.
            let hash = self.hasher.hash_one(&self.entries[last].0);
            let slot = self
                .table
                .find_mut(hash, |&other| index(other) == last)
                .expect("every entry has a slot in the table");
            *slot = position;
        }
        Some(self.entries.swap_remove(at).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(key, value)| (key, value))
    }
}

impl<K, V> std::ops::Index<usize> for DenseMap<K, V> {
    type Output = V;

    fn index(&self, index: usize) -> &V {
        &self.entries[index].1
    }
}

impl<K, V> std::ops::IndexMut<usize> for DenseMap<K, V> {
    fn index_mut(&mut self, index: usize) -> &mut V {
        &mut self.entries[index].1
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::DenseMap;

    #[test]
    fn it_agrees_with_a_hash_map_through_inserts_and_removals() {
        let mut map: DenseMap<String, u64> = DenseMap::new();
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50_000u64 {
            let key = format!("key-{}", next() % 2_000);
            match next() % 10 {
                0..=5 => assert_eq!(map.insert(key.clone(), round), model.insert(key, round)),
                6..=7 => assert_eq!(map.swap_remove(&key), model.remove(&key)),
                8 => {
                    if let Some((key, value)) = map.pop() {
                        assert_eq!(model.remove(&key), Some(value));
                    }
                }
                _ => assert_eq!(map.get(&key), model.get(&key)),
            }
            assert_eq!(map.len(), model.len());
        }
        for (key, value) in &model {
            let at = map.get_index_of(key).expect("every key is found");
            assert_eq!(map.get_index(at), Some((key, value)));
        }
        assert_eq!(map.iter().count(), model.len());
    }

    #[test]
    fn indices_stay_put_as_the_map_grows() {
        let mut map: DenseMap<u64, u64> = DenseMap::new();
        for key in 0..100_000u64 {
            assert_eq!(map.get_or_insert_with(key, || key * 2), key as usize);
        }
        for key in 0..100_000u64 {
            assert_eq!(map.get_index_of(&key), Some(key as usize));
            assert_eq!(map[key as usize], key * 2);
        }
        assert_eq!(map.get_or_insert_with(7, || 0), 7);
        assert_eq!(map[7], 14);
    }
}
