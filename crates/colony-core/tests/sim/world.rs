//! The whole cluster in one loop: deliver what is due, play the script
//! (joins, leaves, crashes), let every node and the client act, start the
//! transfers the nodes scheduled, poll every node's running futures (the
//! real handoff), check safety, advance the clock. After `fault_ticks` the
//! network heals and the cluster must settle; then liveness and the
//! history are checked.

use super::client::{value_of, Client};
use super::config::Config;
use super::host::{lock, Port, Runtime, Shared, SimHost};
use super::msg::{Addr, Msg, Tick};
use super::net::Net;
use super::node::{Ctx, Node};
use colony_core::{MemberStatus, NodeId, Ring};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Summary {
    pub settled_at: Tick,
    pub writes_acked: u64,
    pub reads_done: u64,
    pub messages: u64,
    pub dropped: u64,
    pub crashes: u64,
    pub handoffs: u64,
    pub members: usize,
    pub refused: BTreeMap<&'static str, u64>,
}

struct World<'a> {
    cfg: &'a Config,
    rng: StdRng,
    now: Tick,
    net: Net<Msg>,
    /// Shared with each node's host, whose futures change it too.
    nodes: BTreeMap<NodeId, Shared<Node>>,
    /// Each node's current start (none while it is down or gone).
    runtimes: BTreeMap<NodeId, Runtime>,
    port: Shared<Port>,
    client: Client,
    joins: Vec<(Tick, NodeId)>,
    leaves: Vec<Tick>,
    next_crash: Tick,
    down_until: BTreeMap<NodeId, Tick>,
    crashes: u64,
    trace: bool,
}

fn name(i: usize) -> NodeId {
    NodeId::new(format!("n{i}"))
}

/// Run one seed to the end. `Err` says what was violated.
pub fn run(seed: u64, cfg: &Config, trace: bool) -> Result<Summary, String> {
    let mut w = World::new(seed, cfg, trace);
    while w.now < cfg.fault_ticks {
        w.step(true)?;
    }
    w.heal();
    let deadline = cfg.fault_ticks + cfg.settle_ticks;
    loop {
        w.step(false)?;
        if w.now.is_multiple_of(10) && w.settled() {
            break;
        }
        if w.now >= deadline {
            return Err(format!(
                "no convergence {} ticks after healing:\n{}",
                cfg.settle_ticks,
                w.describe()
            ));
        }
    }
    // Every partition takes writes again: one left sealed, or refused as
    // moved by the node that owns it, would not.
    w.client.write_every_partition(cfg);
    let deadline = w.now + cfg.settle_ticks;
    while !w.client.idle() {
        w.step(false)?;
        if w.now >= deadline {
            return Err(format!(
                "writes unacknowledged {} ticks after settling: {:?}\n{}",
                cfg.settle_ticks,
                w.client.refused,
                w.describe()
            ));
        }
    }
    w.check_final()?;
    Ok(w.summary())
}

impl<'a> World<'a> {
    fn new(seed: u64, cfg: &'a Config, trace: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let founders: Vec<NodeId> = (1..=3).map(name).collect();
        let mut ring = Ring::new(
            rng.random(),
            founders[0].clone(),
            founders[0].to_string(),
            cfg.ring_size,
            cfg.n_val,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for n in &founders[1..] {
            ring.stage_join(n, n.to_string());
        }
        ring.commit();
        let mut nodes = BTreeMap::new();
        for (i, n) in founders.iter().enumerate() {
            let node = Node::new(n.clone(), Some(ring.clone()), Vec::new(), i as Tick * 7);
            nodes.insert(n.clone(), Arc::new(Mutex::new(node)));
        }
        let joins = vec![
            (rng.random_range(50..500), name(4)),
            (rng.random_range(200..1200), name(5)),
        ];
        let leaves = (0..rng.random_range(1..=2))
            .map(|_| rng.random_range(900..2200))
            .collect();
        let next_crash = rng.random_range(100..400);
        let mut w = Self {
            cfg,
            rng,
            now: 0,
            net: Net::new(cfg.faults),
            nodes,
            runtimes: BTreeMap::new(),
            port: Arc::new(Mutex::new(Port::new(cfg.request_timeout, trace))),
            client: Client::default(),
            joins,
            leaves,
            next_crash,
            down_until: BTreeMap::new(),
            crashes: 0,
            trace,
        };
        for n in founders {
            w.start(&n);
        }
        w
    }

    fn node(&self, id: &NodeId) -> Option<MutexGuard<'_, Node>> {
        self.nodes.get(id).map(|n| lock(n))
    }

