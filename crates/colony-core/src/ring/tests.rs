use super::*;
use proptest::prelude::*;

fn n(i: usize) -> NodeId {
    NodeId::new(format!("node{i}"))
}

fn three() -> Ring {
    let mut r = Ring::new(7, n(0), "a0".into(), 64, 3).unwrap();
    r.stage_join(&n(1), "a1".into());
    r.stage_join(&n(2), "a2".into());
    r.commit();
    finish_all(&mut r);
    r
}

/// Complete every transfer, as the owners would once the data is across.
fn finish_all(r: &mut Ring) {
    for m in r.transfers() {
        r.complete(m.partition, &m.from, &m.to).unwrap();
    }
}

#[test]
fn single_node_owns_every_partition() {
    let me = NodeId::new("solo");
    let ring = Ring::single(me.clone(), 64).unwrap();
    assert_eq!(ring.ring_size(), 64);
    assert_eq!(ring.owned_by(&me).count(), 64);
    assert!(ring.transfers().is_empty());
}

#[test]
fn join_plans_transfers_and_ownership_switches_only_on_completion() {
    let mut r = Ring::new(7, n(0), "a0".into(), 64, 3).unwrap();
    r.stage_join(&n(1), "a1".into());
    let plan = r.plan();
    assert_eq!(
        plan.members,
        vec![(n(1), MemberStatus::Joining, MemberStatus::Valid)]
    );
    assert_eq!(plan.transfers.len(), 32);
    assert_eq!(r.owned_by(&n(0)).count(), 64, "planning changes nothing");
    r.commit();
    assert_eq!(r.member(&n(1)).unwrap().status, MemberStatus::Valid);
    assert_eq!(r.transfers().len(), 32);
    assert_eq!(
        r.owned_by(&n(0)).count(),
        64,
        "nothing moves before transfers finish"
    );
    let first = r.transfers()[0].clone();
    assert_eq!(
        r.complete(first.partition, &first.from, &first.to).unwrap(),
        n(1)
    );
    assert_eq!(r.owner(first.partition), Some(&n(1)));
    assert_eq!(r.next(first.partition), None);
    assert!(r.complete(first.partition, &first.from, &first.to).is_err());
    finish_all(&mut r);
    assert_eq!(r.owned_by(&n(1)).count(), 32);
    assert!(r.plan().is_empty());
}

#[test]
fn leave_hands_everything_off_then_the_member_has_left() {
    let mut r = three();
    r.stage_join(&n(3), "a3".into());
    r.commit();
    finish_all(&mut r);
    r.stage_leave(&n(2)).unwrap();
    assert_eq!(r.member(&n(2)).unwrap().status, MemberStatus::Leaving);
    r.commit();
    assert_eq!(r.member(&n(2)).unwrap().status, MemberStatus::Exiting);
    let leaving = r.owned_by(&n(2)).count();
    let transfers = r.transfers();
    assert_eq!(transfers.iter().filter(|t| t.from == n(2)).count(), leaving);
    assert!(
        transfers.len() <= leaving + 12,
        "{} moves to hand off {leaving}",
        transfers.len()
    );
    finish_all(&mut r);
    assert_eq!(r.owned_by(&n(2)).count(), 0);
    assert_eq!(r.member(&n(2)).unwrap().status, MemberStatus::Left);
    assert_eq!(
        r.owned_by(&n(0)).count() + r.owned_by(&n(1)).count() + r.owned_by(&n(3)).count(),
        64
    );
}

#[test]
fn the_last_member_cannot_leave_and_clear_undoes_staging() {
    let mut r = Ring::new(7, n(0), "a0".into(), 64, 3).unwrap();
    assert!(r.stage_leave(&n(0)).is_err());
    assert!(r.mark_down(&n(0)).is_err());
    r.stage_join(&n(1), "a1".into());
    assert_eq!(r.clear(), 1);
    assert!(r.plan().is_empty());
    assert_eq!(r.member(&n(1)).unwrap().status, MemberStatus::Left);
}

#[test]
fn down_member_partitions_move_at_once() {
    let mut r = three();
    r.mark_down(&n(1)).unwrap();
    let plan = r.commit();
    assert!(plan.transfers.iter().all(|t| t.from != n(1)));
    assert_eq!(plan.forced.len(), 21.max(plan.forced.len()));
    assert_eq!(r.owned_by(&n(1)).count(), 0);
}

