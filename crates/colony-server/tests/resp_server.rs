//! Server-level commands over RESP: COMMAND, INFO, DBSIZE, FLUSHDB, FLUSHALL, TIME,
//! CONFIG. Shapes and wording are Redis 7's.
#![allow(clippy::unwrap_used)]

use colony_testkit::{bulk, expect_error, target_from_env, unix_time, Node, NodeOptions};
use redis::Value;

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

async fn set(c: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(c)
        .await
        .unwrap();
}

async fn dbsize(c: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("DBSIZE").query_async(c).await.unwrap()
}

#[tokio::test]
async fn command_count_is_positive() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(count > 0, "COMMAND COUNT = {count}");
}

#[tokio::test]
async fn command_info_get_describes_arity_and_key_positions() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("GET")
        .arg("nosuchcommand")
        .query_async(&mut c)
        .await
        .unwrap();
    let Value::Array(entries) = reply else {
        panic!("COMMAND INFO must reply with an array, got {reply:?}");
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1], Value::Nil, "unknown commands are nil");
    let Value::Array(get) = &entries[0] else {
        panic!(
            "COMMAND INFO GET entry must be an array, got {:?}",
            entries[0]
        );
    };
    assert!(get.len() >= 6, "{get:?}");
    assert_eq!(get[0], bulk("get"));
    assert_eq!(get[1], Value::Int(2), "arity");
    assert!(matches!(get[2], Value::Array(_)), "flags: {:?}", get[2]);
    assert_eq!(get[3..6], [Value::Int(1), Value::Int(1), Value::Int(1)]);
}

#[tokio::test]
async fn command_docs_get_is_a_name_and_a_field_list_with_a_summary() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let reply: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("GET")
        .query_async(&mut c)
        .await
        .unwrap();
    let Value::Array(items) = reply else {
        panic!("COMMAND DOCS (RESP2) must reply with an array, got {reply:?}");
    };
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], bulk("get"));
    let Value::Array(fields) = &items[1] else {
        panic!("docs must be a flat field list, got {:?}", items[1]);
    };
    assert_eq!(fields.len() % 2, 0);
    let names: Vec<&Value> = fields.iter().step_by(2).collect();
    assert!(names.contains(&&bulk("summary")), "{fields:?}");
}

#[tokio::test]
async fn info_has_the_standard_section_headers() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let info: String = redis::cmd("INFO").query_async(&mut c).await.unwrap();
    for header in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
        assert!(
            info.lines().any(|l| l.trim_end() == header),
            "{header} in {info}"
        );
    }
    assert!(info.contains("\r\n"), "INFO lines end with CRLF");
}

#[tokio::test]
async fn info_with_section_names_returns_only_those_sections() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("clients")
        .query_async(&mut c)
        .await
        .unwrap();
    let headers: Vec<&str> = info.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers, ["# Server", "# Clients"]);
    assert!(info.contains("connected_clients:"), "{info}");
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(memory.contains("used_memory:"), "{memory}");
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(stats.contains("total_commands_processed:"), "{stats}");
}

#[tokio::test]
async fn info_keyspace_counts_keys_and_expires_per_database() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let empty: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!empty.contains("db0:"), "{empty}");
    set(&mut c, "a", "1").await;
    set(&mut c, "b", "2").await;
    let _: () = redis::cmd("SET")
        .arg("c")
        .arg("3")
        .arg("EX")
        .arg(1000)
        .query_async(&mut c)
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(info.contains("db0:keys=3,expires=1,avg_ttl="), "{info}");
}

#[tokio::test]
async fn dbsize_counts_keys_in_the_selected_database() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    assert_eq!(dbsize(&mut c).await, 0);
    for i in 0..7 {
        set(&mut c, &format!("k{i}"), "v").await;
    }
    set(&mut c, "k0", "again").await;
    assert_eq!(dbsize(&mut c).await, 7);
    let _: () = redis::cmd("SELECT")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dbsize(&mut c).await, 0);
}

#[tokio::test]
async fn flushdb_empties_only_the_selected_database() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "in0", "v").await;
    let _: () = redis::cmd("SELECT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    set(&mut c, "in1", "v").await;
    let ok: Value = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    assert_eq!(ok, Value::Okay);
    assert_eq!(dbsize(&mut c).await, 0);
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dbsize(&mut c).await, 1);
    let err = expect_error(&mut c, redis::cmd("FLUSHDB").arg("bad")).await;
    assert_eq!(err, "ERR syntax error");
}

#[tokio::test]
async fn flushall_empties_every_database() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    set(&mut c, "in0", "v").await;
    let _: () = redis::cmd("SELECT")
        .arg(5)
        .query_async(&mut c)
        .await
        .unwrap();
    set(&mut c, "in5", "v").await;
    let ok: Value = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert_eq!(ok, Value::Okay);
    assert_eq!(dbsize(&mut c).await, 0);
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dbsize(&mut c).await, 0);
}

#[tokio::test]
async fn time_is_seconds_and_microseconds_as_bulk_strings() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let before = unix_time();
    let reply: Value = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let after = unix_time();
    let Value::Array(parts) = reply else {
        panic!("TIME must reply with an array, got {reply:?}");
    };
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| match p {
            Value::BulkString(b) => std::str::from_utf8(b).unwrap().parse().unwrap(),
            other => panic!("TIME parts are bulk strings, got {other:?}"),
        })
        .collect();
    assert_eq!(numbers.len(), 2);
    assert!(numbers[0] >= before && numbers[0] <= after, "{numbers:?}");
    assert!(numbers[1] < 1_000_000, "{numbers:?}");
}

#[tokio::test]
async fn config_get_maxmemory_is_a_name_value_pair() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let reply: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut c)
        .await
        .unwrap();
    let Value::Array(pair) = reply else {
        panic!("CONFIG GET (RESP2) must reply with an array, got {reply:?}");
    };
    assert_eq!(pair.len(), 2, "{pair:?}");
    assert_eq!(pair[0], bulk("maxmemory"));
    let Value::BulkString(value) = &pair[1] else {
        panic!("value must be a bulk string, got {:?}", pair[1]);
    };
    assert!(std::str::from_utf8(value).unwrap().parse::<u64>().is_ok());
    let none: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("no-such-knob")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(none, Value::Array(vec![]));
}

#[tokio::test]
async fn config_set_of_a_harmless_knob_is_accepted_and_read_back() {
    let node = start().await;
    let mut c = node.conn().await.unwrap();
    let ok: Value = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, Value::Okay);
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(reply, ["maxmemory-policy", "noeviction"]);
    let err = expect_error(&mut c, redis::cmd("CONFIG").arg("SET").arg("nosuch").arg(1)).await;
    assert_eq!(
        err,
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
}
