//! The vnode's side of ownership handoff: reading the partition out in
//! chunks (or only the buckets every owner keeps whole), tracking keys
//! written meanwhile, refusing requests for a range sealed or handed away,
//! merging received entries, and dropping the partition once this node no
//! longer replicates it (leaving the buckets it keeps whole).

use super::KvVnode;
use super::{KvRequest, KvResponse};
use crate::crdt::{Actor, Doc};
use crate::{store, KvError};
use bytes::Bytes;
use colony_core::cluster::{DropStep, HandoffItem};
use colony_core::PartitionId;
use rand::Rng;
use std::ops::Bound;

/// Most entries one step of a drop removes, and about the most bytes: a
/// step takes a millisecond or two, and the partition's requests wait for
/// no more than one.
const DROP_KEYS: usize = 500;
const DROP_BYTES: usize = 128 << 10;

/// Where a drop under way got to: the last data key removed and the last
/// expiry index entry looked at, whether the data is all gone, and the
/// buckets it leaves (those this node keeps whole, as of the last step).
#[derive(Debug, Default)]
pub(super) struct DropCursor {
    data: Option<Vec<u8>>,
    expiry: Option<Vec<u8>>,
    data_done: bool,
    keep: Vec<Bytes>,
}

/// What one step of a drop may still remove.
#[derive(Default)]
struct Budget {
    keys: usize,
    bytes: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.keys >= DROP_KEYS || self.bytes >= DROP_BYTES
    }

    fn spend(&mut self, bytes: usize) {
        self.keys += 1;
        self.bytes += bytes;
    }
}

/// The keys of `partition` after `after` (from its first when None).
fn bounds(partition: PartitionId, after: Option<Vec<u8>>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = match after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Included(partition.to_be_bytes().to_vec()),
    };
    (lower, Bound::Unbounded)
}

/// The first key after every key starting with `prefix` (None: there is
/// none, the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The prefix of `skey`'s bucket if that bucket is one of `keep`.
fn kept_prefix<'a>(skey: &'a [u8], keep: &[Bytes]) -> Option<&'a [u8]> {
    let (bucket, _, _) = store::split_data_key(skey)?;
    keep.iter()
        .any(|b| b.as_ref() == bucket)
        .then(|| &skey[..4 + bucket.len()])
}

/// Whether `partition` holds an entry of a bucket not in `keep`: what a
/// drop would remove. Kept buckets are stepped over, not read through.
pub fn holds_other_than(
    store: &store::Store,
    partition: PartitionId,
    keep: &[Bytes],
) -> Result<bool, KvError> {
    let prefix = partition.to_be_bytes();
    let mut lower = Bound::Included(prefix.to_vec());
    loop {
        let first = store
            .data()
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .next();
        let Some(item) = first else {
            return Ok(false);
        };
        let k = item.key()?;
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        match kept_prefix(&k, keep).map(prefix_end) {
            None => return Ok(true),
            Some(None) => return Ok(false),
            Some(Some(end)) => lower = Bound::Included(end),
        }
    }
}