#[test]
fn merge_rejects_other_clusters_and_decode_checks_owners() {
    let mut a = three();
    let b = Ring::new(8, n(0), "a0".into(), 64, 3).unwrap();
    assert!(a.merge(&b).is_err());
    let round = Ring::decode(&a.encode()).unwrap();
    assert_eq!(round, a);
    assert!(Ring::decode(b"garbage").is_err());
}

#[test]
fn a_completed_move_survives_a_concurrent_commit() {
    let mut base = Ring::new(7, n(0), "a0".into(), 64, 3).unwrap();
    base.stage_join(&n(1), "a1".into());
    base.commit();
    let t = base.transfers()[0].clone();
    // The owner completes while another node, unaware, stages and commits.
    let mut owner_view = base.clone();
    owner_view.complete(t.partition, &t.from, &t.to).unwrap();
    let mut other = base.clone();
    other.stage_join(&n(2), "a2".into());
    other.commit();
    let mut merged = owner_view.clone();
    merged.merge(&other).unwrap();
    assert_eq!(merged.owner(t.partition), Some(&t.to));
    let mut merged2 = other.clone();
    merged2.merge(&owner_view).unwrap();
    assert_eq!(merged, merged2);
}

#[test]
fn metadata_is_last_writer_wins_and_listed_by_prefix() {
    let base = three();
    let v0 = base.version();
    let mut a = base.clone();
    a.set_meta("bucket/x", b"1".to_vec());
    a.set_meta("bucket/y", b"2".to_vec());
    a.set_meta("other", b"3".to_vec());
    assert!(a.version() > v0, "a setting advances the version");
    assert_ne!(a.digest(), base.digest(), "a setting changes the digest");
    assert_eq!(a.meta("bucket/x"), Some(&b"1"[..]));
    assert_eq!(a.meta("bucket/z"), None);
    let listed: Vec<(&str, &[u8])> = a.meta_prefix("bucket/").collect();
    assert_eq!(listed, [("bucket/x", &b"1"[..]), ("bucket/y", &b"2"[..])]);
    // b saw a's settings, then changed one: its change wins everywhere.
    let mut b = base.clone();
    b.merge(&a).unwrap();
    b.set_meta("bucket/x", b"9".to_vec());
    a.set_meta("other", b"4".to_vec());
    let mut ab = a.clone();
    ab.merge(&b).unwrap();
    let mut ba = b.clone();
    ba.merge(&a).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab.meta("bucket/x"), Some(&b"9"[..]));
    // Equal stamps (two nodes writing at once) go to the larger value.
    let mut c = base.clone();
    let mut d = base.clone();
    c.set_meta("k", b"c".to_vec());
    d.set_meta("k", b"d".to_vec());
    let mut cd = c.clone();
    cd.merge(&d).unwrap();
    let mut dc = d.clone();
    dc.merge(&c).unwrap();
    assert_eq!(cd.meta("k"), Some(&b"d"[..]));
    assert_eq!(cd, dc);
}

#[test]
fn a_ring_file_written_before_metadata_still_loads() {
    let ring = three();
    let bytes = ring.encode();
    // The old layout is the new one without the trailing map (empty: one
    // zero byte for its length).
    assert_eq!(bytes.last(), Some(&0));
    let old = &bytes[..bytes.len() - 1];
    assert_eq!(Ring::decode(old).unwrap(), ring);
    let mut with_meta = ring.clone();
    with_meta.set_meta("bucket/x", b"1".to_vec());
    assert_eq!(Ring::decode(&with_meta.encode()).unwrap(), with_meta);
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Leave(usize),
    Down(usize),
    Commit,
    Complete(usize),
    Clear,
    /// Set metadata key `k{0}` to the one-byte value `{1}`.
    Meta(usize, u8),
}

fn op() -> impl Strategy<Value = (usize, Op)> {
    let o = prop_oneof![
        (1usize..6).prop_map(Op::Join),
        (0usize..6).prop_map(Op::Leave),
        (0usize..6).prop_map(Op::Down),
        Just(Op::Commit),
        (0usize..64).prop_map(Op::Complete),
        Just(Op::Clear),
        (0usize..3, 0u8..3).prop_map(|(k, v)| Op::Meta(k, v)),
    ];
    (0usize..3, o)
}

