//! The per-partition hash tree of active anti-entropy: a fixed tree of
//! XOR-combined segment hashes (the shape of Riak's Tictac AAE).
//!
//! Every stored entry (storage key and state bytes) hashes to a 64-bit
//! value; a segment's hash is the XOR of its entries' hashes, a branch's the
//! XOR of its segments', the root the XOR of the branches'. XOR makes a
//! change an O(1) update (take the old entry's hash out, put the new one
//! in) in any order, so the tree follows every write without being rebuilt.
//!
//! Two replicas of a partition that hold the same entries have equal
//! trees; where they differ, the branch and segment hashes that differ
//! narrow the keys to compare down to a few segments.

use crate::store;

/// Segments per partition tree.
pub const SEGMENTS: usize = 1024;
/// Branches per tree; each covers `SEGMENTS / BRANCHES` segments.
pub const BRANCHES: usize = 32;
/// Segments under one branch.
pub const PER_BRANCH: usize = SEGMENTS / BRANCHES;

/// The segment a storage key falls in: from its key hash (bits the
/// partitioner does not use, mixed), so segments are filled evenly.
pub fn segment_of(skey: &[u8]) -> usize {
    let hash = store::split_data_key(skey)
        .map(|(_, h, _)| h)
        .unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(skey));
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % SEGMENTS
}

/// The hash of one stored entry: its storage key and its state's bytes.
/// Replicas that converged hold byte-identical states (the encoding is
/// canonical), so equal entries hash equal on every replica.
pub fn entry_hash(skey: &[u8], value: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(skey.len() as u32).to_be_bytes());
    h.update(skey);
    h.update(value);
    // Never zero: an entry always changes its segment's hash.
    h.digest().max(1)
}

/// One partition's tree.
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    segments: Vec<u64>,
    /// Entries counted in (for status; not part of the comparison).
    entries: u64,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tree(root {:016x}, {} entries)",
            self.root(),
            self.entries
        )
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Self {
        Self {
            segments: vec![0; SEGMENTS],
            entries: 0,
        }
    }

    /// Account for an entry changing from `old` to `new` (None: absent).
    pub fn update(&mut self, skey: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let s = &mut self.segments[segment_of(skey)];
        if let Some(o) = old {
            *s ^= o;
            self.entries = self.entries.saturating_sub(1);
        }
        if let Some(n) = new {
            *s ^= n;
            self.entries += 1;
        }
    }

    /// Add an entry (while building from the store).
    pub fn insert(&mut self, skey: &[u8], value: &[u8]) {
        self.update(skey, None, Some(entry_hash(skey, value)));
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Every branch's hash.
    pub fn branches(&self) -> Vec<u64> {
        self.segments
            .chunks(PER_BRANCH)
            .map(|c| c.iter().fold(0, |a, s| a ^ s))
            .collect()
    }

    /// The root hash (equal roots: equal entries, with overwhelming odds).
    pub fn root(&self) -> u64 {
        self.segments.iter().fold(0, |a, s| a ^ s)
    }

    /// The segment hashes under `branches`, branch by branch (an index out
    /// of range gives nothing).
    pub fn segments_of(&self, branches: &[u16]) -> Vec<u64> {
        let mut out = Vec::with_capacity(branches.len() * PER_BRANCH);
        for b in branches {
            let b = usize::from(*b);
            if b < BRANCHES {
                out.extend_from_slice(&self.segments[b * PER_BRANCH..(b + 1) * PER_BRANCH]);
            }
        }
        out
    }
}

/// Indices where two equally long hash lists differ.
pub fn differing(a: &[u64], b: &[u64]) -> Vec<usize> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::PartitionId;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn skey(k: u32) -> Vec<u8> {
        let key = k.to_be_bytes();
        let hash = colony_core::key_hash(b"b", &key);
        store::data_key(PartitionId(3), b"b", hash, &key)
    }

    proptest! {
        /// Updating in place, in any order, gives the tree built from the
        /// final entries alone.
        #[test]
        fn incremental_updates_equal_a_rebuild(ops in prop::collection::vec((0u32..60, prop::option::of(0u8..4)), 0..200)) {
            let mut live = Tree::new();
            let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (k, v) in ops {
                let key = skey(k);
                let new = v.map(|v| vec![v; 3]);
                let old = state.get(&key).map(|o| entry_hash(&key, o));
                live.update(&key, old, new.as_ref().map(|n| entry_hash(&key, n)));
                match new {
                    Some(n) => { state.insert(key, n); }
                    None => { state.remove(&key); }
                }
            }
            let mut built = Tree::new();
            for (k, v) in &state {
                built.insert(k, v);
            }
            prop_assert_eq!(live.root(), built.root());
            prop_assert_eq!(live.branches(), built.branches());
            prop_assert_eq!(live.entries(), state.len() as u64);
        }
    }

    #[test]
    fn one_changed_entry_shows_in_exactly_one_branch_and_segment() {
        let mut a = Tree::new();
        for k in 0..500 {
            a.insert(&skey(k), b"v");
        }
        let mut b = a.clone();
        let key = skey(77);
        b.update(
            &key,
            Some(entry_hash(&key, b"v")),
            Some(entry_hash(&key, b"w")),
        );
        assert_ne!(a.root(), b.root());
        let branches = differing(&a.branches(), &b.branches());
        assert_eq!(branches, vec![segment_of(&key) / PER_BRANCH]);
        let which = [branches[0] as u16];
        let segs = differing(&a.segments_of(&which), &b.segments_of(&which));
        assert_eq!(segs, vec![segment_of(&key) % PER_BRANCH]);
    }

    #[test]
    fn keys_spread_over_the_segments() {
        let mut seen = vec![0u32; SEGMENTS];
        for k in 0..(SEGMENTS as u32 * 8) {
            seen[segment_of(&skey(k))] += 1;
        }
        let empty = seen.iter().filter(|n| **n == 0).count();
        assert!(
            empty < SEGMENTS / 50,
            "{empty} segments of {SEGMENTS} empty"
        );
    }
}
