//! Incremental request parser. A request is either a multibulk array of bulk
//! strings (what every client library sends) or an inline line (telnet).
//! The parser never panics and never allocates more than the input holds:
//! limits on the element count, bulk length and inline length are checked
//! before anything is reserved. Arguments are zero-copy slices of the read
//! buffer.

use bytes::{Bytes, BytesMut};

/// Protocol limits, configurable per node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_multibulk: usize,
    pub max_bulk: usize,
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_multibulk: 1024 * 1024,
            max_bulk: 512 * 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}

/// A malformed or oversized request; the connection is closed after the
/// error is sent, since the stream can no longer be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command (possibly empty: blank inline lines are skipped by
    /// the caller).
    Command(Vec<Bytes>),
    /// More input is needed; at least this many bytes in total.
    Incomplete(usize),
}

/// Parse one request from the front of `buf`, removing it on success.
pub fn parse_command(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete(1));
    }
    if buf[0] != b'*' {
        return parse_inline(buf, limits);
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    let Some((count, next)) = read_int_line(buf, 1, limits.max_inline)? else {
        return Ok(Parsed::Incomplete(buf.len() + 1));
    };
    if count > limits.max_multibulk as i64 || count > i64::from(i32::MAX) {
        return Err(err("invalid multibulk length"));
    }
    pos = pos.max(next);
    if count <= 0 {
        let _ = buf.split_to(pos);
        return Ok(Parsed::Command(Vec::new()));
    }
    // Reserve only what the input itself can justify (4 bytes per element).
    spans.reserve((count as usize).min(buf.len() / 4 + 1));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(Parsed::Incomplete(pos + 1)),
            Some(b'$') => {}
            Some(&c) => return Err(err(&format!("expected '$', got '{}'", c as char))),
        }
        let Some((len, start)) = read_int_line(buf, pos + 1, limits.max_inline)? else {
            return Ok(Parsed::Incomplete(buf.len() + 1));
        };
        if len < 0 || len as u64 > limits.max_bulk as u64 {
            return Err(err("invalid bulk length"));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete(end + 2));
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(err("bulk string not terminated by CRLF"));
        }
        spans.push((start, end));
        pos = end + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Parsed::Command(
        spans.into_iter().map(|(a, b)| frame.slice(a..b)).collect(),
    ))
}

/// Read a decimal integer terminated by CRLF starting at `from`.
/// Ok(None) if the line is not complete yet.
fn read_int_line(
    buf: &[u8],
    from: usize,
    max_line: usize,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        if rest.len() > max_line {
            return Err(err("too big count line"));
        }
        return Ok(None);
    };
    let line = &rest[..nl];
    let line = line
        .strip_suffix(b"\r")
        .ok_or_else(|| err("expected CRLF"))?;
    let n = std::str::from_utf8(line)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 20)
        .and_then(|s| s.parse::<i64>().ok());
    match n {
        Some(n) => Ok(Some((n, from + nl + 1))),
        None if buf[from - 1] == b'*' => Err(err("invalid multibulk length")),
        None => Err(err("invalid bulk length")),
    }
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(err("too big inline request"));
        }
        return Ok(Parsed::Incomplete(buf.len() + 1));
    };
    if nl > limits.max_inline {
        return Err(err("too big inline request"));
    }
    let line = buf.split_to(nl + 1).freeze();
    let text = line.slice(..nl);
    let text = if text.ends_with(b"\r") {
        text.slice(..nl - 1)
    } else {
        text
    };
    split_inline(&text).map(Parsed::Command)
}

/// Split an inline line into arguments, honouring double and single quotes
/// (with backslash escapes inside double quotes) as redis-cli does.
fn split_inline(line: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let s = &line[..];
    while i < s.len() {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= s.len() {
            break;
        }
        if s[i] == b'"' || s[i] == b'\'' {
            let quote = s[i];
            let mut arg = Vec::new();
            i += 1;
            loop {
                match s.get(i) {
                    None => return Err(err("unbalanced quotes in request")),
                    Some(&c) if c == quote => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if quote == b'"' && i + 1 < s.len() => {
                        arg.push(unescape(s[i + 1]));
                        i += 2;
                    }
                    Some(&c) => {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
            if s.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                return Err(err("unbalanced quotes in request"));
            }
            args.push(Bytes::from(arg));
        } else {
            let start = i;
            while i < s.len() && !s[i].is_ascii_whitespace() {
                i += 1;
            }
            args.push(line.slice(start..i));
        }
    }
    Ok(args)
}

fn unescape(c: u8) -> u8 {
    match c {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 8,
        b'a' => 7,
        other => other,
    }
}

fn err(msg: &str) -> ProtocolError {
    ProtocolError(msg.to_string())
}

#[cfg(test)]
mod tests;
