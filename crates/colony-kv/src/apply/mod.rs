//! Pure application of a [`KeyOp`] to a key's current object: no I/O, no
//! clock reads, no locks. The vnode supplies the (already expiry-filtered)
//! current object, the time and a seeded RNG, and stores what comes back.

mod hashes;
mod sets;
mod strings;

use crate::op::ExpireCond;
use crate::{KeyOp, KvError, Object, Reply, Value};
use rand::rngs::SmallRng;

/// What to do to the stored object.
#[derive(Debug, PartialEq)]
pub(crate) enum Write {
    None,
    Put(Object),
    Delete,
}

/// What to answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Out {
    Reply(Reply),
    Object(Option<Object>),
}

#[derive(Debug, PartialEq)]
pub(crate) struct Applied {
    pub write: Write,
    pub out: Out,
}

impl Applied {
    pub(crate) fn read(reply: Reply) -> Self {
        Self {
            write: Write::None,
            out: Out::Reply(reply),
        }
    }
    pub(crate) fn err(e: KvError) -> Self {
        Self::read(Reply::Error(e))
    }
    pub(crate) fn put(object: Object, reply: Reply) -> Self {
        Self {
            write: Write::Put(object),
            out: Out::Reply(reply),
        }
    }
    /// Store `object`, or delete the key if it is an empty collection.
    pub(crate) fn put_or_delete(object: Object, reply: Reply) -> Self {
        let write = if object.value.is_empty_collection() {
            Write::Delete
        } else {
            Write::Put(object)
        };
        Self {
            write,
            out: Out::Reply(reply),
        }
    }
    pub(crate) fn delete(reply: Reply) -> Self {
        Self {
            write: Write::Delete,
            out: Out::Reply(reply),
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub now_ms: u64,
    pub rng: &'a mut SmallRng,
}

pub(crate) fn apply(op: KeyOp, cur: Option<Object>, ctx: &mut Ctx<'_>) -> Applied {
    use KeyOp::*;
    match op {
        Exists => Applied::read(Reply::bool(cur.is_some())),
        Type => Applied::read(Reply::Status(
            cur.map_or("none", |o| o.value.kind().redis_name()).into(),
        )),
        Del => match cur {
            Some(_) => Applied::delete(Reply::Int(1)),
            None => Applied::read(Reply::Int(0)),
        },
        Ttl { ms } => Applied::read(ttl(cur.as_ref(), ctx.now_ms, ms)),
        Expire { at, cond } => expire(cur, at, cond, ctx.now_ms),
        Persist => match cur {
            Some(mut o) if o.expire_at.is_some() => {
                o.expire_at = None;
                Applied::put(o, Reply::Int(1))
            }
            _ => Applied::read(Reply::Int(0)),
        },
        Fetch => Applied {
            write: Write::None,
            out: Out::Object(cur),
        },
        Take => Applied {
            write: if cur.is_some() {
                Write::Delete
            } else {
                Write::None
            },
            out: Out::Object(cur),
        },
        Put { object, nx } => {
            if nx && cur.is_some() {
                Applied::read(Reply::Int(0))
            } else {
                Applied::put(*object, Reply::Int(1))
            }
        }
        Replace(Some(object)) => Applied::put_or_delete(*object, Reply::Ok),
        Replace(None) => Applied::delete(Reply::Ok),
        op @ (Get
        | Set { .. }
        | GetDel
        | GetEx(_)
        | Append(_)
        | StrLen
        | GetRange { .. }
        | SetRange { .. }
        | IncrBy(_)
        | IncrByFloat(_)) => strings::apply(op, cur, ctx),
        op @ (SAdd(_)
        | SRem(_)
        | SMembers
        | SIsMember(_)
        | SMIsMember(_)
        | SCard
        | SPop(_)
        | SRandMember(_)
        | SScan { .. }) => sets::apply(op, cur, ctx),
        FetchDoc | PutCtx(_) | DelCtx(_) => Applied::err(KvError::Storage(
            "an operation on the replicated object reached the plain-value path".into(),
        )),
        op => hashes::apply(op, cur, ctx),
    }
}

fn ttl(cur: Option<&Object>, now_ms: u64, ms: bool) -> Reply {
    match cur {
        None => Reply::Int(-2),
        Some(Object {
            expire_at: None, ..
        }) => Reply::Int(-1),
        Some(Object {
            expire_at: Some(at),
            ..
        }) => {
            let left = at.saturating_sub(now_ms) as i64;
            Reply::Int(if ms { left } else { (left + 500) / 1000 })
        }
    }
}

fn expire(cur: Option<Object>, at: u64, cond: ExpireCond, now_ms: u64) -> Applied {
    let Some(mut o) = cur else {
        return Applied::read(Reply::Int(0));
    };
    let allowed = match (cond, o.expire_at) {
        (ExpireCond::Always, _) => true,
        (ExpireCond::Nx, current) => current.is_none(),
        (ExpireCond::Xx, current) => current.is_some(),
        // No expiry counts as an infinite TTL.
        (ExpireCond::Gt, current) => current.is_some_and(|c| at > c),
        (ExpireCond::Lt, current) => current.is_none_or(|c| at < c),
        (ExpireCond::XxLt, current) => current.is_some_and(|c| at < c),
    };
    if !allowed {
        return Applied::read(Reply::Int(0));
    }
    if at <= now_ms {
        return Applied::delete(Reply::Int(1));
    }
    o.expire_at = Some(at);
    Applied::put(o, Reply::Int(1))
}

/// The current object if it holds the wanted kind; `Err(WrongType)` if it
/// holds another.
pub(crate) fn expect<'a, T>(
    cur: &'a Option<Object>,
    pick: impl Fn(&'a Value) -> Option<T>,
) -> Result<Option<T>, KvError> {
    match cur {
        None => Ok(None),
        Some(o) => pick(&o.value).map(Some).ok_or(KvError::WrongType),
    }
}

/// Normalise Redis's inclusive, possibly negative `[start, end]` range over
/// `len` items into a half-open range, or None when empty.
pub(crate) fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let s = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let e = if end < 0 { len + end } else { end.min(len - 1) };
    if s > e || s >= len || len == 0 {
        return None;
    }
    Some((s as usize, e as usize + 1))
}

/// Parse a string the way Redis parses integers: optional `-`, no leading
/// zeros, no spaces or `+`, within i64.
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|c| c.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    s.parse().ok()
}

/// Parse a float the way Redis does for INCRBYFLOAT: no spaces, finite.
pub(crate) fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// Format a float as Redis does for INCRBYFLOAT replies: shortest
/// round-trip decimal, no exponent, no trailing zeros.
pub(crate) fn format_f64(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    format!("{v}")
}

#[cfg(test)]
mod tests;
