//! Active anti-entropy on this node: one loop that, partition by
//! partition, exchanges this node's tree with the next replica's (so the
//! replicas of a partition form a ring of exchanges that reaches them
//! all), sweeps tombstones every replica holds, and keeps per-partition
//! status for `colony admin aae status` and `/api/v1/aae`.

use super::Router;
use crate::aae::exchange::{self, Outcome, Placement};
use crate::aae::{AaeConfig, Budget};
use crate::props::{BucketProps, Overrides};
use crate::vnode::{KvRequest, KvResponse, TreeInfo};
use crate::Clock;
use colony_core::{NodeId, PartitionId, Ring};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keys one exchange repairs at most (the next one goes on).
const MAX_KEYS: usize = 20_000;
/// Tombstones one sweep considers at most.
const SWEEP_MAX: usize = 1_000;
/// Requests waiting in this node's vnode mailboxes above which
/// anti-entropy waits: client traffic goes first.
const BUSY_QUEUE: usize = 256;
/// How long to wait when busy before looking again.
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// What this node knows of one partition's anti-entropy.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionAae {
    pub partition: u16,
    /// This node's tree (None: the partition's vnode did not answer).
    pub tree: Option<TreeInfo>,
    pub last_exchange_ms: Option<u64>,
    pub last_peer: Option<String>,
    /// `equal`, `repaired`, `not ready` or the error.
    pub last_result: Option<String>,
    pub exchanges: u64,
    pub keys_repaired: u64,
    pub bytes_repaired: u64,
    pub last_sweep_ms: Option<u64>,
    pub tombstones_reaped: u64,
}

/// The node's anti-entropy: settings, repair budget, status.
pub struct AaeNode {
    pub(super) config: AaeConfig,
    repair: Budget,
    status: Mutex<Vec<PartitionAae>>,
}

impl AaeNode {
    pub fn new(config: AaeConfig, partitions: u16) -> Self {
        let status = (0..partitions)
            .map(|p| PartitionAae {
                partition: p,
                ..Default::default()
            })
            .collect();
        Self {
            repair: Budget::new(config.repair_rate),
            config,
            status: Mutex::new(status),
        }
    }

    fn with<R>(&self, p: PartitionId, f: impl FnOnce(&mut PartitionAae) -> R) -> Option<R> {
        let mut s = self.status.lock().ok()?;
        s.get_mut(p.index()).map(f)
    }