fn apply(r: &mut Ring, op: &Op) {
    match op {
        Op::Join(i) => {
            r.stage_join(&n(*i), format!("a{i}"));
        }
        Op::Leave(i) => {
            let _ = r.stage_leave(&n(*i));
        }
        Op::Down(i) => {
            let _ = r.mark_down(&n(*i));
        }
        Op::Commit => {
            r.commit();
        }
        Op::Complete(k) => {
            let t = r.transfers();
            if !t.is_empty() {
                let m = &t[k % t.len()];
                r.complete(m.partition, &m.from, &m.to).unwrap();
            }
        }
        Op::Clear => {
            r.clear();
        }
        Op::Meta(k, v) => r.set_meta(&format!("k{k}"), vec![*v]),
    }
}

proptest! {
    /// Three replicas change the ring concurrently and merge at random
    /// moments: merge is commutative, associative and idempotent, and once
    /// every replica has merged every other they hold one ring.
    #[test]
    fn merge_is_a_semilattice_and_replicas_converge(
        ops in proptest::collection::vec(op(), 1..60),
        syncs in proptest::collection::vec((0usize..3, 0usize..3), 0..20),
    ) {
        let base = three();
        let mut reps = [base.clone(), base.clone(), base];
        for (k, (who, o)) in ops.iter().enumerate() {
            apply(&mut reps[*who], o);
            if let Some((a, b)) = syncs.get(k) {
                let other = reps[*b].clone();
                reps[*a].merge(&other).unwrap();
            }
        }
        let (a, b, c) = (&reps[0], &reps[1], &reps[2]);
        let mut ab = a.clone(); ab.merge(b).unwrap();
        let mut ba = b.clone(); ba.merge(a).unwrap();
        prop_assert_eq!(&ab, &ba);
        let mut ab_c = ab.clone(); ab_c.merge(c).unwrap();
        let mut bc = b.clone(); bc.merge(c).unwrap();
        let mut a_bc = a.clone(); a_bc.merge(&bc).unwrap();
        prop_assert_eq!(&ab_c, &a_bc);
        let mut again = ab_c.clone();
        prop_assert!(!again.merge(&ab_c).unwrap());
        prop_assert_eq!(again.digest(), ab_c.digest());
        // Every setting made anywhere survives with some replica's value.
        for (k, v) in ab_c.meta_prefix("k") {
            prop_assert!(reps.iter().any(|r| r.meta(k) == Some(v)), "{} = {:?}", k, v);
        }
        prop_assert_eq!(
            ab_c.meta_prefix("").count(),
            (0..3).filter(|k| reps.iter().any(|r| r.meta(&format!("k{k}")).is_some())).count()
        );
        // Every partition's owner is still a member.
        for i in 0..64u16 {
            let o = ab_c.owner(PartitionId(i)).unwrap();
            prop_assert!(ab_c.member(o).is_some());
        }
    }

    /// Driving a ring to quiescence (commit, finish transfers) leaves it
    /// balanced over the claiming members.
    #[test]
    fn quiescent_rings_are_balanced(ops in proptest::collection::vec(op(), 1..40)) {
        let mut r = three();
        for (_, o) in &ops {
            apply(&mut r, o);
        }
        for _ in 0..4 {
            r.commit();
            finish_all(&mut r);
        }
        prop_assert!(r.plan().transfers.is_empty());
        let claimants = r.claimants();
        let q = 64usize;
        for m in &claimants {
            let c = r.owned_by(m).count();
            prop_assert!(c <= q.div_ceil(claimants.len()) + 1, "{} owns {}", m, c);
        }
    }
}

