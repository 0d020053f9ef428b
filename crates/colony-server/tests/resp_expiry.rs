//! Expiry over RESP: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX/XX/GT/LT, TTL,
//! PTTL, PERSIST, and keys actually going away (on access and by themselves).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use colony_testkit::{eventually, expect_error, target_from_env, unix_time, Node, NodeOptions};
use redis::aio::MultiplexedConnection;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

async fn set(c: &mut MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(c)
        .await
        .unwrap();
}

async fn int(c: &mut MultiplexedConnection, args: &[&str]) -> i64 {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn ttl_is_minus_2_for_missing_minus_1_for_persistent_and_positive_for_volatile() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(int(&mut c, &["TTL", "nokey"]).await, -2);
    assert_eq!(int(&mut c, &["PTTL", "nokey"]).await, -2);
    set(&mut c, "plain", "v").await;
    assert_eq!(int(&mut c, &["TTL", "plain"]).await, -1);
    assert_eq!(int(&mut c, &["PTTL", "plain"]).await, -1);
    assert_eq!(int(&mut c, &["EXPIRE", "plain", "100"]).await, 1);
    let ttl = int(&mut c, &["TTL", "plain"]).await;
    assert!(ttl > 0 && ttl <= 100, "TTL {ttl}");
    let pttl = int(&mut c, &["PTTL", "plain"]).await;
    assert!(pttl > 0 && pttl <= 100_000, "PTTL {pttl}");
}

#[tokio::test]
async fn expire_on_a_missing_key_returns_0() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(int(&mut c, &["EXPIRE", "nokey", "10"]).await, 0);
    assert_eq!(int(&mut c, &["PEXPIRE", "nokey", "10"]).await, 0);
    let err = expect_error(&mut c, redis::cmd("EXPIRE").arg(&["k", "soon"])).await;
    assert_eq!(err, "ERR value is not an integer or out of range");
}

#[tokio::test]
async fn pexpire_sets_a_millisecond_ttl() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "k", "v").await;
    assert_eq!(int(&mut c, &["PEXPIRE", "k", "100000"]).await, 1);
    let pttl = int(&mut c, &["PTTL", "k"]).await;
    assert!(pttl > 90_000 && pttl <= 100_000, "PTTL {pttl}");
    let ttl = int(&mut c, &["TTL", "k"]).await;
    assert!(ttl > 90 && ttl <= 100, "TTL {ttl}");
}

#[tokio::test]
async fn expireat_and_pexpireat_take_absolute_unix_times() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "s", "v").await;
    set(&mut c, "ms", "v").await;
    let at = (unix_time() + 100).to_string();
    assert_eq!(int(&mut c, &["EXPIREAT", "s", &at]).await, 1);
    let ttl = int(&mut c, &["TTL", "s"]).await;
    assert!(ttl > 0 && ttl <= 101, "TTL {ttl}");
    let at_ms = ((unix_time() + 100) * 1000).to_string();
    assert_eq!(int(&mut c, &["PEXPIREAT", "ms", &at_ms]).await, 1);
    let pttl = int(&mut c, &["PTTL", "ms"]).await;
    assert!(pttl > 0 && pttl <= 101_000, "PTTL {pttl}");
}

#[tokio::test]
async fn an_expire_time_in_the_past_deletes_the_key_at_once() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for key in ["a", "b", "c", "d"] {
        set(&mut c, key, "v").await;
    }
    assert_eq!(int(&mut c, &["EXPIRE", "a", "0"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIRE", "b", "-5"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIREAT", "c", "1000"]).await, 1);
    assert_eq!(int(&mut c, &["PEXPIREAT", "d", "1000"]).await, 1);
    assert_eq!(int(&mut c, &["EXISTS", "a", "b", "c", "d"]).await, 0);
}

#[tokio::test]
async fn expire_nx_and_xx_depend_on_whether_a_ttl_exists() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "k", "v").await;
    assert_eq!(int(&mut c, &["EXPIRE", "k", "100", "XX"]).await, 0);
    assert_eq!(int(&mut c, &["TTL", "k"]).await, -1);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "100", "NX"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "200", "NX"]).await, 0);
    assert!(int(&mut c, &["TTL", "k"]).await <= 100);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "300", "XX"]).await, 1);
    assert!(int(&mut c, &["TTL", "k"]).await > 200);
    let at = (unix_time() + 50).to_string();
    assert_eq!(int(&mut c, &["EXPIREAT", "k", &at, "NX"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIREAT", "k", &at, "XX"]).await, 1);
}

#[tokio::test]
async fn expire_gt_and_lt_compare_with_the_current_ttl() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "k", "v").await;
    // A key without a TTL counts as an infinite TTL.
    assert_eq!(int(&mut c, &["EXPIRE", "k", "100", "GT"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "100", "LT"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "200", "GT"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "50", "GT"]).await, 0);
    assert!(int(&mut c, &["TTL", "k"]).await > 100);
    assert_eq!(int(&mut c, &["EXPIRE", "k", "300", "LT"]).await, 0);
    assert_eq!(int(&mut c, &["PEXPIRE", "k", "50000", "LT"]).await, 1);
    assert!(int(&mut c, &["TTL", "k"]).await <= 50);
}

#[tokio::test]
async fn expire_options_that_contradict_each_other_are_refused() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "k", "v").await;
    let err = expect_error(&mut c, redis::cmd("EXPIRE").arg(&["k", "10", "NX", "XX"])).await;
    assert_eq!(
        err,
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    let err = expect_error(&mut c, redis::cmd("EXPIRE").arg(&["k", "10", "NX", "GT"])).await;
    assert_eq!(
        err,
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    let err = expect_error(&mut c, redis::cmd("PEXPIRE").arg(&["k", "10", "GT", "LT"])).await;
    assert_eq!(
        err,
        "ERR GT and LT options at the same time are not compatible"
    );
    let err = expect_error(&mut c, redis::cmd("EXPIRE").arg(&["k", "10", "SOON"])).await;
    assert_eq!(err, "ERR Unsupported option SOON");
    assert_eq!(int(&mut c, &["TTL", "k"]).await, -1);
}

#[tokio::test]
async fn persist_removes_a_ttl_and_reports_whether_there_was_one() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["k", "v", "EX", "100"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(int(&mut c, &["PERSIST", "k"]).await, 1);
    assert_eq!(int(&mut c, &["TTL", "k"]).await, -1);
    assert_eq!(int(&mut c, &["PERSIST", "k"]).await, 0);
    assert_eq!(int(&mut c, &["PERSIST", "nokey"]).await, 0);
}

#[tokio::test]
async fn a_key_set_with_px_100_disappears() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["short", "v", "PX", "100"])
        .query_async(&mut c)
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(5), async || {
        let v: Option<String> = redis::cmd("GET")
            .arg("short")
            .query_async(&mut c)
            .await
            .unwrap();
        v.is_none()
    })
    .await;
    assert!(gone, "key with PX 100 still readable after 5 s");
    assert_eq!(int(&mut c, &["EXISTS", "short"]).await, 0);
    assert_eq!(int(&mut c, &["TTL", "short"]).await, -2);
}

#[tokio::test]
async fn expired_keys_that_are_never_read_are_removed_by_active_expiry() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET")
            .arg(format!("volatile:{i}"))
            .arg(i)
            .arg("PX")
            .arg(50)
            .ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let reclaimed = eventually(Duration::from_secs(10), async || {
        int(&mut c, &["DBSIZE"]).await == 0
    })
    .await;
    assert!(
        reclaimed,
        "DBSIZE = {} after 10 s",
        int(&mut c, &["DBSIZE"]).await
    );
}
