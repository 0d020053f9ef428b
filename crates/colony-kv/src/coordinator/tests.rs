#![allow(clippy::unwrap_used)]

use super::*;
use crate::vnode::KvRequest;

pub(super) fn n(i: usize) -> NodeId {
    NodeId::new(format!("node{i}"))
}

pub(super) fn ring(nodes: usize) -> Ring {
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
    if primary {
        Target::primary(n(i))
    } else {
        Target::fallback(n(i), vec![])
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

/// A transport over canned answers: each node answers `Fetch` with its
/// state after its delay, `Lead` with that state as the new one, and
/// `Merge` with "merged".
#[derive(Clone)]
pub(super) struct Canned {
    pub(super) me: NodeId,
    pub(super) answers: Arc<std::collections::HashMap<NodeId, (u64, Option<bytes::Bytes>)>>,
    pub(super) repairs: Arc<tokio::sync::Semaphore>,
    /// The nodes asked for the key's state, in order.
    pub(super) fetched: Arc<std::sync::Mutex<Vec<NodeId>>>,
    /// The nodes sent a state to merge (read repairs), in order.
    pub(super) repaired: Arc<std::sync::Mutex<Vec<NodeId>>>,
    /// The nodes that answered a merge, in order.
    pub(super) answered: Arc<std::sync::Mutex<Vec<NodeId>>>,
}

impl ReplicaTransport for Canned {
    fn me(&self) -> &NodeId {
        &self.me
    }

    async fn call(
        &self,
        node: &NodeId,
        _partition: PartitionId,
        req: KvRequest,
    ) -> Result<crate::vnode::KvResponse, CallFailed> {
        match req {
            KvRequest::Fetch { .. } => self.fetched.lock().unwrap().push(node.clone()),
            KvRequest::Merge { .. } => self.repaired.lock().unwrap().push(node.clone()),
            _ => {}
        }
        let Some((delay_ms, doc)) = self.answers.get(node).cloned() else {
            return Err(CallFailed::new(
                crate::KvError::Unavailable(format!("{node} is down")),
                false,
            ));
        };
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        if let KvRequest::Merge { .. } = req {
            self.answered.lock().unwrap().push(node.clone());
        }
        match req {
            KvRequest::Fetch { .. } => Ok(crate::vnode::KvResponse::Doc(doc)),
            KvRequest::Lead { .. } => Ok(crate::vnode::KvResponse::Led {
                out: Box::new(crate::vnode::KvResponse::Reply(crate::Reply::Ok)),
                doc,
                durable: false,
            }),
            // Repairs: accepted, nothing to check here.
            _ => Ok(crate::vnode::KvResponse::Merged {
                changed: None,
                durable: false,
            }),
        }
    }

    fn repair_budget(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.repairs
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallbacks_not_found_waits_for_the_replica_still_to_answer() {
    // node1 holds the key but answers last; node2 missed the write; node4
    // stands in for a dead node3 and has nothing. r=2 is met by node2 and
    // node4, but neither of their "not found" says the key is absent.
    let doc = crate::crdt::Doc::default().encode();
    let answers = [
        (n(1), (50, Some(doc.clone()))),
        (n(2), (1, None)),
        (n(4), (1, None)),
    ];
    let net = Canned {
        me: n(1),
        answers: Arc::new(answers.into_iter().collect()),
        repairs: new_repair_budget(),
        fetched: Default::default(),
        repaired: Default::default(),
        answered: Default::default(),
    };
    let target = |i: usize, primary: bool| {
        if primary {
            Target::primary(n(i))
        } else {
            Target::fallback(n(i), vec![n(3)])
        }
    };
    let kr = KeyReq {
        partition: PartitionId(0),
        bucket: bytes::Bytes::from_static(b"default"),
        key: bytes::Bytes::from_static(b"k"),
        hash: 0,
        op: crate::KeyOp::FetchDoc,
        overrides: Default::default(),
    };
    let need = Need {
        total: 2,
        primary: 0,
        durable: 0,
    };
    let targets = vec![target(1, true), target(2, true), target(4, false)];
    let got = read(
        &net,
        kr.clone(),
        targets,
        need,
        &crate::clock::SystemClock,
        &[],
    )
    .await
    .unwrap();
    assert!(
        matches!(&got, crate::vnode::KvResponse::Doc(Some(d)) if *d == doc),
        "{got:?}"
    );

    // Two primaries saying "not found" is an answer: no waiting for the third.
    let answers = [
        (n(1), (5_000, Some(doc.clone()))),
        (n(2), (1, None)),
        (n(3), (1, None)),
    ];
    let net = Canned {
        answers: Arc::new(answers.into_iter().collect()),
        ..net
    };
    let targets = vec![target(1, true), target(2, true), target(3, true)];
    let started = tokio::time::Instant::now();
    let got = read(&net, kr, targets, need, &crate::clock::SystemClock, &[])
        .await
        .unwrap();
    assert!(
        matches!(got, crate::vnode::KvResponse::Doc(None)),
        "{got:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(5_000));
}

pub(super) fn key_req(hash: u64) -> KeyReq {
    KeyReq {
        partition: PartitionId(0),
        bucket: bytes::Bytes::from_static(b"default"),
        key: bytes::Bytes::from_static(b"k"),
        hash,
        op: crate::KeyOp::FetchDoc,
        overrides: Default::default(),
    }
}

pub(super) fn canned(me: usize, answers: &[(usize, u64, bool)]) -> Canned {
    let doc = crate::crdt::Doc::default().encode();
    Canned {
        me: n(me),
        answers: Arc::new(
            answers
                .iter()
                .map(|&(i, delay, has)| (n(i), (delay, has.then(|| doc.clone()))))
                .collect(),
        ),
        repairs: new_repair_budget(),
        fetched: Default::default(),
        repaired: Default::default(),
        answered: Default::default(),
    }
}

fn primaries(nodes: &[usize]) -> Vec<Target> {
    nodes.iter().map(|&i| Target::primary(n(i))).collect()
}

pub(super) const R2: Need = Need {
    total: 2,
    primary: 0,
    durable: 0,
};

/// A read at r=2 of the key with `hash` from primaries node1..node3.
async fn read_r2(net: &Canned, hash: u64) -> crate::vnode::KvResponse {
    read(
        net,
        key_req(hash),
        primaries(&[1, 2, 3]),
        R2,
        &crate::clock::SystemClock,
        &[],
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_read_asks_only_as_many_replicas_as_it_needs_this_node_first() {
    let mut second = std::collections::BTreeSet::new();
    for hash in 0..8 {
        let net = canned(2, &[(1, 1, true), (2, 1, true), (3, 1, true)]);
        let got = read_r2(&net, hash).await;
        assert!(matches!(got, crate::vnode::KvResponse::Doc(Some(_))));
        let asked = net.fetched.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "hash {hash}: asked {asked:?}");
        assert_eq!(asked[0], n(2), "this node is asked first");
        second.insert(asked[1].clone());
    }
    assert_eq!(
        second.len(),
        2,
        "reads of different keys spread over the other replicas"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_slow_replica_makes_the_read_ask_the_next() {
    // node3 is down: whichever other replica was asked with node1, the read
    // ends with two answers.
    for hash in 0..4 {
        let net = canned(1, &[(1, 1, true), (2, 1, true)]);
        let got = read_r2(&net, hash).await;
        assert!(
            matches!(got, crate::vnode::KvResponse::Doc(Some(_))),
            "hash {hash}"
        );
    }
    // node3 answers, but only after a long pause: the read does not wait
    // for it.
    for hash in 0..4 {
        let net = canned(1, &[(1, 1, true), (2, 1, true), (3, 1_500, true)]);
        let started = tokio::time::Instant::now();
        read_r2(&net, hash).await;
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1_000),
            "hash {hash}: waited for the paused replica"
        );
    }
}

#[test]
fn with_n_val_all_every_node_is_a_primary_and_a_down_one_leaves_its_hint_with_one() {
    let r = ring(5);
    let placement = Placement::new(Arc::new(r.clone()));
    let p = PartitionId(12);
    let walk: Vec<NodeId> = r.walk(p).into_iter().cloned().collect();
    assert_eq!(walk.len(), 5);
    let t = targets(&placement, p, walk.len(), |_| true);
    assert_eq!(t.iter().map(|t| t.node.clone()).collect::<Vec<_>>(), walk);
    assert!(t.iter().all(|t| t.primary && t.hints.is_empty()));
    // No node is left to stand in: a live primary keeps the hint.
    let dead = walk[2].clone();
    let t = targets(&placement, p, walk.len(), |x| *x != dead);
    assert_eq!(t.len(), 4);
    assert!(t.iter().all(|t| t.primary));
    let hinted: Vec<NodeId> = t.iter().flat_map(|t| t.hints.clone()).collect();
    assert_eq!(hinted, vec![dead]);
    // Nobody is joining a settled ring.
    assert!(placement.joining().is_empty());
}

#[test]
fn a_node_about_to_own_its_first_partition_is_joining_and_takes_shared_writes() {
    let mut r = ring(4);
    let newcomer = n(9);
    r.stage_join(&newcomer, "a9".into());
    r.commit();
    assert!(!r.owns_any(&newcomer) && r.shares(&newcomer));
    let placement = Placement::new(Arc::new(r.clone()));
    assert_eq!(placement.joining(), std::slice::from_ref(&newcomer));
    // A partition it will not replicate: it still takes writes of a shared
    // bucket, and nothing else; and it would refuse other buckets' writes.
    let p = (0..64)
        .map(PartitionId)
        .find(|p| !r.replicates(*p, &newcomer))
        .unwrap();
    let merge = |bucket: &'static [u8]| KvRequest::Merge {
        bucket: bytes::Bytes::from_static(bucket),
        key: bytes::Bytes::from_static(b"k"),
        hash: 0,
        doc: bytes::Bytes::new(),
        hints: Vec::new(),
    };
    let shared = [bytes::Bytes::from_static(b"everywhere")];
    assert_eq!(
        refusal(&r, &newcomer, p, &merge(b"everywhere"), &shared),
        None
    );
    assert!(refusal(&r, &newcomer, p, &merge(b"default"), &shared).is_some());
    assert!(refusal(&r, &newcomer, p, &KvRequest::AaeBranches, &shared).is_none());
    assert!(refusal(&r, &newcomer, p, &KvRequest::AaeBranches, &[]).is_some());
    // A node that left shares nothing: it refuses the shared bucket too.
    let gone = n(20);
    assert!(refusal(&r, &gone, p, &merge(b"everywhere"), &shared).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_read_repairs_the_replica_that_answered_an_older_state_and_no_other() {
    let mut written = crate::crdt::Doc::default();
    let stamp = crate::crdt::Stamp {
        time: 1 << 16,
        node: 1,
    };
    written.put_with_context(
        bytes::Bytes::from_static(b"v"),
        None,
        None,
        crate::crdt::Actor(7),
        stamp,
    );
    let written = written.encode();
    // node1 (this node) has the write, node2 missed it, node3 is slow. The
    // hash makes the read ask node2 after node1.
    let hash = (0..64)
        .find(|&h| read::ask_order(&n(1), &primaries(&[1, 2, 3]), h)[1] == 1)
        .unwrap();
    let mut net = canned(1, &[(1, 1, false), (2, 1, false), (3, 5_000, false)]);
    let answers = [
        (n(1), (1, Some(written.clone()))),
        (n(2), (1, None)),
        (n(3), (5_000, Some(written.clone()))),
    ];
    net.answers = Arc::new(answers.into_iter().collect());
    let got = read_r2(&net, hash).await;
    assert!(
        matches!(&got, crate::vnode::KvResponse::Doc(Some(d)) if *d == written),
        "{got:?}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(*net.fetched.lock().unwrap(), vec![n(1), n(2)]);
    assert_eq!(
        *net.repaired.lock().unwrap(),
        vec![n(2)],
        "only the stale replica"
    );

    // Both asked hold the write: nothing is repaired.
    let mut net = canned(1, &[]);
    let answers = [
        (n(1), (1, Some(written.clone()))),
        (n(2), (1, Some(written.clone()))),
        (n(3), (1, None)),
    ];
    net.answers = Arc::new(answers.into_iter().collect());
    read_r2(&net, hash).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(net.repaired.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_write_dropped_by_its_client_still_reaches_every_replica() {
    // This node leads at once; the others take 100 and 200 ms to merge.
    // The client goes away after 50 ms: the merges go on without it.
    let net = canned(1, &[(1, 1, true), (2, 100, true), (3, 200, true)]);
    let mut kr = key_req(0);
    kr.op = crate::KeyOp::Del;
    let w = write(&net, kr, primaries(&[1, 2, 3]), R2, &[], &[]);
    let cut = tokio::time::timeout(std::time::Duration::from_millis(50), w).await;
    assert!(cut.is_err(), "the write was still waiting for its merges");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(*net.answered.lock().unwrap(), vec![n(2), n(3)]);
}
