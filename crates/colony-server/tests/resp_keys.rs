//! Keyspace commands over RESP: DEL, UNLINK, EXISTS, TYPE, KEYS, SCAN, RANDOMKEY,
//! RENAME, RENAMENX. Expiry lives in `resp_expiry.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use colony_testkit::{expect_error, target_from_env, Node, NodeOptions};
use redis::aio::MultiplexedConnection;
use redis::Value;

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

async fn keys(c: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut found: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(c)
        .await
        .unwrap();
    found.sort();
    found
}

async fn scan_all(c: &mut MultiplexedConnection, options: &[&str]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg(options)
            .query_async(c)
            .await
            .unwrap();
        seen.extend(batch);
        rounds += 1;
        assert!(rounds < 10_000, "SCAN never returned cursor 0");
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn del_and_unlink_count_only_the_keys_that_existed() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for key in ["a", "b", "c", "d"] {
        set(&mut c, key, "v").await;
    }
    let n: i64 = redis::cmd("DEL")
        .arg(&["a", "b", "missing", "a"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("UNLINK")
        .arg(&["c", "missing"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("EXISTS")
        .arg(&["a", "b", "c", "d"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let err = expect_error(&mut c, &redis::cmd("DEL")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'del' command");
}

#[tokio::test]
async fn exists_counts_every_argument_including_repeats() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "k1", "v").await;
    set(&mut c, "k2", "v").await;
    let n: i64 = redis::cmd("EXISTS")
        .arg(&["k1", "k1", "k2", "nokey"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("EXISTS")
        .arg("nokey")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn type_names_strings_hashes_sets_and_none() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "s", "v").await;
    let _: () = redis::cmd("HSET")
        .arg(&["h", "f", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(&["set", "m"])
        .query_async(&mut c)
        .await
        .unwrap();
    for (key, expected) in [
        ("s", "string"),
        ("h", "hash"),
        ("set", "set"),
        ("nokey", "none"),
    ] {
        let t: Value = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(t, Value::SimpleString(expected.into()), "TYPE {key}");
    }
}

#[tokio::test]
async fn keys_matches_glob_patterns_with_classes_and_escapes() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let all = [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "a*b", "a?b", "a[b", "axb",
    ];
    for key in all {
        set(&mut c, key, "v").await;
    }
    let cases: [(&str, &[&str]); 11] = [
        ("h?llo", &["hallo", "hello", "hxllo"]),
        ("h*llo", &["hallo", "heeeello", "hello", "hllo", "hxllo"]),
        ("h[ae]llo", &["hallo", "hello"]),
        ("h[^e]llo", &["hallo", "hxllo"]),
        ("h[a-b]llo", &["hallo"]),
        ("a\\*b", &["a*b"]),
        ("a\\?b", &["a?b"]),
        ("a\\[b", &["a[b"]),
        ("a?b", &["a*b", "a?b", "a[b", "axb"]),
        ("nomatch*", &[]),
        ("hello", &["hello"]),
    ];
    for (pattern, expected) in cases {
        assert_eq!(keys(&mut c, pattern).await, expected, "KEYS {pattern}");
    }
    let mut everything: Vec<&str> = all.to_vec();
    everything.sort();
    assert_eq!(keys(&mut c, "*").await, everything);
}

#[tokio::test]
async fn scan_with_match_and_count_visits_exactly_the_matching_keys() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("scan:{i}")).arg(i).ignore();
    }
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let expected: BTreeSet<String> = (0..500).map(|i| format!("scan:{i}")).collect();
    let found = scan_all(&mut c, &["MATCH", "scan:*", "COUNT", "50"]).await;
    assert_eq!(found, expected);
    let everything = scan_all(&mut c, &[]).await;
    assert_eq!(everything.len(), 550);
}

#[tokio::test]
async fn scan_with_type_returns_only_keys_of_that_type() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("str:{i}")).arg(i).ignore();
    }
    for i in 0..20 {
        pipe.cmd("HSET")
            .arg(format!("hash:{i}"))
            .arg("f")
            .arg(i)
            .ignore();
        pipe.cmd("SADD").arg(format!("set:{i}")).arg(i).ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let hashes = scan_all(&mut c, &["TYPE", "hash", "COUNT", "7"]).await;
    let expected: BTreeSet<String> = (0..20).map(|i| format!("hash:{i}")).collect();
    assert_eq!(hashes, expected);
    let sets = scan_all(&mut c, &["MATCH", "set:1*", "TYPE", "set"]).await;
    let expected: BTreeSet<String> = ["set:1", "set:10", "set:11", "set:12", "set:13"]
        .into_iter()
        .chain(["set:14", "set:15", "set:16", "set:17", "set:18", "set:19"])
        .map(String::from)
        .collect();
    assert_eq!(sets, expected);
}

#[tokio::test]
async fn scan_on_an_empty_database_returns_cursor_0_and_no_keys() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let reply: Value = redis::cmd("SCAN").arg(0).query_async(&mut c).await.unwrap();
    assert_eq!(
        reply,
        Value::Array(vec![Value::BulkString(b"0".to_vec()), Value::Array(vec![])])
    );
}

#[tokio::test]
async fn randomkey_is_nil_on_an_empty_database_and_an_existing_key_otherwise() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let none: Value = redis::cmd("RANDOMKEY").query_async(&mut c).await.unwrap();
    assert_eq!(none, Value::Nil);
    for key in ["x", "y", "z"] {
        set(&mut c, key, "v").await;
    }
    for _ in 0..10 {
        let key: String = redis::cmd("RANDOMKEY").query_async(&mut c).await.unwrap();
        assert!(["x", "y", "z"].contains(&key.as_str()), "{key}");
    }
}

#[tokio::test]
async fn rename_moves_the_value_and_its_ttl_and_overwrites_the_destination() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["src", "1", "EX", "1000"])
        .query_async(&mut c)
        .await
        .unwrap();
    set(&mut c, "dst", "old").await;
    let ok: Value = redis::cmd("RENAME")
        .arg(&["src", "dst"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, Value::Okay);
    let src: Option<String> = redis::cmd("GET")
        .arg("src")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(src, None);
    let dst: String = redis::cmd("GET")
        .arg("dst")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dst, "1");
    let ttl: i64 = redis::cmd("TTL")
        .arg("dst")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1000, "TTL {ttl}");
    let ok: Value = redis::cmd("RENAME")
        .arg(&["dst", "dst"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, Value::Okay, "renaming a key to itself is allowed");
}

#[tokio::test]
async fn rename_keeps_the_type_of_the_value() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&["h", "f", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg(&["h", "h2"])
        .query_async(&mut c)
        .await
        .unwrap();
    let v: String = redis::cmd("HGET")
        .arg(&["h2", "f"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "v");
}

#[tokio::test]
async fn rename_and_renamenx_of_a_missing_key_are_errors() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let err = expect_error(&mut c, redis::cmd("RENAME").arg(&["nokey", "x"])).await;
    assert_eq!(err, "ERR no such key");
    let err = expect_error(&mut c, redis::cmd("RENAMENX").arg(&["nokey", "x"])).await;
    assert_eq!(err, "ERR no such key");
}

#[tokio::test]
async fn renamenx_refuses_to_overwrite_an_existing_destination() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "a", "1").await;
    set(&mut c, "b", "2").await;
    let n: i64 = redis::cmd("RENAMENX")
        .arg(&["a", "b"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let b: String = redis::cmd("GET")
        .arg("b")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(b, "2");
    let n: i64 = redis::cmd("RENAMENX")
        .arg(&["a", "c"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let c_value: String = redis::cmd("GET")
        .arg("c")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(c_value, "1");
}