/// The owner streams a partition to the planned node, and while the data
/// is on its way it merges a commit made elsewhere that re-plans the
/// partition to another node. Completing the transfer it ran must not hand
/// the partition to that other node, which holds none of its data.
#[test]
fn completing_a_transfer_never_hands_the_partition_to_a_node_that_was_not_sent_it() {
    let mut base = three();
    base.stage_join(&n(3), "a3".into());
    base.commit();
    let mut other = base.clone();
    other.stage_leave(&n(3)).unwrap();
    other.stage_join(&n(4), "a4".into());
    other.commit();
    let (t, retarget) = base
        .transfers()
        .into_iter()
        .find_map(|t| {
            let to = other.next(t.partition)?.clone();
            (to != t.to).then_some((t, to))
        })
        .expect("the second commit re-plans some move");
    // The owner merges the re-plan after it sent the data to `t.to`.
    let mut owner = base.clone();
    owner.merge(&other).unwrap();
    assert_eq!(owner.next(t.partition), Some(&retarget));
    assert!(owner.complete(t.partition, &t.from, &t.to).is_err());
    assert_eq!(owner.owner(t.partition), Some(&t.from));
    // A transfer to the new target completes.
    owner.complete(t.partition, &t.from, &retarget).unwrap();
    assert_eq!(owner.owner(t.partition), Some(&retarget));
}

/// A partition is handed to a member while, elsewhere, that member is
/// staged to leave, committed (the partition is re-planned away from the
/// old owner) and retired as owning nothing. Merged, the member is `Left`
/// yet owns the partition and holds its only copy; the hand-over voided
/// the re-plan, so nothing is planned to take it until the cluster commits
/// again. That commit must move it with a transfer from that member, not
/// force it to a node that never had the data.
#[test]
fn a_member_retired_while_receiving_a_partition_hands_it_on_with_its_data() {
    let mut base = three();
    base.stage_join(&n(3), "a3".into());
    base.commit();
    let t = base.transfers().into_iter().find(|t| t.to == n(3)).unwrap();
    let mut sender = base.clone();
    sender.complete(t.partition, &t.from, &t.to).unwrap();
    let mut other = base.clone();
    other.stage_leave(&n(3)).unwrap();
    other.commit();
    assert_eq!(other.member(&n(3)).unwrap().status, MemberStatus::Left);
    let mut merged = sender.clone();
    merged.merge(&other).unwrap();
    assert_eq!(merged.owner(t.partition), Some(&n(3)));
    assert_eq!(merged.next(t.partition), None);
    let plan = merged.plan();
    assert!(
        plan.forced.iter().all(|m| m.partition != t.partition),
        "partition {} forced off {} without its data: {plan:?}",
        t.partition,
        n(3)
    );
    // Should it be gone for good, an operator can still mark it down.
    assert!(merged.clone().mark_down(&n(3)).is_ok());
    merged.commit();
    let out = merged.next(t.partition).cloned().unwrap();
    merged.complete(t.partition, &n(3), &out).unwrap();
    assert_eq!(merged.owned_by(&n(3)).count(), 0);
    assert_eq!(merged.member(&n(3)).unwrap().status, MemberStatus::Left);
}

