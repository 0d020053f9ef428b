//! Preference lists: which nodes hold a partition's data.
//!
//! The replicas of partition `p` are the distinct owners of the `n_val`
//! consecutive partitions from `p` on (the claim keeps those on distinct
//! nodes, so there are usually `n_val` of them; during a rebalance, or on a
//! ring too small for the claim, there may be fewer for a while). The
//! distinct owners met walking on past that window are the fallbacks, in
//! order, for when a replica is unreachable.
//!
//! A window, not "walk until n_val distinct nodes": with a window, changing
//! the owner of one partition can add only that new owner to any replica
//! set, so the old owner, which holds every range concerned, can stream them
//! all to it ([`Ring::gained_by`]). With an open-ended walk a third node
//! could join a replica set without being sent anything, and after a few
//! such moves a range could end up with no replica holding its data.
//!
//! A node stores a partition's data once, whatever number of the window's
//! positions it owns.

use super::Ring;
use crate::{NodeId, PartitionId};

impl Ring {
    /// The replicas of `partition`, then the other distinct owners met
    /// walking on from the end of its window (its fallbacks, in order).
    pub fn walk(&self, partition: PartitionId) -> Vec<&NodeId> {
        let q = self.parts.len();
        let mut out = self.window(partition, None);
        for step in usize::from(self.n_val)..q {
            let owner = &self.parts[(partition.index() + step) % q].owner;
            if !out.contains(&owner) {
                out.push(owner);
            }
        }
        out
    }

    /// The distinct owners of the `n_val` partitions from `partition` on,
    /// as they would be with `swap.0` owned by `swap.1`.
    fn window<'a>(
        &'a self,
        partition: PartitionId,
        swap: Option<(PartitionId, &'a NodeId)>,
    ) -> Vec<&'a NodeId> {
        let q = self.parts.len();
        let n = usize::from(self.n_val).min(q);
        let mut out: Vec<&NodeId> = Vec::with_capacity(n);
        for step in 0..n {
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

    /// The nodes holding `partition`'s data.
    pub fn replicas(&self, partition: PartitionId) -> Vec<NodeId> {
        self.window(partition, None).into_iter().cloned().collect()
    }

    /// Whether `node` holds (or is about to receive) `partition`'s data:
    /// a replica now, or a replica once a planned move to it completes.
    pub fn replicates(&self, partition: PartitionId, node: &NodeId) -> bool {
        if self.window(partition, None).contains(&node) {
            return true;
        }
        self.transfers().iter().any(|t| {
            &t.to == node
                && self
                    .window(partition, Some((t.partition, &t.to)))
                    .contains(&node)
        })
    }

    /// The partitions whose replicas gain `to` when `vnode`'s ownership
    /// passes to it: what the current owner of `vnode` must stream to `to`.
    /// Only `to` can join a replica set through this move, and the current
    /// owner of `vnode` replicates every range concerned.
    pub fn gained_by(&self, vnode: PartitionId, to: &NodeId) -> Vec<PartitionId> {
        let q = self.parts.len();
        (0..q)
            .map(|i| PartitionId(i as u16))
            .filter(|p| {
                !self.window(*p, None).contains(&to)
                    && self.window(*p, Some((vnode, to))).contains(&to)
            })
            .collect()
    }
}
