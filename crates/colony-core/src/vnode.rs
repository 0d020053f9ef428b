//! The vnode runtime: one task per partition, a bounded mailbox, supervision.
//!
//! A service implements [`Vnode`] for the state of one partition. The runtime
//! gives every partition its own task, so requests for one partition are
//! applied one at a time, in arrival order: a vnode needs no locks, and a
//! read-modify-write on a key is atomic by construction.
//!
//! Requests are taken from the mailbox in batches. Each is handled, then the
//! vnode's [`Vnode::commit`] runs once for the whole batch (group commit: one
//! fsync for many writes), and only then are the replies sent. A reply is
//! therefore never seen before the write it reports is as durable as the
//! vnode promises.
//!
//! A request may also run *inline*, on the caller's task, when the vnode
//! allows it ([`Vnode::inline`]), nobody else is using it, and nothing sent
//! to its mailbox is still unhandled: it is handled and committed there and
//! then, which spares two task wake-ups. Order is kept: a caller's earlier
//! request still in the mailbox (or taken from it and not yet handled)
//! keeps its later ones out of the inline path.
//!
//! A panic inside `handle` is contained: that request's caller gets
//! [`CoreError::VnodeCrashed`], the requests already handled in the batch are
//! committed and answered, the rest wait, and the vnode is rebuilt from its
//! factory after a back-off. Too many restarts in a window stop the vnode for
//! good; its callers then get [`CoreError::VnodeStopped`].

use crate::{CoreError, PartitionId};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod flush;
pub use flush::{Barrier, GroupFlush};

/// The state of one partition of a service.
pub trait Vnode: Send + 'static {
    type Request: Send + 'static;
    type Reply: Send + 'static;

    /// Apply one request. Runs on the vnode's own task; must not block long.
    fn handle(&mut self, request: Self::Request) -> Self::Reply;

    /// Make the effects of the batch just handled durable. A failure may
    /// rewrite `replies` into errors before they are sent.
    fn commit(&mut self, replies: &mut [Self::Reply]);

    /// Periodic work (expiry, compaction of metadata, …).
    fn tick(&mut self, _now: Instant) {}

    /// Called once when the vnode stops cleanly.
    fn shutdown(&mut self) {}

    /// Whether requests may run inline on the caller's task (each is then
    /// committed alone, without the group commit of a mailbox batch).
    fn inline(&self) -> bool {
        false
    }

    /// After `commit`: what the replies of the batch must wait for before
    /// they are seen (a node-wide [`GroupFlush`]); None if the commit is
    /// already as durable as the vnode promises.
    fn barrier(&mut self) -> Option<Barrier> {
        None
    }
}

/// Builds (and rebuilds, after a crash) the vnode of a partition.
pub trait VnodeFactory<V>: Send + Sync + 'static {
    fn build(&self, partition: PartitionId) -> Result<V, String>;
}

impl<V, F> VnodeFactory<V> for F
where
    F: Fn(PartitionId) -> Result<V, String> + Send + Sync + 'static,
{
    fn build(&self, partition: PartitionId) -> Result<V, String> {
        self(partition)
    }
}

/// Settings of the vnode runtime.
#[derive(Debug, Clone)]
pub struct VnodeConfig {
    /// Requests that may wait in one vnode's mailbox; beyond it, callers are
    /// told [`CoreError::Overloaded`] at once.
    pub mailbox_capacity: usize,
    /// Most requests handled per group commit.
    pub max_batch: usize,
    pub tick_interval: Duration,
    /// Restarts allowed within `restart_window` before the vnode stops.
    pub restart_budget: u32,
    pub restart_window: Duration,
}

impl Default for VnodeConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 4096,
            max_batch: 256,
            tick_interval: Duration::from_millis(100),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// What a mailbox request's caller is sent: the reply and the barrier it
/// waits for, or why the request was never handled.
type Answer<R> = Result<(R, Option<Barrier>), CoreError>;

struct Envelope<V: Vnode> {
    request: V::Request,
    reply: oneshot::Sender<Answer<V::Reply>>,
}

/// What a vnode's handles and its supervisor share.
struct Cell<V: Vnode> {
    /// The vnode; None while it is rebuilt after a panic, or once stopped.
    state: std::sync::Mutex<Option<V>>,
    /// Requests sent to the mailbox and not yet handled and committed.
    unhandled: AtomicUsize,
    /// Wakes the supervisor when an inline request left the vnode dead.
    crashed: Notify,
}

