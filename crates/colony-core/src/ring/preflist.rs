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
        self.distinct(partition, None, usize::MAX)
    }

    /// The first `limit` distinct owners walking from `partition`, as they
    /// would be with `swap.0` owned by `swap.1`.
    fn distinct<'a>(
        &'a self,
        partition: PartitionId,
        swap: Option<(PartitionId, &'a NodeId)>,
        limit: usize,
    ) -> Vec<&'a NodeId> {
        let q = self.parts.len();
        let mut out: Vec<&NodeId> = Vec::with_capacity(limit.min(8));
        for step in 0..q {
            if out.len() >= limit {
                break;
            }
            let i = (partition.index() + step) % q;
            let owner = match swap {
                Some((p, to)) if p.index() == i => to,
                _ => &self.parts[i].owner,
            };
            if !out.contains(&owner) {
                out.push(owner);
            }
        }
        out
    }

    /// The replica set of `partition`, with an optional ownership swap.
    fn set<'a>(
        &'a self,
        partition: PartitionId,
        swap: Option<(PartitionId, &'a NodeId)>,
    ) -> Vec<&'a NodeId> {
        self.distinct(partition, swap, usize::from(self.n_val).max(1))
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
