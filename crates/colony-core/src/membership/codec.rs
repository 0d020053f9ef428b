//! Chitchat envelopes to bytes and back, through chitchat's own UDP socket.
//!
//! chitchat 0.13 keeps its wire codec crate-private: the only public code that
//! writes or reads an envelope is its UDP socket. Rather than fork chitchat, we
//! use that socket as the codec over loopback. To encode, chitchat's socket
//! sends the envelope to a sink socket of ours, where we read the bytes. To
//! decode, we feed the bytes to chitchat's socket and read the envelope back.
//! That costs two loopback datagrams per gossip message (a few microseconds)
//! and needs no knowledge of the wire format. When chitchat makes its codec
//! public, this module shrinks to two calls.
//!
//! A loopback datagram is already in the receiver's buffer when `send_to`
//! returns, so the reads below complete at once. Their timeout only trips if
//! a datagram was lost; the sockets are then rebuilt, so that a late datagram
//! can never be taken for the answer to a later request.

use anyhow::Context;
use chitchat::transport::{Socket as _, UdpSocket as ChitchatSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};

/// The largest UDP payload over IPv4; chitchat sizes its messages to it.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(1);

async fn loopback_socket() -> anyhow::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(LOOPBACK)
        .await
        .context("binding a loopback socket for the gossip codec")?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

async fn chitchat_socket() -> anyhow::Result<(ChitchatSocket, SocketAddr)> {
    let socket = ChitchatSocket::open(LOOPBACK).await?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

/// Serializes envelopes: chitchat's socket writes, our sink reads.
pub(crate) struct Encoder {
    chitchat: ChitchatSocket,
    chitchat_addr: SocketAddr,
    sink: UdpSocket,
    sink_addr: SocketAddr,
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) async fn open() -> anyhow::Result<Self> {
        let (chitchat, chitchat_addr) = chitchat_socket().await?;
        let (sink, sink_addr) = loopback_socket().await?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            sink,
            sink_addr,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// The wire bytes of `envelope`, valid until the next call.
    pub(crate) async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<&[u8]> {
        match self.try_encode(envelope).await {
            Ok(len) => Ok(&self.buf[..len]),
            Err(err) => {
                *self = Self::open().await?;
                Err(err)
            }
        }
    }

    async fn try_encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<usize> {
        self.chitchat.send(self.sink_addr, envelope).await?;
        let deadline = Instant::now() + LOOPBACK_TIMEOUT;
        loop {
            let (len, from) = timeout_at(deadline, self.sink.recv_from(&mut self.buf))
                .await
                .context("the loopback encoder lost a datagram")??;
            // Anyone on this host can send to the sink; only chitchat's
            // socket speaks for the envelope.
            if from == self.chitchat_addr {
                return Ok(len);
            }
        }
    }
}

/// Deserializes wire bytes: we feed chitchat's socket, it hands back the
/// envelope.
///
/// chitchat's socket silently skips bytes it cannot decode, so every payload
/// is followed by a marker (a valid envelope) from a second socket: when the
/// marker comes back first, the payload was undecodable.
pub(crate) struct Decoder {
    chitchat: ChitchatSocket,
    chitchat_addr: SocketAddr,
    feed: UdpSocket,
    feed_addr: SocketAddr,
    marker: UdpSocket,
    marker_addr: SocketAddr,
    marker_bytes: Vec<u8>,
}

impl Decoder {
    pub(crate) async fn open() -> anyhow::Result<Self> {
        let marker_envelope = ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        };
        let marker_bytes = Encoder::open()
            .await?
            .encode(marker_envelope)
            .await?
            .to_vec();
        let (chitchat, chitchat_addr) = chitchat_socket().await?;
        let (feed, feed_addr) = loopback_socket().await?;
        let (marker, marker_addr) = loopback_socket().await?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            feed,
            feed_addr,
            marker,
            marker_addr,
            marker_bytes,
        })
    }

    /// The envelope `payload` encodes, or `None` if it encodes none.
    /// An error means the codec is broken for good.
    pub(crate) async fn decode(
        &mut self,
        payload: &[u8],
    ) -> anyhow::Result<Option<ChitchatEnvelope>> {
        self.feed.send_to(payload, self.chitchat_addr).await?;
        self.marker
            .send_to(&self.marker_bytes, self.chitchat_addr)
            .await?;
        let deadline = Instant::now() + LOOPBACK_TIMEOUT;
        let mut decoded = None;
        loop {
            let Ok(received) = timeout_at(deadline, self.chitchat.recv()).await else {
                tracing::warn!("the loopback gossip decoder lost a datagram; rebuilding it");
                *self = Self::open().await?;
                return Ok(None);
            };
            let outcome = received?;
            if outcome.from_addr == self.marker_addr {
                return Ok(decoded);
            }
            if outcome.from_addr == self.feed_addr {
                decoded = Some(outcome.envelope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(cluster_id: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::Syn {
                cluster_id: cluster_id.to_string(),
                digest: Default::default(),
            },
        }
    }

    #[tokio::test]
    async fn encode_then_decode_gives_the_same_envelope() -> anyhow::Result<()> {
        let mut encoder = Encoder::open().await?;
        let mut decoder = Decoder::open().await?;
        let bytes = encoder.encode(syn("colony")).await?.to_vec();
        assert_eq!(decoder.decode(&bytes).await?, Some(syn("colony")));
        Ok(())
    }

    #[tokio::test]
    async fn undecodable_bytes_give_none_and_the_next_payload_still_decodes() -> anyhow::Result<()>
    {
        let mut encoder = Encoder::open().await?;
        let mut decoder = Decoder::open().await?;
        assert_eq!(decoder.decode(b"not a chitchat message").await?, None);
        assert_eq!(decoder.decode(b"").await?, None);
        let bytes = encoder.encode(syn("second")).await?.to_vec();
        assert_eq!(decoder.decode(&bytes).await?, Some(syn("second")));
        Ok(())
    }
}
