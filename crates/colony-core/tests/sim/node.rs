//! A simulated node: what survives a restart (its ring and its data) and
//! what does not, ring gossip, joining, leaving, re-planning, scheduling
//! transfers and dropping data it no longer replicates. The scheduling
//! and dropping are a model of `cluster/maintain.rs` (which is written
//! against tokio and the membership crate); the transfers they start run
//! the real `cluster/handoff.rs` (see `host.rs`, `store.rs`). Serving
//! clients is in `serve.rs`.

use super::config::Config;
use super::msg::{Addr, Msg, Tick};
use colony_core::cluster::{DropStep, HandoffBook};
use colony_core::{CoreError, MemberStatus, NodeId, PartitionId, Ring};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub type Partition = BTreeMap<String, (u64, String)>;

/// What a step of a node may use: the clock, the seeded RNG and an outbox.
pub struct Ctx<'a> {
    pub now: Tick,
    pub rng: &'a mut StdRng,
    pub cfg: &'a Config,
    pub out: Vec<(Addr, Msg)>,
    pub trace: bool,
}

impl Ctx<'_> {
    pub fn send(&mut self, to: &NodeId, msg: Msg) {
        self.out.push((Addr::Node(to.clone()), msg));
    }

    pub fn log(&self, who: &NodeId, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>6}] {who}: {}", self.now, what());
        }
    }
}

/// Survives restarts.
#[derive(Default)]
pub struct Disk {
    pub ring: Option<Arc<Ring>>,
    pub data: BTreeMap<PartitionId, Partition>,
    /// Ranges this node has marked moved (handed over), for the summary.
    pub handed_off: u64,
}

/// Lost on restart.
#[derive(Default)]
pub struct Mem {
    /// Keys written since the store was asked to record them (`begin`).
    pub tracking: BTreeMap<PartitionId, BTreeSet<String>>,
    pub sealed: BTreeSet<PartitionId>,
    pub moved: BTreeMap<PartitionId, NodeId>,
    /// Partitions whose transfer is running here.
    pub running: BTreeSet<PartitionId>,
    /// Transfers scheduled in this step, for the world to start.
    pub starts: Vec<(PartitionId, NodeId)>,
    /// The handoff bookkeeping of this start of the node, shared with its
    /// host (transfers received, for dropping).
    pub book: Arc<HandoffBook>,
    pub peers: BTreeMap<NodeId, Report>,
}

/// A digest of an encoded ring, as membership gossip carries it. (Hashing
/// the bytes received spares re-encoding; `Ring::digest` does the same.)
pub fn fingerprint(encoded: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    encoded.hash(&mut h);
    h.finish()
}

/// The last ring digest heard from a peer, as membership gossip carries it.
pub struct Report {
    pub digest: u64,
    pub sent: Tick,
    pub heard: Tick,
}

pub struct Node {
    pub id: NodeId,
    /// Whom a joiner asks to let it in.
    pub seeds: Vec<NodeId>,
    pub disk: Disk,
    pub mem: Mem,
    pub up: bool,
    /// Left the cluster and stopped.
    pub departed: bool,
    /// Offsets this node's periodic work from the others'.
    pub phase: Tick,
}

impl Node {
    pub fn new(id: NodeId, ring: Option<Ring>, seeds: Vec<NodeId>, phase: Tick) -> Self {
        Self {
            id,
            seeds,
            disk: Disk {
                ring: ring.map(Arc::new),
                ..Disk::default()
            },
            mem: Mem::default(),
            up: true,
            departed: false,
            phase,
        }
    }

    pub fn crash(&mut self) {
        self.up = false;
        self.mem = Mem::default();
    }

    pub fn ring(&self) -> Option<&Ring> {
        self.disk.ring.as_deref()
    }

    pub fn is_live(&self, peer: &NodeId, now: Tick, cfg: &Config) -> bool {
        self.mem
            .peers
            .get(peer)
            .is_some_and(|r| now.saturating_sub(r.heard) <= cfg.live_window)
    }

