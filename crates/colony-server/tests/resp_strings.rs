//! String commands over RESP: SET and its options, the GET/SET variants, multi-key
//! MGET/MSET, and byte-range commands. Counters live in `resp_counters.rs`.
#![allow(clippy::unwrap_used)]

use colony_testkit::{bulk, expect_error, target_from_env, unix_time, Node, NodeOptions};
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

async fn ttl(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(c).await.unwrap()
}

#[tokio::test]
async fn set_then_get_round_trips_binary_values_and_missing_keys_are_nil() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let value = vec![0u8, 255, b'\r', b'\n', 7];
    let ok: Value = redis::cmd("SET")
        .arg("bin")
        .arg(&value)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, Value::Okay);
    assert_eq!(run(&mut c, &["GET", "bin"]).await, Value::BulkString(value));
    assert_eq!(run(&mut c, &["GET", "nokey"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["SET", "empty", ""]).await, Value::Okay);
    assert_eq!(run(&mut c, &["GET", "empty"]).await, bulk(""));
}

#[tokio::test]
async fn set_with_ex_px_exat_and_pxat_sets_a_ttl() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let exat = (unix_time() + 100).to_string();
    let pxat = ((unix_time() + 100) * 1000).to_string();
    for (key, unit, amount) in [
        ("ex", "EX", "100"),
        ("px", "PX", "100000"),
        ("exat", "EXAT", exat.as_str()),
        ("pxat", "PXAT", pxat.as_str()),
    ] {
        assert_eq!(
            run(&mut c, &["SET", key, "v", unit, amount]).await,
            Value::Okay
        );
        let t = ttl(&mut c, key).await;
        assert!(t > 0 && t <= 101, "{unit}: TTL {t}");
    }
    assert_eq!(run(&mut c, &["SET", "ex", "plain"]).await, Value::Okay);
    assert_eq!(ttl(&mut c, "ex").await, -1, "a plain SET clears the TTL");
}

#[tokio::test]
async fn set_nx_and_xx_write_only_when_the_key_is_absent_or_present() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["SET", "k", "1", "XX"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["GET", "k"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["SET", "k", "1", "NX"]).await, Value::Okay);
    assert_eq!(run(&mut c, &["SET", "k", "2", "NX"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("1"));
    assert_eq!(run(&mut c, &["SET", "k", "3", "XX"]).await, Value::Okay);
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("3"));
}

#[tokio::test]
async fn set_get_returns_the_previous_value() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["SET", "k", "1", "GET"]).await, Value::Nil);
    assert_eq!(run(&mut c, &["SET", "k", "2", "GET"]).await, bulk("1"));
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("2"));
    run(&mut c, &["HSET", "h", "f", "v"]).await;
    let err = fails(&mut c, &["SET", "h", "x", "GET"]).await;
    assert_eq!(
        err,
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
}

#[tokio::test]
async fn set_keepttl_keeps_the_existing_ttl() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "k", "1", "EX", "100"]).await;
    assert_eq!(
        run(&mut c, &["SET", "k", "2", "KEEPTTL"]).await,
        Value::Okay
    );
    let t = ttl(&mut c, "k").await;
    assert!(t > 0 && t <= 100, "TTL {t}");
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("2"));
}

#[tokio::test]
async fn set_with_conflicting_options_is_a_syntax_error() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for args in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "EX", "10", "PX", "100"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "EXAT", "10", "PXAT", "100"],
        &["SET", "k", "v", "BOGUS"],
        &["SET", "k", "v", "EX"],
    ] {
        assert_eq!(fails(&mut c, args).await, "ERR syntax error", "{args:?}");
    }
    assert_eq!(run(&mut c, &["EXISTS", "k"]).await, Value::Int(0));
}

#[tokio::test]
async fn set_with_a_non_positive_expire_time_is_refused() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for args in [
        &["SET", "k", "v", "EX", "0"][..],
        &["SET", "k", "v", "EX", "-1"],
        &["SET", "k", "v", "PX", "0"],
        &["SET", "k", "v", "EXAT", "0"],
    ] {
        let err = fails(&mut c, args).await;
        assert_eq!(err, "ERR invalid expire time in 'set' command", "{args:?}");
    }
    let err = fails(&mut c, &["SET", "k", "v", "EX", "ten"]).await;
    assert_eq!(err, "ERR value is not an integer or out of range");
}