impl<V: Vnode> Cell<V> {
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Option<V>>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Lock without blocking the runtime's thread: yield while an inline
    /// caller holds it.
    async fn lock_async(&self) -> std::sync::MutexGuard<'_, Option<V>> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// A running vnode's API: send it requests, await replies.
pub struct VnodeHandle<V: Vnode> {
    partition: PartitionId,
    tx: mpsc::Sender<Envelope<V>>,
    cell: Arc<Cell<V>>,
}

impl<V: Vnode> Clone for VnodeHandle<V> {
    fn clone(&self) -> Self {
        Self {
            partition: self.partition,
            tx: self.tx.clone(),
            cell: self.cell.clone(),
        }
    }
}

impl<V: Vnode> VnodeHandle<V> {
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Send `request` and wait for its reply. Never waits for mailbox room.
    pub async fn call(&self, request: V::Request) -> Result<V::Reply, CoreError> {
        self.send(request)?.await
    }

    /// Put `request` in the mailbox now and return the reply to await.
    /// Requests sent from one task reach the vnode in the order sent, which
    /// is what lets a pipelined client run commands concurrently.
    /// When the vnode is idle, allows it, and has nothing of the mailbox's
    /// left to handle, the request runs here and now instead.
    pub fn send(&self, request: V::Request) -> Result<ReplyFuture<V::Reply>, CoreError> {
        let partition = self.partition;
        let request = match self.try_inline(request) {
            Ok(done) => return done,
            Err(request) => request,
        };
        let (reply, rx) = oneshot::channel();
        match self.enqueue(Envelope { request, reply }) {
            Ok(()) => Ok(ReplyFuture {
                partition,
                state: Waiting::Mailbox(rx),
            }),
            Err((_, e)) => Err(e),
        }
    }

    /// Gather requests to send together (see [`VnodeBatch`]).
    pub fn batch(&self) -> VnodeBatch<V> {
        VnodeBatch {
            handle: self.clone(),
            envelopes: Vec::new(),
        }
    }

    /// Put `env` in the mailbox, or give it back with the reason it was
    /// refused.
    #[allow(clippy::result_large_err)]
    fn enqueue(&self, env: Envelope<V>) -> Result<(), (Envelope<V>, CoreError)> {
        let partition = self.partition;
        // Counted before it is queued: from here until it is handled, no
        // later request of this caller can overtake it inline.
        self.cell.unhandled.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(env) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.cell.unhandled.fetch_sub(1, Ordering::SeqCst);
                match e {
                    mpsc::error::TrySendError::Full(env) => {
                        metrics::counter!("colony_vnode_overloaded_total").increment(1);
                        Err((env, CoreError::Overloaded { partition }))
                    }
                    mpsc::error::TrySendError::Closed(env) => {
                        Err((env, CoreError::VnodeStopped { partition }))
                    }
                }
            }
        }
    }

    /// The vnode, locked, if a request may run inline now: nobody holds
    /// it, it allows inline requests, and nothing sent to its mailbox is
    /// still unhandled (checked under the lock: the supervisor handles what
    /// it took from the mailbox under the same lock, and counts it down
    /// after), so no caller's request overtakes its own earlier one.
    ///
    /// Held by another caller, it is tried again a few times over a few
    /// microseconds: an inline batch holds it about that long, and the
    /// mailbox (a wake-up of the supervisor, then of this caller) costs
    /// more than the wait. Never longer: a long holder (a handoff step)
    /// sends the caller to the mailbox as before.
    fn lock_idle(&self) -> Option<std::sync::MutexGuard<'_, Option<V>>> {
        const TRIES: u32 = 8;
        for attempt in 0..TRIES {
            if self.cell.unhandled.load(Ordering::SeqCst) != 0 {
                return None;
            }
            if let Some(guard) = self.cell.try_lock() {
                let idle = self.cell.unhandled.load(Ordering::SeqCst) == 0
                    && guard.as_ref().is_some_and(|v| v.inline());
                return idle.then_some(guard);
            }
            for _ in 0..(1u32 << attempt.min(4)) {
                std::hint::spin_loop();
            }
        }
        None
    }

    /// An inline request panicked: the vnode's state is suspect, so it is
    /// emptied and the supervisor rebuilds it.
    fn crashed_inline(&self, mut guard: std::sync::MutexGuard<'_, Option<V>>) {
        *guard = None;
        drop(guard);
        self.cell.crashed.notify_one();
    }

    /// Handle and commit every request of `envelopes` on this task, in
    /// order and with one commit, if the vnode is free; otherwise give them
    /// back. If one panics, those before it are answered, it is told
    /// `VnodeCrashed`, and the rest are given back for the rebuilt vnode.
    fn try_inline_many(&self, envelopes: Vec<Envelope<V>>) -> Result<(), Vec<Envelope<V>>> {
        let Some(mut guard) = self.lock_idle() else {
            return Err(envelopes);
        };
        let Some(vnode) = guard.as_mut() else {
            return Err(envelopes);
        };
        let mut rest = envelopes.into_iter();
        let (_, crashed) = run_batch(vnode, self.partition, &mut rest);
        if !crashed {
            return Ok(());
        }
        self.crashed_inline(guard);
        Err(rest.collect())
    }

    /// Handle and commit `request` on this task if the vnode is free;
    /// otherwise give it back.
    #[allow(clippy::type_complexity)]
    fn try_inline(
        &self,
        request: V::Request,
    ) -> Result<Result<ReplyFuture<V::Reply>, CoreError>, V::Request> {
        let Some(mut guard) = self.lock_idle() else {
            return Err(request);
        };
        let Some(vnode) = guard.as_mut() else {
            return Err(request);
        };
        let partition = self.partition;
        let handled = catch_unwind(AssertUnwindSafe(|| {
            let mut replies = [vnode.handle(request)];
            vnode.commit(&mut replies);
            let [reply] = replies;
            (reply, vnode.barrier())
        }));
        match handled {
            Ok((reply, barrier)) => Ok(Ok(ReplyFuture {
                partition,
                state: Waiting::Ready(reply, barrier),
            })),
            Err(_) => {
                self.crashed_inline(guard);
                Ok(Err(CoreError::VnodeCrashed { partition }))
            }
        }
    }

    /// Requests waiting in the mailbox now.
    pub fn queue_len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Requests for one vnode gathered by a caller and sent together when
