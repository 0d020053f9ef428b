//! The gossip transport: UDP datagrams that prove knowledge of the cluster
//! secret.
//!
//! Every datagram is `payload ‖ tag`, where `payload` is chitchat's own
//! encoding of the envelope and `tag` is the 32-byte MAC of the cluster secret
//! over `["gossip", payload]`. A datagram whose tag is missing or wrong is
//! dropped before chitchat sees it, so a process without the secret can
//! neither join nor inject state. Replaying an old datagram is harmless:
//! chitchat versions only move forward, so stale state is ignored. Nothing is
//! encrypted: gossip carries addresses and ring digests, no user data.

use super::codec::{Decoder, Encoder, MAX_DATAGRAM};
use crate::{ClusterSecret, NodeId};
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

/// Length of the MAC appended to every datagram.
pub const TAG_LEN: usize = 32;
/// Domain separation: this key also authenticates RPC handshakes.
const DOMAIN: &[u8] = b"gossip";
/// Authenticated envelopes waiting for chitchat; the reader waits when full,
/// and the kernel buffer (then the network) absorbs the rest.
const INBOUND_CAPACITY: usize = 256;
/// Rejections are logged at debug level each, at warn level at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A chitchat [`Transport`] over UDP whose datagrams carry a MAC of the
/// cluster secret.
pub struct AuthUdpTransport {
    secret: ClusterSecret,
    node: NodeId,
    bound: Mutex<Option<UdpSocket>>,
    rejected: Arc<AtomicU64>,
    tasks: TaskTracker,
}

impl AuthUdpTransport {
    /// `node` only labels metrics and logs.
    pub fn new(secret: ClusterSecret, node: NodeId) -> Self {
        Self {
            secret,
            node,
            bound: Mutex::new(None),
            rejected: Arc::new(AtomicU64::new(0)),
            tasks: TaskTracker::new(),
        }
    }

    /// Use an already bound socket when asked to open its address (so that
    /// a node bound to port 0 knows its port before chitchat starts).
    pub(crate) fn with_socket(self, socket: UdpSocket) -> Self {
        *self.bound.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
        self
    }

    /// Datagrams dropped so far by the sockets this transport opened.
    pub(crate) fn rejected_counter(&self) -> Arc<AtomicU64> {
        self.rejected.clone()
    }

    /// The reader tasks of the sockets this transport opened.
    pub(crate) fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    async fn bind(&self, listen_addr: SocketAddr) -> anyhow::Result<UdpSocket> {
        let prebound = {
            let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
            match bound.take() {
                Some(socket) if socket.local_addr().ok() == Some(listen_addr) => Some(socket),
                other => {
                    *bound = other;
                    None
                }
            }
        };
        match prebound {
            Some(socket) => Ok(socket),
            None => UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("binding {listen_addr}/udp for gossip")),
        }
    }
}

#[async_trait]
impl Transport for AuthUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = Arc::new(self.bind(listen_addr).await?);
        let local_addr = socket.local_addr()?;
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
        let reader = Reader {
            socket: socket.clone(),
            secret: self.secret.clone(),
            decoder: Decoder::open().await?,
            inbound: inbound_tx,
            node: self.node.to_string(),
            rejected: self.rejected.clone(),
            log: RejectLog::default(),
        };
        let reader = self.tasks.spawn(reader.run()).abort_handle();
        Ok(Box::new(AuthUdpSocket {
            socket,
            local_addr,
            secret: self.secret.clone(),
            encoder: Encoder::open().await?,
            inbound,
            reader,
            node: self.node.to_string(),
            out: Vec::with_capacity(MAX_DATAGRAM),
        }))
    }
}

/// The socket chitchat gossips through. Receiving happens on a reader task
/// (so that `recv`, which chitchat cancels every gossip round, only waits on
/// a channel); sending happens inline.
struct AuthUdpSocket {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    secret: ClusterSecret,
    encoder: Encoder,
    inbound: mpsc::Receiver<RecvOutcome>,
    reader: AbortHandle,
    node: String,
    out: Vec<u8>,
}

impl Drop for AuthUdpSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Socket for AuthUdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let payload = self.encoder.encode(envelope).await?;
        if payload.len() + TAG_LEN > MAX_DATAGRAM {
            // chitchat fills deltas up to the UDP limit, which leaves no room
            // for the tag; only clusters with very large gossiped state get here.
            metrics::counter!("colony_gossip_oversize_total", "node" => self.node.clone())
                .increment(1);
            tracing::warn!(len = payload.len(), %to, "gossip message too large for its tag; dropped");
            bail!(
                "gossip message of {} bytes leaves no room for its tag",
                payload.len()
            );
        }
        let tag = self.secret.mac(&[DOMAIN, payload]);
        self.out.clear();
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(&tag);
        let sent = self
            .socket
            .send_to(&self.out, to)
            .await
            .with_context(|| format!("sending gossip to {to}"))?;
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inbound
            .recv()
            .await
            .ok_or_else(|| anyhow!("the gossip reader stopped"))
    }
}

