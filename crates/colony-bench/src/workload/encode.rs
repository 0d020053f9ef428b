//! Encoding an `Op` as a RESP command straight into a connection's buffer.

use super::{Op, OpKind, KEY_DIGITS};
use crate::resp::{push_array_header, push_bulk, push_decimal};

/// The fixed parts of every command, pre-encoded once so that encoding an op
/// is a few copies plus the key's digits.
#[derive(Debug, Clone)]
pub struct Payload {
    prefix: Vec<u8>,
    /// Per `OpKind`: array header, command name, and the key's bulk header and prefix.
    heads: Vec<Vec<u8>>,
    /// The value as a complete bulk string.
    value_bulk: Vec<u8>,
}

impl Payload {
    pub fn new(prefix: &str, value_size: usize) -> Self {
        // Printable, non-repeating-looking bytes so compression can't flatter a server.
        let value: Vec<u8> = (0..value_size)
            .map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8)
            .collect();
        let mut value_bulk = Vec::with_capacity(value_size + 16);
        push_bulk(&mut value_bulk, &value);
        let heads = OpKind::ALL
            .iter()
            .map(|&kind| {
                let mut head = Vec::new();
                push_array_header(&mut head, argc(kind));
                push_bulk(&mut head, kind.name().as_bytes());
                head.push(b'$');
                push_decimal(&mut head, (prefix.len() + KEY_DIGITS) as u64);
                head.extend_from_slice(b"\r\n");
                head.extend_from_slice(prefix.as_bytes());
                head
            })
            .collect();
        Payload {
            prefix: prefix.as_bytes().to_vec(),
            heads,
            value_bulk,
        }
    }

    /// Appends the key for `key`: prefix then a zero-padded number.
    pub fn write_key(&self, out: &mut Vec<u8>, key: u64) {
        out.extend_from_slice(&self.prefix);
        push_padded(out, key);
    }

    /// Appends `op` as a command to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>, op: &Op) {
        buf.extend_from_slice(&self.heads[op.kind.index()]);
        push_padded(buf, op.key);
        buf.extend_from_slice(b"\r\n");
        match op.kind {
            OpKind::Get | OpKind::Incr => {}
            OpKind::Set => buf.extend_from_slice(&self.value_bulk),
            OpKind::Sadd | OpKind::Sismember => push_sub(buf, b"member:", op.sub),
            OpKind::Hget => push_sub(buf, b"field:", op.sub),
            OpKind::Hset => {
                push_sub(buf, b"field:", op.sub);
                buf.extend_from_slice(&self.value_bulk);
            }
        }
    }
}

fn argc(kind: OpKind) -> usize {
    match kind {
        OpKind::Get | OpKind::Incr => 2,
        OpKind::Set | OpKind::Sadd | OpKind::Sismember | OpKind::Hget => 3,
        OpKind::Hset => 4,
    }
}

/// Appends `n` as exactly `KEY_DIGITS` digits (callers keep `n` below 10^12).
fn push_padded(out: &mut Vec<u8>, n: u64) {
    let mut digits = [b'0'; KEY_DIGITS];
    // Two digits per step: half the divisions of the obvious loop.
    let mut rest = n;
    for pair in digits.rchunks_exact_mut(2) {
        let two = (rest % 100) as u8;
        rest /= 100;
        pair[0] = b'0' + two / 10;
        pair[1] = b'0' + two % 10;
    }
    out.extend_from_slice(&digits);
}

/// Appends a member or field name: `prefix` followed by two digits.
fn push_sub(buf: &mut Vec<u8>, prefix: &[u8], sub: u64) {
    let mut arg = [0u8; 16];
    let len = prefix.len().min(14);
    arg[..len].copy_from_slice(&prefix[..len]);
    arg[len] = b'0' + ((sub / 10) % 10) as u8;
    arg[len + 1] = b'0' + (sub % 10) as u8;
    push_bulk(buf, &arg[..len + 2]);
}