/// it calls [`send`](Self::send) (or drops the batch): all handled inline
/// with one commit if the vnode is free, else put in its mailbox in order.
/// A pipelined connection sends each vnode its share of a pipeline this
/// way, sparing a lock, a commit and a barrier per request. A reply future
/// from [`push`](Self::push) is answered only once the batch is sent.
pub struct VnodeBatch<V: Vnode> {
    handle: VnodeHandle<V>,
    envelopes: Vec<Envelope<V>>,
}

impl<V: Vnode> VnodeBatch<V> {
    pub fn partition(&self) -> PartitionId {
        self.handle.partition
    }

    /// Add `request`; its reply comes after the batch is sent.
    pub fn push(&mut self, request: V::Request) -> ReplyFuture<V::Reply> {
        let (reply, rx) = oneshot::channel();
        self.envelopes.push(Envelope { request, reply });
        ReplyFuture {
            partition: self.handle.partition,
            state: Waiting::Mailbox(rx),
        }
    }

    /// Send every request gathered. One the mailbox has no room for is
    /// answered `Overloaded`, and so is every one after it, so that none
    /// runs after an earlier one of the same caller was refused.
    pub fn send(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if self.envelopes.is_empty() {
            return;
        }
        let envelopes = std::mem::take(&mut self.envelopes);
        let Err(rest) = self.handle.try_inline_many(envelopes) else {
            return;
        };
        let mut refused: Option<CoreError> = None;
        for env in rest {
            if let Some(e) = &refused {
                let _ = env.reply.send(Err(e.clone()));
                continue;
            }
            if let Err((env, e)) = self.handle.enqueue(env) {
                let _ = env.reply.send(Err(e.clone()));
                refused = Some(e);
            }
        }
    }
}

impl<V: Vnode> Drop for VnodeBatch<V> {
    /// A batch is never lost: one dropped unsent is sent.
    fn drop(&mut self) {
        self.flush();
    }
}

/// The reply to a request: already there (it ran inline), or to come from
/// the vnode's mailbox; then, if its commit is not flushed yet, it waits
/// for the group flush.
pub struct ReplyFuture<R> {
    partition: PartitionId,
    state: Waiting<R>,
}

type Flushing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

// One enum, so the future (moved several times on its way to the caller)
// holds the reply once.
enum Waiting<R> {
    /// Handled inline: the reply, and the flush it waits for.
    Ready(R, Option<Barrier>),
    Mailbox(oneshot::Receiver<Answer<R>>),
    /// Answered; waiting for the group flush.
    Flushing(R, Flushing),
    Done,
}

// The reply is never pinned in place: it is moved out whole.
impl<R> Unpin for ReplyFuture<R> {}

