//! The object stored under a key: a typed value plus its expiry, and the
//! canonical binary encoding it has on disk.
//!
//! Encoding (version 1): `[1][kind][flags]` then, if flag bit 0 is set, the
//! expiry as u64 big-endian milliseconds since the epoch, then the payload:
//! a string is its bytes; a hash is `count` then `(field, value)` pairs; a set
//! is `count` then members; counts and lengths are LEB128 varints. Collections
//! are ordered maps/sets, so the encoding of a given value is unique, which
//! the anti-entropy hash trees will rely on.

use crate::KvError;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};

const FORMAT_V1: u8 = 1;
const FLAG_EXPIRES: u8 = 1;
const FLAG_CONTENT_TYPE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ValueKind {
    Str = 1,
    Hash = 2,
    Set = 3,
}

impl ValueKind {
    /// The name Redis's TYPE command gives this kind.
    pub fn redis_name(self) -> &'static str {
        match self {
            Self::Str => "string",
            Self::Hash => "hash",
            Self::Set => "set",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Str(Bytes),
    Hash(BTreeMap<Bytes, Bytes>),
    Set(BTreeSet<Bytes>),
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Self::Str(_) => ValueKind::Str,
            Self::Hash(_) => ValueKind::Hash,
            Self::Set(_) => ValueKind::Set,
        }
    }

    /// Whether a collection has become empty (Redis deletes such keys).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Self::Str(_) => false,
            Self::Hash(h) => h.is_empty(),
            Self::Set(s) => s.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Object {
    pub value: Value,
    /// Expiry, in milliseconds since the Unix epoch.
    pub expire_at: Option<u64>,
    /// The media type an HTTP client stored a string with.
    pub content_type: Option<Bytes>,
}

impl Object {
    pub fn new(value: Value) -> Self {
        Self {
            value,
            expire_at: None,
            content_type: None,
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at.is_some_and(|at| at <= now_ms)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.payload_size_hint());
        out.put_u8(FORMAT_V1);
        out.put_u8(self.value.kind() as u8);
        let flags = (u8::from(self.expire_at.is_some()) * FLAG_EXPIRES)
            | (u8::from(self.content_type.is_some()) * FLAG_CONTENT_TYPE);
        out.put_u8(flags);
        if let Some(at) = self.expire_at {
            out.put_u64(at);
        }
        if let Some(ct) = &self.content_type {
            put_bytes(&mut out, ct);
        }
        match &self.value {
            Value::Str(s) => out.put_slice(s),
            Value::Hash(h) => {
                put_varint(&mut out, h.len() as u64);
                for (f, v) in h {
                    put_bytes(&mut out, f);
                    put_bytes(&mut out, v);
                }
            }
            Value::Set(s) => {
                put_varint(&mut out, s.len() as u64);
                for m in s {
                    put_bytes(&mut out, m);
                }
            }
        }
        out.freeze()
    }

    /// A copy that shares no buffer with the original. Values parsed from a
    /// client are slices of its read buffer; anything kept for long (a
    /// cache entry) must not pin that whole buffer in memory.
    pub fn detached(&self) -> Self {
        let copy = |b: &Bytes| Bytes::copy_from_slice(b);
        let value = match &self.value {
            Value::Str(s) => Value::Str(copy(s)),
            Value::Hash(h) => Value::Hash(h.iter().map(|(f, v)| (copy(f), copy(v))).collect()),
            Value::Set(s) => Value::Set(s.iter().map(copy).collect()),
        };
        Self {
            value,
            expire_at: self.expire_at,
            content_type: self.content_type.as_ref().map(copy),
        }
    }

    /// Size of the value itself, which the value-size limit applies to.
    pub fn payload_size(&self) -> usize {
        self.payload_size_hint()
    }

