use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

const POISON: u64 = u64::MAX;
const BLOCK: u64 = 1_000_000;

/// A counter vnode: panics on `POISON`, waits on `gate` for `BLOCK`.
struct Counter {
    value: u64,
    commits: Arc<AtomicU64>,
    gate: Arc<Mutex<()>>,
    entered: Arc<AtomicBool>,
    inline: bool,
    /// The task that handled the last request.
    handled_by: Arc<Mutex<Option<tokio::task::Id>>>,
}

impl Vnode for Counter {
    type Request = u64;
    type Reply = u64;
    fn inline(&self) -> bool {
        self.inline
    }
    fn handle(&mut self, add: u64) -> u64 {
        *self.handled_by.lock().unwrap() = tokio::task::try_id();
        assert!(add != POISON, "poison request");
        if add == BLOCK {
            self.entered.store(true, Ordering::SeqCst);
            drop(self.gate.lock());
            return self.value;
        }
        self.value += add;
        self.value
    }
    fn commit(&mut self, _replies: &mut [u64]) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }
}

struct Fixture {
    set: VnodeSet<Counter>,
    commits: Arc<AtomicU64>,
    gate: Arc<Mutex<()>>,
    entered: Arc<AtomicBool>,
    handled_by: Arc<Mutex<Option<tokio::task::Id>>>,
}

fn start(config: VnodeConfig) -> Fixture {
    start_with(config, false)
}

fn start_with(config: VnodeConfig, inline: bool) -> Fixture {
    let commits = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Mutex::new(()));
    let entered = Arc::new(AtomicBool::new(false));
    let handled_by = Arc::new(Mutex::new(None));
    let (c, g, e, t) = (
        commits.clone(),
        gate.clone(),
        entered.clone(),
        handled_by.clone(),
    );
    let factory = move |_p: PartitionId| {
        Ok(Counter {
            value: 0,
            commits: c.clone(),
            gate: g.clone(),
            entered: e.clone(),
            inline,
            handled_by: t.clone(),
        })
    };
    let set = VnodeSet::start([PartitionId(0), PartitionId(1)], Arc::new(factory), config)
        .expect("start");
    Fixture {
        set,
        commits,
        gate,
        entered,
        handled_by,
    }
}

async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn requests_to_one_partition_apply_in_order() {
    let f = start(VnodeConfig::default());
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let mut last = 0;
    for i in 1..=100 {
        last = h.call(i).await.unwrap();
    }
    assert_eq!(last, 5050);
    assert!(f.commits.load(Ordering::SeqCst) >= 1);
    drop(h);
    f.set.shutdown().await;
}

/// A request that panics gets `VnodeCrashed`; the vnode is rebuilt from its
/// factory (its in-memory state starts again) and the other partition never
/// notices. The same whether the request ran in the mailbox or inline.
async fn a_panic_is_an_error_and_the_vnode_is_rebuilt(inline: bool) {
    let f = start_with(VnodeConfig::default(), inline);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    assert_eq!(h.call(5).await.unwrap(), 5);
    assert_eq!(
        h.call(POISON).await,
        Err(CoreError::VnodeCrashed {
            partition: PartitionId(0)
        })
    );
    assert_eq!(h.call(1).await.unwrap(), 1);
    assert_eq!(h.call(1).await.unwrap(), 2);
    assert_eq!(f.set.get(PartitionId(1)).unwrap().call(2).await.unwrap(), 2);
    drop(h);
    f.set.shutdown().await;
}

#[tokio::test]
async fn a_panicking_request_gets_an_error_and_the_vnode_restarts() {
    a_panic_is_an_error_and_the_vnode_is_rebuilt(false).await;
}

#[tokio::test]
async fn restart_budget_exhausted_stops_the_partition() {
    let f = start(VnodeConfig {
        restart_budget: 1,
        ..VnodeConfig::default()
    });
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    assert!(h.call(POISON).await.is_err());
    assert!(h.call(POISON).await.is_err());
    let err = h.call(1).await.unwrap_err();
    assert_eq!(
        err,
        CoreError::VnodeStopped {
            partition: PartitionId(0)
        }
    );
    drop(h);
    f.set.shutdown().await;
}

