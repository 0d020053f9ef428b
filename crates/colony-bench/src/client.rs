//! One benchmark client: a connection to a single server, or in cluster mode
//! one connection per master, routing each operation by its key's slot.
//!
//! A batch is written to every node it touches before any reply is read, and
//! the whole exchange runs under one deadline. A failed or timed-out
//! connection is dropped (its pipeline state is unknown) and reopened lazily.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{key_slot, parse_redirect, Redirect, SlotMap};
use crate::connection::{ClientError, Connection, ReplyStatus};
use crate::workload::{Op, Payload};

/// Hops followed for one operation before its redirect counts as an error.
const MAX_REDIRECTS: usize = 3;
/// Pause after a failed connect, so a dead server is not hammered in a loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub seed_addr: String,
    pub cluster: bool,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
}

/// What became of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok,
    /// An error reply, in full.
    Error(String),
    /// No reply: `timeout`, `io` or `protocol`.
    Failed(&'static str),
}

/// An operation's outcome and when it was known.
#[derive(Debug, Clone)]
pub struct Done {
    pub outcome: Outcome,
    pub at: Instant,
}

struct Node {
    addr: String,
    conn: Option<Connection>,
}

pub struct Client {
    cfg: Arc<ClientConfig>,
    payload: Arc<Payload>,
    nodes: Vec<Node>,
    slots: Option<SlotMap>,
    /// Node index per operation of the current batch.
    routes: Vec<usize>,
    keybuf: Vec<u8>,
    /// MOVED/ASK redirections followed so far.
    pub redirects: u64,
}

impl Client {
    /// Prepares a client; in cluster mode this fetches the slot map.
    pub async fn new(cfg: Arc<ClientConfig>, payload: Arc<Payload>) -> Result<Self, ClientError> {
        let mut client = Client {
            nodes: vec![Node {
                addr: cfg.seed_addr.clone(),
                conn: None,
            }],
            cfg,
            payload,
            slots: None,
            routes: Vec::new(),
            keybuf: Vec::with_capacity(64),
            redirects: 0,
        };
        if client.cfg.cluster {
            client.refresh_slots().await?;
        }
        Ok(client)
    }

    /// Opens a connection to every known node and checks it answers PING.
    pub async fn connect_all(&mut self) -> Result<(), ClientError> {
        for n in 0..self.nodes.len() {
            self.ensure_connected(n).await?;
            if let Some(conn) = self.nodes[n].conn.as_mut() {
                let reply = conn.command(&[b"PING"], self.cfg.reply_timeout).await?;
                if let crate::resp::Reply::Error(msg) = reply {
                    return Err(ClientError::Unexpected(msg));
                }
            }
        }
        Ok(())
    }

    /// Sends `ops` as one pipelined batch and fills `out` with one entry per op.
    pub async fn execute(&mut self, ops: &[Op], out: &mut Vec<Done>) {
        let now = Instant::now();
        out.clear();
        out.extend(ops.iter().map(|_| Done {
            outcome: Outcome::Pending,
            at: now,
        }));
        self.route(ops);
        for n in 0..self.nodes.len() {
            if self.routes.contains(&n) {
                self.prepare_node(n, ops, out).await;
            }
        }
        let deadline = Instant::now() + self.cfg.reply_timeout;
        let exchanged = tokio::time::timeout_at(deadline, self.exchange(out)).await;
        if exchanged.is_err() {
            self.fail_pending(out, "timeout");
        }
        if self.slots.is_some() {
            self.follow_redirects(ops, out).await;
        }
    }

    fn route(&mut self, ops: &[Op]) {
        self.routes.clear();
        let Some(slots) = &self.slots else {
            self.routes.resize(ops.len(), 0);
            return;
        };
        for op in ops {
            self.keybuf.clear();
            self.payload.write_key(&mut self.keybuf, op.key);
            let node = slots.owner(key_slot(&self.keybuf)).unwrap_or(0);
            self.routes.push(node);
        }
    }

    /// Connects node `n` if needed and encodes its share of the batch.
    async fn prepare_node(&mut self, n: usize, ops: &[Op], out: &mut [Done]) {
        if let Err(e) = self.ensure_connected(n).await {
            for (i, done) in out.iter_mut().enumerate() {
                if self.routes[i] == n {
                    done.outcome = Outcome::Failed(e.kind());
                }
            }
            return;
        }
        if let Some(conn) = self.nodes[n].conn.as_mut() {
            for (op, _) in ops.iter().zip(&self.routes).filter(|(_, &r)| r == n) {
                self.payload.encode(&mut conn.wbuf, op);
            }
        }
    }

    /// Flushes every prepared node, then reads each node's replies in order.
    async fn exchange(&mut self, out: &mut [Done]) {
        for node in &mut self.nodes {
            if let Some(conn) = node.conn.as_mut() {
                if !conn.wbuf.is_empty() && conn.flush().await.is_err() {
                    node.conn = None;
                }
            }
        }
        for (n, node) in self.nodes.iter_mut().enumerate() {
            for (i, done) in out.iter_mut().enumerate() {
                if self.routes[i] != n || done.outcome != Outcome::Pending {
                    continue;
                }
                let Some(conn) = node.conn.as_mut() else {
                    done.outcome = Outcome::Failed("io");
                    continue;
                };
                (done.outcome, done.at) = match conn.read_status().await {
                    Ok(ReplyStatus::Ok) => (Outcome::Ok, conn.received_at()),
                    Ok(ReplyStatus::Error(msg)) => (Outcome::Error(msg), conn.received_at()),
                    Err(e) => {
                        node.conn = None;
                        (Outcome::Failed(e.kind()), Instant::now())
                    }
                };
            }
        }
    }

