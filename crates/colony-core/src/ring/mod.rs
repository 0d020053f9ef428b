//! The ring: which node owns each partition, as a versioned document that any
//! node may change and that every node merges by the same rule.
//!
//! The document is a join-semilattice, so merging is commutative, associative
//! and idempotent, and nodes that have seen the same changes hold the same
//! ring whatever order they saw them in:
//!
//! - each member entry is a last-writer-wins register on its `stamp`;
//! - each partition's owner is a register on its `gen`. Only the current
//!   owner hands a partition over (it alone holds the data), so two different
//!   owners never share a `gen`, except when an operator's `down` forces a
//!   move, where ties go to the larger node name;
//! - each partition's `next` (the planned new owner) is a register on its own
//!   stamp, and counts only while the owner is still the one it was planned
//!   against (`next_gen == gen`): a hand-over retires it;
//! - each metadata entry is a last-writer-wins register on its `stamp`, ties
//!   going to the larger value. Keys and values are opaque here: services
//!   (bucket properties in colony-kv) give them meaning.
//!
//! Stamps come from a Lamport clock over the whole document, so a change made
//! after seeing another always wins over it.

mod claim;
mod meta;
mod preflist;

pub use claim::{claim, spread_violations, stripe};

use crate::{CoreError, NodeId, PartitionId, Partitioner, RingVersion};
use meta::{MetaEntry, RingV0};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a member stands. The order breaks ties between equal stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Staged to join; claims partitions at the next commit.
    Joining,
    /// A full member.
    Valid,
    /// Staged to leave; keeps its partitions until the next commit.
    Leaving,
    /// Leave committed: handing its partitions off, then it stops.
    Exiting,
    /// Gone: it owns nothing and takes no requests. A hand-over racing its
    /// retirement can still land a partition on it (with the only copy of
    /// the data): it hands that on like an exiting member.
    Left,
    /// Marked down by an operator: its partitions are reassigned without
    /// a transfer at the next commit.
    Down,
}

impl MemberStatus {
    /// Whether the member should own partitions after the next commit.
    pub fn claims(self) -> bool {
        matches!(self, Self::Joining | Self::Valid)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Valid => "valid",
            Self::Leaving => "leaving",
            Self::Exiting => "exiting",
            Self::Left => "left",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub status: MemberStatus,
    /// The member's cluster address (RPC over TCP, gossip over UDP).
    pub addr: String,
    pub stamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartEntry {
    owner: NodeId,
    gen: u64,
    next: Option<NodeId>,
    /// The `gen` the move was planned against.
    next_gen: u64,
    next_stamp: u64,
}

/// One planned change of owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub partition: PartitionId,
    pub from: NodeId,
    pub to: NodeId,
}

/// What a commit would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Members whose status the commit changes: (node, from, to).
    pub members: Vec<(NodeId, MemberStatus, MemberStatus)>,
    /// Partitions that will stream to a new owner.
    pub transfers: Vec<Move>,
    /// Partitions of down members that change owner at once, with no data.
    pub forced: Vec<Move>,
    /// Partitions whose planned move is called off.
    pub cancelled: Vec<PartitionId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.transfers.is_empty()
            && self.forced.is_empty()
            && self.cancelled.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    cluster: u64,
    n_val: u8,
    members: BTreeMap<NodeId, Member>,
    parts: Vec<PartEntry>,
    meta: BTreeMap<String, MetaEntry>,
}

impl Ring {
    /// A new cluster of one: `node` owns every partition.
    pub fn new(
        cluster: u64,
        node: NodeId,
        addr: String,
        ring_size: u32,
        n_val: u8,
    ) -> Result<Self, CoreError> {
        let partitioner = Partitioner::new(ring_size)?;
        let parts = partitioner
            .partitions()
            .map(|_| PartEntry {
                owner: node.clone(),
                gen: 1,
                next: None,
                next_gen: 0,
                next_stamp: 0,
            })
            .collect();
        let mut members = BTreeMap::new();
        members.insert(
            node,
            Member {
                status: MemberStatus::Valid,
                addr,
                stamp: 1,
            },
        );
        Ok(Self {
            cluster,
            n_val: n_val.max(1),
            members,
            parts,
            meta: BTreeMap::new(),
        })
    }

