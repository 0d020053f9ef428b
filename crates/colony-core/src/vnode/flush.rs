//! Node-wide group flush. Vnodes that need not fsync each write still
//! promise that a write is handed to the operating system before its reply
//! is seen (so `kill -9` loses nothing acknowledged). Each commit lands in
//! the storage engine's in-process buffer; the first reply that needs it
//! flushed leads a flush for every commit made so far, and the replies that
//! arrive meanwhile wait for it instead of writing themselves. Many commits,
//! across vnodes and connections, then share one system call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

type FlushFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Commits waiting in a buffer, and the flushes that hand them on.
pub struct GroupFlush {
    flush: FlushFn,
    /// Tickets handed out: one per commit written to the buffer.
    committed: AtomicU64,
    /// Every ticket up to this one has been flushed.
    flushed: AtomicU64,
    state: Mutex<State>,
    done: Notify,
}

#[derive(Default)]
struct State {
    /// A caller is flushing (or about to).
    leading: bool,
    /// A flush failed: the buffer's fate is unknown, so every later wait
    /// fails too (the storage engine refuses writes from then on as well).
    failed: Option<String>,
}

/// What a reply must wait for before it is seen.
pub struct Barrier {
    group: Arc<GroupFlush>,
    ticket: u64,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Barrier {
    /// The same barrier, for another reply of the same batch.
    pub fn share(&self) -> Barrier {
        Barrier {
            group: self.group.clone(),
            ticket: self.ticket,
        }
    }

    /// Already flushed: nothing to wait for.
    pub fn passed(&self) -> bool {
        self.group.flushed.load(Ordering::Acquire) >= self.ticket
    }

    /// Wait until the commits this barrier covers are flushed.
    pub fn wait(self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move { self.group.wait(self.ticket).await })
    }
}

impl GroupFlush {
    /// `flush` hands everything buffered so far to the operating system.
    pub fn new(flush: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            flush: Box::new(flush),
            committed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            done: Notify::new(),
        })
    }

    /// Record a commit just written to the buffer.
    pub fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    /// The barrier for a reply given now: every commit recorded so far
    /// (a read may have seen any of them). None when all are flushed.
    pub fn barrier(self: &Arc<Self>) -> Option<Barrier> {
        let ticket = self.committed.load(Ordering::SeqCst);
        if self.flushed.load(Ordering::Acquire) >= ticket {
            return None;
        }
        Some(Barrier {
            group: self.clone(),
            ticket,
        })
    }

    /// Flush everything recorded so far, here and now (for callers that
    /// cannot wait, such as a clean shutdown).
    pub fn flush_now(&self) -> Result<(), String> {
        let target = self.committed.load(Ordering::SeqCst);
        (self.flush)()?;
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn wait(&self, ticket: u64) -> Result<(), String> {
        loop {
            // Registered before looking, so a flush that ends in between
            // still wakes us.
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flushed.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            let lead = {
                let mut state = self.lock();
                if let Some(e) = &state.failed {
                    return Err(e.clone());
                }
                !std::mem::replace(&mut state.leading, true)
            };
            if lead {
                self.lead().await;
            } else {
                notified.await;
            }
        }
    }

    /// Flush for everyone. The tasks that are ready to run go first, so the
    /// commits they are about to make share this flush.
    async fn lead(&self) {
        // Dropped mid-way (the caller went away), the lead passes on.
        struct Leading<'a>(&'a GroupFlush);
        impl Drop for Leading<'_> {
            fn drop(&mut self) {
                self.0.lock().leading = false;
                self.0.done.notify_waiters();
            }
        }
        let _leading = Leading(self);
        tokio::task::yield_now().await;
        let target = self.committed.load(Ordering::SeqCst);
        match (self.flush)() {
            Ok(()) => {
                self.flushed.fetch_max(target, Ordering::AcqRel);
                metrics::counter!("colony_group_flushes_total").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing committed writes failed");
                self.lock().failed = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting() -> (Arc<GroupFlush>, Arc<AtomicUsize>) {
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let g = GroupFlush::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        (g, flushes)
    }

    #[tokio::test]
    async fn nothing_committed_needs_no_flush() {
        let (g, flushes) = counting();
        assert!(g.barrier().is_none());
        g.committed();
        let b = g.barrier().unwrap();
        assert!(!b.passed());
        b.wait().await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        assert!(g.barrier().is_none(), "flushed commits need no barrier");
    }

    #[tokio::test]
    async fn commits_made_while_the_leader_yields_share_its_flush() {
        // Each task commits, then waits; the first leads, and the others
        // run (and commit) while it yields.
        let (g, flushes) = counting();
        let mut waits = Vec::new();
        for _ in 0..20 {
            let g = g.clone();
            waits.push(tokio::spawn(async move {
                g.committed();
                g.barrier().unwrap().wait().await
            }));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_commit_after_the_flush_started_waits_for_the_next() {
        // The flush itself records a commit, as a write landing during the
        // system call would: its barrier must not pass with this flush.
        let g2: Arc<Mutex<Option<Arc<GroupFlush>>>> = Arc::new(Mutex::new(None));
        let hook = g2.clone();
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let g = GroupFlush::new(move || {
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                hook.lock().unwrap().as_ref().unwrap().committed();
            }
            Ok(())
        });
        *g2.lock().unwrap() = Some(g.clone());
        g.committed();
        g.barrier().unwrap().wait().await.unwrap();
        let late = g
            .barrier()
            .expect("the commit made during the flush is not flushed");
        late.wait().await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
        *g2.lock().unwrap() = None;
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_wait() {
        let g = GroupFlush::new(|| Err("disk on fire".to_string()));
        g.committed();
        let e = g.barrier().unwrap().wait().await.unwrap_err();
        assert!(e.contains("disk on fire"));
        g.committed();
        assert!(g.barrier().unwrap().wait().await.is_err());
    }

    #[tokio::test]
    async fn a_leader_dropped_mid_flush_hands_the_lead_on() {
        let (g, flushes) = counting();
        g.committed();
        let mut first = g.barrier().unwrap().wait();
        // Polled once: it takes the lead and yields; then it is dropped.
        let waker = futures_noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        drop(first);
        let second = g.barrier().unwrap().wait();
        tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .expect("the lead was not handed on")
            .unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
