//! Quorums while partitions move (`moving.rs`).
#![allow(clippy::unwrap_used)]

use super::moving::sets_after_moves;
use super::tests::{canned, key_req, n, ring, Canned, R2};
use super::*;
use crate::vnode::KvResponse;
use std::collections::BTreeSet;

/// A settled ring of three nodes that a fourth has just joined: the moves
/// to it are planned, none done.
fn planned() -> Ring {
    let mut r = ring(3);
    r.stage_join(&n(3), "a3".into());
    r.commit();
    assert!(!r.transfers().is_empty());
    r
}

fn set_of(nodes: &[NodeId]) -> BTreeSet<NodeId> {
    nodes.iter().cloned().collect()
}

#[test]
fn a_ring_planning_no_move_adds_nothing() {
    let r = ring(5);
    let placement = Placement::new(Arc::new(r));
    for i in 0..64 {
        let mut t = targets(&placement, PartitionId(i), 3, |_| true);
        add_pending(&placement, PartitionId(i), 3, true, &mut t, |_| true);
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|t| !t.pending && t.sets == 0));
    }
}

#[test]
fn every_set_a_key_may_have_after_the_planned_moves_is_among_the_targets() {
    let r = planned();
    let placement = Placement::new(Arc::new(r.clone()));
    let mut changed = 0;
    let mut sender_stays = 0;
    let mut covered = 0;
    for i in 0..64 {
        let p = PartitionId(i);
        let now = set_of(&r.replicas(p));
        let after = sets_after_moves(&placement, p, 3);
        let sets = &after.sets;
        let mut t = targets(&placement, p, 3, |_| true);
        add_pending(&placement, p, 3, true, &mut t, |_| true);
        let mut w = targets(&placement, p, 3, |_| true);
        add_pending(&placement, p, 3, false, &mut w, |_| true);
        for (j, set) in sets.iter().enumerate() {
            let set = set_of(set);
            assert_eq!(set.len(), 3, "partition {p}: {set:?}");
            assert_ne!(
                set, now,
                "partition {p}: the set as it is now is not repeated"
            );
            let marked: BTreeSet<NodeId> = t
                .iter()
                .filter(|t| t.sets >> j & 1 == 1)
                .map(|t| t.node.clone())
                .collect();
            assert_eq!(marked, set, "partition {p}, set {j}");
            changed += 1;
        }
        for t in &t {
            assert_eq!(t.pending, !now.contains(&t.node), "partition {p}: {t:?}");
            assert!(t.primary != t.pending);
            assert!(!t.pending || t.node == n(3), "only the newcomer joins sets");
        }
        // A write counts the sets after the moves unless every hand-over
        // only takes its own sender out of the set.
        let mut a_sender_stays = false;
        // Every move that changes this partition's set, alone, gives one
        // of the sets counted.
        for m in r.transfers() {
            let (alone, _) = r.replicas_after(p, &[(m.partition, &m.to)], 3);
            let alone = set_of(&alone.into_iter().cloned().collect::<Vec<_>>());
            if alone != now {
                assert!(sets.iter().any(|s| set_of(s) == alone), "partition {p}");
                // The case that makes counting the set as it is now not
                // enough: the sender stays a replica, so the node that
                // drops out is another, whose copy nobody receives.
                if alone.contains(&m.from) {
                    sender_stays += 1;
                    a_sender_stays = true;
                }
            }
        }
        if a_sender_stays {
            assert!(!after.writes_covered, "partition {p}");
            assert_eq!(
                w, t,
                "partition {p}: a write counts every set, as a read does"
            );
        } else if after.writes_covered {
            assert!(w.iter().all(|t| !t.pending && t.sets == 0), "partition {p}");
            covered += 1;
        }
    }
    assert!(changed > 0);
    assert!(
        covered > 0,
        "most moves only take their sender out of a set"
    );
    assert!(
        sender_stays > 0,
        "a 3-node ring of 64 has ranges where the sender stays and the last node drops out"
    );
}

/// Targets of a key whose set is {1, 2, 3} now and {1, 2, 9} once a
/// planned move completes (node3, not the sender, drops out), as
/// `targets` marks them: node9 pending.
fn moving_targets() -> Vec<Target> {
    let mut t = vec![
        Target::primary(n(1)),
        Target::primary(n(2)),
        Target::primary(n(3)),
    ];
    moving::mark(&mut t, &[vec![n(2), n(9), n(1)]], |_| true);
    t
}

