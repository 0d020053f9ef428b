//! Pipelined commands run concurrently inside Colony, but a client must see
//! them take effect in the order it sent them, including around commands
//! that need several rounds (RENAME, SMOVE, *STORE, FLUSHDB, SELECT).
#![allow(clippy::unwrap_used)]

use colony_testkit::{target_from_env, Node, NodeOptions};
use redis::Value;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

#[tokio::test]
async fn pipelined_commands_take_effect_in_the_order_sent() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("a").arg("1");
    pipe.cmd("RENAME").arg("a").arg("b");
    pipe.cmd("GET").arg("b");
    pipe.cmd("INCR").arg("b");
    pipe.cmd("SADD").arg("s1").arg("x").arg("y");
    pipe.cmd("SMOVE").arg("s1").arg("s2").arg("x");
    pipe.cmd("SMEMBERS").arg("s2");
    pipe.cmd("SUNIONSTORE").arg("u").arg("s1").arg("s2");
    pipe.cmd("SCARD").arg("u");
    pipe.cmd("SELECT").arg("1");
    pipe.cmd("GET").arg("b");
    pipe.cmd("SELECT").arg("0");
    pipe.cmd("FLUSHDB");
    pipe.cmd("EXISTS").arg("b").arg("u");
    let replies: Vec<Value> = pipe.query_async(&mut c).await.unwrap();
    let expected = vec![
        Value::Okay,
        Value::Okay,
        Value::BulkString(b"1".to_vec()),
        Value::Int(2),
        Value::Int(2),
        Value::Int(1),
        Value::Array(vec![Value::BulkString(b"x".to_vec())]),
        Value::Int(2),
        Value::Int(2),
        Value::Okay,
        Value::Nil,
        Value::Okay,
        Value::Okay,
        Value::Int(0),
    ];
    assert_eq!(replies, expected);
}

#[tokio::test]
async fn a_long_pipeline_on_one_key_is_applied_in_full_and_in_order() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("INCR").arg("counter");
        if i % 1000 == 999 {
            pipe.cmd("GET").arg("counter");
        }
    }
    let replies: Vec<Value> = pipe.query_async(&mut c).await.unwrap();
    let reads: Vec<&Value> = replies
        .iter()
        .filter(|v| matches!(v, Value::BulkString(_)))
        .collect();
    let want: Vec<Value> = (1..=5)
        .map(|k| Value::BulkString((k * 1000).to_string().into_bytes()))
        .collect();
    assert_eq!(reads, want.iter().collect::<Vec<_>>());
    assert_eq!(replies.len(), 5005);
}

/// Single-key and multi-key commands in one pipeline reach each vnode in
/// the order sent: a pipeline's requests are gathered per vnode and sent
/// together, and MSET, MGET and DEL of several keys join the same batches.
#[tokio::test]
async fn multi_key_commands_keep_their_place_in_a_pipeline() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg("old");
    }
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg("new");
    }
    pipe.add_command(mset);
    pipe.cmd("MGET").arg(&keys);
    pipe.cmd("APPEND").arg("k0").arg("+");
    pipe.cmd("DEL").arg(&keys[..10]);
    pipe.cmd("SET").arg("k1").arg("again");
    pipe.cmd("MGET").arg(&keys[..3]);
    let replies: Vec<Value> = pipe.query_async(&mut c).await.unwrap();
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let n = keys.len();
    assert_eq!(replies[n], Value::Okay);
    assert_eq!(replies[n + 1], Value::Array(vec![bulk("new"); n]));
    assert_eq!(replies[n + 2], Value::Int(4));
    assert_eq!(replies[n + 3], Value::Int(10));
    assert_eq!(replies[n + 4], Value::Okay);
    assert_eq!(
        replies[n + 5],
        Value::Array(vec![Value::Nil, bulk("again"), Value::Nil])
    );
}
