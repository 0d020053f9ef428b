//! The vnode's side of replication: serving a coordinator's reads, merging
//! states other replicas send, and keeping hints for unreachable replicas.

use super::cache::RawDoc;
use super::{KvResponse, KvVnode};
use crate::crdt::{Doc, VersionVector};
use crate::op::CtxPut;
use crate::{store, KeyOp, KvError, Reply};
use bytes::Bytes;
use colony_core::cluster::HandoffItem;
use colony_core::NodeId;

/// Siblings beyond which a key is logged and counted, and beyond which a
/// write is refused (as Riak's sibling limits do).
const WARN_SIBLINGS: usize = 25;
const MAX_SIBLINGS: usize = 100;

impl KvVnode {
    /// The key's stored state, encoded. A state in the cache is answered
    /// from there (a coordinator fetches a hot key from every replica on
    /// each read); one read from the store is kept there.
    pub(super) fn fetch(
        &mut self,
        bucket: &[u8],
        key: &[u8],
        hash: u64,
    ) -> Result<KvResponse, KvError> {
        let skey = store::data_key(self.partition, bucket, hash, key);
        if let Some(u) = self.unsettled.remove(&skey) {
            self.settle(skey.clone(), u);
        }
        if let Some(raw) = self.docs.peek_encoded(&skey) {
            return Ok(KvResponse::Doc(Some(raw)));
        }
        let raw = self.with_stored(&skey, |v| Ok(Bytes::copy_from_slice(v)))?;
        if let Some(raw) = &raw {
            // Kept as bytes: a fetch needs no decoded state, and a write
            // that takes it decodes it then. (A state that does not decode
            // is answered as stored, and the coordinator reports it; kept,
            // it would be dropped by the first take that fails to decode.)
            let entry_hash = crate::aae::tree::entry_hash(&skey, raw);
            self.docs.keep_encoded(
                skey,
                RawDoc {
                    bytes: raw.clone(),
                    hash: entry_hash,
                },
            );
        }
        Ok(KvResponse::Doc(raw))
    }

    /// Merge a state sent by a coordinator into the key's.
    pub(super) fn merge_in(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        hash: u64,
        doc: &[u8],
        hints: &[NodeId],
    ) -> Result<KvResponse, KvError> {
        let theirs = Doc::decode(doc)?;
        let skey = store::data_key(self.partition, bucket, hash, key);
        let changed = self.merge_doc(bucket, key, skey, theirs, hints)?;
        let durable = self.store.fsync_policy() == crate::FsyncPolicy::Always;
        Ok(KvResponse::Merged { changed, durable })
    }

    /// Merge `theirs` into the state of `skey` (the cached one, or the
    /// stored one); returns the merged state if it differs from `theirs`
    /// (this replica knew more).
    pub(super) fn merge_doc(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        skey: Vec<u8>,
        theirs: Doc,
        hints: &[NodeId],
    ) -> Result<Option<Bytes>, KvError> {
        self.hlc.observe(theirs.max_stamp());
        let super::Stored {
            doc: mine,
            hash: old_hash,
            len: old_len,
            unsettled,
            encoded: old_encoded,
        } = self.take_doc(&skey)?;
        let before = mine.as_ref().and_then(Self::presence);
        let (merged, knew_more) = match mine {
            None => (theirs, false),
            Some(mut m) => {
                let unchanged = m.clone();
                m.merge(&theirs);
                let knew_more = m != theirs;
                if m == unchanged && hints.is_empty() {
                    // Nothing new here: no write at all.
                    let out = knew_more.then(|| old_encoded.clone().unwrap_or_else(|| m.encode()));
                    self.put_back(skey, m, old_hash, old_len, unsettled, old_encoded);
                    return Ok(out);
                }
                (m, knew_more)
            }
        };
        let (encoded, new_hash) = self.put_doc(
            bucket,
            key,
            skey.clone(),
            before,
            &merged,
            hints,
            Some(old_hash),
        );
        self.keep_doc(skey, merged, new_hash, encoded.len(), Some(encoded.clone()));
        Ok(knew_more.then_some(encoded))
    }

