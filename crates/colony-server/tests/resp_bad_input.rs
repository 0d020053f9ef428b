//! Hostile and unusual input on raw sockets: malformed frames are refused with
//! Redis's protocol errors and the connection closed, limits hold, inline commands
//! work, and garbage never takes the server down for anyone else.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use colony_testkit::{colony_only, seeded_bytes, target_from_env, Node, NodeOptions, RawConn};

const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

async fn start() -> Node {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    Node::start(NodeOptions::new(target)).await.unwrap()
}

async fn ping(conn: &mut RawConn) -> Vec<u8> {
    conn.command(&[b"PING"]).await.unwrap()
}

/// Send `bytes` on a fresh connection; return everything received until the server
/// closed it (failing if it does not close).
async fn refused(node: &Node, bytes: &[u8]) -> String {
    let mut conn = node.raw().await.unwrap();
    conn.send(bytes).await.unwrap();
    let reply = conn.read_until_closed(CLOSE_DEADLINE).await.unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn a_malformed_bulk_length_is_refused_and_closes_only_that_connection() {
    let node = start().await;
    let mut bystander = node.raw().await.unwrap();
    assert_eq!(ping(&mut bystander).await, b"+PONG\r\n");
    let reply = refused(&node, b"*1\r\n$abc\r\n").await;
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(ping(&mut bystander).await, b"+PONG\r\n");
}

#[tokio::test]
async fn a_multibulk_count_beyond_32_bits_is_refused() {
    let node = start().await;
    for count in ["4294967296", "2147483648", "abc"] {
        let reply = refused(&node, format!("*{count}\r\n").as_bytes()).await;
        assert_eq!(
            reply, "-ERR Protocol error: invalid multibulk length\r\n",
            "*{count}"
        );
    }
}

#[tokio::test]
async fn a_multibulk_count_over_colonys_limit_is_refused() {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    if colony_only(
        &target,
        "Redis accepts up to 2^31-1 elements and waits for them",
    ) {
        return;
    }
    let node = start().await;
    let reply = refused(&node, b"*99999999\r\n").await;
    assert_eq!(reply, "-ERR Protocol error: invalid multibulk length\r\n");
}

#[tokio::test]
async fn a_bulk_length_over_512_mb_is_refused() {
    let node = start().await;
    let reply = refused(&node, b"*1\r\n$600000000\r\n").await;
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    let reply = refused(&node, b"*2\r\n$3\r\nGET\r\n$-5\r\n").await;
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
}

#[tokio::test]
async fn a_multibulk_element_that_is_not_a_bulk_string_is_refused() {
    let node = start().await;
    let reply = refused(&node, b"*1\r\n+PING\r\n").await;
    assert_eq!(reply, "-ERR Protocol error: expected '$', got '+'\r\n");
}

#[tokio::test]
async fn inline_commands_are_executed_with_quoting() {
    let node = start().await;
    let mut conn = node.raw().await.unwrap();
    conn.send(b"PING\r\n").await.unwrap();
    assert_eq!(conn.read_reply().await.unwrap(), b"+PONG\r\n");
    conn.send(b"PING\n").await.unwrap();
    assert_eq!(
        conn.read_reply().await.unwrap(),
        b"+PONG\r\n",
        "a bare LF ends a line too"
    );
    conn.send(b"SET k \"a b\"\r\nGET k\r\n").await.unwrap();
    assert_eq!(conn.read_reply().await.unwrap(), b"+OK\r\n");
    assert_eq!(conn.read_reply().await.unwrap(), b"$3\r\na b\r\n");
    conn.send(b"\r\n\r\nECHO hello\r\n").await.unwrap();
    assert_eq!(
        conn.read_reply().await.unwrap(),
        b"$5\r\nhello\r\n",
        "empty lines are skipped"
    );
}

#[tokio::test]
async fn empty_multibulks_are_ignored() {
    let node = start().await;
    let mut conn = node.raw().await.unwrap();
    conn.send(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_reply().await.unwrap(), b"+PONG\r\n");
}

#[tokio::test]
async fn an_inline_line_longer_than_64_kib_is_refused() {
    let node = start().await;
    let reply = refused(&node, &vec![b'A'; 70_000]).await;
    assert_eq!(reply, "-ERR Protocol error: too big inline request\r\n");
}

#[tokio::test]
async fn unbalanced_quotes_in_an_inline_command_are_refused() {
    let node = start().await;
    let reply = refused(&node, b"PING \"unbalanced\r\n").await;
    assert_eq!(
        reply,
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[tokio::test]
async fn a_protocol_error_after_valid_commands_still_answers_them_first() {
    let node = start().await;
    let reply = refused(&node, b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n").await;
    assert_eq!(
        reply,
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
}

/// Seeded garbage: pure noise, and noise after a plausible frame prefix, on several
/// connections at once. Each connection half-closes after sending, so the server
/// sees the end of input and must close its side.
#[tokio::test]
async fn random_garbage_on_many_connections_never_takes_the_server_down() {
    let node = start().await;
    let mut bystander = node.raw().await.unwrap();
    let prefixes: [&[u8]; 4] = [b"", b"*3\r\n$3\r\nSET\r\n", b"*2\r\n$", b"GET "];
    let mut tasks = Vec::new();
    for seed in 0..16u64 {
        let prefix = prefixes[(seed % 4) as usize];
        let mut payload = prefix.to_vec();
        payload.extend(seeded_bytes(seed, 512 + 512 * seed as usize));
        let addr = node.resp_addr();
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await.unwrap();
            // The server may close mid-write after a protocol error; that is fine.
            let _ = conn.send(&payload).await;
            let _ = conn.shutdown_write().await;
            let closed = conn.read_until_closed(CLOSE_DEADLINE).await;
            assert!(
                !matches!(closed, Err(ref e) if e.kind() == std::io::ErrorKind::TimedOut),
                "seed {seed}: server kept the connection open after end of input"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(ping(&mut bystander).await, b"+PONG\r\n");
    let mut fresh = node.raw().await.unwrap();
    assert_eq!(ping(&mut fresh).await, b"+PONG\r\n");
}

#[tokio::test]
async fn values_over_max_value_bytes_are_refused_and_the_connection_survives() {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    if colony_only(&target, "--max-value-bytes is a Colony flag") {
        return;
    }
    let opts = NodeOptions::new(target)
        .arg("--max-value-bytes")
        .arg("1024");
    let node = Node::start(opts).await.unwrap();
    let mut conn = node.raw().await.unwrap();
    let at_limit = vec![b'x'; 1024];
    let over_limit = vec![b'x'; 1025];
    assert_eq!(
        conn.command(&[b"SET", b"fits", &at_limit]).await.unwrap(),
        b"+OK\r\n"
    );
    let reply = conn.command(&[b"SET", b"big", &over_limit]).await.unwrap();
    assert!(
        reply.starts_with(b"-ERR "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(conn.command(&[b"EXISTS", b"big"]).await.unwrap(), b":0\r\n");
    let reply = conn.command(&[b"APPEND", b"fits", b"y"]).await.unwrap();
    assert!(
        reply.starts_with(b"-ERR "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        conn.command(&[b"STRLEN", b"fits"]).await.unwrap(),
        b":1024\r\n"
    );
    assert_eq!(ping(&mut conn).await, b"+PONG\r\n");
}
