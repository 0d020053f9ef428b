//! Connection and server commands: PING, HELLO, SELECT, CLIENT, COMMAND,
//! INFO, CONFIG, DBSIZE, FLUSHDB, TIME…

use super::table::{lookup, COMMANDS};
use super::{arg_i64, from_kv, is, syntax_error, Call, Handled, Outcome};
use crate::resp::Protocol;
use crate::state::{bucket_of_db, ClientInfo};
use bytes::Bytes;
use colony_kv::{glob, Reply};
use std::collections::BTreeMap;

/// Redis version reported to clients, for their feature checks.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";
/// SELECT accepts databases 0..DATABASES.
pub const DATABASES: u32 = 16;

pub fn dispatch<'a>(name: &str, call: Call<'a>) -> Handled<'a> {
    let a = &call.args;
    Ok(match name {
        "ping" => Outcome::Ready(match a.len() {
            1 => Ok(Reply::Status("PONG".into())),
            2 => Ok(Reply::Bulk(a[1].clone())),
            _ => Err(super::wrong_arity("ping")),
        }),
        "echo" => Outcome::Ready(Ok(Reply::Bulk(a[1].clone()))),
        "quit" => Outcome::Close(Ok(Reply::Ok)),
        "hello" => Outcome::Ready(hello(call)),
        "select" => Outcome::Ready(select(call)),
        "reset" => {
            call.sess.db = 0;
            call.sess.bucket = bucket_of_db(0);
            call.sess.proto = Protocol::Resp2;
            call.sess.name = None;
            let (id, node) = (call.sess.id, call.node);
            node.with_client(id, |c| {
                c.db = 0;
                c.name = None;
                c.proto = 2;
            });
            Outcome::Ready(Ok(Reply::Status("RESET".into())))
        }
        "auth" => Outcome::Ready(Err(
            "ERR AUTH <password> called without any password configured \
             for the default user. Are you sure your configuration is correct?"
                .into(),
        )),
        "client" => Outcome::Ready(client(call)),
        "command" => Outcome::Ready(command(&a[1..])),
        "info" => {
            let sections: Vec<String> = a[1..]
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_lowercase())
                .collect();
            let node = call.node.clone();
            call.barrier(move |_, _| async move {
                let text = crate::info::render(&node, &sections).await;
                Ok(Reply::Bulk(Bytes::from(text)))
            })
        }
        "dbsize" => call.barrier(|kv, bucket| async move {
            let counts = from_kv(kv.counts().await)?;
            Ok(Reply::Int(counts.get(&bucket).map_or(0, |c| c.keys as i64)))
        }),
        "flushdb" | "flushall" => {
            if a.len() > 2 || a.get(1).is_some_and(|m| !is(m, "sync") && !is(m, "async")) {
                return Ok(Outcome::Ready(Err(syntax_error())));
            }
            let all = name == "flushall";
            call.barrier(move |kv, bucket| async move {
                from_kv(kv.flush((!all).then_some(bucket)).await)?;
                Ok(Reply::Ok)
            })
        }
        "time" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Outcome::Ready(Ok(Reply::Array(vec![
                Reply::bulk(now.as_secs().to_string()),
                Reply::bulk(now.subsec_micros().to_string()),
            ])))
        }
        "config" => Outcome::Ready(config(call)),
        _ => return Err(call),
    })
}

fn hello(call: Call<'_>) -> super::CmdResult {
    let a = &call.args;
    if let Some(v) = a.get(1) {
        let v = arg_i64(v)
            .map_err(|_| "ERR Protocol version is not an integer or out of range".to_string())?;
        call.sess.proto = match v {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err("NOPROTO unsupported protocol version".into()),
        };
        let mut i = 2;
        while i < a.len() {
            if is(&a[i], "setname") && i + 1 < a.len() {
                set_name(&call, a[i + 1].clone())?;
                i += 2;
            } else if is(&a[i], "auth") && i + 2 < a.len() {
                i += 3;
            } else {
                return Err(syntax_error());
            }
        }
    }
    if let Some(v) = a.get(1) {
        let proto = u8::from(&v[..] == b"3") + 2;
        let id = call.sess.id;
        let name = call.sess.name.clone();
        call.node.with_client(id, |c| {
            c.proto = proto;
            c.name = name;
        });
        call.sess.name = call.sess.name.take();
    }
    let proto = if call.sess.proto == Protocol::Resp3 {
        3
    } else {
        2
    };
    Ok(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_COMPAT_VERSION)),
        (Reply::bulk("proto"), Reply::Int(proto)),
        (Reply::bulk("id"), Reply::Int(call.sess.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ]))
}

fn select(call: Call<'_>) -> super::CmdResult {
    let db = arg_i64(&call.args[1])?;
    if !(0..i64::from(DATABASES)).contains(&db) {
        return Err("ERR DB index is out of range".into());
    }
    call.sess.db = db as u32;
    call.sess.bucket = bucket_of_db(db as u32);
    let id = call.sess.id;
    call.node.with_client(id, |c| c.db = db as u32);
    Ok(Reply::Ok)
}

fn set_name(call: &Call<'_>, name: Bytes) -> Result<(), String> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        );
    }
    let name = (!name.is_empty()).then_some(name);
    call.node
        .with_client(call.sess.id, |c| c.name = name.clone());
    Ok(())
}

