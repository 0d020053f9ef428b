//! The vnode's cache of decoded key states, bounded in bytes.
//!
//! A write must read the key's state before it can merge into it, so
//! without a cache every SET costs a store lookup (memtable, then tables)
//! and a decode: a quarter of a node's CPU under redis-benchmark. The cache
//! keeps the decoded state of recently read or written keys, up to a byte
//! budget per vnode. Sizes are estimates (the encoded length plus a fixed
//! overhead for the decoded structure and the map entry), good enough to
//! bound memory, not to account for it exactly.
//!
//! When full, it evicts the least recently used entry. A write takes an
//! entry out and puts it back, so a queue of keys in the order they were
//! put back is the recency order; a queue entry whose generation no longer
//! matches the map's is stale (the key was put back since, or removed) and
//! is skipped. A read only peeks, which marks the entry: a marked entry at
//! the front of the queue is unmarked and sent to the back instead of
//! evicted (a second chance, as in CLOCK), so a key that is only read stays
//! while it is read, without the map and queue churn of a put-back on
//! every read. Stale entries are swept out when they outnumber
//! live ones, so eviction and upkeep are O(1) amortized. (The first version
//! evicted the map's first key: each eviction then scanned further through
//! the emptied front of the table, 7% of a random-read load's CPU.)

use crate::crdt::Doc;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// What an entry costs beyond its key and encoded state: the map's slot
/// (the decoded state is stored inline, about 240 bytes), the decoded
/// structure's own allocations, and the allocator's rounding. Measured, not
/// derived, as the growth of resident memory per cached entry after loading
/// 1M 100-byte values with and without a cache (see BENCHMARKS.md, session
/// 9). It was 3 KiB while states kept their maps in B-trees and their values
/// pinned the read buffers they arrived in (`crdt::owned`).
const ENTRY_OVERHEAD: usize = 1152;

/// What an entry's place in the recency queue costs: its copy of the key
/// (plus the key's length, counted in [`DocCache::cost`]), the vector's
/// header and the generation.
const QUEUE_OVERHEAD: usize = 48;

/// What holding an entry's encoded state costs beyond its bytes: the
/// shared buffer's header and the allocator's rounding.
const ENCODED_OVERHEAD: usize = 64;

/// Hashes storage keys with xxh3 under a random seed: a cache access
/// hashes a key several times, and std's SipHash cost 6% of a random-read
/// load's CPU. (The vnode's batch of pending writes uses it too.) (Seeded per cache, so clients cannot aim keys at one slot
/// across nodes or restarts.)
#[derive(Clone)]
pub(super) struct KeyHasher(u64);

