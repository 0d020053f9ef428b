//! A replicated read: ask as many targets as `r` needs (more when some
//! fail or are slow), merge the first `r` answers, answer from the merged
//! state; then repair the targets that were behind.

use super::{CallFailed, KeyReq, Need, ReplicaTransport, Tally, Target, Verdict, REPLICA_TIMEOUT};
use crate::apply::{self, Ctx, Out};
use crate::crdt::Doc;
use crate::vnode::{KvRequest as Req, KvResponse};
use crate::{Clock, KeyOp, KvError, Reply};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// The calls of a read still outstanding: (target index, answer).
type Pending = FuturesUnordered<BoxFuture<'static, (usize, Result<KvResponse, CallFailed>)>>;

/// How long a read waits for the targets it asked before it asks one more
/// (a replica that is slow, paused, or not yet known to be down).
pub const SPECULATE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Read: ask as many targets as the quorum needs (this node first), one
/// more whenever one fails or the others are slow; merge the first `need`
/// answers and answer from the merged state; then repair the targets that
/// were behind.
pub async fn read<T: ReplicaTransport>(
    net: &T,
    kr: KeyReq,
    targets: Vec<Target>,
    need: Need,
    clock: &dyn Clock,
    spares: &[colony_core::NodeId],
) -> Result<KvResponse, KvError> {
    let mut tally = Tally::new(need, &targets);
    // The calls run inside this future (no task each); the ones still
    // outstanding when the tally is met go on in the repair task.
    let mut pending: Pending = FuturesUnordered::new();
    let mut order = ask_order(net.me(), &targets, kr.hash);
    if targets.iter().any(|t| t.sets != 0) {
        // While moves are planned, the nodes in the most of the key's sets
        // first (those in its set now and in every set after the moves):
        // fewer of them meet every quorum, and a node still receiving its
        // share of the move is asked only when needed.
        order.sort_by_key(|&i| {
            let t = &targets[i];
            std::cmp::Reverse(t.sets.count_ones() + u32::from(!t.pending))
        });
    }
    let mut asked = 0;
    let first = first_asks(&targets, &order, need);
    while asked < first {
        ask(&mut pending, net, &kr, order[asked], &targets);
        asked += 1;
    }
    let mut answers: Vec<(usize, Option<Bytes>)> = Vec::with_capacity(targets.len());
    let speculate = tokio::time::sleep(SPECULATE_AFTER);
    tokio::pin!(speculate);
    while tally.verdict() == Verdict::Waiting {
        if pending.is_empty() {
            // Everyone asked has answered and the quorum is not met yet
            // (failures, or too few primaries): ask the next.
            if asked == order.len() {
                break;
            }
            ask(&mut pending, net, &kr, order[asked], &targets);
            asked += 1;
            continue;
        }
        tokio::select! {
            biased;
            got = pending.next() => {
                let Some((i, r)) = got else { continue };
                match r {
                    Ok(KvResponse::Doc(d)) => {
                        tally.ok(&targets[i], false);
                        answers.push((i, d));
                    }
                    Ok(other) => tally.failed(&targets[i], format!("unexpected {other:?}")),
                    Err(f) => tally.failed(&targets[i], f.err.to_string()),
                }
            }
            () = &mut speculate, if asked < order.len() => {
                metrics::counter!("colony_kv_read_speculations_total").increment(1);
                ask(&mut pending, net, &kr, order[asked], &targets);
                asked += 1;
                speculate.as_mut().reset(tokio::time::Instant::now() + SPECULATE_AFTER);
            }
        }
    }
    // Targets failed that the failure detector still calls live: ask
    // stand-ins (a read changes nothing, so any node may answer).
    for spare in spares {
        if tally.verdict() == Verdict::Met {
            break;
        }
        let stand_in = Target::fallback(spare.clone(), Vec::new());
        tally.add(&stand_in);
        let req = Req::Fetch {
            bucket: kr.bucket.clone(),
            key: kr.key.clone(),
            hash: kr.hash,
        };
        match net.call(spare, kr.partition, req).await {
            Ok(KvResponse::Doc(d)) => {
                tally.ok(&stand_in, false);
                answers.push((usize::MAX, d));
            }
            Ok(other) => tally.failed(&stand_in, format!("unexpected {other:?}")),
            Err(f) => tally.failed(&stand_in, f.err.to_string()),
        }
    }
    if tally.verdict() != Verdict::Met {
        metrics::counter!("colony_kv_quorum_failures_total", "op" => "read").increment(1);
        return Err(tally.unmet("read"));
    }
    // A fallback's "not found" only says it holds no hint for the key. When
    // every answer so far is "not found" and one came from a fallback, a
    // replica still to answer may hold the key (the one that missed the
    // write answered): wait for the others before saying it is not there.
    // (A pending node's answer comes on top of a quorum of the set as it
    // is now: no reason to wait.)
    let fallback = |i: usize| targets.get(i).is_none_or(|t| !t.primary && !t.pending);
    if answers.iter().all(|(_, d)| d.is_none()) && answers.iter().any(|(i, _)| fallback(*i)) {
        while asked < order.len() {
            ask(&mut pending, net, &kr, order[asked], &targets);
            asked += 1;
        }
        while let Ok(Some((i, r))) = tokio::time::timeout(REPLICA_TIMEOUT, pending.next()).await {
            if let Ok(KvResponse::Doc(d)) = r {
                let found = d.is_some();
                answers.push((i, d));
                if found {
                    break;
                }
            }
        }
    }
    let merged = merge_answers(&answers)?;
    let out = answer_from(&kr.op, merged.as_ref(), clock.now_ms());
    // The common case: every replica asked answered, all with the same
    // state. Nothing to repair, and no task to spawn (a read used to spawn
    // one that decoded and encoded the state again only to find that).
    if pending.is_empty() && all_same(&answers) {
        return Ok(out);
    }
    let net = net.clone();
    tokio::spawn(async move { repair(&net, kr, targets, answers, pending, merged).await });
    Ok(out)
}

