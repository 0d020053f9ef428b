//! Ring metadata: cluster-wide settings that travel with the ring document.
//!
//! A map of last-writer-wins registers, stamped by the ring's Lamport clock,
//! so a setting changed on any node reaches every node by the same gossip and
//! merge as the ring itself. Keys and values are opaque bytes to core: a
//! service gives them meaning (colony-kv keeps bucket properties under
//! `bucket/…`). Settings are never deleted; a service writes its own
//! "unset" value when it needs one.

use super::{Member, NodeId, PartEntry, Ring};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// One setting: a last-writer-wins register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MetaEntry {
    pub value: Vec<u8>,
    pub stamp: u64,
}

impl MetaEntry {
    /// The merge order: the newer stamp, then the larger value, so two
    /// writes that share a stamp still merge the same way everywhere.
    fn wins_over(&self, other: &MetaEntry) -> bool {
        (self.stamp, &self.value) > (other.stamp, &other.value)
    }
}

/// Fold `theirs` into `ours`, register by register.
pub(super) fn merge(ours: &mut BTreeMap<String, MetaEntry>, theirs: &BTreeMap<String, MetaEntry>) {
    for (key, t) in theirs {
        match ours.get_mut(key) {
            Some(o) if !t.wins_over(o) => {}
            Some(o) => *o = t.clone(),
            None => {
                ours.insert(key.clone(), t.clone());
            }
        }
    }
}

/// The newest stamp among the settings (0 when there are none).
pub(super) fn newest(meta: &BTreeMap<String, MetaEntry>) -> u64 {
    meta.values().map(|e| e.stamp).max().unwrap_or(0)
}

impl Ring {
    /// The value of setting `key`, if it was ever set.
    pub fn meta(&self, key: &str) -> Option<&[u8]> {
        self.meta.get(key).map(|e| e.value.as_slice())
    }

    /// Set `key` to `value`, stamped after everything this ring has seen, so
    /// it wins over every value it could have been based on.
    pub fn set_meta(&mut self, key: &str, value: Vec<u8>) {
        let stamp = self.tick();
        self.meta
            .insert(key.to_string(), MetaEntry { value, stamp });
    }

    /// Every setting whose key starts with `prefix`, in key order.
    pub fn meta_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.meta
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.as_str(), e.value.as_slice()))
    }
}

/// The document as written before it had `meta`: old ring files still load.
#[derive(Deserialize)]
pub(super) struct RingV0 {
    cluster: u64,
    n_val: u8,
    members: BTreeMap<NodeId, Member>,
    parts: Vec<PartEntry>,
}

impl From<RingV0> for Ring {
    fn from(r: RingV0) -> Self {
        Self {
            cluster: r.cluster,
            n_val: r.n_val,
            members: r.members,
            parts: r.parts,
            meta: BTreeMap::new(),
        }
    }
}