    /// A write with a client's causal context (HTTP): merge the state the
    /// coordinator read, then replace or delete only what the context
    /// covers, so a write from a stale read leaves siblings.
    pub(super) fn lead_ctx(
        &mut self,
        bucket: &Bytes,
        key: &[u8],
        hash: u64,
        op: KeyOp,
        hints: &[NodeId],
        want_doc: bool,
    ) -> Result<(KvResponse, Option<Bytes>), KvError> {
        let (ctx, prior) = match &op {
            KeyOp::PutCtx(p) => (&p.ctx, &p.prior),
            KeyOp::DelCtx(d) => (&d.ctx, &d.prior),
            _ => return Err(KvError::Storage("not a context write".into())),
        };
        let ctx = ctx
            .as_deref()
            .map(VersionVector::decode)
            .transpose()
            .map_err(|e| KvError::BadContext(e.to_string()))?;
        let skey = store::data_key(self.partition, bucket, hash, key);
        let stored = self.with_stored(&skey, Doc::decode)?;
        let before = stored.as_ref().and_then(Self::presence);
        let mut doc = stored.unwrap_or_default();
        if let Some(p) = prior {
            let p = Doc::decode(p)?;
            self.hlc.observe(p.max_stamp());
            doc.merge(&p);
        }
        let stamp = self.hlc.now(self.clock.now_ms());
        match op {
            KeyOp::PutCtx(p) => {
                let CtxPut {
                    value,
                    content_type,
                    ..
                } = *p;
                if value.len() > self.limits.max_value_bytes {
                    let err = KvError::ValueTooLarge {
                        size: value.len(),
                        max: self.limits.max_value_bytes,
                    };
                    return Ok((KvResponse::Reply(Reply::Error(err)), None));
                }
                doc.put_with_context(value, content_type, ctx.as_ref(), self.actor, stamp);
                let count = doc.sibling_count();
                if count > MAX_SIBLINGS {
                    metrics::counter!("colony_kv_siblings_refused_total").increment(1);
                    let err = KvError::TooManySiblings {
                        count,
                        max: MAX_SIBLINGS,
                    };
                    return Ok((KvResponse::Reply(Reply::Error(err)), None));
                }
                if count > WARN_SIBLINGS {
                    metrics::counter!("colony_kv_sibling_warnings_total").increment(1);
                    tracing::warn!(partition = %self.partition, siblings = count,
                        "a key has many concurrent values; clients should resolve them");
                }
            }
            _ => doc.delete_with_context(ctx.as_ref(), stamp),
        }
        let (encoded, _) = self.put_doc(bucket, key, skey, before, &doc, hints, None);
        Ok((KvResponse::Reply(Reply::Ok), want_doc.then_some(encoded)))
    }

    /// Remove a tombstone every replica holds (see `coordinator::write`).
    pub(super) fn reap(
        &mut self,
        bucket: &[u8],
        key: &[u8],
        hash: u64,
        doc: &[u8],
    ) -> Result<KvResponse, KvError> {
        self.reap_one(bucket, key, hash, doc)?;
        Ok(KvResponse::Reply(Reply::Ok))
    }

    /// Remove the key if it is still exactly the tombstone `doc` and no
    /// hint for it is kept here; whether it was removed.
    pub(super) fn reap_one(
        &mut self,
        bucket: &[u8],
        key: &[u8],
        hash: u64,
        doc: &[u8],
    ) -> Result<bool, KvError> {
        let skey = store::data_key(self.partition, bucket, hash, key);
        let same = self.with_stored(&skey, |v| Ok(v == doc))?.unwrap_or(false);
        if !same || Doc::peek_kind(doc)?.is_some() {
            return Ok(false);
        }
        let hinted = self
            .store
            .hints()
            .prefix(self.partition.to_be_bytes())
            .filter_map(|h| h.key().ok())
            .any(|h| store::split_hint_key(&h).is_some_and(|(_, k)| k == skey));
        if hinted {
            return Ok(false);
        }
        self.note_dirty(&skey);
        self.stage(skey, None);
        metrics::counter!("colony_kv_tombstones_reaped_total").increment(1);
        Ok(true)
    }

    /// Up to `max` hints kept for `node`, with the keys' current states.
    pub(super) fn hints_for(&mut self, node: &NodeId, max: usize) -> Result<KvResponse, KvError> {
        let prefix = store::hint_prefix(self.partition, node.as_str());
        let mut items = Vec::new();
        for item in self.store.hints().prefix(&prefix).take(max) {
            let k = item.key()?;
            let Some((_, skey)) = store::split_hint_key(&k) else {
                continue;
            };
            let value = self.with_stored(&skey, |v| Ok(Bytes::copy_from_slice(v)))?;
            items.push(HandoffItem {
                key: Bytes::from(skey),
                value,
            });
        }
        Ok(KvResponse::Items { items, next: None })
    }

    /// Forget hints `node` has received, unless the key changed since the
    /// state that was delivered (a newer write must be handed back too).
    pub(super) fn hints_delivered(
        &mut self,
        node: &NodeId,
        items: Vec<HandoffItem>,
    ) -> Result<KvResponse, KvError> {
        for item in items {
            let now = self.with_stored(&item.key, |v| Ok(Bytes::copy_from_slice(v)))?;
            if now == item.value {
                self.pending_hints
                    .push((store::hint_key(node.as_str(), &item.key), false));
            }
        }
        Ok(KvResponse::Reply(crate::Reply::Ok))
    }

    /// Whether any hint for this partition is kept here.
    pub fn has_hints(store: &store::Store, partition: colony_core::PartitionId) -> bool {
        store
            .hints()
            .prefix(partition.to_be_bytes())
            .next()
            .is_some()
    }
}
