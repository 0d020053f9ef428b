//! One TCP connection speaking RESP2, with reusable read and write buffers.
//!
//! The connection knows nothing of timeouts beyond connecting: callers wrap a
//! whole pipelined batch in one deadline, which costs one timer per batch
//! instead of one per reply.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::resp::{self, ProtocolError, Reply};

/// Smallest free space kept in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Why talking to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("reply timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The error-kind label under which this failure is counted.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Timeout | ClientError::ConnectTimeout { .. } => "timeout",
            ClientError::Protocol(_) | ClientError::Unexpected(_) => "protocol",
            _ => "io",
        }
    }
}

/// The outcome of one reply as the hot path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    /// An error reply; the full message, e.g. `MOVED 3999 127.0.0.1:7401`.
    Error(String),
}

pub struct Connection {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    /// When the last read returned data: every reply parsed from those bytes
    /// had arrived by then, so this is their completion time (one clock read
    /// per read syscall instead of one per reply).
    received_at: Instant,
    /// Commands appended here are sent by the next `flush`.
    pub wbuf: Vec<u8>,
}

impl Connection {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ClientError::ConnectTimeout { addr: addr.into() }),
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.into(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK * 2),
            rpos: 0,
            received_at: Instant::now(),
            wbuf: Vec::with_capacity(READ_CHUNK),
        })
    }

    /// Writes everything in `wbuf` and empties it.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// When the bytes of the most recently read reply arrived.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Reads the next reply, classifying it without building it.
    pub async fn read_status(&mut self) -> Result<ReplyStatus, ClientError> {
        loop {
            let pending = &self.rbuf[self.rpos..];
            if let Some(len) = resp::scan_reply(pending)? {
                let status = if pending.first() == Some(&b'-') {
                    let msg = &pending[1..len.saturating_sub(2).max(1)];
                    ReplyStatus::Error(String::from_utf8_lossy(msg).into_owned())
                } else {
                    ReplyStatus::Ok
                };
                self.rpos += len;
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    /// Reads the next reply in full.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some((reply, len)) = resp::parse_reply(&self.rbuf[self.rpos..])? {
                self.rpos += len;
                return Ok(reply);
            }
            self.fill().await?;
        }
    }

    /// Sends one command and waits at most `timeout` for its reply.
    pub async fn command(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        resp::encode_command(&mut self.wbuf, args);
        let exchange = async {
            self.flush().await?;
            self.read_reply().await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Reads more bytes, first dropping the consumed prefix of the buffer.
    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.received_at = Instant::now();
        Ok(())
    }
}