    pub fn snapshot(&self) -> Vec<PartitionAae> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Where each bucket's keys live in one partition, by the ring's bucket
/// properties: the first `n` replicas, or for a bucket with `n_val=all`
/// every node of the walk and those about to own their first partition
/// (so a tombstone is reaped only once they hold it too).
struct RingPlacement {
    replicas: Vec<NodeId>,
    walk: Vec<NodeId>,
    ring: Arc<Ring>,
}

impl RingPlacement {
    fn new(ring: &Arc<Ring>, p: PartitionId) -> Self {
        let mut walk: Vec<NodeId> = ring.walk(p).into_iter().cloned().collect();
        for t in ring.transfers() {
            if !walk.contains(&t.to) {
                walk.push(t.to);
            }
        }
        Self {
            replicas: ring.replicas(p),
            walk,
            ring: ring.clone(),
        }
    }
}

impl Placement for RingPlacement {
    fn holders(&self, bucket: &[u8]) -> Vec<NodeId> {
        let props = BucketProps::lookup(&self.ring, bucket);
        if props.is_shared() {
            return self.walk.clone();
        }
        let q = props.resolve(
            self.ring.n_val(),
            self.replicas.len(),
            &Overrides::default(),
        );
        self.replicas.iter().take(q.n).cloned().collect()
    }
}

/// The (partition, peer) exchanges this node starts: for each partition it
/// holds keys of, with the node after it in the partition's list (its
/// replicas; with a bucket every owner keeps whole, `shared`, the whole
/// walk, so the exchanges of every partition reach every owner).
fn pairs(ring: &Ring, me: &NodeId, shared: bool) -> Vec<(PartitionId, NodeId)> {
    let mut out = Vec::new();
    for i in 0..ring.ring_size() {
        let p = PartitionId(i);
        let holders: Vec<NodeId> = if shared {
            ring.walk(p).into_iter().cloned().collect()
        } else {
            ring.replicas(p)
        };
        if holders.len() < 2 {
            continue;
        }
        if let Some(at) = holders.iter().position(|r| r == me) {
            out.push((p, holders[(at + 1) % holders.len()].clone()));
        }
    }
    out
}

/// Exchange and sweep until `stop` fires.
pub(super) async fn run(
    router: Router,
    aae: Arc<AaeNode>,
    clock: Arc<dyn Clock>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut next = Cursor::default();
    loop {
        let queued: usize = router.0.handles.iter().map(|h| h.queue_len()).sum();
        if queued > BUSY_QUEUE {
            metrics::counter!("colony_aae_yields_total").increment(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(BUSY_PAUSE) => continue,
            }
        }
        let mut pause = aae.config.exchange_interval;
        if let Some(found) = step(&router, &aae, &*clock, &mut next).await {
            if found {
                // Differences found: go on at once (the repair budget paces).
                pause = Duration::ZERO;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Where the loop is: the next pair in turn, and a pair to try again first
/// (its exchange found a tree still being built, failed, or left keys
/// over), so a partition does not wait a whole turn for that.
#[derive(Default)]
struct Cursor {
    next: usize,
    again: Option<(PartitionId, NodeId, u32)>,
}

/// Tries of one pair in a row before the loop moves on regardless.
const TRIES: u32 = 10;

/// One exchange (and sweep when due); Some(whether it found differences),
/// None if there was nothing to do.
async fn step(
    router: &Router,
    aae: &AaeNode,
    clock: &dyn Clock,
    cursor: &mut Cursor,
) -> Option<bool> {
    let cluster = router.0.cluster.get()?.clone();
    let ring = router.ring()?;
    let me = router.0.me.clone();
    let pairs = pairs(&ring, &me, !router.0.shared.all().is_empty());
    if pairs.is_empty() {
        return None;
    }
    let mut chosen = None;
    let mut tries = 0;
    if let Some((p, peer, t)) = cursor.again.take() {
        if cluster.is_live(&peer) && pairs.iter().any(|(q, n)| *q == p && *n == peer) {
            chosen = Some((p, peer));
            tries = t;
        }
    }
    // Skip peers the failure detector calls down (at most one full turn).
    for _ in 0..pairs.len() {
        if chosen.is_some() {
            break;
        }
        let (p, peer) = &pairs[cursor.next % pairs.len()];
        cursor.next = cursor.next.wrapping_add(1);
        if cluster.is_live(peer) {
            chosen = Some((*p, peer.clone()));
        }
    }
    let (p, peer) = chosen?;
    let placement = RingPlacement::new(&ring, p);
    let now = clock.now_ms();
    let result = exchange::exchange(router, p, &peer, &placement, &aae.repair, MAX_KEYS).await;
    record(aae, p, &peer, now, &result);
    let found = result.as_ref().is_ok_and(|o| o.keys > 0 || o.left > 0);
    let unfinished = match &result {
        Ok(o) => o.not_ready || o.left > 0,
        Err(_) => true,
    };
    if unfinished && tries + 1 < TRIES {
        cursor.again = Some((p, peer.clone(), tries + 1));
    }
    // The first replica sweeps the partition's tombstones, when every
    // replica is up and the trees agreed (nothing left to repair).
    let first = placement.replicas.first() == Some(&me);
    let all_live = placement
        .replicas
        .iter()
        .all(|r| *r == me || cluster.is_live(r));
    let grace = aae.config.tombstone_grace.as_millis() as u64;
    let due = aae
        .with(p, |s| {
            s.last_sweep_ms
                .is_none_or(|t| now.saturating_sub(t) >= grace)
        })
        .unwrap_or(false);
    if first && all_live && due && matches!(&result, Ok(o) if o.segments == 0 && !o.not_ready) {
        aae.with(p, |s| s.last_sweep_ms = Some(now));
        let before = now.saturating_sub(grace);
        match exchange::sweep_tombstones(router, p, &placement, before, SWEEP_MAX).await {
            Ok(n) => {
                metrics::counter!("colony_aae_tombstones_reaped_total").increment(n);
                aae.with(p, |s| s.tombstones_reaped += n);
            }
            Err(e) => tracing::debug!(partition = %p, error = %e, "tombstone sweep failed"),
        }
    }
    Some(found)
}

fn record(
    aae: &AaeNode,
    p: PartitionId,
    peer: &NodeId,
    now: u64,
    result: &Result<Outcome, crate::KvError>,
) {
    let label = match result {
        Ok(o) if o.not_ready => "not_ready",
        Ok(o) if o.keys > 0 => "repaired",
        Ok(_) => "equal",
        Err(_) => "failed",
    };
    metrics::counter!("colony_aae_exchanges_total", "result" => label).increment(1);
    if let Ok(o) = result {
        metrics::counter!("colony_aae_keys_repaired_total").increment(o.keys);
        metrics::counter!("colony_aae_bytes_repaired_total").increment(o.bytes);
        if o.keys > 0 {
            tracing::info!(partition = %p, %peer, keys = o.keys, left = o.left, "anti-entropy repaired keys");
        }
    }
    aae.with(p, |s| {
        s.exchanges += 1;
        s.last_exchange_ms = Some(now);
        s.last_peer = Some(peer.to_string());
        s.last_result = Some(match result {
            Ok(o) if o.not_ready => "not ready".into(),
            Ok(o) if o.keys > 0 => format!("repaired {} keys", o.keys),
            Ok(_) => "equal".into(),
            Err(e) => e.to_string(),
        });
        if let Ok(o) = result {
            s.keys_repaired += o.keys;
            s.bytes_repaired += o.bytes;
        }
    });
}

/// Status of every partition this node holds: its tree and its exchanges.
pub(super) async fn status(router: &Router, aae: &AaeNode) -> Vec<PartitionAae> {
    let mut out = aae.snapshot();
    for s in &mut out {
        let p = PartitionId(s.partition);
        if let Ok(h) = router.local(p) {
            if let Ok(KvResponse::AaeInfo(info)) = h.call(KvRequest::AaeInfo).await {
                s.tree = Some(info);
            }
        }
    }
    out
}