/// Whether every answer is the same state (or every one "not found").
fn all_same(answers: &[(usize, Option<Bytes>)]) -> bool {
    answers.iter().all(|(_, d)| *d == answers[0].1)
}

/// The order in which a read asks its targets: primaries before fallbacks,
/// this node first; the other primaries in an order that turns with the
/// key, so reads of different keys spread over them.
pub(super) fn ask_order(me: &colony_core::NodeId, targets: &[Target], hash: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    // Stable: the walk's order within each group.
    order.sort_by_key(|&i| (!targets[i].primary, targets[i].node != *me));
    let from = usize::from(
        order
            .first()
            .is_some_and(|&i| targets[i].primary && targets[i].node == *me),
    );
    let others = order[from..]
        .iter()
        .take_while(|&&i| targets[i].primary)
        .count();
    if others > 1 {
        let turn = (hash % others as u64) as usize;
        order[from..from + others].rotate_left(turn);
    }
    order
}

/// How many targets of `order` a read asks at once: as many as the quorum
/// needs, and while moves are planned, enough of every set the key may
/// have after them (see `moving.rs`).
fn first_asks(targets: &[Target], order: &[usize], need: Need) -> usize {
    let want = need.total.max(need.primary).max(1);
    let sets = targets.iter().fold(0u16, |a, t| a | t.sets);
    let mut first = want.min(order.len());
    let covered = |asked: &[usize]| {
        let now = asked.iter().filter(|&&i| !targets[i].pending).count();
        let in_now = targets.iter().filter(|t| !t.pending).count();
        now >= want.min(in_now)
            && (0..16).filter(|j| sets >> j & 1 == 1).all(|j| {
                let has = |i: &usize| targets[*i].sets >> j & 1 == 1;
                let members = (0..targets.len()).filter(has).count();
                asked.iter().filter(|i| has(i)).count() >= need.total.min(members)
            })
    };
    while first < order.len() && !covered(&order[..first]) {
        first += 1;
    }
    first
}

/// Ask target `i` for the key's state.
fn ask<T: ReplicaTransport>(
    pending: &mut Pending,
    net: &T,
    kr: &KeyReq,
    i: usize,
    targets: &[Target],
) {
    let req = Req::Fetch {
        bucket: kr.bucket.clone(),
        key: kr.key.clone(),
        hash: kr.hash,
    };
    let (net, node, partition) = (net.clone(), targets[i].node.clone(), kr.partition);
    pending.push(Box::pin(async move {
        let r = net.call(&node, partition, req).await;
        (i, r)
    }));
}

