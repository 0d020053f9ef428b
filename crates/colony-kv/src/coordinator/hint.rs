//! Hinted handoff, the delivery of one partition's hints: keys this node
//! took for an unreachable replica are merged into it once it is back.
//!
//! A hint is an index entry (node, key); the state itself lives in the
//! partition's data here. Delivery merges the current state into the
//! replica and removes the hint unless the key changed meanwhile. It is
//! rate-limited, so a returning node is not flooded.

use super::ReplicaTransport;
use crate::store;
use crate::vnode::{KvRequest as Req, KvResponse};
use crate::KvError;
use colony_core::{NodeId, PartitionId, Ring};
use std::time::Duration;

/// Hints sent per batch, and the pause between batches (about 2,000 keys
/// per second per partition being delivered).
const BATCH: usize = 256;
const PAUSE: Duration = Duration::from_millis(100);

/// Deliver every hint of partition `p` kept on this node for `node`.
pub async fn deliver<T: ReplicaTransport>(
    net: &T,
    ring: &Ring,
    node: &NodeId,
    p: PartitionId,
) -> Result<(), KvError> {
    let me = net.me().clone();
    // A node that no longer replicates the partition gets nothing: its
    // current replicas get the keys instead. Keys of a bucket every owner
    // keeps whole (`n_val=all`) go to it while it owns partitions, else to
    // every owner.
    let to: Vec<NodeId> = if ring.replicas(p).contains(node) {
        vec![node.clone()]
    } else {
        ring.replicas(p).into_iter().filter(|n| *n != me).collect()
    };
    let shared = crate::props::shared_buckets(ring);
    let to_shared: Vec<NodeId> = if ring.shares(node) {
        vec![node.clone()]
    } else {
        ring.walk(p)
            .into_iter()
            .filter(|n| **n != me)
            .cloned()
            .collect()
    };
    loop {
        let batch = Req::Hints {
            node: node.clone(),
            max: BATCH,
        };
        let items = match net.call(&me, p, batch).await.map_err(|f| f.err)? {
            KvResponse::Items { items, .. } => items,
            other => return Err(crate::service::unexpected(&other)),
        };
        if items.is_empty() {
            return Ok(());
        }
        for item in &items {
            let Some(value) = &item.value else { continue };
            let Some((bucket, hash, key)) = store::split_data_key(&item.key) else {
                continue;
            };
            let dests = if shared.iter().any(|b| b.as_ref() == bucket) {
                &to_shared
            } else {
                &to
            };
            for dest in dests {
                let req = Req::Merge {
                    bucket: bytes::Bytes::copy_from_slice(bucket),
                    key: bytes::Bytes::copy_from_slice(key),
                    hash,
                    doc: value.clone(),
                    hints: Vec::new(),
                };
                net.call(dest, p, req).await.map_err(|f| f.err)?;
            }
        }
        let n = items.len();
        let done = Req::HintsDelivered {
            node: node.clone(),
            items,
        };
        net.call(&me, p, done).await.map_err(|f| f.err)?;
        metrics::counter!("colony_kv_hints_delivered_total").increment(n as u64);
        tokio::time::sleep(PAUSE).await;
    }
}
