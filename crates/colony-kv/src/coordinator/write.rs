//! A replicated write: one replica leads (applies the op and returns the
//! key's new state), the others merge that state; answered once the tally
//! is met. Replicas that miss the write get it later through a hint.

use super::read::counter_reply;
use super::{CallFailed, KeyReq, Need, ReplicaTransport, Tally, Target, Verdict};
use crate::crdt::Doc;
use crate::vnode::{KvRequest as Req, KvResponse};
use crate::KvError;
use bytes::Bytes;
use colony_core::NodeId;
use tokio::sync::mpsc;

/// Apply a write: the leader applies it, the other targets merge the
/// state it produced; answers once the tally is met. The nodes of `also`
/// get the state too, uncounted (nodes about to own their first
/// partition, for a bucket every owner keeps whole).
pub async fn write<T: ReplicaTransport>(
    net: &T,
    kr: KeyReq,
    targets: Vec<Target>,
    need: Need,
    spares: &[NodeId],
    also: &[NodeId],
) -> Result<KvResponse, KvError> {
    let mut tally = Tally::new(need, &targets);
    let Some((leader, out, doc)) = lead(net, &kr, &targets, &mut tally).await? else {
        return Err(tally.unmet("write"));
    };
    let Some(doc) = doc else {
        // Nothing written (an error reply, a SREM of an absent member):
        // nothing to replicate. A write that left the leader's state as it
        // was still returns it, since the leader may be its only holder.
        return Ok(out);
    };
    let (tx, mut rx) = mpsc::channel(targets.len().max(1));
    for (i, t) in targets.iter().enumerate() {
        if i == leader {
            continue;
        }
        let req = Req::Merge {
            bucket: kr.bucket.clone(),
            key: kr.key.clone(),
            hash: kr.hash,
            doc: doc.clone(),
            hints: t.hints.clone(),
        };
        let (net, node, tx) = (net.clone(), t.node.clone(), tx.clone());
        let leader_node = targets[leader].node.clone();
        let (primary, kr2) = (t.primary, kr.clone());
        let mut missed = t.hints.clone();
        // Spawned: a slow replica still gets the write after we answer.
        tokio::spawn(async move {
            let r = net.call(&node, kr.partition, req).await;
            let failed = r.is_err();
            let _ = tx.send((i, r)).await;
            if failed {
                // The failure detector has not caught up with this
                // replica yet, or a fallback failed too: the leader keeps
                // a hint for every replica that missed the write (this
                // one, and those it stood in for), so they get it when
                // they are back.
                if primary {
                    missed.push(node);
                }
                if !missed.is_empty() {
                    hint_at(&net, &leader_node, &kr2, missed).await;
                }
            }
        });
    }
    drop(tx);
    // Not counted, and no hint when it fails: such a node is still being
    // sent every key (its first transfer in), and anti-entropy covers a
    // write it missed in between. It must not make the quorum: it may not
    // hold the rest of what a read there would need.
    for node in also
        .iter()
        .filter(|n| !targets.iter().any(|t| &t.node == *n))
    {
        let req = Req::Merge {
            bucket: kr.bucket.clone(),
            key: kr.key.clone(),
            hash: kr.hash,
            doc: doc.clone(),
            hints: Vec::new(),
        };
        let (net, node, partition) = (net.clone(), node.clone(), kr.partition);
        tokio::spawn(async move {
            if let Err(f) = net.call(&node, partition, req).await {
                tracing::debug!(%node, %partition, error = %f.err, "a joining node missed a write");
            }
        });
    }
    let mut learned: Option<Doc> = None;
    while tally.verdict() == Verdict::Waiting {
        let Some((i, r)) = rx.recv().await else { break };
        match r {
            Ok(KvResponse::Merged { changed, durable }) => {
                tally.ok(&targets[i], durable);
                if let Some(c) = changed.and_then(|c| Doc::decode(&c).ok()) {
                    learned.get_or_insert_with(Doc::default).merge(&c);
                }
            }
            Ok(other) => tally.failed(&targets[i], format!("unexpected {other:?}")),
            Err(f) => tally.failed(&targets[i], f.err.to_string()),
        }
    }
    if tally.verdict() != Verdict::Met {
        // Replicas failed that the failure detector still calls live: hand
        // the state to stand-ins, each keeping a hint for them (the same
        // state, so nothing is applied twice).
        let missed: Vec<NodeId> = targets
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != leader && t.primary)
            .map(|(_, t)| t.node.clone())
            .collect();
        for spare in spares {
            if tally.verdict() == Verdict::Met || missed.is_empty() {
                break;
            }
            let stand_in = Target::fallback(spare.clone(), missed.clone());
            tally.add(&stand_in);
            let req = Req::Merge {
                bucket: kr.bucket.clone(),
                key: kr.key.clone(),
                hash: kr.hash,
                doc: doc.clone(),
                hints: missed.clone(),
            };
            match net.call(spare, kr.partition, req).await {
                Ok(KvResponse::Merged { durable, .. }) => tally.ok(&stand_in, durable),
                Ok(other) => tally.failed(&stand_in, format!("unexpected {other:?}")),
                Err(f) => tally.failed(&stand_in, f.err.to_string()),
            }
        }
    }
    if tally.verdict() != Verdict::Met {
        metrics::counter!("colony_kv_quorum_failures_total", "op" => "write").increment(1);
        return Err(tally.unmet("write"));
    }
    // An increment answers with the merged count of the replicas that
    // answered, not just the leader's. (Decoded only when a replica knew
    // more: a tuple pattern would decode the leader's state for every
    // write.)
    if let Some(mut l) = learned {
        if let Ok(mine) = Doc::decode(&doc) {
            l.merge(&mine);
            if let Some(r) = counter_reply(&kr.op, &l) {
                return Ok(KvResponse::Reply(r));
            }
        }
    }
    Ok(out)
}

