//! A batch of requests on one vnode, driven through a real `KvVnode` on a
//! real store the way the runtime drives it: every request handled, then
//! one commit. A key written many times in a batch is encoded once, at the
//! commit; these tests hold that every reader in between still sees the
//! latest write, and that what is stored afterwards (entries, counts, the
//! anti-entropy tree) is what one write at a time would have left.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_core::vnode::Vnode;
use colony_core::{NodeId, PartitionId};
use colony_kv::crdt::Doc;
use colony_kv::store::{Store, StoreConfig};
use colony_kv::vnode::{KvRequest, KvResponse, KvVnode, Limits};
use colony_kv::{Clock, FsyncPolicy, KeyOp, Reply, SetCond, SetExpire, Value};
use std::sync::Arc;

const P: PartitionId = PartitionId(5);

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

fn open(store: &Arc<Store>, seed: u64) -> KvVnode {
    let limits = Limits {
        max_value_bytes: 1 << 20,
        doc_cache_bytes: 256 << 10,
    };
    KvVnode::open_seeded(
        P,
        &NodeId::new("n1"),
        store.clone(),
        Arc::new(FixedClock),
        limits,
        seed,
    )
    .unwrap()
}

/// A vnode on a fresh store whose anti-entropy tree is built, so that
/// tests can compare the tree its writes keep with one rebuilt from the
/// store. (The directory must outlive the store.)
fn fresh_with_tree() -> (tempfile::TempDir, Arc<Store>, KvVnode) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut v = open(&store, 1);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    (dir, store, v)
}

fn bucket() -> Bytes {
    Bytes::from_static(b"default")
}

fn key_req(k: &str, op: KeyOp) -> KvRequest {
    let key = Bytes::copy_from_slice(k.as_bytes());
    KvRequest::Key {
        bucket: bucket(),
        hash: colony_core::key_hash(&bucket(), &key),
        key,
        op,
    }
}

fn fetch_req(k: &str) -> KvRequest {
    let key = Bytes::copy_from_slice(k.as_bytes());
    KvRequest::Fetch {
        bucket: bucket(),
        hash: colony_core::key_hash(&bucket(), &key),
        key,
    }
}

/// Handle every request, then commit once: one batch.
fn batch(v: &mut KvVnode, reqs: Vec<KvRequest>) -> Vec<KvResponse> {
    let mut out: Vec<KvResponse> = reqs.into_iter().map(|r| v.handle(r)).collect();
    v.commit(&mut out);
    out
}

fn call(v: &mut KvVnode, req: KvRequest) -> KvResponse {
    batch(v, vec![req]).pop().unwrap()
}

