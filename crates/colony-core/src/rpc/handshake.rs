//! The handshake that opens every connection: both ends check the protocol
//! version, then each proves it holds the cluster secret by a MAC over both
//! ends' fresh nonces (so a recorded handshake cannot be replayed) and both
//! node ids. The labels differ by direction, so a server's answer can never
//! be reflected back as a client's proof.
//!
//! ```text
//! client → server   "CLNY" version u16 | Hello   { nonce 16 | client id }
//! server → client   "CLNY" version u16 | Welcome { nonce 16 | mac 32 | server id }
//!                                      or Error  (version mismatch), then close
//! client → server   Proof { mac 32 }
//!                   or Error (the server's MAC is wrong), then close
//! ```
//! The preamble (magic and version) is frozen across versions, and so is the
//! layout of an error frame: any two versions can tell each other that they
//! differ. Until the proof is checked, frames are limited to
//! [`HANDSHAKE_MAX_FRAME`] bytes, so an unauthenticated peer cannot make us
//! buffer much.

use super::error::{decode_error, encode_error};
use super::frame::{Frame, FrameKind, FrameReader, ReadEnd};
use super::{RpcConfig, RpcError, PROTOCOL_VERSION};
use crate::NodeId;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Display;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const MAGIC: [u8; 4] = *b"CLNY";
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// The largest frame accepted before the peer is authenticated.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 4096;
/// The longest node id a handshake carries.
const MAX_NODE_ID: usize = 1024;
pub(crate) const SERVER_LABEL: &[u8] = b"colony rpc server";
pub(crate) const CLIENT_LABEL: &[u8] = b"colony rpc client";

/// What a successful handshake leaves: who the peer is, and its frames.
pub(crate) struct Established<R> {
    pub peer: NodeId,
    pub reader: FrameReader<R>,
}

pub(crate) fn preamble(version: u16) -> [u8; 6] {
    let v = version.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Open a connection as the calling side. Errors name `peer` (its address).
pub(crate) async fn client<R, W>(
    config: &RpcConfig,
    peer: impl Display,
    mut read: R,
    write: &mut W,
) -> Result<Established<R>, RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let client_nonce: [u8; NONCE_LEN] = rand::random();
    let me = config.node.as_str().as_bytes();
    if me.len() > MAX_NODE_ID {
        return Err(RpcError::Protocol(format!(
            "our node id is longer than {MAX_NODE_ID} bytes"
        )));
    }
    let hello = Frame::control(FrameKind::Hello, concat(&[&client_nonce, me]));
    let mut out = BytesMut::from(&preamble(PROTOCOL_VERSION)[..]);
    out.put_slice(&hello.encode()?);
    write.write_all(&out).await.map_err(|e| lost(&peer, e))?;

    let theirs = read_preamble(&mut read, &peer).await?;
    if theirs != PROTOCOL_VERSION {
        return Err(RpcError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME);
    let welcome = next(&mut reader, &peer).await?;
    let welcome = match welcome.kind {
        FrameKind::Welcome => welcome.payload,
        FrameKind::Error => return Err(decode_error(&welcome.payload, PROTOCOL_VERSION)),
        other => return Err(unexpected(&peer, other, "Welcome")),
    };
    let (server_nonce, server_id) = match check_welcome(config, &peer, &client_nonce, &welcome) {
        Ok(checked) => checked,
        Err(e) => {
            if matches!(e, RpcError::AuthFailed(_)) {
                // Tell the server why we hang up, so that its log says so.
                let why = RpcError::AuthFailed(format!(
                    "node {} could not verify the server's proof: the cluster secrets differ",
                    config.node
                ));
                if let Ok(bytes) = Frame::control(FrameKind::Error, encode_error(&why)).encode() {
                    let _ = write.write_all(&bytes).await;
                }
            }
            return Err(e);
        }
    };
    let server = node_id(server_id, &peer)?;
    let proof = config
        .secret
        .mac(&[CLIENT_LABEL, &client_nonce, server_nonce, me, server_id]);
    let proof = Frame::control(FrameKind::Proof, Bytes::copy_from_slice(&proof));
    write
        .write_all(&proof.encode()?)
        .await
        .map_err(|e| lost(&peer, e))?;
    reader.max = config.max_frame_bytes;
    Ok(Established {
        peer: server,
        reader,
    })
}

/// Split a Welcome payload into the server's nonce and node id, once its MAC
/// proves the server holds the secret.
fn check_welcome<'a>(
    config: &RpcConfig,
    peer: &impl Display,
    client_nonce: &[u8],
    welcome: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), RpcError> {
    if welcome.len() < NONCE_LEN + MAC_LEN {
        return Err(RpcError::Protocol(format!("{peer} sent a short Welcome")));
    }
    let (server_nonce, rest) = welcome.split_at(NONCE_LEN);
    let (tag, server_id) = rest.split_at(MAC_LEN);
    let server = node_id(server_id, peer)?;
    let me = config.node.as_str().as_bytes();
    let parts: [&[u8]; 5] = [SERVER_LABEL, client_nonce, server_nonce, server_id, me];
    if !config.secret.verify(&parts, tag) {
        return Err(RpcError::AuthFailed(format!(
            "{peer} (node {server}) did not prove it holds the cluster secret"
        )));
    }
    Ok((server_nonce, server_id))
}

