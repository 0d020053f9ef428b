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
//! decides, as it did before moves were counted at all. Writes count the
//! sets after the moves only where a hand-over may drop a node other than
//! its sender (`AfterMoves::writes_covered`); reads always do.

use super::{Placement, Target};
use colony_core::{NodeId, PartitionId};

/// At most this many moves are combined for one key: the sets of every
/// combination are counted (2^4 - 1 of them). The claim moves few of the
/// partitions one walk crosses at once; beyond this, the further moves are
/// not counted (the key's quorum is then as before moves were counted).
const MOVES_PER_KEY: usize = 4;

/// What the planned moves mean for a key's quorums.
#[derive(Debug, Default)]
pub struct AfterMoves {
    /// The replica sets (of `n` nodes) the key may have once some of the
    /// moves complete, other than the one it has now.
    pub sets: Vec<Vec<NodeId>>,
    /// Every hand-over among those moves, in whatever order they come,
    /// changes the key's set only by its sender leaving it. The node that
    /// joins then receives the sender's copy (every write it took, up to
    /// the seal), so a write with a quorum of the set as it is now keeps
    /// one in every set after: writes need not count those sets (reads
    /// still must, for a coordinator that saw a hand-over writes to the
    /// set after it while one that did not reads the set before).
    pub writes_covered: bool,
}

/// What the moves `placement`'s ring plans mean for the quorums of a key
/// of `partition` with `n` replicas: nothing for a ring planning no move
/// that changes its set.
pub fn sets_after_moves(placement: &Placement, partition: PartitionId, n: usize) -> AfterMoves {
    let moves = placement.moves();
    if moves.is_empty() {
        return AfterMoves::default();
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
    let mut left_out = false;
    loop {
        let before = within.len();
        for (p, to) in moves {
            if ahead(*p) < reach && !within.iter().any(|(w, _)| w == p) {
                if within.len() < MOVES_PER_KEY {
                    within.push((*p, to));
                } else {
                    left_out = true;
                }
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
    let writes_covered = !left_out && senders_leave(placement, partition, &within, n);
    AfterMoves {
        sets: out,
        writes_covered,
    }
}

/// Whether each hand-over of `within`, made after any combination of the
/// others, either leaves the key's set as it was or changes it only by its
/// sender leaving it.
fn senders_leave(
    placement: &Placement,
    partition: PartitionId,
    within: &[(PartitionId, &NodeId)],
    n: usize,
) -> bool {
    let ring = placement.ring();
    (0u32..(1 << within.len())).all(|done| {
        let before_moves: Vec<(PartitionId, &NodeId)> = (0..within.len())
            .filter(|i| done >> i & 1 == 1)
            .map(|i| within[i])
            .collect();
        let (before, _) = ring.replicas_after(partition, &before_moves, n);
        (0..within.len()).filter(|i| done >> i & 1 == 0).all(|i| {
            let mut with = before_moves.clone();
            with.push(within[i]);
            let (after, _) = ring.replicas_after(partition, &with, n);
            let Some(sender) = ring.owner(within[i].0) else {
                return false;
            };
            let unchanged = after.len() == before.len() && after.iter().all(|a| before.contains(a));
            unchanged || (before.contains(&sender) && !after.contains(&sender))
        })
    })
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
/// sets the key may have after planned moves need (for a write, only where
/// a hand-over may drop a node other than its sender): each target is marked
/// with the sets it is in, and the live nodes of those sets that are not
/// targets yet are added, `pending`. (Not for a bucket every owner keeps
/// whole: the nodes about to own a partition get its writes anyway, see
/// `Placement::joining`.)
pub fn add_pending(
    placement: &Placement,
    partition: PartitionId,
    n: usize,
    read: bool,
    targets: &mut Vec<Target>,
    live: impl Fn(&NodeId) -> bool,
) {
    let after = sets_after_moves(placement, partition, n);
    if read || !after.writes_covered {
        mark(targets, &after.sets, live);
    }
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