/// Reads datagrams, checks their tags, decodes the authentic ones.
struct Reader {
    socket: Arc<UdpSocket>,
    secret: ClusterSecret,
    decoder: Decoder,
    inbound: mpsc::Sender<RecvOutcome>,
    node: String,
    rejected: Arc<AtomicU64>,
    log: RejectLog,
}

impl Reader {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(err) if is_transient(&err) => {
                    tracing::debug!(error = %err, "transient gossip recv error");
                    continue;
                }
                Err(err) => {
                    tracing::error!(error = %err, "gossip socket failed; membership stops");
                    return;
                }
            };
            let Some(payload) = self.authenticate(&buf[..len], from) else {
                continue;
            };
            match self.decoder.decode(payload).await {
                Ok(Some(envelope)) => {
                    let outcome = RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: len,
                    };
                    if self.inbound.send(outcome).await.is_err() {
                        return;
                    }
                }
                Ok(None) => self.reject(from, "undecodable"),
                Err(err) => {
                    tracing::error!(error = %err, "gossip decoder failed; membership stops");
                    return;
                }
            }
        }
    }

    /// The payload of `datagram` if its tag is right.
    fn authenticate<'a>(&mut self, datagram: &'a [u8], from: SocketAddr) -> Option<&'a [u8]> {
        let Some(split) = datagram.len().checked_sub(TAG_LEN) else {
            self.reject(from, "no_tag");
            return None;
        };
        let (payload, tag) = datagram.split_at(split);
        if self.secret.verify(&[DOMAIN, payload], tag) {
            Some(payload)
        } else {
            self.reject(from, "bad_tag");
            None
        }
    }

    fn reject(&mut self, from: SocketAddr, reason: &'static str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("colony_gossip_rejected_total", "node" => self.node.clone(), "reason" => reason)
            .increment(1);
        self.log.note(from, reason);
    }
}

/// Logs every rejection at debug level and a summary at most every
/// [`WARN_EVERY`] at warn level: a misconfigured neighbour must not flood
/// the log.
#[derive(Default)]
struct RejectLog {
    last_warn: Option<Instant>,
    since_warn: u64,
}

impl RejectLog {
    fn note(&mut self, from: SocketAddr, reason: &'static str) {
        self.since_warn += 1;
        tracing::debug!(%from, reason, "gossip datagram rejected");
        let due = self
            .last_warn
            .is_none_or(|last| last.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                rejected = self.since_warn,
                last_from = %from,
                reason,
                "gossip datagrams rejected: is a node running with another cluster secret?"
            );
            self.last_warn = Some(Instant::now());
            self.since_warn = 0;
        }
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat::transport::UdpTransport;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    fn syn(cluster_id: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::Syn {
                cluster_id: cluster_id.to_string(),
                digest: Default::default(),
            },
        }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn open(secret: &str, node: &str) -> anyhow::Result<(AuthUdpTransport, Box<dyn Socket>)> {
        let transport =
            AuthUdpTransport::new(ClusterSecret::from_passphrase(secret), NodeId::new(node));
        let socket = transport.open(loopback()).await?;
        Ok((transport, socket))
    }

    #[tokio::test]
    async fn only_datagrams_tagged_with_the_secret_reach_chitchat() -> anyhow::Result<()> {
        let (receiver_transport, mut receiver) = open("s3cret", "receiver").await?;
        let to = receiver.local_addr()?;
        let (_, mut honest) = open("s3cret", "honest").await?;
        let (_, mut forger) = open("another secret", "forger").await?;
        let mut untagged = UdpTransport.open(loopback()).await?;
        let raw = UdpSocket::bind(loopback()).await?;

        // Loopback delivers in send order, so when the honest envelope comes
        // out every datagram before it has been judged.
        raw.send_to(b"short", to).await?;
        raw.send_to(&[7u8; 100], to).await?;
        let junk = b"tagged, but no chitchat message";
        let secret = ClusterSecret::from_passphrase("s3cret");
        let tag = secret.mac(&[DOMAIN, junk]);
        raw.send_to(&[&junk[..], &tag[..]].concat(), to).await?;
        forger.send(to, syn("forged")).await?;
        untagged.send(to, syn("untagged")).await?;
        honest.send(to, syn("colony")).await?;

        let received = receiver.recv().await?;
        assert_eq!(received.envelope, syn("colony"));
        assert_eq!(received.from_addr, honest.local_addr()?);
        assert_eq!(
            receiver_transport
                .rejected_counter()
                .load(Ordering::Relaxed),
            5
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_datagram_is_the_payload_followed_by_its_tag() -> anyhow::Result<()> {
        let (_, mut sender) = open("s3cret", "sender").await?;
        let raw = UdpSocket::bind(loopback()).await?;
        let sent = sender.send(raw.local_addr()?, syn("colony")).await?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (len, _) = raw.recv_from(&mut buf).await?;
        assert_eq!(len, sent.num_bytes_sent);
        let (payload, tag) = buf[..len].split_at(len - TAG_LEN);
        assert!(ClusterSecret::from_passphrase("s3cret").verify(&[DOMAIN, payload], tag));
        Ok(())
    }
}
