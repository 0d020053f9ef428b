//! Connection-level commands over RESP: PING, ECHO, HELLO, SELECT, QUIT, RESET,
//! CLIENT, error wording, pipelining and concurrent clients.
//!
//! Written against real Redis first; every assertion here is Redis's own behaviour.
#![allow(clippy::unwrap_used)]

use colony_testkit::{bulk, expect_error, target_from_env, Node, NodeOptions};
use redis::Value;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

#[tokio::test]
async fn ping_answers_pong_or_echoes_its_argument() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let pong: Value = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, Value::SimpleString("PONG".into()));
    let echoed: Value = redis::cmd("PING")
        .arg("hi")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(echoed, bulk("hi"));
    let err = expect_error(&mut c, redis::cmd("PING").arg("a").arg("b")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'ping' command");
}

#[tokio::test]
async fn echo_returns_binary_safe_bulk_strings() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let payload = b"a\r\nb\x00c\xff".to_vec();
    let reply: Value = redis::cmd("ECHO")
        .arg(&payload)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(reply, Value::BulkString(payload));
    let err = expect_error(&mut c, &redis::cmd("ECHO")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'echo' command");
}

fn hello_fields(reply: &[(Value, Value)]) -> Vec<String> {
    reply
        .iter()
        .map(|(k, _)| match k {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("<not a bulk string: {other:?}>"),
        })
        .collect()
}

#[tokio::test]
async fn hello_3_replies_with_a_map_describing_the_server() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c)
        .await
        .unwrap();
    let reply: Value = redis::cmd("HELLO")
        .arg(3)
        .query_async(&mut c)
        .await
        .unwrap();
    let Value::Map(pairs) = reply else {
        panic!("HELLO 3 must reply with a RESP3 map, got {reply:?}");
    };
    let expected = [
        "server", "version", "proto", "id", "mode", "role", "modules",
    ];
    assert_eq!(hello_fields(&pairs), expected);
    for (i, (_, value)) in pairs.iter().enumerate() {
        match expected[i] {
            "proto" => assert_eq!(value, &Value::Int(3)),
            "id" => assert_eq!(value, &Value::Int(id)),
            "modules" => assert_eq!(value, &Value::Array(vec![])),
            field => assert!(
                matches!(value, Value::BulkString(b) if !b.is_empty()),
                "{field} must be a non-empty bulk string, got {value:?}"
            ),
        }
    }
}

#[tokio::test]
async fn hello_2_replies_with_a_flat_array_and_proto_2() {
    let node = start().await;
    let mut raw = node.raw().await.unwrap();
    let reply = raw.command(&[b"HELLO", b"2"]).await.unwrap();
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("*14\r\n$6\r\nserver\r\n"), "{text:?}");
    assert!(text.contains("$5\r\nproto\r\n:2\r\n"), "{text:?}");
    assert!(text.ends_with("$7\r\nmodules\r\n*0\r\n"), "{text:?}");
}

#[tokio::test]
async fn hello_with_an_unsupported_version_is_refused() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let err = expect_error(&mut c, redis::cmd("HELLO").arg(4)).await;
    assert_eq!(err, "NOPROTO unsupported protocol version");
    let err = expect_error(&mut c, redis::cmd("HELLO").arg("abc")).await;
    assert_eq!(
        err,
        "ERR Protocol version is not an integer or out of range"
    );
}

#[tokio::test]
async fn select_accepts_databases_0_to_15_and_refuses_others() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    for db in 0..16 {
        let ok: Value = redis::cmd("SELECT")
            .arg(db)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(ok, Value::Okay, "SELECT {db}");
    }
    for db in ["16", "-1", "1000"] {
        let err = expect_error(&mut c, redis::cmd("SELECT").arg(db)).await;
        assert_eq!(err, "ERR DB index is out of range", "SELECT {db}");
    }
    let err = expect_error(&mut c, redis::cmd("SELECT").arg("one")).await;
    assert_eq!(err, "ERR value is not an integer or out of range");
}

#[tokio::test]
async fn databases_selected_with_select_are_isolated() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("in-1")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, None);
    let _: () = redis::cmd("SELECT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("in-1"));
}

#[tokio::test]
async fn quit_replies_ok_and_closes_the_connection() {
    let node = start().await;
    let mut raw = node.raw().await.unwrap();
    assert_eq!(raw.command(&[b"QUIT"]).await.unwrap(), b"+OK\r\n");
    let rest = raw
        .read_until_closed(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rest, b"");
}

