//! Set commands over RESP. Member order is unspecified, so replies are sorted
//! before comparing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use colony_testkit::{expect_error, target_from_env, Node, NodeOptions};
use redis::aio::MultiplexedConnection;
use redis::Value;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

async fn run(c: &mut MultiplexedConnection, args: &[&str]) -> Value {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(c)
        .await
        .unwrap()
}

async fn members(c: &mut MultiplexedConnection, args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(c)
        .await
        .unwrap();
    out.sort();
    out
}

async fn fails(c: &mut MultiplexedConnection, args: &[&str]) -> String {
    expect_error(c, redis::cmd(args[0]).arg(&args[1..])).await
}

async fn fixture(c: &mut MultiplexedConnection) {
    run(c, &["SADD", "s1", "a", "b", "c", "d"]).await;
    run(c, &["SADD", "s2", "c", "d", "e"]).await;
    run(c, &["SADD", "s3", "a", "c", "e"]).await;
}

#[tokio::test]
async fn sadd_and_srem_count_only_real_changes() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(
        run(&mut c, &["SADD", "s", "a", "b", "a"]).await,
        Value::Int(2)
    );
    assert_eq!(run(&mut c, &["SADD", "s", "b", "c"]).await, Value::Int(1));
    assert_eq!(
        run(&mut c, &["SREM", "s", "a", "nomember", "a"]).await,
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["SREM", "nokey", "a"]).await, Value::Int(0));
    assert_eq!(members(&mut c, &["SMEMBERS", "s"]).await, ["b", "c"]);
    assert_eq!(run(&mut c, &["SREM", "s", "b", "c"]).await, Value::Int(2));
    assert_eq!(
        run(&mut c, &["EXISTS", "s"]).await,
        Value::Int(0),
        "emptied sets vanish"
    );
}

#[tokio::test]
async fn smembers_scard_sismember_and_smismember_inspect_a_set() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SADD", "s", "x", "y", "z"]).await;
    assert_eq!(members(&mut c, &["SMEMBERS", "s"]).await, ["x", "y", "z"]);
    assert_eq!(
        run(&mut c, &["SMEMBERS", "nokey"]).await,
        Value::Array(vec![])
    );
    assert_eq!(run(&mut c, &["SCARD", "s"]).await, Value::Int(3));
    assert_eq!(run(&mut c, &["SCARD", "nokey"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["SISMEMBER", "s", "x"]).await, Value::Int(1));
    assert_eq!(run(&mut c, &["SISMEMBER", "s", "w"]).await, Value::Int(0));
    let reply = run(&mut c, &["SMISMEMBER", "s", "x", "w", "z"]).await;
    assert_eq!(
        reply,
        Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(1)])
    );
    let reply = run(&mut c, &["SMISMEMBER", "nokey", "x"]).await;
    assert_eq!(reply, Value::Array(vec![Value::Int(0)]));
}

#[tokio::test]
async fn spop_without_count_removes_and_returns_one_member() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["SPOP", "nokey"]).await, Value::Nil);
    run(&mut c, &["SADD", "s", "a", "b"]).await;
    let popped: String = redis::cmd("SPOP")
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(popped == "a" || popped == "b");
    let rest = members(&mut c, &["SMEMBERS", "s"]).await;
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0], popped);
}

#[tokio::test]
async fn spop_with_count_removes_up_to_that_many_distinct_members() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SADD", "s", "a", "b", "c", "d", "e"]).await;
    let popped = members(&mut c, &["SPOP", "s", "2"]).await;
    assert_eq!(popped.len(), 2);
    assert_ne!(popped[0], popped[1]);
    let rest = members(&mut c, &["SMEMBERS", "s"]).await;
    assert_eq!(rest.len(), 3);
    assert!(popped.iter().all(|p| !rest.contains(p)));
    let all = members(&mut c, &["SPOP", "s", "10"]).await;
    assert_eq!(all, rest);
    assert_eq!(run(&mut c, &["EXISTS", "s"]).await, Value::Int(0));
    assert_eq!(
        run(&mut c, &["SPOP", "nokey", "3"]).await,
        Value::Array(vec![])
    );
    let err = fails(&mut c, &["SPOP", "s", "-1"]).await;
    assert_eq!(err, "ERR value is out of range, must be positive");
}

#[tokio::test]
async fn srandmember_positive_count_is_distinct_and_negative_count_is_exact() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["SRANDMEMBER", "nokey"]).await, Value::Nil);
    assert_eq!(
        run(&mut c, &["SRANDMEMBER", "nokey", "5"]).await,
        Value::Array(vec![])
    );
    run(&mut c, &["SADD", "s", "a", "b", "c"]).await;
    let one: String = redis::cmd("SRANDMEMBER")
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(["a", "b", "c"].contains(&one.as_str()));
    let two = members(&mut c, &["SRANDMEMBER", "s", "2"]).await;
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert_eq!(
        members(&mut c, &["SRANDMEMBER", "s", "10"]).await,
        ["a", "b", "c"]
    );
    let many = members(&mut c, &["SRANDMEMBER", "s", "-10"]).await;
    assert_eq!(many.len(), 10);
    assert!(many.iter().all(|m| ["a", "b", "c"].contains(&m.as_str())));
    assert_eq!(
        run(&mut c, &["SCARD", "s"]).await,
        Value::Int(3),
        "SRANDMEMBER removes nothing"
    );
}

