//! Preference lists: which nodes hold a partition's data.
//!
//! The replicas of partition `p` are the first `n_val` distinct nodes met
//! walking the ring from `p` (all the owners, when there are fewer). The
//! claim puts any `n_val` consecutive partitions on distinct nodes where it
//! can, so the walk usually ends after `n_val` partitions; where it cannot
//! (at the wrap of a ring whose size is not a multiple of the node count,
//! or during a rebalance) the walk goes on until it has met enough nodes,
//! so no range is left with fewer copies than the cluster can give it. The
//! distinct owners met walking on are the fallbacks, in order.
//!
//! Handing a partition `v` from `a` to `b` changes one position of every
//! walk. For each range whose replica set changes, exactly one node joins
//! it, and `a` is a replica of the range before the move:
//! - `b` joins where it was not already in the set; the set's last node
//!   drops out unless `a` does;
//! - where `b` was already in the set, `a` drops out and the walk reaches
//!   one node further, which joins.
//!
//! So the old owner of `v`, which holds every range concerned, streams each
//! one to the node that joins it ([`Ring::gained_by`]), and every replica of
//! every range always holds its data. A node stores a partition's data once,
//! whatever number of the walk's positions it owns.

use super::Ring;
use crate::{NodeId, PartitionId};

impl Ring {
    /// The replicas of `partition`, then the other distinct owners met
    /// walking on (its fallbacks, in order).
    pub fn walk(&self, partition: PartitionId) -> Vec<&NodeId> {
        self.distinct(partition, &[], usize::MAX).0
    }

    /// The first `limit` distinct owners walking from `partition`, as they
    /// would be with each `swaps` partition owned by the node paired with
    /// it, and how many positions the walk stepped over to meet them.
    fn distinct<'a>(
        &'a self,
        partition: PartitionId,
        swaps: &[(PartitionId, &'a NodeId)],
        limit: usize,
    ) -> (Vec<&'a NodeId>, usize) {
        let q = self.parts.len();
        let mut out: Vec<&NodeId> = Vec::with_capacity(limit.min(8));
        let mut steps = 0;
        for step in 0..q {
            if out.len() >= limit {
                break;
            }
            steps = step + 1;
            let i = (partition.index() + step) % q;
            let owner = swaps
                .iter()
                .find(|(p, _)| p.index() == i)
                .map_or(&self.parts[i].owner, |(_, to)| *to);
            if !out.contains(&owner) {
                out.push(owner);
            }
        }
        (out, steps)
    }

    /// The first `n` distinct owners walking from `partition` once each of
    /// `moves` (a partition, its new owner) has completed, and how many
    /// positions the walk stepped over to meet them: the replica set a key
    /// will have (with `n` its bucket's `n_val`) if those moves complete
    /// and no other.
    pub fn replicas_after<'a>(
        &'a self,
        partition: PartitionId,
        moves: &[(PartitionId, &'a NodeId)],
        n: usize,
    ) -> (Vec<&'a NodeId>, usize) {
        self.distinct(partition, moves, n)
    }

    /// The replica set of `partition`, with an optional ownership swap.
    fn set<'a>(
        &'a self,
        partition: PartitionId,
        swap: Option<(PartitionId, &'a NodeId)>,
    ) -> Vec<&'a NodeId> {
        self.distinct(partition, swap.as_slice(), usize::from(self.n_val).max(1))
            .0
    }

    /// The nodes holding `partition`'s data.
    pub fn replicas(&self, partition: PartitionId) -> Vec<NodeId> {
        self.set(partition, None).into_iter().cloned().collect()
    }

    /// Whether `node` holds (or is about to receive) `partition`'s data:
    /// a replica now, or a replica once a planned move completes.
    pub fn replicates(&self, partition: PartitionId, node: &NodeId) -> bool {
        if self.set(partition, None).contains(&node) {
            return true;
        }
        self.transfers().iter().any(|t| {
            self.set(partition, Some((t.partition, &t.to)))
                .contains(&node)
        })
    }

    /// Whether `node` owns at least one partition.
    pub fn owns_any(&self, node: &NodeId) -> bool {
        self.parts.iter().any(|e| &e.owner == node)
    }

    /// Whether `node` keeps the data every owner shares (a service's
    /// "share everything" data, the whole of it on every node walked): it
    /// owns a partition, or a planned move is about to give it one (its
    /// first transfer brings that data along; see `cluster/handoff.rs`).
    pub fn shares(&self, node: &NodeId) -> bool {
        self.owns_any(node) || self.transfers().iter().any(|t| &t.to == node)
    }

    /// What the current owner of `vnode` must stream when its ownership
    /// passes to `to`: each range whose replica set gains a node through
    /// the move, with that node (`to`, or the node the walk reaches once it
    /// meets `to` earlier). At most one node joins any range, and the
    /// current owner of `vnode` replicates every range listed (see the
    /// module's comment; checked by the ring's property tests).
    pub fn gained_by(&self, vnode: PartitionId, to: &NodeId) -> Vec<(PartitionId, NodeId)> {
        let q = self.parts.len();
        let mut out = Vec::new();
        for i in 0..q {
            let p = PartitionId(i as u16);
            let before = self.set(p, None);
            for node in self.set(p, Some((vnode, to))) {
                if !before.contains(&node) {
                    out.push((p, node.clone()));
                }
            }
        }
        out
    }
}