impl<R> std::future::Future for ReplyFuture<R> {
    type Output = Result<R, CoreError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let partition = self.partition;
        let (reply, barrier) = match std::mem::replace(&mut self.state, Waiting::Done) {
            Waiting::Ready(reply, barrier) => (reply, barrier),
            Waiting::Mailbox(mut rx) => match std::pin::Pin::new(&mut rx).poll(cx) {
                Poll::Pending => {
                    self.state = Waiting::Mailbox(rx);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(Ok(answer))) => answer,
                Poll::Ready(Ok(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(CoreError::VnodeCrashed { partition }))
                }
            },
            Waiting::Flushing(reply, mut flushing) => {
                return match flushing.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = Waiting::Flushing(reply, flushing);
                        Poll::Pending
                    }
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(reply)),
                    Poll::Ready(Err(reason)) => {
                        Poll::Ready(Err(CoreError::NotDurable { partition, reason }))
                    }
                };
            }
            Waiting::Done => return Poll::Ready(Err(CoreError::VnodeCrashed { partition })),
        };
        match barrier {
            Some(barrier) if !barrier.passed() => {
                self.state = Waiting::Flushing(reply, barrier.wait());
                self.poll(cx)
            }
            _ => Poll::Ready(Ok(reply)),
        }
    }
}

/// Handle `envelopes` in order on `vnode`, commit once, and answer each
/// with its reply and the barrier it waits for. Stops at the first request
/// that panics (its caller is told `VnodeCrashed`), leaving the rest in
/// `envelopes`. If the commit panics, the batch's durability is unknown and
/// its callers get `VnodeCrashed` (their dropped channels). Returns how many
/// requests were taken and whether the vnode's state is now suspect.
fn run_batch<V: Vnode>(
    vnode: &mut V,
    partition: PartitionId,
    envelopes: &mut impl Iterator<Item = Envelope<V>>,
) -> (usize, bool) {
    let mut replies = Vec::new();
    let mut senders = Vec::new();
    let mut taken = 0;
    let mut crashed = false;
    for Envelope { request, reply } in envelopes.by_ref() {
        taken += 1;
        match catch_unwind(AssertUnwindSafe(|| vnode.handle(request))) {
            Ok(r) => {
                replies.push(r);
                senders.push(reply);
            }
            Err(_) => {
                let _ = reply.send(Err(CoreError::VnodeCrashed { partition }));
                crashed = true;
                break;
            }
        }
    }
    if replies.is_empty() {
        return (taken, crashed);
    }
    let committed = catch_unwind(AssertUnwindSafe(|| {
        vnode.commit(&mut replies);
        vnode.barrier()
    }));
    match committed {
        Ok(barrier) => {
            for (reply, sender) in replies.into_iter().zip(senders) {
                let b = barrier.as_ref().map(Barrier::share);
                let _ = sender.send(Ok((reply, b)));
            }
            (taken, crashed)
        }
        Err(_) => (taken, true),
    }
}

/// All vnodes of one service on this node, indexed by partition.
pub struct VnodeSet<V: Vnode> {
    handles: Vec<VnodeHandle<V>>,
    tasks: Vec<JoinHandle<()>>,
    closing: CancellationToken,
}

impl<V: Vnode> VnodeSet<V> {
    /// Build and start one vnode per partition. Fails if any first build fails
    /// (a data directory that cannot be read must stop start-up).
    pub fn start(
        partitions: impl IntoIterator<Item = PartitionId>,
        factory: Arc<dyn VnodeFactory<V>>,
        config: VnodeConfig,
    ) -> Result<Self, String> {
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        let closing = CancellationToken::new();
        for partition in partitions {
            let vnode = factory.build(partition)?;
            let (tx, rx) = mpsc::channel(config.mailbox_capacity);
            let cell = Arc::new(Cell {
                state: std::sync::Mutex::new(Some(vnode)),
                unhandled: AtomicUsize::new(0),
                crashed: Notify::new(),
            });
            let sup = VnodeSupervisor {
                cell: cell.clone(),
                closing: closing.clone(),
                closed: false,
                partition,
                factory: factory.clone(),
                config: config.clone(),
                rx,
                pending: VecDeque::new(),
            };
            tasks.push(tokio::spawn(sup.run()));
            handles.push(VnodeHandle {
                partition,
                tx,
                cell,
            });
        }
        Ok(Self {
            handles,
            tasks,
            closing,
        })
    }

