//! The simulated node as a handoff host, so that the simulation runs the
//! real sender and receiver (`colony_core::cluster::handoff::{send,
//! receive}`): the ring and the store are the node's own state, a handoff
//! call is a request on the sim's lossy network whose answer comes back
//! the same way (or the call times out), and sleeping waits for a tick.
//!
//! No runtime: each node keeps its running futures (transfers it sends,
//! requests it answers) in a list, and the world polls every list once a
//! step, in a fixed order, with a waker that does nothing. A future waits
//! only for an answer or a tick, both of which the world brings about
//! before it polls, so one pass a step is enough. A crash drops the list,
//! as a process dies with its tasks.

use super::msg::{Msg, Tick};
use super::node::Node;
use super::store::SimStore;
use bytes::Bytes;
use colony_core::cluster::handoff::{self, RingEdit};
use colony_core::cluster::msg::{self, Handoff, HandoffReply};
use colony_core::cluster::{BoxFut, HandoffBook, HandoffConfig, HandoffHost, PartitionStore};
use colony_core::{CoreError, MemberStatus, NodeId, PartitionId, Ring};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What every host shares with the world: the clock, the handoff messages
/// to put on the network, and the calls waiting for an answer.
pub struct Port {
    pub now: Tick,
    /// `Instant` standing for tick 0; a tick is a millisecond.
    epoch: Instant,
    pub trace: bool,
    /// A call gets no answer after this many ticks.
    timeout: Tick,
    next_req: u64,
    /// (from, to, message), in the order sent.
    pub outbox: Vec<(NodeId, NodeId, Msg)>,
    calls: BTreeMap<u64, Call>,
}

struct Call {
    deadline: Tick,
    answer: Option<Result<HandoffReply, String>>,
}

impl Port {
    pub fn new(timeout: Tick, trace: bool) -> Self {
        Self {
            now: 0,
            epoch: Instant::now(),
            trace,
            timeout,
            next_req: 0,
            outbox: Vec::new(),
            calls: BTreeMap::new(),
        }
    }

    /// An answer to call `req` arrived (a duplicate, or one for a call
    /// given up or dropped with a crashed node, is ignored).
    pub fn answer(&mut self, req: u64, body: &[u8]) {
        if let Some(c) = self.calls.get_mut(&req) {
            if c.answer.is_none() {
                c.answer = Some(msg::decode(body));
            }
        }
    }

    pub fn log(&self, who: &NodeId, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>6}] {who}: {}", self.now, what());
        }
    }
}

pub type Shared<T> = Arc<Mutex<T>>;

pub struct SimHost {
    me: NodeId,
    session: u64,
    config: HandoffConfig,
    book: Arc<HandoffBook>,
    node: Shared<Node>,
    store: Arc<SimStore>,
    port: Shared<Port>,
}

impl SimHost {
    /// The host of one start of `node`; `session` must differ from its
    /// earlier starts'.
    pub fn new(
        node: Shared<Node>,
        port: Shared<Port>,
        config: HandoffConfig,
        session: u64,
        drop_chunk_keys: usize,
    ) -> Self {
        let (me, book) = {
            let n = lock(&node);
            (n.id.clone(), n.mem.book.clone())
        };
        let store = Arc::new(SimStore::new(node.clone(), port.clone(), drop_chunk_keys));
        Self {
            me,
            session,
            config,
            book,
            node,
            store,
            port,
        }
    }

    fn node(&self) -> MutexGuard<'_, Node> {
        lock(&self.node)
    }
}

impl HandoffHost for SimHost {
    fn me(&self) -> &NodeId {
        &self.me
    }

    fn session(&self) -> u64 {
        self.session
    }

    fn handoff_config(&self) -> &HandoffConfig {
        &self.config
    }

    fn store(&self) -> Option<Arc<dyn PartitionStore>> {
        Some(self.store.clone())
    }

    fn book(&self) -> &HandoffBook {
        &self.book
    }

    fn ring(&self) -> Option<Arc<Ring>> {
        self.node().disk.ring.clone()
    }