#[test]
fn replicas_are_distinct_and_a_single_node_replicates_everything_once() {
    let solo = Ring::single(n(9), 64).unwrap();
    assert_eq!(solo.replicas(PartitionId(5)), vec![n(9)]);
    let r = three();
    for i in 0..64 {
        let reps = r.replicas(PartitionId(i));
        assert_eq!(reps[0], *r.owner(PartitionId(i)).unwrap());
        let mut d = reps.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), reps.len(), "partition {i}: {reps:?}");
        // 64 partitions cannot be striped over 3 nodes all the way round,
        // yet the walk goes on at the wrap until it has met 3 nodes: every
        // range has 3 copies.
        assert_eq!(reps.len(), 3, "partition {i}: {reps:?}");
    }
    // With 3 nodes there are no fallbacks beyond the replicas.
    let walk = r.walk(PartitionId(62));
    assert_eq!(walk.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every range has min(n_val, owners) distinct replicas, the walk lists
    /// them first, and a planned move adds at most one node to any range,
    /// which the moving partition's current owner replicates.
    #[test]
    fn replica_sets_are_full_and_a_move_adds_one_node_its_sender_can_feed(
        joins in 1usize..6,
        n_val in 1u8..5,
        q in prop::sample::select(vec![8u32, 16, 32, 64]),
    ) {
        let mut r = Ring::new(7, n(0), "a0".into(), q, n_val).unwrap();
        for j in 0..joins {
            r.stage_join(&n(1 + j), format!("a{}", 1 + j));
        }
        r.commit();
        for ring in [r.clone(), { let mut f = r.clone(); finish_all(&mut f); f }] {
            let owners: std::collections::BTreeSet<NodeId> = (0..q as u16)
                .filter_map(|i| ring.owner(PartitionId(i)).cloned())
                .collect();
            let want = usize::from(n_val).min(owners.len());
            for i in 0..q as u16 {
                let p = PartitionId(i);
                let reps = ring.replicas(p);
                prop_assert_eq!(reps.len(), want, "partition {} {:?}", p, reps);
                let walk: Vec<NodeId> = ring.walk(p).into_iter().cloned().collect();
                prop_assert_eq!(&walk[..want], &reps[..]);
            }
            for m in ring.transfers() {
                let gained = ring.gained_by(m.partition, &m.to);
                for (p, node) in &gained {
                    prop_assert_eq!(gained.iter().filter(|(x, _)| x == p).count(), 1);
                    prop_assert!(ring.replicas(*p).contains(&m.from),
                        "{} sends {} without replicating it", m.from, p);
                    prop_assert!(ring.replicates(*p, node));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A planned move's receiver is sent every range it becomes a replica of:
    /// after the moves complete, each node replicates only ranges it held
    /// before or was streamed.
    #[test]
    fn every_range_a_node_gains_is_streamed_to_it(joins in 1usize..4, n_val in 1u8..4) {
        let mut r = Ring::new(7, n(0), "a0".into(), 32, n_val).unwrap();
        r.stage_join(&n(1), "a1".into());
        r.commit();
        finish_all(&mut r);
        for j in 0..joins {
            r.stage_join(&n(2 + j), format!("a{}", 2 + j));
        }
        r.commit();
        let before = r.clone();
        let mut streamed: std::collections::HashSet<(NodeId, PartitionId)> = Default::default();
        for m in r.transfers() {
            for (p, to) in r.gained_by(m.partition, &m.to) {
                streamed.insert((to, p));
            }
            // Each move is computed against the ring as it stands then.
            r.complete(m.partition, &m.from, &m.to).unwrap();
        }
        for i in 0..32u16 {
            let p = PartitionId(i);
            for node in r.replicas(p) {
                let had = before.replicas(p).contains(&node);
                prop_assert!(had || streamed.contains(&(node.clone(), p)),
                    "{node} replicates {p} but was never sent it");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Data follows the ring: through joins, leaves and moves completed in
    /// any order, a node only receives a range from a sender that holds it,
    /// and nodes drop what they no longer replicate; afterwards every
    /// replica of every range holds it (no replica is left without data).
    #[test]
    fn every_replica_ends_up_holding_its_ranges(
        steps in proptest::collection::vec((0usize..3, 0usize..6, any::<u64>()), 1..8),
        n_val in 1u8..4,
    ) {
        use std::collections::HashSet;
        let q = 32u16;
        let mut r = Ring::new(7, n(0), "a0".into(), u32::from(q), n_val).unwrap();
        let holds = |r: &Ring| -> HashSet<(NodeId, PartitionId)> {
            (0..q).flat_map(|i| {
                let p = PartitionId(i);
                r.replicas(p).into_iter().map(move |x| (x, p))
            }).collect()
        };
        let mut held = holds(&r);
        for (kind, who, order) in steps {
            match kind {
                0 | 1 => { r.stage_join(&n(who + 1), format!("a{}", who + 1)); }
                _ => { let _ = r.stage_leave(&n(who)); }
            }
            r.commit();
            let mut moves = r.transfers();
            // Complete them in an order chosen by the seed.
            let len = moves.len().max(1);
            moves.rotate_left((order as usize) % len);
            for m in moves {
                let gained = r.gained_by(m.partition, &m.to);
                for (p, to) in gained {
                    prop_assert!(held.contains(&(m.from.clone(), p)),
                        "{} streams {p} without holding it", m.from);
                    held.insert((to, p));
                }
                r.complete(m.partition, &m.from, &m.to).unwrap();
                held.retain(|(x, p)| r.replicates(*p, x));
            }
        }
        for i in 0..q {
            let p = PartitionId(i);
            for x in r.replicas(p) {
                prop_assert!(held.contains(&(x.clone(), p)), "{x} replicates {p} but holds nothing");
            }
        }
    }
}
