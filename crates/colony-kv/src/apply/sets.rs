//! Set operations.

use super::{expect, Applied, Ctx};
use crate::{glob, KeyOp, KvError, Object, Reply, Value};
use bytes::Bytes;
use rand::seq::IteratorRandom;
use rand::Rng;
use std::collections::BTreeSet;

type Set = BTreeSet<Bytes>;

fn as_set(v: &Value) -> Option<&Set> {
    match v {
        Value::Set(s) => Some(s),
        _ => None,
    }
}

pub(super) fn apply(op: KeyOp, cur: Option<Object>, ctx: &mut Ctx<'_>) -> Applied {
    match op {
        KeyOp::SMembers => read(&cur, |s| {
            Reply::Set(s.iter().cloned().map(Reply::Bulk).collect())
        }),
        KeyOp::SIsMember(m) => read(&cur, |s| Reply::bool(s.contains(&m))),
        KeyOp::SMIsMember(ms) => read(&cur, |s| {
            Reply::Array(ms.iter().map(|m| Reply::bool(s.contains(m))).collect())
        }),
        KeyOp::SCard => read(&cur, |s| Reply::Int(s.len() as i64)),
        KeyOp::SRandMember(count) => read(&cur, |s| randmember(s, count, ctx)),
        KeyOp::SScan {
            cursor,
            pattern,
            count,
        } => read(&cur, |s| sscan(s, cursor, pattern.as_deref(), count)),
        KeyOp::SAdd(ms) => modify(cur, |s| {
            Ok(Reply::Int(
                ms.into_iter().filter(|m| s.insert(m.clone())).count() as i64,
            ))
        }),
        KeyOp::SRem(ms) => {
            if cur.is_none() {
                return Applied::read(Reply::Int(0));
            }
            modify(cur, |s| {
                Ok(Reply::Int(ms.iter().filter(|m| s.remove(*m)).count() as i64))
            })
        }
        KeyOp::SPop(count) => {
            if cur.is_none() {
                return Applied::read(if count.is_some() {
                    Reply::Set(Vec::new())
                } else {
                    Reply::Nil
                });
            }
            modify(cur, |s| Ok(spop(s, count, ctx)))
        }
        _ => Applied::err(KvError::WrongType),
    }
}

fn read(cur: &Option<Object>, f: impl FnOnce(&Set) -> Reply) -> Applied {
    let empty = Set::new();
    match expect(cur, as_set) {
        Ok(s) => Applied::read(f(s.unwrap_or(&empty))),
        Err(e) => Applied::err(e),
    }
}

fn modify(cur: Option<Object>, f: impl FnOnce(&mut Set) -> Result<Reply, KvError>) -> Applied {
    let mut obj = match cur {
        None => Object::new(Value::Set(Set::new())),
        Some(o) if matches!(o.value, Value::Set(_)) => o,
        Some(_) => return Applied::err(KvError::WrongType),
    };
    let Value::Set(s) = &mut obj.value else {
        return Applied::err(KvError::WrongType);
    };
    match f(s) {
        Ok(reply) => Applied::put_or_delete(obj, reply),
        Err(e) => Applied::err(e),
    }
}

fn spop(s: &mut Set, count: Option<usize>, ctx: &mut Ctx<'_>) -> Reply {
    match count {
        None => {
            let picked = s.iter().choose(ctx.rng).cloned();
            if let Some(m) = &picked {
                s.remove(m);
            }
            Reply::opt_bulk(picked)
        }
        Some(n) => {
            let picked: Vec<Bytes> = s.iter().cloned().choose_multiple(ctx.rng, n);
            for m in &picked {
                s.remove(m);
            }
            Reply::Set(picked.into_iter().map(Reply::Bulk).collect())
        }
    }
}

fn randmember(s: &Set, count: Option<i64>, ctx: &mut Ctx<'_>) -> Reply {
    match count {
        None => Reply::opt_bulk(s.iter().choose(ctx.rng).cloned()),
        Some(n) if n >= 0 => Reply::Array(
            s.iter()
                .cloned()
                .choose_multiple(ctx.rng, n as usize)
                .into_iter()
                .map(Reply::Bulk)
                .collect(),
        ),
        Some(_) if s.is_empty() => Reply::Array(Vec::new()),
        Some(n) => {
            let items: Vec<&Bytes> = s.iter().collect();
            Reply::Array(
                (0..n.unsigned_abs())
                    .map(|_| Reply::Bulk(items[ctx.rng.random_range(0..items.len())].clone()))
                    .collect(),
            )
        }
    }
}

fn sscan(s: &Set, cursor: u64, pattern: Option<&[u8]>, count: usize) -> Reply {
    let count = if s.len() <= 512 {
        s.len()
    } else {
        count.max(1)
    };
    let start = cursor as usize;
    let items = s
        .iter()
        .skip(start)
        .take(count)
        .filter(|m| pattern.is_none_or(|p| glob::matches(p, m)))
        .cloned()
        .map(Reply::Bulk)
        .collect();
    let next = start + count;
    let next = if next >= s.len() { 0 } else { next };
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(items)])
}
