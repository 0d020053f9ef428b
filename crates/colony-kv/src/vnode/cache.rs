//! The vnode's cache of key states, bounded in bytes: decoded, and behind
//! them, states kept as their stored bytes (see [`DocCache`]).
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
    /// at hand (a write, a replica's fetch): a coordinator's fetch of a hot
    /// key then costs neither a store lookup nor an encode, and the entry
    /// can move to the encoded tier when it is evicted. Charged to the
    /// budget when held.
    pub(super) encoded: Option<bytes::Bytes>,
}

/// A key's state as stored, not decoded: an entry of the encoded tier.
pub(super) struct RawDoc {
    pub(super) bytes: bytes::Bytes,
    pub(super) hash: u64,
}

/// What an entry of the encoded tier costs beyond its key and bytes: the
/// map slot (key vector, shared buffer, hash, generation: about 80 bytes)
/// at hashbrown's load factor, and the allocator's rounding of the key's
/// copy. Estimated from the layout, not measured as [`ENTRY_OVERHEAD`] was;
/// it only needs to keep the tier within its budget.
const RAW_ENTRY_OVERHEAD: usize = 160;

/// What an entry costs against its tier's budget.
pub(super) trait Weighed {
    fn cost(&self, key: &[u8]) -> usize;
}

impl Weighed for CachedDoc {
    fn cost(&self, key: &[u8]) -> usize {
        let held = self
            .encoded
            .as_ref()
            .map_or(0, |e| e.len() + ENCODED_OVERHEAD);
        2 * key.len() + self.len + held + ENTRY_OVERHEAD + QUEUE_OVERHEAD
    }
}

impl Weighed for RawDoc {
    fn cost(&self, key: &[u8]) -> usize {
        2 * key.len() + self.bytes.len() + ENCODED_OVERHEAD + RAW_ENTRY_OVERHEAD + QUEUE_OVERHEAD
    }
}

/// One tier: entries by key within a byte budget, least recently used
/// evicted first, with a second chance for entries read since they were
/// put back.
pub(super) struct Tier<V> {
    /// Each entry with the generation it was last put back in, and whether
    /// it was read since.
    map: HashMap<Vec<u8>, (V, u64, bool), KeyHasher>,
    /// Keys in the order they were put back, oldest first, with the
    /// generation they were put back in.
    recency: VecDeque<(Vec<u8>, u64)>,
    generation: u64,
    bytes: usize,
    budget: usize,
}

impl<V: Weighed> Tier<V> {
    pub(super) fn new(budget: usize, hasher: KeyHasher) -> Self {
        Self {
            map: HashMap::with_hasher(hasher),
            recency: VecDeque::new(),
            generation: 0,
            bytes: 0,
            budget,
        }
    }

    /// Take the key's entry out (the caller puts it back if it stays
    /// current).
    pub(super) fn take(&mut self, key: &[u8]) -> Option<V> {
        let (v, _, _) = self.map.remove(key)?;
        self.bytes -= v.cost(key);
        Some(v)
    }

    /// The key's entry, left in place and marked as read.
    pub(super) fn peek(&mut self, key: &[u8]) -> Option<&V> {
        let (v, _, read) = self.map.get_mut(key)?;
        *read = true;
        Some(v)
    }

    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Keep `v` as the key's entry, evicting others to make room; each
    /// evicted entry goes to `evicted`. An entry that alone would take
    /// more than a sixteenth of the budget is not kept (nor passed on).
    #[cfg(test)]
    pub(super) fn keep(&mut self, key: Vec<u8>, v: V, evicted: impl FnMut(Vec<u8>, V)) {
        self.keep_within(key, v, self.budget, evicted);
    }

