//! The KV vnode: the state of one partition, applying operations atomically.

use crate::apply::{self, Applied, Ctx, Out, Write};
use crate::cache::ObjectCache;
pub use crate::counts::BucketCount;
use crate::counts::Counts;
use crate::store::{self, FsyncPolicy, Store};
use crate::{glob, Clock, KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::vnode::Vnode;
use colony_core::PartitionId;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Decoded objects a vnode keeps in memory (see `cache`), and the largest
/// object it will keep: 64 vnodes hold at most 64 MiB of cached values.
const CACHE_ENTRIES: usize = 256;
const CACHE_OBJECT_BYTES: usize = 4096;

/// Most expired keys removed by one tick of active expiry.
const EXPIRE_PER_TICK: usize = 2000;

#[derive(Debug, Clone)]
pub enum KvRequest {
    Key {
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        op: KeyOp,
    },
    /// Up to `count` keys of `bucket` from hash `from` on.
    Scan {
        bucket: Bytes,
        from: u64,
        count: usize,
        pattern: Option<Bytes>,
        kind: Option<ValueKind>,
    },
    Count,
    Flush {
        bucket: Option<Bytes>,
    },
    /// The first live key of `bucket` at or after hash `from`, wrapping.
    RandomKey {
        bucket: Bytes,
        from: u64,
    },
}

#[derive(Debug)]
pub enum KvResponse {
    Reply(Reply),
    Object(Option<Object>),
    Page {
        keys: Vec<Bytes>,
        /// Hash to continue from, or None when the partition is done.
        next: Option<u64>,
    },
    Counts(BTreeMap<Bytes, BucketCount>),
    Key(Option<Bytes>),
    Failed(KvError),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_value_bytes: usize,
}

pub struct KvVnode {
    partition: PartitionId,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    rng: SmallRng,
    counts: Counts,
    /// Writes of the batch being handled, by storage key (None deletes).
    /// Reads look here first; `commit` writes them as one atomic batch, so
    /// a batch of requests costs one journal write (and one fsync).
    pending: HashMap<Vec<u8>, Option<Bytes>>,
    /// Expiry index entries to add (true) or remove (false) with the batch.
    pending_expiry: Vec<(Vec<u8>, bool)>,
    cache: ObjectCache,
}

impl KvVnode {
    /// Open the partition: count its keys (this also reads every object's
    /// header, so a corrupt store fails here, at start-up).
    pub fn open(
        partition: PartitionId,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<Self, KvError> {
        let counts = Counts::load(&store, partition)?;
        let seed = u64::from(partition.0) ^ clock.now_ms();
        Ok(Self {
            partition,
            store,
            clock,
            limits,
            rng: SmallRng::seed_from_u64(seed),
            counts,
            pending: HashMap::new(),
            cache: ObjectCache::new(CACHE_ENTRIES, CACHE_OBJECT_BYTES),
            pending_expiry: Vec::new(),
        })
    }

    /// Apply `f` to the stored bytes under `skey`, this batch's writes
    /// included (no copy of the stored value is made).
    fn with_stored<T>(
        &self,
        skey: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, KvError>,
    ) -> Result<Option<T>, KvError> {
        if let Some(v) = self.pending.get(skey) {
            return v.as_deref().map(f).transpose();
        }
        self.store.data().get(skey)?.as_deref().map(f).transpose()
    }

    /// Write this batch's changes to the store as one atomic batch; with
    /// `sync`, fsync it before returning.
    fn flush_pending(&mut self, sync: bool) -> Result<(), KvError> {
        if self.pending.is_empty() && self.pending_expiry.is_empty() && !self.counts.is_dirty() {
            return Ok(());
        }
        let mut batch = self.store.batch();
        if sync {
            batch = batch.durability(Some(fjall::PersistMode::SyncData));
        }
        for (k, v) in self.pending.drain() {
            match v {
                Some(v) => batch.insert(self.store.data(), k, &*v),
                None => batch.remove(self.store.data(), k),
            }
        }
        for (k, add) in self.pending_expiry.drain(..) {
            if add {
                batch.insert(self.store.expiry(), k, []);
            } else {
                batch.remove(self.store.expiry(), k);
            }
        }
        self.counts.write_dirty(&self.store, &mut batch);
        batch.commit()?;
        Ok(())
    }

    fn key_op(
        &mut self,
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        op: KeyOp,
    ) -> Result<KvResponse, KvError> {
        let now = self.clock.now_ms();
        let skey = store::data_key(self.partition, &bucket, hash, &key);
        let stored = match self.cache.get(&skey) {
            Some(o) => Some(o),
            None => {
                let o = self.with_stored(&skey, Object::decode)?;
                if let Some(o) = &o {
                    self.cache.put(&skey, o);
                }
                o
            }
        };
        let before = stored.as_ref().map(|o| o.expire_at);
        let live = stored.filter(|o| !o.is_expired(now));
        let expired = before.is_some() && live.is_none();
        let mut ctx = Ctx {
            now_ms: now,
            rng: &mut self.rng,
        };
        let Applied { write, out } = apply::apply(op, live, &mut ctx);
        let after = match write {
            Write::None if expired => {
                self.cache.remove(&skey);
                self.pending.insert(skey, None);
                None
            }
            Write::None => before,
            Write::Delete => {
                self.cache.remove(&skey);
                self.pending.insert(skey, None);
                None
            }
            Write::Put(obj) => {
                let size = obj.payload_size();
                if size > self.limits.max_value_bytes {
                    let err = KvError::ValueTooLarge {
                        size,
                        max: self.limits.max_value_bytes,
                    };
                    return Ok(KvResponse::Reply(Reply::Error(err)));
                }
                self.cache.put(&skey, &obj);
                self.pending.insert(skey, Some(obj.encode()));
                if let Some(at) = obj.expire_at {
                    if before != Some(Some(at)) {
                        let ek = store::expiry_key(self.partition, at, &bucket, &key);
                        self.pending_expiry.push((ek, true));
                    }
                }
                Some(obj.expire_at)
            }
        };
        if before != after {
            self.account(&bucket, before, after);
        }
        Ok(match out {
            Out::Reply(r) => KvResponse::Reply(r),
            Out::Object(o) => KvResponse::Object(o),
        })
    }

    /// Keep the per-bucket key and expiry counts in step with a change.
    fn account(&mut self, bucket: &Bytes, before: Option<Option<u64>>, after: Option<Option<u64>>) {
        self.counts.account(bucket, before, after);
    }

    fn scan(
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
            if Object::peek_expiry(&v)?.is_some_and(|at| at <= now) {
                continue;
            }
            if kind.is_some_and(|want| Object::peek_kind(&v).ok() != Some(want)) {
                continue;
            }
            if pattern.is_some_and(|p| !glob::matches(p, key)) {
                continue;
            }
            keys.push(Bytes::copy_from_slice(key));
        }
        Ok(KvResponse::Page { keys, next: None })
    }

    fn flush(&mut self, bucket: Option<&Bytes>) -> Result<KvResponse, KvError> {
        self.flush_pending(false)?;
        self.cache.clear();
        let prefix = match bucket {
            Some(b) => store::bucket_prefix(self.partition, b),
            None => self.partition.to_be_bytes().to_vec(),
        };
        // Removals join the batch's pending writes: one atomic write, and
        // fsynced before the reply when the policy says so.
        for item in self.store.data().prefix(&prefix) {
            self.pending.insert(item.key()?.to_vec(), None);
        }
        if bucket.is_none() {
            for item in self.store.expiry().prefix(self.partition.to_be_bytes()) {
                self.pending_expiry.push((item.key()?.to_vec(), false));
            }
        }
        self.counts.clear(bucket);
        Ok(KvResponse::Reply(Reply::Ok))
    }

    fn random_key(&self, bucket: &[u8], from: u64) -> Result<KvResponse, KvError> {
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
            if Object::peek_expiry(&v)?.is_some_and(|at| at <= now) {
                continue;
            }
            if let Some((_, _, key)) = store::split_data_key(&k) {
                return Ok(KvResponse::Key(Some(Bytes::copy_from_slice(key))));
            }
        }
        Ok(KvResponse::Key(None))
    }

    /// Active expiry: remove keys whose time has come, from the index.
    fn expire_due(&mut self) -> Result<(), KvError> {
        let now = self.clock.now_ms();
        let lo = store::expiry_key(self.partition, 0, b"", b"");
        let hi = store::expiry_key(self.partition, now, b"", b"");
        let mut due = Vec::new();
        for item in self.store.expiry().range(lo..hi).take(EXPIRE_PER_TICK) {
            due.push(item.key()?);
        }
        for ek in due {
            let Some((at, bucket, key)) = store::split_expiry_key(&ek) else {
                self.pending_expiry.push((ek.to_vec(), false));
                continue;
            };
            let hash = colony_core::key_hash(bucket, key);
            let skey = store::data_key(self.partition, bucket, hash, key);
            // The index is a hint: only the object's own expiry counts.
            if self.with_stored(&skey, Object::peek_expiry)? == Some(Some(at)) {
                self.cache.remove(&skey);
                self.pending.insert(skey, None);
                let bucket = Bytes::copy_from_slice(bucket);
                self.account(&bucket, Some(Some(at)), None);
                metrics::counter!("colony_kv_expired_keys_total").increment(1);
            }
            self.pending_expiry.push((ek.to_vec(), false));
        }
        self.flush_pending(false)
    }
}