impl KeyHasher {
    /// A hasher with a fresh random seed.
    pub(super) fn random() -> Self {
        use rand::Rng;
        Self(rand::rng().random())
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;
    fn build_hasher(&self) -> KeyHash {
        KeyHash(self.0)
    }
}

pub(super) struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(5) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A key's state as stored, decoded, with its anti-entropy entry hash.
pub(super) struct CachedDoc {
    pub(super) doc: Doc,
    pub(super) hash: u64,
    /// The encoded state's length.
    pub(super) len: usize,
    /// The encoded state itself, when the code that kept the entry had it
    /// at hand (a replicated write, a replica's fetch): a coordinator's
    /// fetch of a hot key then costs neither a store lookup nor an encode.
    /// Charged to the budget when held.
    pub(super) encoded: Option<bytes::Bytes>,
}

pub(super) struct DocCache {
    /// Each entry with the generation it was last put back in, and whether
    /// it was read since.
    docs: HashMap<Vec<u8>, (CachedDoc, u64, bool), KeyHasher>,
    /// Keys in the order they were put back, oldest first, with the
    /// generation they were put back in.
    recency: VecDeque<(Vec<u8>, u64)>,
    generation: u64,
    bytes: usize,
    budget: usize,
}

impl DocCache {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            docs: HashMap::with_hasher(KeyHasher::random()),
            recency: VecDeque::new(),
            generation: 0,
            bytes: 0,
            budget,
        }
    }

    fn cost(key: &[u8], c: &CachedDoc) -> usize {
        let held = c.encoded.as_ref().map_or(0, |e| e.len() + ENCODED_OVERHEAD);
        2 * key.len() + c.len + held + ENTRY_OVERHEAD + QUEUE_OVERHEAD
    }

    /// Take the key's entry out (the caller puts it back if it stays
    /// current).
    pub(super) fn take(&mut self, key: &[u8]) -> Option<CachedDoc> {
        let (c, _, _) = self.docs.remove(key)?;
        self.bytes -= Self::cost(key, &c);
        Some(c)
    }

    /// The key's entry, left in place and marked as read.
    pub(super) fn peek(&mut self, key: &[u8]) -> Option<&CachedDoc> {
        let (c, _, read) = self.docs.get_mut(key)?;
        *read = true;
        Some(c)
    }

    /// Forget the key.
    pub(super) fn remove(&mut self, key: &[u8]) {
        self.take(key);
    }

    /// Keep `c` as the key's state, evicting others to make room. A state
    /// that alone would take more than a sixteenth of the budget is not
    /// kept.
    pub(super) fn keep(&mut self, key: Vec<u8>, c: CachedDoc) {
        self.remove(&key);
        let cost = Self::cost(&key, &c);
        if cost > self.budget / 16 {
            return;
        }
        while self.bytes + cost > self.budget {
            let Some((victim, generation)) = self.recency.pop_front() else {
                break;
            };
            match self.docs.get_mut(&victim) {
                Some((_, g, read)) if *g == generation && *read => {
                    // Read since it was put back: a second chance.
                    *read = false;
                    self.generation += 1;
                    *g = self.generation;
                    self.recency.push_back((victim, self.generation));
                }
                Some((_, g, _)) if *g == generation => {
                    if let Entry::Occupied(e) = self.docs.entry(victim) {
                        let (k, (c, _, _)) = e.remove_entry();
                        self.bytes -= Self::cost(&k, &c);
                    }
                }
                // Stale: put back since, or gone.
                _ => {}
            }
        }
        self.generation += 1;
        self.bytes += cost;
        self.recency.push_back((key.clone(), self.generation));
        self.docs.insert(key, (c, self.generation, false));
        if self.recency.len() > 2 * self.docs.len() + 64 {
            let docs = &self.docs;
            self.recency
                .retain(|(k, g)| docs.get(k).is_some_and(|(_, live, _)| live == g));
        }
    }

    pub(super) fn clear(&mut self) {
        self.docs.clear();
        self.recency.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.docs.len()
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.recency.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> CachedDoc {
        CachedDoc {
            doc: Doc::default(),
            hash: len as u64,
            len,
            encoded: None,
        }
    }

    #[test]
    fn stays_within_its_budget_and_keeps_the_newest_entry() {
        let mut c = DocCache::new(1 << 20);
        for i in 0..1000u32 {
            let key = i.to_be_bytes().to_vec();
            c.keep(key.clone(), entry(100));
            assert!(c.bytes() <= 1 << 20, "over budget after {i} entries");
            assert_eq!(
                c.take(&key).map(|e| e.hash),
                Some(100),
                "the entry just kept"
            );
            c.keep(key, entry(100));
        }
        let per_entry = DocCache::cost(&[0; 4], &entry(100));
        assert_eq!(c.len(), (1 << 20) / per_entry, "evicts only what it must");
        assert_eq!(c.bytes(), c.len() * per_entry);
    }

    #[test]
    fn taking_and_removing_give_the_bytes_back() {
        let mut c = DocCache::new(1 << 20);
        c.keep(b"a".to_vec(), entry(10));
        c.keep(b"b".to_vec(), entry(20));
        c.keep(b"a".to_vec(), entry(30));
        assert_eq!(
            c.bytes(),
            DocCache::cost(b"a", &entry(30)) + DocCache::cost(b"b", &entry(20))
        );
        assert_eq!(c.take(b"a").map(|e| e.len), Some(30));
        c.remove(b"b");
        c.remove(b"missing");
        assert_eq!((c.len(), c.bytes()), (0, 0));
        c.keep(b"c".to_vec(), entry(1));
        c.clear();
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn a_state_too_large_for_the_cache_is_not_kept() {
        let mut c = DocCache::new(64 * 1024);
        c.keep(b"big".to_vec(), entry(4096));
        assert!(c.take(b"big").is_none());
        assert_eq!(c.bytes(), 0);
        c.keep(b"small".to_vec(), entry(64));
        assert!(c.take(b"small").is_some());
    }

    #[test]
    fn evicts_the_least_recently_used_entry() {
        let per_entry = DocCache::cost(&[0; 4], &entry(10));
        let mut c = DocCache::new(per_entry * 100);
        for i in 0..100u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        // Use the first ten again (take and put back, as the vnode does).
        for i in 0..10u32 {
            let key = i.to_be_bytes().to_vec();
            let e = c.take(&key).unwrap();
            c.keep(key, e);
        }
        // Ten new keys evict the ten used longest ago: 10..20.
        for i in 100..110u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        assert_eq!(c.len(), 100);
        for i in 0..10u32 {
            assert!(c.take(&i.to_be_bytes()).is_some(), "recently used {i} kept");
        }
        for i in 10..20u32 {
            assert!(c.take(&i.to_be_bytes()).is_none(), "{i} evicted");
        }
        for i in 20..110u32 {
            assert!(c.take(&i.to_be_bytes()).is_some(), "{i} kept");
        }
    }

    #[test]
    fn an_entry_read_since_it_was_kept_gets_a_second_chance() {
        let per_entry = DocCache::cost(&[0; 4], &entry(10));
        let mut c = DocCache::new(per_entry * 100);
        for i in 0..100u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        // Read the first ten (peek, as the vnode does for reads).
        for i in 0..10u32 {
            assert!(c.peek(&i.to_be_bytes()).is_some());
        }
        // Ten new keys evict the ten oldest not read: 10..20.
        for i in 100..110u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.bytes(), 100 * per_entry);
        for i in 10..20u32 {
            assert!(c.peek(&i.to_be_bytes()).is_none(), "{i} evicted");
        }
        // The second chance is spent: unread since, 0..10 go next.
        for i in 20..110u32 {
            assert!(c.take(&i.to_be_bytes()).is_some(), "{i} kept");
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        for i in 110..120u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        for i in 0..10u32 {
            assert!(c.peek(&i.to_be_bytes()).is_none(), "{i} evicted at last");
        }
    }

    #[test]
    fn stale_queue_entries_are_swept() {
        let mut c = DocCache::new(1 << 20);
        for round in 0..1000u32 {
            let key = (round % 10).to_be_bytes().to_vec();
            let e = c.take(&key).unwrap_or_else(|| entry(10));
            c.keep(key, e);
        }
        assert_eq!(c.len(), 10);
        assert!(c.queued() <= 2 * 10 + 64 + 1, "queue holds {}", c.queued());
    }
}
