//! The KV vnode: the state of one partition, applying operations atomically.

use crate::apply::{self, Applied, Ctx, Out, Write};
pub use crate::counts::BucketCount;
use crate::counts::Counts;
use crate::crdt::{Actor, Change, Doc, Hlc, OpHint};
use crate::store::{self, FsyncPolicy, Store};
use crate::{Clock, KeyOp, KvError, Reply};
use bytes::Bytes;
use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

mod aae;
mod cache;
mod handoff;
mod msg;
mod partition;
mod replica;
mod state;

use aae::AaeState;
pub use aae::{AaeSettings, Damage, TreeInfo};
use cache::DocCache;
pub use handoff::holds_other_than;
pub use msg::{KvRequest, KvResponse};
use state::{Stored, Unsettled};

/// Most expired keys removed by one tick of active expiry.
const EXPIRE_PER_TICK: usize = 2000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_value_bytes: usize,
    /// The byte budget of this vnode's cache of decoded key states.
    pub doc_cache_bytes: usize,
}

pub struct KvVnode {
    partition: PartitionId,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// The clock as this batch read it: one read per batch, not per
    /// request (its requests arrived together). Forgotten at each commit.
    batch_now: Option<u64>,
    limits: Limits,
    rng: SmallRng,
    counts: Counts,
    /// Writes of the batch being handled, by storage key (None deletes).
    /// Reads look here first; `commit` writes them as one atomic batch, so
    /// a batch of requests costs one journal write (and one fsync).
    pending: HashMap<Vec<u8>, Option<Bytes>, cache::KeyHasher>,
    /// Keys written in this batch on the single-replica path, whose new
    /// state is not encoded yet: a hot key written many times in a batch
    /// (INCR on one counter from fifty clients) is encoded and staged once,
    /// when the batch is flushed, not once per write. A key is in at most
    /// one of this and `docs`. Empty between batches: [`Self::with_stored`]
    /// and [`Self::flush_pending`] settle it first, so nothing that reads
    /// `pending` or the store sees an older state.
    unsettled: HashMap<Vec<u8>, Unsettled, cache::KeyHasher>,
    /// A request took a state out of `unsettled` and has not finished. If
    /// it panicked, that state (earlier requests' writes) is lost, so the
    /// batch must not be committed: [`Self::flush_pending`] refuses it.
    lent: bool,
    /// Expiry index entries to add (true) or remove (false) with the batch.
    pending_expiry: Vec<(Vec<u8>, bool)>,
    /// Hint index entries to add (true) or remove (false) with the batch.
    pending_hints: Vec<(Vec<u8>, bool)>,
    /// Who this vnode is in causal contexts: fresh at every start and after
    /// the partition's data is dropped, so no dot is ever issued twice.
    actor: Actor,
    hlc: Hlc,
    /// While handing the partition off: storage keys written since the
    /// transfer began (or since they were last sent).
    dirty: Option<HashSet<Vec<u8>>>,
    /// The last round of a handoff is under way: writes must wait.
    sealed: bool,
    /// Handed off to this node: requests go there.
    moved: Option<NodeId>,
    /// A drop of the partition is under way (where it got to), and nothing
    /// since said this node holds it for good: no write, hint, import or
    /// `HandoffServe`.
    dropping: Option<handoff::DropCursor>,
    /// The partition's anti-entropy tree.
    aae: AaeState,
    /// The buckets this node keeps whole (`n_val=all`): their keys are
    /// served and kept whatever happened to the rest of the partition.
    shared: Arc<crate::shared::SharedBuckets>,
    /// Decoded states of recently written or read keys, always equal to
    /// what [`with_stored`](Self::with_stored) would decode: `stage` drops
    /// a key's entry, and only the code that staged the state puts it back.
    /// A hot key then costs neither a store lookup nor a decode.
    docs: DocCache,
    /// Key states read from the store since the last tick (the cache and
    /// this batch did not hold them), published then as
    /// `colony_kv_store_reads_total`: with the request counts, the state
    /// cache's miss rate.
    store_reads: u64,
}

