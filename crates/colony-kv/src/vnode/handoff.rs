//! The vnode's side of ownership handoff: reading the partition out in
//! chunks, tracking keys written meanwhile, and merging received entries.

use super::KvResponse;
use super::KvVnode;
use crate::crdt::Doc;
use crate::{store, KvError};
use bytes::Bytes;
use colony_core::cluster::HandoffItem;
use std::ops::Bound;

impl KvVnode {
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
            self.merge_doc(&bucket, &key, item.key.to_vec(), theirs, &[])?;
        }
        Ok(KvResponse::Reply(crate::Reply::Ok))
    }
}