/// Find a leader and have it apply the op: (its index, its answer, the
/// key's new state if it changed), or None if no target could lead. A
/// target tried and refused counts failed in `tally`; one that may have
/// applied the op ends the write (it must not be applied twice).
async fn lead<T: ReplicaTransport>(
    net: &T,
    kr: &KeyReq,
    targets: &[Target],
    tally: &mut Tally,
) -> Result<Option<(usize, KvResponse, Option<Bytes>)>, KvError> {
    // This node leads when it holds the key: its vnode applies requests
    // in arrival order, and no round trip is spent. A pending node never
    // leads: it may not hold the key's state yet.
    let mut order: Vec<usize> = (0..targets.len())
        .filter(|&i| !targets[i].pending)
        .collect();
    order.sort_by_key(|i| targets[*i].node != *net.me());
    for i in order {
        let t = &targets[i];
        let req = Req::Lead {
            bucket: kr.bucket.clone(),
            key: kr.key.clone(),
            hash: kr.hash,
            op: kr.op.clone(),
            hints: t.hints.clone(),
        };
        match net.call(&t.node, kr.partition, req).await {
            Ok(KvResponse::Led { out, doc, durable }) => {
                tally.ok(t, durable);
                return Ok(Some((i, *out, doc)));
            }
            Ok(other) => return Err(crate::service::unexpected(&other)),
            // Not applied: another target may lead.
            Err(CallFailed {
                err: KvError::Unavailable(e),
                maybe_delivered: false,
            }) => tally.failed(t, e),
            Err(f) => return Err(f.err),
        }
    }
    Ok(None)
}

/// Ask `at` to keep a hint of `kr`'s key for each of `missed`.
async fn hint_at<T: ReplicaTransport>(net: &T, at: &NodeId, kr: &KeyReq, missed: Vec<NodeId>) {
    let fetch = Req::Fetch {
        bucket: kr.bucket.clone(),
        key: kr.key.clone(),
        hash: kr.hash,
    };
    let Ok(KvResponse::Doc(Some(doc))) = net.call(at, kr.partition, fetch).await else {
        return;
    };
    let req = Req::Merge {
        bucket: kr.bucket.clone(),
        key: kr.key.clone(),
        hash: kr.hash,
        doc,
        hints: missed,
    };
    if net.call(at, kr.partition, req).await.is_ok() {
        metrics::counter!("colony_kv_hints_taken_total").increment(1);
    }
}
