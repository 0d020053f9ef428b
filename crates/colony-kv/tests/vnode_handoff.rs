//! The vnode's side of handoff, driven through real `KvVnode`s on real
//! stores: merging received entries, and dropping a partition this node no
//! longer replicates a bounded chunk per vnode call, with the requests that
//! may land between two chunks.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_core::cluster::DropStep;
use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId};
use colony_kv::crdt::Doc;
use colony_kv::store::{Store, StoreConfig};
use colony_kv::vnode::{KvRequest, KvResponse, KvVnode, Limits};
use colony_kv::{Clock, FsyncPolicy, KeyOp, SetCond, SetExpire};
use std::sync::Arc;

const P: PartitionId = PartitionId(3);
/// More than a few drop chunks' worth.
const KEYS: u32 = 2_500;

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_000_000
    }
}

fn open_store(dir: &std::path::Path) -> Arc<Store> {
    Store::open(&StoreConfig {
        path: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 1 << 20,
    })
    .unwrap()
}

fn open(store: &Arc<Store>) -> KvVnode {
    open_as(store, "n1")
}

fn open_as(store: &Arc<Store>, node: &str) -> KvVnode {
    let limits = Limits {
        max_value_bytes: 1 << 20,
        doc_cache_bytes: 256 << 10,
    };
    let node = NodeId::new(node);
    KvVnode::open_seeded(P, &node, store.clone(), Arc::new(FixedClock), limits, 7).unwrap()
}

/// Handle one request and commit it, as the runtime does for a batch of one.
fn call(v: &mut KvVnode, req: KvRequest) -> KvResponse {
    let mut out = [v.handle(req)];
    v.commit(&mut out);
    let [r] = out;
    r
}

fn bucket() -> Bytes {
    Bytes::from_static(b"default")
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key:{i}"))
}

fn hash(k: &Bytes) -> u64 {
    colony_core::key_hash(&bucket(), k)
}

/// Write keys 0..KEYS, every third with an expiry (so the expiry index has
/// entries to lose too).
fn fill(v: &mut KvVnode) {
    fill_with(v, KEYS, "value");
}

fn fill_with(v: &mut KvVnode, keys: u32, value: &str) {
    for i in 0..keys {
        let expire = if i % 3 == 0 {
            SetExpire::At(5_000_000)
        } else {
            SetExpire::Clear
        };
        let op = KeyOp::Set {
            value: Bytes::from(format!("{value} {i}")),
            expire,
            cond: SetCond::Always,
            get: false,
        };
        let k = key(i);
        let r = call(
            v,
            KvRequest::Key {
                bucket: bucket(),
                hash: hash(&k),
                key: k,
                op,
            },
        );
        assert!(!matches!(r, KvResponse::Failed(_)), "{r:?}");
    }
}