#[tokio::test]
async fn smove_moves_a_member_between_sets() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SADD", "src", "a", "b"]).await;
    run(&mut c, &["SADD", "dst", "b"]).await;
    assert_eq!(
        run(&mut c, &["SMOVE", "src", "dst", "a"]).await,
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["SMOVE", "src", "dst", "a"]).await,
        Value::Int(0)
    );
    assert_eq!(
        run(&mut c, &["SMOVE", "src", "dst", "b"]).await,
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["EXISTS", "src"]).await, Value::Int(0));
    assert_eq!(members(&mut c, &["SMEMBERS", "dst"]).await, ["a", "b"]);
    assert_eq!(
        run(&mut c, &["SMOVE", "nokey", "dst", "a"]).await,
        Value::Int(0)
    );
    run(&mut c, &["SET", "str", "v"]).await;
    let err = fails(&mut c, &["SMOVE", "dst", "str", "a"]).await;
    assert_eq!(
        err,
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
}

#[tokio::test]
async fn sinter_sunion_and_sdiff_combine_sets_treating_missing_keys_as_empty() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    fixture(&mut c).await;
    assert_eq!(members(&mut c, &["SINTER", "s1", "s2"]).await, ["c", "d"]);
    assert_eq!(members(&mut c, &["SINTER", "s1", "s2", "s3"]).await, ["c"]);
    assert!(members(&mut c, &["SINTER", "s1", "nokey"]).await.is_empty());
    assert_eq!(
        members(&mut c, &["SUNION", "s1", "s2"]).await,
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        members(&mut c, &["SUNION", "nokey", "s3"]).await,
        ["a", "c", "e"]
    );
    assert_eq!(members(&mut c, &["SDIFF", "s1", "s2"]).await, ["a", "b"]);
    assert_eq!(members(&mut c, &["SDIFF", "s1", "s2", "s3"]).await, ["b"]);
    assert_eq!(
        members(&mut c, &["SDIFF", "s1", "nokey"]).await,
        ["a", "b", "c", "d"]
    );
    assert!(members(&mut c, &["SDIFF", "nokey", "s1"]).await.is_empty());
}

#[tokio::test]
async fn store_variants_write_the_result_and_return_its_size() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    fixture(&mut c).await;
    run(&mut c, &["SET", "out", "overwritten"]).await;
    assert_eq!(
        run(&mut c, &["SINTERSTORE", "out", "s1", "s2"]).await,
        Value::Int(2)
    );
    assert_eq!(members(&mut c, &["SMEMBERS", "out"]).await, ["c", "d"]);
    assert_eq!(
        run(&mut c, &["SUNIONSTORE", "out", "s2", "s3"]).await,
        Value::Int(4)
    );
    assert_eq!(
        members(&mut c, &["SMEMBERS", "out"]).await,
        ["a", "c", "d", "e"]
    );
    assert_eq!(
        run(&mut c, &["SDIFFSTORE", "out", "s1", "s3"]).await,
        Value::Int(2)
    );
    assert_eq!(members(&mut c, &["SMEMBERS", "out"]).await, ["b", "d"]);
    assert_eq!(
        run(&mut c, &["SDIFFSTORE", "s1", "s1", "s1"]).await,
        Value::Int(0)
    );
    assert_eq!(
        run(&mut c, &["EXISTS", "s1"]).await,
        Value::Int(0),
        "an empty result deletes"
    );
}

#[tokio::test]
async fn sintercard_counts_the_intersection_up_to_a_limit() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    fixture(&mut c).await;
    assert_eq!(
        run(&mut c, &["SINTERCARD", "2", "s1", "s2"]).await,
        Value::Int(2)
    );
    assert_eq!(run(&mut c, &["SINTERCARD", "1", "s1"]).await, Value::Int(4));
    assert_eq!(
        run(&mut c, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "1"]).await,
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "0"]).await,
        Value::Int(2)
    );
    assert_eq!(
        run(&mut c, &["SINTERCARD", "2", "s1", "nokey"]).await,
        Value::Int(0)
    );
    let err = fails(&mut c, &["SINTERCARD", "0", "s1"]).await;
    assert_eq!(err, "ERR numkeys should be greater than 0");
    let err = fails(&mut c, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "-1"]).await;
    assert_eq!(err, "ERR LIMIT can't be negative");
    let err = fails(&mut c, &["SINTERCARD", "3", "s1", "s2"]).await;
    assert_eq!(
        err,
        "ERR Number of keys can't be greater than number of args"
    );
}

#[tokio::test]
async fn sscan_iterates_every_member_and_honours_match() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut sadd = redis::cmd("SADD");
    sadd.arg("big");
    for i in 0..400 {
        sadd.arg(format!("m{i}"));
    }
    let _: i64 = sadd.query_async(&mut c).await.unwrap();
    for (options, expected) in [
        (
            vec!["COUNT", "25"],
            (0..400).map(|i| format!("m{i}")).collect::<BTreeSet<_>>(),
        ),
        (
            vec!["MATCH", "m3?"],
            (30..40).map(|i| format!("m{i}")).collect(),
        ),
    ] {
        let mut seen = BTreeSet::new();
        let mut cursor = "0".to_string();
        loop {
            let (next, batch): (String, Vec<String>) = redis::cmd("SSCAN")
                .arg("big")
                .arg(&cursor)
                .arg(&options)
                .query_async(&mut c)
                .await
                .unwrap();
            seen.extend(batch);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen, expected, "SSCAN {options:?}");
    }
}

#[tokio::test]
async fn set_commands_on_a_string_are_wrongtype_errors() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "str", "v"]).await;
    run(&mut c, &["SADD", "s", "a"]).await;
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for args in [
        &["SADD", "str", "a"][..],
        &["SMEMBERS", "str"],
        &["SCARD", "str"],
        &["SINTER", "s", "str"],
        &["SUNIONSTORE", "out", "s", "str"],
    ] {
        assert_eq!(fails(&mut c, args).await, wrongtype, "{args:?}");
    }
}