impl Vnode for KvVnode {
    type Request = KvRequest;
    type Reply = KvResponse;

    fn handle(&mut self, request: KvRequest) -> KvResponse {
        if !matches!(request, KvRequest::Key { .. }) {
            // Partition-wide requests read the store itself.
            if let Err(e) = self.flush_pending(false) {
                return KvResponse::Failed(e);
            }
        }
        let result = match request {
            KvRequest::Key {
                bucket,
                key,
                hash,
                op,
            } => self.key_op(bucket, key, hash, op),
            KvRequest::Scan {
                bucket,
                from,
                count,
                pattern,
                kind,
            } => self.scan(&bucket, from, count, pattern.as_deref(), kind),
            KvRequest::Count => Ok(KvResponse::Counts(self.counts.snapshot())),
            KvRequest::Flush { bucket } => self.flush(bucket.as_ref()),
            KvRequest::RandomKey { bucket, from } => self.random_key(&bucket, from),
        };
        result.unwrap_or_else(KvResponse::Failed)
    }

    fn commit(&mut self, replies: &mut [KvResponse]) {
        let sync = self.store.fsync_policy() == FsyncPolicy::Always;
        if let Err(e) = self.flush_pending(sync) {
            tracing::error!(partition = %self.partition, error = %e, "writing the batch failed; failing its requests");
            for r in replies.iter_mut() {
                *r = KvResponse::Failed(e.clone());
            }
        }
    }

    fn tick(&mut self, _now: Instant) {
        if let Err(e) = self.expire_due() {
            tracing::warn!(partition = %self.partition, error = %e, "active expiry failed");
        }
    }
}