#[tokio::test]
async fn setnx_setex_and_psetex_behave_like_their_set_options() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["SETNX", "k", "1"]).await, Value::Int(1));
    assert_eq!(run(&mut c, &["SETNX", "k", "2"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("1"));
    assert_eq!(run(&mut c, &["SETEX", "e", "100", "v"]).await, Value::Okay);
    let t = ttl(&mut c, "e").await;
    assert!(t > 0 && t <= 100, "TTL {t}");
    assert_eq!(
        run(&mut c, &["PSETEX", "p", "100000", "v"]).await,
        Value::Okay
    );
    let t = ttl(&mut c, "p").await;
    assert!(t > 0 && t <= 100, "TTL {t}");
    let err = fails(&mut c, &["SETEX", "e", "0", "v"]).await;
    assert_eq!(err, "ERR invalid expire time in 'setex' command");
    let err = fails(&mut c, &["PSETEX", "p", "-5", "v"]).await;
    assert_eq!(err, "ERR invalid expire time in 'psetex' command");
}

#[tokio::test]
async fn getset_and_getdel_return_the_old_value() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["GETSET", "k", "1"]).await, Value::Nil);
    run(&mut c, &["EXPIRE", "k", "100"]).await;
    assert_eq!(run(&mut c, &["GETSET", "k", "2"]).await, bulk("1"));
    assert_eq!(ttl(&mut c, "k").await, -1, "GETSET clears the TTL");
    assert_eq!(run(&mut c, &["GETDEL", "k"]).await, bulk("2"));
    assert_eq!(run(&mut c, &["EXISTS", "k"]).await, Value::Int(0));
    assert_eq!(run(&mut c, &["GETDEL", "k"]).await, Value::Nil);
}

#[tokio::test]
async fn getex_sets_or_removes_the_ttl_while_reading() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "k", "v"]).await;
    assert_eq!(run(&mut c, &["GETEX", "k"]).await, bulk("v"));
    assert_eq!(ttl(&mut c, "k").await, -1);
    assert_eq!(run(&mut c, &["GETEX", "k", "EX", "100"]).await, bulk("v"));
    let t = ttl(&mut c, "k").await;
    assert!(t > 0 && t <= 100, "TTL {t}");
    assert_eq!(run(&mut c, &["GETEX", "k", "PERSIST"]).await, bulk("v"));
    assert_eq!(ttl(&mut c, "k").await, -1);
    assert_eq!(
        run(&mut c, &["GETEX", "nokey", "EX", "10"]).await,
        Value::Nil
    );
    let err = fails(&mut c, &["GETEX", "k", "EX", "0"]).await;
    assert_eq!(err, "ERR invalid expire time in 'getex' command");
    let err = fails(&mut c, &["GETEX", "k", "PERSIST", "EX", "10"]).await;
    assert_eq!(err, "ERR syntax error");
}

#[tokio::test]
async fn mget_returns_nil_for_missing_and_non_string_keys() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "a", "1"]).await;
    run(&mut c, &["HSET", "h", "f", "v"]).await;
    let reply = run(&mut c, &["MGET", "a", "nokey", "h", "a"]).await;
    assert_eq!(
        reply,
        Value::Array(vec![bulk("1"), Value::Nil, Value::Nil, bulk("1")])
    );
}

