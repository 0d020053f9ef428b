//! The data service on a real store in a temporary directory, driven
//! through its public API (no sockets).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_core::vnode::VnodeConfig;
use colony_core::NodeId;
use colony_kv::{
    Clock, FsyncPolicy, KeyOp, KvConfig, KvService, Reply, SetCond, SetExpire, StoreConfig,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn config(dir: &std::path::Path) -> KvConfig {
    KvConfig {
        node: NodeId::new("test"),
        store: StoreConfig {
            path: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            cache_bytes: 8 << 20,
        },
        ring_size: 16,
        max_key_bytes: 1024,
        max_value_bytes: 1 << 20,
        vnode: VnodeConfig::default(),
        aae: Default::default(),
    }
}

fn set(value: &str, expire: SetExpire) -> KeyOp {
    KeyOp::Set {
        value: Bytes::copy_from_slice(value.as_bytes()),
        expire,
        cond: SetCond::Always,
        get: false,
    }
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key:{i}"))
}

#[tokio::test]
async fn key_counts_stay_exact_through_overwrites_deletes_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000)));
    let kv = KvService::start(config(dir.path()), clock.clone()).unwrap();
    let b = Bytes::from_static(b"default");
    for i in 0..300 {
        kv.call(&b, key(i), set("v", SetExpire::Clear)).await;
    }
    for i in 0..300 {
        kv.call(&b, key(i), set("w", SetExpire::Clear)).await;
    }
    for i in 0..100 {
        kv.call(&b, key(i), KeyOp::Del).await;
    }
    for i in 100..150 {
        kv.call(&b, key(i), set("x", SetExpire::At(2_000))).await;
    }
    let c = kv.counts().await.unwrap()[&b];
    assert_eq!((c.keys, c.expires), (200, 50));
    clock.0.store(3_000, Ordering::SeqCst);
    // Expired keys are gone for readers at once, and from the counts once
    // active expiry has run (it ticks every 100 ms).
    assert_eq!(kv.call(&b, key(120), KeyOp::Get).await, Reply::Nil);
    let mut waited = 0;
    while kv.counts().await.unwrap()[&b].keys != 150 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 500, "active expiry never caught up");
    }
    assert_eq!(kv.counts().await.unwrap()[&b].expires, 0);
    kv.shutdown().await;
}

#[tokio::test]
async fn scan_pages_return_every_key_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = Bytes::from_static(b"bucket");
    {
        let kv = KvService::start(config(dir.path()), Arc::new(ManualClock::default())).unwrap();
        for i in 0..1000 {
            kv.call(&b, key(i), set("v", SetExpire::Clear)).await;
        }
        kv.shutdown().await;
    }
    let kv = KvService::start(config(dir.path()), Arc::new(ManualClock::default())).unwrap();
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = kv.scan(&b, cursor, 37, None, None).await.unwrap();
        seen.extend(page.keys);
        if page.cursor == 0 {
            break;
        }
        cursor = page.cursor;
    }
    let distinct: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 1000, "no key twice");
    assert_eq!(distinct, (0..1000).map(key).collect());
    assert_eq!(kv.counts().await.unwrap()[&b].keys, 1000);
    kv.shutdown().await;
}
