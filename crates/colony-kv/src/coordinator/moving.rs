//! Quorums while partitions move.
//!
//! A planned move changes a range's replica set at the moment its sender
//! hands over, and every coordinator learns of the hand-over a little
//! later, each at its own moment. Counting a quorum in the set as it is
//! now is not enough then: where the sender stays a replica of the range
//! (it owns another position of its walk), the node joining gets the
//! sender's copy while the set's last node drops out, so a write held by
//! that last node and one other, not by the sender, has one copy left in
//! the new set, and a read there at `r=2` can miss it. A coordinator with
//! the old ring may also read while one with the new ring writes.
//!
//! So while the coordinator's ring plans moves that change a key's replica
//! set, a request must also meet its quorum in every set the key may have
//! once some of those moves complete (a joint quorum, as a configuration
//! change does in consensus protocols; Cassandra's pending ranges are the
//! write half of it). The nodes joining such a set are sent the request
//! as `pending` targets: they take writes and answer reads, never lead a
//! write (they may not hold the key's state yet), and count only toward
//! the sets they are in. A set that can no longer be met (its nodes failed
//! or refused) does not fail the request: the set as it is now still
//! decides, as it did before moves were counted at all.

use super::{Placement, Target};
use colony_core::{NodeId, PartitionId};

/// At most this many moves are combined for one key: the sets of every
/// combination are counted (2^4 - 1 of them). The claim moves few of the
/// partitions one walk crosses at once; beyond this, the further moves are
/// not counted (the key's quorum is then as before moves were counted).
const MOVES_PER_KEY: usize = 4;

/// The replica sets (of `n` nodes) `partition` may have once some of the
/// moves its placement's ring plans complete, other than the one it has
/// now: empty for a ring planning no move that changes it.
pub fn sets_after_moves(
    placement: &Placement,
    partition: PartitionId,
    n: usize,
) -> Vec<Vec<NodeId>> {
    let moves = placement.moves();
    if moves.is_empty() {
        return Vec::new();
    }
    let walk = placement.walk(partition);
    let ring = placement.ring();
    let q = usize::from(ring.ring_size());
    let ahead = |p: PartitionId| (p.index() + q - partition.index()) % q;
    let now: Vec<&NodeId> = walk.iter().take(n).collect();
    // The moves within reach of the walk, until the longest walk over every
    // combination of them reaches no further move.
    let (_, mut reach) = ring.replicas_after(partition, &[], n);
    let mut within: Vec<(PartitionId, &NodeId)> = Vec::new();
    loop {
        let before = within.len();
        for (p, to) in moves {
            if within.len() < MOVES_PER_KEY
                && ahead(*p) < reach
                && !within.iter().any(|(w, _)| w == p)
            {
                within.push((*p, to));
            }
        }
        if within.len() == before {
            break;
        }
        reach = combinations(&within)
            .map(|c| ring.replicas_after(partition, &c, n).1)
            .max()
            .unwrap_or(reach);
    }
    let mut out: Vec<Vec<NodeId>> = Vec::new();
    for c in combinations(&within) {
        let (set, _) = ring.replicas_after(partition, &c, n);
        let same =
            |other: &[&NodeId]| other.len() == set.len() && set.iter().all(|s| other.contains(s));
        if same(&now) || out.iter().any(|o| same(&o.iter().collect::<Vec<_>>())) {
            continue;
        }
        out.push(set.into_iter().cloned().collect());
    }
    out
}

/// Every non-empty combination of `moves`.
fn combinations<'a>(
    moves: &'a [(PartitionId, &'a NodeId)],
) -> impl Iterator<Item = Vec<(PartitionId, &'a NodeId)>> + 'a {
    (1u32..(1 << moves.len())).map(move |mask| {
        moves
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> i & 1 == 1)
            .map(|(_, m)| *m)
            .collect()
    })
}

/// Add to `targets` (of a key of `partition` with `n` replicas) what the
/// sets the key may have after planned moves need: each target is marked
/// with the sets it is in, and the live nodes of those sets that are not
/// targets yet are added, `pending`. (Not for a bucket every owner keeps
/// whole: the nodes about to own a partition get its writes anyway, see
/// `Placement::joining`.)
pub fn add_pending(
    placement: &Placement,
    partition: PartitionId,
    n: usize,
    targets: &mut Vec<Target>,
    live: impl Fn(&NodeId) -> bool,
) {
    let sets = sets_after_moves(placement, partition, n);
    mark(targets, &sets, live);
}

/// Mark `targets` with the sets after moves they are in; add the live
/// nodes of those sets that are not targets yet, `pending`.
pub(super) fn mark(
    targets: &mut Vec<Target>,
    sets: &[Vec<NodeId>],
    live: impl Fn(&NodeId) -> bool,
) {
    for (j, set) in sets.iter().enumerate().take(16) {
        let bit = 1u16 << j;
        for node in set {
            if let Some(t) = targets.iter_mut().find(|t| &t.node == node) {
                t.sets |= bit;
            } else if live(node) {
                targets.push(Target {
                    node: node.clone(),
                    primary: false,
                    pending: true,
                    hints: Vec::new(),
                    sets: bit,
                });
            }
        }
    }
}
