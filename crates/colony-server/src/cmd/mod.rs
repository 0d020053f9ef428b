//! Redis commands: argument parsing and mapping onto the data service.
//!
//! [`dispatch`] turns one request into an [`Outcome`]. Commands that touch
//! keys through one round of vnode requests send them *before* returning
//! (`Pending`), so a pipelined client's commands reach each vnode in the
//! order it sent them while running concurrently. Commands that need several
//! dependent rounds (RENAME, SMOVE, *STORE, SCAN…) are `Barrier`s: the
//! connection finishes everything before them first.

mod hashes;
mod keys;
pub mod server;
mod sets;
mod strings;
pub mod table;

use crate::error::resp_error;
use crate::resp::Protocol;
use crate::state::NodeState;
use bytes::Bytes;
use colony_kv::{KeyOp, Reply};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use table::Group;

/// A command's result: a reply, or a RESP error line (without `-`).
pub type CmdResult = Result<Reply, String>;

pub enum Outcome {
    Ready(CmdResult),
    /// One key op, sent; its reply is mapped by the function. Kept apart
    /// from `Pending` so a pipeline's key ops cost no boxed future each.
    Key(colony_kv::Submitted, fn(Reply) -> Reply),
    Pending(BoxFuture<'static, CmdResult>),
    Barrier(BoxFuture<'static, CmdResult>),
    /// Reply, then close the connection (QUIT).
    Close(CmdResult),
}

/// Per-connection state that commands read and change.
pub struct Session {
    pub id: u64,
    pub db: u32,
    pub bucket: Bytes,
    pub proto: Protocol,
    pub name: Option<Bytes>,
    pub addr: String,
    pub created: Instant,
    /// Keeps pipelined requests on one key in order (see `drain`).
    pub pipeline: std::sync::Mutex<colony_kv::Pipeline>,
}

impl Session {
    /// Submit a key op, ordered after earlier ones on the same key.
    pub fn submit(
        &self,
        kv: &colony_kv::KvService,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
    ) -> colony_kv::Submitted {
        let mut p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        kv.submit_ordered(&mut p, bucket, key, op)
    }
}

/// Everything a command handler needs.
pub struct Call<'a> {
    pub node: &'a Arc<NodeState>,
    pub sess: &'a mut Session,
    pub args: Vec<Bytes>,
}

impl Call<'_> {
    pub fn bucket(&self) -> Bytes {
        self.sess.bucket.clone()
    }

    /// Send one key op now; the outcome yields its reply mapped by `f`.
    pub fn single(&self, key: Bytes, op: KeyOp, f: fn(Reply) -> Reply) -> Outcome {
        Outcome::Key(
            self.sess.submit(&self.node.kv, &self.sess.bucket, key, op),
            f,
        )
    }

    /// Send one key op now and pass its reply through unchanged.
    pub fn key_op(&self, key: Bytes, op: KeyOp) -> Outcome {
        self.single(key, op, |r| r)
    }

    /// A barrier: run `f` with the data service once all before it is done.
    pub fn barrier<F>(&self, f: impl FnOnce(Arc<colony_kv::KvService>, Bytes) -> F) -> Outcome
    where
        F: std::future::Future<Output = CmdResult> + Send + 'static,
    {
        Outcome::Barrier(Box::pin(f(self.node.kv.clone(), self.bucket())))
    }
}

/// Map a data-service reply to a command result.
pub fn from_reply(r: Reply) -> CmdResult {
    match r {
        Reply::Error(e) => Err(resp_error(&e)),
        r => Ok(r),
    }
}

pub fn from_kv<T>(r: Result<T, colony_kv::KvError>) -> Result<T, String> {
    r.map_err(|e| resp_error(&e))
}

/// Run one request. `spec_index` is the command's row in the table, for
/// metrics; None for unknown commands.
pub fn dispatch(
    node: &Arc<NodeState>,
    sess: &mut Session,
    args: Vec<Bytes>,
) -> (Option<usize>, Outcome) {
    let Some((index, spec)) = table::lookup(&args[0]) else {
        return (None, Outcome::Ready(Err(unknown_command(&args))));
    };
    if !spec.arity_ok(args.len()) {
        return (Some(index), Outcome::Ready(Err(wrong_arity(spec.name))));
    }
    let call = Call { node, sess, args };
    let name = spec.name;
    // The table says which module runs it: no chain of name matches.
    let handled = match spec.group {
        Group::Server => server::dispatch(name, call),
        Group::Keys => keys::dispatch(name, call),
        Group::Strings => strings::dispatch(name, call),
        Group::Hashes => hashes::dispatch(name, call),
        Group::Sets => sets::dispatch(name, call),
    };
    let outcome = handled.unwrap_or_else(|_| {
        Outcome::Ready(Err(format!("ERR command '{name}' is not implemented")))
    });
    (Some(index), outcome)
}

/// Redis's wording: the name as sent, then up to 128 characters of args.
pub fn unknown_command(args: &[Bytes]) -> String {
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let text = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        let cut: String = text.chars().take(room).collect();
        rest.push_str(&format!("'{cut}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    format!("ERR unknown command '{name}', with args beginning with: {rest}")
}

pub fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

pub fn syntax_error() -> String {
    "ERR syntax error".into()
}

pub fn not_integer() -> String {
    "ERR value is not an integer or out of range".into()
}

pub fn arg_i64(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.starts_with('+') && s.trim() == *s)
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_integer)
}

pub fn arg_f64(b: &[u8]) -> Result<f64, String> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.is_empty() && s.trim() == *s)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
        .ok_or_else(|| "ERR value is not a valid float".to_string())
}

/// Case-insensitive comparison of an argument with an option name.
pub fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// Milliseconds since the epoch, as the data service's clock sees them.
pub fn now_ms() -> u64 {
    use colony_kv::Clock;
    colony_kv::SystemClock.now_ms()
}

/// A handler module's answer: handled, or not mine (pass the call on).
pub type Handled<'a> = Result<Outcome, Call<'a>>;
