//! Hash commands over RESP, in RESP2 and (where the shape differs) RESP3.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use colony_testkit::{bulk, expect_error, target_from_env, Node, NodeOptions};
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

async fn strings(c: &mut MultiplexedConnection, args: &[&str]) -> Vec<String> {
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

#[tokio::test]
async fn hset_counts_new_fields_and_hget_reads_them() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(
        run(&mut c, &["HSET", "h", "a", "1", "b", "2"]).await,
        Value::Int(2)
    );
    assert_eq!(
        run(&mut c, &["HSET", "h", "a", "10", "c", "3"]).await,
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["HGET", "h", "a"]).await, bulk("10"));
    assert_eq!(run(&mut c, &["HGET", "h", "nofield"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["HGET", "nokey", "a"]).await, Value::Nil);
    let err = fails(&mut c, &["HSET", "h", "a"]).await;
    assert_eq!(err, "ERR wrong number of arguments for 'hset' command");
    let err = fails(&mut c, &["HSET", "h", "a", "1", "b"]).await;
    assert_eq!(err, "ERR wrong number of arguments for 'hset' command");
}

#[tokio::test]
async fn hsetnx_writes_only_new_fields() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["HSETNX", "h", "f", "1"]).await, Value::Int(1));
    assert_eq!(run(&mut c, &["HSETNX", "h", "f", "2"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["HGET", "h", "f"]).await, bulk("1"));
}

#[tokio::test]
async fn hmset_replies_ok_and_hmget_keeps_argument_order() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(
        run(&mut c, &["HMSET", "h", "a", "1", "b", "2"]).await,
        Value::Okay
    );
    let reply = run(&mut c, &["HMGET", "h", "b", "nofield", "a"]).await;
    assert_eq!(reply, Value::Array(vec![bulk("2"), Value::Nil, bulk("1")]));
    let reply = run(&mut c, &["HMGET", "nokey", "a", "b"]).await;
    assert_eq!(reply, Value::Array(vec![Value::Nil, Value::Nil]));
}

#[tokio::test]
async fn hdel_counts_removed_fields_and_removes_an_emptied_key() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    assert_eq!(
        run(&mut c, &["HDEL", "h", "a", "nofield", "a"]).await,
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["HLEN", "h"]).await, Value::Int(2));
    assert_eq!(run(&mut c, &["HDEL", "h", "b", "c"]).await, Value::Int(2));
    assert_eq!(run(&mut c, &["EXISTS", "h"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["HDEL", "nokey", "a"]).await, Value::Int(0));
    let err = fails(&mut c, &["HDEL", "h"]).await;
    assert_eq!(err, "ERR wrong number of arguments for 'hdel' command");
}

#[tokio::test]
async fn hgetall_hkeys_and_hvals_list_the_whole_hash() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    let all: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("h")
        .query_async(&mut c)
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .into();
    assert_eq!(all, expected);
    let Value::Array(flat) = run(&mut c, &["HGETALL", "h"]).await else {
        panic!("HGETALL in RESP2 is a flat array");
    };
    assert_eq!(flat.len(), 6);
    assert_eq!(strings(&mut c, &["HKEYS", "h"]).await, ["a", "b", "c"]);
    assert_eq!(strings(&mut c, &["HVALS", "h"]).await, ["1", "2", "3"]);
    assert_eq!(
        run(&mut c, &["HGETALL", "nokey"]).await,
        Value::Array(vec![])
    );
    assert_eq!(run(&mut c, &["HKEYS", "nokey"]).await, Value::Array(vec![]));
}

#[tokio::test]
async fn hgetall_in_resp3_is_a_map() {
    let node = start().await;
    let mut c = node.conn_resp3().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2"]).await;
    let Value::Map(mut pairs) = run(&mut c, &["HGETALL", "h"]).await else {
        panic!("HGETALL in RESP3 is a map");
    };
    pairs.sort_by_key(|(k, _)| format!("{k:?}"));
    assert_eq!(pairs, vec![(bulk("a"), bulk("1")), (bulk("b"), bulk("2"))]);
    assert_eq!(run(&mut c, &["HGETALL", "nokey"]).await, Value::Map(vec![]));
}

#[tokio::test]
async fn hlen_hexists_and_hstrlen_inspect_fields() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "name", "colony", "empty", ""]).await;
    assert_eq!(run(&mut c, &["HLEN", "h"]).await, Value::Int(2));
    assert_eq!(run(&mut c, &["HLEN", "nokey"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["HEXISTS", "h", "name"]).await, Value::Int(1));
    assert_eq!(
        run(&mut c, &["HEXISTS", "h", "nofield"]).await,
        Value::Int(0)
    );
    assert_eq!(run(&mut c, &["HSTRLEN", "h", "name"]).await, Value::Int(6));
    assert_eq!(run(&mut c, &["HSTRLEN", "h", "empty"]).await, Value::Int(0));
    assert_eq!(
        run(&mut c, &["HSTRLEN", "h", "nofield"]).await,
        Value::Int(0)
    );
}

#[tokio::test]
async fn hincrby_adds_integers_and_refuses_non_integers_and_overflow() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(
        run(&mut c, &["HINCRBY", "h", "n", "5"]).await,
        Value::Int(5)
    );
    assert_eq!(
        run(&mut c, &["HINCRBY", "h", "n", "-7"]).await,
        Value::Int(-2)
    );
    run(
        &mut c,
        &["HSET", "h", "s", "abc", "big", &i64::MAX.to_string()],
    )
    .await;
    let err = fails(&mut c, &["HINCRBY", "h", "s", "1"]).await;
    assert_eq!(err, "ERR hash value is not an integer");
    let err = fails(&mut c, &["HINCRBY", "h", "n", "x"]).await;
    assert_eq!(err, "ERR value is not an integer or out of range");
    let err = fails(&mut c, &["HINCRBY", "h", "big", "1"]).await;
    assert_eq!(err, "ERR increment or decrement would overflow");
}