fn drop_step(v: &mut KvVnode, start: bool) -> DropStep {
    match call(
        v,
        KvRequest::HandoffDrop {
            start,
            keep: Vec::new(),
        },
    ) {
        KvResponse::Dropping(s) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// (live keys, keys with an expiry) as the vnode counts them.
fn counts(v: &mut KvVnode) -> (u64, u64) {
    match call(v, KvRequest::Count) {
        KvResponse::Counts(c) => c
            .values()
            .fold((0, 0), |(k, e), b| (k + b.keys, e + b.expires)),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Entries stored for the partition, and how many of them have an expiry.
fn stored(store: &Store) -> (usize, usize) {
    let mut entries = 0;
    let mut expiring = 0;
    for item in store.data().prefix(P.to_be_bytes()) {
        let (_, v) = item.into_inner().unwrap();
        entries += 1;
        if Doc::peek_expiry(&v).unwrap().is_some() {
            expiring += 1;
        }
    }
    (entries, expiring)
}

/// Entries of the partition's expiry index.
fn indexed(store: &Store) -> usize {
    store.expiry().prefix(P.to_be_bytes()).count()
}

fn root(v: &mut KvVnode) -> (u64, u64) {
    match call(v, KvRequest::AaeInfo) {
        KvResponse::AaeInfo(t) => (t.root, t.entries),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The tree as kept in step by the writes, and as rebuilt from the store.
fn roots_kept_and_rebuilt(v: &mut KvVnode) -> ((u64, u64), (u64, u64)) {
    let kept = root(v);
    call(v, KvRequest::AaeRebuild { wait: true });
    (kept, root(v))
}

fn fetch(v: &mut KvVnode, i: u32) -> Option<Bytes> {
    let k = key(i);
    match call(
        v,
        KvRequest::Fetch {
            bucket: bucket(),
            hash: hash(&k),
            key: k,
        },
    ) {
        KvResponse::Doc(d) => d,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn a_chunked_drop_keeps_counts_index_and_tree_exact_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut v = open(&store);
    fill(&mut v);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    let expiring = u64::from(KEYS.div_ceil(3));
    assert_eq!(counts(&mut v), (u64::from(KEYS), expiring));

    let mut steps = 0;
    let mut start = true;
    loop {
        let step = drop_step(&mut v, start);
        start = false;
        steps += 1;
        // Whatever is left is counted and hashed exactly.
        let (data, expiry) = stored(&store);
        let (keys, expires) = counts(&mut v);
        assert_eq!(keys, data as u64, "after step {steps}");
        assert_eq!(expires, expiry as u64, "after step {steps}");
        let (kept, rebuilt) = roots_kept_and_rebuilt(&mut v);
        assert_eq!(kept, rebuilt, "tree after step {steps}");
        match step {
            DropStep::More => assert!(
                data > 0 || indexed(&store) > 0,
                "more to do, yet nothing left"
            ),
            DropStep::Done => break,
            DropStep::Stopped => panic!("nothing should stop this drop"),
        }
        assert!(steps < 100, "the drop never ends");
    }
    assert!(
        steps > 2,
        "a drop of {KEYS} keys took {steps} call(s): not chunked"
    );
    assert_eq!(stored(&store), (0, 0));
    assert_eq!(indexed(&store), 0, "the expiry index still names keys");
    assert_eq!(counts(&mut v), (0, 0));
    assert_eq!(root(&mut v).1, 0);
}

#[test]
fn a_hint_landing_mid_drop_stops_it_and_keeps_the_hinted_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut v = open(&store);
    fill(&mut v);
    assert_eq!(drop_step(&mut v, true), DropStep::More);
    let left = stored(&store).0;
    assert!(left > 0 && left < KEYS as usize);
    // A fallback stands in for an unreachable replica: the write is kept
    // with a hint, and the hint pins what the partition still holds.
    let hinted = KEYS + 1;
    let k = key(hinted);
    let r = call(
        &mut v,
        KvRequest::Lead {
            bucket: bucket(),
            hash: hash(&k),
            key: k,
            op: KeyOp::Set {
                value: Bytes::from_static(b"hinted"),
                expire: SetExpire::Clear,
                cond: SetCond::Always,
                get: false,
            },
            hints: vec![NodeId::new("n2")],
        },
    );
    assert!(matches!(r, KvResponse::Led { .. }), "{r:?}");
    assert_eq!(drop_step(&mut v, false), DropStep::Stopped);
    assert_eq!(stored(&store).0, left + 1, "the stopped drop removed more");
    assert!(fetch(&mut v, hinted).is_some(), "the hinted key is gone");
    // A new drop does not start while the hint is kept either.
    assert_eq!(drop_step(&mut v, true), DropStep::Stopped);
    assert!(fetch(&mut v, hinted).is_some(), "the hinted key is gone");
    assert_eq!(counts(&mut v).0, left as u64 + 1);
}

#[test]
fn serving_or_receiving_the_partition_again_stops_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut v = open(&store);
    fill(&mut v);
    for again in [
        KvRequest::HandoffServe,
        KvRequest::HandoffImport { items: vec![] },
    ] {
        assert_eq!(drop_step(&mut v, true), DropStep::More);
        let left = stored(&store).0;
        call(&mut v, again);
        assert_eq!(drop_step(&mut v, false), DropStep::Stopped);
        assert_eq!(stored(&store).0, left);
    }
}

#[test]
fn a_drop_cut_short_by_a_crash_is_finished_by_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let left = {
        let mut v = open(&store);
        fill(&mut v);
        assert_eq!(drop_step(&mut v, true), DropStep::More);
        assert_eq!(drop_step(&mut v, false), DropStep::More);
        // The process dies here: the vnode goes without a clean stop.
        stored(&store)
    };
    assert!(left.0 > 0);
    // Restarted: the partition is neither full nor empty, and says so.
    let mut v = open(&store);
    let (keys, expires) = counts(&mut v);
    assert_eq!((keys, expires), (left.0 as u64, left.1 as u64));
    // A later pass must start the drop anew; going on is refused.
    assert_eq!(drop_step(&mut v, false), DropStep::Stopped);
    assert_eq!(stored(&store), left);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    let mut start = true;
    for _ in 0..100 {
        let step = drop_step(&mut v, start);
        start = false;
        if step == DropStep::Done {
            break;
        }
        assert_eq!(step, DropStep::More);
    }
    assert_eq!(stored(&store), (0, 0));
    assert_eq!(indexed(&store), 0, "the expiry index still names keys");
    assert_eq!(counts(&mut v), (0, 0));
    let (kept, rebuilt) = roots_kept_and_rebuilt(&mut v);
    assert_eq!(kept, rebuilt);
}

/// Every entry of the vnode's partition, read out as a sender does.
fn read_all(v: &mut KvVnode) -> Vec<colony_core::cluster::HandoffItem> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        match call(
            v,
            KvRequest::HandoffRead {
                after,
                max_bytes: 16 << 10,
            },
        ) {
            KvResponse::Items { items, next } => {
                out.extend(items);
                match next {
                    Some(n) => after = Some(n),
                    None => return out,
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

#[test]
fn importing_over_existing_keys_keeps_counts_and_tree_exact_and_is_idempotent() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (sender, receiver) = (open_store(dirs[0].path()), open_store(dirs[1].path()));
    let mut from = open_as(&sender, "n1");
    fill(&mut from);
    // The receiver already holds some of the keys, written concurrently.
    let mut to = open_as(&receiver, "n4");
    fill_with(&mut to, KEYS / 3, "other");
    call(&mut to, KvRequest::AaeRebuild { wait: true });
    let items = read_all(&mut from);
    assert_eq!(items.len(), KEYS as usize);
    for slice in items.chunks(100) {
        let r = call(
            &mut to,
            KvRequest::HandoffImport {
                items: slice.to_vec(),
            },
        );
        assert!(!matches!(r, KvResponse::Failed(_)), "{r:?}");
    }
    let (data, expiry) = stored(&receiver);
    assert_eq!(data, KEYS as usize);
    assert_eq!(counts(&mut to), (data as u64, expiry as u64));
    let (kept, rebuilt) = roots_kept_and_rebuilt(&mut to);
    assert_eq!(kept, rebuilt, "the tree drifted from the store");
    // The same entries again (a resent chunk) change nothing.
    let before = root(&mut to);
    call(&mut to, KvRequest::HandoffImport { items });
    assert_eq!(root(&mut to), before);
    assert_eq!(counts(&mut to), (data as u64, expiry as u64));
}
