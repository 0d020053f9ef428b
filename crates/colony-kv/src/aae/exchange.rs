//! One exchange between two replicas of a partition, and the tombstone
//! sweep: both run from any node over a [`ReplicaTransport`], so the
//! deterministic simulation drives the same code as production.
//!
//! An exchange walks the two trees top-down: branch hashes (one small
//! answer each), then the segment hashes under the branches that differ,
//! then the entries of the segments that differ. Each key whose entries
//! differ is repaired by merging both ways: the initiator sends its state,
//! the peer merges it and answers its own where it knew more, and the
//! initiator merges that. A CRDT merge loses no write, whichever side was
//! newer; afterwards both hold the same state.

use super::tree::{differing, BRANCHES, PER_BRANCH};
use super::Budget;
use crate::coordinator::ReplicaTransport;
use crate::store;
use crate::vnode::{KvRequest as Req, KvResponse};
use crate::KvError;
use bytes::Bytes;
use colony_core::cluster::HandoffItem;
use colony_core::{NodeId, PartitionId};
use std::collections::BTreeMap;

/// Keys repaired per round trip.
const BATCH: usize = 128;

/// What an exchange found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Either tree is still being built: nothing compared.
    pub not_ready: bool,
    /// Segments whose hashes differed.
    pub segments: usize,
    /// Keys found different and merged both ways.
    pub keys: u64,
    /// Bytes of state sent both ways by the repair.
    pub bytes: u64,
    /// Keys left for a later exchange (past `max_keys`).
    pub left: u64,
}

/// Who holds the keys of each bucket: a bucket with a smaller `n_val`
/// than the ring's lives on the first `n` of the partition's replicas only.
pub trait Placement: Send + Sync {
    /// The replicas holding `bucket`'s keys of the partition.
    fn holders(&self, bucket: &[u8]) -> Vec<NodeId>;
}

/// Every bucket on the same replicas.
pub struct Everywhere(pub Vec<NodeId>);

impl Placement for Everywhere {
    fn holders(&self, _bucket: &[u8]) -> Vec<NodeId> {
        self.0.clone()
    }
}

async fn ask<T: ReplicaTransport>(
    net: &T,
    node: &NodeId,
    p: PartitionId,
    req: Req,
) -> Result<KvResponse, KvError> {
    net.call(node, p, req).await.map_err(|f| f.err)
}

async fn hashes<T: ReplicaTransport>(
    net: &T,
    node: &NodeId,
    p: PartitionId,
    req: Req,
) -> Result<Vec<u64>, KvError> {
    match ask(net, node, p, req).await? {
        KvResponse::Hashes(h) => Ok(h),
        other => Err(crate::service::unexpected(&other)),
    }
}

async fn key_hashes<T: ReplicaTransport>(
    net: &T,
    node: &NodeId,
    p: PartitionId,
    segments: &[u16],
) -> Result<Vec<(Bytes, u64)>, KvError> {
    let req = Req::AaeKeys {
        segments: segments.to_vec(),
    };
    match ask(net, node, p, req).await? {
        KvResponse::KeyHashes(k) => Ok(k),
        other => Err(crate::service::unexpected(&other)),
    }
}

async fn items<T: ReplicaTransport>(
    net: &T,
    node: &NodeId,
    p: PartitionId,
    req: Req,
) -> Result<Vec<HandoffItem>, KvError> {
    match ask(net, node, p, req).await? {
        KvResponse::Items { items, .. } => Ok(items),
        other => Err(crate::service::unexpected(&other)),
    }
}

/// Spend `n` units of `budget`, waiting for them as needed.
async fn spend(budget: &Budget, mut n: u64) {
    while n > 0 {
        n -= budget.take_up_to(n);
        if n > 0 {
            tokio::time::sleep(budget.wait_for(n.min(BATCH as u64))).await;
        }
    }
}

