//! The command table: every command Colony serves, with Redis's arity and
//! key positions, used for arity checks and for COMMAND.

use std::collections::HashMap;
use std::sync::OnceLock;

/// One command: `arity` as Redis gives it (exact if positive, a minimum if
/// negative, counting the name).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The handler module that runs it.
    pub group: Group,
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

/// Which handler module runs a command: dispatch goes straight there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Connection and server commands.
    Server,
    Keys,
    Strings,
    Hashes,
    Sets,
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom", "fast"];
const WS: &[&str] = &["write"];
const RS: &[&str] = &["readonly"];
const C: &[&str] = &["fast", "loading", "stale"];

const fn s(
    group: Group,
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    first: i32,
    last: i32,
    step: i32,
) -> Spec {
    Spec {
        group,
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
    s(Group::Server, "ping", -1, C, 0, 0, 0),
    s(Group::Server, "echo", 2, C, 0, 0, 0),
    s(Group::Server, "hello", -1, C, 0, 0, 0),
    s(Group::Server, "select", 2, C, 0, 0, 0),
    s(Group::Server, "quit", -1, C, 0, 0, 0),
    s(Group::Server, "reset", 1, C, 0, 0, 0),
    s(Group::Server, "client", -2, C, 0, 0, 0),
    s(Group::Server, "command", -1, C, 0, 0, 0),
    s(Group::Server, "auth", -2, C, 0, 0, 0),
    // Server.
    s(Group::Server, "info", -1, C, 0, 0, 0),
    s(Group::Server, "dbsize", 1, R, 0, 0, 0),
    s(Group::Server, "flushdb", -1, WS, 0, 0, 0),
    s(Group::Server, "flushall", -1, WS, 0, 0, 0),
    s(Group::Server, "time", 1, C, 0, 0, 0),
    s(Group::Server, "config", -2, C, 0, 0, 0),
    // Keys.
    s(Group::Keys, "del", -2, WS, 1, -1, 1),
    s(Group::Keys, "unlink", -2, W, 1, -1, 1),
    s(Group::Keys, "exists", -2, R, 1, -1, 1),
    s(Group::Keys, "type", 2, R, 1, 1, 1),
    s(Group::Keys, "expire", -3, W, 1, 1, 1),
    s(Group::Keys, "pexpire", -3, W, 1, 1, 1),
    s(Group::Keys, "expireat", -3, W, 1, 1, 1),
    s(Group::Keys, "pexpireat", -3, W, 1, 1, 1),
    s(Group::Keys, "ttl", 2, R, 1, 1, 1),
    s(Group::Keys, "pttl", 2, R, 1, 1, 1),
    s(Group::Keys, "persist", 2, W, 1, 1, 1),
    s(Group::Keys, "keys", 2, RS, 0, 0, 0),
    s(Group::Keys, "scan", -2, RS, 0, 0, 0),
    s(Group::Keys, "randomkey", 1, RS, 0, 0, 0),
    s(Group::Keys, "rename", 3, WS, 1, 2, 1),
    s(Group::Keys, "renamenx", 3, W, 1, 2, 1),
    // Strings.
    s(Group::Strings, "get", 2, R, 1, 1, 1),
    s(Group::Strings, "set", -3, W, 1, 1, 1),
    s(Group::Strings, "setnx", 3, W, 1, 1, 1),
    s(Group::Strings, "setex", 4, W, 1, 1, 1),
    s(Group::Strings, "psetex", 4, W, 1, 1, 1),
    s(Group::Strings, "getset", 3, W, 1, 1, 1),
    s(Group::Strings, "getdel", 2, W, 1, 1, 1),
    s(Group::Strings, "getex", -2, W, 1, 1, 1),
    s(Group::Strings, "mget", -2, R, 1, -1, 1),
    s(Group::Strings, "mset", -3, W, 1, -1, 2),
    s(Group::Strings, "msetnx", -3, W, 1, -1, 2),
    s(Group::Strings, "append", 3, W, 1, 1, 1),
    s(Group::Strings, "strlen", 2, R, 1, 1, 1),
    s(Group::Strings, "getrange", 4, RS, 1, 1, 1),
    s(Group::Strings, "setrange", 4, W, 1, 1, 1),
    s(Group::Strings, "incr", 2, W, 1, 1, 1),
    s(Group::Strings, "decr", 2, W, 1, 1, 1),
    s(Group::Strings, "incrby", 3, W, 1, 1, 1),
    s(Group::Strings, "decrby", 3, W, 1, 1, 1),
    s(Group::Strings, "incrbyfloat", 3, W, 1, 1, 1),
    // Hashes.
    s(Group::Hashes, "hset", -4, W, 1, 1, 1),
    s(Group::Hashes, "hsetnx", 4, W, 1, 1, 1),
    s(Group::Hashes, "hget", 3, R, 1, 1, 1),
    s(Group::Hashes, "hmget", -3, R, 1, 1, 1),
    s(Group::Hashes, "hmset", -4, W, 1, 1, 1),
    s(Group::Hashes, "hdel", -3, W, 1, 1, 1),
    s(Group::Hashes, "hgetall", 2, RS, 1, 1, 1),
    s(Group::Hashes, "hkeys", 2, RS, 1, 1, 1),
    s(Group::Hashes, "hvals", 2, RS, 1, 1, 1),
    s(Group::Hashes, "hlen", 2, R, 1, 1, 1),
    s(Group::Hashes, "hexists", 3, R, 1, 1, 1),
    s(Group::Hashes, "hstrlen", 3, R, 1, 1, 1),
    s(Group::Hashes, "hincrby", 4, W, 1, 1, 1),
    s(Group::Hashes, "hincrbyfloat", 4, W, 1, 1, 1),
    s(Group::Hashes, "hrandfield", -2, RS, 1, 1, 1),
    s(Group::Hashes, "hscan", -3, RS, 1, 1, 1),
    // Sets.
    s(Group::Sets, "sadd", -3, W, 1, 1, 1),
    s(Group::Sets, "srem", -3, W, 1, 1, 1),
    s(Group::Sets, "smembers", 2, RS, 1, 1, 1),
    s(Group::Sets, "sismember", 3, R, 1, 1, 1),
    s(Group::Sets, "smismember", -3, R, 1, 1, 1),
    s(Group::Sets, "scard", 2, R, 1, 1, 1),
    s(Group::Sets, "spop", -2, W, 1, 1, 1),
    s(Group::Sets, "srandmember", -2, RS, 1, 1, 1),
    s(Group::Sets, "smove", 4, W, 1, 2, 1),
    s(Group::Sets, "sinter", -2, RS, 1, -1, 1),
    s(Group::Sets, "sunion", -2, RS, 1, -1, 1),
    s(Group::Sets, "sdiff", -2, RS, 1, -1, 1),
    s(Group::Sets, "sinterstore", -3, WS, 1, -1, 1),
    s(Group::Sets, "sunionstore", -3, WS, 1, -1, 1),
    s(Group::Sets, "sdiffstore", -3, WS, 1, -1, 1),
    s(Group::Sets, "sintercard", -3, RS, 0, 0, 0),
    s(Group::Sets, "sscan", -3, RS, 1, 1, 1),
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