    /// [`keep`](Self::keep), with at most `limit` bytes left in the tier.
    pub(super) fn keep_within(
        &mut self,
        key: Vec<u8>,
        v: V,
        limit: usize,
        evicted: impl FnMut(Vec<u8>, V),
    ) {
        self.take(&key);
        let cost = v.cost(&key);
        if cost > self.budget / 16 || cost > limit {
            return;
        }
        self.shrink_to(limit - cost, evicted);
        self.generation += 1;
        self.bytes += cost;
        self.recency.push_back((key.clone(), self.generation));
        self.map.insert(key, (v, self.generation, false));
        if self.recency.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.recency
                .retain(|(k, g)| map.get(k).is_some_and(|(_, live, _)| live == g));
        }
    }

    /// Evict entries, least recently used first (an entry read since it
    /// was put back gets a second chance), until at most `limit` bytes are
    /// held; each goes to `evicted`.
    pub(super) fn shrink_to(&mut self, limit: usize, mut evicted: impl FnMut(Vec<u8>, V)) {
        while self.bytes > limit {
            let Some((victim, generation)) = self.recency.pop_front() else {
                break;
            };
            match self.map.get_mut(&victim) {
                Some((_, g, read)) if *g == generation && *read => {
                    // Read since it was put back: a second chance.
                    *read = false;
                    self.generation += 1;
                    *g = self.generation;
                    self.recency.push_back((victim, self.generation));
                }
                Some((_, g, _)) if *g == generation => {
                    if let Entry::Occupied(e) = self.map.entry(victim) {
                        let (k, (v, _, _)) = e.remove_entry();
                        self.bytes -= v.cost(&k);
                        evicted(k, v);
                    }
                }
                // Stale: put back since, or gone.
                _ => {}
            }
        }
    }

    pub(super) fn held(&self) -> usize {
        self.bytes
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.recency.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.recency.len()
    }
}

/// The vnode's cache: recently used states decoded, and beside them, in
/// far less memory each, states kept as their stored bytes: those a
/// replica's fetch read from the store, and those evicted from the decoded
/// tier that had their bytes at hand (states written through the
/// replicated path). A key is in at most one tier. A hit in the encoded
/// tier costs a decode (or nothing, for a fetch, which answers with the
/// bytes) instead of a store lookup and a decode.
///
/// The tiers share one byte budget. Each may use all of it that the other
/// does not hold; under contention the decoded tier keeps a quarter (the
/// hottest keys, updated in place) and the encoded tier may grow to the
/// rest, pushing the other's least recently used entries out. (On a single
/// node, where nothing is fetched and written states are settled without
/// their bytes, the decoded tier is the whole cache, as before the encoded
/// tier existed.) Measured on a 3-node cluster with 100k keys, workload C
/// at pipeline 16: +18% with this split, nothing with half and half (the
/// encoded tier's hit rate is what pays). A decoded
/// state costs several times its bytes (the map slot and the structure's
/// allocations), so that half holds most of the keys: about three times as
/// many per byte as decoded, for 100-byte strings.
/// Under contention the decoded tier keeps `1 / DECODED_FLOOR` of the
/// budget.
const DECODED_FLOOR: usize = 4;

pub(super) struct DocCache {
    decoded: Tier<CachedDoc>,
    raw: Tier<RawDoc>,
    budget: usize,
}

impl DocCache {
    pub(super) fn new(budget: usize) -> Self {
        let hasher = KeyHasher::random();
        Self {
            decoded: Tier::new(budget, hasher.clone()),
            raw: Tier::new(budget, hasher),
            budget,
        }
    }

    /// What the decoded tier may hold now: what the encoded tier leaves,
    /// and at least a quarter of the budget.
    fn decoded_limit(&self) -> usize {
        self.budget
            .saturating_sub(self.raw.held())
            .max(self.budget / DECODED_FLOOR)
    }

    /// What the encoded tier may hold now: what the decoded tier leaves,
    /// and at least the rest of the budget beyond the decoded tier's floor.
    fn raw_limit(&self) -> usize {
        self.budget
            .saturating_sub(self.decoded.held())
            .max(self.budget - self.budget / DECODED_FLOOR)
    }

    /// Keep `r` in the encoded tier, then bring the decoded tier within
    /// what is left.
    fn keep_raw(&mut self, key: Vec<u8>, r: RawDoc) {
        let limit = self.raw_limit();
        self.raw.keep_within(key, r, limit, |_, _| {});
        let left = self.budget.saturating_sub(self.raw.held());
        self.decoded.shrink_to(left, |_, _| {});
    }

