//! How the vnode reaches a key's state: the batch's unsettled writes, the
//! cache, this batch's pending writes, then the store; and how a state
//! taken out goes back.

use super::cache::{self, CachedDoc};
use super::KvVnode;
use crate::crdt::Doc;
use crate::KvError;
use bytes::Bytes;
use std::collections::HashMap;

/// A key's state as [`KvVnode::take_doc`] found it.
pub(super) struct Stored {
    pub(super) doc: Option<Doc>,
    /// The stored entry's hash (None: no entry).
    pub(super) hash: Option<u64>,
    /// The stored entry's length.
    pub(super) len: usize,
    /// The state was written earlier in this batch and not yet encoded
    /// (see [`KvVnode::unsettled`]); `hash` is still the stored entry's.
    pub(super) unsettled: bool,
    /// The stored entry itself, when the cache kept it.
    pub(super) encoded: Option<Bytes>,
}

/// A key's state written in this batch, not yet encoded or staged.
pub(super) struct Unsettled {
    pub(super) doc: Doc,
    /// The hash of the entry the store (and `pending`) hold for the key.
    pub(super) stored_hash: Option<u64>,
}

impl KvVnode {
    /// Apply `f` to the stored bytes under `skey`, this batch's writes
    /// included (no copy of the stored value is made).
    pub(super) fn with_stored<T>(
        &mut self,
        skey: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, KvError>,
    ) -> Result<Option<T>, KvError> {
        if let Some(u) = self.unsettled.remove(skey) {
            self.settle(skey.to_vec(), u);
        }
        if let Some(v) = self.pending.get(skey) {
            return v.as_deref().map(f).transpose();
        }
        self.store_reads += 1;
        self.store.data().get(skey)?.as_deref().map(f).transpose()
    }

    /// The key's state (taken out of the cache, or decoded from the store)
    /// and the hash of its stored entry (None: absent). Whoever takes it
    /// puts it back with [`keep_doc`](Self::keep_doc) if it stays current.
    pub(super) fn take_doc(&mut self, skey: &[u8]) -> Result<Stored, KvError> {
        if let Some(u) = self.unsettled.remove(skey) {
            self.lent = true;
            return Ok(Stored {
                doc: Some(u.doc),
                hash: u.stored_hash,
                len: 0,
                unsettled: true,
                encoded: None,
            });
        }
        if let Some(c) = self.docs.take(skey) {
            return Ok(Stored {
                doc: Some(c.doc),
                hash: Some(c.hash),
                len: c.len,
                unsettled: false,
                encoded: c.encoded,
            });
        }
        self.load_doc(skey)
    }

    /// The key's state decoded from the store (or this batch's pending
    /// writes), for a key known to be in neither the cache nor `unsettled`.
    pub(super) fn load_doc(&mut self, skey: &[u8]) -> Result<Stored, KvError> {
        let found = self.with_stored(skey, |v| {
            let hash = crate::aae::tree::entry_hash(skey, v);
            Ok((Doc::decode(v)?, hash, v.len()))
        })?;
        Ok(match found {
            Some((doc, hash, len)) => Stored {
                doc: Some(doc),
                hash: Some(hash),
                len,
                unsettled: false,
                encoded: None,
            },
            None => Stored {
                doc: None,
                hash: None,
                len: 0,
                unsettled: false,
                encoded: None,
            },
        })
    }

    /// Put back a state [`take_doc`](Self::take_doc) gave out, unchanged.
    pub(super) fn put_back(
        &mut self,
        skey: Vec<u8>,
        doc: Doc,
        stored_hash: Option<u64>,
        len: usize,
        unsettled: bool,
        encoded: Option<Bytes>,
    ) {
        if unsettled {
            self.unsettled.insert(skey, Unsettled { doc, stored_hash });
        } else if let Some(h) = stored_hash {
            self.keep_doc(skey, doc, h, len, encoded);
        }
    }

    /// Encode and stage one unsettled state; it becomes the cached one.
    pub(super) fn settle(&mut self, skey: Vec<u8>, u: Unsettled) {
        let encoded = u.doc.encode();
        let len = encoded.len();
        let hash = self
            .stage_known(skey.clone(), Some(encoded), Some(u.stored_hash))
            .unwrap_or_default();
        // Without its bytes: a single node's cache stays all decoded (it
        // measured faster for hot keys than holding the bytes to move
        // evicted states to the encoded tier).
        self.keep_doc(skey, u.doc, hash, len, None);
    }

    /// Settle every unsettled state into this batch's pending writes.
    pub(super) fn settle_all(&mut self) {
        if self.unsettled.is_empty() {
            return;
        }
        let all = std::mem::replace(
            &mut self.unsettled,
            HashMap::with_hasher(cache::KeyHasher::random()),
        );
        for (skey, u) in all {
            self.settle(skey, u);
        }
    }

    /// Keep `doc` as the key's current state (its stored entry hashes to
    /// `hash`; `encoded`, if given, is that entry), if it is small enough.
    pub(super) fn keep_doc(
        &mut self,
        skey: Vec<u8>,
        doc: Doc,
        hash: u64,
        encoded_len: usize,
        encoded: Option<Bytes>,
    ) {
        self.docs.keep(
            skey,
            CachedDoc {
                doc,
                hash,
                len: encoded_len,
                encoded,
            },
        );
    }
}