#[test]
fn a_quorum_is_met_only_once_every_set_after_the_moves_is_met_or_out_of_reach() {
    let ts = moving_targets();
    assert_eq!(ts.len(), 4);
    assert!(ts[3].pending && ts[3].node == n(9));
    let need = R2;
    // Node2 and node3 answer: a quorum now, but node2 alone once node3
    // drops out.
    let mut t = Tally::new(need, &ts);
    t.ok(&ts[1], false);
    t.ok(&ts[2], false);
    assert_eq!(t.verdict(), Verdict::Waiting);
    t.ok(&ts[3], false);
    assert_eq!(t.verdict(), Verdict::Met);

    // The pending node alone makes no quorum of the set as it is now.
    let mut t = Tally::new(need, &ts);
    t.ok(&ts[3], false);
    t.ok(&ts[1], false);
    assert_eq!(t.verdict(), Verdict::Waiting);
    t.failed(&ts[0], "down".into());
    t.failed(&ts[2], "down".into());
    assert_eq!(t.verdict(), Verdict::Unmet);

    // A set after the moves that can no longer be met does not fail the
    // request: the set as it is now decides.
    let mut t = Tally::new(need, &ts);
    t.ok(&ts[1], false);
    t.ok(&ts[2], false);
    t.failed(&ts[3], "not a replica yet".into());
    assert_eq!(t.verdict(), Verdict::Waiting, "node1 may still answer");
    t.failed(&ts[0], "down".into());
    assert_eq!(t.verdict(), Verdict::Met);
}

fn doc() -> bytes::Bytes {
    let mut d = crate::crdt::Doc::default();
    d.put_with_context(
        bytes::Bytes::from_static(b"v"),
        None,
        None,
        crate::crdt::Actor(7),
        crate::crdt::Stamp {
            time: 1 << 16,
            node: 2,
        },
    );
    d.encode()
}

/// A read at r=2 of the key with `hash`, over `moving_targets`.
async fn read_moving(net: &Canned, hash: u64) -> KvResponse {
    read::read(
        net,
        key_req(hash),
        moving_targets(),
        R2,
        &crate::clock::SystemClock,
        &[],
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_read_during_a_move_finds_a_write_made_in_the_set_after_it() {
    // A coordinator that already saw the move wrote to node2 and node9;
    // node2 is now unreachable. This node (node3) and node1 say "not
    // found", a quorum of the set as it is now; node9 has the write.
    let written = doc();
    let mut net: Canned = canned(3, &[]);
    net.answers = Arc::new(
        [
            (n(1), (1, None)),
            (n(3), (1, None)),
            (n(9), (30, Some(written.clone()))),
        ]
        .into_iter()
        .collect(),
    );
    let got = read_moving(&net, 0).await;
    assert!(
        matches!(&got, KvResponse::Doc(Some(d)) if *d == written),
        "{got:?}"
    );
    let asked: BTreeSet<NodeId> = net.fetched.lock().unwrap().iter().cloned().collect();
    assert!(asked.contains(&n(9)), "{asked:?}");
}

#[tokio::test(start_paused = true)]
async fn a_write_during_a_move_waits_for_a_quorum_of_the_set_after_it_and_no_pending_node_leads() {
    // This node (node3) leads; node2 answers at once, node1 is slow and
    // node9 takes 300 ms. Node3 and node2 are a quorum now, but only node2
    // of the set after the move: the write waits for node9.
    let net = canned(
        3,
        &[(1, 5_000, true), (2, 1, true), (3, 1, true), (9, 300, true)],
    );
    let mut kr = key_req(0);
    kr.op = crate::KeyOp::Del;
    let started = tokio::time::Instant::now();
    write::write(&net, kr.clone(), moving_targets(), R2, &[], &[])
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(300) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );

    // Coordinated by the pending node itself: it does not lead (it may
    // not hold the key's state yet); node1, the first target, does.
    let net = canned(9, &[(1, 1, true), (2, 1, true), (3, 1, true), (9, 1, true)]);
    write::write(&net, kr, moving_targets(), R2, &[], &[])
        .await
        .unwrap();
    let merged: BTreeSet<NodeId> = net.repaired.lock().unwrap().iter().cloned().collect();
    assert!(
        merged.contains(&n(9)),
        "the pending node gets the write: {merged:?}"
    );
    assert!(
        !merged.contains(&n(1)),
        "node1 led, so was not sent a merge: {merged:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_during_a_move_asks_the_nodes_in_every_set_first() {
    // The set is {1, 2, 3} now and {1, 2, 9} after the move: node1 and
    // node2 meet r=2 in both, so they are the two asked, wherever the
    // read is coordinated and whatever the key.
    for me in [1, 2, 3, 9] {
        for hash in 0..4 {
            let net = canned(
                me,
                &[(1, 1, true), (2, 1, true), (3, 1, true), (9, 1, true)],
            );
            read_moving(&net, hash).await;
            let asked: BTreeSet<NodeId> = net.fetched.lock().unwrap().iter().cloned().collect();
            assert_eq!(asked, set_of(&[n(1), n(2)]), "node{me}, hash {hash}");
        }
    }
}
