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
//! When full, it evicts entries in the map's own order, which for keys
//! hashed with a random seed is close to random: no bookkeeping per hit,
//! and under a uniform workload as good as any policy. Hot keys of a skewed
//! workload come back after an eviction on their next access.

use crate::crdt::Doc;
use std::collections::HashMap;

/// What an entry costs beyond its key and encoded state: the map's slot
/// (the decoded state is stored inline, about 240 bytes), the decoded
/// structure's own allocations, and the allocator's rounding. Measured, not
/// derived, as the growth of resident memory per cached entry after loading
/// 1M 100-byte values with and without a cache (see BENCHMARKS.md, session
/// 9). It was 3 KiB while states kept their maps in B-trees and their values
/// pinned the read buffers they arrived in (`crdt::owned`).
const ENTRY_OVERHEAD: usize = 1152;

/// A key's state as stored, decoded, with its anti-entropy entry hash.
pub(super) struct CachedDoc {
    pub(super) doc: Doc,
    pub(super) hash: u64,
    /// The encoded state's length.
    pub(super) len: usize,
}

pub(super) struct DocCache {
    docs: HashMap<Vec<u8>, CachedDoc>,
    bytes: usize,
    budget: usize,
}

impl DocCache {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            docs: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    fn cost(key: &[u8], len: usize) -> usize {
        key.len() + len + ENTRY_OVERHEAD
    }

    /// Take the key's entry out (the caller puts it back if it stays
    /// current).
    pub(super) fn take(&mut self, key: &[u8]) -> Option<CachedDoc> {
        let c = self.docs.remove(key)?;
        self.bytes -= Self::cost(key, c.len);
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
        let cost = Self::cost(&key, c.len);
        if cost > self.budget / 16 {
            return;
        }
        while self.bytes + cost > self.budget {
            let Some(victim) = self.docs.keys().next().cloned() else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes += cost;
        self.docs.insert(key, c);
    }

    pub(super) fn clear(&mut self) {
        self.docs.clear();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> CachedDoc {
        CachedDoc {
            doc: Doc::default(),
            hash: len as u64,
            len,
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
        let per_entry = 4 + 100 + ENTRY_OVERHEAD;
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
            (1 + 30 + ENTRY_OVERHEAD) + (1 + 20 + ENTRY_OVERHEAD)
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
}