impl KvVnode {
    /// Open the partition: count its keys (this also reads every object's
    /// header, so a corrupt store fails here, at start-up).
    pub fn open(
        partition: PartitionId,
        node: &NodeId,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<Self, KvError> {
        let seed = rand::rng().random::<u64>();
        Self::open_seeded(partition, node, store, clock, limits, seed)
    }

    /// [`open`](Self::open) with the randomness (the actor, random
    /// choices of commands) drawn from `seed`: a simulation replays.
    pub fn open_seeded(
        partition: PartitionId,
        node: &NodeId,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        seed: u64,
    ) -> Result<Self, KvError> {
        let counts = Counts::load(&store, partition)?;
        let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(partition.0) ^ clock.now_ms());
        let actor = Actor(rng.random());
        let hlc = Hlc::new(colony_core::key_hash(b"node", node.as_str().as_bytes()));
        Ok(Self {
            actor,
            hlc,
            pending_hints: Vec::new(),
            partition,
            store,
            clock,
            batch_now: None,
            limits,
            rng,
            counts,
            pending: HashMap::with_hasher(cache::KeyHasher::random()),
            unsettled: HashMap::with_hasher(cache::KeyHasher::random()),
            lent: false,
            pending_expiry: Vec::new(),
            dirty: None,
            sealed: false,
            moved: None,
            dropping: None,
            aae: AaeState::default(),
            shared: crate::shared::SharedBuckets::new(),
            docs: DocCache::new(limits.doc_cache_bytes),
            store_reads: 0,
        })
    }

    /// The node's view of the buckets it keeps whole (none by default).
    pub fn with_shared(mut self, shared: Arc<crate::shared::SharedBuckets>) -> Self {
        self.shared = shared;
        self
    }

    /// Anti-entropy settings (rebuild schedule, node-wide budget).
    pub fn with_aae(mut self, settings: AaeSettings) -> Self {
        self.aae.settings = settings;
        self
    }

