//! Cluster RPC: framed, versioned, multiplexed, authenticated TCP between
//! nodes.
//!
//! A node calls a peer by address and a one-byte [`ServiceId`]; the peer's
//! [`RpcHandler`] answers with bytes or an [`RpcError`]. One connection per
//! peer address is kept and shared by every call to it: calls carry a request
//! id and their answers may come back in any order. A connection that fails
//! fails the calls waiting on it at once, and the next call dials again.
//!
//! # Wire format
//!
//! A connection opens with a handshake (below): each
//! side sends a six-byte preamble, `"CLNY"` and its protocol version as a
//! big-endian u16, and then frames. Every frame, handshake or not, is
//!
//! ```text
//! length u32 BE | kind u8 | request id u64 BE | service u8 | payload
//! ```
//!
//! where `length` counts the bytes after itself (10 + payload) and may not
//! exceed `max_frame_bytes` (4 KiB until the peer is authenticated). Kinds:
//! 1 request, 2 response, 3 error, 4 Hello, 5 Welcome, 6 Proof. An error
//! frame's payload is a code (1 remote, 2 overloaded, 3 timeout, 4 version
//! mismatch, 5 frame too large, 6 protocol, 7 authentication failed) and its
//! details; with request id 0 it gives the reason the sender is closing the
//! connection.
//!
//! # Handshake
//!
//! ```text
//! client → server   "CLNY" 1 | Hello   { nonce 16 | client id }
//! server → client   "CLNY" 1 | Welcome { nonce 16 | mac("colony rpc server", nonces, ids) | server id }
//! client → server   Proof { mac("colony rpc client", nonces, ids) }
//! ```
//! A server of another version answers its preamble and an error frame naming
//! both versions, then closes. A peer that cannot produce the right MAC is
//! refused: the server closes, the client returns [`RpcError::AuthFailed`]
//! (and, when it is the server's MAC that fails, sends an error frame instead
//! of its proof so that the server's log says why).
//! The whole handshake must finish within `connect_timeout`.
//!
//! See `docs/design/rpc.md` for batching, back-pressure and failure handling.

mod client;
mod error;
mod frame;
mod handshake;
mod server;
mod writer;

#[cfg(test)]
mod tests;

pub use error::RpcError;

use crate::{ClusterSecret, NodeId};
use bytes::Bytes;
use client::Connection;
use frame::HEADER_LEN;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The version of the wire protocol this build speaks. Peers of different
/// versions refuse each other at the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// Which service on the peer a call is for (KV, handoff, anti-entropy, …).
pub type ServiceId = u8;

/// Settings of the RPC layer.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Our node id, sent (and proven) in every handshake.
    pub node: NodeId,
    pub secret: ClusterSecret,
    /// The largest frame sent or accepted, counted after the length prefix.
    pub max_frame_bytes: usize,
    /// Frames that may wait to be written on one connection; beyond it,
    /// calls fail with [`RpcError::Overloaded`] at once.
    pub queue_depth: usize,
    /// Timeout of [`Rpc::call`].
    pub call_timeout: Duration,
    /// Limit on connecting and on the handshake, on either side.
    pub connect_timeout: Duration,
    /// Requests handled at once for one connection; beyond it, requests are
    /// answered [`RpcError::Overloaded`].
    pub max_inflight_per_conn: usize,
}

impl RpcConfig {
    pub fn new(node: NodeId, secret: ClusterSecret) -> Self {
        Self {
            node,
            secret,
            max_frame_bytes: 64 * 1024 * 1024,
            queue_depth: 1024,
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_inflight_per_conn: 1024,
        }
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send + 'static>>;

/// Answers the calls peers make to this node. The requests that arrive
/// together on a connection (those already read when the first is taken)
/// are handed over as one batch and run on one task, each answered as soon
/// as it is done; an `Err` goes back to the caller (`Overloaded` and `Timeout` as
/// themselves, anything else as [`RpcError::Remote`] with its text).
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, service: ServiceId, body: Bytes) -> HandlerFuture;

    /// Requests from `from` that arrived together, in arrival order: one
    /// future per request, in the same order. Called on the task that then
    /// runs the futures, so work done here (handing the requests to their
    /// destination in one go) is the batch's, not the connection's. The
    /// default handles each on its own.
    fn handle_many(&self, from: &NodeId, requests: Vec<(ServiceId, Bytes)>) -> Vec<HandlerFuture> {
        requests
            .into_iter()
            .map(|(service, body)| self.handle(from.clone(), service, body))
            .collect()
    }
}

