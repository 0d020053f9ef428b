//! Request coordinators for replicated keys: who to ask (the preference
//! list, with fallbacks for unreachable replicas), and when enough of them
//! have answered (the quorum tally).
//!
//! A write is applied by one replica, the leader (this node when it holds
//! the key, so a pipelined client's writes apply in order), which returns
//! the key's new state; the coordinator then merges that state into the
//! other replicas and answers once `w` of them (`pw` primaries, `dw` of them
//! durably) hold it. A read asks as many replicas as `r` needs
//! (one more when one fails or is slow), merges the first `r` answers,
//! answers from the merged state, and repairs the replicas that were
//! behind. Replicas converge whatever the order: states are CRDTs.

use colony_core::{NodeId, PartitionId, Ring};
use std::sync::Arc;

mod hint;
mod moving;
mod read;
mod transport;
mod write;

pub use hint::deliver as deliver_hints;
pub use moving::add_pending;
pub use read::read;
pub use transport::{
    is_replica_request, new_repair_budget, refusal, CallFailed, ReplicaTransport,
    REPAIRS_IN_FLIGHT, REPLICA_TIMEOUT,
};
pub use write::write;

/// One key request, as a coordinator serves it.
#[derive(Debug, Clone)]
pub struct KeyReq {
    pub partition: PartitionId,
    pub bucket: bytes::Bytes,
    pub key: bytes::Bytes,
    pub hash: u64,
    pub op: crate::KeyOp,
    pub overrides: crate::props::Overrides,
}

/// One node a request for a key goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: NodeId,
    /// One of the key's replicas (not a fallback).
    pub primary: bool,
    /// A node joining the key's replica set through a planned move (see
    /// `moving.rs`): it takes writes and answers reads, never leads, and
    /// counts only toward the sets of `sets`.
    pub pending: bool,
    /// Unreachable replicas this node stands in for: it keeps a hint for
    /// each and hands the key to them when they are back.
    pub hints: Vec<NodeId>,
    /// The replica sets the key may have after planned moves (bit `j`:
    /// the `j`th of `moving::sets_after_moves`) that this node is in.
    pub sets: u16,
}

impl Target {
    /// A target that is one of the key's replicas now.
    pub fn primary(node: NodeId) -> Self {
        Self {
            node,
            primary: true,
            pending: false,
            hints: Vec::new(),
            sets: 0,
        }
    }

    /// A node standing in for the unreachable replicas `hints`.
    pub fn fallback(node: NodeId, hints: Vec<NodeId>) -> Self {
        Self {
            node,
            primary: false,
            pending: false,
            hints,
            sets: 0,
        }
    }
}

/// The ring's walk of every partition (its replicas, then the other nodes
/// in the order they stand in), computed once per ring: routing a request
/// then costs a lookup, not a walk of the whole ring.
pub struct Placement {
    ring: Arc<Ring>,
    walks: Vec<Vec<NodeId>>,
    replicas: Vec<usize>,
    joining: Vec<NodeId>,
    /// The moves the ring plans: (partition, its next owner).
    moves: Vec<(PartitionId, NodeId)>,
}

impl Placement {
    pub fn new(ring: Arc<Ring>) -> Self {
        let q = ring.ring_size();
        let mut walks = Vec::with_capacity(usize::from(q));
        let mut replicas = Vec::with_capacity(usize::from(q));
        for i in 0..q {
            let p = PartitionId(i);
            walks.push(ring.walk(p).into_iter().cloned().collect());
            replicas.push(ring.replicas(p).len());
        }
        let mut joining: Vec<NodeId> = Vec::new();
        let mut moves = Vec::new();
        for t in ring.transfers() {
            if !ring.owns_any(&t.to) && !joining.contains(&t.to) {
                joining.push(t.to.clone());
            }
            moves.push((t.partition, t.to));
        }
        Self {
            ring,
            walks,
            replicas,
            joining,
            moves,
        }
    }

    /// Nodes that own nothing yet but a planned move will give a
    /// partition: they are on no walk, but keep the buckets every owner
    /// keeps whole (`n_val=all`) from now on, so such writes reach them too.
    pub fn joining(&self) -> &[NodeId] {
        &self.joining
    }

    /// The moves the ring plans: each partition with its next owner.
    pub fn moves(&self) -> &[(PartitionId, NodeId)] {
        &self.moves
    }

    /// The ring this placement was computed from.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// `partition`'s replicas, then its fallbacks, in walk order.
    pub fn walk(&self, partition: PartitionId) -> &[NodeId] {
        self.walks
            .get(partition.index())
            .map_or(&[][..], |w| &w[..])
    }

    /// `partition`'s replicas: the head of its walk.
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        let walk = self.walk(partition);
        let n = self.replicas.get(partition.index()).copied().unwrap_or(0);
        &walk[..n.min(walk.len())]
    }
}

/// The nodes to send a request for `partition` to: the first `n` nodes of
/// its walk that are live (its replicas; with `n_val=all`, `n` is the whole
/// walk), and for each one that is not, a fallback (the next live node on
/// the ring walk that is not already a target, or else a live replica,
/// which then keeps the hint next to its own copy). While the ring plans
/// moves, [`add_pending`] adds the nodes joining the replica set.
pub fn targets(
    placement: &Placement,
    partition: PartitionId,
    n: usize,
    live: impl Fn(&NodeId) -> bool,
) -> Vec<Target> {
    let walk = placement.walk(partition);
    let n = n.clamp(1, walk.len().max(1));
    let mut out: Vec<Target> = Vec::with_capacity(n);
    let mut down = Vec::new();
    for node in walk.iter().take(n) {
        if live(node) {
            out.push(Target::primary(node.clone()));
        } else {
            down.push(node.clone());
        }
    }
    let mut spare = walk.iter().skip(n).filter(|w| live(w));
    for missing in down {
        match spare.next() {
            Some(node) => out.push(Target::fallback(node.clone(), vec![missing])),
            None => {
                // No node beyond the replicas: the live replica with the
                // fewest hints keeps this one too, or with none live, a
                // fallback (a hint dropped is a replica that never hears
                // of the write).
                let fewest = out.iter_mut().min_by_key(|t| (!t.primary, t.hints.len()));
                if let Some(t) = fewest {
                    t.hints.push(missing);
                }
            }
        }
    }
    out
}