#[tokio::test]
async fn reset_restores_database_0_and_clears_the_client_name() {
    let node = start().await;
    let mut raw = node.raw().await.unwrap();
    assert_eq!(raw.command(&[b"SELECT", b"3"]).await.unwrap(), b"+OK\r\n");
    assert_eq!(
        raw.command(&[b"SET", b"k", b"v"]).await.unwrap(),
        b"+OK\r\n"
    );
    let named = raw.command(&[b"CLIENT", b"SETNAME", b"n1"]).await.unwrap();
    assert_eq!(named, b"+OK\r\n");
    assert_eq!(raw.command(&[b"RESET"]).await.unwrap(), b"+RESET\r\n");
    assert_eq!(
        raw.command(&[b"CLIENT", b"GETNAME"]).await.unwrap(),
        b"$-1\r\n"
    );
    assert_eq!(raw.command(&[b"GET", b"k"]).await.unwrap(), b"$-1\r\n");
}

#[tokio::test]
async fn client_id_is_a_distinct_positive_integer_per_connection() {
    let node = start().await;
    let mut a = node.conn().await.unwrap();
    let mut b = node.conn().await.unwrap();
    let id_a: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut a)
        .await
        .unwrap();
    let id_b: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut b)
        .await
        .unwrap();
    assert!(id_a > 0 && id_b > 0);
    assert_ne!(id_a, id_b);
    let again: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut a)
        .await
        .unwrap();
    assert_eq!(again, id_a);
}

#[tokio::test]
async fn client_setname_and_getname_round_trip() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let name: Value = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(name, Value::Nil);
    let ok: Value = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, Value::Okay);
    let name: Value = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(name, bulk("worker-1"));
    let err = expect_error(&mut c, redis::cmd("CLIENT").arg("SETNAME").arg("a b")).await;
    assert_eq!(
        err,
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("")
        .query_async(&mut c)
        .await
        .unwrap();
    let name: Value = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(name, Value::Nil);
}

#[tokio::test]
async fn client_info_and_list_describe_connections_in_redis_format() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut other = node.conn().await.unwrap();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c)
        .await
        .unwrap();
    let other_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut other)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("me")
        .query_async(&mut c)
        .await
        .unwrap();
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        info.starts_with(&format!("id={id} addr=127.0.0.1:")),
        "{info:?}"
    );
    assert!(info.contains(" name=me "), "{info:?}");
    assert_eq!(info.trim_end().lines().count(), 1, "{info:?}");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    let ids: Vec<&str> = list.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(ids.contains(&format!("id={id}").as_str()), "{list:?}");
    assert!(ids.contains(&format!("id={other_id}").as_str()), "{list:?}");
}

#[tokio::test]
async fn unknown_commands_are_refused_with_redis_wording() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let err = expect_error(&mut c, redis::cmd("FOO").arg("a")).await;
    assert_eq!(
        err,
        "ERR unknown command 'FOO', with args beginning with: 'a' "
    );
    let err = expect_error(&mut c, redis::cmd("foo").arg("a").arg("b c")).await;
    assert_eq!(
        err,
        "ERR unknown command 'foo', with args beginning with: 'a' 'b c' "
    );
    let err = expect_error(&mut c, &redis::cmd("NOPE")).await;
    assert_eq!(
        err,
        "ERR unknown command 'NOPE', with args beginning with: "
    );
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG", "the connection stays usable");
}

#[tokio::test]
async fn wrong_arity_is_refused_naming_the_lowercase_command() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let err = expect_error(&mut c, &redis::cmd("GET")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'get' command");
    let err = expect_error(&mut c, redis::cmd("get").arg("a").arg("b")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'get' command");
    let err = expect_error(&mut c, redis::cmd("SET").arg("k")).await;
    assert_eq!(err, "ERR wrong number of arguments for 'set' command");
}

#[tokio::test]
async fn a_pipeline_of_1000_commands_gets_1000_replies_in_order() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INCR").arg("pipelined");
    }
    let counts: Vec<i64> = pipe.query_async(&mut c).await.unwrap();
    assert_eq!(counts, (1..=1000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_thousand_commands_in_one_write_are_answered_in_order() {
    let node = start().await;
    let mut raw = node.raw().await.unwrap();
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend_from_slice(&colony_testkit::encode_command(&[
            b"ECHO",
            format!("{i}").as_bytes(),
        ]));
    }
    raw.send(&batch).await.unwrap();
    for i in 0..1000 {
        let s = i.to_string();
        let expected = format!("${}\r\n{s}\r\n", s.len());
        assert_eq!(raw.read_reply().await.unwrap(), expected.as_bytes());
    }
}

#[tokio::test]
async fn fifty_concurrent_clients_incrementing_one_key_lose_no_increment() {
    let node = start().await;
    let client = node.client().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            for _ in 0..200 {
                let _: i64 = redis::cmd("INCR")
                    .arg("shared")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut c = node.conn().await.unwrap();
    let total: i64 = redis::cmd("GET")
        .arg("shared")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(total, 10_000);
}