// The test holds the gate across awaits on purpose: it keeps the vnode busy.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_overloaded_at_once() {
    let f = start(VnodeConfig {
        mailbox_capacity: 1,
        ..VnodeConfig::default()
    });
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let held = f.gate.lock().unwrap();
    let blocked = tokio::spawn({
        let h = h.clone();
        async move { h.call(BLOCK).await }
    });
    until(|| f.entered.load(Ordering::SeqCst)).await;
    let queued = tokio::spawn({
        let h = h.clone();
        async move { h.call(1).await }
    });
    until(|| h.queue_len() == 1).await;
    assert_eq!(
        h.call(1).await,
        Err(CoreError::Overloaded {
            partition: PartitionId(0)
        })
    );
    drop(held);
    assert_eq!(blocked.await.unwrap(), Ok(0));
    assert_eq!(queued.await.unwrap(), Ok(1));
    drop(h);
    f.set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_vnode_runs_requests_on_the_callers_task() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let handled_by = f.handled_by.clone();
    let caller = tokio::spawn(async move {
        let mut last = 0;
        for i in 1..=100 {
            last = h.call(i).await.unwrap();
            assert_eq!(
                *handled_by.lock().unwrap(),
                Some(tokio::task::id()),
                "request {i} did not run inline"
            );
        }
        last
    });
    assert_eq!(caller.await.unwrap(), 5050);
    // Each inline request is committed before it is answered.
    assert_eq!(f.commits.load(Ordering::SeqCst), 100);
    f.set.shutdown().await;
}

/// A request still in the mailbox keeps the caller's later ones out of the
/// inline path, so they cannot overtake it.
#[tokio::test(flavor = "current_thread")]
async fn a_request_in_the_mailbox_is_never_overtaken_inline() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    // Busy vnode: the first request goes to the mailbox.
    let busy = h.cell.state.lock().unwrap();
    let first = h.send(1).unwrap();
    drop(busy);
    // Idle again, but the first request is not handled yet.
    let second = h.send(10).unwrap();
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(second.await.unwrap(), 11);
    drop(h);
    f.set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_panic_is_an_error_and_the_vnode_is_rebuilt() {
    a_panic_is_an_error_and_the_vnode_is_rebuilt(true).await;
}

/// A batch sent to an idle vnode runs on the caller's task, in order, with
/// one commit for all of it; no reply comes before it is sent.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_runs_inline_in_order_with_one_commit() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let (commits, handled_by) = (f.commits.clone(), f.handled_by.clone());
    let caller = tokio::spawn(async move {
        let mut batch = h.batch();
        let mut replies: Vec<_> = (1..=10).map(|i| batch.push(i)).collect();
        let first = replies.remove(0);
        tokio::pin!(first);
        {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(
                std::future::Future::poll(first.as_mut(), &mut cx).is_pending(),
                "a reply before its batch was sent"
            );
        }
        assert_eq!(commits.load(Ordering::SeqCst), 0);
        batch.send();
        assert_eq!(first.await.unwrap(), 1);
        let mut sum = 1;
        for (i, r) in (2..=10).zip(replies) {
            sum += i;
            assert_eq!(r.await.unwrap(), sum);
        }
        assert_eq!(*handled_by.lock().unwrap(), Some(tokio::task::id()));
    });
    caller.await.unwrap();
    assert_eq!(f.commits.load(Ordering::SeqCst), 1);
    f.set.shutdown().await;
}

/// A batch for a busy vnode goes to its mailbox, behind what is there, and
/// a later request of the same caller cannot overtake it inline.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_for_a_busy_vnode_queues_and_is_not_overtaken() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let busy = h.cell.state.lock().unwrap();
    let mut batch = h.batch();
    let a = batch.push(1);
    let b = batch.push(10);
    batch.send();
    drop(busy);
    let c = h.send(100).unwrap();
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(b.await.unwrap(), 11);
    assert_eq!(c.await.unwrap(), 111);
    drop(h);
    f.set.shutdown().await;
}