    fn payload_size_hint(&self) -> usize {
        match &self.value {
            Value::Str(s) => s.len(),
            Value::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + 4).sum(),
            Value::Set(s) => s.iter().map(|m| m.len() + 2).sum(),
        }
    }

    /// Decode; any malformed input is a [`KvError::Corrupt`], never a panic.
    pub fn decode(buf: &[u8]) -> Result<Self, KvError> {
        let mut r = Reader { buf, pos: 0 };
        let version = r.u8()?;
        if version != FORMAT_V1 {
            return Err(corrupt(format!("unknown object format {version}")));
        }
        let kind = r.u8()?;
        let flags = r.u8()?;
        let expire_at = if flags & FLAG_EXPIRES != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let content_type = if flags & FLAG_CONTENT_TYPE != 0 {
            Some(r.bytes()?)
        } else {
            None
        };
        let value = match kind {
            1 => Value::Str(Bytes::copy_from_slice(r.rest())),
            2 => {
                let n = r.count()?;
                let mut h = BTreeMap::new();
                for _ in 0..n {
                    let f = r.bytes()?;
                    let v = r.bytes()?;
                    h.insert(f, v);
                }
                Value::Hash(h)
            }
            3 => {
                let n = r.count()?;
                let mut s = BTreeSet::new();
                for _ in 0..n {
                    s.insert(r.bytes()?);
                }
                Value::Set(s)
            }
            k => return Err(corrupt(format!("unknown value kind {k}"))),
        };
        if !r.done() && kind != 1 {
            return Err(corrupt("trailing bytes after object".into()));
        }
        Ok(Self {
            value,
            expire_at,
            content_type,
        })
    }

    /// Read only the expiry, without decoding the payload.
    pub fn peek_expiry(buf: &[u8]) -> Result<Option<u64>, KvError> {
        let mut r = Reader { buf, pos: 0 };
        if r.u8()? != FORMAT_V1 {
            return Err(corrupt("unknown object format".into()));
        }
        r.u8()?;
        if r.u8()? & FLAG_EXPIRES != 0 {
            Ok(Some(r.u64()?))
        } else {
            Ok(None)
        }
    }

    /// Read only the kind, without decoding the payload.
    pub fn peek_kind(buf: &[u8]) -> Result<ValueKind, KvError> {
        match buf.get(1) {
            Some(1) => Ok(ValueKind::Str),
            Some(2) => Ok(ValueKind::Hash),
            Some(3) => Ok(ValueKind::Set),
            _ => Err(corrupt("bad object header".into())),
        }
    }
}

fn corrupt(msg: String) -> KvError {
    KvError::Corrupt(msg)
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.put_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], KvError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| corrupt("object truncated".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, KvError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn varint(&mut self) -> Result<u64, KvError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint too long".into()))
    }
    /// A count of items, each at least one byte: bounded by what is left.
    fn count(&mut self) -> Result<usize, KvError> {
        let n = self.varint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(corrupt("item count exceeds object size".into()));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<Bytes, KvError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| corrupt("length overflow".into()))?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn rest(&mut self) -> &[u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn arb_object() -> impl Strategy<Value = Object> {
        let value = prop_oneof![
            arb_bytes().prop_map(Value::Str),
            proptest::collection::btree_map(arb_bytes(), arb_bytes(), 0..10).prop_map(Value::Hash),
            proptest::collection::btree_set(arb_bytes(), 0..10).prop_map(Value::Set),
        ];
        let ct = proptest::option::of(arb_bytes());
        (value, proptest::option::of(any::<u64>()), ct).prop_map(
            |(value, expire_at, content_type)| Object {
                value,
                expire_at,
                content_type,
            },
        )
    }

    proptest! {
        #[test]
        fn encoding_round_trips(obj in arb_object()) {
            let enc = obj.encode();
            prop_assert_eq!(Object::decode(&enc).unwrap(), obj.clone());
            prop_assert_eq!(Object::peek_expiry(&enc).unwrap(), obj.expire_at);
            prop_assert_eq!(Object::peek_kind(&enc).unwrap(), obj.value.kind());
        }

        #[test]
        fn decoding_garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Object::decode(&buf);
            let _ = Object::peek_expiry(&buf);
        }
    }
}
