//! What handoff needs from the node it runs on, as one trait: its identity,
//! its ring, its store, a way to call a peer, and a clock. The cluster's
//! node is one host (tokio, TCP RPC, the ring on disk); the deterministic
//! simulation (`colony-core/tests/sim`) is the other, so that it runs
//! [`send`](super::send) and [`receive`](super::receive) themselves over a
//! simulated network and store, with simulated time.

use super::{BoxFut, HandoffConfig, PartitionStore, TransferProgress};
use crate::cluster::msg::{Handoff, HandoffReply};
use crate::{CoreError, NodeId, PartitionId, Ring};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A change to the ring, as [`HandoffHost::update_ring_local`] applies it.
pub type RingEdit<'a> = Box<dyn FnOnce(&mut Ring) -> Result<(), CoreError> + Send + 'a>;

/// The node a transfer runs on. Every method but the calls, the ring
/// changes and `sleep` answers at once; nothing here may block.
pub trait HandoffHost: Send + Sync + 'static {
    fn me(&self) -> &NodeId;
    /// Differs on every start of the node: part of every transfer id it
    /// sends (its store's record of written keys does not survive a restart,
    /// so a receiver must not resume an earlier session's transfer).
    fn session(&self) -> u64;
    fn handoff_config(&self) -> &HandoffConfig;
    /// None until the service has given the node its store.
    fn store(&self) -> Option<Arc<dyn PartitionStore>>;
    /// The transfers this node sends and receives.
    fn book(&self) -> &HandoffBook;
    /// This node's ring; None while it waits to join.
    fn ring(&self) -> Option<Arc<Ring>>;
    /// Change and persist the ring without telling anyone (the caller
    /// pushes); an error from `edit` leaves it as it was.
    fn update_ring_local<'a>(
        &'a self,
        edit: RingEdit<'a>,
    ) -> BoxFut<'a, Result<Arc<Ring>, CoreError>>;
    /// Merge a ring from a peer into this node's (take it, if this node has
    /// none yet and it lists this node).
    fn merge_ring<'a>(&'a self, theirs: &'a Ring) -> BoxFut<'a, Result<Arc<Ring>, CoreError>>;
    /// The handoff RPC: `m` to `to`, its answer, or why there is none (a
    /// call that gets no answer in time fails).
    fn call_handoff<'a>(
        &'a self,
        to: &'a NodeId,
        m: Handoff,
    ) -> BoxFut<'a, Result<HandoffReply, String>>;
    /// Send `ring` to every other member, best effort.
    fn push<'a>(&'a self, ring: &'a Arc<Ring>) -> BoxFut<'a, ()>;
    /// Resolve after `d`.
    fn sleep(&self, d: Duration) -> BoxFut<'static, ()>;
    /// The time now, for the rate limit and progress.
    fn now(&self) -> Instant;
}

/// A host's bookkeeping of transfers: progress of those it sends (for
/// status) and resume cursors of those it receives. Lost with the process.
#[derive(Default)]
pub struct HandoffBook {
    pub(super) transfers: Mutex<BTreeMap<PartitionId, TransferProgress>>,
    /// Ranges being received, by transfer id.
    pub(super) incoming: Mutex<BTreeMap<String, Incoming>>,
}

/// One range a transfer to this node is streaming.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub vnode: PartitionId,
    pub range: PartitionId,
    pub cursor: Option<Bytes>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HandoffBook {
    /// The transfers this node is sending, as status shows them.
    pub fn sending(&self) -> Vec<TransferProgress> {
        lock(&self.transfers)
            .values_mut()
            .map(|p| {
                p.elapsed_ms = p.started.map_or(0, |s| s.elapsed().as_millis() as u64);
                p.clone()
            })
            .collect()
    }

    /// Whether a transfer to this node is streaming `range`.
    pub fn receiving(&self, range: PartitionId) -> bool {
        lock(&self.incoming).values().any(|e| e.range == range)
    }

    /// Forget transfers to this node of the vnodes `keep` says no.
    pub fn retain_incoming(&self, mut keep: impl FnMut(PartitionId) -> bool) {
        lock(&self.incoming).retain(|_, e| keep(e.vnode));
    }
}