/// Requests of a batch the mailbox has no room for are answered
/// `Overloaded` through their replies, and are never applied.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_past_a_full_mailbox_is_refused_from_there_on() {
    let f = start_with(
        VnodeConfig {
            mailbox_capacity: 2,
            ..VnodeConfig::default()
        },
        true,
    );
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let busy = h.cell.state.lock().unwrap();
    let mut batch = h.batch();
    let replies: Vec<_> = [1, 10, 100, 1000].map(|i| batch.push(i)).into();
    batch.send();
    drop(busy);
    let mut got = Vec::new();
    for r in replies {
        got.push(r.await);
    }
    let overloaded = Err(CoreError::Overloaded {
        partition: PartitionId(0),
    });
    assert_eq!(got, vec![Ok(1), Ok(11), overloaded.clone(), overloaded]);
    // Nothing refused was applied.
    assert_eq!(h.call(0).await.unwrap(), 11);
    drop(h);
    f.set.shutdown().await;
}

/// A batch dropped without `send` is still sent: no reply waits forever.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_batch_is_sent() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let mut batch = h.batch();
    let r = batch.push(7);
    drop(batch);
    assert_eq!(r.await.unwrap(), 7);
    drop(h);
    f.set.shutdown().await;
}

/// A request that panics inline fails alone: those before it are answered,
/// those after it wait for the rebuilt vnode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_an_inline_batch_fails_only_that_request() {
    let f = start_with(VnodeConfig::default(), true);
    let h = f.set.get(PartitionId(0)).unwrap().clone();
    let mut batch = h.batch();
    let a = batch.push(5);
    let b = batch.push(POISON);
    let c = batch.push(1);
    batch.send();
    assert_eq!(a.await.unwrap(), 5);
    assert_eq!(
        b.await,
        Err(CoreError::VnodeCrashed {
            partition: PartitionId(0)
        })
    );
    // The rebuilt vnode starts from zero and then applies the rest.
    assert_eq!(c.await.unwrap(), 1);
    assert_eq!(h.call(1).await.unwrap(), 2);
    drop(h);
    f.set.shutdown().await;
}

/// A vnode whose commits go to a buffer that a shared group flush empties.
struct Buffered {
    group: Arc<GroupFlush>,
    inline: bool,
}

impl Vnode for Buffered {
    type Request = u64;
    type Reply = u64;
    fn inline(&self) -> bool {
        self.inline
    }
    fn handle(&mut self, x: u64) -> u64 {
        x
    }
    fn commit(&mut self, _replies: &mut [u64]) {
        self.group.committed();
    }
    fn barrier(&mut self) -> Option<Barrier> {
        self.group.barrier()
    }
}

#[tokio::test]
async fn no_reply_is_seen_before_its_commit_is_flushed() {
    for inline in [false, true] {
        let flushes = Arc::new(AtomicU64::new(0));
        let f = flushes.clone();
        let group = GroupFlush::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let g = group.clone();
        let factory = move |_p: PartitionId| {
            Ok(Buffered {
                group: g.clone(),
                inline,
            })
        };
        let set = VnodeSet::start([PartitionId(0)], Arc::new(factory), VnodeConfig::default())
            .expect("start");
        let h = set.get(PartitionId(0)).unwrap().clone();
        for i in 1..=3 {
            assert_eq!(h.call(i).await.unwrap(), i);
            assert_eq!(
                flushes.load(Ordering::SeqCst),
                i,
                "inline={inline}: reply {i} seen before its flush"
            );
        }
        // Many callers at once share flushes.
        let calls: Vec<_> = (0..50).map(|i| h.send(i).unwrap()).collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), i as u64);
        }
        assert!(
            flushes.load(Ordering::SeqCst) < 3 + 50,
            "inline={inline}: no flush was shared"
        );
        assert!(group.barrier().is_none(), "a commit was left unflushed");
        set.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_flush_fails_the_reply() {
    let group = GroupFlush::new(|| Err("no space left on device".to_string()));
    let g = group.clone();
    let factory = move |_p: PartitionId| {
        Ok(Buffered {
            group: g.clone(),
            inline: true,
        })
    };
    let set = VnodeSet::start([PartitionId(0)], Arc::new(factory), VnodeConfig::default()).unwrap();
    let h = set.get(PartitionId(0)).unwrap().clone();
    let err = h.call(7).await.unwrap_err();
    assert!(
        matches!(&err, CoreError::NotDurable { reason, .. } if reason.contains("no space")),
        "{err:?}"
    );
    set.shutdown().await;
}
