//! Hash commands.

use super::keys::scan_args;
use super::{arg_f64, arg_i64, is, syntax_error, wrong_arity, Call, Handled, Outcome};
use bytes::Bytes;
use colony_kv::{KeyOp, Reply};

pub fn dispatch<'a>(name: &str, call: Call<'a>) -> Handled<'a> {
    let a = &call.args;
    let key = a[1].clone();
    Ok(match name {
        "hset" | "hmset" => {
            let rest = &a[2..];
            if !rest.len().is_multiple_of(2) {
                return Ok(Outcome::Ready(Err(wrong_arity(name))));
            }
            let pairs = rest
                .chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            let op = KeyOp::HSet { pairs, nx: false };
            if name == "hmset" {
                call.single(key, op, |_| Reply::Ok)
            } else {
                call.key_op(key, op)
            }
        }
        "hsetnx" => call.key_op(
            key,
            KeyOp::HSet {
                pairs: vec![(a[2].clone(), a[3].clone())],
                nx: true,
            },
        ),
        "hget" => call.key_op(key, KeyOp::HGet(a[2].clone())),
        "hmget" => call.key_op(key, KeyOp::HMGet(a[2..].to_vec())),
        "hdel" => call.key_op(key, KeyOp::HDel(a[2..].to_vec())),
        "hgetall" => call.key_op(key, KeyOp::HGetAll),
        "hkeys" => call.key_op(key, KeyOp::HKeys),
        "hvals" => call.key_op(key, KeyOp::HVals),
        "hlen" => call.key_op(key, KeyOp::HLen),
        "hexists" => call.key_op(key, KeyOp::HExists(a[2].clone())),
        "hstrlen" => call.key_op(key, KeyOp::HStrLen(a[2].clone())),
        "hincrby" => match arg_i64(&a[3]) {
            Ok(by) => call.key_op(key, KeyOp::HIncrBy(a[2].clone(), by)),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "hincrbyfloat" => match arg_f64(&a[3]) {
            Ok(by) if by.is_finite() => call.key_op(key, KeyOp::HIncrByFloat(a[2].clone(), by)),
            Ok(_) => Outcome::Ready(Err("ERR increment would produce NaN or Infinity".into())),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "hrandfield" => match randfield_args(&a[2..]) {
            Ok((count, with_values)) => call.key_op(key, KeyOp::HRandField { count, with_values }),
            Err(e) => Outcome::Ready(Err(e)),
        },
        "hscan" => match scan_args(&a[2..], false, true) {
            Ok(s) => call.key_op(
                key,
                KeyOp::HScan {
                    cursor: s.cursor,
                    pattern: s.pattern,
                    count: s.count,
                    novalues: s.novalues,
                },
            ),
            Err(e) => Outcome::Ready(Err(e)),
        },
        _ => return Err(call),
    })
}

fn randfield_args(rest: &[Bytes]) -> Result<(Option<i64>, bool), String> {
    match rest {
        [] => Ok((None, false)),
        [n] => Ok((Some(arg_i64(n)?), false)),
        [n, w] if is(w, "withvalues") => Ok((Some(arg_i64(n)?), true)),
        _ => Err(syntax_error()),
    }
}
