//! Hash operations.

use super::{expect, format_f64, parse_f64, parse_i64, Applied, Ctx};
use crate::{glob, KeyOp, KvError, Object, Reply, Value};
use bytes::Bytes;
use rand::seq::IteratorRandom;
use rand::Rng;
use std::collections::BTreeMap;

type Hash = BTreeMap<Bytes, Bytes>;

fn as_hash(v: &Value) -> Option<&Hash> {
    match v {
        Value::Hash(h) => Some(h),
        _ => None,
    }
}

pub(super) fn apply(op: KeyOp, cur: Option<Object>, ctx: &mut Ctx<'_>) -> Applied {
    match op {
        KeyOp::HGet(f) => read(&cur, |h| Reply::opt_bulk(h.get(&f).cloned())),
        KeyOp::HMGet(fs) => read(&cur, |h| {
            Reply::Array(
                fs.iter()
                    .map(|f| Reply::opt_bulk(h.get(f).cloned()))
                    .collect(),
            )
        }),
        KeyOp::HGetAll => read(&cur, |h| {
            Reply::Map(
                h.iter()
                    .map(|(f, v)| (Reply::Bulk(f.clone()), Reply::Bulk(v.clone())))
                    .collect(),
            )
        }),
        KeyOp::HKeys => read(&cur, |h| {
            Reply::Array(h.keys().cloned().map(Reply::Bulk).collect())
        }),
        KeyOp::HVals => read(&cur, |h| {
            Reply::Array(h.values().cloned().map(Reply::Bulk).collect())
        }),
        KeyOp::HLen => read(&cur, |h| Reply::Int(h.len() as i64)),
        KeyOp::HExists(f) => read(&cur, |h| Reply::bool(h.contains_key(&f))),
        KeyOp::HStrLen(f) => read(&cur, |h| {
            Reply::Int(h.get(&f).map_or(0, |v| v.len() as i64))
        }),
        KeyOp::HRandField { count, with_values } => {
            read(&cur, |h| randfield(h, count, with_values, ctx))
        }
        KeyOp::HScan {
            cursor,
            pattern,
            count,
            novalues,
        } => read(&cur, |h| {
            hscan(h, cursor, pattern.as_deref(), count, novalues)
        }),
        KeyOp::HSet { pairs, nx } => modify(cur, |h| {
            let mut added = 0;
            for (f, v) in pairs {
                if nx && h.contains_key(&f) {
                    continue;
                }
                if h.insert(f, v).is_none() {
                    added += 1;
                }
            }
            Ok(Reply::Int(added))
        }),
        KeyOp::HDel(fs) => {
            if cur.is_none() {
                return Applied::read(Reply::Int(0));
            }
            modify(cur, |h| {
                Ok(Reply::Int(
                    fs.iter().filter(|f| h.remove(*f).is_some()).count() as i64,
                ))
            })
        }
        KeyOp::HIncrBy(f, by) => modify(cur, |h| {
            let n = match h.get(&f) {
                None => 0,
                Some(v) => parse_i64(v).ok_or(KvError::HashNotInteger)?,
            };
            let v = n.checked_add(by).ok_or(KvError::Overflow)?;
            h.insert(f, Bytes::from(v.to_string()));
            Ok(Reply::Int(v))
        }),
        KeyOp::HIncrByFloat(f, by) => modify(cur, |h| {
            let n = match h.get(&f) {
                None => 0.0,
                Some(v) => parse_f64(v).ok_or(KvError::HashNotFloat)?,
            };
            let v = n + by;
            if !v.is_finite() {
                return Err(KvError::NanOrInfinity);
            }
            let text = Bytes::from(format_f64(v));
            h.insert(f, text.clone());
            Ok(Reply::Bulk(text))
        }),
        _ => Applied::err(KvError::WrongType),
    }
}

fn read(cur: &Option<Object>, f: impl FnOnce(&Hash) -> Reply) -> Applied {
    let empty = Hash::new();
    match expect(cur, as_hash) {
        Ok(h) => Applied::read(f(h.unwrap_or(&empty))),
        Err(e) => Applied::err(e),
    }
}

/// Change a hash in place; an error leaves it untouched; an emptied hash is
/// deleted.
fn modify(cur: Option<Object>, f: impl FnOnce(&mut Hash) -> Result<Reply, KvError>) -> Applied {
    let mut obj = match cur {
        None => Object::new(Value::Hash(Hash::new())),
        Some(o) if matches!(o.value, Value::Hash(_)) => o,
        Some(_) => return Applied::err(KvError::WrongType),
    };
    let Value::Hash(h) = &mut obj.value else {
        return Applied::err(KvError::WrongType);
    };
    match f(h) {
        Ok(reply) => Applied::put_or_delete(obj, reply),
        Err(e) => Applied::err(e),
    }
}

fn randfield(h: &Hash, count: Option<i64>, with_values: bool, ctx: &mut Ctx<'_>) -> Reply {
    let Some(count) = count else {
        return Reply::opt_bulk(h.keys().choose(ctx.rng).cloned());
    };
    let picked: Vec<(&Bytes, &Bytes)> = if count >= 0 {
        // Distinct fields, as many as asked or as there are.
        let mut v = h.iter().choose_multiple(ctx.rng, count as usize);
        v.sort();
        v
    } else if h.is_empty() {
        Vec::new()
    } else {
        // Negative count: exactly |count| picks, repeats allowed.
        let items: Vec<_> = h.iter().collect();
        (0..count.unsigned_abs())
            .map(|_| items[ctx.rng.random_range(0..items.len())])
            .collect()
    };
    if with_values {
        return Reply::Pairs(
            picked
                .into_iter()
                .map(|(f, v)| (Reply::Bulk(f.clone()), Reply::Bulk(v.clone())))
                .collect(),
        );
    }
    Reply::Array(
        picked
            .into_iter()
            .map(|(f, _)| Reply::Bulk(f.clone()))
            .collect(),
    )
}

/// Cursor over the hash in field order: the cursor counts fields already
/// returned. Small hashes come back whole, like Redis's compact encodings.
fn hscan(h: &Hash, cursor: u64, pattern: Option<&[u8]>, count: usize, novalues: bool) -> Reply {
    let count = if h.len() <= 512 {
        h.len()
    } else {
        count.max(1)
    };
    let start = cursor as usize;
    let mut items = Vec::new();
    for (f, v) in h.iter().skip(start).take(count) {
        if pattern.is_some_and(|p| !glob::matches(p, f)) {
            continue;
        }
        items.push(Reply::Bulk(f.clone()));
        if !novalues {
            items.push(Reply::Bulk(v.clone()));
        }
    }
    let next = start + count;
    let next = if next >= h.len() { 0 } else { next };
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(items)])
}
