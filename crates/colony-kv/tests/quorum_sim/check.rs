//! After the faults: wait for the failure detectors and hint delivery to
//! settle, read every key through a coordinator (which repairs), then
//! check the history against quorum reads and that every key's replicas
//! hold one state.

use super::client::{self, key, Budgets};
use super::history::{History, Kind};
use super::nemesis;
use super::world::{with, Shared};
use colony_kv::crdt::Doc;
use colony_kv::vnode::{KvRequest, KvResponse};
use colony_kv::{KeyOp, Overrides, Quorum, Reply};
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
    }
}
