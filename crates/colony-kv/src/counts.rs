//! Per-bucket key and expiry counts of one partition (DBSIZE, INFO keyspace).
//!
//! Kept in memory by the vnode and stored beside the data, in the `counts`
//! keyspace, in the same atomic batch as the writes that change them, so
//! the stored counts always match the stored data and opening a partition
//! reads a few records instead of scanning every key. A partition written by
//! an older version (no marker record) is counted by a scan once.
//!
//! Layout: `[partition u16][bucket]` -> `keys u64 BE, expires u64 BE`; the
//! marker is `[partition u16]` alone.

use crate::store::{self, Store};
use crate::KvError;
use bytes::Bytes;
use colony_core::PartitionId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketCount {
    pub keys: u64,
    pub expires: u64,
}

pub(crate) struct Counts {
    partition: PartitionId,
    map: BTreeMap<Bytes, BucketCount>,
    dirty: BTreeSet<Bytes>,
    marker_missing: bool,
}

impl Counts {
    pub(crate) fn load(store: &Store, partition: PartitionId) -> Result<Self, KvError> {
        let mut map = BTreeMap::new();
        let mut marker = false;
        for item in store.counts().prefix(partition.to_be_bytes()) {
            let (k, v) = item.into_inner()?;
            if k.len() == 2 {
                marker = true;
                continue;
            }
            let c = decode(&v).ok_or_else(|| {
                KvError::Corrupt(format!("bad count record in partition {partition}"))
            })?;
            map.insert(Bytes::copy_from_slice(&k[2..]), c);
        }
        if marker {
            return Ok(Self {
                partition,
                map,
                dirty: BTreeSet::new(),
                marker_missing: false,
            });
        }
        let map = scan(store, partition)?;
        Ok(Self {
            partition,
            dirty: map.keys().cloned().collect(),
            map,
            marker_missing: true,
        })
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<Bytes, BucketCount> {
        self.map.clone()
    }

    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.marker_missing
    }

    /// A key of `bucket` went from `before` to `after` (None: absent;
    /// Some(expiry)).
    pub(crate) fn account(
        &mut self,
        bucket: &Bytes,
        before: Option<Option<u64>>,
        after: Option<Option<u64>>,
    ) {
        let c = self.map.entry(bucket.clone()).or_default();
        if let Some(exp) = before {
            c.keys = c.keys.saturating_sub(1);
            c.expires = c.expires.saturating_sub(u64::from(exp.is_some()));
        }
        if let Some(exp) = after {
            c.keys += 1;
            c.expires += u64::from(exp.is_some());
        }
        self.dirty.insert(bucket.clone());
    }

    /// Every key of `bucket` (or of every bucket) was removed.
    pub(crate) fn clear(&mut self, bucket: Option<&Bytes>) {
        match bucket {
            Some(b) => {
                if let Some(c) = self.map.get_mut(b) {
                    *c = BucketCount::default();
                    self.dirty.insert(b.clone());
                }
            }
            None => {
                for (b, c) in self.map.iter_mut() {
                    *c = BucketCount::default();
                    self.dirty.insert(b.clone());
                }
            }
        }
    }

    /// Every key of every bucket but those of `keep` was removed.
    pub(crate) fn clear_except(&mut self, keep: &[Bytes]) {
        for (b, c) in self.map.iter_mut() {
            if !keep.contains(b) {
                *c = BucketCount::default();
                self.dirty.insert(b.clone());
            }
        }
    }

    /// Add the changed records to `batch`.
    pub(crate) fn write_dirty(&mut self, store: &Store, batch: &mut fjall::OwnedWriteBatch) {
        for bucket in std::mem::take(&mut self.dirty) {
            let key = record_key(self.partition, &bucket);
            match self.map.get(&bucket) {
                Some(c) if c.keys > 0 => batch.insert(store.counts(), key, &encode(*c)[..]),
                _ => {
                    self.map.remove(&bucket);
                    batch.remove(store.counts(), key);
                }
            }
        }
        if std::mem::take(&mut self.marker_missing) {
            batch.insert(
                store.counts(),
                self.partition.to_be_bytes().to_vec(),
                &b"1"[..],
            );
        }
    }
}

fn record_key(partition: PartitionId, bucket: &[u8]) -> Vec<u8> {
    let mut k = partition.to_be_bytes().to_vec();
    k.extend_from_slice(bucket);
    k
}

fn encode(c: BucketCount) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&c.keys.to_be_bytes());
    out[8..].copy_from_slice(&c.expires.to_be_bytes());
    out
}

fn decode(v: &[u8]) -> Option<BucketCount> {
    Some(BucketCount {
        keys: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        expires: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
    })
}

/// Count a partition's keys by reading every object header.
fn scan(store: &Store, partition: PartitionId) -> Result<BTreeMap<Bytes, BucketCount>, KvError> {
    let mut counts: BTreeMap<Bytes, BucketCount> = BTreeMap::new();
    for item in store.data().prefix(partition.to_be_bytes()) {
        let (k, v) = item.into_inner()?;
        let (bucket, _, _) = store::split_data_key(&k)
            .ok_or_else(|| KvError::Corrupt(format!("malformed key in partition {partition}")))?;
        if crate::crdt::Doc::peek_kind(&v)?.is_none() {
            continue; // a tombstone is no key
        }
        let expires = crate::crdt::Doc::peek_expiry(&v)?.is_some();
        let c = counts.entry(Bytes::copy_from_slice(bucket)).or_default();
        c.keys += 1;
        c.expires += u64::from(expires);
    }
    Ok(counts)
}