impl KvVnode {
    /// Stored entries of `buckets` (in storage order) after `after`, about
    /// `max_bytes` of them. Nothing is recorded as written.
    pub(super) fn handoff_read_buckets(
        &self,
        buckets: &[Bytes],
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> Result<KvResponse, KvError> {
        let mut items = Vec::new();
        let mut size = 0;
        for bucket in buckets {
            let prefix = store::bucket_prefix(self.partition, bucket);
            let lower = match &after {
                Some(a) if a.starts_with(&prefix) => Bound::Excluded(a.to_vec()),
                // The whole bucket was sent before `after`.
                Some(a) if prefix.as_slice() < a.as_ref() => continue,
                _ => Bound::Included(prefix.clone()),
            };
            if self.read_prefix(lower, &prefix, &mut items, &mut size, max_bytes)? {
                return Ok(full_chunk(items));
            }
        }
        Ok(KvResponse::Items { items, next: None })
    }

    /// Append the stored entries from `lower` on whose keys start with
    /// `prefix` to `items`, counting their bytes in `size`, until it holds
    /// `max_bytes`. Returns whether it stopped there with entries left.
    fn read_prefix(
        &self,
        lower: Bound<Vec<u8>>,
        prefix: &[u8],
        items: &mut Vec<HandoffItem>,
        size: &mut usize,
        max_bytes: usize,
    ) -> Result<bool, KvError> {
        for item in self
            .store
            .data()
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
        {
            let (k, v) = item.into_inner()?;
            if !k.starts_with(prefix) {
                return Ok(false);
            }
            if *size >= max_bytes {
                return Ok(true);
            }
            *size += k.len() + v.len();
            items.push(HandoffItem {
                key: Bytes::copy_from_slice(&k),
                value: Some(Bytes::copy_from_slice(&v)),
            });
        }
        Ok(false)
    }

    /// What handoff makes of a client request before it is served: a
    /// refusal (the range was handed away, or is sealed for the last round
    /// of a transfer), or None to serve it; a write to a range being
    /// dropped stops the drop.
    pub(super) fn admit(&mut self, request: &KvRequest) -> Option<KvResponse> {
        if !request.is_client() {
            return None;
        }
        // A range handed away refuses requests, except those of a
        // fallback standing in for an unreachable replica (the write is
        // kept as a hint, which pins the data here) and reads (merging
        // an older state into a read is harmless).
        let stand_in = match request {
            KvRequest::Lead { hints, .. } | KvRequest::Merge { hints, .. } => !hints.is_empty(),
            KvRequest::Fetch { .. } => true,
            _ => false,
        };
        if let (Some(to), false) = (&self.moved, stand_in) {
            // Keys this node keeps whole stay served here; so do the
            // exchanges that keep them in step (their keys are those both
            // sides hold).
            let held = self.shared.held();
            let kept = request.only_buckets(&held) || (request.is_aae() && !held.is_empty());
            if !kept {
                return Some(KvResponse::Failed(KvError::NotOwner(to.to_string())));
            }
        }
        let writes = match request {
            KvRequest::Key { op, .. } | KvRequest::Lead { op, .. } => !op.is_read_only(),
            KvRequest::Merge { .. } | KvRequest::Reap { .. } => true,
            KvRequest::AaeSync { .. } | KvRequest::AaeReap { .. } => true,
            KvRequest::Flush { .. } => true,
            _ => false,
        };
        if self.sealed && writes {
            return Some(KvResponse::Failed(KvError::TryAgain(format!(
                "partition {} is moving to another node",
                self.partition
            ))));
        }
        if writes && !self.drop_keeps(request) {
            // Someone still writes here as a replica: a drop under way
            // stops, and the next pass decides afresh.
            self.dropping = None;
        }
        None
    }

    /// Whether a drop under way leaves every key `request` writes: then
    /// the write does not stop it (keys kept whole are written everywhere,
    /// all the time).
    fn drop_keeps(&self, request: &KvRequest) -> bool {
        self.dropping
            .as_ref()
            .is_some_and(|c| !c.keep.is_empty() && request.only_buckets(&c.keep))
    }

    /// Stored entries after `after`, about `max_bytes` of them.
    pub(super) fn handoff_read(
        &self,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> Result<KvResponse, KvError> {
        let prefix = self.partition.to_be_bytes();
        let lower = match &after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut items = Vec::new();
        let mut size = 0;
        if self.read_prefix(lower, &prefix, &mut items, &mut size, max_bytes)? {
            return Ok(full_chunk(items));
        }
        Ok(KvResponse::Items { items, next: None })
    }

    pub(super) fn handoff_dirty(&mut self, seal: bool) -> Result<KvResponse, KvError> {
        let keys = self.dirty.as_mut().map(std::mem::take).unwrap_or_default();
        let mut items = Vec::with_capacity(keys.len());
        for k in keys {
            let value = self.with_stored(&k, |v| Ok(Bytes::copy_from_slice(v)))?;
            items.push(HandoffItem {
                key: Bytes::from(k),
                value,
            });
        }
        if seal {
            self.sealed = true;
        }
        Ok(KvResponse::Items { items, next: None })
    }

    /// Merge entries handed over by another replica. A merge, not an
    /// overwrite: a resent or stale entry can never roll a key back.
    pub(super) fn handoff_import(
        &mut self,
        items: Vec<HandoffItem>,
    ) -> Result<KvResponse, KvError> {
        // Receiving the partition: it is not to be dropped.
        self.dropping = None;
        for item in items {
            let Some((bucket, _, key)) = store::split_data_key(&item.key) else {
                return Err(KvError::Corrupt(
                    "handoff entry with a malformed key".into(),
                ));
            };
            if item.key[..2] != self.partition.to_be_bytes() {
                return Err(KvError::Corrupt(format!(
                    "handoff entry for another partition than {}",
                    self.partition
                )));
            }
            // A key removed outright (a flush) has nothing to merge.
            let Some(v) = item.value else { continue };
            let theirs = Doc::decode(&v)?;
            let bucket = Bytes::copy_from_slice(bucket);
            let key = key.to_vec();
            self.import_one(&bucket, &key, item.key.to_vec(), theirs)?;
        }
        Ok(KvResponse::Reply(crate::Reply::Ok))
    }

    /// Merge one received state into the key's, as `merge_doc` does, but
    /// looking the key up once: the stored entry's hash is taken from the
    /// value read for the merge (most of a joining node's work during a
    /// move is this, a lookup per key of which was spent on the hash).
    fn import_one(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        skey: Vec<u8>,
        theirs: Doc,
    ) -> Result<(), KvError> {
        self.hlc.observe(theirs.max_stamp());
        let found = self.with_stored(&skey, |v| {
            Ok((Doc::decode(v)?, crate::aae::tree::entry_hash(&skey, v)))
        })?;
        let (merged, before, old) = match found {
            None => (theirs, None, None),
            Some((mut mine, hash)) => {
                let before = Self::presence(&mine);
                let unchanged = mine.clone();
                mine.merge(&theirs);
                if mine == unchanged {
                    return Ok(()); // nothing new here: no write at all
                }
                (mine, before, Some(hash))
            }
        };
        self.put_doc(bucket, key, skey, before, &merged, &[], Some(old));
        Ok(())
    }

    /// One bounded step of dropping the partition (see
    /// `PartitionStore::drop_some`). Entries go as `flush` removes them,
    /// through `stage`, so the tree stays in step, and each live key leaves
    /// the counts with its entry: every step commits an exactly counted
    /// partition, so a drop cut short anywhere leaves a consistent (smaller)
    /// one. Each step goes on from where the last stopped: starting over
    /// at the partition's first key would step over every removal made so
    /// far, and the steps would grow with the drop. (Nothing can write
    /// behind the cursor: a write stops the drop.)
    pub(super) fn handoff_drop(
        &mut self,
        start: bool,
        keep: Vec<Bytes>,
    ) -> Result<KvResponse, KvError> {
        if start {
            self.dropping = Some(DropCursor::default());
            self.sealed = false;
            self.dirty = None;
        }
        let cursor = match self.dropping.take() {
            Some(c) if !Self::has_hints(&self.store, self.partition) => c,
            _ => return Ok(KvResponse::Dropping(DropStep::Stopped)),
        };
        // Removed outright (no tombstones): the dots issued for these keys
        // must never be issued again.
        self.actor = Actor(self.rng.random());
        let mut budget = Budget::default();
        let mut cursor = cursor;
        cursor.keep = keep;
        if !cursor.data_done {
            if let Some(more) = self.drop_data(&mut cursor, &mut budget)? {
                self.dropping = Some(cursor);
                return Ok(more);
            }
            cursor.data_done = true;
        }
        // No data left but what is kept: the expiry index entries of the
        // rest are gone.
        let after = bounds(self.partition, cursor.expiry.take());
        let mut last = None;
        for item in self.store.expiry().range::<Vec<u8>, _>(after) {
            let k = item.key()?;
            if !k.starts_with(&self.partition.to_be_bytes()) {
                break;
            }
            if budget.spent() {
                cursor.expiry = last;
                self.dropping = Some(cursor);
                return Ok(KvResponse::Dropping(DropStep::More));
            }
            budget.spend(k.len());
            last = Some(k.to_vec());
            let kept = store::split_expiry_key(&k)
                .is_some_and(|(_, b, _)| cursor.keep.iter().any(|c| c.as_ref() == b));
            if !kept {
                self.pending_expiry.push((k.to_vec(), false));
            }
        }
        self.counts.clear_except(&cursor.keep);
        self.moved = None;
        Ok(KvResponse::Dropping(DropStep::Done))
    }

    /// The data part of a drop step: remove entries after the cursor,
    /// stepping over the buckets kept, until the budget is spent (then the
    /// step's answer) or the partition's data is done (None).
    fn drop_data(
        &mut self,
        cursor: &mut DropCursor,
        budget: &mut Budget,
    ) -> Result<Option<KvResponse>, KvError> {
        let prefix = self.partition.to_be_bytes();
        let (mut lower, _) = bounds(self.partition, cursor.data.take());
        let mut last = None;
        loop {
            let mut skip_to = None;
            for item in self
                .store
                .data()
                .range::<Vec<u8>, _>((lower.clone(), Bound::Unbounded))
            {
                let (k, v) = item.into_inner()?;
                if !k.starts_with(&prefix) {
                    return Ok(None);
                }
                if let Some(kept) = kept_prefix(&k, &cursor.keep) {
                    skip_to = Some(prefix_end(kept));
                    break;
                }
                if budget.spent() {
                    cursor.data = last;
                    return Ok(Some(KvResponse::Dropping(DropStep::More)));
                }
                budget.spend(k.len() + v.len());
                self.forget_live(&k, &v);
                // The entry's hash from the value in hand: `stage` would
                // look the key up again to take it out of the tree.
                let old = crate::aae::tree::entry_hash(&k, &v);
                last = Some(k.to_vec());
                self.stage_known(k.to_vec(), None, Some(Some(old)));
            }
            match skip_to {
                Some(Some(end)) => lower = Bound::Included(end),
                _ => return Ok(None),
            }
        }
    }

    /// A stored entry goes: if it is a live key, take it out of the counts.
    /// (Its expiry index entry goes in the drop's last steps: until then
    /// it is a stale hint, which expiry skips, as it does any.)
    fn forget_live(&mut self, skey: &[u8], value: &[u8]) {
        let Some((bucket, _, _)) = store::split_data_key(skey) else {
            return;
        };
        // An entry whose header cannot be read is not counted as a key
        // (the drop's last step clears the counts anyway).
        if !matches!(Doc::peek_kind(value), Ok(Some(_))) {
            return;
        }
        let at = Doc::peek_expiry(value).ok().flatten();
        self.counts
            .account(&Bytes::copy_from_slice(bucket), Some(at), None);
    }
}

/// A chunk that filled up: the next one resumes after its last key.
fn full_chunk(items: Vec<HandoffItem>) -> KvResponse {
    let next = items.last().map(|i| i.key.clone());
    KvResponse::Items { items, next }
}