fn reply(r: &KvResponse) -> &Reply {
    match r {
        KvResponse::Reply(r) => r,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn root(v: &mut KvVnode) -> (u64, u64) {
    match call(v, KvRequest::AaeInfo) {
        KvResponse::AaeInfo(t) => (t.root, t.entries),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn keys(v: &mut KvVnode) -> u64 {
    match call(v, KvRequest::Count) {
        KvResponse::Counts(c) => c.values().map(|b| b.keys).sum(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn get(v: &mut KvVnode, k: &str) -> Reply {
    reply(&call(v, key_req(k, KeyOp::Get))).clone()
}

/// Versions written to the data keyspace's memtable: a rewrite of a key
/// with the same bytes still adds one.
fn versions_written(store: &Store) -> usize {
    use fjall::AbstractTree;
    store.data().tree.active_memtable().len()
}

fn set(value: &str) -> KeyOp {
    KeyOp::Set {
        value: Bytes::copy_from_slice(value.as_bytes()),
        expire: SetExpire::Clear,
        cond: SetCond::Always,
        get: false,
    }
}

#[test]
fn a_key_written_many_times_in_a_batch_is_seen_whole_by_every_reader() {
    let (_dir, store, mut v) = fresh_with_tree();

    let mut reqs = Vec::new();
    for _ in 0..50 {
        reqs.push(key_req("counter", KeyOp::IncrBy(1)));
    }
    // A replica's read of the state, mid-batch.
    reqs.push(fetch_req("counter"));
    for _ in 0..25 {
        reqs.push(key_req("counter", KeyOp::IncrBy(2)));
    }
    // A partition-wide read, mid-batch.
    reqs.push(KvRequest::Scan {
        bucket: bucket(),
        from: 0,
        count: 100,
        pattern: None,
        kind: None,
    });
    reqs.push(key_req("counter", KeyOp::IncrBy(-1)));
    reqs.push(key_req("counter", KeyOp::Get));
    reqs.push(key_req("s", KeyOp::SAdd(vec![Bytes::from_static(b"a")])));
    reqs.push(key_req("s", KeyOp::SAdd(vec![Bytes::from_static(b"b")])));
    reqs.push(key_req("gone", set("x")));
    reqs.push(key_req("gone", KeyOp::Del));
    reqs.push(key_req("s", KeyOp::SCard));
    let out = batch(&mut v, reqs);

    for (i, r) in out[..50].iter().enumerate() {
        assert_eq!(reply(r), &Reply::Int(i as i64 + 1));
    }
    let KvResponse::Doc(Some(doc)) = &out[50] else {
        panic!("unexpected answer {:?}", out[50]);
    };
    let seen = Doc::decode(doc).unwrap().view().unwrap();
    assert_eq!(seen.value, Value::Str(Bytes::from_static(b"50")));
    for (i, r) in out[51..76].iter().enumerate() {
        assert_eq!(reply(r), &Reply::Int(50 + 2 * (i as i64 + 1)));
    }
    let KvResponse::Page { keys: page, .. } = &out[76] else {
        panic!("unexpected answer {:?}", out[76]);
    };
    assert_eq!(page, &vec![Bytes::from_static(b"counter")]);
    assert_eq!(reply(&out[77]), &Reply::Int(99));
    assert_eq!(reply(&out[78]), &Reply::Bulk(Bytes::from_static(b"99")));
    assert_eq!(reply(&out[83]), &Reply::Int(2));

    // The tree kept in step by the batch is the one the store gives.
    let kept = root(&mut v);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    assert_eq!(kept, root(&mut v));
    assert_eq!(kept.1, 2, "counter and s are stored, gone is not");
    assert_eq!(keys(&mut v), 2);

    // A fresh vnode on the same store reads what the batch stored.
    drop(v);
    let mut v = open(&store, 2);
    assert_eq!(
        get(&mut v, "counter"),
        Reply::Bulk(Bytes::from_static(b"99"))
    );
    assert_eq!(get(&mut v, "gone"), Reply::Nil);
    assert_eq!(keys(&mut v), 2);
}

#[test]
fn a_write_that_changes_nothing_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut v = open(&store, 3);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    let m = || vec![Bytes::from_static(b"m")];
    assert_eq!(
        reply(&call(&mut v, key_req("s", KeyOp::SAdd(m())))),
        &Reply::Int(1)
    );
    let hset = || KeyOp::HSet {
        pairs: vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))],
        nx: false,
    };
    assert_eq!(reply(&call(&mut v, key_req("h", hset()))), &Reply::Int(1));
    call(&mut v, key_req("k", set("same")));
    let fetch = |v: &mut KvVnode, k: &str| match call(v, fetch_req(k)) {
        KvResponse::Doc(d) => d,
        other => panic!("unexpected answer {other:?}"),
    };
    let before: Vec<_> = ["s", "h", "k"].iter().map(|k| fetch(&mut v, k)).collect();
    let root_before = root(&mut v);
    let written = versions_written(&store);

    let out = batch(
        &mut v,
        vec![
            key_req("s", KeyOp::SAdd(m())),
            key_req("h", hset()),
            key_req("k", set("same")),
        ],
    );
    assert_eq!(reply(&out[0]), &Reply::Int(0));
    assert_eq!(reply(&out[1]), &Reply::Int(0));
    assert_eq!(reply(&out[2]), &Reply::Ok);

    // Byte for byte the same states: no new dot, no new stamp.
    let after: Vec<_> = ["s", "h", "k"].iter().map(|k| fetch(&mut v, k)).collect();
    assert_eq!(before, after);
    assert_eq!(root_before, root(&mut v));
    assert_eq!(written, versions_written(&store), "nothing was stored");

    // Leading a replicated write, the vnode records it even when it
    // changes nothing here: another replica may hold a concurrent SREM of
    // these members, and the add must win over it. So the members get
    // fresh dots, and the new state goes to the replicas.
    let key = Bytes::from_static(b"s");
    let led = call(
        &mut v,
        KvRequest::Lead {
            bucket: bucket(),
            hash: colony_core::key_hash(&bucket(), &key),
            key,
            op: KeyOp::SAdd(m()),
            hints: Vec::new(),
        },
    );
    match led {
        KvResponse::Led { out, doc, .. } => {
            assert_eq!(reply(&out), &Reply::Int(0));
            assert_ne!(doc, before[0], "the add is recorded afresh");
            let (doc, was) = (doc.unwrap(), before[0].clone().unwrap());
            assert_eq!(shown(&doc), shown(&was), "with the same members");
        }
        other => panic!("unexpected answer {other:?}"),
    }

    // A write that does change the key still lands.
    let written = versions_written(&store);
    call(&mut v, key_req("k", set("other")));
    assert_eq!(get(&mut v, "k"), Reply::Bulk(Bytes::from_static(b"other")));
    assert_ne!(before[2], fetch(&mut v, "k"));
    assert_eq!(written + 1, versions_written(&store));
}

struct SteppedClock(std::sync::atomic::AtomicU64);

impl Clock for SteppedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_read_of_a_cached_key_that_has_expired_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let clock = Arc::new(SteppedClock(std::sync::atomic::AtomicU64::new(1_000_000)));
    let limits = Limits {
        max_value_bytes: 1 << 20,
        doc_cache_bytes: 256 << 10,
    };
    let mut v =
        KvVnode::open_seeded(P, &NodeId::new("n1"), store, clock.clone(), limits, 4).unwrap();
    let op = KeyOp::Set {
        value: Bytes::from_static(b"v"),
        expire: SetExpire::At(1_000_100),
        cond: SetCond::Always,
        get: false,
    };
    call(&mut v, key_req("k", op));
    // Cached by the write, read in place while live.
    assert_eq!(get(&mut v, "k"), Reply::Bulk(Bytes::from_static(b"v")));
    assert_eq!(keys(&mut v), 1);
    clock
        .0
        .store(1_000_100, std::sync::atomic::Ordering::SeqCst);
    let out = batch(
        &mut v,
        vec![
            key_req("k", KeyOp::Exists),
            key_req("k", KeyOp::Get),
            key_req("k", KeyOp::StrLen),
        ],
    );
    assert_eq!(reply(&out[0]), &Reply::Int(0));
    assert_eq!(reply(&out[1]), &Reply::Nil);
    assert_eq!(reply(&out[2]), &Reply::Int(0));
    assert_eq!(keys(&mut v), 0, "the read deleted the expired key");
}

fn merge_req(k: &str, doc: &Bytes) -> KvRequest {
    let key = Bytes::copy_from_slice(k.as_bytes());
    KvRequest::Merge {
        bucket: bucket(),
        hash: colony_core::key_hash(&bucket(), &key),
        key,
        doc: doc.clone(),
        hints: Vec::new(),
    }
}

fn fetched(r: &KvResponse) -> Option<Bytes> {
    match r {
        KvResponse::Doc(d) => d.clone(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn shown(doc: &Bytes) -> Value {
    Doc::decode(doc).unwrap().view().unwrap().value
}

/// A replica answers a coordinator's fetch from its cache of states and
/// merges into the cached state: every answer is the latest state, and what
/// it hands out is byte for byte what the store holds.
#[test]
fn a_replica_fetches_and_merges_through_its_cache() {
    let (_dir, store, mut v) = fresh_with_tree();
    // The states another replica sends: "a", then "b" written over it.
    let src_dir = tempfile::tempdir().unwrap();
    let src_store = open_store(src_dir.path());
    let mut src = open(&src_store, 9);
    call(&mut src, key_req("k", set("a")));
    let doc_a = fetched(&call(&mut src, fetch_req("k"))).unwrap();
    call(&mut src, key_req("k", set("b")));
    let doc_b = fetched(&call(&mut src, fetch_req("k"))).unwrap();

    assert_eq!(fetched(&call(&mut v, fetch_req("k"))), None);
    let KvResponse::Merged { changed, .. } = call(&mut v, merge_req("k", &doc_a)) else {
        panic!("not a merge answer");
    };
    assert_eq!(changed, None, "nothing known beyond what was sent");
    let first = fetched(&call(&mut v, fetch_req("k"))).unwrap();
    assert_eq!(shown(&first), Value::Str(Bytes::from_static(b"a")));

    // One batch: a newer state, a read, the older state again (this replica
    // knows more, and says so), a read; a local write to another key and
    // its read before the batch is encoded.
    let out = batch(
        &mut v,
        vec![
            merge_req("k", &doc_b),
            fetch_req("k"),
            merge_req("k", &doc_a),
            fetch_req("k"),
            key_req("other", set("x")),
            fetch_req("other"),
        ],
    );
    let b = Value::Str(Bytes::from_static(b"b"));
    assert_eq!(shown(&fetched(&out[1]).unwrap()), b);
    let KvResponse::Merged {
        changed: Some(knew),
        ..
    } = &out[2]
    else {
        panic!(
            "the stale merge should answer the newer state: {:?}",
            out[2]
        );
    };
    assert_eq!(shown(knew), b);
    let latest = fetched(&out[3]).unwrap();
    assert_eq!(shown(&latest), b);
    assert_eq!(
        shown(&fetched(&out[5]).unwrap()),
        Value::Str(Bytes::from_static(b"x"))
    );
    // Answered again from the cache, after the commit.
    let cached = fetched(&call(&mut v, fetch_req("k"))).unwrap();
    assert_eq!(cached, latest);
    let kept = root(&mut v);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    assert_eq!(kept, root(&mut v), "the tree kept in step is the store's");

    // A fresh vnode reads the store: the same bytes, on a miss and on the
    // hit that follows it.
    drop(v);
    let mut fresh = open(&store, 2);
    assert_eq!(fetched(&call(&mut fresh, fetch_req("k"))).unwrap(), latest);
    assert_eq!(fetched(&call(&mut fresh, fetch_req("k"))).unwrap(), latest);
    assert_eq!(
        get(&mut fresh, "other"),
        Reply::Bulk(Bytes::from_static(b"x"))
    );
}

/// Increments of a cached counter are made on the state in place; what is
/// stored, counted and indexed afterwards is what the general path leaves:
/// the value, the key count, the expiry, the anti-entropy tree.
#[test]
fn increments_in_place_are_stored_counted_and_keep_the_expiry() {
    let (_dir, store, mut v) = fresh_with_tree();
    call(&mut v, key_req("c", set("10")));
    let at = 1_000_000 + 60_000;
    let expire = KeyOp::Expire {
        at,
        cond: colony_kv::ExpireCond::Always,
    };
    assert_eq!(reply(&call(&mut v, key_req("c", expire))), &Reply::Int(1));
    let out = batch(
        &mut v,
        (0..5).map(|_| key_req("c", KeyOp::IncrBy(2))).collect(),
    );
    let got: Vec<Reply> = out.iter().map(|r| reply(r).clone()).collect();
    assert_eq!(got, [12, 14, 16, 18, 20].map(Reply::Int));
    assert_eq!(keys(&mut v), 1);
    // The tree kept in step by the increments is the one the store gives.
    let kept = root(&mut v);
    call(&mut v, KvRequest::AaeRebuild { wait: true });
    assert_eq!(kept, root(&mut v));
    assert_eq!(kept.1, 1);
    drop(v);
    let mut v = open(&store, 2);
    assert_eq!(get(&mut v, "c"), Reply::Bulk(Bytes::from_static(b"20")));
    assert_eq!(keys(&mut v), 1);
    let ttl = call(&mut v, key_req("c", KeyOp::Ttl { ms: true }));
    assert_eq!(reply(&ttl), &Reply::Int(60_000), "INCR keeps the expiry");
}