fn client(call: Call<'_>) -> super::CmdResult {
    let a = &call.args;
    let sub = String::from_utf8_lossy(&a[1]).to_lowercase();
    match (sub.as_str(), a.len()) {
        ("id", 2) => Ok(Reply::Int(call.sess.id as i64)),
        ("setname", 3) => {
            set_name(&call, a[2].clone())?;
            call.sess.name = (!a[2].is_empty()).then(|| a[2].clone());
            Ok(Reply::Ok)
        }
        ("getname", 2) => Ok(Reply::opt_bulk(call.sess.name.clone())),
        ("info", 2) => {
            let clients = call
                .node
                .clients
                .lock()
                .map_err(|_| "ERR client registry unavailable")?;
            let line = clients
                .get(&call.sess.id)
                .map(client_line)
                .unwrap_or_default();
            Ok(Reply::Bulk(Bytes::from(format!("{line}\n"))))
        }
        ("list", _) => {
            let clients = call
                .node
                .clients
                .lock()
                .map_err(|_| "ERR client registry unavailable")?;
            let text: String = clients.values().map(|c| client_line(c) + "\n").collect();
            Ok(Reply::Bulk(Bytes::from(text)))
        }
        ("setinfo", 4) | ("no-evict", 3) | ("no-touch", 3) => Ok(Reply::Ok),
        _ => Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&a[1])
        )),
    }
}

fn client_line(c: &ClientInfo) -> String {
    let name = c
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    format!(
        "id={} addr={} laddr= fd=-1 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 \
         multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 \
         events=r cmd={} user=default redir=-1 resp={}",
        c.id,
        c.addr,
        name,
        c.created.elapsed().as_secs(),
        c.db,
        c.last_cmd,
        c.proto
    )
}

fn command(rest: &[Bytes]) -> super::CmdResult {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_lowercase());
    match sub.as_deref() {
        None => Ok(Reply::Array(COMMANDS.iter().map(command_info).collect())),
        Some("count") => Ok(Reply::Int(COMMANDS.len() as i64)),
        Some("list") => Ok(Reply::Array(
            COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect(),
        )),
        Some("info") => Ok(Reply::Array(
            rest[1..]
                .iter()
                .map(|n| lookup(n).map_or(Reply::Nil, |(_, s)| command_info(s)))
                .collect(),
        )),
        Some("docs") => {
            let specs: Vec<_> = if rest.len() == 1 {
                COMMANDS.iter().collect()
            } else {
                rest[1..]
                    .iter()
                    .filter_map(|n| lookup(n).map(|(_, s)| s))
                    .collect()
            };
            Ok(Reply::Map(
                specs
                    .into_iter()
                    .map(|s| {
                        let doc = Reply::Map(vec![
                            (
                                Reply::bulk("summary"),
                                Reply::bulk(format!("The {} command.", s.name.to_uppercase())),
                            ),
                            (Reply::bulk("since"), Reply::bulk("1.0.0")),
                            (Reply::bulk("group"), Reply::bulk("generic")),
                        ]);
                        (Reply::bulk(s.name), doc)
                    })
                    .collect(),
            ))
        }
        Some(other) => Err(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND HELP."
        )),
    }
}

fn command_info(s: &super::table::Spec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(s.name),
        Reply::Int(i64::from(s.arity)),
        Reply::Set(s.flags.iter().map(|f| Reply::Status((*f).into())).collect()),
        Reply::Int(i64::from(s.first_key)),
        Reply::Int(i64::from(s.last_key)),
        Reply::Int(i64::from(s.step)),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// Redis tuning knobs CONFIG GET shows and CONFIG SET accepts. Colony keeps
/// the value but does not act on it: these tune Redis internals that have
/// no counterpart here.
pub fn default_knobs() -> BTreeMap<String, String> {
    [
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("maxclients", "10000"),
        ("timeout", "0"),
        ("tcp-keepalive", "300"),
        ("databases", "16"),
        ("save", ""),
        ("appendonly", "yes"),
        ("hz", "10"),
        ("loglevel", "notice"),
        ("slowlog-log-slower-than", "10000"),
        ("slowlog-max-len", "128"),
        ("notify-keyspace-events", ""),
        ("lazyfree-lazy-user-del", "no"),
        ("hash-max-listpack-entries", "128"),
        ("set-max-intset-entries", "512"),
        ("proto-max-bulk-len", "536870912"),
        ("client-output-buffer-limit", "normal 0 0 0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(call: Call<'_>) -> super::CmdResult {
    let a = &call.args;
    let sub = String::from_utf8_lossy(&a[1]).to_lowercase();
    let mut knobs = call
        .node
        .knobs
        .lock()
        .map_err(|_| "ERR config unavailable")?;
    match sub.as_str() {
        "get" if a.len() >= 3 => {
            let mut out = Vec::new();
            for (k, v) in knobs.iter() {
                if a[2..]
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), k.as_bytes()))
                {
                    out.push((Reply::bulk(k.clone()), Reply::bulk(v.clone())));
                }
            }
            Ok(Reply::Map(out))
        }
        "set" if a.len() >= 4 && a.len().is_multiple_of(2) => {
            let pairs: Vec<(String, String)> = a[2..]
                .chunks(2)
                .map(|c| {
                    (
                        String::from_utf8_lossy(&c[0]).to_lowercase(),
                        String::from_utf8_lossy(&c[1]).into_owned(),
                    )
                })
                .collect();
            if let Some((bad, _)) = pairs.iter().find(|(k, _)| !knobs.contains_key(k)) {
                return Err(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{bad}'"
                ));
            }
            knobs.extend(pairs);
            Ok(Reply::Ok)
        }
        "resetstat" | "rewrite" if a.len() == 2 => Ok(Reply::Ok),
        _ => Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&a[1])
        )),
    }
}
