//! The messages a KV vnode serves: requests from this node's coordinator,
//! other nodes' coordinators, handoff and anti-entropy, and its answers.
//! Postcard-encoded between nodes: variants are only ever appended.

use super::{Damage, TreeInfo};
use crate::counts::BucketCount;
use crate::{KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::cluster::{DropStep, HandoffItem};
use colony_core::NodeId;
use std::collections::BTreeMap;

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
    /// Apply `op` as the leader replica and return the key's new state; keep
    /// a hint for each of `hints` (replicas this node stands in for).
    Lead {
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        op: KeyOp,
        hints: Vec<NodeId>,
    },
    /// The key's stored state, as is (a read by a coordinator).
    Fetch {
        bucket: Bytes,
        key: Bytes,
        hash: u64,
    },
    /// Merge `doc` into the key's state (replication, read repair, hint
    /// hand-back); keep a hint for each of `hints`.
    Merge {
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        doc: Bytes,
        hints: Vec<NodeId>,
    },
    /// Remove the key if it is still exactly the tombstone `doc` and no
    /// hint for it is kept here (every replica acknowledged the delete).
    Reap {
        bucket: Bytes,
        key: Bytes,
        hash: u64,
        doc: Bytes,
    },
    /// Up to `max` hints kept here for `node`: (data key, state).
    Hints {
        node: NodeId,
        max: usize,
    },
    /// Forget delivered hints for `node`, unless the key changed since
    /// (`items` carry the state that was delivered).
    HintsDelivered {
        node: NodeId,
        items: Vec<HandoffItem>,
    },
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
    /// This node replicates the partition (again): serve it.
    HandoffServe,
    /// Drop everything and any handoff state, in one call. No longer sent
    /// (see `HandoffDrop`); kept so later variants keep their wire numbers.
    HandoffReset,
    HandoffImport {
        items: Vec<HandoffItem>,
    },
    /// Anti-entropy: the tree's state (for status).
    AaeInfo,
    /// Anti-entropy: the tree's branch hashes.
    AaeBranches,
    /// Anti-entropy: the segment hashes under these branches.
    AaeSegments {
        branches: Vec<u16>,
    },
    /// Anti-entropy: every entry of these segments, with its hash.
    AaeKeys {
        segments: Vec<u16>,
    },
    /// Anti-entropy: the stored states of these storage keys.
    AaeFetch {
        keys: Vec<Bytes>,
    },
    /// Anti-entropy repair: merge these states, answer what the sender
    /// lacks.
    AaeSync {
        items: Vec<HandoffItem>,
    },
    /// Tombstones older than `before_ms` with no hint here, up to `max`.
    AaeTombstones {
        before_ms: u64,
        max: usize,
    },
    /// Which of these (key, state) this replica holds exactly.
    AaeHolds {
        items: Vec<HandoffItem>,
    },
    /// Remove these tombstones if still exactly as given.
    AaeReap {
        items: Vec<HandoffItem>,
    },
    /// Rebuild the tree from the store; with `wait`, before answering.
    AaeRebuild {
        wait: bool,
    },
    /// Test hook: damage one stored key.
    DebugDamage {
        key: Bytes,
        how: Damage,
    },
    /// This node no longer replicates the partition: remove a bounded part
    /// of it (`start`: begin a drop; see `PartitionStore::drop_some`),
    /// leaving the keys of the buckets in `keep` (those it keeps whole,
    /// `n_val=all`). Sent by this node's handoff only, never between nodes.
    HandoffDrop {
        start: bool,
        keep: Vec<Bytes>,
    },
    /// Like `HandoffRead`, but only the entries of `buckets` (in storage
    /// order), and no keys are recorded as written: the share of a
    /// partition every owner keeps, for a node gaining its first partition.
    HandoffReadBuckets {
        buckets: Vec<Bytes>,
        after: Option<Bytes>,
        max_bytes: usize,
    },
}

impl KvRequest {
    /// Whether a client sent it (handoff requests come from core).
    pub(super) fn is_client(&self) -> bool {
        matches!(
            self,
            Self::Key { .. }
                | Self::Lead { .. }
                | Self::Fetch { .. }
                | Self::Merge { .. }
                | Self::Reap { .. }
                | Self::Scan { .. }
                | Self::Count
                | Self::Flush { .. }
                | Self::RandomKey { .. }
                | Self::Size
        ) || self.is_aae()
    }

    /// Whether it reads or writes only keys of `buckets` (it names them),
    /// and so is served wherever those are kept, whatever happened to the
    /// rest of the partition.
    pub(super) fn only_buckets(&self, buckets: &[Bytes]) -> bool {
        let kept = |b: &[u8]| buckets.iter().any(|k| k.as_ref() == b);
        let items_kept = |items: &[HandoffItem]| {
            items
                .iter()
                .all(|i| crate::store::split_data_key(&i.key).is_some_and(|(b, _, _)| kept(b)))
        };
        match self {
            Self::Key { bucket, .. }
            | Self::Lead { bucket, .. }
            | Self::Fetch { bucket, .. }
            | Self::Merge { bucket, .. }
            | Self::Reap { bucket, .. } => kept(bucket),
            Self::Flush {
                bucket: Some(bucket),
            } => kept(bucket),
            Self::AaeSync { items } | Self::AaeReap { items } => items_kept(items),
            _ => false,
        }
    }

    /// Whether an anti-entropy exchange sent it (served by replicas only).
    pub fn is_aae(&self) -> bool {
        matches!(
            self,
            Self::AaeBranches
                | Self::AaeSegments { .. }
                | Self::AaeKeys { .. }
                | Self::AaeFetch { .. }
                | Self::AaeSync { .. }
                | Self::AaeTombstones { .. }
                | Self::AaeHolds { .. }
                | Self::AaeReap { .. }
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
    /// A leader's answer: the reply, and the key's new state if it changed.
    Led {
        out: Box<KvResponse>,
        doc: Option<Bytes>,
        /// The write is fsynced before this answer (fsync policy `always`).
        durable: bool,
    },
    /// A key's stored state (None: never written, or dropped).
    Doc(Option<Bytes>),
    /// A merge's result: the merged state if it differs from what was
    /// sent (the replica knew more), so the coordinator can learn it.
    Merged {
        changed: Option<Bytes>,
        durable: bool,
    },
    Failed(KvError),
    AaeInfo(TreeInfo),
    Hashes(Vec<u64>),
    /// (storage key, entry hash) pairs.
    KeyHashes(Vec<(Bytes, u64)>),
    Keys(Vec<Bytes>),
    /// How far a step of a drop got.
    Dropping(DropStep),
}
