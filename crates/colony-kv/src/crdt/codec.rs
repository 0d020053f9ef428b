//! The stored bytes of a [`Doc`].
//!
//! Format 2: `[2][kind][flags]`, then the expiry (u64 big-endian ms) if
//! flag bit 0 is set, then the whole state as postcard. The header repeats
//! what the state implies (the view's kind, 0 for absent, and the expiry)
//! so that scans can filter by type and expiry without decoding the body.
//! Postcard writes maps in key order and floats as their bits, and every
//! state is kept normalized, so equal states encode to equal bytes, which
//! the anti-entropy hash trees rely on. Format 1 (a plain [`Object`]) is
//! still read, so existing data directories keep working.

use super::register::Sibling;
use super::version::Actor;
use super::{Doc, Stamp};
use crate::{KvError, Object, Value, ValueKind};

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const FLAG_EXPIRES: u8 = 1;
/// The actor that legacy (format 1) data is attributed to.
const LEGACY: Actor = Actor(0);

fn corrupt(msg: impl Into<String>) -> KvError {
    KvError::Corrupt(msg.into())
}

fn kind_byte(kind: Option<ValueKind>) -> u8 {
    kind.map_or(0, |k| k as u8)
}

fn byte_kind(b: u8) -> Result<Option<ValueKind>, KvError> {
    match b {
        0 => Ok(None),
        1 => Ok(Some(ValueKind::Str)),
        2 => Ok(Some(ValueKind::Hash)),
        3 => Ok(Some(ValueKind::Set)),
        k => Err(corrupt(format!("unknown value kind {k}"))),
    }
}

/// The parsed header: kind, expiry, and where the body starts.
fn header(buf: &[u8]) -> Result<(Option<ValueKind>, Option<u64>, usize), KvError> {
    let [format, kind, flags, rest @ ..] = buf else {
        return Err(corrupt("object header truncated"));
    };
    if *format != FORMAT_V2 {
        return Err(corrupt(format!("unknown object format {format}")));
    }
    let kind = byte_kind(*kind)?;
    if flags & !FLAG_EXPIRES != 0 {
        return Err(corrupt(format!("unknown flags {flags:#x}")));
    }
    if flags & FLAG_EXPIRES == 0 {
        return Ok((kind, None, 3));
    }
    let at: [u8; 8] = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("object header truncated"))?;
    Ok((kind, Some(u64::from_be_bytes(at)), 11))
}

impl Doc {
    pub fn encode(&self) -> bytes::Bytes {
        let expiry = self.expire_at();
        let mut out = Vec::with_capacity(16 + self.payload_size());
        out.push(FORMAT_V2);
        out.push(kind_byte(self.kind()));
        out.push(if expiry.is_some() { FLAG_EXPIRES } else { 0 });
        if let Some(at) = expiry {
            out.extend_from_slice(&at.to_be_bytes());
        }
        // An assertion: postcard fails only on unsized sequences and
        // unsupported types, and a Doc has neither.
        let out = postcard::to_extend(self, out).expect("a Doc always serializes");
        bytes::Bytes::from(out)
    }

    /// Decode format 2, or convert format 1. Malformed input of any kind is
    /// [`KvError::Corrupt`], never a panic; so is a body that breaks the
    /// state's invariants (a dot outside the context, a non-normal form, a
    /// header that disagrees with the body), since merging such a state
    /// would break convergence.
    pub fn decode(buf: &[u8]) -> Result<Doc, KvError> {
        if buf.first() == Some(&FORMAT_V1) {
            return Ok(Doc::from_legacy(Object::decode(buf)?));
        }
        let (kind, expiry, start) = header(buf)?;
        let body = buf.get(start..).unwrap_or_default();
        let (doc, rest): (Doc, _) =
            postcard::take_from_bytes(body).map_err(|e| corrupt(format!("object body: {e}")))?;
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes after object"));
        }
        doc.validate()?;
        if doc.kind() != kind || doc.expire_at() != expiry {
            return Err(corrupt("object header disagrees with its body"));
        }
        Ok(doc)
    }

    /// Read only the expiry from the header.
    pub fn peek_expiry(buf: &[u8]) -> Result<Option<u64>, KvError> {
        if buf.first() == Some(&FORMAT_V1) {
            return Object::peek_expiry(buf);
        }
        header(buf).map(|(_, at, _)| at)
    }

    /// Read only the kind from the header; None for a tombstone.
    pub fn peek_kind(buf: &[u8]) -> Result<Option<ValueKind>, KvError> {
        if buf.first() == Some(&FORMAT_V1) {
            return Object::peek_kind(buf).map(Some);
        }
        header(buf).map(|(kind, _, _)| kind)
    }

    /// A format-1 object as a doc written by actor 0 at stamp 0, so that
    /// any write since the upgrade wins over it. The conversion is
    /// deterministic: replicas converting the same object agree.
    pub fn from_legacy(obj: Object) -> Doc {
        let mut doc = Doc::new();
        let sib = |value| Sibling {
            value,
            content_type: None,
            stamp: Stamp::ZERO,
            kept: false,
        };
        match obj.value {
            Value::Str(v) => {
                let dot = doc.take_dot(LEGACY);
                let s = Sibling {
                    content_type: obj.content_type,
                    ..sib(v)
                };
                doc.str.body.write(&doc.ctx, dot, s);
            }
            Value::Hash(h) => {
                for (f, v) in h {
                    let dot = doc.take_dot(LEGACY);
                    doc.hash.body.write(&doc.ctx, f, dot, sib(v));
                }
            }
            Value::Set(s) => {
                for m in s {
                    let dot = doc.take_dot(LEGACY);
                    doc.set.body.add(m, dot);
                }
            }
        }
        doc.ttl = obj.expire_at.map(|at| (Stamp::ZERO, Some(at)));
        doc
    }

    fn validate(&self) -> Result<(), KvError> {
        let regs = std::iter::once(&self.str.body).chain(self.hash.body.registers());
        let mut dots = regs.flat_map(|r| r.dots()).chain(self.set.body.dots());
        if dots.any(|d| d.counter == 0 || !self.ctx.contains(d)) {
            return Err(corrupt("object holds a dot outside its context"));
        }
        if self.ctx.iter().any(|(_, c)| c == 0) {
            return Err(corrupt("object context not canonical"));
        }
        // Checked in place: a copy to normalize and compare would cost as
        // much as the decode.
        if !(self.str.body.is_normal() && self.hash.body.is_normal() && self.set.body.is_normal()) {
            return Err(corrupt("object state not in normal form"));
        }
        Ok(())
    }
}
