//! Set commands.

use super::keys::scan_args;
use super::{arg_i64, from_kv, is, syntax_error, Call, Handled, Outcome};
use bytes::Bytes;
use colony_kv::{KeyOp, Reply, SetAlgebra};

pub fn dispatch<'a>(name: &str, call: Call<'a>) -> Handled<'a> {
    let a = &call.args;
    let key = a.get(1).cloned().unwrap_or_default();
    Ok(match name {
        "sadd" => call.key_op(key, KeyOp::SAdd(a[2..].to_vec())),
        "srem" => call.key_op(key, KeyOp::SRem(a[2..].to_vec())),
        "smembers" => call.key_op(key, KeyOp::SMembers),
        "sismember" => call.key_op(key, KeyOp::SIsMember(a[2].clone())),
        "smismember" => call.key_op(key, KeyOp::SMIsMember(a[2..].to_vec())),
        "scard" => call.key_op(key, KeyOp::SCard),
        "spop" => match a.get(2).map(|n| arg_i64(n)) {
            None => call.key_op(key, KeyOp::SPop(None)),
            Some(Ok(n)) if n >= 0 => call.key_op(key, KeyOp::SPop(Some(n as usize))),
            Some(Ok(_)) => {
                Outcome::Ready(Err("ERR value is out of range, must be positive".into()))
            }
            Some(Err(e)) => Outcome::Ready(Err(e)),
        },
        "srandmember" => match a.get(2).map(|n| arg_i64(n)).transpose() {
            Ok(n) if a.len() <= 3 => call.key_op(key, KeyOp::SRandMember(n)),
            Ok(_) => Outcome::Ready(Err(syntax_error())),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "smove" => {
            let (src, dst, member) = (a[1].clone(), a[2].clone(), a[3].clone());
            call.barrier(
                |kv, bucket| async move { from_kv(kv.smove(&bucket, src, dst, member).await) },
            )
        }
        "sinter" | "sunion" | "sdiff" => {
            let op = algebra(name);
            let keys = a[1..].to_vec();
            call.barrier(move |kv, bucket| async move {
                let set = from_kv(kv.set_algebra(&bucket, op, keys).await)?;
                Ok(Reply::Set(set.into_iter().map(Reply::Bulk).collect()))
            })
        }
        "sinterstore" | "sunionstore" | "sdiffstore" => {
            let op = algebra(name.trim_end_matches("store"));
            let (dst, keys) = (a[1].clone(), a[2..].to_vec());
            call.barrier(move |kv, bucket| async move {
                from_kv(kv.set_algebra_store(&bucket, op, dst, keys).await)
            })
        }
        "sintercard" => match intercard_args(&a[1..]) {
            Ok((keys, limit)) => call.barrier(move |kv, bucket| async move {
                let n = from_kv(kv.set_algebra(&bucket, SetAlgebra::Inter, keys).await)?.len();
                let n = if limit > 0 { n.min(limit) } else { n };
                Ok(Reply::Int(n as i64))
            }),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "sscan" => match scan_args(&a[2..], false, false) {
            Ok(s) => call.key_op(
                key,
                KeyOp::SScan {
                    cursor: s.cursor,
                    pattern: s.pattern,
                    count: s.count,
                },
            ),
            Err(e) => Outcome::Ready(Err(e)),
        },
        _ => return Err(call),
    })
}

fn algebra(name: &str) -> SetAlgebra {
    match name {
        "sinter" => SetAlgebra::Inter,
        "sunion" => SetAlgebra::Union,
        _ => SetAlgebra::Diff,
    }
}

/// `numkeys key… [LIMIT n]`.
fn intercard_args(rest: &[Bytes]) -> Result<(Vec<Bytes>, usize), String> {
    let n = arg_i64(&rest[0])?;
    if n <= 0 {
        return Err("ERR numkeys should be greater than 0".into());
    }
    let n = n as usize;
    if n > rest.len() - 1 {
        return Err("ERR Number of keys can't be greater than number of args".into());
    }
    let keys = rest[1..=n].to_vec();
    let mut limit = 0usize;
    let mut i = n + 1;
    while i < rest.len() {
        if is(&rest[i], "limit") && i + 1 < rest.len() {
            let l = arg_i64(&rest[i + 1])?;
            if l < 0 {
                return Err("ERR LIMIT can't be negative".into());
            }
            limit = l as usize;
            i += 2;
        } else {
            return Err(syntax_error());
        }
    }
    Ok((keys, limit))
}
