//! String operations.

use super::{clamp_range, expect, format_f64, parse_f64, parse_i64, Applied, Ctx};
use crate::op::{GetExExpire, SetCond, SetExpire};
use crate::{KeyOp, KvError, Object, Reply, Value};
use bytes::{Bytes, BytesMut};

/// Largest string SETRANGE / APPEND may build (Redis's proto-max-bulk-len).
const MAX_STRING: usize = 512 * 1024 * 1024;

fn as_str(v: &Value) -> Option<&Bytes> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

pub(super) fn apply(op: KeyOp, cur: Option<Object>, ctx: &mut Ctx<'_>) -> Applied {
    match op {
        KeyOp::Get => read(&cur, |s| Reply::opt_bulk(s.cloned())),
        KeyOp::StrLen => read(&cur, |s| Reply::Int(s.map_or(0, |s| s.len() as i64))),
        KeyOp::GetRange { start, end } => read(&cur, |s| {
            let s = s.cloned().unwrap_or_default();
            match clamp_range(start, end, s.len()) {
                Some((a, b)) => Reply::Bulk(s.slice(a..b)),
                None => Reply::bulk(Bytes::new()),
            }
        }),
        KeyOp::Set {
            value,
            expire,
            cond,
            get,
        } => set(cur, value, expire, cond, get),
        KeyOp::GetDel => match expect(&cur, as_str) {
            Err(e) => Applied::err(e),
            Ok(None) => Applied::read(Reply::Nil),
            Ok(Some(s)) => Applied::delete(Reply::Bulk(s.clone())),
        },
        KeyOp::GetEx(change) => getex(cur, change, ctx.now_ms),
        KeyOp::Append(tail) => modify(cur, |s| {
            if s.len() + tail.len() > MAX_STRING {
                return Err(KvError::StringTooLong);
            }
            let mut b = BytesMut::with_capacity(s.len() + tail.len());
            b.extend_from_slice(s);
            b.extend_from_slice(&tail);
            let len = b.len() as i64;
            Ok((b.freeze(), Reply::Int(len)))
        }),
        KeyOp::SetRange { offset, value } => setrange(cur, offset, value),
        KeyOp::IncrBy(by) => modify(cur.clone(), |s| {
            let n = if cur.is_none() { Some(0) } else { parse_i64(s) };
            let n = n.ok_or(KvError::NotInteger)?;
            let v = n.checked_add(by).ok_or(KvError::Overflow)?;
            Ok((Bytes::from(v.to_string()), Reply::Int(v)))
        }),
        KeyOp::IncrByFloat(by) => modify(cur.clone(), |s| {
            let n = if cur.is_none() {
                Some(0.0)
            } else {
                parse_f64(s)
            };
            let v = n.ok_or(KvError::NotFloat)? + by;
            if !v.is_finite() {
                return Err(KvError::NanOrInfinity);
            }
            let text = Bytes::from(format_f64(v));
            Ok((text.clone(), Reply::Bulk(text)))
        }),
        _ => Applied::err(KvError::WrongType),
    }
}

fn read(cur: &Option<Object>, f: impl FnOnce(Option<&Bytes>) -> Reply) -> Applied {
    match expect(cur, as_str) {
        Ok(s) => Applied::read(f(s)),
        Err(e) => Applied::err(e),
    }
}

/// Read-modify-write of a string, keeping its expiry; a missing key starts
/// empty (INCR on a missing key counts from 0).
fn modify(
    cur: Option<Object>,
    f: impl FnOnce(&Bytes) -> Result<(Bytes, Reply), KvError>,
) -> Applied {
    let (old, expire_at) = match &cur {
        None => (Bytes::new(), None),
        Some(o) => match &o.value {
            Value::Str(s) => (s.clone(), o.expire_at),
            _ => return Applied::err(KvError::WrongType),
        },
    };
    match f(&old) {
        Ok((new, reply)) => Applied::put(
            Object {
                value: Value::Str(new),
                expire_at,
                content_type: None,
            },
            reply,
        ),
        Err(e) => Applied::err(e),
    }
}

fn set(cur: Option<Object>, value: Bytes, expire: SetExpire, cond: SetCond, get: bool) -> Applied {
    let old = if get {
        match expect(&cur, as_str) {
            Ok(s) => Reply::opt_bulk(s.cloned()),
            Err(e) => return Applied::err(e),
        }
    } else {
        Reply::Ok
    };
    let refused = match cond {
        SetCond::Always => false,
        SetCond::IfAbsent => cur.is_some(),
        SetCond::IfPresent => cur.is_none(),
    };
    if refused {
        return Applied::read(if get { old } else { Reply::Nil });
    }
    let expire_at = match expire {
        SetExpire::Clear => None,
        SetExpire::Keep => cur.as_ref().and_then(|o| o.expire_at),
        SetExpire::At(at) => Some(at),
    };
    Applied::put(
        Object {
            value: Value::Str(value),
            expire_at,
            content_type: None,
        },
        old,
    )
}

fn getex(cur: Option<Object>, change: GetExExpire, now_ms: u64) -> Applied {
    let s = match expect(&cur, as_str) {
        Err(e) => return Applied::err(e),
        Ok(None) => return Applied::read(Reply::Nil),
        Ok(Some(s)) => s.clone(),
    };
    let Some(mut o) = cur else {
        return Applied::read(Reply::Nil);
    };
    match change {
        GetExExpire::Keep => Applied::read(Reply::Bulk(s)),
        GetExExpire::Persist if o.expire_at.is_none() => Applied::read(Reply::Bulk(s)),
        GetExExpire::Persist => {
            o.expire_at = None;
            Applied::put(o, Reply::Bulk(s))
        }
        GetExExpire::At(at) if at <= now_ms => Applied::delete(Reply::Bulk(s)),
        GetExExpire::At(at) => {
            o.expire_at = Some(at);
            Applied::put(o, Reply::Bulk(s))
        }
    }
}

fn setrange(cur: Option<Object>, offset: usize, value: Bytes) -> Applied {
    if value.is_empty() {
        // Redis: no change, reply the current length (0 if missing).
        return read(&cur, |s| Reply::Int(s.map_or(0, |s| s.len() as i64)));
    }
    if offset.saturating_add(value.len()) > MAX_STRING {
        return Applied::err(KvError::StringTooLong);
    }
    modify(cur, |s| {
        let mut b = BytesMut::from(&s[..]);
        if b.len() < offset + value.len() {
            b.resize(offset + value.len(), 0);
        }
        b[offset..offset + value.len()].copy_from_slice(&value);
        let len = b.len() as i64;
        Ok((b.freeze(), Reply::Int(len)))
    })
}
