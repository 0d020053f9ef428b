//! A simulated node: what survives a restart (its ring and its data) and
//! what does not, ring gossip, joining, leaving, re-planning and dropping
//! data it no longer owns. Handoff is in `handoff.rs`, serving clients in
//! `serve.rs`.

use super::config::Config;
use super::handoff::{Sender, Tracking};
use super::msg::{Addr, Msg, Tick, XferId};
use colony_core::{CoreError, MemberStatus, NodeId, PartitionId, Ring};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

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
    pub ring: Option<Ring>,
    pub data: BTreeMap<PartitionId, Partition>,
    /// The newest transfer accepted per partition (the sim's protocol).
    pub accepted: BTreeMap<PartitionId, XferId>,
    /// Dirty-tracking sessions started, so ids never repeat.
    pub sessions: u64,
    /// Partitions this node has handed over.
    pub handed_off: u64,
    /// Request ids never repeat, across restarts too: an answer to a
    /// request sent before a crash must not pass for a new one's (an RPC
    /// layer matches answers to its own connections).
    pub next_req: u64,
}

/// Lost on restart.
#[derive(Default)]
pub struct Mem {
    pub tracking: BTreeMap<PartitionId, Tracking>,
    pub sealed: BTreeSet<PartitionId>,
    pub moved: BTreeMap<PartitionId, NodeId>,
    pub sending: BTreeMap<PartitionId, Sender>,
    /// Transfers being received: partition -> (id, resume cursor).
    pub incoming: BTreeMap<PartitionId, (XferId, Option<String>)>,
    pub peers: BTreeMap<NodeId, Report>,
    /// Stamps dirty keys, so an acknowledged send clears only what it sent.
    pub writes: u64,
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
    pub sees_me_left: bool,
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
                ring,
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
        self.disk.ring.as_ref()
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
        self.handoff_timeouts(ctx);
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
        let mut ring = ours.clone();
        let out = f(&mut ring)?;
        if &ring != ours {
            self.disk.ring = Some(ring);
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
            sees_me_left: false,
        });
        r.heard = ctx.now;
        if sent >= r.sent {
            r.sent = sent;
            r.digest = fingerprint(bytes);
            r.sees_me_left = theirs
                .member(&self.id)
                .is_some_and(|m| m.status == MemberStatus::Left);
        }
        match &mut self.disk.ring {
            Some(ours) => match ours.merge(&theirs) {
                Ok(changed) => changed,
                Err(e) => panic!("{}: merging {from}'s ring: {e}", self.id),
            },
            None if theirs.member(&self.id).is_some() => {
                ctx.log(&self.id, || format!("takes the ring from {from}"));
                self.disk.ring = Some(theirs);
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
            Msg::Begin { .. } | Msg::Chunk { .. } | Msg::Commit { .. } => {
                self.receive(ctx, peer, msg)
            }
            Msg::HandoffReply { req, reply } => self.on_handoff_reply(ctx, peer, req, reply),
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
    /// hand-overs mix plans, so the ring settles unbalanced. As written
    /// nothing re-plans; in the sim's protocol the stranded owner commits,
    /// and the first full member commits when no move is under way but a
    /// commit would plan one.
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

    /// Stop once our ring says we have left: as written at once; in the
    /// sim's protocol once we own nothing, nothing is planned to come to
    /// us (a hand-over can race our retirement) and every member has told
    /// us it knows.
    fn check_left(&mut self, ctx: &mut Ctx) -> bool {
        let Some(ring) = self.ring() else {
            return false;
        };
        if ring.member(&self.id).map(|m| m.status) != Some(MemberStatus::Left) {
            return false;
        }
        let idle = ring.owned_by(&self.id).next().is_none()
            && ring.transfers().iter().all(|t| t.to != self.id);
        let everyone_knows = self
            .others()
            .iter()
            .all(|n| self.mem.peers.get(n).is_some_and(|r| r.sees_me_left));
        if ctx.cfg.as_written.leave_at_once || (idle && everyone_knows) {
            ctx.log(&self.id, || "has left: stops".into());
            self.departed = true;
        }
        self.departed
    }

    fn start_handoffs(&mut self, ctx: &mut Ctx) {
        let Some(ring) = self.ring() else { return };
        for t in ring.transfers() {
            if t.from != self.id
                || self.mem.sending.contains_key(&t.partition)
                || !self.is_live(&t.to, ctx.now, ctx.cfg)
            {
                continue;
            }
            if self.mem.sending.len() >= ctx.cfg.handoff_concurrency {
                break;
            }
            self.start_transfer(ctx, t.partition, t.to);
        }
    }

    /// As `drop_foreign`: remove partitions we neither own nor receive once
    /// the members report the ring we hold. As written only live members
    /// count; in the sim's protocol all do, by the last ring each reported.
    /// A partition goes a step (`drop_chunk_keys` keys) per pass, the
    /// conditions checked before each, so a partition may stay half dropped
    /// across ring changes, transfers and restarts.
    fn drop_foreign(&mut self, ctx: &mut Ctx) {
        let Some(ring) = self.ring() else { return };
        let digest = fingerprint(&ring.encode());
        let live_only = ctx.cfg.as_written.drop_live_only;
        let converged = self.others().iter().all(|n| {
            (live_only && !self.is_live(n, ctx.now, ctx.cfg))
                || self.mem.peers.get(n).is_some_and(|r| r.digest == digest)
        });
        if !converged {
            return;
        }
        let foreign: Vec<PartitionId> = self
            .disk
            .data
            .iter()
            .filter(|(p, d)| {
                !d.is_empty()
                    && ring.owner(**p) != Some(&self.id)
                    && ring.next(**p) != Some(&self.id)
                    && !self.mem.incoming.contains_key(p)
                    && !self.mem.sending.contains_key(p)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in foreign {
            // A drop under way forgets the handoff state: a transfer to us
            // accepted earlier must start over, not resume past keys gone.
            self.mem.sealed.remove(&p);
            self.mem.tracking.remove(&p);
            if !ctx.cfg.as_written.stale_begin {
                self.disk.accepted.remove(&p);
            }
            let Some(data) = self.disk.data.get_mut(&p) else {
                continue;
            };
            let step: Vec<String> = data.keys().take(ctx.cfg.drop_chunk_keys).cloned().collect();
            for k in &step {
                data.remove(k);
            }
            if data.is_empty() {
                ctx.log(&self.id, || format!("has dropped foreign partition {p}"));
                self.disk.data.remove(&p);
                self.mem.moved.remove(&p);
            } else {
                ctx.log(&self.id, || {
                    format!("drops {} keys of foreign partition {p}", step.len())
                });
            }
        }
    }
}