    /// Write this batch's changes to the store as one atomic batch; with
    /// `sync`, fsync it before returning.
    fn flush_pending(&mut self, sync: bool) -> Result<(), KvError> {
        if self.lent {
            // A request panicked holding a key's state that earlier
            // requests of the batch wrote: writing the rest would store
            // the batch without them, and answer them as done.
            return Err(KvError::Storage(
                "a request crashed the vnode mid-batch; the batch was not written".into(),
            ));
        }
        self.settle_all();
        if self.pending.is_empty()
            && self.pending_expiry.is_empty()
            && self.pending_hints.is_empty()
            && !self.counts.is_dirty()
        {
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
        for (k, add) in self.pending_hints.drain(..) {
            if add {
                batch.insert(self.store.hints(), k, []);
            } else {
                batch.remove(self.store.hints(), k);
            }
        }
        self.counts.write_dirty(&self.store, &mut batch);
        if let Err(e) = batch.commit() {
            // What was staged never reached the store: no cached state may
            // say it did.
            self.docs.clear();
            return Err(e.into());
        }
        if !sync {
            self.store.group_flush().committed();
        }
        Ok(())
    }

    fn key_op(
        &mut self,
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        op: KeyOp,
    ) -> Result<KvResponse, KvError> {
        let (out, _) = self.lead(&bucket, &key, hash, op, &[], false)?;
        Ok(out)
    }

    /// Apply `op` to the key's state: the plain view goes through `apply`,
    /// and what it wrote becomes CRDT mutations under this vnode's actor.
    /// Returns the answer and, with `want_doc`, the new state if it changed.
    fn lead(
        &mut self,
        bucket: &Bytes,
        key: &Bytes,
        hash: u64,
        op: KeyOp,
        hints: &[NodeId],
        want_doc: bool,
    ) -> Result<(KvResponse, Option<Bytes>), KvError> {
        match op {
            KeyOp::FetchDoc => return Ok((self.fetch(bucket, key, hash)?, None)),
            KeyOp::PutCtx(_) | KeyOp::DelCtx(_) => {
                return self.lead_ctx(bucket, key, hash, op, hints, want_doc)
            }
            _ => {}
        }
        let now = *self.batch_now.get_or_insert_with(|| self.clock.now_ms());
        let skey = store::data_key(self.partition, bucket, hash, key);
        // Whether the state may be in memory (the cache or `unsettled`).
        let mut in_memory = true;
        if read_only(&op) {
            // A read of a state in memory looks at it in place: no take and
            // put back. One member or field is read without building the
            // whole plain object.
            let doc = self.doc_in_memory(&skey);
            if let Some(reply) = doc.and_then(|d| d.read_in_place(&op, now)) {
                return Ok((KvResponse::Reply(reply), None));
            }
            let found = doc.map(Doc::view);
            in_memory = found.is_some();
            // A key found expired is deleted by the read: the path below.
            if let Some(view) = found.filter(|v| !v.as_ref().is_some_and(|o| o.is_expired(now))) {
                let mut ctx = Ctx {
                    now_ms: now,
                    rng: &mut self.rng,
                };
                let Applied { write, out } = apply::apply(op, view, &mut ctx);
                if !matches!(write, Write::None) {
                    return Err(KvError::Storage(
                        "internal: a read-only command tried to write".into(),
                    ));
                }
                return Ok((response(out), None));
            }
        } else if !want_doc && Doc::may_leave_unchanged(&op) {
            // A write its sole replica can tell changes nothing, from the
            // state in place, is answered without taking the state out (an
            // SADD of a member already there). A SET's value over the limit
            // goes the general way, which refuses it. (An SADD or HSET that
            // changes nothing is answered even on a collection over a limit
            // lowered since it was stored: it grows nothing.)
            let small = match &op {
                KeyOp::Set { value, .. } => value.len() <= self.limits.max_value_bytes,
                _ => true,
            };
            let doc = self.doc_in_memory(&skey).filter(|_| small);
            if let Some(reply) = doc.and_then(|d| d.unchanged_by(&op, now)) {
                return Ok((KvResponse::Reply(reply), None));
            }
        }
        let Stored {
            doc: mut stored,
            hash: old_hash,
            len: old_len,
            unsettled,
            encoded: old_encoded,
        } = if in_memory {
            self.take_doc(&skey)?
        } else {
            self.load_doc(&skey)?
        };
        let before = stored.as_ref().and_then(Self::presence);
        if let (KeyOp::IncrBy(by), false, true) = (&op, want_doc, hints.is_empty()) {
            // A counter on a string holding an integer is incremented in
            // place: no plain view, no apply, no diff. (An overflow is
            // refused by the general path.)
            let base = stored.as_ref().and_then(|d| d.incr_base(now));
            if let Some(value) = base.and_then(|n| n.checked_add(*by)) {
                let mut doc = stored.take().unwrap_or_default();
                let stamp = self.hlc.now(now);
                doc.incr_to(value, *by, self.actor, stamp);
                self.hold_unsettled(bucket, key, skey, before, doc, old_hash);
                return Ok((KvResponse::Reply(Reply::Int(value)), None));
            }
        }
        let view = stored.as_ref().and_then(Doc::view);
        let expired = view.as_ref().is_some_and(|o| o.is_expired(now));
        let live = view.filter(|o| !o.is_expired(now));
        let hint = OpHint::of(&op, want_doc);
        let mut ctx = Ctx {
            now_ms: now,
            rng: &mut self.rng,
        };
        let Applied { write, out } = apply::apply(op, live.clone(), &mut ctx);
        let out = response(out);
        // The limit is on the value a client sees, not on its causal
        // bookkeeping.
        let too_large = match &write {
            Write::Put(obj) if obj.payload_size() > self.limits.max_value_bytes => {
                Some(KvError::ValueTooLarge {
                    size: obj.payload_size(),
                    max: self.limits.max_value_bytes,
                })
            }
            _ => None,
        };
        if (matches!(write, Write::None) && !expired) || too_large.is_some() {
            // Nothing staged: the state read is still the current one.
            if let Some(doc) = stored {
                self.put_back(skey, doc, old_hash, old_len, unsettled, old_encoded);
            }
            return Ok(match too_large {
                Some(err) => (KvResponse::Reply(Reply::Error(err)), None),
                None => (out, None),
            });
        }
        let existed = stored.is_some();
        let mut doc = stored.unwrap_or_default();
        let stamp = self.hlc.now(now);
        if expired {
            // The key is gone: its old state must not show through what
            // the write adds (a set's old members, say).
            doc.delete(stamp);
        }
        let change = match &write {
            Write::None | Write::Delete => Change::Delete,
            Write::Put(o) => Change::Put(o),
        };
        let changed = if matches!(write, Write::None) && expired {
            true
        } else {
            doc.update(live.as_ref(), change, hint, self.actor, stamp) | expired
        };
        if !changed && !want_doc {
            // A write that changes nothing (SADD of a member already
            // there): nothing to store. (A replicated write still hands
            // its state on: this replica may be the only one holding it,
            // and the write's quorum must.)
            if existed {
                self.put_back(skey, doc, old_hash, old_len, unsettled, old_encoded);
            }
            return Ok((out, None));
        }
        if !want_doc && !doc.is_present() && self.dirty.is_none() {
            // This vnode holds the key's only copy (a request on the
            // single-replica path): no other replica can bring an older
            // value back, so a delete needs no tombstone. (While the range
            // is being handed off it keeps one: the receiver must learn of
            // the delete by merging it.)
            self.note_dirty(&skey);
            self.stage_known(skey, None, Some(old_hash));
            if before.is_some() {
                self.account(bucket, before, None);
            }
            return Ok((out, None));
        }
        if !want_doc && hints.is_empty() {
            // Nobody needs the encoded state now: encode it once, when
            // the batch is flushed.
            self.hold_unsettled(bucket, key, skey, before, doc, old_hash);
            return Ok((out, None));
        }
        let (encoded, new_hash) = self.put_doc(
            bucket,
            key,
            skey.clone(),
            before,
            &doc,
            hints,
            Some(old_hash),
        );
        self.keep_doc(skey, doc, new_hash, encoded.len(), Some(encoded.clone()));
        Ok((out, want_doc.then_some(encoded)))
    }

    /// The key's state if it is in memory (written in this batch, or
    /// cached), to look at in place; a cached one is marked as read.
    fn doc_in_memory(&mut self, skey: &[u8]) -> Option<&Doc> {
        match self.unsettled.get(skey) {
            Some(u) => Some(&u.doc),
            None => self.docs.peek(skey).map(|c| &c.doc),
        }
    }

    /// Keep `doc`, the key's new state, in `unsettled` until the batch is
    /// committed (encoded then, once however often it was written), and
    /// note what the write changes besides (counts, expiry, dirty keys).
    fn hold_unsettled(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        skey: Vec<u8>,
        before: Option<Option<u64>>,
        doc: Doc,
        stored_hash: Option<u64>,
    ) {
        self.note_write(bucket, key, &skey, before, &doc, &[]);
        self.unsettled.insert(skey, Unsettled { doc, stored_hash });
    }

    /// Whether a stored state is a live key, and its expiry: what the
    /// per-bucket counts track.
    fn presence(doc: &Doc) -> Option<Option<u64>> {
        doc.is_present().then(|| doc.expire_at())
    }

    /// Stage `doc` as the key's state (and hints for it) in this batch;
    /// `old` is the stored entry's hash when the caller knows it. Returns
    /// the encoded state and its entry hash.
    #[allow(clippy::too_many_arguments)]
    fn put_doc(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        skey: Vec<u8>,
        before: Option<Option<u64>>,
        doc: &Doc,
        hints: &[NodeId],
        old: Option<Option<u64>>,
    ) -> (Bytes, u64) {
        let encoded = doc.encode();
        self.note_write(bucket, key, &skey, before, doc, hints);
        let hash = self
            .stage_known(skey, Some(encoded.clone()), old)
            .unwrap_or_default();
        (encoded, hash)
    }

    /// What a write of `doc` as the key's state brings besides the state
    /// itself: an expiry index entry, hints, the handoff's dirty set, the
    /// per-bucket counts.
    fn note_write(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        skey: &[u8],
        before: Option<Option<u64>>,
        doc: &Doc,
        hints: &[NodeId],
    ) {
        let after = Self::presence(doc);
        if let Some(Some(at)) = after {
            if before != after {
                let ek = store::expiry_key(self.partition, at, bucket, key);
                self.pending_expiry.push((ek, true));
            }
        }
        for h in hints {
            self.pending_hints
                .push((store::hint_key(h.as_str(), skey), true));
        }
        self.note_dirty(skey);
        if before != after {
            self.account(bucket, before, after);
        }
    }

    /// Keep the per-bucket key and expiry counts in step with a change.
    fn account(&mut self, bucket: &Bytes, before: Option<Option<u64>>, after: Option<Option<u64>>) {
        self.counts.account(bucket, before, after);
    }

    fn note_dirty(&mut self, skey: &[u8]) {
        if let Some(d) = &mut self.dirty {
            d.insert(skey.to_vec());
        }
    }
}

fn response(out: Out) -> KvResponse {
    match out {
        Out::Reply(r) => KvResponse::Reply(r),
        Out::Object(o) => KvResponse::Object(o),
    }
}

/// Whether `op` only reads a live key (a key found expired is deleted,
/// whatever the op).
fn read_only(op: &KeyOp) -> bool {
    use KeyOp::*;
    matches!(
        op,
        Exists
            | Type
            | Ttl { .. }
            | Fetch
            | Get
            | StrLen
            | GetRange { .. }
            | HGet(_)
            | HMGet(_)
            | HGetAll
            | HKeys
            | HVals
            | HLen
            | HExists(_)
            | HStrLen(_)
            | HRandField { .. }
            | HScan { .. }
            | SMembers
            | SIsMember(_)
            | SMIsMember(_)
            | SCard
            | SRandMember(_)
            | SScan { .. }
    )
}

/// How an operation changes a counter, if it is an increment: those merge
/// by summing per-replica deltas instead of last-writer-wins.
impl Vnode for KvVnode {
    type Request = KvRequest;
    type Reply = KvResponse;

