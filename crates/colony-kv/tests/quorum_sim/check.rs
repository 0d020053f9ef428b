//! After the faults: wait for the failure detectors and hint delivery to
//! settle, read every key through a coordinator (which repairs), then
//! check the history against quorum reads and that every key's replicas
//! hold one state.

use super::client::{self, key, Budgets};
use super::history::{History, Kind};
use super::nemesis;
use super::world::{with, Shared};
use colony_kv::aae::exchange::{exchange, Everywhere};
use colony_kv::crdt::Doc;
use colony_kv::vnode::Damage;
use colony_kv::vnode::{KvRequest, KvResponse};
use colony_kv::{KeyOp, Overrides, Quorum, Reply};
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long, in simulated time, the cluster may take to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(600);

/// What the end of a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Keys whose replicas differed once hints were delivered, before
    /// the read-repair pass.
    pub diverged_before_repair: usize,
    pub keys: usize,
    /// Keys removed from one replica's store before anti-entropy ran.
    pub lost: usize,
    /// Rounds of exchanges until every tree root agreed.
    pub aae_rounds: usize,
}

/// Wait until every failure detector sees the truth and no hint is left.
pub async fn settle(world: &Shared) {
    let start = tokio::time::Instant::now();
    while !(nemesis::views_settled(world) && with(world, |w| w.hints_kept()) == 0) {
        assert!(
            start.elapsed() < SETTLE_WITHIN,
            "hints not delivered within {SETTLE_WITHIN:?} of the faults stopping: {} left",
            with(world, |w| w.hints_kept())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    with(world, |w| w.note("settled: views true, no hints".into()));
}

fn read_op(kind: Kind) -> KeyOp {
    match kind {
        Kind::Str | Kind::Counter => KeyOp::Get,
        Kind::Set => KeyOp::SMembers,
    }
}

/// Every key of the run, with its kind.
fn keys(world: &Shared) -> Vec<(Kind, bytes::Bytes)> {
    let n = with(world, |w| w.cfg.keys);
    Kind::ALL
        .into_iter()
        .flat_map(|k| (0..n).map(move |i| (k, key(k, i))))
        .collect()
}

/// Keys whose replicas (the ring's, not fallbacks) hold different states.
fn diverged(world: &Shared) -> Vec<String> {
    let mut out = Vec::new();
    for (_, k) in keys(world) {
        let states = with(world, |w| {
            let (p, hash) = w.partitioner.locate(client::BUCKET, &k);
            let replicas = w.ring.replicas(p);
            replicas
                .iter()
                .map(|r| {
                    let i = w.index(r);
                    let fetch = KvRequest::Fetch {
                        bucket: bytes::Bytes::from_static(client::BUCKET),
                        key: k.clone(),
                        hash,
                    };
                    match w.serve(i, p, fetch, false) {
                        Some(KvResponse::Doc(d)) => {
                            d.map(|d| Doc::decode(&d).expect("a stored doc decodes"))
                        }
                        other => panic!("n{i} answered a fetch with {other:?}"),
                    }
                })
                .collect::<Vec<_>>()
        });
        if states.windows(2).any(|s| s[0] != s[1]) {
            out.push(format!("{k:?}: {states:?}"));
        }
    }
    out
}

/// Read every key at `r` through node 0's coordinator.
async fn read_all(
    world: &Shared,
    budgets: &Budgets,
    r: Option<Quorum>,
) -> Vec<(Kind, bytes::Bytes, Reply)> {
    let mut out = Vec::new();
    for (kind, k) in keys(world) {
        let overrides = Overrides {
            r,
            ..Overrides::default()
        };
        let (res, _, _) =
            client::request(world, budgets, 0, k.clone(), read_op(kind), overrides).await;
        match res {
            Ok(KvResponse::Reply(reply)) => out.push((kind, k, reply)),
            other => panic!("the final read of {k:?} failed: {other:?}"),
        }
    }
    out
}

/// Every partition whose replicas' trees have different roots.
fn roots_differ(world: &Shared) -> Vec<String> {
    with(world, |w| {
        let mut out = Vec::new();
        for p in w.partitioner.partitions() {
            let roots: Vec<u64> = w
                .ring
                .replicas(p)
                .iter()
                .map(|r| {
                    let i = w.index(r);
                    match w.serve(i, p, KvRequest::AaeInfo, false) {
                        Some(KvResponse::AaeInfo(t)) => {
                            assert!(t.built_at_ms.is_some(), "n{i}'s tree of {p} is not built");
                            t.root
                        }
                        other => panic!("n{i} answered AaeInfo with {other:?}"),
                    }
                })
                .collect();
            if roots.windows(2).any(|r| r[0] != r[1]) {
                out.push(format!("{p}: {roots:x?}"));
            }
        }
        out
    })
}

/// A disk loses data: a few keys each vanish from one replica's store
/// (the tree follows, as for a missed write, or not, as for silent loss,
/// in which case that replica's tree is rebuilt from its store).
fn lose_some(world: &Shared) -> usize {
    let all = keys(world);
    with(world, |w| {
        let mut lost = 0;
        for _ in 0..3 {
            let (_, k) = &all[w.rng.random_range(0..all.len())];
            let (p, hash) = w.partitioner.locate(client::BUCKET, k);
            let replicas = w.ring.replicas(p);
            let pick = w.rng.random_range(0..replicas.len());
            let i = w.index(&replicas[pick]);
            let silently = w.rng.random_bool(0.5);
            let how = if silently {
                Damage::LoseSilently
            } else {
                Damage::Lose
            };
            let key = bytes::Bytes::from(colony_kv::store::data_key(p, client::BUCKET, hash, k));
            match w.serve(i, p, KvRequest::DebugDamage { key, how }, false) {
                Some(KvResponse::Reply(Reply::Int(1))) => lost += 1,
                Some(KvResponse::Reply(_)) => {}
                other => panic!("damaging n{i}'s {k:?} answered {other:?}"),
            }
            if silently {
                w.serve(i, p, KvRequest::AaeRebuild { wait: true }, false);
            }
            w.note(format!("n{i} loses {k:?} ({how:?})"));
        }
        lost
    })
}

/// Anti-entropy alone, with no client read: every replica of every
/// partition exchanges with the next one, round after round, until every
/// partition's replicas have equal tree roots. Returns the rounds taken.
async fn anti_entropy(world: &Shared, budgets: &Budgets) -> usize {
    let budget = colony_kv::aae::Budget::new(u64::MAX / 4);
    const ROUNDS: usize = 6;
    for round in 1..=ROUNDS {
        let (ring, partitions) = with(world, |w| {
            (
                w.ring.clone(),
                w.partitioner.partitions().collect::<Vec<_>>(),
            )
        });
        for p in partitions {
            let replicas = ring.replicas(p);
            for (at, node) in replicas.iter().enumerate() {
                let peer = &replicas[(at + 1) % replicas.len()];
                if peer == node {
                    continue;
                }
                let i = with(world, |w| w.index(node));
                let net = super::net::SimNet::new(world, i, budgets[i].clone());
                let placement = Everywhere(replicas.clone());
                let r = exchange(&net, p, peer, &placement, &budget, usize::MAX).await;
                with(world, |w| {
                    w.note(format!("aae round {round}: n{i} with {peer} on {p}: {r:?}"))
                });
            }
        }
        if roots_differ(world).is_empty() {
            return round;
        }
    }
    panic!(
        "tree roots still differ after {ROUNDS} rounds of exchanges:\n{}",
        roots_differ(world).join("\n")
    );
}

/// The checks once the faults have stopped.
pub async fn after_faults(
    world: &Shared,
    budgets: &Budgets,
    history: &Arc<Mutex<History>>,
) -> Report {
    settle(world).await;
    let before = diverged(world);
    with(world, |w| {
        w.note(format!("{} keys diverged before repair", before.len()));
        for d in &before {
            w.note(format!("  diverged: {d}"));
        }
    });
    // Anti-entropy alone makes every key's replicas equal, lost keys
    // included: no read yet.
    let lost = lose_some(world);
    let rounds = anti_entropy(world, budgets).await;
    let unrepaired = diverged(world);
    assert!(
        unrepaired.is_empty(),
        "equal tree roots, yet replicas differ:\n{}",
        unrepaired.join("\n")
    );
    with(world, |w| {
        w.note(format!("anti-entropy converged in {rounds} rounds"))
    });
    // Read repair of every key: read at r = n, then let the repairs land.
    read_all(world, budgets, Some(Quorum::All)).await;
    tokio::time::sleep(2 * colony_kv::coordinator::REPLICA_TIMEOUT).await;
    let reads = read_all(world, budgets, None).await;
    let h = history.lock().unwrap_or_else(|p| p.into_inner());
    for (kind, k, reply) in reads {
        h.check_final(kind, &k, &reply);
    }
    let after = diverged(world);
    assert!(
        after.is_empty(),
        "replicas did not converge:\n{}",
        after.join("\n")
    );
    Report {
        diverged_before_repair: before.len(),
        keys: keys(world).len(),
        lost,
        aae_rounds: rounds,
    }
}
