//! The ring: which node owns each partition, as a versioned document.
//!
//! A single node owns every partition of its own ring. The claim below is the
//! deterministic function the cluster will use when members join and leave:
//! it depends only on the sorted member list, so every node computes the same
//! ring from the same members.

use crate::{CoreError, NodeId, PartitionId, Partitioner, RingVersion};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    version: RingVersion,
    owners: Vec<NodeId>,
}

impl Ring {
    /// A fresh ring of `ring_size` partitions, all owned by `node`.
    pub fn single(node: NodeId, ring_size: u32) -> Result<Self, CoreError> {
        Self::claim(&[node], ring_size)
    }

    /// Deal partitions to `members` in sorted order, round robin: every member
    /// owns `floor(Q/n)` or `ceil(Q/n)` partitions, and any `n` consecutive
    /// partitions are on `n` distinct members.
    pub fn claim(members: &[NodeId], ring_size: u32) -> Result<Self, CoreError> {
        let partitioner = Partitioner::new(ring_size)?;
        let mut sorted = members.to_vec();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Err(CoreError::InvalidRingSize(0));
        }
        let owners = partitioner
            .partitions()
            .map(|p| sorted[p.index() % sorted.len()].clone())
            .collect();
        Ok(Self {
            version: RingVersion(1),
            owners,
        })
    }

    pub fn version(&self) -> RingVersion {
        self.version
    }

    pub fn ring_size(&self) -> u16 {
        // Built from a Partitioner, so at most 1024 entries.
        self.owners.len() as u16
    }

    pub fn owner(&self, partition: PartitionId) -> Option<&NodeId> {
        self.owners.get(partition.index())
    }

    /// The partitions `node` owns, in order.
    pub fn owned_by<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = PartitionId> + 'a {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, owner)| *owner == node)
            .map(|(i, _)| PartitionId(i as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId::new(format!("node{i}"))).collect()
    }

    #[test]
    fn single_node_owns_every_partition() {
        let me = NodeId::new("solo");
        let ring = Ring::single(me.clone(), 64).unwrap();
        assert_eq!(ring.ring_size(), 64);
        assert_eq!(ring.owned_by(&me).count(), 64);
    }

    proptest! {
        #[test]
        fn claim_is_balanced_and_spreads_neighbours(n in 1usize..20, bits in 3u32..9) {
            let q = 1u32 << bits;
            let members = nodes(n);
            let ring = Ring::claim(&members, q).unwrap();
            let per_node: Vec<usize> = members.iter().map(|m| ring.owned_by(m).count()).collect();
            let ceil = (q as usize).div_ceil(n);
            prop_assert!(per_node.iter().all(|&c| c <= ceil && c + 1 >= ceil.min(q as usize / n + 1)));
            // Any min(n, 3) consecutive partitions are on distinct nodes.
            let w = n.min(3);
            for p in 0..q as usize - w {
                let mut window: Vec<_> = (p..p + w).map(|i| ring.owner(PartitionId(i as u16)).unwrap()).collect();
                window.sort();
                window.dedup();
                prop_assert_eq!(window.len(), w);
            }
        }

        #[test]
        fn claim_ignores_member_order(n in 1usize..10) {
            let mut members = nodes(n);
            let a = Ring::claim(&members, 64).unwrap();
            members.reverse();
            prop_assert_eq!(a, Ring::claim(&members, 64).unwrap());
        }
    }
}
