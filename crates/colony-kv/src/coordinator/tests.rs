#![allow(clippy::unwrap_used)]

use super::*;

fn n(i: usize) -> NodeId {
    NodeId::new(format!("node{i}"))
}

fn ring(nodes: usize) -> Ring {
    let mut r = Ring::new(1, n(0), "a".into(), 64, 3).unwrap();
    for i in 1..nodes {
        r.stage_join(&n(i), format!("a{i}"));
    }
    r.commit();
    for m in r.transfers() {
        r.complete(m.partition, &m.from, &m.to).unwrap();
    }
    r
}

#[test]
fn live_replicas_are_the_targets() {
    let r = ring(5);
    let t = targets(
        &Placement::new(Arc::new(r.clone())),
        PartitionId(3),
        3,
        |_| true,
    );
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|t| t.primary && t.hints.is_empty()));
    assert_eq!(
        t.iter().map(|t| t.node.clone()).collect::<Vec<_>>(),
        r.replicas(PartitionId(3))
    );
}

#[test]
fn a_down_replica_is_replaced_by_the_next_node_on_the_walk() {
    let r = ring(5);
    let p = PartitionId(10);
    let walk: Vec<NodeId> = r.walk(p).into_iter().cloned().collect();
    let dead = walk[1].clone();
    let t = targets(&Placement::new(Arc::new(r.clone())), p, 3, |x| *x != dead);
    assert_eq!(t.len(), 3);
    let fb = t.iter().find(|t| !t.primary).unwrap();
    assert_eq!(fb.node, walk[3]);
    assert_eq!(fb.hints, vec![dead]);
}

#[test]
fn with_no_spare_node_a_live_replica_keeps_the_hint() {
    let r = ring(3);
    let p = PartitionId(0);
    let dead = r.replicas(p)[2].clone();
    let t = targets(&Placement::new(Arc::new(r.clone())), p, 3, |x| *x != dead);
    assert_eq!(t.len(), 2);
    assert_eq!(t.iter().map(|t| t.hints.len()).sum::<usize>(), 1);
    assert!(t.iter().all(|t| t.primary));
}

#[test]
fn with_no_live_replica_the_fallbacks_keep_every_hint() {
    let r = ring(5);
    let p = PartitionId(7);
    let replicas = r.replicas(p);
    let t = targets(&Placement::new(Arc::new(r.clone())), p, 3, |x| {
        !replicas.contains(x)
    });
    assert_eq!(t.len(), 2, "two spare nodes stand in");
    let mut hinted: Vec<NodeId> = t.iter().flat_map(|t| t.hints.clone()).collect();
    hinted.sort();
    let mut want = replicas.clone();
    want.sort();
    assert_eq!(hinted, want, "every down replica is hinted");
}

fn tgt(i: usize, primary: bool) -> Target {
    Target {
        node: n(i),
        primary,
        hints: vec![],
    }
}

#[test]
fn tally_meets_waits_and_fails_with_evidence() {
    let ts = [tgt(0, true), tgt(1, true), tgt(2, false)];
    let need = Need {
        total: 2,
        primary: 2,
        durable: 0,
    };
    let mut t = Tally::new(need, &ts);
    assert_eq!(t.verdict(), Verdict::Waiting);
    t.ok(&ts[2], false);
    assert_eq!(t.verdict(), Verdict::Waiting, "a fallback is no primary");
    t.failed(&ts[0], "unreachable".into());
    assert_eq!(t.verdict(), Verdict::Unmet);
    let e = t.unmet("write").to_string();
    assert!(e.contains("1 of 2"), "{e}");
    assert!(e.contains("node0: unreachable"), "{e}");

    let mut t = Tally::new(need, &ts);
    t.ok(&ts[0], true);
    t.ok(&ts[1], false);
    assert_eq!(t.verdict(), Verdict::Met);
}

#[test]
fn durable_answers_count_only_when_asked_for() {
    let ts = [tgt(0, true), tgt(1, true)];
    let need = Need {
        total: 1,
        primary: 0,
        durable: 2,
    };
    let mut t = Tally::new(need, &ts);
    t.ok(&ts[0], true);
    assert_eq!(t.verdict(), Verdict::Waiting);
    t.ok(&ts[1], false);
    assert_eq!(t.verdict(), Verdict::Unmet);
}