    fn update_ring_local<'a>(
        &'a self,
        edit: RingEdit<'a>,
    ) -> BoxFut<'a, Result<Arc<Ring>, CoreError>> {
        let mut node = self.node();
        let result = match &node.disk.ring {
            None => Err(CoreError::BadRing("no ring yet".into())),
            Some(ours) => {
                let mut ring = (**ours).clone();
                edit(&mut ring).map(|()| {
                    let ring = Arc::new(ring);
                    node.disk.ring = Some(ring.clone());
                    ring
                })
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn merge_ring<'a>(&'a self, theirs: &'a Ring) -> BoxFut<'a, Result<Arc<Ring>, CoreError>> {
        let mut node = self.node();
        let me = self.me.clone();
        let result = match &mut node.disk.ring {
            Some(ours) => Arc::make_mut(ours).merge(theirs).map(|_| ours.clone()),
            None if theirs.member(&me).is_some() => {
                let ring = Arc::new(theirs.clone());
                node.disk.ring = Some(ring.clone());
                Ok(ring)
            }
            None => Err(CoreError::Cluster(format!("the ring does not list {me}"))),
        };
        Box::pin(std::future::ready(result))
    }

    fn call_handoff<'a>(
        &'a self,
        to: &'a NodeId,
        m: Handoff,
    ) -> BoxFut<'a, Result<HandoffReply, String>> {
        let mut port = lock(&self.port);
        port.next_req += 1;
        let req = port.next_req;
        let deadline = port.now + port.timeout;
        port.calls.insert(
            req,
            Call {
                deadline,
                answer: None,
            },
        );
        let body = msg::encode(&m);
        port.outbox
            .push((self.me.clone(), to.clone(), Msg::Handoff { req, body }));
        Box::pin(Answer {
            port: self.port.clone(),
            req,
        })
    }

    fn push<'a>(&'a self, ring: &'a Arc<Ring>) -> BoxFut<'a, ()> {
        let mut port = lock(&self.port);
        let encoded = ring.encode();
        for (n, m) in ring.members() {
            if *n != self.me && m.status != MemberStatus::Left {
                let msg = Msg::Exchange {
                    ring: encoded.clone(),
                    sent: port.now,
                    reply: true,
                };
                port.outbox.push((self.me.clone(), n.clone(), msg));
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn sleep(&self, d: Duration) -> BoxFut<'static, ()> {
        let ticks = d.as_micros().div_ceil(1000) as Tick;
        let until = lock(&self.port).now + ticks;
        Box::pin(Sleep {
            port: self.port.clone(),
            until,
        })
    }

    fn now(&self) -> Instant {
        let port = lock(&self.port);
        port.epoch + Duration::from_millis(port.now)
    }
}

/// The answer to one call: ready when it arrives or the call times out.
/// Dropped (its node crashed), it forgets the call.
struct Answer {
    port: Shared<Port>,
    req: u64,
}

impl Future for Answer {
    type Output = Result<HandoffReply, String>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let mut port = lock(&self.port);
        let now = port.now;
        let Some(call) = port.calls.get_mut(&self.req) else {
            return Poll::Ready(Err("the call was forgotten".into()));
        };
        if let Some(answer) = call.answer.take() {
            port.calls.remove(&self.req);
            return Poll::Ready(answer);
        }
        if now >= call.deadline {
            port.calls.remove(&self.req);
            return Poll::Ready(Err("timed out".into()));
        }
        Poll::Pending
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        lock(&self.port).calls.remove(&self.req);
    }
}

struct Sleep {
    port: Shared<Port>,
    until: Tick,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if lock(&self.port).now >= self.until {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One start of a node: its host and the futures running on it.
pub struct Runtime {
    pub host: Arc<SimHost>,
    tasks: Vec<Task>,
}

impl Runtime {
    pub fn new(host: SimHost) -> Self {
        Self {
            host: Arc::new(host),
            tasks: Vec::new(),
        }
    }

    /// Run the real sender for `partition`; the scheduler may start
    /// another transfer of it once this one ends.
    pub fn send(&mut self, partition: PartitionId, to: NodeId) {
        let host = self.host.clone();
        self.tasks.push(Box::pin(async move {
            handoff::send(host.clone(), partition, to).await;
            host.node().mem.running.remove(&partition);
        }));
    }

    /// Answer handoff call `req` from `from` with the real receiver.
    pub fn receive(&mut self, from: NodeId, req: u64, body: Bytes) {
        let host = self.host.clone();
        self.tasks.push(Box::pin(async move {
            let reply = match msg::decode::<Handoff>(&body) {
                Ok(m) => handoff::receive(&*host, m).await,
                Err(e) => panic!("{from} sent an undecodable handoff message: {e}"),
            };
            let body = msg::encode(&reply);
            let msg = Msg::HandoffReply { req, body };
            lock(&host.port).outbox.push((host.me.clone(), from, msg));
        }));
    }

    /// Poll every future once, in the order they started.
    pub fn poll(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.tasks
            .retain_mut(|t| t.as_mut().poll(&mut cx).is_pending());
    }

    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }
}
