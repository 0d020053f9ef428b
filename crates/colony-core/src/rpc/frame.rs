//! Frames: the codec (pure, never panics on input) and the reading half of a
//! connection.
//!
//! ```text
//! length u32 BE | kind u8 | request id u64 BE | service u8 | payload
//! ```
//! `length` counts everything after itself (10 header bytes + payload) and is
//! checked against the limit before a byte of the body is buffered.

use super::{RpcError, ServiceId};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes after the length prefix that every frame carries.
pub(crate) const HEADER_LEN: usize = 1 + 8 + 1;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A call: `service` and `request id` chosen by the caller.
    Request = 1,
    /// The successful answer to the request of the same id.
    Response = 2,
    /// A failed answer (or, with request id 0, the reason the connection is
    /// being closed); the payload is an error code and its details.
    Error = 3,
    /// Handshake, client to server: nonce, node id.
    Hello = 4,
    /// Handshake, server to client: nonce, MAC, node id.
    Welcome = 5,
    /// Handshake, client to server: MAC.
    Proof = 6,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::Hello,
            5 => Self::Welcome,
            6 => Self::Proof,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: FrameKind,
    pub request_id: u64,
    pub service: ServiceId,
    pub payload: Bytes,
}

impl Frame {
    /// A frame outside any call (handshake, connection-level error).
    pub fn control(kind: FrameKind, payload: Bytes) -> Self {
        Self {
            kind,
            request_id: 0,
            service: 0,
            payload,
        }
    }

    /// The value of the length prefix this frame gets.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// The length prefix and header; the payload follows on the wire.
    pub fn header(&self) -> Result<[u8; 4 + HEADER_LEN], RpcError> {
        let len = u32::try_from(self.wire_len()).map_err(|_| RpcError::FrameTooLarge {
            size: self.wire_len(),
            max: u32::MAX as usize,
        })?;
        let mut out = [0u8; 4 + HEADER_LEN];
        let mut w = &mut out[..];
        w.put_u32(len);
        w.put_u8(self.kind as u8);
        w.put_u64(self.request_id);
        w.put_u8(self.service);
        Ok(out)
    }

    /// The whole frame as bytes (handshake messages, tests).
    pub fn encode(&self) -> Result<BytesMut, RpcError> {
        let mut out = BytesMut::with_capacity(4 + self.wire_len());
        out.put_slice(&self.header()?);
        out.put_slice(&self.payload);
        Ok(out)
    }
}

/// Take one frame off the front of `buf` if it holds a whole one. A length
/// over `max` is refused before anything is buffered for it.
pub(crate) fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, RpcError> {
    let Some(len) = peek_len(buf) else {
        return Ok(None);
    };
    if len > max {
        return Err(RpcError::FrameTooLarge { size: len, max });
    }
    if len < HEADER_LEN {
        return Err(RpcError::Protocol(format!(
            "frame of {len} bytes is shorter than its header"
        )));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(len).freeze();
    let kind_byte = body.get_u8();
    let request_id = body.get_u64();
    let service = body.get_u8();
    let kind = FrameKind::from_byte(kind_byte)
        .ok_or_else(|| RpcError::Protocol(format!("unknown frame kind {kind_byte}")))?;
    Ok(Some(Frame {
        kind,
        request_id,
        service,
        payload: body,
    }))
}

fn peek_len(buf: &[u8]) -> Option<usize> {
    let prefix = <[u8; 4]>::try_from(buf.get(..4)?).ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

/// How the reading half of a connection ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed cleanly between frames.
    Eof,
    /// The peer broke the protocol or a frame was too large.
    Bad(RpcError),
    /// The socket failed (reset, or closed in the middle of a frame).
    Io(std::io::Error),
}

/// Reads frames off a byte stream. `next` is cancel-safe: bytes read are kept
/// in the buffer until a whole frame is there.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    pub max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            max,
        }
    }

    pub async fn next(&mut self) -> Result<Frame, ReadEnd> {
        loop {
            if let Some(frame) = decode(&mut self.buf, self.max).map_err(ReadEnd::Bad)? {
                return Ok(frame);
            }
            // The length was checked by `decode`: reserving room for the
            // rest of this frame is now safe.
            let want = peek_len(&self.buf).map_or(0, |len| 4 + len);
            self.buf
                .reserve(want.saturating_sub(self.buf.len()).max(8 * 1024));
            match self.inner.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Err(ReadEnd::Eof),
                Ok(0) => {
                    return Err(ReadEnd::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        }
    }

    /// The next frame if the buffer already holds the whole of it; never
    /// reads. Lets a server take every request that arrived together.
    pub fn buffered(&mut self) -> Result<Option<Frame>, RpcError> {
        decode(&mut self.buf, self.max)
    }

    /// Read and discard until the peer closes or fails, so that closing our
    /// side does not reset the connection before the peer has read our last
    /// frame. The caller bounds this in time.
    pub async fn discard_to_end(&mut self) {
        self.buf.clear();
        let mut scratch = [0u8; 8 * 1024];
        while let Ok(n) = self.inner.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    }
}
