//! The one seam between the replication flows and the world: sending a
//! request to a node's vnode. Production sends through the local vnode or
//! cluster RPC (`service::Router`); the simulator through a simulated
//! network. The flows spawn their background parts (replica merges after
//! the answer, read repair) on the ambient tokio runtime.

use crate::vnode::{KvRequest, KvResponse};
use crate::KvError;
use colony_core::{NodeId, PartitionId, Ring};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a coordinator waits for a replica before counting it failed.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);

/// Read repairs in flight at once, node-wide; beyond it repairs are skipped
/// (anti-entropy catches up later), so a burst of stale reads is no storm.
pub const REPAIRS_IN_FLIGHT: usize = 64;

/// A call's failure, and whether the request may have been delivered.
#[derive(Debug)]
pub struct CallFailed {
    pub err: KvError,
    /// The replica may have received (and applied) the request: a write
    /// whose leader may have applied it must not be led again elsewhere.
    pub maybe_delivered: bool,
}

impl CallFailed {
    pub fn new(err: KvError, maybe_delivered: bool) -> Self {
        Self {
            err,
            maybe_delivered,
        }
    }
}

/// How a coordinator reaches the replicas of a key.
pub trait ReplicaTransport: Clone + Send + Sync + 'static {
    /// The node coordinating: it leads the writes of keys it holds.
    fn me(&self) -> &NodeId;

    /// Send `req` to `node`'s vnode for `partition` (this node's included)
    /// and wait for its answer, at most [`REPLICA_TIMEOUT`] for another
    /// node. A vnode's `Failed` answer is an error, not delivered.
    fn call(
        &self,
        node: &NodeId,
        partition: PartitionId,
        req: KvRequest,
    ) -> impl Future<Output = Result<KvResponse, CallFailed>> + Send;

    /// Read repairs in flight on this node.
    fn repair_budget(&self) -> &Arc<Semaphore>;
}

/// A new repair budget of [`REPAIRS_IN_FLIGHT`].
pub fn new_repair_budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(REPAIRS_IN_FLIGHT))
}

/// Whether `me` refuses a replica-level request (from another node's
/// coordinator) for `partition`: a write is refused where this node
/// neither replicates the partition nor stands in for a replica (with
/// hints) nor keeps the key's bucket whole (`shared`: the ring's buckets
/// with `n_val=all`, kept by every node that owns or is about to own a
/// partition). None: serve it; also None for requests that are not
/// replica-level.
pub fn refusal(
    ring: &Ring,
    me: &NodeId,
    partition: PartitionId,
    req: &KvRequest,
    shared: &[bytes::Bytes],
) -> Option<KvError> {
    let (hinted, kept) = match req {
        KvRequest::Lead { hints, bucket, .. } | KvRequest::Merge { hints, bucket, .. } => {
            (!hints.is_empty(), shared.contains(bucket))
        }
        // Anti-entropy runs between the nodes holding the partition's keys:
        // its replicas, and with a shared bucket every owner.
        r if r.is_aae() => (false, !shared.is_empty()),
        _ => return None,
    };
    if hinted || ring.replicates(partition, me) || (kept && ring.shares(me)) {
        return None;
    }
    let first = ring.replicas(partition).into_iter().next();
    Some(KvError::NotOwner(
        first.map(|n| n.to_string()).unwrap_or_default(),
    ))
}

/// Whether `req` is served by [`refusal`]'s rules (a replica-level request).
pub fn is_replica_request(req: &KvRequest) -> bool {
    matches!(
        req,
        KvRequest::Lead { .. }
            | KvRequest::Merge { .. }
            | KvRequest::Fetch { .. }
            | KvRequest::Reap { .. }
            | KvRequest::Flush { .. }
    ) || req.is_aae()
}
