//! The KV vnode: the state of one partition, applying operations atomically.

use crate::apply::{self, Applied, Ctx, Out, Write};
use crate::cache::ObjectCache;
pub use crate::counts::BucketCount;
use crate::counts::Counts;
use crate::store::{self, FsyncPolicy, Store};
use crate::{glob, Clock, KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::cluster::HandoffItem;
use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

/// Decoded objects a vnode keeps in memory (see `cache`), and the largest
/// object it will keep: 64 vnodes hold at most 64 MiB of cached values.
const CACHE_ENTRIES: usize = 256;
const CACHE_OBJECT_BYTES: usize = 4096;

/// Most expired keys removed by one tick of active expiry.
const EXPIRE_PER_TICK: usize = 2000;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Keys and stored bytes of the whole partition.
    Size,
    /// Handoff, sending side: record written keys from now on.
    HandoffBegin,
    /// Stored entries after `after`, about `max_bytes` of them.
    HandoffRead {
        after: Option<Bytes>,
        max_bytes: usize,
    },
    /// The recorded keys' current state; with `seal`, refuse writes.
    HandoffDirty {
        seal: bool,
    },
    /// Record these storage keys as written again (sending them failed).
    HandoffRedirty {
        keys: Vec<Bytes>,
    },
    HandoffUnseal,
    HandoffCancel,
    /// The partition belongs to `to` now: refuse everything.
    HandoffMoved {
        to: NodeId,
    },
    /// Receiving side: drop everything and any handoff state.
    HandoffReset,
    HandoffImport {
        items: Vec<HandoffItem>,
    },
}

impl KvRequest {
    /// Whether a client sent it (handoff requests come from core).
    fn is_client(&self) -> bool {
        matches!(
            self,
            Self::Key { .. }
                | Self::Scan { .. }
                | Self::Count
                | Self::Flush { .. }
                | Self::RandomKey { .. }
                | Self::Size
        )
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
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
    Size {
        keys: u64,
        bytes: u64,
    },
    Items {
        items: Vec<HandoffItem>,
        next: Option<Bytes>,
    },
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
    /// While handing the partition off: storage keys written since the
    /// transfer began (or since they were last sent).
    dirty: Option<HashSet<Vec<u8>>>,
    /// The last round of a handoff is under way: writes must wait.
    sealed: bool,
    /// Handed off to this node: requests go there.
    moved: Option<NodeId>,
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
            dirty: None,
            sealed: false,
            moved: None,
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
                self.note_dirty(&skey);
                self.pending.insert(skey, None);
                None
            }
            Write::None => before,
            Write::Delete => {
                self.cache.remove(&skey);
                self.note_dirty(&skey);
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
                self.note_dirty(&skey);
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
            let k = item.key()?.to_vec();
            self.note_dirty(&k);
            self.pending.insert(k, None);
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

    fn note_dirty(&mut self, skey: &[u8]) {
        if let Some(d) = &mut self.dirty {
            d.insert(skey.to_vec());
        }
    }

    /// Stored entries after `after`, about `max_bytes` of them.
    fn handoff_read(&self, after: Option<Bytes>, max_bytes: usize) -> Result<KvResponse, KvError> {
        let prefix = self.partition.to_be_bytes();
        let lower = match &after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut items = Vec::new();
        let mut size = 0;
        for item in self
            .store
            .data()
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
        {
            let (k, v) = item.into_inner()?;
            if !k.starts_with(&prefix) {
                return Ok(KvResponse::Items { items, next: None });
            }
            if size >= max_bytes {
                let next = items.last().map(|i: &HandoffItem| i.key.clone());
                return Ok(KvResponse::Items { items, next });
            }
            size += k.len() + v.len();
            items.push(HandoffItem {
                key: Bytes::copy_from_slice(&k),
                value: Some(Bytes::copy_from_slice(&v)),
            });
        }
        Ok(KvResponse::Items { items, next: None })
    }

    fn handoff_dirty(&mut self, seal: bool) -> Result<KvResponse, KvError> {
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

    /// Store entries handed over by the previous owner.
    fn handoff_import(&mut self, items: Vec<HandoffItem>) -> Result<KvResponse, KvError> {
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
            let bucket = Bytes::copy_from_slice(bucket);
            let key = key.to_vec();
            let skey = item.key.to_vec();
            let before = self.with_stored(&skey, Object::peek_expiry)?;
            self.cache.remove(&skey);
            let after = match item.value {
                Some(v) => {
                    let obj = Object::decode(&v)?;
                    if let Some(at) = obj.expire_at {
                        let ek = store::expiry_key(self.partition, at, &bucket, &key);
                        self.pending_expiry.push((ek, true));
                    }
                    self.pending.insert(skey, Some(v));
                    Some(obj.expire_at)
                }
                None => {
                    self.pending.insert(skey, None);
                    None
                }
            };
            if before != after {
                self.account(&bucket, before, after);
            }
        }
        Ok(KvResponse::Reply(Reply::Ok))
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
                self.note_dirty(&skey);
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
        if request.is_client() {
            if let Some(to) = &self.moved {
                return KvResponse::Failed(KvError::NotOwner(to.to_string()));
            }
            let writes = match &request {
                KvRequest::Key { op, .. } => !op.is_read_only(),
                KvRequest::Flush { .. } => true,
                _ => false,
            };
            if self.sealed && writes {
                return KvResponse::Failed(KvError::TryAgain(format!(
                    "partition {} is moving to another node",
                    self.partition
                )));
            }
        }
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
            KvRequest::Size => {
                let mut keys = 0u64;
                let mut bytes = 0u64;
                let mut failed = None;
                for item in self.store.data().prefix(self.partition.to_be_bytes()) {
                    match item.into_inner() {
                        Ok((k, v)) => {
                            keys += 1;
                            bytes += (k.len() + v.len()) as u64;
                        }
                        Err(e) => {
                            failed = Some(KvError::from(e));
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(KvResponse::Size { keys, bytes }),
                }
            }
            KvRequest::HandoffBegin => {
                self.dirty.get_or_insert_with(HashSet::new);
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffRead { after, max_bytes } => self.handoff_read(after, max_bytes),
            KvRequest::HandoffDirty { seal } => self.handoff_dirty(seal),
            KvRequest::HandoffRedirty { keys } => {
                let d = self.dirty.get_or_insert_with(HashSet::new);
                d.extend(keys.into_iter().map(|k| k.to_vec()));
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffUnseal => {
                self.sealed = false;
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffCancel => {
                self.sealed = false;
                self.dirty = None;
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffMoved { to } => {
                self.moved = Some(to);
                self.sealed = false;
                self.dirty = None;
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffReset => {
                self.moved = None;
                self.sealed = false;
                self.dirty = None;
                self.flush(None)
            }
            KvRequest::HandoffImport { items } => self.handoff_import(items),
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