#[tokio::test]
async fn mset_writes_all_pairs_and_msetnx_writes_all_or_none() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(
        run(&mut c, &["MSET", "a", "1", "b", "2"]).await,
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["MGET", "a", "b"]).await,
        Value::Array(vec![bulk("1"), bulk("2")])
    );
    assert_eq!(
        run(&mut c, &["MSETNX", "b", "x", "c", "3"]).await,
        Value::Int(0)
    );
    assert_eq!(run(&mut c, &["EXISTS", "c"]).await, Value::Int(0));
    assert_eq!(
        run(&mut c, &["MSETNX", "c", "3", "d", "4"]).await,
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["MGET", "c", "d"]).await,
        Value::Array(vec![bulk("3"), bulk("4")])
    );
    let err = fails(&mut c, &["MSET", "a", "1", "b"]).await;
    assert_eq!(err, "ERR wrong number of arguments for 'mset' command");
    let err = fails(&mut c, &["MSETNX", "a"]).await;
    assert_eq!(err, "ERR wrong number of arguments for 'msetnx' command");
}

#[tokio::test]
async fn append_and_strlen_measure_bytes() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(run(&mut c, &["APPEND", "k", "Hello"]).await, Value::Int(5));
    assert_eq!(
        run(&mut c, &["APPEND", "k", " World"]).await,
        Value::Int(11)
    );
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("Hello World"));
    assert_eq!(run(&mut c, &["STRLEN", "k"]).await, Value::Int(11));
    assert_eq!(run(&mut c, &["STRLEN", "nokey"]).await, Value::Int(0));
    run(&mut c, &["SET", "utf8", "é"]).await;
    assert_eq!(run(&mut c, &["STRLEN", "utf8"]).await, Value::Int(2));
}

#[tokio::test]
async fn getrange_clamps_and_accepts_negative_indices() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "k", "Hello World"]).await;
    for (start, end, expected) in [
        ("0", "4", "Hello"),
        ("-5", "-1", "World"),
        ("0", "-1", "Hello World"),
        ("-100", "2", "Hel"),
        ("6", "100", "World"),
        ("5", "1", ""),
        ("100", "200", ""),
    ] {
        let got = run(&mut c, &["GETRANGE", "k", start, end]).await;
        assert_eq!(got, bulk(expected), "GETRANGE {start} {end}");
    }
    assert_eq!(
        run(&mut c, &["GETRANGE", "nokey", "0", "-1"]).await,
        bulk("")
    );
}

#[tokio::test]
async fn setrange_overwrites_in_place_and_pads_with_zero_bytes() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["SET", "k", "Hello World"]).await;
    assert_eq!(
        run(&mut c, &["SETRANGE", "k", "6", "Redis"]).await,
        Value::Int(11)
    );
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk("Hello Redis"));
    assert_eq!(
        run(&mut c, &["SETRANGE", "pad", "5", "x"]).await,
        Value::Int(6)
    );
    assert_eq!(run(&mut c, &["GET", "pad"]).await, bulk(b"\0\0\0\0\0x"));
    assert_eq!(
        run(&mut c, &["SETRANGE", "k", "13", "!"]).await,
        Value::Int(14)
    );
    assert_eq!(run(&mut c, &["GET", "k"]).await, bulk(b"Hello Redis\0\0!"));
    assert_eq!(
        run(&mut c, &["SETRANGE", "nokey2", "3", ""]).await,
        Value::Int(0)
    );
    assert_eq!(run(&mut c, &["EXISTS", "nokey2"]).await, Value::Int(0));
    let err = fails(&mut c, &["SETRANGE", "k", "-1", "x"]).await;
    assert_eq!(err, "ERR offset is out of range");
}

#[tokio::test]
async fn string_commands_on_a_hash_are_wrongtype_errors() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    run(&mut c, &["HSET", "h", "f", "v"]).await;
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for args in [
        &["GET", "h"][..],
        &["APPEND", "h", "x"],
        &["STRLEN", "h"],
        &["GETRANGE", "h", "0", "1"],
        &["SETRANGE", "h", "0", "x"],
        &["GETDEL", "h"],
        &["GETSET", "h", "x"],
        &["INCR", "h"],
        &["INCRBYFLOAT", "h", "1"],
    ] {
        assert_eq!(fails(&mut c, args).await, wrongtype, "{args:?}");
    }
    assert_eq!(
        run(&mut c, &["SET", "h", "plain"]).await,
        Value::Okay,
        "SET overwrites any type"
    );
    assert_eq!(run(&mut c, &["GET", "h"]).await, bulk("plain"));
}