    /// Take the key's entry out (the caller puts it back if it stays
    /// current). An entry of the encoded tier is decoded; one that does
    /// not decode is dropped and reported missing, so the caller reads
    /// (and reports) the store's copy.
    pub(super) fn take(&mut self, key: &[u8]) -> Option<CachedDoc> {
        if let Some(c) = self.decoded.take(key) {
            return Some(c);
        }
        let r = self.raw.take(key)?;
        let doc = Doc::decode(&r.bytes).ok()?;
        Some(CachedDoc {
            doc,
            hash: r.hash,
            len: r.bytes.len(),
            encoded: Some(r.bytes),
        })
    }

    /// The key's decoded entry, left in place and marked as read; an entry
    /// of the encoded tier is decoded and moves to the decoded one.
    pub(super) fn peek(&mut self, key: &[u8]) -> Option<&CachedDoc> {
        if !self.decoded.contains(key) {
            let c = self.take(key)?;
            self.keep(key.to_vec(), c);
        }
        self.decoded.peek(key)
    }

    /// The key's stored bytes, from either tier, left in place and marked
    /// as read (a decoded entry without its bytes is encoded).
    pub(super) fn peek_encoded(&mut self, key: &[u8]) -> Option<bytes::Bytes> {
        if let Some(c) = self.decoded.peek(key) {
            return Some(match &c.encoded {
                Some(e) => e.clone(),
                None => c.doc.encode(),
            });
        }
        self.raw.peek(key).map(|r| r.bytes.clone())
    }

    /// Forget the key.
    pub(super) fn remove(&mut self, key: &[u8]) {
        self.decoded.take(key);
        self.raw.take(key);
    }

    /// Keep `c` as the key's state, decoded. The decoded tier's evicted
    /// entries that hold their bytes move to the encoded tier.
    pub(super) fn keep(&mut self, key: Vec<u8>, c: CachedDoc) {
        self.raw.take(&key);
        let limit = self.decoded_limit();
        let mut demoted = Vec::new();
        self.decoded.keep_within(key, c, limit, |k, v| {
            if let Some(bytes) = v.encoded {
                demoted.push((
                    k,
                    RawDoc {
                        bytes,
                        hash: v.hash,
                    },
                ));
            }
        });
        for (k, r) in demoted {
            self.keep_raw(k, r);
        }
        let left = self.budget.saturating_sub(self.decoded.held());
        self.raw.shrink_to(left, |_, _| {});
    }

    /// Keep the key's state as its stored bytes only (a replica's fetch
    /// from the store: nothing here needs it decoded).
    pub(super) fn keep_encoded(&mut self, key: Vec<u8>, r: RawDoc) {
        self.decoded.take(&key);
        self.keep_raw(key, r);
    }

    pub(super) fn clear(&mut self) {
        self.decoded.clear();
        self.raw.clear();
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.decoded.bytes() + self.raw.bytes()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.decoded.len() + self.raw.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(budget: usize) -> Tier<CachedDoc> {
        Tier::new(budget, KeyHasher::random())
    }

    fn cost(key: &[u8], c: &CachedDoc) -> usize {
        c.cost(key)
    }

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
        let mut c = tier(1 << 20);
        for i in 0..1000u32 {
            let key = i.to_be_bytes().to_vec();
            c.keep(key.clone(), entry(100), |_, _| {});
            assert!(c.bytes() <= 1 << 20, "over budget after {i} entries");
            assert_eq!(
                c.take(&key).map(|e| e.hash),
                Some(100),
                "the entry just kept"
            );
            c.keep(key, entry(100), |_, _| {});
        }
        let per_entry = cost(&[0; 4], &entry(100));
        assert_eq!(c.len(), (1 << 20) / per_entry, "evicts only what it must");
        assert_eq!(c.bytes(), c.len() * per_entry);
    }