/// Accept a connection as the serving side. A version mismatch is answered
/// with an error frame before the error is returned; any other failure just
/// ends the handshake (the caller closes the connection).
pub(crate) async fn server<R, W>(
    config: &RpcConfig,
    peer: impl Display,
    mut read: R,
    write: &mut W,
) -> Result<Established<R>, RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let theirs = read_preamble(&mut read, &peer).await?;
    if theirs != PROTOCOL_VERSION {
        refuse_version(theirs, read, write).await;
        return Err(RpcError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME);
    let hello = next(&mut reader, &peer).await?;
    if hello.kind != FrameKind::Hello {
        return Err(unexpected(&peer, hello.kind, "Hello"));
    }
    let Some((client_nonce, client_id)) = hello.payload.split_at_checked(NONCE_LEN) else {
        return Err(RpcError::Protocol(format!("{peer} sent a short Hello")));
    };
    let client = node_id(client_id, &peer)?;
    let me = config.node.as_str().as_bytes();
    let server_nonce: [u8; NONCE_LEN] = rand::random();
    let tag = config
        .secret
        .mac(&[SERVER_LABEL, client_nonce, &server_nonce, me, client_id]);
    let welcome = Frame::control(FrameKind::Welcome, concat(&[&server_nonce, &tag, me]));
    let mut out = BytesMut::from(&preamble(PROTOCOL_VERSION)[..]);
    out.put_slice(&welcome.encode()?);
    write.write_all(&out).await.map_err(|e| lost(&peer, e))?;

    let proof = next(&mut reader, &peer).await?;
    match proof.kind {
        FrameKind::Proof => {}
        // The client could not verify us (it says why).
        FrameKind::Error => return Err(decode_error(&proof.payload, PROTOCOL_VERSION)),
        other => return Err(unexpected(&peer, other, "Proof")),
    }
    let parts: [&[u8]; 5] = [CLIENT_LABEL, client_nonce, &server_nonce, client_id, me];
    if !config.secret.verify(&parts, &proof.payload) {
        return Err(RpcError::AuthFailed(format!(
            "{peer} (claiming to be node {client}) did not prove it holds the cluster secret"
        )));
    }
    reader.max = config.max_frame_bytes;
    Ok(Established {
        peer: client,
        reader,
    })
}

/// Tell a peer of another version which versions differ, then wait for it to
/// hang up, so that closing does not reset the connection before it has read
/// the refusal. The caller bounds this in time.
async fn refuse_version<R, W>(theirs: u16, read: R, write: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let refusal = RpcError::VersionMismatch {
        ours: PROTOCOL_VERSION,
        theirs,
    };
    let mut out = BytesMut::from(&preamble(PROTOCOL_VERSION)[..]);
    let frame = Frame::control(FrameKind::Error, encode_error(&refusal));
    if let Ok(bytes) = frame.encode() {
        out.put_slice(&bytes);
    }
    if write.write_all(&out).await.is_ok() && write.shutdown().await.is_ok() {
        FrameReader::new(read, 0).discard_to_end().await;
    }
}

async fn read_preamble<R: AsyncRead + Unpin>(
    read: &mut R,
    peer: &impl Display,
) -> Result<u16, RpcError> {
    let mut buf = [0u8; 6];
    read.read_exact(&mut buf).await.map_err(|e| lost(peer, e))?;
    if buf[..4] != MAGIC {
        return Err(RpcError::Protocol(format!(
            "{peer} does not speak the colony rpc protocol (bad magic)"
        )));
    }
    Ok(u16::from_be_bytes([buf[4], buf[5]]))
}

async fn next<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    peer: &impl Display,
) -> Result<Frame, RpcError> {
    reader.next().await.map_err(|end| match end {
        ReadEnd::Bad(e) => e,
        ReadEnd::Eof => lost(peer, "closed"),
        ReadEnd::Io(e) => lost(peer, e),
    })
}

fn lost(peer: &impl Display, why: impl Display) -> RpcError {
    RpcError::Unreachable(format!(
        "{peer}: connection lost during the handshake ({why})"
    ))
}

fn unexpected(peer: &impl Display, got: FrameKind, wanted: &str) -> RpcError {
    RpcError::Protocol(format!(
        "{peer} sent {got:?} during the handshake, expected {wanted}"
    ))
}

fn node_id(bytes: &[u8], peer: &impl Display) -> Result<NodeId, RpcError> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.is_empty() && s.len() <= MAX_NODE_ID => Ok(NodeId::new(s)),
        _ => Err(RpcError::Protocol(format!(
            "{peer} sent an invalid node id"
        ))),
    }
}

fn concat(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}