#[tokio::test]
async fn hincrbyfloat_formats_like_incrbyfloat() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(
        &mut c,
        &["HSET", "h", "f", "10.5", "e", "5.0e3", "s", "abc"],
    )
    .await;
    assert_eq!(
        run(&mut c, &["HINCRBYFLOAT", "h", "f", "0.1"]).await,
        bulk("10.6")
    );
    assert_eq!(
        run(&mut c, &["HINCRBYFLOAT", "h", "e", "200"]).await,
        bulk("5200")
    );
    assert_eq!(
        run(&mut c, &["HINCRBYFLOAT", "h", "new", "2.5"]).await,
        bulk("2.5")
    );
    assert_eq!(run(&mut c, &["HGET", "h", "f"]).await, bulk("10.6"));
    let err = fails(&mut c, &["HINCRBYFLOAT", "h", "s", "1"]).await;
    assert_eq!(err, "ERR hash value is not a float");
    let err = fails(&mut c, &["HINCRBYFLOAT", "h", "f", "x"]).await;
    assert_eq!(err, "ERR value is not a valid float");
}

#[tokio::test]
async fn hrandfield_without_count_returns_one_field_or_nil() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["HRANDFIELD", "nokey"]).await, Value::Nil);
    run(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    let Value::BulkString(field) = run(&mut c, &["HRANDFIELD", "h"]).await else {
        panic!("HRANDFIELD without count is a bulk string");
    };
    assert!([b"a", b"b", b"c"].contains(&field.as_slice().try_into().unwrap()));
}

#[tokio::test]
async fn hrandfield_with_a_positive_count_returns_distinct_fields() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]).await;
    let two: Vec<String> = redis::cmd("HRANDFIELD")
        .arg(&["h", "2"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert_eq!(
        strings(&mut c, &["HRANDFIELD", "h", "10"]).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        run(&mut c, &["HRANDFIELD", "h", "0"]).await,
        Value::Array(vec![])
    );
    assert_eq!(
        run(&mut c, &["HRANDFIELD", "nokey", "3"]).await,
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn hrandfield_with_a_negative_count_may_repeat_and_returns_exactly_that_many() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2"]).await;
    let fields: Vec<String> = redis::cmd("HRANDFIELD")
        .arg(&["h", "-7"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields.len(), 7);
    assert!(fields.iter().all(|f| f == "a" || f == "b"), "{fields:?}");
}

#[tokio::test]
async fn hrandfield_withvalues_is_flat_in_resp2_and_pairs_in_resp3() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "a", "1", "b", "2"]).await;
    let Value::Array(flat) = run(&mut c, &["HRANDFIELD", "h", "-3", "WITHVALUES"]).await else {
        panic!("RESP2 WITHVALUES is an array");
    };
    assert_eq!(flat.len(), 6);
    for pair in flat.chunks(2) {
        assert!(
            pair == [bulk("a"), bulk("1")] || pair == [bulk("b"), bulk("2")],
            "{pair:?}"
        );
    }
    let mut c3 = node.conn_resp3().await.unwrap();
    let Value::Array(pairs) = run(&mut c3, &["HRANDFIELD", "h", "2", "WITHVALUES"]).await else {
        panic!("RESP3 WITHVALUES is an array of pairs");
    };
    let mut pairs: Vec<Value> = pairs;
    pairs.sort_by_key(|p| format!("{p:?}"));
    let expected = [
        Value::Array(vec![bulk("a"), bulk("1")]),
        Value::Array(vec![bulk("b"), bulk("2")]),
    ];
    assert_eq!(pairs, expected);
    let err = fails(&mut c, &["HRANDFIELD", "h", "1", "BOGUS"]).await;
    assert_eq!(err, "ERR syntax error");
}

#[tokio::test]
async fn hscan_iterates_every_field_with_its_value_and_honours_match() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut expected = BTreeMap::new();
    let mut hset = redis::cmd("HSET");
    hset.arg("big");
    for i in 0..300 {
        hset.arg(format!("f{i}")).arg(format!("v{i}"));
        expected.insert(format!("f{i}"), format!("v{i}"));
    }
    let _: i64 = hset.query_async(&mut c).await.unwrap();
    let mut seen = BTreeMap::new();
    let mut matched = BTreeSet::new();
    for (options, sink_all) in [(vec!["COUNT", "20"], true), (vec!["MATCH", "f1?"], false)] {
        let mut cursor = "0".to_string();
        loop {
            let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
                .arg("big")
                .arg(&cursor)
                .arg(&options)
                .query_async(&mut c)
                .await
                .unwrap();
            for pair in flat.chunks(2) {
                if sink_all {
                    seen.insert(pair[0].clone(), pair[1].clone());
                } else {
                    matched.insert(pair[0].clone());
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
    }
    assert_eq!(seen, expected);
    let expected_match: BTreeSet<String> = (10..20).map(|i| format!("f{i}")).collect();
    assert_eq!(matched, expected_match);
}

#[tokio::test]
async fn hash_commands_on_a_string_are_wrongtype_errors() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "s", "v"]).await;
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for args in [
        &["HSET", "s", "f", "v"][..],
        &["HGET", "s", "f"],
        &["HGETALL", "s"],
        &["HLEN", "s"],
        &["HINCRBY", "s", "f", "1"],
        &["HSCAN", "s", "0"],
    ] {
        assert_eq!(fails(&mut c, args).await, wrongtype, "{args:?}");
    }
}
