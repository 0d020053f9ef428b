//! A vnode's side of buckets every owner keeps whole (`n_val=all`), on
//! real stores: dropping a partition this node no longer replicates leaves
//! those buckets' keys (their counts, expiry index entries and tree hashes
//! too), writes to them do not stop the drop, a partition handed away
//! still serves them, and their share of a partition is read out alone.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_core::cluster::DropStep;
use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId, Ring};
use colony_kv::props::{meta_key, BucketProps};
use colony_kv::shared::SharedBuckets;
use colony_kv::store::{Store, StoreConfig};
use colony_kv::vnode::{KvRequest, KvResponse, KvVnode, Limits};
use colony_kv::{Clock, FsyncPolicy, KeyOp, KvError, SetCond, SetExpire};
use std::collections::BTreeMap;
use std::sync::Arc;

const P: PartitionId = PartitionId(5);
/// Keys per bucket: a few drop steps' worth each.
const KEYS: u32 = 1_200;
/// Storage order: `aaa`, then the kept `all`, then `zzz` (a drop steps
/// over the kept bucket and goes on behind it).
const BUCKETS: [&str; 3] = ["aaa", "all", "zzz"];
const KEPT: &str = "all";

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_000_000
    }
}

fn me() -> NodeId {
    NodeId::new("n1")
}

/// A vnode whose node keeps `all` whole (it owns every partition of a
/// ring where `all` has n_val=all).
fn open(dir: &std::path::Path) -> (Arc<Store>, KvVnode) {
    let store = Store::open(&StoreConfig {
        path: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 1 << 20,
    })
    .unwrap();
    let mut ring = Ring::single(me(), 16).unwrap();
    let mut props = BucketProps::default();
    props.set("n_val", "all").unwrap();
    ring.set_meta(&meta_key(KEPT.as_bytes()), props.encode());
    let shared = SharedBuckets::new();
    shared.observe(&Arc::new(ring), &me());
    let limits = Limits {
        max_value_bytes: 1 << 20,
        doc_cache_bytes: 256 << 10,
    };
    let v = KvVnode::open_seeded(P, &me(), store.clone(), Arc::new(FixedClock), limits, 7)
        .unwrap()
        .with_shared(shared);
    (store, v)
}

fn call(v: &mut KvVnode, req: KvRequest) -> KvResponse {
    let mut out = [v.handle(req)];
    v.commit(&mut out);
    let [r] = out;
    r
}

