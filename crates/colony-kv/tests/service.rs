//! The data service on a real store in a temporary directory, driven
//! through its public API (no sockets).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_core::NodeId;
use colony_kv::{Clock, KeyOp, KvConfig, KvService, Reply, SetCond, SetExpire};
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
    KvConfig::small(NodeId::new("test"), dir.to_path_buf())
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

/// Roots of every partition's tree, as kept up to date by the writes.
async fn roots(kv: &KvService) -> Vec<Option<u64>> {
    kv.aae_status()
        .await
        .into_iter()
        .map(|p| p.tree.map(|t| t.root))
        .collect()
}

/// What every key reads as, by its type.
async fn readings(kv: &KvService, b: &Bytes, keys: u32) -> Vec<Reply> {
    let mut out = Vec::new();
    for i in 0..keys {
        out.push(kv.call(b, key(i), KeyOp::Type).await);
        out.push(kv.call(b, key(i), KeyOp::Get).await);
        out.push(kv.call(b, key(i), KeyOp::SMembers).await);
        out.push(kv.call(b, key(i), KeyOp::HGetAll).await);
    }
    out
}

/// Hot keys are served from the vnodes' decoded-state cache. Whatever mix
/// of writes, reads and deletes hits them, the trees kept in step by the
/// writes equal trees rebuilt from the store, and what is read equals what
/// a restarted node (no cache) reads from disk.
#[tokio::test]
async fn cached_states_and_trees_stay_equal_to_the_store() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000)));
    let kv = KvService::start(config(dir.path()), clock.clone()).unwrap();
    let b = Bytes::from_static(b"default");
    kv.aae_rebuild(true).await.unwrap();
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    const KEYS: u32 = 12;
    for _ in 0..3000 {
        let k = key(rng.random_range(0..KEYS));
        let v = Bytes::from(format!("v{}", rng.random_range(0..5)));
        let op = match rng.random_range(0..12) {
            0 => set("s", SetExpire::Clear),
            1 => KeyOp::IncrBy(rng.random_range(-3..4)),
            2 => KeyOp::Append(v),
            3 => KeyOp::SAdd(vec![v]),
            4 => KeyOp::SRem(vec![v]),
            5 => KeyOp::HSet {
                pairs: vec![(v.clone(), v)],
                nx: false,
            },
            6 => KeyOp::HDel(vec![v]),
            7 => KeyOp::Del,
            8 => KeyOp::Expire {
                at: clock.now_ms() + rng.random_range(0..50),
                cond: colony_kv::ExpireCond::Always,
            },
            9 => KeyOp::Get,
            10 => KeyOp::SMembers,
            _ => KeyOp::HGetAll,
        };
        // Replies may be errors (WRONGTYPE): the states must agree anyway.
        let _ = kv.call(&b, k, op).await;
        if rng.random_range(0..400) == 0 {
            // FLUSHDB takes every key out of the trees.
            kv.flush(Some(b.clone())).await.unwrap();
        }
        if rng.random_range(0..20) == 0 {
            clock.0.fetch_add(10, Ordering::SeqCst);
        }
    }
    // Let active expiry (every 100 ms) turn the keys already due into
    // tombstones, so nothing changes the trees from here on.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let read = readings(&kv, &b, KEYS).await;
    let kept = roots(&kv).await;
    kv.aae_rebuild(true).await.unwrap();
    assert_eq!(
        roots(&kv).await,
        kept,
        "seed {seed}: a tree drifted from the store"
    );
    kv.shutdown().await;
    let kv = KvService::start(config(dir.path()), clock.clone()).unwrap();
    assert_eq!(
        readings(&kv, &b, KEYS).await,
        read,
        "seed {seed}: the cache answered what the store does not hold"
    );
    kv.shutdown().await;
}