/// Live nodes past the targets on the ring walk: stand-ins a request turns
/// to when targets fail before the failure detector has noticed.
pub fn spares(
    placement: &Placement,
    partition: PartitionId,
    targets: &[Target],
    live: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    placement
        .walk(partition)
        .iter()
        .filter(|n| live(n) && !targets.iter().any(|t| &t.node == *n))
        .cloned()
        .collect()
}

/// How many answers a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Answers from distinct nodes.
    pub total: usize,
    /// Of which from primaries.
    pub primary: usize,
    /// Of which durably stored (writes only).
    pub durable: usize,
}

impl Need {
    /// What a read (or a write) needs under the resolved replica counts.
    pub fn of(q: &crate::props::Resolved, read: bool) -> Self {
        if read {
            Self {
                total: q.r,
                primary: q.pr,
                durable: 0,
            }
        } else {
            Self {
                total: q.w,
                primary: q.pw,
                durable: q.dw,
            }
        }
    }
}

/// Counts answers against a [`Need`]: in the key's replica set as it is
/// now (its replicas and the fallbacks standing in for them), and, while
/// moves are planned, in each set the key may have after them (`moving.rs`).
#[derive(Debug, Clone)]
pub struct Tally {
    need: Need,
    pending: usize,
    pending_primary: usize,
    ok: usize,
    ok_primary: usize,
    ok_durable: usize,
    /// Per set after moves: (answers, targets still to answer).
    after_moves: Vec<(usize, usize)>,
    failures: Vec<String>,
}

/// Where a tally stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Waiting,
    Met,
    /// Can no longer be met: (answers so far, why the others failed).
    Unmet,
}

impl Tally {
    pub fn new(need: Need, targets: &[Target]) -> Self {
        let sets = targets.iter().fold(0u16, |a, t| a | t.sets);
        let mut after_moves = vec![(0, 0); (16 - sets.leading_zeros()) as usize];
        for t in targets {
            for (j, s) in after_moves.iter_mut().enumerate() {
                if t.sets >> j & 1 == 1 {
                    s.1 += 1;
                }
            }
        }
        Self {
            need,
            pending: targets.iter().filter(|t| !t.pending).count(),
            pending_primary: targets.iter().filter(|t| t.primary).count(),
            ok: 0,
            ok_primary: 0,
            ok_durable: 0,
            after_moves,
            failures: Vec::new(),
        }
    }

    /// Count a target added after the start (a stand-in).
    pub fn add(&mut self, target: &Target) {
        if !target.pending {
            self.pending += 1;
        }
        if target.primary {
            self.pending_primary += 1;
        }
        self.each_set(target, |s| s.1 += 1);
    }

    fn each_set(&mut self, target: &Target, f: impl Fn(&mut (usize, usize))) {
        for (j, s) in self.after_moves.iter_mut().enumerate() {
            if target.sets >> j & 1 == 1 {
                f(s);
            }
        }
    }

    pub fn ok(&mut self, target: &Target, durable: bool) {
        self.each_set(target, |s| {
            s.1 = s.1.saturating_sub(1);
            s.0 += 1;
        });
        if target.pending {
            return;
        }
        self.pending = self.pending.saturating_sub(1);
        self.ok += 1;
        if target.primary {
            self.pending_primary = self.pending_primary.saturating_sub(1);
            self.ok_primary += 1;
        }
        if durable {
            self.ok_durable += 1;
        }
    }

    pub fn failed(&mut self, target: &Target, why: String) {
        self.each_set(target, |s| s.1 = s.1.saturating_sub(1));
        if !target.pending {
            self.pending = self.pending.saturating_sub(1);
        }
        if target.primary {
            self.pending_primary = self.pending_primary.saturating_sub(1);
        }
        self.failures.push(format!("{}: {why}", target.node));
    }

    pub fn verdict(&self) -> Verdict {
        let n = self.need;
        if self.ok >= n.total && self.ok_primary >= n.primary && self.ok_durable >= n.durable {
            // Each set after moves is met too, or can no longer be.
            let settled = self
                .after_moves
                .iter()
                .all(|&(ok, pending)| ok >= n.total || ok + pending < n.total);
            return if settled {
                Verdict::Met
            } else {
                Verdict::Waiting
            };
        }
        let may_total = self.ok + self.pending;
        let may_primary = self.ok_primary + self.pending_primary;
        let may_durable = self.ok_durable + self.pending;
        if may_total < n.total || may_primary < n.primary || may_durable < n.durable {
            Verdict::Unmet
        } else {
            Verdict::Waiting
        }
    }

    /// The error for an unmet quorum, with the evidence.
    pub fn unmet(&self, op: &'static str) -> crate::KvError {
        crate::KvError::QuorumUnmet(Box::new(crate::error::Unmet {
            op: op.into(),
            needed: self.need.total,
            got: self.ok,
            primaries: (self.ok_primary, self.need.primary),
            durable: (self.ok_durable, self.need.durable),
            failures: self.failures.clone(),
        }))
    }

    pub fn answered(&self) -> usize {
        self.ok
    }
}

#[cfg(test)]
mod moving_tests;
#[cfg(test)]
mod tests;
