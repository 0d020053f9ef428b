//! Durability across process death: acknowledged writes survive SIGKILL when every
//! write is fsynced (`--fsync always` / `appendfsync always`), TTLs survive a
//! restart, and a corrupt data directory stops the server instead of serving garbage.
#![allow(clippy::unwrap_used)]

use colony_testkit::{colony_only, corrupt_files, target_from_env, Node, NodeOptions, StartError};
use redis::aio::MultiplexedConnection;
use redis::Value;

const KEYS: usize = 2000;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

fn key(i: usize) -> String {
    format!("durable:{i}")
}

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 17))
}

async fn write_keys(c: &mut MultiplexedConnection) {
    // One acknowledged SET per key: each OK is a promise the write is on disk.
    for i in 0..KEYS {
        let ok: Value = redis::cmd("SET")
            .arg(key(i))
            .arg(value(i))
            .query_async(c)
            .await
            .unwrap();
        assert_eq!(ok, Value::Okay);
    }
}

async fn assert_keys_present(c: &mut MultiplexedConnection) {
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await.unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged keys lost, first {:?}",
        missing.len(),
        missing.first()
    );
    for (i, got) in values.iter().enumerate() {
        assert_eq!(got.as_deref(), Some(value(i).as_str()), "{}", key(i));
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let mut node = start().await;
    let mut c = node.conn().await.unwrap();
    write_keys(&mut c).await;
    drop(c);
    node.kill9();
    node.restart().await.unwrap();
    let mut c = node.conn().await.unwrap();
    assert_keys_present(&mut c).await;
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, KEYS as i64);
}

#[tokio::test]
async fn overwrites_and_deletes_survive_kill_9_as_well() {
    let mut node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["k", "first"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["k", "second"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["gone", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg("gone")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(&["h", "f", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg(&["s", "a", "b"])
        .query_async(&mut c)
        .await
        .unwrap();
    drop(c);
    node.kill9();
    node.restart().await.unwrap();
    let mut c = node.conn().await.unwrap();
    let k: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(k, "second");
    let gone: i64 = redis::cmd("EXISTS")
        .arg("gone")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    let f: String = redis::cmd("HGET")
        .arg(&["h", "f"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(f, "v");
    let mut members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    members.sort();
    assert_eq!(members, ["a", "b"]);
}

#[tokio::test]
async fn a_ttl_survives_a_restart() {
    let mut node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["ttl", "v", "EX", "1000"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["plain", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    drop(c);
    node.kill9();
    node.restart().await.unwrap();
    let mut c = node.conn().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("ttl")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1000, "TTL after restart: {ttl}");
    let ttl: i64 = redis::cmd("TTL")
        .arg("plain")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
}

#[tokio::test]
async fn a_graceful_stop_and_restart_keeps_everything() {
    let mut node = start().await;
    let mut c = node.conn().await.unwrap();
    write_keys(&mut c).await;
    drop(c);
    let status = node.stop().await.unwrap();
    assert!(status.success(), "exit on SIGTERM: {status}");
    node.restart().await.unwrap();
    let mut c = node.conn().await.unwrap();
    assert_keys_present(&mut c).await;
}

#[tokio::test]
async fn a_corrupt_data_directory_makes_start_fail_with_a_clear_message() {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    if colony_only(
        &target,
        "Redis may start on a corrupt AOF depending on its settings",
    ) {
        return;
    }
    let mut node = start().await;
    let mut c = node.conn().await.unwrap();
    write_keys(&mut c).await;
    drop(c);
    node.stop().await.unwrap();
    let corrupted = corrupt_files(node.data_dir(), 0xC0FFEE).unwrap();
    assert!(corrupted > 0, "the data directory held no files to corrupt");
    let err = node
        .try_restart()
        .await
        .expect_err("started on a corrupt data directory");
    let StartError::Exited { status, log } = &err else {
        panic!("expected the process to exit, got: {err}");
    };
    assert!(!status.success(), "exit status {status}");
    let data_dir = node.data_dir().display().to_string();
    assert!(
        log.to_lowercase().contains("corrupt"),
        "log must say corrupt:\n{log}"
    );
    assert!(log.contains(&data_dir), "log must name {data_dir}:\n{log}");
}
