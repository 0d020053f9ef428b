//! What only the vnode's insides can show: a request that panics holding a
//! key's unsettled state fails its batch instead of storing it without the
//! writes of the requests before it.

use super::*;
use crate::store::StoreConfig;

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_000_000
    }
}

fn incr(key: &'static [u8]) -> KvRequest {
    let key = Bytes::from_static(key);
    let bucket = Bytes::from_static(b"default");
    KvRequest::Key {
        hash: colony_core::key_hash(&bucket, &key),
        bucket,
        key,
        op: KeyOp::IncrBy(1),
    }
}

#[test]
fn a_panic_holding_an_unsettled_state_fails_the_batch() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&StoreConfig {
        path: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Never,
        cache_bytes: 1 << 20,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let limits = Limits {
        max_value_bytes: 1 << 20,
        doc_cache_bytes: 1 << 20,
    };
    let p = PartitionId(1);
    let node = NodeId::new("n1");
    let mut v = KvVnode::open_seeded(p, &node, store.clone(), Arc::new(FixedClock), limits, 1)
        .unwrap_or_else(|e| panic!("{e}"));

    let mut replies = vec![
        v.handle(incr(b"a")),
        v.handle(incr(b"b")),
        v.handle(incr(b"a")),
    ];
    assert!(matches!(replies[2], KvResponse::Reply(Reply::Int(2))));
    // A request takes key a's state and panics before giving it back, as
    // a bug in a command would.
    let skey = store::data_key(p, b"default", colony_core::key_hash(b"default", b"a"), b"a");
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _taken = v.take_doc(&skey);
        panic!("a bug in a command");
    }));
    assert!(crashed.is_err());
    // The runtime then commits what was handled before the panic.
    v.commit(&mut replies);
    for r in &replies {
        assert!(matches!(r, KvResponse::Failed(_)), "{r:?}");
    }
    drop(v);
    assert_eq!(
        store.data().get(&skey).unwrap_or_else(|e| panic!("{e}")),
        None
    );

    // A vnode rebuilt on the store serves on.
    let mut v = KvVnode::open_seeded(p, &node, store, Arc::new(FixedClock), limits, 2)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut replies = vec![v.handle(incr(b"a"))];
    v.commit(&mut replies);
    assert!(matches!(replies[0], KvResponse::Reply(Reply::Int(1))));
}
