//! Real sockets on 127.0.0.1. No test waits a fixed time for something to
//! happen: they wait for a signal (a handler started, a connection noticed
//! closed), and timeouts only guard against hangs.

use super::error::{decode_error, encode_error};
use super::frame::{decode, Frame, FrameKind};
use super::handshake::{preamble, CLIENT_LABEL, SERVER_LABEL};
use super::*;
use bytes::BytesMut;
use std::future::poll_fn;
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

const ECHO: ServiceId = 1;
/// Echoes after yielding a number of times taken from the body, so that
/// concurrent calls finish out of order.
const SHUFFLE: ServiceId = 2;
const FAIL: ServiceId = 3;
const BUSY: ServiceId = 4;
const ODD: ServiceId = 5;
/// Signals `started`, then waits for a permit of `gate`.
const BLOCK: ServiceId = 6;
const PANIC: ServiceId = 7;
const WHO: ServiceId = 8;

/// Guards against hangs only; never a measure of speed.
const HANG: Duration = Duration::from_secs(5);

struct TestHandler {
    started: mpsc::UnboundedSender<()>,
    gate: Arc<Semaphore>,
    /// The size of every batch handed over, in order.
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl RpcHandler for TestHandler {
    fn handle_many(&self, from: &NodeId, requests: Vec<(ServiceId, Bytes)>) -> Vec<HandlerFuture> {
        self.batches.lock().unwrap().push(requests.len());
        requests
            .into_iter()
            .map(|(service, body)| self.handle(from.clone(), service, body))
            .collect()
    }

    fn handle(&self, from: NodeId, service: ServiceId, body: Bytes) -> HandlerFuture {
        let started = self.started.clone();
        let gate = self.gate.clone();
        Box::pin(async move {
            match service {
                ECHO => Ok(body),
                SHUFFLE => {
                    for _ in 0..body.first().map_or(0, |b| b % 8) {
                        tokio::task::yield_now().await;
                    }
                    Ok(body)
                }
                FAIL => Err(RpcError::Remote("boom".into())),
                BUSY => Err(RpcError::Overloaded),
                ODD => Err(RpcError::Protocol("odd request".into())),
                BLOCK => {
                    let _ = started.send(());
                    let _permit = gate.acquire().await;
                    Ok(body)
                }
                PANIC => panic!("a handler bug"),
                WHO => Ok(Bytes::from(from.as_str().to_owned())),
                _ => Err(RpcError::Remote("no such service".into())),
            }
        })
    }
}

/// A serving node.
struct Node {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    started: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Node {
    async fn start(config: RpcConfig) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(config: RpcConfig, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (rpc, started, gate, batches) = endpoint(config);
        // The serving task keeps `rpc` alive.
        let shutdown = CancellationToken::new();
        let task = rpc.serve(listener, shutdown.clone());
        Self {
            addr,
            shutdown,
            task,
            started,
            gate,
            batches,
        }
    }