    #[test]
    fn taking_and_removing_give_the_bytes_back() {
        let mut c = tier(1 << 20);
        c.keep(b"a".to_vec(), entry(10), |_, _| {});
        c.keep(b"b".to_vec(), entry(20), |_, _| {});
        c.keep(b"a".to_vec(), entry(30), |_, _| {});
        assert_eq!(c.bytes(), cost(b"a", &entry(30)) + cost(b"b", &entry(20)));
        assert_eq!(c.take(b"a").map(|e| e.len), Some(30));
        c.take(b"b");
        c.take(b"missing");
        assert_eq!((c.len(), c.bytes()), (0, 0));
        c.keep(b"c".to_vec(), entry(1), |_, _| {});
        c.clear();
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn a_state_too_large_for_the_cache_is_not_kept() {
        let mut c = tier(64 * 1024);
        c.keep(b"big".to_vec(), entry(4096), |_, _| {});
        assert!(c.take(b"big").is_none());
        assert_eq!(c.bytes(), 0);
        c.keep(b"small".to_vec(), entry(64), |_, _| {});
        assert!(c.take(b"small").is_some());
    }

    #[test]
    fn evicts_the_least_recently_used_entry() {
        let per_entry = cost(&[0; 4], &entry(10));
        let mut c = tier(per_entry * 100);
        for i in 0..100u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
        }
        // Use the first ten again (take and put back, as the vnode does).
        for i in 0..10u32 {
            let key = i.to_be_bytes().to_vec();
            let e = c.take(&key).unwrap();
            c.keep(key, e, |_, _| {});
        }
        // Ten new keys evict the ten used longest ago: 10..20.
        for i in 100..110u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
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
        let per_entry = cost(&[0; 4], &entry(10));
        let mut c = tier(per_entry * 100);
        for i in 0..100u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
        }
        // Read the first ten (peek, as the vnode does for reads).
        for i in 0..10u32 {
            assert!(c.peek(&i.to_be_bytes()).is_some());
        }
        // Ten new keys evict the ten oldest not read: 10..20.
        for i in 100..110u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.bytes(), 100 * per_entry);
        for i in 10..20u32 {
            assert!(c.peek(&i.to_be_bytes()).is_none(), "{i} evicted");
        }
        // The second chance is spent: unread since, 0..10 go next.
        for i in 20..110u32 {
            assert!(c.take(&i.to_be_bytes()).is_some(), "{i} kept");
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
        }
        for i in 110..120u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10), |_, _| {});
        }
        for i in 0..10u32 {
            assert!(c.peek(&i.to_be_bytes()).is_none(), "{i} evicted at last");
        }
    }

    #[test]
    fn stale_queue_entries_are_swept() {
        let mut c = tier(1 << 20);
        for round in 0..1000u32 {
            let key = (round % 10).to_be_bytes().to_vec();
            let e = c.take(&key).unwrap_or_else(|| entry(10));
            c.keep(key, e, |_, _| {});
        }
        assert_eq!(c.len(), 10);
        assert!(c.queued() <= 2 * 10 + 64 + 1, "queue holds {}", c.queued());
    }

    /// A real state (a string of `n` bytes) and its encoding.
    fn state(n: usize) -> (Doc, bytes::Bytes) {
        use crate::object::{Object, Value};
        let obj = Object::new(Value::Str(bytes::Bytes::from(vec![b'x'; n])));
        let doc = Doc::from_legacy(obj);
        let enc = doc.encode();
        (doc, enc)
    }

    fn with_bytes(n: usize) -> CachedDoc {
        let (doc, enc) = state(n);
        CachedDoc {
            doc,
            hash: 7,
            len: enc.len(),
            encoded: Some(enc),
        }
    }

    #[test]
    fn an_evicted_state_with_its_bytes_moves_to_the_encoded_tier() {
        let per_entry = with_bytes(100).cost(&[0; 4]);
        let budget = per_entry * 20;
        let mut c = DocCache::new(budget);
        for i in 0..50u32 {
            c.keep(i.to_be_bytes().to_vec(), with_bytes(100));
            assert!(c.bytes() <= budget, "over budget after {i}");
        }
        assert!(c.raw.len() > 0, "evicted states kept as bytes");
        assert!(
            c.len() > 20,
            "more keys than the budget holds decoded: {}",
            c.len()
        );
        // The newest stay decoded.
        for i in 45..50u32 {
            assert!(c.decoded.contains(&i.to_be_bytes()), "{i} decoded");
        }
        // Taken from the encoded tier: decoded, with its hash and bytes.
        let (_, enc) = state(100);
        let k = (0..50u32)
            .map(u32::to_be_bytes)
            .find(|k| c.raw.contains(k))
            .expect("a key in the encoded tier");
        let got = c.take(&k).expect("in the encoded tier");
        assert_eq!(got.hash, 7);
        assert_eq!(got.encoded.as_ref(), Some(&enc));
        assert_eq!(got.len, enc.len());
        assert_eq!(got.doc.encode(), enc);
        assert!(c.take(&k).is_none(), "taken out");
    }

    #[test]
    fn states_without_their_bytes_keep_the_whole_budget_decoded() {
        let per_entry = entry(10).cost(&[0; 4]);
        let mut c = DocCache::new(per_entry * 20);
        for i in 0..50u32 {
            c.keep(i.to_be_bytes().to_vec(), entry(10));
        }
        assert_eq!((c.decoded.len(), c.raw.len()), (20, 0));
    }

    #[test]
    fn a_full_encoded_tier_makes_room_for_a_decoded_read() {
        let per_entry = with_bytes(100).cost(&[0; 4]);
        let budget = per_entry * 20;
        let mut c = DocCache::new(budget);
        let (_, enc) = state(100);
        for i in 0..500u32 {
            let r = RawDoc {
                bytes: enc.clone(),
                hash: 1,
            };
            c.keep_encoded(i.to_be_bytes().to_vec(), r);
            assert!(c.bytes() <= budget);
        }
        let k = (0..500u32)
            .rev()
            .map(u32::to_be_bytes)
            .find(|k| c.raw.contains(k))
            .expect("a key in the encoded tier");
        assert!(c.peek(&k).is_some(), "decoded and kept");
        assert!(c.decoded.contains(&k));
        assert!(c.bytes() <= budget);
    }

    #[test]
    fn a_key_is_in_one_tier_at_most() {
        let mut c = DocCache::new(1 << 20);
        let (_, enc) = state(10);
        c.keep_encoded(
            b"k".to_vec(),
            RawDoc {
                bytes: enc.clone(),
                hash: 1,
            },
        );
        assert_eq!(c.peek_encoded(b"k"), Some(enc.clone()));
        assert_eq!(
            (c.decoded.len(), c.raw.len()),
            (0, 1),
            "a fetch decodes nothing"
        );
        // A read decodes it and moves it up.
        assert!(c.peek(b"k").is_some());
        assert_eq!((c.decoded.len(), c.raw.len()), (1, 0));
        // Kept as bytes again: out of the decoded tier.
        c.keep_encoded(
            b"k".to_vec(),
            RawDoc {
                bytes: enc,
                hash: 2,
            },
        );
        assert_eq!((c.decoded.len(), c.raw.len()), (0, 1));
        // Kept decoded: out of the encoded tier.
        c.keep(b"k".to_vec(), with_bytes(20));
        assert_eq!((c.decoded.len(), c.raw.len()), (1, 0));
        assert_eq!(c.take(b"k").map(|e| e.hash), Some(7));
        c.keep_encoded(
            b"k".to_vec(),
            RawDoc {
                bytes: state(5).1,
                hash: 3,
            },
        );
        c.remove(b"k");
        assert_eq!((c.len(), c.bytes()), (0, 0));
        c.keep_encoded(
            b"k".to_vec(),
            RawDoc {
                bytes: state(5).1,
                hash: 3,
            },
        );
        c.keep(b"j".to_vec(), with_bytes(5));
        c.clear();
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn bytes_that_do_not_decode_are_dropped_not_served_decoded() {
        let mut c = DocCache::new(1 << 20);
        let junk = bytes::Bytes::from_static(b"\x02not a state");
        c.keep_encoded(
            b"k".to_vec(),
            RawDoc {
                bytes: junk.clone(),
                hash: 1,
            },
        );
        // A fetch answers the bytes as they are (the coordinator reports
        // them), but nothing decoded comes from them.
        assert_eq!(c.peek_encoded(b"k"), Some(junk));
        assert!(c.peek(b"k").is_none());
        assert!(c.take(b"k").is_none());
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