    fn handle(&mut self, request: KvRequest) -> KvResponse {
        if let Some(refused) = self.admit(&request) {
            return refused;
        }
        if !matches!(
            request,
            KvRequest::Key { .. }
                | KvRequest::Lead { .. }
                | KvRequest::Fetch { .. }
                | KvRequest::Merge { .. }
        ) {
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
            KvRequest::Lead {
                bucket,
                key,
                hash,
                op,
                hints,
            } => self
                .lead(&bucket, &key, hash, op, &hints, true)
                .map(|(out, doc)| KvResponse::Led {
                    out: Box::new(out),
                    doc,
                    durable: self.store.fsync_policy() == FsyncPolicy::Always,
                }),
            KvRequest::Fetch { bucket, key, hash } => self.fetch(&bucket, &key, hash),
            KvRequest::Merge {
                bucket,
                key,
                hash,
                doc,
                hints,
            } => self.merge_in(&bucket, &key, hash, &doc, &hints),
            KvRequest::Reap {
                bucket,
                key,
                hash,
                doc,
            } => self.reap(&bucket, &key, hash, &doc),
            KvRequest::Hints { node, max } => self.hints_for(&node, max),
            KvRequest::HintsDelivered { node, items } => self.hints_delivered(&node, items),
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
                self.dropping = None;
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
            KvRequest::HandoffServe => {
                self.moved = None;
                self.dropping = None;
                Ok(KvResponse::Reply(Reply::Ok))
            }
            KvRequest::HandoffReset => {
                self.moved = None;
                self.dropping = None;
                self.sealed = false;
                self.dirty = None;
                self.flush(None)
            }
            KvRequest::HandoffImport { items } => self.handoff_import(items),
            KvRequest::HandoffDrop { start, keep } => self.handoff_drop(start, keep),
            KvRequest::HandoffReadBuckets {
                buckets,
                after,
                max_bytes,
            } => self.handoff_read_buckets(&buckets, after, max_bytes),
            KvRequest::AaeInfo => Ok(self.aae_info()),
            KvRequest::AaeBranches => Ok(self.aae_branches()),
            KvRequest::AaeSegments { branches } => Ok(self.aae_segments(&branches)),
            KvRequest::AaeKeys { segments } => self.aae_keys(&segments),
            KvRequest::AaeFetch { keys } => self.aae_fetch(keys),
            KvRequest::AaeSync { items } => self.aae_sync(items),
            KvRequest::AaeTombstones { before_ms, max } => self.aae_tombstones(before_ms, max),
            KvRequest::AaeHolds { items } => self.aae_holds(&items),
            KvRequest::AaeReap { items } => self.aae_reap(items),
            KvRequest::AaeRebuild { wait } => self.aae_rebuild(wait),
            KvRequest::DebugDamage { key, how } => self.debug_damage(key.to_vec(), how),
        };
        // Returned normally: whatever it took out of `unsettled` is back,
        // staged, or deleted on purpose.
        self.lent = false;
        result.unwrap_or_else(KvResponse::Failed)
    }