    /// Stop serving; returns once the listener and all connections are closed.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(HANG, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

type Endpoint = (
    Arc<Rpc>,
    mpsc::UnboundedReceiver<()>,
    Arc<Semaphore>,
    Arc<std::sync::Mutex<Vec<usize>>>,
);

fn endpoint(config: RpcConfig) -> Endpoint {
    let (tx, started) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let batches = Arc::default();
    let handler = TestHandler {
        started: tx,
        gate: gate.clone(),
        batches: Arc::clone(&batches),
    };
    (Rpc::new(config, Arc::new(handler)), started, gate, batches)
}

fn config(name: &str) -> RpcConfig {
    let mut config = RpcConfig::new(NodeId::new(name), secret());
    config.connect_timeout = Duration::from_secs(1);
    config.call_timeout = Duration::from_secs(3);
    config
}

fn secret() -> ClusterSecret {
    ClusterSecret::from_passphrase("test cluster")
}

/// A node that only calls.
fn caller(config: RpcConfig) -> Arc<Rpc> {
    endpoint(config).0
}

#[tokio::test]
async fn call_round_trips_and_the_peer_proves_who_it_is() {
    let server = Node::start(config("server")).await;
    let client = caller(config("client"));
    let answer = client
        .call(server.addr, ECHO, Bytes::from_static(b"hello"))
        .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"hello"));
    let who = client.call(server.addr, WHO, Bytes::new()).await.unwrap();
    assert_eq!(who, Bytes::from_static(b"client"));
    assert_eq!(client.peer_node(server.addr), Some(NodeId::new("server")));
    assert!(client.is_connected(server.addr));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_on_one_connection_get_their_own_answers() {
    let server = Node::start(config("server")).await;
    let client = caller(config("client"));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0u32..1000 {
        let client = client.clone();
        let addr = server.addr;
        calls.spawn(async move {
            let body = Bytes::copy_from_slice(&i.to_le_bytes());
            (i, client.call(addr, SHUFFLE, body).await)
        });
    }
    let mut answered = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, answer) = joined.unwrap();
        assert_eq!(answer.unwrap().as_ref(), i.to_le_bytes(), "call {i}");
        answered += 1;
    }
    assert_eq!(answered, 1000);
    server.stop().await;
}

#[tokio::test]
async fn a_peer_without_the_secret_is_refused_and_others_are_still_served() {
    let server = Node::start(config("server")).await;
    let mut intruder = config("intruder");
    intruder.secret = ClusterSecret::from_passphrase("wrong");
    let intruder = caller(intruder);
    let refused = intruder.call(server.addr, ECHO, Bytes::new()).await;
    assert!(
        matches!(&refused, Err(RpcError::AuthFailed(msg)) if msg.contains(&server.addr.to_string())),
        "{refused:?}"
    );

    // A client that skips checking and forges its proof: the server hangs up.
    let mut raw = raw_handshake(server.addr, &ClusterSecret::from_passphrase("wrong")).await;
    assert_eq!(
        read_frame(&mut raw).await,
        None,
        "server kept a forged peer"
    );

    let client = caller(config("client"));
    let answer = client
        .call(server.addr, ECHO, Bytes::from_static(b"ok"))
        .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"ok"));
    server.stop().await;
}

#[tokio::test]
async fn a_server_refuses_another_protocol_version_saying_which() {
    let server = Node::start(config("server")).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&preamble(99)).await.unwrap();
    let mut theirs = [0u8; 6];
    raw.read_exact(&mut theirs).await.unwrap();
    assert_eq!(theirs, preamble(PROTOCOL_VERSION));
    let refusal = read_frame(&mut raw).await.unwrap();
    assert_eq!(refusal.kind, FrameKind::Error);
    assert_eq!(
        decode_error(&refusal.payload, 99),
        RpcError::VersionMismatch {
            ours: 99,
            theirs: PROTOCOL_VERSION
        }
    );
    let text = String::from_utf8_lossy(&refusal.payload);
    assert!(text.contains("version 1") && text.contains("99"), "{text}");
    assert_eq!(read_frame(&mut raw).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_client_reports_a_server_of_another_version() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let future_server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).await.unwrap();
        let refusal = RpcError::VersionMismatch {
            ours: 99,
            theirs: 1,
        };
        let mut out = BytesMut::from(&preamble(99)[..]);
        let frame = Frame::control(FrameKind::Error, encode_error(&refusal));
        out.extend_from_slice(&frame.encode().unwrap());
        s.write_all(&out).await.unwrap();
        let _ = s.read_to_end(&mut Vec::new()).await;
    });
    let client = caller(config("client"));
    let answer = client.call(addr, ECHO, Bytes::new()).await;
    assert_eq!(
        answer,
        Err(RpcError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 99
        })
    );
    future_server.await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    let mut small = config("server");
    small.max_frame_bytes = 1024;
    let server = Node::start(small).await;

    // Refused before sending when over the caller's own limit.
    let mut strict = config("strict");
    strict.max_frame_bytes = 1024;
    let strict = caller(strict);
    let answer = strict
        .call(server.addr, ECHO, Bytes::from(vec![0; 2048]))
        .await;
    assert_eq!(
        answer,
        Err(RpcError::FrameTooLarge {
            size: 2058,
            max: 1024
        })
    );

    // Over the server's limit: it says so and closes that connection.
    let client = caller(config("client"));
    let answer = client
        .call(server.addr, ECHO, Bytes::from(vec![0; 2048]))
        .await;
    assert_eq!(
        answer,
        Err(RpcError::FrameTooLarge {
            size: 2058,
            max: 1024
        })
    );

    // A length prefix claiming a gigabyte, from an authenticated peer.
    let mut raw = raw_handshake(server.addr, &secret()).await;
    raw.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let refusal = read_frame(&mut raw).await.unwrap();
    assert_eq!((refusal.kind, refusal.request_id), (FrameKind::Error, 0));
    assert_eq!(
        decode_error(&refusal.payload, PROTOCOL_VERSION),
        RpcError::FrameTooLarge {
            size: 1 << 30,
            max: 1024
        }
    );
    assert_eq!(read_frame(&mut raw).await, None);

    // The server, and the next call (on a new connection), are fine.
    let answer = client
        .call(server.addr, ECHO, Bytes::from_static(b"small"))
        .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"small"));
    server.stop().await;
}

