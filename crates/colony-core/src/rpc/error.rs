//! What an RPC call can fail with, and how a failure travels in an error frame.

use bytes::{BufMut, Bytes, BytesMut};

/// Why an RPC call failed. Messages name the peer (address or node id) where
/// the failure is about one.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RpcError {
    /// No connection could be made (refused, no route, no answer in time).
    #[error("rpc peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the call's timeout.
    #[error("rpc call timed out")]
    Timeout,
    /// A queue on the way is full (our connection's send queue, or the
    /// peer's limit of requests in flight). Retry later.
    #[error("rpc peer overloaded, retry later")]
    Overloaded,
    /// The peer does not hold the cluster secret, or did not prove it.
    #[error("rpc authentication failed: {0}")]
    AuthFailed(String),
    /// The peer speaks another version of the protocol.
    #[error("rpc protocol version mismatch: we speak version {ours}, the peer speaks {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },
    /// A frame is larger than `max_frame_bytes`; nothing was sent, or the
    /// connection that carried it was closed.
    #[error("rpc frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    /// The peer's handler returned this error.
    #[error("rpc handler on the peer failed: {0}")]
    Remote(String),
    /// The connection closed before the answer came.
    #[error("rpc connection closed before the answer came")]
    Closed,
    /// The peer broke the protocol (bad magic, malformed frame).
    #[error("rpc protocol violation: {0}")]
    Protocol(String),
}

impl RpcError {
    /// Whether the same call may succeed if sent again later. `Timeout` and
    /// `Closed` are retryable only for idempotent requests: the peer may have
    /// handled the first one.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Timeout | Self::Overloaded | Self::Closed
        )
    }

    /// A short stable name, the `kind` label of `colony_rpc_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
            Self::AuthFailed(_) => "auth_failed",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::FrameTooLarge { .. } => "frame_too_large",
            Self::Remote(_) => "remote",
            Self::Closed => "closed",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// Count an error observed by this node, on either side of a connection.
pub(crate) fn count_error(error: &RpcError) {
    metrics::counter!("colony_rpc_errors_total", "kind" => error.kind()).increment(1);
}

// Error-frame codes. The layout of an error frame (code, then details) is
// frozen across protocol versions, so that a peer of any version can read a
// version-mismatch refusal.
const CODE_REMOTE: u8 = 1;
const CODE_OVERLOADED: u8 = 2;
const CODE_TIMEOUT: u8 = 3;
const CODE_VERSION: u8 = 4;
const CODE_TOO_LARGE: u8 = 5;
const CODE_PROTOCOL: u8 = 6;
const CODE_AUTH: u8 = 7;

/// The payload of an error frame sent for `error`. Variants with no code of
/// their own travel as text and arrive as [`RpcError::Remote`].
pub(crate) fn encode_error(error: &RpcError) -> Bytes {
    let mut out = BytesMut::new();
    match error {
        RpcError::Overloaded => out.put_u8(CODE_OVERLOADED),
        RpcError::Timeout => out.put_u8(CODE_TIMEOUT),
        RpcError::VersionMismatch { ours, theirs } => {
            out.put_u8(CODE_VERSION);
            out.put_u16(*ours);
            out.put_u16(*theirs);
            out.put_slice(error.to_string().as_bytes());
        }
        RpcError::FrameTooLarge { size, max } => {
            out.put_u8(CODE_TOO_LARGE);
            out.put_u64(*size as u64);
            out.put_u64(*max as u64);
        }
        RpcError::Protocol(msg) => {
            out.put_u8(CODE_PROTOCOL);
            out.put_slice(msg.as_bytes());
        }
        RpcError::AuthFailed(msg) => {
            out.put_u8(CODE_AUTH);
            out.put_slice(msg.as_bytes());
        }
        RpcError::Remote(msg) => {
            out.put_u8(CODE_REMOTE);
            out.put_slice(msg.as_bytes());
        }
        other => {
            out.put_u8(CODE_REMOTE);
            out.put_slice(other.to_string().as_bytes());
        }
    }
    out.freeze()
}

/// The error an error frame's payload stands for, seen by its receiver: a
/// version refusal becomes `VersionMismatch { ours: <receiver's>, theirs:
/// <sender's> }`. Never panics; an unknown code is read as remote text.
pub(crate) fn decode_error(payload: &[u8], our_version: u16) -> RpcError {
    let Some((&code, rest)) = payload.split_first() else {
        return RpcError::Protocol("empty error frame".into());
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match code {
        CODE_OVERLOADED => RpcError::Overloaded,
        CODE_TIMEOUT => RpcError::Timeout,
        CODE_VERSION => match rest.get(..2) {
            Some(v) => RpcError::VersionMismatch {
                ours: our_version,
                theirs: u16::from_be_bytes([v[0], v[1]]),
            },
            None => RpcError::Protocol("short version-mismatch frame".into()),
        },
        CODE_TOO_LARGE => {
            let word = |i: usize| {
                rest.get(i..i + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX))
            };
            match (word(0), word(8)) {
                (Some(size), Some(max)) => RpcError::FrameTooLarge { size, max },
                _ => RpcError::Protocol("short frame-too-large frame".into()),
            }
        }
        CODE_PROTOCOL => RpcError::Protocol(text()),
        CODE_AUTH => RpcError::AuthFailed(text()),
        _ => RpcError::Remote(text()),
    }
}
