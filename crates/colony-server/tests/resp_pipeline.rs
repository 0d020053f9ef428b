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
