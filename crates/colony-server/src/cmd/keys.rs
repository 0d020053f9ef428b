//! Generic key commands: DEL, EXISTS, TYPE, expiry, KEYS, SCAN, RENAME…

use super::{arg_i64, from_kv, from_reply, is, now_ms, syntax_error, Call, Handled, Outcome};
use bytes::Bytes;
use colony_kv::op::ExpireCond;
use colony_kv::{KeyOp, Reply, ValueKind};

pub fn dispatch<'a>(name: &str, call: Call<'a>) -> Handled<'a> {
    let a = &call.args;
    Ok(match name {
        "del" | "unlink" => sum_each(&call, a[1..].to_vec(), KeyOp::Del),
        "exists" => sum_each(&call, a[1..].to_vec(), KeyOp::Exists),
        "type" => call.key_op(a[1].clone(), KeyOp::Type),
        "ttl" => call.key_op(a[1].clone(), KeyOp::Ttl { ms: false }),
        "pttl" => call.key_op(a[1].clone(), KeyOp::Ttl { ms: true }),
        "persist" => call.key_op(a[1].clone(), KeyOp::Persist),
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(&call, name),
        "keys" => {
            let pattern = pattern_of(&a[1]);
            call.barrier(|kv, bucket| async move {
                let keys = from_kv(kv.keys(&bucket, pattern).await)?;
                Ok(Reply::Array(keys.into_iter().map(Reply::Bulk).collect()))
            })
        }
        "scan" => scan(&call),
        "randomkey" => call.barrier(|kv, bucket| async move {
            Ok(Reply::opt_bulk(from_kv(kv.random_key(&bucket).await)?))
        }),
        "rename" | "renamenx" => {
            let (from, to, nx) = (a[1].clone(), a[2].clone(), name == "renamenx");
            call.barrier(move |kv, bucket| async move {
                from_kv(kv.rename(&bucket, from, to, nx).await)
            })
        }
        _ => return Err(call),
    })
}

/// Apply `op` to each key (sent now) and reply the sum of the integers.
pub fn sum_each(call: &Call<'_>, keys: Vec<Bytes>, op: KeyOp) -> Outcome {
    let bucket = call.bucket();
    let futs: Vec<_> = keys
        .into_iter()
        .map(|k| call.sess.submit(&call.node.kv, &bucket, k, op.clone()))
        .collect();
    Outcome::Pending(Box::pin(async move {
        let mut n = 0;
        for f in futs {
            if let Reply::Int(i) = from_reply(f.await)? {
                n += i;
            }
        }
        Ok(Reply::Int(n))
    }))
}

fn expire(call: &Call<'_>, name: &str) -> Outcome {
    let a = &call.args;
    match expire_args(name, &a[2..]) {
        Ok((at, cond)) => call.key_op(a[1].clone(), KeyOp::Expire { at, cond }),
        Err(e) => Outcome::Ready(Err(e)),
    }
}

/// Parse `time [NX|XX|GT|LT]…` into an absolute time in ms and a condition.
fn expire_args(name: &str, rest: &[Bytes]) -> Result<(u64, ExpireCond), String> {
    let n = arg_i64(&rest[0])?;
    let invalid = || format!("ERR invalid expire time in '{name}' command");
    let now = now_ms() as i64;
    let at = match name {
        "expire" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "pexpire" => n.checked_add(now),
        "expireat" => n.checked_mul(1000),
        _ => Some(n),
    }
    .ok_or_else(invalid)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &rest[1..] {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            return Err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let cond = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::Nx,
        (_, _, true, _) => ExpireCond::Gt,
        (_, true, _, true) => ExpireCond::XxLt,
        (_, _, _, true) => ExpireCond::Lt,
        (_, true, ..) => ExpireCond::Xx,
        _ => ExpireCond::Always,
    };
    Ok((at.max(0) as u64, cond))
}

pub fn pattern_of(p: &Bytes) -> Option<Bytes> {
    (&p[..] != b"*").then(|| p.clone())
}

/// Parse `cursor [MATCH p] [COUNT n] [TYPE t]`, shared with HSCAN/SSCAN.
pub struct ScanArgs {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub kind: Option<Option<ValueKind>>,
    pub novalues: bool,
}

pub fn scan_args(
    args: &[Bytes],
    allow_type: bool,
    allow_novalues: bool,
) -> Result<ScanArgs, String> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "ERR invalid cursor".to_string())?;
    let mut out = ScanArgs {
        cursor,
        pattern: None,
        count: 10,
        kind: None,
        novalues: false,
    };
    let mut i = 1;
    while i < args.len() {
        let opt = &args[i];
        if allow_novalues && is(opt, "novalues") {
            out.novalues = true;
            i += 1;
            continue;
        }
        let val = args.get(i + 1).ok_or_else(syntax_error)?;
        if is(opt, "match") {
            out.pattern = pattern_of(val);
        } else if is(opt, "count") {
            let n = arg_i64(val)?;
            if n < 1 {
                return Err(syntax_error());
            }
            out.count = n as usize;
        } else if allow_type && is(opt, "type") {
            out.kind = Some(kind_named(val));
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    Ok(out)
}

fn kind_named(name: &[u8]) -> Option<ValueKind> {
    [ValueKind::Str, ValueKind::Hash, ValueKind::Set]
        .into_iter()
        .find(|k| is(name, k.redis_name()))
}

fn scan(call: &Call<'_>) -> Outcome {
    let args = match scan_args(&call.args[1..], true, false) {
        Ok(a) => a,
        Err(e) => return Outcome::Ready(Err(e)),
    };
    call.barrier(move |kv, bucket| async move {
        // TYPE naming a kind we do not store matches nothing.
        if let Some(None) = args.kind {
            return Ok(scan_reply(0, Vec::new()));
        }
        let page = from_kv(
            kv.scan(
                &bucket,
                args.cursor,
                args.count,
                args.pattern,
                args.kind.flatten(),
            )
            .await,
        )?;
        Ok(scan_reply(page.cursor, page.keys))
    })
}

fn scan_reply(cursor: u64, keys: Vec<Bytes>) -> Reply {
    Reply::Array(vec![
        Reply::bulk(cursor.to_string()),
        Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
    ])
}
