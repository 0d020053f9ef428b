//! Where a request goes: partition-wide requests to the partition's
//! holders (owner first), key requests through the replicas or to this
//! node alone; retried while a partition moves or a holder is unreachable.

use super::{KvRpc, Router, KV_SERVICE};
use crate::coordinator::{self, KeyReq, Need, Placement};
use crate::props::BucketProps;
use crate::vnode::{KvRequest, KvResponse, KvVnode};
use crate::KvError;
use bytes::Bytes;
use colony_core::rpc::RpcError;
use colony_core::vnode::VnodeHandle;
use colony_core::{NodeId, PartitionId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a coordinator keeps retrying a request whose partition is
/// moving or whose owner is unreachable before answering TRYAGAIN.
pub(super) const ROUTE_DEADLINE: Duration = Duration::from_secs(5);

/// Most buckets whose properties the route cache keeps (it is emptied when
/// full).
const ROUTE_CACHE_BUCKETS: usize = 1024;

/// Most buckets a thread remembers local routes for (forgotten when full).
const LOCAL_MEMO_BUCKETS: usize = 16;

thread_local! {
    /// Buckets whose key requests this thread found served by this node
    /// alone (a node alone on its ring), by router and ring generation:
    /// such a request then skips the walk, the quorum arithmetic and the
    /// shared locks of routing (6% of a single node's CPU under pipelined
    /// SADD). Only requests without per-request quorum overrides use it.
    static LOCAL_MEMO: std::cell::RefCell<LocalMemo> =
        std::cell::RefCell::new(LocalMemo::default());
}

#[derive(Default)]
struct LocalMemo {
    router: u64,
    generation: u64,
    /// (bucket, [reads local, writes local]).
    buckets: Vec<(Bytes, [bool; 2])>,
}

impl LocalMemo {
    fn knows_local(&self, router: u64, generation: u64, bucket: &Bytes, read: bool) -> bool {
        self.router == router
            && self.generation == generation
            && self
                .buckets
                .iter()
                .any(|(b, local)| b == bucket && local[usize::from(!read)])
    }

    fn remember_local(&mut self, router: u64, generation: u64, bucket: &Bytes, read: bool) {
        if self.router != router || self.generation != generation {
            self.router = router;
            self.generation = generation;
            self.buckets.clear();
        }
        let slot = match self.buckets.iter().position(|(b, _)| b == bucket) {
            Some(i) => i,
            None => {
                if self.buckets.len() >= LOCAL_MEMO_BUCKETS {
                    self.buckets.clear();
                }
                self.buckets.push((bucket.clone(), [false; 2]));
                self.buckets.len() - 1
            }
        };
        self.buckets[slot].1[usize::from(!read)] = true;
    }
}

/// What routing reads from the ring, computed once per ring.
pub(super) struct RouteCache {
    placement: Arc<Placement>,
    props: HashMap<Bytes, BucketProps>,
}

pub(super) enum Target {
    Local,
    Remote(NodeId),
}

/// How a key request is served.
pub(super) enum Path {
    /// This node holds the key's only copy: straight to the local vnode.
    Local,
    /// Through the replicas (with stand-ins past them on the ring, and for
    /// a write the nodes that get it uncounted: see `coordinator::write`).
    Replicated(Vec<coordinator::Target>, Need, Vec<NodeId>, Vec<NodeId>),
}

impl Router {
    /// This node's ring (None before it joined), with the view of the
    /// buckets it keeps whole brought in step with it.
    pub(super) fn ring(&self) -> Option<Arc<colony_core::Ring>> {
        let ring = self.0.cluster.get()?.ring()?;
        self.0.shared.observe(&ring, &self.0.me);
        Some(ring)
    }

    pub(super) fn local(&self, partition: PartitionId) -> Result<&VnodeHandle<KvVnode>, KvError> {
        self.0.handles.get(partition.index()).ok_or(KvError::Core(
            colony_core::CoreError::NoSuchPartition {
                partition,
                ring_size: self.0.handles.len() as u16,
            },
        ))
    }

    /// Where a partition-wide request (count, listing, random key) for
    /// `partition` goes, in order: its owner, then its other replicas, those
    /// the failure detector calls live first. Every replica holds the
    /// range, so when the owner is down another one answers.
    pub(super) fn holders(&self, partition: PartitionId) -> Result<Vec<Target>, KvError> {
        let Some(cluster) = self.0.cluster.get() else {
            return Ok(vec![Target::Local]);
        };
        let ring = cluster.ring().ok_or_else(|| {
            KvError::TryAgain("this node is joining the cluster; retry shortly".into())
        })?;
        let mut replicas = ring.replicas(partition);
        if replicas.is_empty() {
            return Err(KvError::Core(colony_core::CoreError::NoSuchPartition {
                partition,
                ring_size: ring.ring_size(),
            }));
        }
        // Stable: the owner stays first among the live ones.
        replicas.sort_by_key(|n| !cluster.is_live(n));
        Ok(replicas
            .into_iter()
            .map(|n| {
                if n == self.0.me {
                    Target::Local
                } else {
                    Target::Remote(n)
                }
            })
            .collect())
    }

    /// The walks of `ring` and the properties of `bucket` in it: the
    /// cached ones while the ring is the same (bucket properties live in
    /// the ring's metadata, so they change only with it).
    fn placement(
        &self,
        ring: Arc<colony_core::Ring>,
        bucket: &Bytes,
    ) -> (Arc<Placement>, BucketProps) {
        let mut cached = self.0.route_cache.lock().unwrap_or_else(|e| e.into_inner());
        let cache = match cached.as_mut() {
            Some(c) if Arc::ptr_eq(c.placement.ring(), &ring) => c,
            _ => cached.insert(RouteCache {
                placement: Arc::new(Placement::new(ring)),
                props: HashMap::new(),
            }),
        };
        let placement = cache.placement.clone();
        if let Some(p) = cache.props.get(bucket) {
            return (placement, p.clone());
        }
        let props = BucketProps::lookup(placement.ring(), bucket);
        if cache.props.len() >= ROUTE_CACHE_BUCKETS {
            cache.props.clear();
        }
        cache.props.insert(bucket.clone(), props.clone());
        (placement, props)
    }

    /// How to serve a request for a key of `partition`, by this node's
    /// ring, failure detector and the bucket's properties.
    pub(super) fn path(&self, kr: &KeyReq) -> Result<Path, KvError> {
        let Some(cluster) = self.0.cluster.get() else {
            return Ok(Path::Local);
        };
        let read = kr.op.is_read_only();
        // Read before the ring: if the ring changes meanwhile, what is
        // remembered below is remembered under the older generation.
        let generation = cluster.ring_generation();
        let memo = kr.overrides == crate::props::Overrides::default();
        if memo
            && LOCAL_MEMO.with(|m| {
                m.borrow()
                    .knows_local(self.0.id, generation, &kr.bucket, read)
            })
        {
            return Ok(Path::Local);
        }
        let ring = self.ring().ok_or_else(|| {
            KvError::TryAgain("this node is joining the cluster; retry shortly".into())
        })?;
        let (placement, props) = self.placement(ring, &kr.bucket);
        // A bucket every owner keeps whole: the whole walk holds the key.
        let shared = props.is_shared();
        let replicas = if shared {
            placement.walk(kr.partition)
        } else {
            placement.replicas(kr.partition)
        };
        let q = props.resolve(placement.ring().n_val(), replicas.len(), &kr.overrides);
        let need = Need::of(&q, read);
        if let Some((name, k)) = q.excess(read) {
            return Err(KvError::QuorumUnmet(Box::new(crate::error::Unmet {
                op: if read { "read" } else { "write" }.into(),
                needed: need.total,
                got: 0,
                primaries: (0, need.primary),
                durable: (0, need.durable),
                failures: vec![format!(
                    "{name}={k} asks for more copies than there are: the bucket has \
                     n_val=all and {} nodes hold it",
                    q.n
                )],
            })));
        }
        // Nodes about to own their first partition get a shared bucket's
        // writes too (uncounted), so such a write is never local only.
        let also = if shared && !read {
            placement.joining().to_vec()
        } else {
            Vec::new()
        };
        let single = need.total <= 1 && need.primary <= 1 && need.durable == 0 && also.is_empty();
        if single && matches!(placement.walk(kr.partition), [only] if *only == self.0.me) {
            // This node is the only one on the ring (so for every
            // partition, while the ring stays as it is).
            if memo {
                LOCAL_MEMO.with(|m| {
                    m.borrow_mut()
                        .remember_local(self.0.id, generation, &kr.bucket, read)
                });
            }
            return Ok(Path::Local);
        }
        let mut targets =
            coordinator::targets(&placement, kr.partition, q.n, |x| cluster.is_live(x));
        // The failure detector only suggests: when the nodes it calls live
        // cannot make the quorum (a node just started has heard from no
        // one yet), ask the replicas themselves.
        let primaries = targets.iter().filter(|t| t.primary).count();
        let counted = targets.iter().filter(|t| !t.pending).count();
        if counted < need.total || primaries < need.primary {
            targets = coordinator::targets(&placement, kr.partition, q.n, |_| true);
        }
        // While moves are planned, the nodes joining the key's replica set
        // (a bucket every owner keeps whole has none: see `also`).
        if !shared {
            coordinator::add_pending(&placement, kr.partition, q.n, read, &mut targets, |x| {
                cluster.is_live(x)
            });
            if targets.iter().any(|t| t.sets != 0) {
                let op = if read { "read" } else { "write" };
                metrics::counter!("colony_kv_joint_quorums_total", "op" => op).increment(1);
            }
        }
        let alone =
            targets.len() == 1 && targets[0].node == self.0.me && targets[0].hints.is_empty();
        if alone && single {
            return Ok(Path::Local);
        }
        let mut spares =
            coordinator::spares(&placement, kr.partition, &targets, |x| cluster.is_live(x));
        // Then the nodes the failure detector calls down, last: it lags
        // behind a node that is back, and a refused call costs little.
        spares.extend(coordinator::spares(
            &placement,
            kr.partition,
            &targets,
            |x| !cluster.is_live(x),
        ));
        Ok(Path::Replicated(targets, need, spares, also))
    }

    /// Serve a key request through the replicas, retrying while its
    /// partition is moving (a leader refused it before applying anything).
    pub(super) async fn replicated(self, kr: KeyReq) -> Result<KvResponse, KvError> {
        let deadline = Instant::now() + ROUTE_DEADLINE;
        let mut delay = Duration::from_millis(1);
        loop {
            let read = kr.op.is_read_only();
            let result = match self.path(&kr) {
                Ok(Path::Local) => {
                    let req = KvRequest::Key {
                        bucket: kr.bucket.clone(),
                        key: kr.key.clone(),
                        hash: kr.hash,
                        op: kr.op.clone(),
                    };
                    match self.local(kr.partition)?.call(req).await {
                        Ok(KvResponse::Failed(e)) => Err(e),
                        Ok(r) => Ok(r),
                        Err(e) => Err(e.into()),
                    }
                }
                Ok(Path::Replicated(targets, need, spares, _)) if read => {
                    let clock = self.0.clock.clone();
                    coordinator::read(&self, kr.clone(), targets, need, &*clock, &spares).await
                }
                Ok(Path::Replicated(targets, need, spares, also)) => {
                    coordinator::write(&self, kr.clone(), targets, need, &spares, &also).await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(KvError::TryAgain(_) | KvError::NotOwner(_))
                    if Instant::now() + delay <= deadline =>
                {
                    metrics::counter!("colony_kv_reroutes_total").increment(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(10));
                }
                Err(KvError::NotOwner(_)) => {
                    return Err(KvError::TryAgain(format!(
                        "partition {} is moving between nodes; retry",
                        kr.partition
                    )))
                }
                other => return other,
            }
        }
    }

    /// Send `req` to one node and return its answer, errors included.
    pub(super) async fn once(
        &self,
        partition: PartitionId,
        to: &Target,
        req: KvRequest,
    ) -> Result<KvResponse, KvError> {
        match to {
            Target::Local => Ok(self.local(partition)?.call(req).await?),
            Target::Remote(node) => {
                let cluster = self
                    .0
                    .cluster
                    .get()
                    .ok_or_else(|| KvError::Unavailable("no cluster".into()))?;
                let body = colony_core::cluster::msg::encode(&KvRpc { partition, req });
                match cluster.call(node, KV_SERVICE, body).await {
                    Ok(reply) => colony_core::cluster::msg::decode::<KvResponse>(&reply)
                        .map_err(KvError::Storage),
                    Err(RpcError::Overloaded) => {
                        Err(KvError::Core(colony_core::CoreError::Overloaded {
                            partition,
                        }))
                    }
                    Err(RpcError::Remote(e)) => Err(KvError::Storage(format!("{node}: {e}"))),
                    Err(e) => Err(KvError::Unavailable(format!(
                        "the node owning partition {partition} ({node}) is unreachable: {e}"
                    ))),
                }
            }
        }
    }

    /// Route `req` to its partition's owner, following "moved" hints and
    /// retrying "try again" answers until [`ROUTE_DEADLINE`].
    pub(super) async fn route(
        self,
        partition: PartitionId,
        req: KvRequest,
        mut hint: Option<NodeId>,
    ) -> Result<KvResponse, KvError> {
        let deadline = Instant::now() + ROUTE_DEADLINE;
        let mut delay = Duration::from_millis(1);
        // Which of the partition's holders to ask next.
        let mut next = 0;
        loop {
            let to = match hint.take() {
                Some(n) if n == self.0.me => Target::Local,
                Some(n) => Target::Remote(n),
                None => {
                    let mut holders = self.holders(partition)?;
                    let i = next % holders.len();
                    holders.swap_remove(i)
                }
            };
            let err = match self.once(partition, &to, req.clone()).await {
                Ok(KvResponse::Failed(e)) => e,
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            match &err {
                KvError::NotOwner(n) => {
                    let n = NodeId::new(n.clone());
                    let same = match &to {
                        Target::Local => n == self.0.me,
                        Target::Remote(t) => *t == n,
                    };
                    if !same {
                        hint = Some(n);
                    }
                }
                KvError::Unavailable(_) => {
                    // Unreachable: the next holder, at once while there
                    // is one not yet asked.
                    next += 1;
                    let holders = self.holders(partition).map(|h| h.len()).unwrap_or(1);
                    if next % holders != 0 {
                        continue;
                    }
                }
                KvError::TryAgain(_) => {}
                _ => return Err(err),
            }
            if Instant::now() + delay > deadline {
                return Err(match err {
                    KvError::NotOwner(_) => KvError::TryAgain(format!(
                        "partition {partition} is moving between nodes; retry"
                    )),
                    e => e,
                });
            }
            metrics::counter!("colony_kv_reroutes_total").increment(1);
            tokio::time::sleep(delay).await;
            // A sealed partition is released within milliseconds: retry often.
            delay = (delay * 2).min(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LocalMemo;
    use bytes::Bytes;

    #[test]
    fn a_local_route_is_remembered_only_for_its_router_generation_and_kind() {
        let b = Bytes::from_static(b"default");
        let other = Bytes::from_static(b"other");
        let mut m = LocalMemo::default();
        assert!(!m.knows_local(1, 0, &b, true));
        m.remember_local(1, 0, &b, true);
        assert!(m.knows_local(1, 0, &b, true));
        assert!(
            !m.knows_local(1, 0, &b, false),
            "a read says nothing of writes"
        );
        assert!(!m.knows_local(1, 0, &other, true));
        assert!(!m.knows_local(2, 0, &b, true), "another router");
        assert!(!m.knows_local(1, 1, &b, true), "a newer ring");
        m.remember_local(1, 0, &b, false);
        assert!(m.knows_local(1, 0, &b, true) && m.knows_local(1, 0, &b, false));
        // A new ring forgets everything learned under the old one.
        m.remember_local(1, 1, &other, true);
        assert!(!m.knows_local(1, 1, &b, true));
        assert!(m.knows_local(1, 1, &other, true));
        // Bounded.
        for i in 0..100u32 {
            m.remember_local(1, 1, &Bytes::from(i.to_string()), true);
        }
        assert!(m.buckets.len() <= super::LOCAL_MEMO_BUCKETS);
    }
}
