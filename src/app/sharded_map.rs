//! A concurrent map for the read model: a fixed number of shards, each a [`DenseMap`] behind
//! a reader-writer lock.
//!
//! `DashMap` is the same idea with `hashbrown` tables, whose slots hold the entries themselves
//! and are 44 % to 87 % used, so an entry costs up to about twice its size. A dense map holds
//! its entries in a vector under a table of `u32` indices: about the entry's size plus 9
//! bytes.
//! Entries are never removed (the read model only grows), so a guard can name its entry by
//! index.

use std::hash::{BuildHasher, Hash};
use std::ops::{Deref, DerefMut};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::dense_map::{DenseMap, FastHash};

/// How many shards a map has: writers to different shards never wait for each other, nor
/// readers for a writer of another shard.
pub const SHARDS: usize = 16;

const _: () = assert!(SHARDS.is_power_of_two());

pub struct ShardedMap<K, V> {
    shards: Box<[RwLock<DenseMap<K, V>>]>,
    /// Picks the shard; seeded apart from the shards' own hashers, so the keys of one shard
    /// still spread over its table.
    shard_hasher: FastHash,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> ShardedMap<K, V> {
        ShardedMap {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(DenseMap::default()))
                .collect(),
            shard_hasher: FastHash::default(),
        }
    }
}

/// Shared access to one entry; holds its shard's read lock.
pub struct Ref<'a, K, V> {
    shard: RwLockReadGuard<'a, DenseMap<K, V>>,
    index: usize,
}

/// Exclusive access to one entry; holds its shard's write lock.
pub struct RefMut<'a, K, V> {
    shard: RwLockWriteGuard<'a, DenseMap<K, V>>,
    index: usize,
}

impl<K, V> Deref for Ref<'_, K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.shard[self.index]
    }
}

impl<K, V> Deref for RefMut<'_, K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.shard[self.index]
    }
}

impl<K, V> DerefMut for RefMut<'_, K, V> {
    fn deref_mut(&mut self) -> &mut V {
        &mut self.shard[self.index]
    }
}

impl<K: Hash + Eq + Clone, V: Default> ShardedMap<K, V> {
    fn shard(&self, key: &K) -> &RwLock<DenseMap<K, V>> {
        let hash = self.shard_hasher.hash_one(key);
        &self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    /// The entry of `key`, made with `V::default()` if it is missing (the key is cloned only
    /// then).
    pub fn get_or_default(&self, key: &K) -> RefMut<'_, K, V> {
        let mut shard = self.shard(key).write().expect("map shard poisoned");
        let index = match shard.get_index_of(key) {
            Some(index) => index,
            None => shard.get_or_insert_with(key.clone(), V::default),
        };
        RefMut { shard, index }
    }

    /// The entry of `key`, to change, if there is one.
    pub fn get_mut(&self, key: &K) -> Option<RefMut<'_, K, V>> {
        let shard = self.shard(key).write().expect("map shard poisoned");
        let index = shard.get_index_of(key)?;
        Some(RefMut { shard, index })
    }

    pub fn get(&self, key: &K) -> Option<Ref<'_, K, V>> {
        let shard = self.shard(key).read().expect("map shard poisoned");
        let index = shard.get_index_of(key)?;
        Some(Ref { shard, index })
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().expect("map shard poisoned").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, copied out shard by shard and sorted by key: a snapshot's canonical order.
    /// Each shard is read whole under its lock; the caller keeps writers away for a state of
    /// one instant.
    pub fn sorted_entries(&self) -> Vec<(K, V)>
    where
        K: Ord,
        V: Clone,
    {
        let mut entries = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.read().expect("map shard poisoned");
            entries.extend(
                shard
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone())),
            );
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn it_finds_what_was_inserted_and_makes_missing_entries_once() {
        let map: ShardedMap<String, u64> = ShardedMap::default();
        assert!(map.is_empty());
        assert!(map.get(&"a".to_owned()).is_none());
        for n in 0..10_000u64 {
            *map.get_or_default(&format!("k{}", n % 1000)) += n;
        }
        assert_eq!(map.len(), 1000);
        for k in 0..1000u64 {
            let expected: u64 = (0..10).map(|round| round * 1000 + k).sum();
            assert_eq!(*map.get(&format!("k{k}")).unwrap(), expected);
        }
        // Keys spread over every shard.
        assert!(
            map.shards
                .iter()
                .all(|shard| !shard.read().unwrap().is_empty())
        );
    }

    #[test]
    fn concurrent_writers_and_readers_see_whole_updates() {
        let map: Arc<ShardedMap<u64, (u64, u64)>> = Arc::new(ShardedMap::default());
        let writers: Vec<_> = (0..4u64)
            .map(|writer| {
                let map = map.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        let mut entry = map.get_or_default(&(n % 500 + writer * 500));
                        entry.0 += 1;
                        entry.1 += 1;
                    }
                })
            })
            .collect();
        let reader = {
            let map = map.clone();
            std::thread::spawn(move || {
                for n in 0..20_000u64 {
                    if let Some(entry) = map.get(&(n % 2000)) {
                        assert_eq!(entry.0, entry.1, "an update is seen whole");
                    }
                }
            })
        };
        for writer in writers {
            writer.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(map.len(), 2000);
        for key in 0..2000u64 {
            assert_eq!(*map.get(&key).unwrap(), (40, 40));
        }
    }
}
