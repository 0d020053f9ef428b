//! String commands.

use super::{
    arg_f64, arg_i64, from_reply, is, now_ms, syntax_error, wrong_arity, Call, Handled, Outcome,
};
use bytes::Bytes;
use colony_kv::op::GetExExpire;
use colony_kv::{KeyOp, KvError, Reply, SetCond, SetExpire};

pub fn dispatch<'a>(name: &str, call: Call<'a>) -> Handled<'a> {
    let a = &call.args;
    let key = a.get(1).cloned().unwrap_or_default();
    Ok(match name {
        "get" => call.key_op(key, KeyOp::Get),
        "set" => match set_args(&a[3..]) {
            Ok((expire, cond, get)) => {
                let op = KeyOp::Set {
                    value: a[2].clone(),
                    expire,
                    cond,
                    get,
                };
                call.key_op(key, op)
            }
            Err(e) => Outcome::Ready(Err(e)),
        },
        "setnx" => call.single(
            key,
            set_op(a[2].clone(), SetExpire::Clear, SetCond::IfAbsent),
            |r| Reply::bool(r == Reply::Ok),
        ),
        "setex" | "psetex" => match relative_expiry(&a[2], name == "setex", name) {
            Ok(at) => call.key_op(
                key,
                set_op(a[3].clone(), SetExpire::At(at), SetCond::Always),
            ),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "getset" => call.key_op(
            key,
            KeyOp::Set {
                value: a[2].clone(),
                expire: SetExpire::Clear,
                cond: SetCond::Always,
                get: true,
            },
        ),
        "getdel" => call.key_op(key, KeyOp::GetDel),
        "getex" => match getex_args(&a[2..]) {
            Ok(change) => call.key_op(key, KeyOp::GetEx(change)),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "mget" => mget(&call),
        "mset" | "msetnx" => mset(&call, name),
        "append" => call.key_op(key, KeyOp::Append(a[2].clone())),
        "strlen" => call.key_op(key, KeyOp::StrLen),
        "getrange" => match (arg_i64(&a[2]), arg_i64(&a[3])) {
            (Ok(start), Ok(end)) => call.key_op(key, KeyOp::GetRange { start, end }),
            (Err(e), _) | (_, Err(e)) => Outcome::Ready(Err(e)),
        },
        "setrange" => setrange(&call, key),
        "incr" => call.key_op(key, KeyOp::IncrBy(1)),
        "decr" => call.key_op(key, KeyOp::IncrBy(-1)),
        "incrby" => match arg_i64(&a[2]) {
            Ok(by) => call.key_op(key, KeyOp::IncrBy(by)),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "decrby" => match arg_i64(&a[2]).and_then(|n| {
            n.checked_neg()
                .ok_or_else(|| "ERR decrement would overflow".to_string())
        }) {
            Ok(by) => call.key_op(key, KeyOp::IncrBy(by)),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "incrbyfloat" => match arg_f64(&a[2]) {
            Ok(by) if by.is_finite() => call.key_op(key, KeyOp::IncrByFloat(by)),
            Ok(_) => Outcome::Ready(Err("ERR increment would produce NaN or Infinity".into())),
            Err(e) => Outcome::Ready(Err(e)),
        },
        _ => return Err(call),
    })
}

fn set_op(value: Bytes, expire: SetExpire, cond: SetCond) -> KeyOp {
    KeyOp::Set {
        value,
        expire,
        cond,
        get: false,
    }
}

/// `now + n` seconds (or ms); n must be positive.
fn relative_expiry(n: &[u8], seconds: bool, cmd: &str) -> Result<u64, String> {
    let n = arg_i64(n)?;
    absolute_expiry(n, seconds, false, cmd)
}

fn absolute_expiry(n: i64, seconds: bool, absolute: bool, cmd: &str) -> Result<u64, String> {
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let ms = if seconds {
        n.checked_mul(1000)
    } else {
        Some(n)
    }
    .ok_or_else(invalid)?;
    let at = if absolute {
        Some(ms)
    } else {
        ms.checked_add(now_ms() as i64)
    };
    at.map(|v| v as u64).ok_or_else(invalid)
}

/// SET's options: `[NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
fn set_args(opts: &[Bytes]) -> Result<(SetExpire, SetCond, bool), String> {
    let mut expire = None;
    let mut cond = SetCond::Always;
    let mut get = false;
    let mut i = 0;
    while i < opts.len() {
        let o = &opts[i];
        if is(o, "nx") && cond != SetCond::IfPresent {
            cond = SetCond::IfAbsent;
        } else if is(o, "xx") && cond != SetCond::IfAbsent {
            cond = SetCond::IfPresent;
        } else if is(o, "get") {
            get = true;
        } else if is(o, "keepttl") && expire.is_none() {
            expire = Some(SetExpire::Keep);
        } else if expire.is_none()
            && ["ex", "px", "exat", "pxat"].iter().any(|n| is(o, n))
            && i + 1 < opts.len()
        {
            let n = arg_i64(&opts[i + 1])?;
            let seconds = is(o, "ex") || is(o, "exat");
            let absolute = is(o, "exat") || is(o, "pxat");
            expire = Some(SetExpire::At(absolute_expiry(n, seconds, absolute, "set")?));
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    Ok((expire.unwrap_or(SetExpire::Clear), cond, get))
}

fn getex_args(opts: &[Bytes]) -> Result<GetExExpire, String> {
    match opts {
        [] => Ok(GetExExpire::Keep),
        [o] if is(o, "persist") => Ok(GetExExpire::Persist),
        [o, n] if ["ex", "px", "exat", "pxat"].iter().any(|x| is(o, x)) => {
            let n = arg_i64(n)?;
            let seconds = is(o, "ex") || is(o, "exat");
            let absolute = is(o, "exat") || is(o, "pxat");
            Ok(GetExExpire::At(absolute_expiry(
                n, seconds, absolute, "getex",
            )?))
        }
        _ => Err(syntax_error()),
    }
}

fn setrange(call: &Call<'_>, key: Bytes) -> Outcome {
    let offset = match arg_i64(&call.args[2]) {
        Ok(n) if n >= 0 => n as usize,
        Ok(_) => return Outcome::Ready(Err("ERR offset is out of range".into())),
        Err(e) => return Outcome::Ready(Err(e)),
    };
    let value = call.args[3].clone();
    call.key_op(key, KeyOp::SetRange { offset, value })
}

fn mget(call: &Call<'_>) -> Outcome {
    let bucket = call.bucket();
    let futs: Vec<_> = call.args[1..]
        .iter()
        .map(|k| {
            call.sess
                .submit(&call.node.kv, &bucket, k.clone(), KeyOp::Get)
        })
        .collect();
    Outcome::Pending(Box::pin(async move {
        let mut out = Vec::with_capacity(futs.len());
        for f in futs {
            out.push(match f.await {
                // MGET answers nil for keys of another type.
                Reply::Error(KvError::WrongType) => Reply::Nil,
                r => from_reply(r)?,
            });
        }
        Ok(Reply::Array(out))
    }))
}

fn mset(call: &Call<'_>, name: &str) -> Outcome {
    let rest = &call.args[1..];
    if !rest.len().is_multiple_of(2) {
        return Outcome::Ready(Err(wrong_arity(if name == "mset" {
            "mset"
        } else {
            "msetnx"
        })));
    }
    let pairs: Vec<(Bytes, Bytes)> = rest
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    if name == "mset" {
        let bucket = call.bucket();
        let futs: Vec<_> = pairs
            .into_iter()
            .map(|(k, v)| {
                let op = set_op(v, SetExpire::Clear, SetCond::Always);
                call.sess.submit(&call.node.kv, &bucket, k, op)
            })
            .collect();
        return Outcome::Pending(Box::pin(async move {
            for f in futs {
                from_reply(f.await)?;
            }
            Ok(Reply::Ok)
        }));
    }
    call.barrier(|kv, bucket| async move { from_reply(kv.msetnx(&bucket, pairs).await) })
}