/// Wait (briefly) for the remaining answers of a read, then send the
/// merged state to every target that lacked part of it. `merged` is the
/// merge of the answers so far.
async fn repair<T: ReplicaTransport>(
    net: &T,
    kr: KeyReq,
    targets: Vec<Target>,
    mut answers: Vec<(usize, Option<Bytes>)>,
    mut pending: Pending,
    mut merged: Option<Doc>,
) {
    while let Ok(Some((i, r))) = tokio::time::timeout(REPLICA_TIMEOUT, pending.next()).await {
        if let Ok(KvResponse::Doc(d)) = r {
            if let Some(bytes) = d
                .as_ref()
                .filter(|b| !answers.iter().any(|(_, e)| e.as_ref() == Some(*b)))
            {
                let Ok(doc) = Doc::decode(bytes) else {
                    return;
                };
                match &mut merged {
                    Some(m) => m.merge(&doc),
                    None => merged = Some(doc),
                }
            }
            answers.push((i, d));
        }
    }
    // Only those that answered can be repaired: when they all hold the
    // same state, none lacks anything the others have.
    if all_same(&answers) {
        return;
    }
    let Some(merged) = merged else {
        return;
    };
    let encoded = merged.encode();
    for (i, d) in answers {
        // Fallbacks hold only what they stood in for: repair replicas.
        // (Stand-ins asked after the targets have no index among them.)
        let Some(target) = targets.get(i).filter(|t| t.primary) else {
            continue;
        };
        if d.as_ref() == Some(&encoded) {
            continue;
        }
        let Ok(permit) = net.repair_budget().clone().try_acquire_owned() else {
            metrics::counter!("colony_kv_read_repairs_skipped_total").increment(1);
            return;
        };
        metrics::counter!("colony_kv_read_repairs_total").increment(1);
        let req = Req::Merge {
            bucket: kr.bucket.clone(),
            key: kr.key.clone(),
            hash: kr.hash,
            doc: encoded.clone(),
            hints: Vec::new(),
        };
        let (net, node) = (net.clone(), target.node.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = net.call(&node, kr.partition, req).await;
        });
    }
}

/// The merge of every state answered (None: no replica has the key).
fn merge_answers(answers: &[(usize, Option<Bytes>)]) -> Result<Option<Doc>, KvError> {
    let mut merged: Option<Doc> = None;
    for (n, (_, d)) in answers.iter().enumerate() {
        if let Some(bytes) = d {
            // Equal states (the usual case) are decoded once.
            if answers[..n].iter().any(|(_, e)| e.as_ref() == Some(bytes)) {
                continue;
            }
            let doc = Doc::decode(bytes)?;
            match &mut merged {
                Some(m) => m.merge(&doc),
                None => merged = Some(doc),
            }
        }
    }
    Ok(merged)
}

/// Answer a read-only `op` from a merged state.
fn answer_from(op: &KeyOp, doc: Option<&Doc>, now_ms: u64) -> KvResponse {
    if let KeyOp::FetchDoc = op {
        return KvResponse::Doc(doc.map(Doc::encode));
    }
    let live = doc.and_then(Doc::view).filter(|o| !o.is_expired(now_ms));
    let mut rng = SmallRng::seed_from_u64(now_ms);
    let mut ctx = Ctx {
        now_ms,
        rng: &mut rng,
    };
    match apply::apply(op.clone(), live, &mut ctx).out {
        Out::Reply(r) => KvResponse::Reply(r),
        Out::Object(o) => KvResponse::Object(o),
    }
}

/// The reply of an increment computed from a merged state.
pub(super) fn counter_reply(op: &KeyOp, doc: &Doc) -> Option<Reply> {
    let view = doc.view()?;
    let value = |field: Option<&Bytes>| -> Option<Bytes> {
        match (&view.value, field) {
            (crate::Value::Str(s), None) => Some(s.clone()),
            (crate::Value::Hash(h), Some(f)) => h.get(f).cloned(),
            _ => None,
        }
    };
    match op {
        KeyOp::IncrBy(_) => apply::parse_i64(&value(None)?).map(Reply::Int),
        KeyOp::HIncrBy(f, _) => apply::parse_i64(&value(Some(f))?).map(Reply::Int),
        KeyOp::IncrByFloat(_) => value(None).map(Reply::Bulk),
        KeyOp::HIncrByFloat(f, _) => value(Some(f)).map(Reply::Bulk),
        _ => None,
    }
}
