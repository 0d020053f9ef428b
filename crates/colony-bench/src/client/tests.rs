use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::resp::{parse_reply, Reply};
use crate::workload::OpKind;

/// A one-connection fake server on loopback: answers each command with
/// `answer(command name)`, or stays silent when that returns `None`.
async fn fake_server(answer: fn(&str) -> Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        loop {
            while let Ok(Some((cmd, used))) = parse_reply(&buf) {
                buf.drain(..used);
                let Reply::Array(Some(args)) = cmd else {
                    return;
                };
                let name = args.first().and_then(Reply::as_text).unwrap_or_default();
                if let Some(reply) = answer(&name) {
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            if matches!(sock.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
    });
    addr
}

async fn client_for(addr: String) -> Client {
    let cfg = Arc::new(ClientConfig {
        seed_addr: addr,
        cluster: false,
        connect_timeout: Duration::from_secs(2),
        reply_timeout: Duration::from_millis(300),
    });
    Client::new(cfg, Arc::new(Payload::new("k:", 4)))
        .await
        .expect("single-node client needs no setup")
}

fn op(kind: OpKind, key: u64) -> Op {
    Op { kind, key, sub: 0 }
}

#[tokio::test]
async fn a_pipelined_batch_gets_one_outcome_per_op_in_order() {
    let addr = fake_server(|name| match name {
        "GET" => Some("-WRONGTYPE not a string\r\n"),
        _ => Some("+OK\r\n"),
    })
    .await;
    let mut client = client_for(addr).await;
    client
        .connect_all()
        .await
        .expect("fake server answers PING");
    let ops = [op(OpKind::Set, 1), op(OpKind::Get, 2), op(OpKind::Set, 3)];
    let mut out = Vec::new();
    client.execute(&ops, &mut out).await;
    let outcomes: Vec<Outcome> = out.into_iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Ok,
            Outcome::Error("WRONGTYPE not a string".into()),
            Outcome::Ok
        ]
    );
}

#[tokio::test]
async fn a_silent_server_times_out_and_the_connection_is_replaced() {
    let addr = fake_server(|name| (name == "PING").then_some("+PONG\r\n")).await;
    let mut client = client_for(addr).await;
    client
        .connect_all()
        .await
        .expect("fake server answers PING");
    let mut out = Vec::new();
    client.execute(&[op(OpKind::Get, 1)], &mut out).await;
    assert_eq!(out[0].outcome, Outcome::Failed("timeout"));
    assert!(
        client.nodes[0].conn.is_none(),
        "a timed-out pipeline is not reused"
    );
}