    /// Fires when the set starts shutting down: tasks serving its vnodes
    /// stop on it.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub fn get(&self, partition: PartitionId) -> Result<&VnodeHandle<V>, CoreError> {
        self.handles
            .get(partition.index())
            .ok_or(CoreError::NoSuchPartition {
                partition,
                ring_size: self.handles.len() as u16,
            })
    }

    pub fn handles(&self) -> &[VnodeHandle<V>] {
        &self.handles
    }

    /// Close every mailbox, let each vnode finish what it holds, and wait.
    pub async fn shutdown(self) {
        self.closing.cancel();
        drop(self.handles);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

enum Exit {
    Closed,
    Panicked,
}

/// Restarts a partition's vnode when it panics, with back-off and a budget.
struct VnodeSupervisor<V: Vnode> {
    cell: Arc<Cell<V>>,
    partition: PartitionId,
    factory: Arc<dyn VnodeFactory<V>>,
    config: VnodeConfig,
    rx: mpsc::Receiver<Envelope<V>>,
    /// Requests taken from the mailbox but not yet handled when a vnode died.
    pending: VecDeque<Envelope<V>>,
    /// Cancelled by shutdown: handles may outlive the set (routers keep
    /// clones), so dropping them is not enough to close the mailboxes.
    closing: CancellationToken,
    closed: bool,
}

impl<V: Vnode> VnodeSupervisor<V> {
    async fn run(mut self) {
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.serve().await {
                Exit::Closed => {
                    let mut guard = self.cell.lock_async().await;
                    if let Some(mut v) = guard.take() {
                        v.shutdown();
                    }
                    return;
                }
                Exit::Panicked => {
                    *self.cell.lock_async().await = None;
                }
            }
            metrics::counter!("colony_vnode_restarts_total").increment(1);
            let now = Instant::now();
            restarts.retain(|t| now.duration_since(*t) < self.config.restart_window);
            restarts.push_back(now);
            if restarts.len() as u32 > self.config.restart_budget {
                tracing::error!(partition = %self.partition, "vnode restart budget exhausted; partition stopped");
                return self.refuse_all().await;
            }
            tracing::warn!(partition = %self.partition, ?backoff, "vnode panicked; restarting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            match self.factory.build(self.partition) {
                Ok(v) => *self.cell.lock_async().await = Some(v),
                Err(e) => {
                    tracing::error!(partition = %self.partition, error = %e, "vnode could not be rebuilt; partition stopped");
                    return self.refuse_all().await;
                }
            }
        }
    }

    async fn serve(&mut self) -> Exit {
        let mut tick = tokio::time::interval(self.config.tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let cell = self.cell.clone();
        loop {
            if self.pending.is_empty() {
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, self.config.max_batch) => {
                        if n == 0 {
                            return Exit::Closed;
                        }
                        self.pending.extend(batch.drain(..));
                    }
                    () = self.closing.cancelled(), if !self.closed => {
                        // Refuse new requests; finish those already queued.
                        self.rx.close();
                        self.closed = true;
                        continue;
                    }
                    _ = tick.tick() => {
                        let mut guard = cell.lock_async().await;
                        let Some(vnode) = guard.as_mut() else {
                            return Exit::Panicked;
                        };
                        let ticked = catch_unwind(AssertUnwindSafe(|| vnode.tick(Instant::now())));
                        if ticked.is_err() {
                            return Exit::Panicked;
                        }
                        continue;
                    }
                    () = cell.crashed.notified() => {
                        // An inline request panicked (unless the vnode was
                        // rebuilt since).
                        if cell.lock_async().await.is_none() {
                            return Exit::Panicked;
                        }
                        continue;
                    }
                }
            }
            let mut guard = cell.lock_async().await;
            let Some(vnode) = guard.as_mut() else {
                return Exit::Panicked;
            };
            if self.handle_pending(vnode).is_err() {
                return Exit::Panicked;
            }
        }
    }

    /// Handle what is pending as one batch; commit; reply. `Err` if a request
    /// panicked (its caller is told `VnodeCrashed`); the requests after it
    /// stay pending for the rebuilt vnode.
    fn handle_pending(&mut self, vnode: &mut V) -> Result<(), ()> {
        let pending = &mut self.pending;
        let (done, crashed) = run_batch(
            vnode,
            self.partition,
            &mut std::iter::from_fn(|| pending.pop_front()),
        );
        self.cell.unhandled.fetch_sub(done, Ordering::SeqCst);
        if crashed {
            Err(())
        } else {
            Ok(())
        }
    }

    /// The vnode is gone for good: drop every request so callers learn it.
    async fn refuse_all(mut self) {
        self.pending.clear();
        self.rx.close();
        while self.rx.recv().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
