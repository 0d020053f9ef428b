//! The whole cluster in one loop: deliver what is due, play the script
//! (joins, leaves, crashes), let every node and the client act, check
//! safety, advance the clock. After `fault_ticks` the network heals and the
//! cluster must settle; then liveness and the history are checked.

use super::client::{value_of, Client};
use super::config::Config;
use super::msg::{Addr, Msg, Tick};
use super::net::Net;
use super::node::{Ctx, Node};
use colony_core::{MemberStatus, NodeId, Ring};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

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
    nodes: BTreeMap<NodeId, Node>,
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
            nodes.insert(n.clone(), node);
        }
        let joins = vec![
            (rng.random_range(50..500), name(4)),
            (rng.random_range(200..1200), name(5)),
        ];
        let leaves = (0..rng.random_range(1..=2))
            .map(|_| rng.random_range(900..2200))
            .collect();
        let next_crash = rng.random_range(100..400);
        Self {
            cfg,
            rng,
            now: 0,
            net: Net::new(cfg.faults),
            nodes,
            client: Client::default(),
            joins,
            leaves,
            next_crash,
            down_until: BTreeMap::new(),
            crashes: 0,
            trace,
        }
    }

    /// Run `f` on node `id` (if it exists) and send what it says.
    fn with_node(&mut self, id: &NodeId, f: impl FnOnce(&mut Node, &mut Ctx)) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        let mut ctx = Ctx {
            now: self.now,
            rng: &mut self.rng,
            cfg: self.cfg,
            out: Vec::new(),
            trace: self.trace,
        };
        f(node, &mut ctx);
        let out = ctx.out;
        self.route(Addr::Node(id.clone()), out);
    }

    fn route(&mut self, from: Addr, out: Vec<(Addr, Msg)>) {
        for (to, msg) in out {
            self.net
                .send(self.now, &mut self.rng, from.clone(), to, msg);
        }
    }

    fn step(&mut self, faults: bool) -> Result<(), String> {
        while let Some(e) = self.net.due(self.now) {
            match &e.to {
                Addr::Node(n) => {
                    let reachable = self.nodes.get(n).is_some_and(|n| n.up && !n.departed);
                    if reachable {
                        let from = e.from;
                        self.with_node(n, |node, ctx| node.on_message(ctx, &from, e.msg));
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
        self.client_step(|c, ctx| c.tick(ctx, &ids, faults));
        self.check_safety()?;
        self.now += 1;
        Ok(())
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
        for (_, j) in self.joins.iter().filter(|(t, _)| *t == now) {
            self.log(|| format!("{j} starts and joins"));
            let node = Node::new(j.clone(), None, seeds.clone(), now % 13);
            self.nodes.insert(j.clone(), node);
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
                .nodes
                .values()
                .filter(|n| n.up && !n.departed)
                .map(|n| n.id.clone())
                .collect();
            if self.down_until.len() < 2 && !up.is_empty() {
                let victim = up[self.rng.random_range(0..up.len())].clone();
                let until = now + self.rng.random_range(20..250);
                self.log(|| format!("{victim} crashes until {until}"));
                if let Some(n) = self.nodes.get_mut(&victim) {
                    n.crash();
                }
                self.down_until.insert(victim, until);
                self.crashes += 1;
            }
        }
    }

    fn restart(&mut self, n: &NodeId) {
        self.log(|| format!("{n} restarts"));
        self.down_until.remove(n);
        if let Some(node) = self.nodes.get_mut(n) {
            node.up = true;
        }
    }

    /// An operator on a random node stages a member to leave and commits.
    /// Keeps at least three full members.
    fn stage_leave(&mut self) -> bool {
        let up: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.up && !n.departed && n.ring().is_some())
            .map(|n| n.id.clone())
            .collect();
        if up.is_empty() {
            return false;
        }
        let at = up[self.rng.random_range(0..up.len())].clone();
        let Some(ring) = self.nodes.get(&at).and_then(|n| n.ring()) else {
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
    fn servers(&self) -> Result<Vec<Option<&Node>>, String> {
        let mut servers: Vec<Option<&Node>> = vec![None; self.cfg.ring_size as usize];
        for n in self.nodes.values().filter(|n| n.up && !n.departed) {
            let Some(ring) = n.ring() else { continue };
            for p in ring.owned_by(&n.id) {
                if n.mem.moved.contains_key(&p) {
                    continue;
                }
                if let Some(other) = servers[p.index()].replace(n) {
                    return Err(format!(
                        "tick {}: partition {p} is served by both {} and {}",
                        self.now, other.id, n.id
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
        let servers = self.servers()?;
        if !self.now.is_multiple_of(25) {
            return Ok(());
        }
        for (key, (version, _)) in &self.client.acked {
            let p = self.cfg.partition(key);
            if let Some(n) = servers[p.index()] {
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

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| !n.departed)
    }

    fn settled(&self) -> bool {
        let Some(first) = self.running().next().and_then(|n| n.ring()) else {
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
            && self.running().all(|n| {
                n.up && n.mem.sending.is_empty()
                    && n.ring().is_some_and(|r| r.digest() == digest)
                    && n.ring()
                        .and_then(|r| r.member(&n.id))
                        .is_some_and(|m| m.status == MemberStatus::Valid)
            })
    }

    fn check_final(&self) -> Result<(), String> {
        let ring = self
            .running()
            .next()
            .and_then(|n| n.ring())
            .ok_or("no ring left")?;
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
        let servers = self.servers()?;
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
                .nodes
                .get(owner)
                .and_then(|n| n.disk.data.get(&p))
                .and_then(|d| d.get(key));
            let ok = held.is_some_and(|(v, val)| {
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
        for n in self.nodes.values() {
            let ring = n.ring();
            s += &format!(
                "  {} up={} departed={} digest={:016x} status={:?} owns={:?} moved={:?} \
                 transfers={:?} sending={:?}\n",
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
                n.mem
                    .sending
                    .values()
                    .map(|s| format!("{}@{:?}", s.xfer, s.step))
                    .collect::<Vec<_>>(),
            );
        }
        s
    }

    fn summary(&self) -> Summary {
        let ring = self.running().next().and_then(|n| n.ring());
        Summary {
            settled_at: self.now,
            writes_acked: self.client.writes_acked,
            reads_done: self.client.reads_done,
            messages: self.net.sent,
            dropped: self.net.dropped,
            crashes: self.crashes,
            handoffs: self.nodes.values().map(|n| n.disk.handed_off).sum(),
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
