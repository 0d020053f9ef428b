//! Counter commands over RESP: INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT, with Redis's
//! overflow and parse errors and its float formatting.
#![allow(clippy::unwrap_used)]

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

async fn fails(c: &mut MultiplexedConnection, args: &[&str]) -> String {
    expect_error(c, redis::cmd(args[0]).arg(&args[1..])).await
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const OVERFLOW: &str = "ERR increment or decrement would overflow";

#[tokio::test]
async fn incr_and_decr_start_missing_keys_at_zero() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["INCR", "n"]).await, Value::Int(1));
    assert_eq!(run(&mut c, &["INCR", "n"]).await, Value::Int(2));
    assert_eq!(run(&mut c, &["DECR", "n"]).await, Value::Int(1));
    assert_eq!(run(&mut c, &["DECR", "m"]).await, Value::Int(-1));
    assert_eq!(run(&mut c, &["GET", "n"]).await, bulk("1"));
    assert_eq!(run(&mut c, &["GET", "m"]).await, bulk("-1"));
}

#[tokio::test]
async fn incrby_and_decrby_add_signed_amounts() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "n", "10"]).await;
    assert_eq!(run(&mut c, &["INCRBY", "n", "5"]).await, Value::Int(15));
    assert_eq!(run(&mut c, &["INCRBY", "n", "-20"]).await, Value::Int(-5));
    assert_eq!(run(&mut c, &["DECRBY", "n", "5"]).await, Value::Int(-10));
    assert_eq!(run(&mut c, &["DECRBY", "n", "-15"]).await, Value::Int(5));
    assert_eq!(
        run(&mut c, &["INCRBY", "fresh", "42"]).await,
        Value::Int(42)
    );
}

#[tokio::test]
async fn incr_keeps_an_existing_ttl() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "n", "1", "EX", "100"]).await;
    run(&mut c, &["INCR", "n"]).await;
    let Value::Int(ttl) = run(&mut c, &["TTL", "n"]).await else {
        panic!("TTL is an integer");
    };
    assert!(ttl > 0 && ttl <= 100, "TTL {ttl}");
}

#[tokio::test]
async fn counters_refuse_values_that_are_not_integers() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for value in ["abc", "1.5", " 1", "1 ", "", "99999999999999999999"] {
        run(&mut c, &["SET", "s", value]).await;
        assert_eq!(
            fails(&mut c, &["INCR", "s"]).await,
            NOT_AN_INTEGER,
            "INCR on {value:?}"
        );
    }
    run(&mut c, &["SET", "n", "1"]).await;
    assert_eq!(fails(&mut c, &["INCRBY", "n", "x"]).await, NOT_AN_INTEGER);
    assert_eq!(fails(&mut c, &["DECRBY", "n", "1.0"]).await, NOT_AN_INTEGER);
    assert_eq!(run(&mut c, &["GET", "n"]).await, bulk("1"));
}

#[tokio::test]
async fn counters_refuse_to_overflow_64_bits() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let max = i64::MAX.to_string();
    let min = i64::MIN.to_string();
    run(&mut c, &["SET", "big", &max]).await;
    assert_eq!(fails(&mut c, &["INCR", "big"]).await, OVERFLOW);
    assert_eq!(fails(&mut c, &["INCRBY", "big", "1"]).await, OVERFLOW);
    assert_eq!(run(&mut c, &["GET", "big"]).await, bulk(&max));
    run(&mut c, &["SET", "small", &min]).await;
    assert_eq!(fails(&mut c, &["DECR", "small"]).await, OVERFLOW);
    assert_eq!(fails(&mut c, &["INCRBY", "small", "-1"]).await, OVERFLOW);
    assert_eq!(
        run(&mut c, &["DECRBY", "small", "-1"]).await,
        Value::Int(i64::MIN + 1)
    );
}

#[tokio::test]
async fn incrbyfloat_formats_results_like_redis() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let cases = [
        ("10.5", "0.1", "10.6"),
        ("5.0e3", "200", "5200"),
        ("5200", "1.5", "5201.5"),
        ("3", "-3", "0"),
        ("1", "0.25", "1.25"),
        ("-1", "-0.5", "-1.5"),
        ("10", "1e2", "110"),
        ("0", "0.000001", "0.000001"),
    ];
    for (start, by, expected) in cases {
        run(&mut c, &["SET", "f", start]).await;
        let got = run(&mut c, &["INCRBYFLOAT", "f", by]).await;
        assert_eq!(got, bulk(expected), "{start} + {by}");
        assert_eq!(
            run(&mut c, &["GET", "f"]).await,
            bulk(expected),
            "stored {start} + {by}"
        );
    }
    assert_eq!(
        run(&mut c, &["INCRBYFLOAT", "fresh", "3.0e3"]).await,
        bulk("3000")
    );
}

#[tokio::test]
async fn incrbyfloat_refuses_values_that_are_not_floats() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "s", "abc"]).await;
    let err = fails(&mut c, &["INCRBYFLOAT", "s", "1"]).await;
    assert_eq!(err, "ERR value is not a valid float");
    run(&mut c, &["SET", "f", "1"]).await;
    let err = fails(&mut c, &["INCRBYFLOAT", "f", "one"]).await;
    assert_eq!(err, "ERR value is not a valid float");
    let err = fails(&mut c, &["INCRBYFLOAT", "f", "inf"]).await;
    assert_eq!(err, "ERR increment would produce NaN or Infinity");
    assert_eq!(run(&mut c, &["GET", "f"]).await, bulk("1"));
}