    /// Marks unanswered ops failed and drops the connections they were on.
    fn fail_pending(&mut self, out: &mut [Done], kind: &'static str) {
        let now = Instant::now();
        for (i, done) in out.iter_mut().enumerate() {
            if done.outcome == Outcome::Pending {
                done.outcome = Outcome::Failed(kind);
                done.at = now;
                self.nodes[self.routes[i]].conn = None;
            }
        }
    }

    async fn ensure_connected(&mut self, n: usize) -> Result<(), ClientError> {
        if self.nodes[n].conn.is_some() {
            return Ok(());
        }
        match Connection::connect(&self.nodes[n].addr, self.cfg.connect_timeout).await {
            Ok(conn) => {
                self.nodes[n].conn = Some(conn);
                Ok(())
            }
            Err(e) => {
                tokio::time::sleep(CONNECT_BACKOFF).await;
                Err(e)
            }
        }
    }

    async fn follow_redirects(&mut self, ops: &[Op], out: &mut [Done]) {
        let mut refreshed = false;
        for (op, done) in ops.iter().zip(out.iter_mut()) {
            for _ in 0..MAX_REDIRECTS {
                let Outcome::Error(msg) = &done.outcome else {
                    break;
                };
                let Some(redirect) = parse_redirect(msg) else {
                    break;
                };
                self.redirects += 1;
                let (addr, asking) = match redirect {
                    Redirect::Moved(addr) => {
                        if !refreshed {
                            refreshed = self.refresh_slots().await.is_ok();
                        }
                        (addr, false)
                    }
                    Redirect::Ask(addr) => (addr, true),
                };
                done.outcome = self.send_one(&addr, asking, op).await;
                done.at = Instant::now();
            }
        }
    }

    /// Sends one op to `addr` (optionally after ASKING) and waits for its reply.
    async fn send_one(&mut self, addr: &str, asking: bool, op: &Op) -> Outcome {
        let n = self.node_index(addr);
        if let Err(e) = self.ensure_connected(n).await {
            return Outcome::Failed(e.kind());
        }
        let Some(conn) = self.nodes[n].conn.as_mut() else {
            return Outcome::Failed("io");
        };
        if asking {
            crate::resp::encode_command(&mut conn.wbuf, &[b"ASKING"]);
        }
        self.payload.encode(&mut conn.wbuf, op);
        let exchange = async {
            conn.flush().await?;
            if asking {
                conn.read_status().await?;
            }
            conn.read_status().await
        };
        let result = tokio::time::timeout(self.cfg.reply_timeout, exchange).await;
        match result {
            Ok(Ok(ReplyStatus::Ok)) => Outcome::Ok,
            Ok(Ok(ReplyStatus::Error(msg))) => Outcome::Error(msg),
            Ok(Err(e)) => {
                self.nodes[n].conn = None;
                Outcome::Failed(e.kind())
            }
            Err(_) => {
                self.nodes[n].conn = None;
                Outcome::Failed("timeout")
            }
        }
    }

    fn node_index(&mut self, addr: &str) -> usize {
        if let Some(n) = self.nodes.iter().position(|node| node.addr == addr) {
            return n;
        }
        self.nodes.push(Node {
            addr: addr.to_string(),
            conn: None,
        });
        self.nodes.len() - 1
    }

    /// Reloads the slot map from the first node that answers CLUSTER SLOTS,
    /// keeping open connections to masters that are still masters.
    async fn refresh_slots(&mut self) -> Result<(), ClientError> {
        let mut candidates = vec![self.cfg.seed_addr.clone()];
        candidates.extend(self.nodes.iter().map(|n| n.addr.clone()));
        let seed_host = host_of(&self.cfg.seed_addr).to_string();
        let mut last_err = ClientError::Unexpected("no node to ask for slots".into());
        for addr in candidates {
            let reply = async {
                let mut conn = Connection::connect(&addr, self.cfg.connect_timeout).await?;
                conn.command(&[b"CLUSTER", b"SLOTS"], self.cfg.reply_timeout)
                    .await
            };
            match reply.await.map(|r| SlotMap::from_reply(&r, &seed_host)) {
                Ok(Ok(map)) => {
                    self.install(map);
                    return Ok(());
                }
                Ok(Err(msg)) => last_err = ClientError::Unexpected(msg),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn install(&mut self, map: SlotMap) {
        let mut old = std::mem::take(&mut self.nodes);
        self.nodes = map
            .nodes
            .iter()
            .map(|addr| Node {
                addr: addr.clone(),
                conn: old
                    .iter_mut()
                    .find(|n| n.addr == *addr)
                    .and_then(|n| n.conn.take()),
            })
            .collect();
        self.slots = Some(map);
    }
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

#[cfg(test)]
mod tests;
