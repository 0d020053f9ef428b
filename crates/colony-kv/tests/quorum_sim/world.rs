//! The simulated cluster: nodes with real stores and real `KvVnode`s, the
//! ring they share, the faults in force, and each node's failure-detector
//! view. Everything sits behind one lock that no task holds across an
//! await; every random choice comes from the world's seeded RNG.

use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId, Partitioner, Ring};
use colony_kv::coordinator;
use colony_kv::store::{self, Store, StoreConfig};
use colony_kv::vnode::{KvRequest, KvResponse, KvVnode, Limits};
use colony_kv::{Clock, FsyncPolicy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Shared = Arc<Mutex<World>>;

/// Run `f` on the world under its lock.
pub fn with<R>(world: &Shared, f: impl FnOnce(&mut World) -> R) -> R {
    let mut w = world.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut w)
}

#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub ring_size: u32,
    pub n_val: u8,
    pub clients: usize,
    pub ops: usize,
    /// Keys per kind (strings, counters, sets).
    pub keys: usize,
    pub fsync: FsyncPolicy,
    pub trace: bool,
    /// Trace every message too.
    pub messages: bool,
}

/// Virtual wall-clock time: tokio's paused clock from a fixed epoch.
pub struct SimClock(tokio::time::Instant);

impl SimClock {
    pub fn new() -> Self {
        Self(tokio::time::Instant::now())
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000 + self.0.elapsed().as_millis() as u64
    }
}

pub struct Node {
    pub id: NodeId,
    pub up: bool,
    /// Bumped at every crash: calls of an older incarnation are dead.
    pub incarnation: u64,
    store: Option<Arc<Store>>,
    vnodes: Vec<KvVnode>,
    /// Whom this node's failure detector believes live, by index.
    pub view: Vec<bool>,
}

pub struct World {
    pub cfg: Config,
    pub ring: Ring,
    pub partitioner: Partitioner,
    pub rng: SmallRng,
    pub nodes: Vec<Node>,
    /// Pairs (low index, high index) that cannot reach each other.
    pub cut: BTreeSet<(usize, usize)>,
    /// Chance that one leg of a call (request or reply) is lost.
    pub loss: f64,
    /// Chance that one leg is delayed beyond the replica timeout.
    pub late: f64,
    pub clock: Arc<SimClock>,
    dir: tempfile::TempDir,
    /// Every fault and client outcome, in order: a run's fingerprint.
    pub log: Vec<String>,
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("n{i}"))
}

impl World {
    pub fn new(cfg: Config, seed: u64) -> anyhow::Result<Self> {
        let mut ring = Ring::new(1, node_id(0), "a0".into(), cfg.ring_size, cfg.n_val)?;
        for i in 1..cfg.nodes {
            ring.stage_join(&node_id(i), format!("a{i}"));
        }
        ring.commit();
        for m in ring.transfers() {
            ring.complete(m.partition, &m.from, &m.to)?;
        }
        let n = cfg.nodes;
        let mut w = Self {
            partitioner: Partitioner::new(cfg.ring_size)?,
            ring,
            rng: SmallRng::seed_from_u64(seed),
            nodes: (0..n)
                .map(|i| Node {
                    id: node_id(i),
                    up: false,
                    incarnation: 0,
                    store: None,
                    vnodes: Vec::new(),
                    view: vec![true; n],
                })
                .collect(),
            cut: BTreeSet::new(),
            loss: 0.0,
            late: 0.0,
            clock: Arc::new(SimClock::new()),
            dir: tempfile::tempdir()?,
            log: Vec::new(),
            cfg,
        };
        for i in 0..n {
            w.start(i)?;
        }
        Ok(w)
    }

    pub fn note(&mut self, line: String) {
        if self.cfg.trace {
            eprintln!("[{:>7} ms] {line}", self.clock.0.elapsed().as_millis());
        }
        self.log.push(line);
    }

    /// Open node `i`'s store from its directory and a vnode per partition.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let config = StoreConfig {
            path: self.dir.path().join(format!("n{i}")),
            fsync: self.cfg.fsync,
            cache_bytes: 1 << 20,
        };
        let store = Store::open(&config)?;
        let limits = Limits {
            max_value_bytes: 1 << 20,
            doc_cache_bytes: 256 << 10,
        };
        let clock: Arc<dyn Clock> = self.clock.clone();
        let mut vnodes = Vec::new();
        for p in self.partitioner.partitions() {
            let seed = self.rng.random();
            let id = &self.nodes[i].id;
            let mut v = KvVnode::open_seeded(p, id, store.clone(), clock.clone(), limits, seed)?;
            // The anti-entropy tree, built from the store at once (a real
            // node builds it over its first ticks); writes keep it after.
            match v.handle(KvRequest::AaeRebuild { wait: true }) {
                KvResponse::Failed(e) => anyhow::bail!("building n{i}'s tree of {p}: {e}"),
                _ => vnodes.push(v),
            }
        }
        let node = &mut self.nodes[i];
        node.store = Some(store);
        node.vnodes = vnodes;
        node.up = true;
        node.view = vec![true; self.cfg.nodes];
        Ok(())
    }

    /// Node `i`'s process dies: its vnodes' memory is gone, its store is
    /// closed (only what reached the store survives, as on disk).
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = false;
        node.incarnation += 1;
        node.vnodes.clear();
        node.store = None;
    }

    pub fn alive(&self, i: usize, incarnation: u64) -> bool {
        let n = &self.nodes[i];
        n.up && n.incarnation == incarnation
    }

    pub fn index(&self, node: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == *node)
            .expect("a node of the simulation")
    }

    pub fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Whether `a` can reach `b` right now.
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        a == b || (self.nodes[b].up && !self.is_cut(a, b))
    }

    /// The delay of one leg of a call.
    pub fn delay(&mut self) -> Duration {
        if self.rng.random_bool(self.late) {
            Duration::from_millis(self.rng.random_range(1_500..4_000))
        } else {
            Duration::from_millis(self.rng.random_range(0..30))
        }
    }

    pub fn lose(&mut self) -> bool {
        self.rng.random_bool(self.loss)
    }

    /// Node `i` serves `req` for partition `p` as its RPC handler would:
    /// the replica-side admission rule, then the vnode handles it and
    /// commits. None if the node is down.
    pub fn serve(
        &mut self,
        i: usize,
        p: PartitionId,
        req: KvRequest,
        remote: bool,
    ) -> Option<KvResponse> {
        let node = &mut self.nodes[i];
        if !node.up {
            return None;
        }
        if remote {
            if let Some(e) = coordinator::refusal(&self.ring, &node.id, p, &req, &[]) {
                return Some(KvResponse::Failed(e));
            }
        }
        let vnode = &mut node.vnodes[p.index()];
        let mut replies = [vnode.handle(req)];
        vnode.commit(&mut replies);
        let [reply] = replies;
        Some(reply)
    }

    /// Whether node `i` keeps hints for `peer` in partition `p`.
    pub fn has_hints(&self, i: usize, p: PartitionId, peer: &NodeId) -> bool {
        let Some(store) = &self.nodes[i].store else {
            return false;
        };
        let prefix = store::hint_prefix(p, peer.as_str());
        store.hints().prefix(&prefix).next().is_some()
    }

    /// Hints kept anywhere in the cluster.
    pub fn hints_kept(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.store.as_deref())
            .map(colony_kv::service::hints_pending)
            .sum()
    }
}
