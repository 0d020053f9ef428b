//! RESP2 codec for the client side: commands are encoded as arrays of bulk
//! strings, replies are parsed from a byte buffer that may hold a partial frame.
//!
//! Two parsers share one cursor: `parse_reply` builds a `Reply` (used for the
//! few control commands such as CLUSTER SLOTS), `scan_reply` only finds where a
//! frame ends, so the measured hot path allocates nothing for successful replies.

/// Deepest array nesting accepted; deeper input is rejected rather than recursed.
const MAX_DEPTH: usize = 32;
/// Largest bulk string accepted (Redis's own limit).
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Largest array length accepted.
const MAX_ARRAY: i64 = 1 << 24;

/// A parsed RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as an integer, if it is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The reply as text, if it is a simple or non-null bulk string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Input that is not valid RESP2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown reply type byte {0:#04x}")]
    UnknownType(u8),
    #[error("malformed integer or length")]
    BadInteger,
    #[error("bulk string not terminated by CRLF")]
    BadTerminator,
    #[error("reply nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("length {0} out of range")]
    BadLength(i64),
}

enum Fail {
    Incomplete,
    Invalid(ProtocolError),
}

impl From<ProtocolError> for Fail {
    fn from(e: ProtocolError) -> Self {
        Fail::Invalid(e)
    }
}

fn finish<T>(r: Result<T, Fail>, pos: usize) -> Result<Option<(T, usize)>, ProtocolError> {
    match r {
        Ok(v) => Ok(Some((v, pos))),
        Err(Fail::Incomplete) => Ok(None),
        Err(Fail::Invalid(e)) => Err(e),
    }
}

/// Parses one reply from the front of `buf`. Returns the reply and the number of
/// bytes it occupied, or `None` when `buf` holds only part of a frame.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut c = Cursor { buf, pos: 0 };
    let r = c.value(0);
    finish(r, c.pos)
}

/// Finds the length of the first complete frame in `buf` without building it.
pub fn scan_reply(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let mut c = Cursor { buf, pos: 0 };
    let r = c.skip(0);
    finish(r, c.pos).map(|o| o.map(|((), n)| n))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The next CRLF-terminated line, without its terminator.
    fn line(&mut self) -> Result<&'a [u8], Fail> {
        let rest = self.buf.get(self.pos..).ok_or(Fail::Incomplete)?;
        let cr = rest
            .iter()
            .position(|&b| b == b'\r')
            .ok_or(Fail::Incomplete)?;
        match rest.get(cr + 1) {
            None => Err(Fail::Incomplete),
            Some(b'\n') => {
                self.pos += cr + 2;
                Ok(&rest[..cr])
            }
            Some(_) => Err(ProtocolError::BadTerminator.into()),
        }
    }

    fn int(&mut self) -> Result<i64, Fail> {
        Ok(parse_int(self.line()?)?)
    }

    fn type_byte(&mut self) -> Result<u8, Fail> {
        let b = *self.buf.get(self.pos).ok_or(Fail::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    /// Advances over a bulk payload of `len` bytes plus CRLF and returns it.
    fn payload(&mut self, len: i64) -> Result<&'a [u8], Fail> {
        if !(0..=MAX_BULK).contains(&len) {
            return Err(ProtocolError::BadLength(len).into());
        }
        let len = len as usize;
        let end = self.pos + len;
        if self.buf.len() < end + 2 {
            return Err(Fail::Incomplete);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BadTerminator.into());
        }
        let data = &self.buf[self.pos..end];
        self.pos = end + 2;
        Ok(data)
    }

    fn array_len(&mut self, depth: usize) -> Result<i64, Fail> {
        if depth >= MAX_DEPTH {
            return Err(ProtocolError::TooDeep.into());
        }
        let n = self.int()?;
        if !(-1..=MAX_ARRAY).contains(&n) {
            return Err(ProtocolError::BadLength(n).into());
        }
        Ok(n)
    }

    fn value(&mut self, depth: usize) -> Result<Reply, Fail> {
        match self.type_byte()? {
            b'+' => Ok(Reply::Simple(lossy(self.line()?))),
            b'-' => Ok(Reply::Error(lossy(self.line()?))),
            b':' => Ok(Reply::Integer(self.int()?)),
            b'$' => match self.int()? {
                -1 => Ok(Reply::Bulk(None)),
                n => Ok(Reply::Bulk(Some(self.payload(n)?.to_vec()))),
            },
            b'*' => match self.array_len(depth)? {
                -1 => Ok(Reply::Array(None)),
                n => {
                    let mut items = Vec::with_capacity((n as usize).min(1024));
                    for _ in 0..n {
                        items.push(self.value(depth + 1)?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
            },
            other => Err(ProtocolError::UnknownType(other).into()),
        }
    }

    fn skip(&mut self, depth: usize) -> Result<(), Fail> {
        match self.type_byte()? {
            b'+' | b'-' => self.line().map(|_| ()),
            b':' => self.int().map(|_| ()),
            b'$' => match self.int()? {
                -1 => Ok(()),
                n => self.payload(n).map(|_| ()),
            },
            b'*' => {
                let n = self.array_len(depth)?;
                for _ in 0..n.max(0) {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            other => Err(ProtocolError::UnknownType(other).into()),
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_int(b: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(ProtocolError::BadInteger);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError::BadInteger);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(ProtocolError::BadInteger)?;
    }
    Ok(if neg { -n } else { n })
}

/// Appends `*<n>\r\n`, the header of a command with `n` arguments.
pub fn push_array_header(buf: &mut Vec<u8>, n: usize) {
    buf.push(b'*');
    push_decimal(buf, n as u64);
    buf.extend_from_slice(b"\r\n");
}

/// Appends one argument as a bulk string.
pub fn push_bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    buf.push(b'$');
    push_decimal(buf, arg.len() as u64);
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

/// Appends a whole command.
pub fn encode_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    push_array_header(buf, args.len());
    for a in args {
        push_bulk(buf, a);
    }
}

/// Appends `n` in decimal without going through `fmt`.
pub fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests;
