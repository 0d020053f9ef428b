//! Clients: each issues SET / INCR / SADD and reads through a random live
//! node's coordinator, the real flows over the simulated network, and
//! records what it was told in the history. Reads are checked as they
//! return: nothing read was never written.

use super::history::{History, Kind, Outcome};
use super::net::SimNet;
use super::world::{with, Shared};
use bytes::Bytes;
use colony_kv::coordinator::{self, KeyReq, Need};
use colony_kv::vnode::KvResponse;
use colony_kv::{BucketProps, KeyOp, KvError, Overrides, Quorum, Reply, SetCond, SetExpire};
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

pub const BUCKET: &[u8] = b"default";

/// One node's coordinator state kept across requests (its repair budget).
pub type Budgets = Arc<Vec<Arc<Semaphore>>>;

pub fn key(kind: Kind, i: usize) -> Bytes {
    Bytes::from(format!("{}:{i}", kind.prefix()))
}

/// Serve `op` on `key` through node `via`'s coordinator, as a client
/// connected to it would be served. Returns the outcome and the quorum
/// the request needed.
pub async fn request(
    world: &Shared,
    budgets: &Budgets,
    via: usize,
    key: Bytes,
    op: KeyOp,
    overrides: Overrides,
) -> (Result<KvResponse, KvError>, Need, String) {
    let net = SimNet::new(world, via, budgets[via].clone());
    let bucket = Bytes::from_static(BUCKET);
    let (kr, targets, need, clock, spares) = with(world, |w| {
        let (partition, hash) = w.partitioner.locate(&bucket, &key);
        let walk = w.ring.replicas(partition).len();
        let q = BucketProps::lookup(&w.ring, &bucket).resolve(w.ring.n_val(), walk, &overrides);
        let view = &w.nodes[via].view;
        let placement = coordinator::Placement::new(std::sync::Arc::new(w.ring.clone()));
        let targets = coordinator::targets(&placement, partition, q.n, |x| view[w.index(x)]);
        let spares = coordinator::spares(&placement, partition, &targets, |x| view[w.index(x)]);
        let need = Need::of(&q, op.is_read_only());
        let kr = KeyReq {
            partition,
            bucket: bucket.clone(),
            key,
            hash,
            op,
            overrides,
        };
        (kr, targets, need, w.clock.clone(), spares)
    });
    let shown: Vec<String> = targets
        .iter()
        .map(|t| match t.hints.is_empty() {
            true => t.node.to_string(),
            false => format!("{}(for {:?})", t.node, t.hints),
        })
        .collect();
    let r = if kr.op.is_read_only() {
        coordinator::read(&net, kr, targets, need, &*clock, &spares).await
    } else {
        coordinator::write(&net, kr, targets, need, &spares, &[]).await
    };
    (r, need, shown.join(" "))
}

fn pick_quorum(rng: &mut impl Rng) -> Option<Quorum> {
    match rng.random_range(0..10) {
        0 => Some(Quorum::One),
        1 => Some(Quorum::All),
        _ => None,
    }
}

/// Client `c`: `ops` requests, one at a time.
pub async fn run(
    world: Shared,
    budgets: Budgets,
    history: Arc<Mutex<History>>,
    c: usize,
    ops: usize,
) {
    for seq in 0..ops {
        let plan = with(&world, |w| {
            let pause = Duration::from_millis(w.rng.random_range(0..60));
            let up: Vec<usize> = (0..w.nodes.len()).filter(|i| w.nodes[*i].up).collect();
            let via = (!up.is_empty()).then(|| up[w.rng.random_range(0..up.len())]);
            let kind = match w.rng.random_range(0..10) {
                0..=2 => Kind::Str,
                3..=5 => Kind::Counter,
                _ => Kind::Set,
            };
            let read = w.rng.random_bool(0.3);
            let k = w.rng.random_range(0..w.cfg.keys);
            let amount = w.rng.random_range(1..=5i64);
            let overrides = Overrides {
                r: pick_quorum(&mut w.rng),
                w: pick_quorum(&mut w.rng),
                ..Overrides::default()
            };
            (pause, via, kind, read, k, amount, overrides)
        });
        let (pause, via, kind, read, k, amount, overrides) = plan;
        tokio::time::sleep(pause).await;
        let Some(via) = via else { continue };
        let key = key(kind, k);
        let value = Bytes::from(format!("c{c}.{seq}"));
        let op = match (kind, read) {
            (Kind::Str | Kind::Counter, true) => KeyOp::Get,
            (Kind::Set, true) => KeyOp::SMembers,
            (Kind::Str, false) => KeyOp::Set {
                value: value.clone(),
                expire: SetExpire::Clear,
                cond: SetCond::Always,
                get: false,
            },
            (Kind::Counter, false) => KeyOp::IncrBy(amount),
            (Kind::Set, false) => KeyOp::SAdd(vec![value.clone()]),
        };
        let invoked = now(&world);
        let id = (!read).then(|| {
            let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
            h.invoke(key.clone(), value.clone(), amount, invoked)
        });
        let (result, need, targets) =
            request(&world, &budgets, via, key.clone(), op, overrides).await;
        let done = now(&world);
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        let line = match id {
            Some(id) => {
                let outcome = outcome(&result, need, with(&world, |w| w.cfg.n_val));
                h.complete(id, outcome, done);
                format!("c{c} {key:?} {kind:?} write {value:?} via n{via} to {targets}: {outcome:?} {result:?}")
            }
            None => {
                if let Ok(KvResponse::Reply(r)) = &result {
                    h.check_read(kind, &key, r);
                }
                format!("c{c} {key:?} read via n{via}: {result:?}")
            }
        };
        drop(h);
        with(&world, |w| w.note(line));
    }
}

pub fn now(world: &Shared) -> u64 {
    with(world, |w| colony_kv::Clock::now_ms(&*w.clock))
}

/// What a write's answer says about whether it took effect.
fn outcome(result: &Result<KvResponse, KvError>, need: Need, n_val: u8) -> Outcome {
    match result {
        Ok(KvResponse::Reply(Reply::Error(e))) => panic!("a write answered an error reply: {e}"),
        Ok(_) if need.total > usize::from(n_val) / 2 => Outcome::Acked,
        Ok(_) => Outcome::Applied,
        // No replica led it: nothing was applied anywhere.
        Err(KvError::QuorumUnmet(u)) if u.got == 0 => Outcome::NotApplied,
        Err(_) => Outcome::Unknown,
    }
}