impl<F, Fut> RpcHandler for F
where
    F: Fn(NodeId, ServiceId, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
{
    fn handle(&self, from: NodeId, service: ServiceId, body: Bytes) -> HandlerFuture {
        Box::pin(self(from, service, body))
    }
}

/// The connection to one peer address, and the lock that lets one caller at
/// a time dial it.
#[derive(Default)]
struct PeerSlot {
    conn: Mutex<Option<Arc<Connection>>>,
    dialing: tokio::sync::Mutex<()>,
}

impl PeerSlot {
    fn live(&self) -> Option<Arc<Connection>> {
        lock(&self.conn).as_ref().filter(|c| c.is_alive()).cloned()
    }
}

/// This node's RPC endpoint: calls peers, and serves them.
pub struct Rpc {
    config: RpcConfig,
    handler: Arc<dyn RpcHandler>,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerSlot>>>,
    /// `colony_rpc_calls_total` per service, registered on first use: a
    /// label built and looked up per call cost about 1% of a node's CPU
    /// under replicated writes.
    calls: Box<[std::sync::OnceLock<metrics::Counter>]>,
}

impl Rpc {
    pub fn new(mut config: RpcConfig, handler: Arc<dyn RpcHandler>) -> Arc<Self> {
        // The length prefix is a u32, and a frame holds at least its header.
        config.max_frame_bytes = config.max_frame_bytes.clamp(HEADER_LEN, u32::MAX as usize);
        Arc::new(Self {
            config,
            handler,
            peers: Mutex::default(),
            calls: (0..=ServiceId::MAX)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        })
    }

    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// Accept and serve peers on `listener` until `shutdown` is cancelled.
    /// The task ends once the listener and every connection are closed.
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(server::accept_loop(self.clone(), listener, shutdown))
    }

    /// Call `service` on the node at `addr`, waiting at most `call_timeout`.
    pub async fn call(
        &self,
        addr: SocketAddr,
        service: ServiceId,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        self.call_timeout(addr, service, body, self.config.call_timeout)
            .await
    }

    /// Call `service` on the node at `addr`, waiting at most `timeout`
    /// (dialling included). One connection per address is kept and shared by
    /// all calls; it is dialled again after it fails.
    pub async fn call_timeout(
        &self,
        addr: SocketAddr,
        service: ServiceId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        self.calls[usize::from(service)]
            .get_or_init(
                || metrics::counter!("colony_rpc_calls_total", "service" => service.to_string()),
            )
            .increment(1);
        let result = tokio::time::timeout(timeout, self.call_now(addr, service, body))
            .await
            .unwrap_or(Err(RpcError::Timeout));
        if let Err(e) = &result {
            error::count_error(e);
        }
        result
    }

    /// Whether a live connection to `addr` is open now.
    pub fn is_connected(&self, addr: SocketAddr) -> bool {
        let slot = lock(&self.peers).get(&addr).cloned();
        slot.is_some_and(|slot| slot.live().is_some())
    }

    /// The node id `addr` proved in its handshake, if connected.
    pub fn peer_node(&self, addr: SocketAddr) -> Option<NodeId> {
        let slot = lock(&self.peers).get(&addr).cloned()?;
        slot.live().map(|c| c.peer().clone())
    }

    async fn call_now(
        &self,
        addr: SocketAddr,
        service: ServiceId,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        let size = HEADER_LEN + body.len();
        if size > self.config.max_frame_bytes {
            return Err(RpcError::FrameTooLarge {
                size,
                max: self.config.max_frame_bytes,
            });
        }
        let conn = self.connection(addr).await?;
        conn.call(service, body).await
    }

    /// The live connection to `addr`, dialled if there is none. Concurrent
    /// callers wait for one dial rather than each opening a connection.
    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, RpcError> {
        let slot = lock(&self.peers).entry(addr).or_default().clone();
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let _dialing = slot.dialing.lock().await;
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let conn = Arc::new(Connection::dial(&self.config, addr).await?);
        *lock(&slot.conn) = Some(conn.clone());
        Ok(conn)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts an open, authenticated connection in `colony_rpc_connections`
/// for as long as it lives.
struct ConnectionGauge;

impl ConnectionGauge {
    fn open() -> Self {
        metrics::gauge!("colony_rpc_connections").increment(1.0);
        Self
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("colony_rpc_connections").decrement(1.0);
    }
}