    fn commit(&mut self, replies: &mut [KvResponse]) {
        self.batch_now = None;
        let sync = self.store.fsync_policy() == FsyncPolicy::Always;
        if let Err(e) = self.flush_pending(sync) {
            tracing::error!(partition = %self.partition, error = %e, "writing the batch failed; failing its requests");
            for r in replies.iter_mut() {
                *r = KvResponse::Failed(e.clone());
            }
        }
    }

    /// Inline requests are committed one at a time: with an fsync per
    /// commit, the mailbox's group commit is worth the wake-ups.
    fn inline(&self) -> bool {
        self.store.fsync_policy() != FsyncPolicy::Always
    }

    /// Replies wait until every commit made so far (theirs, and any other
    /// a read may have seen) is handed to the OS, by one shared flush.
    fn barrier(&mut self) -> Option<colony_core::vnode::Barrier> {
        if self.store.fsync_policy() == FsyncPolicy::Always {
            return None;
        }
        self.store.group_flush().barrier()
    }

    fn tick(&mut self, _now: Instant) {
        if self.store_reads > 0 {
            metrics::counter!("colony_kv_store_reads_total")
                .increment(std::mem::take(&mut self.store_reads));
        }
        if let Err(e) = self.expire_due() {
            tracing::warn!(partition = %self.partition, error = %e, "active expiry failed");
        }
        if let Err(e) = self.aae_tick(self.clock.now_ms()) {
            tracing::warn!(partition = %self.partition, error = %e, "anti-entropy tree build failed; will retry");
            self.aae_abandon_build();
        }
    }
}

#[cfg(test)]
mod tests;