#[tokio::test]
async fn calls_in_flight_fail_at_once_when_the_peer_goes_away() {
    let mut server = Node::start(config("server")).await;
    let client = caller(config("client"));
    let addr = server.addr;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            let long = Duration::from_secs(60);
            client.call_timeout(addr, BLOCK, Bytes::new(), long).await
        }
    });
    server.started.recv().await.unwrap();
    server.stop().await;
    let answer = tokio::time::timeout(HANG, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, Err(RpcError::Closed));
    let answer = client.call(addr, ECHO, Bytes::new()).await;
    assert!(
        matches!(answer, Err(RpcError::Unreachable(_))),
        "{answer:?}"
    );
}

#[tokio::test]
async fn handler_errors_come_back_to_the_caller() {
    let server = Node::start(config("server")).await;
    let client = caller(config("client"));
    let call = |service| client.call(server.addr, service, Bytes::new());
    assert_eq!(call(FAIL).await, Err(RpcError::Remote("boom".into())));
    assert_eq!(call(BUSY).await, Err(RpcError::Overloaded));
    let odd = call(ODD).await;
    assert!(
        matches!(&odd, Err(RpcError::Remote(m)) if m.contains("odd request")),
        "{odd:?}"
    );
    let panicked = call(PANIC).await;
    assert!(
        matches!(&panicked, Err(RpcError::Remote(m)) if m.contains("panicked")),
        "{panicked:?}"
    );
    assert_eq!(call(ECHO).await, Ok(Bytes::new()));
    server.stop().await;
}