    /// A one-node ring with a fixed cluster id, for tests and single nodes.
    pub fn single(node: NodeId, ring_size: u32) -> Result<Self, CoreError> {
        Self::new(0, node, String::new(), ring_size, 3)
    }

    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    pub fn n_val(&self) -> u8 {
        self.n_val
    }

    /// The Lamport clock of the document: the newest stamp in it.
    pub fn version(&self) -> RingVersion {
        let m = self.members.values().map(|m| m.stamp).max().unwrap_or(0);
        let p = self
            .parts
            .iter()
            .map(|e| e.gen.max(e.next_stamp))
            .max()
            .unwrap_or(0);
        RingVersion(m.max(p).max(meta::newest(&self.meta)))
    }

    /// A hash of the whole document: equal digests, equal rings.
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.encode())
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs, maps and vectors into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        // A document without `meta` (written before it existed) fails the
        // current layout at its end; read it as the old layout then.
        let ring: Self = postcard::from_bytes(bytes)
            .or_else(|e| {
                postcard::from_bytes::<RingV0>(bytes)
                    .map(Self::from)
                    .map_err(|_| e)
            })
            .map_err(|e| CoreError::BadRing(format!("undecodable ring document: {e}")))?;
        Partitioner::new(ring.parts.len() as u32)
            .map_err(|_| CoreError::BadRing(format!("ring of {} partitions", ring.parts.len())))?;
        if let Some(e) = ring
            .parts
            .iter()
            .find(|e| !ring.members.contains_key(&e.owner))
        {
            return Err(CoreError::BadRing(format!(
                "partition owner {} is not a member",
                e.owner
            )));
        }
        Ok(ring)
    }

    pub fn ring_size(&self) -> u16 {
        // Built from a Partitioner, so at most 1024 entries.
        self.parts.len() as u16
    }

    pub fn owner(&self, partition: PartitionId) -> Option<&NodeId> {
        self.parts.get(partition.index()).map(|e| &e.owner)
    }

    /// How many times the partition has changed owner, in Lamport time: a
    /// transfer planned against one generation is void in the next.
    pub fn generation(&self, partition: PartitionId) -> u64 {
        self.parts.get(partition.index()).map_or(0, |e| e.gen)
    }

    /// The node a partition is being handed to, if a move is under way.
    pub fn next(&self, partition: PartitionId) -> Option<&NodeId> {
        let e = self.parts.get(partition.index())?;
        if e.next_gen == e.gen && e.next.as_ref() != Some(&e.owner) {
            e.next.as_ref()
        } else {
            None
        }
    }

    /// The partitions `node` owns, in order.
    pub fn owned_by<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = PartitionId> + 'a {
        self.parts
            .iter()
            .enumerate()
            .filter(move |(_, e)| &e.owner == node)
            .map(|(i, _)| PartitionId(i as u16))
    }

    /// Every move under way.
    pub fn transfers(&self) -> Vec<Move> {
        (0..self.parts.len())
            .filter_map(|i| {
                let p = PartitionId(i as u16);
                Some(Move {
                    partition: p,
                    from: self.owner(p)?.clone(),
                    to: self.next(p)?.clone(),
                })
            })
            .collect()
    }

    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// Fold `other` into this ring. Returns whether anything changed.
    pub fn merge(&mut self, other: &Ring) -> Result<bool, CoreError> {
        if other.cluster != self.cluster {
            return Err(CoreError::BadRing(format!(
                "ring of cluster {:016x}, this node is in cluster {:016x}",
                other.cluster, self.cluster
            )));
        }
        if other.parts.len() != self.parts.len() {
            return Err(CoreError::BadRing(format!(
                "ring of {} partitions, ours has {}",
                other.parts.len(),
                self.parts.len()
            )));
        }
        let before = self.clone();
        for (node, theirs) in &other.members {
            match self.members.get_mut(node) {
                Some(ours) => {
                    let k = |m: &Member| (m.stamp, m.status, m.addr.clone());
                    if k(theirs) > k(ours) {
                        *ours = theirs.clone();
                    }
                }
                None => {
                    self.members.insert(node.clone(), theirs.clone());
                }
            }
        }
        for (ours, theirs) in self.parts.iter_mut().zip(&other.parts) {
            if (theirs.gen, &theirs.owner) > (ours.gen, &ours.owner) {
                ours.gen = theirs.gen;
                ours.owner = theirs.owner.clone();
            }
            let k = |e: &PartEntry| (e.next_stamp, e.next_gen, e.next.clone());
            if k(theirs) > k(ours) {
                ours.next = theirs.next.clone();
                ours.next_gen = theirs.next_gen;
                ours.next_stamp = theirs.next_stamp;
            }
        }
        meta::merge(&mut self.meta, &other.meta);
        self.n_val = self.n_val.max(other.n_val);
        Ok(*self != before)
    }

    fn tick(&self) -> u64 {
        self.version().0 + 1
    }

    fn set_status(&mut self, node: &NodeId, status: MemberStatus, addr: Option<String>) {
        let stamp = self.tick();
        let addr = addr
            .or_else(|| self.members.get(node).map(|m| m.addr.clone()))
            .unwrap_or_default();
        self.members.insert(
            node.clone(),
            Member {
                status,
                addr,
                stamp,
            },
        );
    }

    /// Stage `node` to join (or update a member's address). A member that
    /// is already in the ring keeps its status.
    pub fn stage_join(&mut self, node: &NodeId, addr: String) -> bool {
        match self.members.get(node) {
            Some(m) if m.status != MemberStatus::Left && m.status != MemberStatus::Down => {
                if m.addr != addr {
                    let status = m.status;
                    self.set_status(node, status, Some(addr));
                    return true;
                }
                false
            }
            _ => {
                self.set_status(node, MemberStatus::Joining, Some(addr));
                true
            }
        }
    }

    /// Stage `node` to leave; it hands its partitions off after the commit.
    pub fn stage_leave(&mut self, node: &NodeId) -> Result<(), CoreError> {
        let m = self.member_or_err(node)?;
        match m.status {
            MemberStatus::Valid => {
                if self.claimants().len() < 2 {
                    return Err(CoreError::BadRing(format!(
                        "{node} is the last member: nobody could take its partitions"
                    )));
                }
                self.set_status(node, MemberStatus::Leaving, None);
                Ok(())
            }
            MemberStatus::Joining => {
                self.set_status(node, MemberStatus::Left, None);
                Ok(())
            }
            MemberStatus::Leaving | MemberStatus::Exiting => Ok(()),
            s => Err(CoreError::BadRing(format!(
                "{node} is {}, it cannot leave",
                s.as_str()
            ))),
        }
    }

    /// Mark `node` down: the next commit gives its partitions to others
    /// without waiting for a transfer that cannot happen.
    pub fn mark_down(&mut self, node: &NodeId) -> Result<(), CoreError> {
        let m = self.member_or_err(node)?;
        if m.status == MemberStatus::Left && self.owned_by(node).next().is_none() {
            return Err(CoreError::BadRing(format!("{node} has already left")));
        }
        if m.status != MemberStatus::Down {
            if self.claimants().iter().all(|c| c == node) {
                return Err(CoreError::BadRing(format!(
                    "{node} is the last member: nobody could take its partitions"
                )));
            }
            self.set_status(node, MemberStatus::Down, None);
        }
        Ok(())
    }

    /// Undo staged joins and leaves that are not committed yet.
    pub fn clear(&mut self) -> usize {
        let staged: Vec<(NodeId, MemberStatus)> = self
            .members
            .iter()
            .filter_map(|(n, m)| match m.status {
                MemberStatus::Joining => Some((n.clone(), MemberStatus::Left)),
                MemberStatus::Leaving => Some((n.clone(), MemberStatus::Valid)),
                _ => None,
            })
            .collect();
        for (n, s) in &staged {
            self.set_status(n, *s, None);
        }
        staged.len()
    }

    fn member_or_err(&self, node: &NodeId) -> Result<&Member, CoreError> {
        self.members
            .get(node)
            .ok_or_else(|| CoreError::BadRing(format!("{node} is not a member")))
    }

    fn claimants(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.status.claims())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// What [`commit`](Self::commit) would do now.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        for (n, m) in &self.members {
            match m.status {
                MemberStatus::Joining => {
                    plan.members
                        .push((n.clone(), MemberStatus::Joining, MemberStatus::Valid));
                }
                MemberStatus::Leaving => {
                    plan.members
                        .push((n.clone(), MemberStatus::Leaving, MemberStatus::Exiting));
                }
                _ => {}
            }
        }
        let claimants = self.claimants();
        if claimants.is_empty() {
            return plan;
        }
        // Plan against where partitions are heading, so a commit during a
        // rebalance does not undo moves already under way.
        let heading: Vec<NodeId> = (0..self.parts.len())
            .map(|i| {
                let p = PartitionId(i as u16);
                self.next(p)
                    .or(self.owner(p))
                    .cloned()
                    .unwrap_or_else(|| claimants[0].clone())
            })
            .collect();
        let target = claim(&heading, &claimants, usize::from(self.n_val));
        for (i, to) in target.into_iter().enumerate() {
            let p = PartitionId(i as u16);
            let e = &self.parts[i];
            // Only a member marked down loses its partitions without a
            // transfer. A `Left` owner got the partition in a hand-over
            // that raced its retirement, and holds the data.
            let owner_gone = self
                .members
                .get(&e.owner)
                .is_none_or(|m| m.status == MemberStatus::Down);
            if to == e.owner {
                if self.next(p).is_some() {
                    plan.cancelled.push(p);
                }
            } else if owner_gone {
                plan.forced.push(Move {
                    partition: p,
                    from: e.owner.clone(),
                    to,
                });
            } else if self.next(p) != Some(&to) {
                plan.transfers.push(Move {
                    partition: p,
                    from: e.owner.clone(),
                    to,
                });
            }
        }
        plan
    }

    /// Apply the plan: staged members change status, partitions get their
    /// new targets. Returns what was done.
    pub fn commit(&mut self) -> Plan {
        let plan = self.plan();
        if plan.is_empty() {
            return plan;
        }
        for (n, _, to) in &plan.members {
            self.set_status(n, *to, None);
        }
        let stamp = self.tick();
        for m in &plan.transfers {
            let e = &mut self.parts[m.partition.index()];
            e.next = Some(m.to.clone());
            e.next_gen = e.gen;
            e.next_stamp = stamp;
        }
        for p in &plan.cancelled {
            let e = &mut self.parts[p.index()];
            e.next = None;
            e.next_gen = e.gen;
            e.next_stamp = stamp;
        }
        for m in &plan.forced {
            let e = &mut self.parts[m.partition.index()];
            e.owner = m.to.clone();
            e.gen = stamp;
        }
        self.retire_exited();
        plan
    }

    /// Hand `partition` from its owner `from` to `to`, the node its data
    /// was sent to: called by `from` once the transfer is complete. Refused
    /// unless `to` is still the planned next owner: the plan may have been
    /// changed (merged in from another node) while the data was on its way,
    /// and the new target holds none of it.
    pub fn complete(
        &mut self,
        partition: PartitionId,
        from: &NodeId,
        to: &NodeId,
    ) -> Result<NodeId, CoreError> {
        match (self.owner(partition), self.next(partition)) {
            (Some(o), Some(next)) if o == from && next == to => {}
            (Some(o), Some(next)) if o == from => {
                return Err(CoreError::BadRing(format!(
                    "partition {partition} is now planned to move to {next}, not {to}"
                )))
            }
            _ => {
                return Err(CoreError::BadRing(format!(
                    "partition {partition} is not moving away from {from}"
                )))
            }
        }
        let to = to.clone();
        let stamp = self.tick();
        let e = &mut self.parts[partition.index()];
        e.owner = to.clone();
        e.gen = stamp;
        self.retire_exited();
        Ok(to)
    }

    /// Exiting members that own nothing and receive nothing have left.
    pub fn retire_exited(&mut self) -> bool {
        let done: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(n, m)| {
                m.status == MemberStatus::Exiting
                    && self.owned_by(n).next().is_none()
                    && !self.transfers().iter().any(|t| &t.to == *n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in &done {
            self.set_status(n, MemberStatus::Left, None);
        }
        !done.is_empty()
    }
}

#[cfg(test)]
mod tests;
