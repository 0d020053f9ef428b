//! A raw RESP socket: byte-exact replies, malformed requests, connection closes.
//!
//! The `redis` crate hides exactly what some tests need to see (the bytes of a
//! reply, whether the server closed the connection), and refuses to send bad frames.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait, so a broken server fails a test instead of
/// hanging it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DEPTH: usize = 64;

/// Encode a command as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> io::Result<RawConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Write bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Half-close: the server sees end of input, as when a client goes away.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Send one well-formed command and read its complete reply, raw.
    pub async fn command(&mut self, args: &[&[u8]]) -> io::Result<Vec<u8>> {
        self.send(&encode_command(args)).await?;
        self.read_reply().await
    }

    /// Read one complete RESP2/RESP3 reply, raw. `UnexpectedEof` if the server
    /// closed first, `TimedOut` after 10 s.
    pub async fn read_reply(&mut self) -> io::Result<Vec<u8>> {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_reply_inner())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no complete reply in 10 s"))?
    }

    async fn read_reply_inner(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let end = frame_end(&self.buf, 0, 0)
                .map_err(|msg| io::Error::new(io::ErrorKind::InvalidData, msg))?;
            if let Some(end) = end {
                return Ok(self.buf.drain(..end).collect());
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "closed after partial reply {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Everything the server sends until it closes the connection (a reset counts as
    /// a close). `TimedOut` if it is still open after `limit`.
    pub async fn read_until_closed(&mut self, limit: Duration) -> io::Result<Vec<u8>> {
        let read_all = async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => self
                        .buf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
        };
        match tokio::time::timeout(limit, read_all).await {
            Ok(Ok(())) => Ok(std::mem::take(&mut self.buf)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connection still open after {limit:?}; received {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            )),
        }
    }
}

/// Where the complete frame starting at `pos` ends, `None` if more bytes are
/// needed, `Err` if the bytes are not RESP.
fn frame_end(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("reply nested too deeply".into());
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(line_end) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = buf.get(pos + 1..line_end).unwrap_or_default();
    let after = line_end + 2;
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => Ok(Some(after)),
        b'$' | b'!' | b'=' => {
            let Ok(len) = usize::try_from(parse_int(line)?) else {
                return Ok(Some(after)); // $-1: null bulk
            };
            let end = after.saturating_add(len).saturating_add(2);
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Ok(count) = usize::try_from(parse_int(line)?) else {
                return Ok(Some(after)); // *-1: null array
            };
            let pairs = matches!(kind, b'%' | b'|');
            let mut items = if pairs {
                count.saturating_mul(2)
            } else {
                count
            };
            if kind == b'|' {
                items = items.saturating_add(1); // the attributed value follows
            }
            let mut next = after;
            for _ in 0..items {
                match frame_end(buf, next, depth + 1)? {
                    Some(end) => next = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        other => Err(format!("not a RESP type byte: {:?}", other as char)),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length line {:?}", String::from_utf8_lossy(line)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::frame_end;

    #[test]
    fn frames_are_delimited_only_when_complete() {
        assert_eq!(frame_end(b"+PONG\r\n", 0, 0), Ok(Some(7)));
        assert_eq!(frame_end(b"+PO", 0, 0), Ok(None));
        assert_eq!(frame_end(b"$3\r\nabc\r\n", 0, 0), Ok(Some(9)));
        assert_eq!(frame_end(b"$3\r\nab", 0, 0), Ok(None));
        assert_eq!(frame_end(b"$-1\r\n", 0, 0), Ok(Some(5)));
        assert_eq!(frame_end(b"*2\r\n:1\r\n$1\r\nx\r\n", 0, 0), Ok(Some(15)));
        assert_eq!(frame_end(b"%1\r\n+a\r\n:1\r\n", 0, 0), Ok(Some(12)));
        assert_eq!(frame_end(b"*2\r\n:1\r\n", 0, 0), Ok(None));
        assert!(frame_end(b"?x\r\n", 0, 0).is_err());
    }
}