/// Requests that arrive together are handed over as one batch; each is
/// answered on its own (a panic fails its request only), those beyond the
/// in-flight limit are refused, and a bad frame behind them closes the
/// connection only after the requests before it are answered.
#[tokio::test]
async fn requests_that_arrive_together_are_served_as_one_batch() {
    let mut three = config("server");
    three.max_inflight_per_conn = 3;
    let server = Node::start(three).await;
    let mut raw = raw_handshake(server.addr, &secret()).await;
    let request = |id, service, body: &'static [u8]| Frame {
        kind: FrameKind::Request,
        request_id: id,
        service,
        payload: Bytes::from_static(body),
    };
    let mut out = BytesMut::new();
    for frame in [
        request(1, ECHO, b"one"),
        request(2, PANIC, b""),
        request(3, SHUFFLE, b"\x05three"),
        request(4, ECHO, b"four"),
    ] {
        out.extend_from_slice(&frame.encode().unwrap());
    }
    let stray = Frame::control(FrameKind::Response, Bytes::from_static(b"stray"));
    out.extend_from_slice(&stray.encode().unwrap());
    // One write: the server reads all five frames at once.
    raw.write_all(&out).await.unwrap();

    let mut answers = std::collections::BTreeMap::new();
    let closing = loop {
        let frame = tokio::time::timeout(HANG, read_frame(&mut raw))
            .await
            .unwrap()
            .expect("the connection closed before the reason");
        if frame.request_id == 0 {
            break frame;
        }
        answers.insert(frame.request_id, frame);
    };
    assert_eq!(
        *server.batches.lock().unwrap(),
        vec![3],
        "one batch, of the requests the in-flight limit lets in"
    );
    assert_eq!(answers[&1].payload, Bytes::from_static(b"one"));
    assert_eq!(answers[&3].payload, Bytes::from_static(b"\x05three"));
    let panicked = decode_error(&answers[&2].payload, PROTOCOL_VERSION);
    assert!(
        matches!(&panicked, RpcError::Remote(m) if m.contains("panicked")),
        "{panicked:?}"
    );
    assert_eq!(answers[&4].kind, FrameKind::Error);
    assert_eq!(
        decode_error(&answers[&4].payload, PROTOCOL_VERSION),
        RpcError::Overloaded
    );
    assert_eq!(answers.len(), 4);
    assert!(
        matches!(
            decode_error(&closing.payload, PROTOCOL_VERSION),
            RpcError::Protocol(m) if m.contains("Response")
        ),
        "the stray frame closes the connection"
    );
    assert_eq!(read_frame(&mut raw).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_full_send_queue_fails_the_call_at_once() {
    let server = Node::start(config("server")).await;
    let mut tiny = config("client");
    tiny.queue_depth = 1;
    let client = caller(tiny);
    client.call(server.addr, ECHO, Bytes::new()).await.unwrap();

    // Queue one call, then, before the writer task can run (this runtime
    // has one thread and we do not yield), try another.
    let mut first = Box::pin(client.call(server.addr, BLOCK, Bytes::from_static(b"1")));
    poll_fn(|cx| {
        assert!(first.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    let second = client.call(server.addr, ECHO, Bytes::new()).await;
    assert_eq!(second, Err(RpcError::Overloaded));

    server.gate.add_permits(1);
    assert_eq!(first.await.unwrap(), Bytes::from_static(b"1"));
    server.stop().await;
}

#[tokio::test]
async fn a_server_answers_overloaded_beyond_its_requests_in_flight() {
    let mut one = config("server");
    one.max_inflight_per_conn = 1;
    let mut server = Node::start(one).await;
    let client = caller(config("client"));
    let addr = server.addr;
    let blocked = tokio::spawn({
        let client = client.clone();
        async move { client.call(addr, BLOCK, Bytes::new()).await }
    });
    server.started.recv().await.unwrap();
    assert_eq!(
        client.call(addr, ECHO, Bytes::new()).await,
        Err(RpcError::Overloaded)
    );
    server.gate.add_permits(1);
    assert_eq!(blocked.await.unwrap(), Ok(Bytes::new()));
    assert_eq!(
        client.call(addr, ECHO, Bytes::new()).await,
        Ok(Bytes::new())
    );
    server.stop().await;
}

#[tokio::test]
async fn the_next_call_redials_after_the_server_restarts() {
    let server = Node::start(config("server")).await;
    let addr = server.addr;
    let client = caller(config("client"));
    client.call(addr, ECHO, Bytes::new()).await.unwrap();
    server.stop().await;
    tokio::time::timeout(HANG, async {
        while client.is_connected(addr) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();

    let again = Node::start_on(config("server"), addr).await;
    let answer = client.call(addr, ECHO, Bytes::from_static(b"back")).await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"back"));
    again.stop().await;
}

#[tokio::test]
async fn a_silent_peer_cannot_hold_a_handshake_open() {
    let mut quick = config("server");
    quick.connect_timeout = Duration::from_millis(100);
    let server = Node::start(quick.clone()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let hung_up = tokio::time::timeout(HANG, silent.read(&mut [0u8; 16])).await;
    assert_eq!(hung_up.unwrap().unwrap(), 0);

    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    quick.node = NodeId::new("client");
    let answer = caller(quick).call(mute_addr, ECHO, Bytes::new()).await;
    assert!(
        matches!(answer, Err(RpcError::Unreachable(_))),
        "{answer:?}"
    );
    drop(mute);
    server.stop().await;
}

#[test]
fn frames_round_trip_and_lengths_are_checked_before_buffering() {
    let frame = Frame {
        kind: FrameKind::Request,
        request_id: 42,
        service: 7,
        payload: Bytes::from_static(b"body"),
    };
    let mut buf = frame.encode().unwrap();
    let mut partial = buf.split_to(5);
    assert_eq!(decode(&mut partial, 1024), Ok(None));
    partial.unsplit(buf);
    assert_eq!(decode(&mut partial, 1024), Ok(Some(frame)));
    assert!(partial.is_empty());

    let mut claim = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let refused = decode(&mut claim, 1024);
    assert!(
        matches!(refused, Err(RpcError::FrameTooLarge { max: 1024, .. })),
        "{refused:?}"
    );
    let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 0, 0][..]);
    assert!(matches!(
        decode(&mut short, 1024),
        Err(RpcError::Protocol(_))
    ));
}

#[test]
fn error_frames_round_trip() {
    for error in [
        RpcError::Remote("x".into()),
        RpcError::Overloaded,
        RpcError::Timeout,
        RpcError::FrameTooLarge { size: 9, max: 8 },
        RpcError::Protocol("p".into()),
        RpcError::AuthFailed("a".into()),
    ] {
        assert_eq!(decode_error(&encode_error(&error), PROTOCOL_VERSION), error);
    }
    let closed = RpcError::Closed;
    assert_eq!(
        decode_error(&encode_error(&closed), PROTOCOL_VERSION),
        RpcError::Remote(closed.to_string())
    );
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>, max in 0usize..4096) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = decode(&mut buf, max) {
            proptest::prop_assert!(frame.payload.len() + 10 <= max);
        }
        let _ = decode_error(&bytes, PROTOCOL_VERSION);
    }
}

/// Open a connection by hand and send a proof made with `secret` (the
/// server's, or a wrong one); returns the stream after the proof.
async fn raw_handshake(addr: SocketAddr, proof_secret: &ClusterSecret) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let nonce = [7u8; 16];
    let me = b"raw";
    let hello = Frame::control(FrameKind::Hello, Bytes::from([&nonce[..], me].concat()));
    let mut out = BytesMut::from(&preamble(PROTOCOL_VERSION)[..]);
    out.extend_from_slice(&hello.encode().unwrap());
    s.write_all(&out).await.unwrap();
    let mut theirs = [0u8; 6];
    s.read_exact(&mut theirs).await.unwrap();
    let welcome = read_frame(&mut s).await.unwrap();
    assert_eq!(welcome.kind, FrameKind::Welcome);
    let (server_nonce, rest) = welcome.payload.split_at(16);
    let (server_tag, server_id) = rest.split_at(32);
    let parts: [&[u8]; 5] = [SERVER_LABEL, &nonce, server_nonce, server_id, me];
    assert!(secret().verify(&parts, server_tag), "server's welcome");
    let proof = proof_secret.mac(&[CLIENT_LABEL, &nonce, server_nonce, me, server_id]);
    let proof = Frame::control(FrameKind::Proof, Bytes::copy_from_slice(&proof));
    s.write_all(&proof.encode().unwrap()).await.unwrap();
    s
}

/// Read exactly one frame (nothing more) off `s`; `None` at a clean end.
async fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("read failed: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut buf = BytesMut::from(&len[..]);
    buf.extend_from_slice(&body);
    decode(&mut buf, usize::MAX).unwrap()
}
