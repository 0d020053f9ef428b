//! The vnode's partition-wide requests (scan, flush, a random key) and
//! active expiry.

use super::{KvResponse, KvVnode, EXPIRE_PER_TICK};
use crate::crdt::{Actor, Doc};
use crate::{glob, store, KvError, Reply, ValueKind};
use bytes::Bytes;
use rand::Rng;

impl KvVnode {
    pub(super) fn scan(
        &self,
        bucket: &[u8],
        from: u64,
        count: usize,
        pattern: Option<&[u8]>,
        kind: Option<ValueKind>,
    ) -> Result<KvResponse, KvError> {
        let now = self.clock.now_ms();
        let start = store::data_key(self.partition, bucket, from, b"");
        let prefix = store::bucket_prefix(self.partition, bucket);
        let mut keys = Vec::new();
        let mut examined = 0usize;
        let mut last_hash = None;
        for item in self.store.data().range(start..) {
            let (k, v) = item.into_inner()?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some((_, hash, key)) = store::split_data_key(&k) else {
                continue;
            };
            // Stop only between hashes, so no key is split from its cursor.
            if examined >= count && last_hash != Some(hash) {
                return Ok(KvResponse::Page {
                    keys,
                    next: Some(hash),
                });
            }
            examined += 1;
            last_hash = Some(hash);
            if Doc::peek_expiry(&v)?.is_some_and(|at| at <= now) {
                continue;
            }
            let Some(stored_kind) = Doc::peek_kind(&v)? else {
                continue; // a tombstone
            };
            if kind.is_some_and(|want| stored_kind != want) {
                continue;
            }
            if pattern.is_some_and(|p| !glob::matches(p, key)) {
                continue;
            }
            keys.push(Bytes::copy_from_slice(key));
        }
        Ok(KvResponse::Page { keys, next: None })
    }

    pub(super) fn flush(&mut self, bucket: Option<&Bytes>) -> Result<KvResponse, KvError> {
        self.flush_pending(false)?;
        // Data removed outright (no tombstones): this vnode must never reuse
        // the dots it issued for it.
        self.actor = Actor(self.rng.random());
        let prefix = match bucket {
            Some(b) => store::bucket_prefix(self.partition, b),
            None => self.partition.to_be_bytes().to_vec(),
        };
        // Removals join the batch's pending writes: one atomic write, and
        // fsynced before the reply when the policy says so.
        for item in self.store.data().prefix(&prefix) {
            let (k, v) = item.into_inner()?;
            // The entry's hash from the value in hand: `stage` would look
            // the key up again to take it out of the tree.
            let old = crate::aae::tree::entry_hash(&k, &v);
            let k = k.to_vec();
            self.note_dirty(&k);
            self.stage_known(k, None, Some(Some(old)));
        }
        if bucket.is_none() {
            for item in self.store.expiry().prefix(self.partition.to_be_bytes()) {
                self.pending_expiry.push((item.key()?.to_vec(), false));
            }
            for item in self.store.hints().prefix(self.partition.to_be_bytes()) {
                self.pending_hints.push((item.key()?.to_vec(), false));
            }
        }
        self.counts.clear(bucket);
        Ok(KvResponse::Reply(Reply::Ok))
    }

    pub(super) fn random_key(&self, bucket: &[u8], from: u64) -> Result<KvResponse, KvError> {
        let now = self.clock.now_ms();
        let prefix = store::bucket_prefix(self.partition, bucket);
        let start = store::data_key(self.partition, bucket, from, b"");
        let after = self.store.data().range(start..);
        let wrapped = self.store.data().prefix(&prefix);
        for item in after.chain(wrapped) {
            let (k, v) = item.into_inner()?;
            if !k.starts_with(&prefix) {
                continue;
            }
            if Doc::peek_expiry(&v)?.is_some_and(|at| at <= now) || Doc::peek_kind(&v)?.is_none() {
                continue;
            }
            if let Some((_, _, key)) = store::split_data_key(&k) {
                return Ok(KvResponse::Key(Some(Bytes::copy_from_slice(key))));
            }
        }
        Ok(KvResponse::Key(None))
    }

    /// Active expiry: keys whose time has come become tombstones (the
    /// TTL is replicated state, so every replica reaches the same verdict;
    /// the tombstone keeps what it observed, so a later write survives).
    pub(super) fn expire_due(&mut self) -> Result<(), KvError> {
        let now = self.clock.now_ms();
        let lo = store::expiry_key(self.partition, 0, b"", b"");
        let hi = store::expiry_key(self.partition, now, b"", b"");
        let mut due = Vec::new();
        for item in self.store.expiry().range(lo..hi).take(EXPIRE_PER_TICK) {
            due.push(item.key()?);
        }
        for ek in due {
            self.pending_expiry.push((ek.to_vec(), false));
            let Some((at, bucket, key)) = store::split_expiry_key(&ek) else {
                continue;
            };
            let hash = colony_core::key_hash(bucket, key);
            let skey = store::data_key(self.partition, bucket, hash, key);
            // The index is a hint: only the object's own expiry counts.
            let Some(mut doc) = self.with_stored(&skey, Doc::decode)? else {
                continue;
            };
            if !doc.is_present() || doc.expire_at() != Some(at) {
                continue;
            }
            let before = Self::presence(&doc);
            doc.delete(self.hlc.now(now));
            let bucket = Bytes::copy_from_slice(bucket);
            let key = key.to_vec();
            self.put_doc(&bucket, &key, skey, before, &doc, &[], None);
            metrics::counter!("colony_kv_expired_keys_total").increment(1);
        }
        self.flush_pending(false)
    }
}