/// Compare this node's tree of `p` with `peer`'s and repair up to
/// `max_keys` keys that differ (the rest wait for the next exchange).
pub async fn exchange<T: ReplicaTransport>(
    net: &T,
    p: PartitionId,
    peer: &NodeId,
    placement: &dyn Placement,
    budget: &Budget,
    max_keys: usize,
) -> Result<Outcome, KvError> {
    let me = net.me().clone();
    let mut out = Outcome::default();
    let mine = hashes(net, &me, p, Req::AaeBranches).await?;
    let theirs = hashes(net, peer, p, Req::AaeBranches).await?;
    if mine.len() != BRANCHES || theirs.len() != BRANCHES {
        out.not_ready = true;
        return Ok(out);
    }
    let branches: Vec<u16> = differing(&mine, &theirs)
        .into_iter()
        .map(|b| b as u16)
        .collect();
    if branches.is_empty() {
        return Ok(out);
    }
    let seg_req = || Req::AaeSegments {
        branches: branches.clone(),
    };
    let mine = hashes(net, &me, p, seg_req()).await?;
    let theirs = hashes(net, peer, p, seg_req()).await?;
    if mine.len() != theirs.len() || mine.len() != branches.len() * PER_BRANCH {
        // A tree was replaced in between: next time.
        out.not_ready = true;
        return Ok(out);
    }
    let segments: Vec<u16> = differing(&mine, &theirs)
        .into_iter()
        .map(|i| branches[i / PER_BRANCH] * PER_BRANCH as u16 + (i % PER_BRANCH) as u16)
        .collect();
    out.segments = segments.len();
    if segments.is_empty() {
        return Ok(out);
    }
    let mut entries: BTreeMap<Bytes, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for (k, h) in key_hashes(net, &me, p, &segments).await? {
        entries.entry(k).or_default().0 = Some(h);
    }
    for (k, h) in key_hashes(net, peer, p, &segments).await? {
        entries.entry(k).or_default().1 = Some(h);
    }
    let mut holders: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    let mut differ: Vec<Bytes> = Vec::new();
    for (k, (a, b)) in entries {
        if a == b {
            continue;
        }
        let Some((bucket, _, _)) = store::split_data_key(&k) else {
            continue;
        };
        // Only keys both sides are meant to hold.
        let both = *holders.entry(bucket.to_vec()).or_insert_with(|| {
            let h = placement.holders(bucket);
            h.contains(&me) && h.contains(peer)
        });
        if !both {
            continue;
        }
        if differ.len() >= max_keys {
            out.left += 1;
            continue;
        }
        differ.push(k);
    }
    for chunk in differ.chunks(BATCH) {
        spend(budget, chunk.len() as u64).await;
        let sent = items(
            net,
            &me,
            p,
            Req::AaeFetch {
                keys: chunk.to_vec(),
            },
        )
        .await?;
        out.bytes += sent.iter().map(item_bytes).sum::<u64>();
        let back = items(net, peer, p, Req::AaeSync { items: sent }).await?;
        out.bytes += back.iter().map(item_bytes).sum::<u64>();
        if !back.is_empty() {
            items(net, &me, p, Req::AaeSync { items: back }).await?;
        }
        out.keys += chunk.len() as u64;
    }
    Ok(out)
}

fn item_bytes(i: &HandoffItem) -> u64 {
    (i.key.len() + i.value.as_ref().map_or(0, Bytes::len)) as u64
}

/// Reap tombstones of `p` older than `before_ms` that every replica meant
/// to hold them holds, byte for byte; returns how many were found so.
/// Each replica removes a tombstone only if it still holds exactly it and
/// keeps no hint for it.
pub async fn sweep_tombstones<T: ReplicaTransport>(
    net: &T,
    p: PartitionId,
    placement: &dyn Placement,
    before_ms: u64,
    max: usize,
) -> Result<u64, KvError> {
    let me = net.me().clone();
    let mut candidates = items(net, &me, p, Req::AaeTombstones { before_ms, max }).await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    // Group by the replicas meant to hold each key.
    let mut groups: BTreeMap<Vec<NodeId>, Vec<HandoffItem>> = BTreeMap::new();
    for item in candidates.drain(..) {
        let Some((bucket, _, _)) = store::split_data_key(&item.key) else {
            continue;
        };
        let mut h = placement.holders(bucket);
        h.sort();
        groups.entry(h).or_default().push(item);
    }
    let mut reaped = 0;
    for (holders, mut group) in groups {
        for node in holders.iter().filter(|n| **n != me) {
            let held = match ask(
                net,
                node,
                p,
                Req::AaeHolds {
                    items: group.clone(),
                },
            )
            .await?
            {
                KvResponse::Keys(k) => k,
                other => return Err(crate::service::unexpected(&other)),
            };
            group.retain(|i| held.contains(&i.key));
            if group.is_empty() {
                break;
            }
        }
        if group.is_empty() {
            continue;
        }
        reaped += group.len() as u64;
        for node in &holders {
            ask(
                net,
                node,
                p,
                Req::AaeReap {
                    items: group.clone(),
                },
            )
            .await?;
        }
    }
    Ok(reaped)
}