    fn others(&self) -> Vec<NodeId> {
        self.ring()
            .map(|r| {
                r.members()
                    .iter()
                    .filter(|(n, m)| **n != self.id && m.status != MemberStatus::Left)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tick(&mut self, ctx: &mut Ctx) {
        if !self.up || self.departed {
            return;
        }
        let t = ctx.now + self.phase;
        if self.disk.ring.is_none() {
            if t.is_multiple_of(ctx.cfg.join_retry) && !self.seeds.is_empty() {
                let seed = self.seeds[ctx.rng.random_range(0..self.seeds.len())].clone();
                ctx.log(&self.id, || format!("asks {seed} to join"));
                ctx.send(&seed, Msg::Join);
            }
            return;
        }
        if !t.is_multiple_of(ctx.cfg.gossip_every) {
            return;
        }
        self.gossip(ctx);
        self.retire(ctx);
        self.replan(ctx);
        if self.check_left(ctx) {
            return;
        }
        self.start_handoffs(ctx);
        if t.is_multiple_of(ctx.cfg.gossip_every * ctx.cfg.drop_every) {
            self.drop_foreign(ctx);
        }
    }

    fn exchange(&self, ctx: &Ctx, reply: bool) -> Option<Msg> {
        Some(Msg::Exchange {
            ring: self.ring()?.encode(),
            sent: ctx.now,
            reply,
        })
    }

    fn gossip(&mut self, ctx: &mut Ctx) {
        let peers = self.others();
        if peers.is_empty() {
            return;
        }
        let peer = peers[ctx.rng.random_range(0..peers.len())].clone();
        if let Some(m) = self.exchange(ctx, true) {
            ctx.send(&peer, m);
        }
    }

    /// Send our ring to every other member (after a local change).
    pub fn push(&mut self, ctx: &mut Ctx) {
        if let Some(m) = self.exchange(ctx, true) {
            for peer in self.others() {
                ctx.send(&peer, m.clone());
            }
        }
    }

    /// Change the ring locally, keep it, and push it to every member.
    pub fn change_ring<T>(
        &mut self,
        ctx: &mut Ctx,
        f: impl FnOnce(&mut Ring) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let Some(ours) = &self.disk.ring else {
            return Err(CoreError::BadRing("no ring yet".into()));
        };
        let mut ring = (**ours).clone();
        let out = f(&mut ring)?;
        if ring != **ours {
            self.disk.ring = Some(Arc::new(ring));
            self.push(ctx);
        }
        Ok(out)
    }

    /// Fold a peer's ring into ours (or take it, if we have none and it
    /// lists us), noting the peer's digest. Returns whether ours changed.
    pub fn merge_in(&mut self, ctx: &mut Ctx, from: &NodeId, bytes: &[u8], sent: Tick) -> bool {
        let theirs = match Ring::decode(bytes) {
            Ok(r) => r,
            Err(e) => panic!("{} sent an undecodable ring: {e}", from),
        };
        let r = self.mem.peers.entry(from.clone()).or_insert(Report {
            digest: 0,
            sent: 0,
            heard: 0,
        });
        r.heard = ctx.now;
        if sent >= r.sent {
            r.sent = sent;
            r.digest = fingerprint(bytes);
        }
        match &mut self.disk.ring {
            Some(ours) => match Arc::make_mut(ours).merge(&theirs) {
                Ok(changed) => changed,
                Err(e) => panic!("{}: merging {from}'s ring: {e}", self.id),
            },
            None if theirs.member(&self.id).is_some() => {
                ctx.log(&self.id, || format!("takes the ring from {from}"));
                self.disk.ring = Some(Arc::new(theirs));
                true
            }
            None => false,
        }
    }

    pub fn on_message(&mut self, ctx: &mut Ctx, from: &Addr, msg: Msg) {
        let Addr::Node(peer) = from else {
            if let Msg::Request { id, op } = msg {
                self.coordinate(ctx, id, op, 0);
            }
            return;
        };
        match msg {
            Msg::Join => self.on_join(ctx, peer),
            Msg::JoinReply {
                ring: Ok(ring),
                sent,
            } => {
                self.merge_in(ctx, peer, &ring, sent);
            }
            Msg::JoinReply { ring: Err(e), .. } => {
                ctx.log(&self.id, || format!("join refused: {e}"))
            }
            Msg::Exchange { ring, sent, reply } => {
                if self.disk.ring.is_none() {
                    return;
                }
                self.merge_in(ctx, peer, &ring, sent);
                if reply {
                    if let Some(m) = self.exchange(ctx, false) {
                        ctx.send(peer, m);
                    }
                }
            }
            // The world hands these to the node's host.
            Msg::Handoff { .. } | Msg::HandoffReply { .. } => {}
            Msg::Forward { id, op, hops } => {
                let result = self.serve(ctx, &op);
                ctx.send(
                    peer,
                    Msg::Answer {
                        id,
                        op,
                        hops,
                        result,
                    },
                );
            }
            Msg::Answer {
                id,
                op,
                hops,
                result,
            } => self.on_answer(ctx, id, op, hops, result),
            Msg::Request { .. } | Msg::Reply { .. } => {}
        }
    }

    /// As `Control::Join`: stage and commit at once (auto-commit), unless
    /// the node is a member that already owns partitions.
    fn on_join(&mut self, ctx: &mut Ctx, joiner: &NodeId) {
        let Some(ring) = self.ring() else { return };
        if let Some(m) = ring.member(joiner) {
            let owned = ring.owned_by(joiner).count();
            if owned > 0 && m.status != MemberStatus::Down {
                // A member back without its ring takes its place again when
                // its keys have replicas elsewhere.
                let sent = ctx.now;
                let ring = if ring.n_val() >= 2 {
                    Ok(ring.encode())
                } else {
                    Err(format!(
                        "{joiner} is already a member owning {owned} partitions"
                    ))
                };
                ctx.send(joiner, Msg::JoinReply { ring, sent });
                return;
            }
        }
        let j = joiner.clone();
        let plan = self.change_ring(ctx, |r| {
            r.stage_join(&j, j.to_string());
            Ok(r.commit())
        });
        ctx.log(&self.id, || format!("lets {joiner} in: {plan:?}"));
        if let Some(ring) = self.ring().map(|r| r.encode()) {
            let sent = ctx.now;
            ctx.send(
                joiner,
                Msg::JoinReply {
                    ring: Ok(ring),
                    sent,
                },
            );
        }
    }

    fn retire(&mut self, ctx: &mut Ctx) {
        if self.ring().is_some_and(|r| r.clone().retire_exited()) {
            let _ = self.change_ring(ctx, |r| Ok(r.retire_exited()));
        }
    }

    /// Commit again when nothing else would. Two ways a ring gets stuck
    /// with no commit to come: a hand-over lands on a member after a commit
    /// re-planned its partition away from the previous owner (the hand-over
    /// voids that plan), so an exiting member owns a partition nobody is to
    /// take and can never finish leaving; and concurrent commits and
    /// hand-overs mix plans, so the ring settles unbalanced. Here (as
    /// `rebalance` in spirit) the stranded owner commits, and the first
    /// full member commits when no move is under way but a commit would
    /// plan one; an earlier version re-planned nothing (`no-replan`).
    fn replan(&mut self, ctx: &mut Ctx) {
        if ctx.cfg.as_written.no_replan {
            return;
        }
        let Some(ring) = self.ring() else { return };
        let status = ring.member(&self.id).map(|m| m.status);
        let leaving = matches!(status, Some(MemberStatus::Exiting | MemberStatus::Left));
        let stranded = leaving && ring.owned_by(&self.id).any(|p| ring.next(p).is_none());
        let first_valid = ring
            .members()
            .iter()
            .find(|(_, m)| m.status == MemberStatus::Valid)
            .map(|(n, _)| n);
        let unsettled =
            first_valid == Some(&self.id) && ring.transfers().is_empty() && !ring.plan().is_empty();
        if stranded || unsettled {
            let plan = self.change_ring(ctx, |r| Ok(r.commit()));
            ctx.log(&self.id, || format!("re-plans: {plan:?}"));
        }
    }

    /// Stop once our ring says we have left: as `maintain` does, once we
    /// own nothing, nothing is planned to come to us (a hand-over can race
    /// our retirement) and every member reports our ring (so the
    /// hand-overs that emptied us have reached them all). An earlier
    /// version stopped at once (`leave-at-once`).
    fn check_left(&mut self, ctx: &mut Ctx) -> bool {
        let Some(ring) = self.ring() else {
            return false;
        };
        if ring.member(&self.id).map(|m| m.status) != Some(MemberStatus::Left) {
            return false;
        }
        let idle = ring.owned_by(&self.id).next().is_none()
            && ring.transfers().iter().all(|t| t.to != self.id);
        if ctx.cfg.as_written.leave_at_once || (idle && self.converged(ctx, false)) {
            ctx.log(&self.id, || "has left: stops".into());
            self.departed = true;
        }
        self.departed
    }

    /// As `converged`: every other member (not left) last reported the
    /// ring we hold; with `live_only`, members not heard from lately are
    /// passed over.
    fn converged(&self, ctx: &Ctx, live_only: bool) -> bool {
        let Some(ring) = self.ring() else {
            return false;
        };
        let digest = fingerprint(&ring.encode());
        self.others().iter().all(|n| {
            (live_only && !self.is_live(n, ctx.now, ctx.cfg))
                || self.mem.peers.get(n).is_some_and(|r| r.digest == digest)
        })
    }

    /// As `start_handoffs`: start a transfer of each partition this node
    /// is to hand to a live member, a few at a time.
    fn start_handoffs(&mut self, ctx: &mut Ctx) {
        let Some(ring) = self.disk.ring.clone() else {
            return;
        };
        for t in ring.transfers() {
            if t.from != self.id
                || self.mem.running.contains(&t.partition)
                || !self.is_live(&t.to, ctx.now, ctx.cfg)
            {
                continue;
            }
            if self.mem.running.len() >= ctx.cfg.handoff.concurrency {
                break;
            }
            ctx.log(&self.id, || {
                format!("starts sending {} to {}", t.partition, t.to)
            });
            self.mem.running.insert(t.partition);
            self.mem.starts.push((t.partition, t.to));
        }
    }

    /// As `drop_foreign`: once the members report the ring we hold, forget
    /// transfers to us that are over, and (unless a transfer of ours is
    /// running) remove data we neither replicate nor receive. All members
    /// count, by the last ring each reported (an earlier version counted
    /// only live ones: `drop-live-only`). A partition goes a step (`drop_chunk_keys`
    /// keys) per pass, the conditions checked before each, so a partition
    /// may stay half dropped across ring changes, transfers and restarts.
    fn drop_foreign(&mut self, ctx: &mut Ctx) {
        let Some(ring) = self.disk.ring.clone() else {
            return;
        };
        if !self.converged(ctx, ctx.cfg.as_written.drop_live_only) {
            return;
        }
        let me = self.id.clone();
        self.mem
            .book
            .retain_incoming(|vnode| ring.next(vnode) == Some(&me));
        if !self.mem.running.is_empty() {
            // A transfer this node sends may still read any range.
            return;
        }
        let foreign: Vec<PartitionId> = self
            .disk
            .data
            .iter()
            .filter(|(p, d)| {
                !d.is_empty() && !ring.replicates(**p, &me) && !self.mem.book.receiving(**p)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in foreign {
            match self.drop_step(p, true, ctx.cfg.drop_chunk_keys) {
                DropStep::Done => ctx.log(&me, || format!("has dropped foreign partition {p}")),
                _ => ctx.log(&me, || format!("drops keys of foreign partition {p}")),
            }
        }
    }

    /// The store's `drop_some`: `start` forgets the partition's handoff
    /// state; then up to `keys` keys go. (The sim keeps no drop cursor:
    /// its drop pass checks its conditions before every step instead.)
    pub fn drop_step(&mut self, p: PartitionId, start: bool, keys: usize) -> DropStep {
        if start {
            self.mem.sealed.remove(&p);
            self.mem.tracking.remove(&p);
        }
        let Some(data) = self.disk.data.get_mut(&p) else {
            return DropStep::Done;
        };
        let step: Vec<String> = data.keys().take(keys).cloned().collect();
        for k in &step {
            data.remove(k);
        }
        if data.is_empty() {
            self.disk.data.remove(&p);
            self.mem.moved.remove(&p);
            DropStep::Done
        } else {
            DropStep::More
        }
    }
}
