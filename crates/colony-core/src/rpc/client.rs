//! The calling side of one connection: requests go out through the writer
//! task, answers come back on a reader task and are matched to their callers
//! by request id. When either task ends, every call still waiting is failed
//! at once, and the connection is marked dead so the next call re-dials.

use super::error::decode_error;
use super::frame::{Frame, FrameKind, FrameReader, ReadEnd};
use super::writer::run_writer;
use super::{handshake, RpcConfig, RpcError, ServiceId, PROTOCOL_VERSION};
use crate::NodeId;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type Reply = Result<Bytes, RpcError>;

/// Calls waiting for their answer on one connection.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection is dead; no call may be added after that.
    dead: Option<RpcError>,
}

/// What the caller-facing handle and the two tasks share.
struct Shared {
    addr: SocketAddr,
    pending: Mutex<Pending>,
    /// Cancelled when the connection dies (either task ended) or the handle
    /// is dropped; stops both tasks.
    closed: CancellationToken,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mark the connection dead and fail every call waiting on it with `error`.
    fn fail_all(&self, error: RpcError) {
        let calls = {
            let mut pending = self.pending();
            if pending.dead.is_none() {
                pending.dead = Some(error.clone());
            }
            std::mem::take(&mut pending.calls)
        };
        if !calls.is_empty() {
            tracing::debug!(peer = %self.addr, calls = calls.len(), %error, "rpc connection died with calls in flight");
        }
        for (_, reply) in calls {
            let _ = reply.send(Err(error.clone()));
        }
        self.closed.cancel();
    }
}

/// A live (or dead, awaiting replacement) connection to one peer address.
pub(crate) struct Connection {
    peer: NodeId,
    tx: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.closed.cancel();
    }
}

impl Connection {
    /// Dial `addr`, run the handshake (both within `connect_timeout`) and
    /// start the connection's tasks.
    pub async fn dial(config: &RpcConfig, addr: SocketAddr) -> Result<Self, RpcError> {
        let opened = tokio::time::timeout(config.connect_timeout, async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| RpcError::Unreachable(format!("{addr}: {e}")))?;
            // Frames are gathered by the writer; Nagle would only add delay.
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let established = handshake::client(config, addr, read, &mut write).await?;
            Ok::<_, RpcError>((established, write))
        })
        .await
        .map_err(|_| {
            RpcError::Unreachable(format!(
                "{addr}: no handshake within {:?}",
                config.connect_timeout
            ))
        })?;
        let (established, write) = opened?;
        tracing::debug!(peer = %addr, node = %established.peer, "rpc connection opened");

        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let shared = Arc::new(Shared {
            addr,
            pending: Mutex::default(),
            closed: CancellationToken::new(),
        });
        let writer_shared = shared.clone();
        let batch = config.queue_depth;
        tokio::spawn(async move {
            let end = run_writer(write, rx, writer_shared.closed.clone(), batch).await;
            tracing::debug!(peer = %writer_shared.addr, ?end, "rpc connection writer ended");
            writer_shared.fail_all(RpcError::Closed);
        });
        tokio::spawn(read_answers(established.reader, shared.clone()));
        Ok(Self {
            peer: established.peer,
            tx,
            shared,
            next_id: AtomicU64::new(1),
        })
    }

    pub fn is_alive(&self) -> bool {
        !self.shared.closed.is_cancelled()
    }

    /// The node id the peer proved in the handshake.
    pub fn peer(&self) -> &NodeId {
        &self.peer
    }

    /// Queue a request and wait for its answer. Never waits for queue room:
    /// a full queue is `Overloaded` at once.
    pub async fn call(&self, service: ServiceId, body: Bytes) -> Reply {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut pending = self.shared.pending();
            if let Some(dead) = &pending.dead {
                return Err(dead.clone());
            }
            pending.calls.insert(request_id, reply);
        }
        // From here on, leaving this function (answered, failed, or dropped
        // by a caller's timeout) forgets the call.
        let _forget = Forget {
            shared: &self.shared,
            request_id,
        };
        let frame = Frame {
            kind: FrameKind::Request,
            request_id,
            service,
            payload: body,
        };
        match self.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("colony_rpc_overload_refusals_total", "where" => "send_queue")
                    .increment(1);
                return Err(RpcError::Overloaded);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(RpcError::Closed),
        }
        answer.await.unwrap_or(Err(RpcError::Closed))
    }
}

/// Removes a call from the pending table when its caller stops waiting.
struct Forget<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.pending().calls.remove(&self.request_id);
    }
}

/// The reader task: deliver answers until the connection ends, then fail
/// whatever is still waiting.
async fn read_answers(mut reader: FrameReader<OwnedReadHalf>, shared: Arc<Shared>) {
    let _gauge = super::ConnectionGauge::open();
    let error = loop {
        let frame = tokio::select! {
            _ = shared.closed.cancelled() => break RpcError::Closed,
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(ReadEnd::Eof) => break RpcError::Closed,
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(peer = %shared.addr, error = %e, "rpc connection failed");
                break RpcError::Closed;
            }
            Err(ReadEnd::Bad(e)) => {
                tracing::warn!(peer = %shared.addr, error = %e, "rpc peer sent a bad frame; closing");
                super::error::count_error(&e);
                break e;
            }
        };
        let reply = match frame.kind {
            FrameKind::Response => Ok(frame.payload),
            // Request id 0 is never used by a call: it is the reason the
            // peer is closing the connection.
            FrameKind::Error if frame.request_id == 0 => {
                let e = decode_error(&frame.payload, PROTOCOL_VERSION);
                tracing::warn!(peer = %shared.addr, error = %e, "rpc peer closed the connection");
                break e;
            }
            FrameKind::Error => Err(decode_error(&frame.payload, PROTOCOL_VERSION)),
            other => {
                break RpcError::Protocol(format!(
                    "{} sent a {other:?} frame on a calling connection",
                    shared.addr
                ));
            }
        };
        let waiting = shared.pending().calls.remove(&frame.request_id);
        // No one waiting: the caller gave up (timeout) before the answer came.
        if let Some(waiting) = waiting {
            let _ = waiting.send(reply);
        }
    };
    shared.fail_all(error);
}