    /// All nodes, locked, in order of their names.
    fn all(&self) -> Vec<MutexGuard<'_, Node>> {
        self.nodes.values().map(|n| lock(n)).collect()
    }

    /// A new start of node `id`: a new host (with a new session) and no
    /// running futures.
    fn start(&mut self, id: &NodeId) {
        let Some(node) = self.nodes.get(id).cloned() else {
            return;
        };
        let session = self.rng.random();
        let host = SimHost::new(
            node,
            self.port.clone(),
            self.cfg.handoff.clone(),
            session,
            self.cfg.drop_chunk_keys,
        );
        self.runtimes.insert(id.clone(), Runtime::new(host));
    }

    /// Run `f` on node `id` (if it exists) and send what it says.
    fn with_node(&mut self, id: &NodeId, f: impl FnOnce(&mut Node, &mut Ctx)) {
        let Some(node) = self.nodes.get(id).cloned() else {
            return;
        };
        let mut node = lock(&node);
        let mut ctx = Ctx {
            now: self.now,
            rng: &mut self.rng,
            cfg: self.cfg,
            out: Vec::new(),
            trace: self.trace,
        };
        f(&mut node, &mut ctx);
        let out = ctx.out;
        drop(node);
        self.route(Addr::Node(id.clone()), out);
    }

    fn route(&mut self, from: Addr, out: Vec<(Addr, Msg)>) {
        for (to, msg) in out {
            self.net
                .send(self.now, &mut self.rng, from.clone(), to, msg);
        }
    }

    fn step(&mut self, faults: bool) -> Result<(), String> {
        lock(&self.port).now = self.now;
        while let Some(e) = self.net.due(self.now) {
            match &e.to {
                Addr::Node(n) => {
                    let reachable = self.node(n).is_some_and(|n| n.up && !n.departed);
                    if reachable {
                        self.deliver(n, e.from, e.msg);
                    }
                }
                Addr::Client => {
                    if let Msg::Reply { id, result } = e.msg {
                        self.client_step(|c, ctx| c.on_reply(ctx, id, result));
                    }
                }
            }
        }
        if faults {
            self.script();
        }
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for id in &ids {
            self.with_node(id, |node, ctx| node.tick(ctx));
        }
        self.run_hosts();
        self.client_step(|c, ctx| c.tick(ctx, &ids, faults));
        self.check_safety()?;
        self.now += 1;
        Ok(())
    }

    /// A message to a running node: handoff calls and answers go to its
    /// host, the rest to the node.
    fn deliver(&mut self, to: &NodeId, from: Addr, msg: Msg) {
        match (msg, &from) {
            (Msg::Handoff { req, body }, Addr::Node(peer)) => {
                if let Some(rt) = self.runtimes.get_mut(to) {
                    rt.receive(peer.clone(), req, body);
                }
            }
            (Msg::HandoffReply { req, body }, _) => lock(&self.port).answer(req, &body),
            (msg, _) => self.with_node(to, |node, ctx| node.on_message(ctx, &from, msg)),
        }
    }

    /// Start the transfers the nodes scheduled, stop the futures of nodes
    /// that have left, poll every running future once (node by node, each
    /// in the order started), and send what they said.
    fn run_hosts(&mut self) {
        for (id, node) in &self.nodes {
            let mut node = lock(node);
            let starts = std::mem::take(&mut node.mem.starts);
            if node.departed {
                self.runtimes.remove(id);
                continue;
            }
            if let Some(rt) = self.runtimes.get_mut(id) {
                for (p, to) in starts {
                    rt.send(p, to);
                }
            }
        }
        for rt in self.runtimes.values_mut() {
            rt.poll();
        }
        let out = std::mem::take(&mut lock(&self.port).outbox);
        for (from, to, msg) in out {
            self.net.send(
                self.now,
                &mut self.rng,
                Addr::Node(from),
                Addr::Node(to),
                msg,
            );
        }
    }

    fn client_step(&mut self, f: impl FnOnce(&mut Client, &mut Ctx)) {
        let mut ctx = Ctx {
            now: self.now,
            rng: &mut self.rng,
            cfg: self.cfg,
            out: Vec::new(),
            trace: false,
        };
        f(&mut self.client, &mut ctx);
        let out = ctx.out;
        self.route(Addr::Client, out);
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>6}] world: {}", self.now, what());
        }
    }

    /// Joins, leaves, crashes and restarts chosen by the seed.
    fn script(&mut self) {
        let now = self.now;
        let seeds: Vec<NodeId> = (1..=3).map(name).collect();
        let joining: Vec<NodeId> = self
            .joins
            .iter()
            .filter(|(t, _)| *t == now)
            .map(|(_, j)| j.clone())
            .collect();
        for j in joining {
            self.log(|| format!("{j} starts and joins"));
            let node = Node::new(j.clone(), None, seeds.clone(), now % 13);
            self.nodes.insert(j.clone(), Arc::new(Mutex::new(node)));
            self.start(&j);
        }
        let due = self.leaves.iter().filter(|t| **t <= now).count();
        self.leaves.retain(|t| *t > now);
        for _ in 0..due {
            if !self.stage_leave() {
                self.leaves.push(now + 50);
            }
        }
        let back: Vec<NodeId> = self
            .down_until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in back {
            self.restart(&n);
        }
        if now >= self.next_crash {
            self.next_crash = now + self.rng.random_range(80..300);
            let up: Vec<NodeId> = self
                .all()
                .iter()
                .filter(|n| n.up && !n.departed)
                .map(|n| n.id.clone())
                .collect();
            if self.down_until.len() < 2 && !up.is_empty() {
                let victim = up[self.rng.random_range(0..up.len())].clone();
                let until = now + self.rng.random_range(20..250);
                self.log(|| format!("{victim} crashes until {until}"));
                if let Some(mut n) = self.node(&victim) {
                    n.crash();
                }
                // Its futures die with it: transfers, calls, answers.
                self.runtimes.remove(&victim);
                self.down_until.insert(victim, until);
                self.crashes += 1;
            }
        }
    }

    fn restart(&mut self, n: &NodeId) {
        self.log(|| format!("{n} restarts"));
        self.down_until.remove(n);
        if let Some(mut node) = self.node(n) {
            node.up = true;
        }
        self.start(n);
    }

    /// An operator on a random node stages a member to leave and commits.
    /// Keeps at least three full members.
    fn stage_leave(&mut self) -> bool {
        let up: Vec<NodeId> = self
            .all()
            .iter()
            .filter(|n| n.up && !n.departed && n.ring().is_some())
            .map(|n| n.id.clone())
            .collect();
        if up.is_empty() {
            return false;
        }
        let at = up[self.rng.random_range(0..up.len())].clone();
        let Some(ring) = self.node(&at).and_then(|n| n.disk.ring.clone()) else {
            return false;
        };
        let valid: Vec<NodeId> = ring
            .members()
            .iter()
            .filter(|(_, m)| m.status == MemberStatus::Valid)
            .map(|(n, _)| n.clone())
            .collect();
        if valid.len() <= 3 {
            return false;
        }
        let victim = valid[self.rng.random_range(0..valid.len())].clone();
        let mut result = Ok(Default::default());
        self.with_node(&at, |node, ctx| {
            result = node.change_ring(ctx, |r| {
                r.stage_leave(&victim)?;
                Ok(r.commit())
            });
        });
        self.log(|| format!("at {at}: {victim} leaves: {result:?}"));
        result.is_ok()
    }

    fn heal(&mut self) {
        self.log(|| "the network heals".into());
        let down: Vec<NodeId> = self.down_until.keys().cloned().collect();
        for n in down {
            self.restart(&n);
        }
        self.net.faults.drop = 0.0;
        self.net.faults.duplicate = 0.0;
        self.net.faults.stall = 0.0;
    }

    /// The node serving each partition now (owner by its own ring, not
    /// moved away); an error if two serve one.
    fn servers(
        nodes: &[MutexGuard<'_, Node>],
        now: Tick,
        cfg: &Config,
    ) -> Result<Vec<Option<usize>>, String> {
        let mut servers: Vec<Option<usize>> = vec![None; cfg.ring_size as usize];
        for (i, n) in nodes.iter().enumerate() {
            if !n.up || n.departed {
                continue;
            }
            let Some(ring) = n.ring() else { continue };
            for p in ring.owned_by(&n.id) {
                if n.mem.moved.contains_key(&p) {
                    continue;
                }
                if let Some(other) = servers[p.index()].replace(i) {
                    return Err(format!(
                        "tick {now}: partition {p} is served by both {} and {}",
                        nodes[other].id, n.id
                    ));
                }
            }
        }
        Ok(servers)
    }

    /// After every step: one server per partition, no stale read, and
    /// (every few steps) the server of each key holds its acknowledged write.
    fn check_safety(&self) -> Result<(), String> {
        if let Some(v) = &self.client.violation {
            return Err(v.clone());
        }
        let nodes = self.all();
        let servers = Self::servers(&nodes, self.now, self.cfg)?;
        if !self.now.is_multiple_of(25) {
            return Ok(());
        }
        for (key, (version, _)) in &self.client.acked {
            let p = self.cfg.partition(key);
            if let Some(i) = servers[p.index()] {
                let n = &nodes[i];
                let held = n.disk.data.get(&p).and_then(|d| d.get(key));
                if held.is_none_or(|(v, _)| v < version) {
                    return Err(format!(
                        "tick {}: {} serves partition {p} but holds {key} at {:?}, \
                         version {version} was acknowledged",
                        self.now, n.id, held
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ring of the first node still running (not left).
    fn first_ring(&self) -> Option<Arc<Ring>> {
        self.all()
            .iter()
            .find(|n| !n.departed)
            .and_then(|n| n.disk.ring.clone())
    }

    fn settled(&self) -> bool {
        let Some(first) = self.first_ring() else {
            return false;
        };
        let digest = first.digest();
        let replans = !self.cfg.as_written.no_replan;
        let quiet = first.transfers().is_empty()
            && (!replans || first.plan().is_empty())
            && first.members().values().all(|m| {
                !matches!(
                    m.status,
                    MemberStatus::Joining | MemberStatus::Leaving | MemberStatus::Exiting
                )
            });
        quiet
            && self.all().iter().filter(|n| !n.departed).all(|n| {
                n.up && n.mem.running.is_empty()
                    && self.runtimes.get(&n.id).is_some_and(Runtime::is_idle)
                    && n.ring().is_some_and(|r| r.digest() == digest)
                    && n.ring()
                        .and_then(|r| r.member(&n.id))
                        .is_some_and(|m| m.status == MemberStatus::Valid)
            })
    }

    fn check_final(&self) -> Result<(), String> {
        let ring = self.first_ring().ok_or("no ring left")?;
        let claimants: Vec<&NodeId> = ring
            .members()
            .iter()
            .filter(|(_, m)| m.status == MemberStatus::Valid)
            .map(|(n, _)| n)
            .collect();
        let q = self.cfg.ring_size as usize;
        let (lo, hi) = (q / claimants.len(), q.div_ceil(claimants.len()));
        for c in &claimants {
            let owned = ring.owned_by(c).count();
            if owned + 1 < lo || owned > hi + 1 {
                return Err(format!(
                    "unbalanced: {c} owns {owned} of {q} partitions with {} members\n{}",
                    claimants.len(),
                    self.describe()
                ));
            }
        }
        let servers = Self::servers(&self.all(), self.now, self.cfg)?;
        if let Some(p) = servers.iter().position(Option::is_none) {
            return Err(format!(
                "partition {p} is served by no node after settling\n{}",
                self.describe()
            ));
        }
        for (key, (version, value)) in &self.client.acked {
            let p = self.cfg.partition(key);
            let owner = ring.owner(p).ok_or("partition without owner")?;
            let held = self
                .node(owner)
                .and_then(|n| n.disk.data.get(&p).and_then(|d| d.get(key)).cloned());
            let ok = held.as_ref().is_some_and(|(v, val)| {
                v > version && *val == value_of(key, *v) || (v == version && val == value)
            });
            if !ok {
                return Err(format!(
                    "lost write: {key} (partition {p}) was acknowledged at version \
                     {version}, its owner {owner} holds {held:?}"
                ));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for n in self.all() {
            let ring = n.ring();
            s += &format!(
                "  {} up={} departed={} digest={:016x} status={:?} owns={:?} moved={:?} \
                 transfers={:?} running={:?} sending={:?}\n",
                n.id,
                n.up,
                n.departed,
                ring.map_or(0, |r| r.digest()),
                ring.and_then(|r| r.member(&n.id)).map(|m| m.status),
                ring.map(|r| r.owned_by(&n.id).map(|p| p.0).collect::<Vec<_>>()),
                n.mem.moved,
                ring.map(|r| r
                    .transfers()
                    .iter()
                    .map(|t| format!("{}:{}->{}", t.partition, t.from, t.to))
                    .collect::<Vec<_>>()),
                n.mem.running,
                n.mem
                    .book
                    .sending()
                    .iter()
                    .map(|t| format!(
                        "{}->{}@{} (attempt {})",
                        t.partition, t.to, t.phase, t.attempts
                    ))
                    .collect::<Vec<_>>(),
            );
        }
        s
    }

    fn summary(&self) -> Summary {
        let ring = self.first_ring();
        Summary {
            settled_at: self.now,
            writes_acked: self.client.writes_acked,
            reads_done: self.client.reads_done,
            messages: self.net.sent,
            dropped: self.net.dropped,
            crashes: self.crashes,
            handoffs: self.all().iter().map(|n| n.disk.handed_off).sum(),
            members: ring.map_or(0, |r| {
                r.members()
                    .values()
                    .filter(|m| m.status == MemberStatus::Valid)
                    .count()
            }),
            refused: self.client.refused.clone(),
        }
    }
}