fn b(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

fn set(bucket: &str, i: u32) -> KvRequest {
    let key = Bytes::from(format!("key:{i}"));
    KvRequest::Key {
        bucket: b(bucket),
        hash: colony_core::key_hash(bucket.as_bytes(), &key),
        key,
        op: KeyOp::Set {
            value: Bytes::from(format!("{bucket} {i}")),
            // Every third expires, so the expiry index has entries of
            // every bucket.
            expire: if i.is_multiple_of(3) {
                SetExpire::At(5_000_000)
            } else {
                SetExpire::Clear
            },
            cond: SetCond::Always,
            get: false,
        },
    }
}

fn fill(v: &mut KvVnode) {
    for bucket in BUCKETS {
        for i in 0..KEYS {
            let r = call(v, set(bucket, i));
            assert!(!matches!(r, KvResponse::Failed(_)), "{r:?}");
        }
    }
}

fn drop_step(v: &mut KvVnode, start: bool) -> DropStep {
    let keep = vec![b(KEPT)];
    match call(v, KvRequest::HandoffDrop { start, keep }) {
        KvResponse::Dropping(s) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Stored entries per bucket.
fn stored(store: &Store) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in store.data().prefix(P.to_be_bytes()) {
        let (k, _) = item.into_inner().unwrap();
        let (bucket, _, _) = colony_kv::store::split_data_key(&k).unwrap();
        *out.entry(String::from_utf8_lossy(bucket).into_owned())
            .or_default() += 1;
    }
    out
}

/// Expiry index entries per bucket.
fn indexed(store: &Store) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in store.expiry().prefix(P.to_be_bytes()) {
        let k = item.key().unwrap();
        let (_, bucket, _) = colony_kv::store::split_expiry_key(&k).unwrap();
        *out.entry(String::from_utf8_lossy(bucket).into_owned())
            .or_default() += 1;
    }
    out
}

/// Live keys per bucket, as the vnode counts them.
fn counted(v: &mut KvVnode) -> BTreeMap<String, u64> {
    match call(v, KvRequest::Count) {
        KvResponse::Counts(c) => c
            .into_iter()
            .filter(|(_, n)| n.keys > 0)
            .map(|(b, n)| (String::from_utf8_lossy(&b).into_owned(), n.keys))
            .collect(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn root(v: &mut KvVnode) -> (u64, u64) {
    match call(v, KvRequest::AaeInfo) {
        KvResponse::AaeInfo(t) => (t.root, t.entries),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn a_drop_leaves_the_buckets_kept_whole_and_their_writes_do_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut v) = open(dir.path());
    // A tree from the start, kept in step by every write and removal.
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    fill(&mut v);
    let third = KEYS.div_ceil(3) as usize;
    assert_eq!(indexed(&store).get(KEPT), Some(&third));

    let mut step = drop_step(&mut v, true);
    let mut steps = 1;
    while step == DropStep::More {
        // A write to the kept bucket lands between two steps: the drop
        // goes on (such writes come all the time, to every partition).
        let r = call(&mut v, set(KEPT, KEYS + steps));
        assert!(!matches!(r, KvResponse::Failed(_)), "{r:?}");
        step = drop_step(&mut v, false);
        steps += 1;
    }
    assert_eq!(step, DropStep::Done);
    assert!(steps > 3, "dropped in {steps} steps: not bounded");
    let kept = KEYS as usize + steps as usize - 1;
    assert_eq!(stored(&store), BTreeMap::from([(KEPT.to_string(), kept)]));
    // Kept keys expiring still have their index entries; the rest none.
    let kept_expiring = (KEYS + 1..KEYS + steps)
        .filter(|i| i.is_multiple_of(3))
        .count()
        + third;
    assert_eq!(
        indexed(&store),
        BTreeMap::from([(KEPT.to_string(), kept_expiring)])
    );
    assert_eq!(
        counted(&mut v),
        BTreeMap::from([(KEPT.to_string(), kept as u64)])
    );
    // The tree kept in step is the tree of what is left.
    let before = root(&mut v);
    assert_eq!(before.1, kept as u64);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    assert_eq!(root(&mut v), before);
    assert!(!colony_kv::vnode::holds_other_than(&store, P, &[b(KEPT)]).unwrap());
}

#[test]
fn a_write_to_another_bucket_still_stops_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut v) = open(dir.path());
    fill(&mut v);
    assert_eq!(drop_step(&mut v, true), DropStep::More);
    call(&mut v, set("zzz", KEYS + 1));
    assert_eq!(drop_step(&mut v, false), DropStep::Stopped);
    assert!(colony_kv::vnode::holds_other_than(&store, P, &[b(KEPT)]).unwrap());
}

#[test]
fn a_partition_handed_away_still_serves_the_buckets_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut v) = open(dir.path());
    let moved = KvRequest::HandoffMoved {
        to: NodeId::new("n2"),
    };
    assert!(matches!(call(&mut v, moved), KvResponse::Reply(_)));
    let lead = |bucket: &str| {
        let key = Bytes::from_static(b"k");
        KvRequest::Lead {
            bucket: b(bucket),
            hash: colony_core::key_hash(bucket.as_bytes(), &key),
            key,
            op: KeyOp::IncrBy(1),
            hints: Vec::new(),
        }
    };
    assert!(matches!(call(&mut v, lead(KEPT)), KvResponse::Led { .. }));
    match call(&mut v, lead("zzz")) {
        KvResponse::Failed(KvError::NotOwner(to)) => assert_eq!(to, "n2"),
        other => panic!("a moved partition served another bucket: {other:?}"),
    }
    // Anti-entropy keeps the kept bucket in step with the other owners.
    assert!(matches!(
        call(&mut v, KvRequest::AaeBranches),
        KvResponse::Hashes(_)
    ));
}

#[test]
fn the_share_of_a_partition_is_read_out_alone_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut v) = open(dir.path());
    fill(&mut v);
    let mut after = None;
    let mut got = Vec::new();
    let mut chunks = 0;
    loop {
        let req = KvRequest::HandoffReadBuckets {
            buckets: vec![b(KEPT)],
            after: after.clone(),
            max_bytes: 8 << 10,
        };
        let KvResponse::Items { items, next } = call(&mut v, req) else {
            panic!("unexpected answer");
        };
        got.extend(items);
        chunks += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(chunks > 2, "{chunks} chunks");
    assert_eq!(got.len(), KEYS as usize);
    for item in &got {
        let (bucket, _, _) = colony_kv::store::split_data_key(&item.key).unwrap();
        assert_eq!(bucket, KEPT.as_bytes());
    }
    let mut keys: Vec<_> = got.iter().map(|i| i.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), KEYS as usize, "an entry was sent twice");
}
