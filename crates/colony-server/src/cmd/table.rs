//! The command table: every command Colony serves, with Redis's arity and
//! key positions, used for arity checks and for COMMAND.

use std::collections::HashMap;
use std::sync::OnceLock;

/// One command: `arity` as Redis gives it (exact if positive, a minimum if
/// negative, counting the name).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom", "fast"];
const WS: &[&str] = &["write"];
const RS: &[&str] = &["readonly"];
const C: &[&str] = &["fast", "loading", "stale"];

const fn s(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    first: i32,
    last: i32,
    step: i32,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: first,
        last_key: last,
        step,
    }
}

pub const COMMANDS: &[Spec] = &[
    // Connection.
    s("ping", -1, C, 0, 0, 0),
    s("echo", 2, C, 0, 0, 0),
    s("hello", -1, C, 0, 0, 0),
    s("select", 2, C, 0, 0, 0),
    s("quit", -1, C, 0, 0, 0),
    s("reset", 1, C, 0, 0, 0),
    s("client", -2, C, 0, 0, 0),
    s("command", -1, C, 0, 0, 0),
    s("auth", -2, C, 0, 0, 0),
    // Server.
    s("info", -1, C, 0, 0, 0),
    s("dbsize", 1, R, 0, 0, 0),
    s("flushdb", -1, WS, 0, 0, 0),
    s("flushall", -1, WS, 0, 0, 0),
    s("time", 1, C, 0, 0, 0),
    s("config", -2, C, 0, 0, 0),
    // Keys.
    s("del", -2, WS, 1, -1, 1),
    s("unlink", -2, W, 1, -1, 1),
    s("exists", -2, R, 1, -1, 1),
    s("type", 2, R, 1, 1, 1),
    s("expire", -3, W, 1, 1, 1),
    s("pexpire", -3, W, 1, 1, 1),
    s("expireat", -3, W, 1, 1, 1),
    s("pexpireat", -3, W, 1, 1, 1),
    s("ttl", 2, R, 1, 1, 1),
    s("pttl", 2, R, 1, 1, 1),
    s("persist", 2, W, 1, 1, 1),
    s("keys", 2, RS, 0, 0, 0),
    s("scan", -2, RS, 0, 0, 0),
    s("randomkey", 1, RS, 0, 0, 0),
    s("rename", 3, WS, 1, 2, 1),
    s("renamenx", 3, W, 1, 2, 1),
    // Strings.
    s("get", 2, R, 1, 1, 1),
    s("set", -3, W, 1, 1, 1),
    s("setnx", 3, W, 1, 1, 1),
    s("setex", 4, W, 1, 1, 1),
    s("psetex", 4, W, 1, 1, 1),
    s("getset", 3, W, 1, 1, 1),
    s("getdel", 2, W, 1, 1, 1),
    s("getex", -2, W, 1, 1, 1),
    s("mget", -2, R, 1, -1, 1),
    s("mset", -3, W, 1, -1, 2),
    s("msetnx", -3, W, 1, -1, 2),
    s("append", 3, W, 1, 1, 1),
    s("strlen", 2, R, 1, 1, 1),
    s("getrange", 4, RS, 1, 1, 1),
    s("setrange", 4, W, 1, 1, 1),
    s("incr", 2, W, 1, 1, 1),
    s("decr", 2, W, 1, 1, 1),
    s("incrby", 3, W, 1, 1, 1),
    s("decrby", 3, W, 1, 1, 1),
    s("incrbyfloat", 3, W, 1, 1, 1),
    // Hashes.
    s("hset", -4, W, 1, 1, 1),
    s("hsetnx", 4, W, 1, 1, 1),
    s("hget", 3, R, 1, 1, 1),
    s("hmget", -3, R, 1, 1, 1),
    s("hmset", -4, W, 1, 1, 1),
    s("hdel", -3, W, 1, 1, 1),
    s("hgetall", 2, RS, 1, 1, 1),
    s("hkeys", 2, RS, 1, 1, 1),
    s("hvals", 2, RS, 1, 1, 1),
    s("hlen", 2, R, 1, 1, 1),
    s("hexists", 3, R, 1, 1, 1),
    s("hstrlen", 3, R, 1, 1, 1),
    s("hincrby", 4, W, 1, 1, 1),
    s("hincrbyfloat", 4, W, 1, 1, 1),
    s("hrandfield", -2, RS, 1, 1, 1),
    s("hscan", -3, RS, 1, 1, 1),
    // Sets.
    s("sadd", -3, W, 1, 1, 1),
    s("srem", -3, W, 1, 1, 1),
    s("smembers", 2, RS, 1, 1, 1),
    s("sismember", 3, R, 1, 1, 1),
    s("smismember", -3, R, 1, 1, 1),
    s("scard", 2, R, 1, 1, 1),
    s("spop", -2, W, 1, 1, 1),
    s("srandmember", -2, RS, 1, 1, 1),
    s("smove", 4, W, 1, 2, 1),
    s("sinter", -2, RS, 1, -1, 1),
    s("sunion", -2, RS, 1, -1, 1),
    s("sdiff", -2, RS, 1, -1, 1),
    s("sinterstore", -3, WS, 1, -1, 1),
    s("sunionstore", -3, WS, 1, -1, 1),
    s("sdiffstore", -3, WS, 1, -1, 1),
    s("sintercard", -3, RS, 0, 0, 0),
    s("sscan", -3, RS, 1, 1, 1),
];

/// Look a command up by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<(usize, &'static Spec)> {
    static INDEX: OnceLock<HashMap<&'static [u8], usize>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_bytes(), i))
            .collect()
    });
    if name.len() > 16 {
        return None;
    }
    let mut lower = [0u8; 16];
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let i = *index.get(&lower[..name.len()])?;
    Some((i, &COMMANDS[i]))
}

impl Spec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }
}
