//! The request coordinator: routes each key to the vnode of its partition,
//! on this node or, through cluster RPC, on the node that owns it, and fans
//! partition-wide requests (scan, count, flush) out to every partition.
//!
//! A request that reaches a partition mid-handoff is answered "moved to X"
//! or "try again"; the coordinator follows the hint or waits and retries,
//! so clients never see a partition move.

use crate::store::{Store, StoreConfig};
use crate::vnode::{BucketCount, KvRequest, KvResponse, KvVnode, Limits};
use crate::{Clock, KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::cluster::Cluster;
use colony_core::rpc::ServiceId;
use colony_core::vnode::{VnodeConfig, VnodeHandle, VnodeSet};
use colony_core::{NodeId, PartitionId, Partitioner, Ring};
use futures::future::{join_all, FutureExt};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::OnceLock;

mod aae;
mod hints;
mod partitions;
mod replicated;
mod route;
mod rpc;
mod submit;

pub use aae::PartitionAae;
use partitions::KvPartitions;
use route::{Path, Target};
use rpc::{KvRpc, KvRpcHandler};
pub use submit::{Pipeline, Submitted};

pub use hints::pending as hints_pending;

use crate::coordinator;
use crate::coordinator::KeyReq;
use crate::props::Overrides;

#[derive(Debug, Clone)]
pub struct KvConfig {
    pub node: NodeId,
    pub store: StoreConfig,
    pub ring_size: u32,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The node's cache of decoded key states, shared equally by the vnodes.
    pub doc_cache_bytes: u64,
    pub vnode: VnodeConfig,
    /// Active anti-entropy.
    pub aae: crate::aae::AaeConfig,
}

impl KvConfig {
    /// A small node on `path`: 16 partitions, small caches, no fsync. What
    /// tests and tools run, where durability across a crash is not the point.
    pub fn small(node: NodeId, path: std::path::PathBuf) -> Self {
        Self {
            node,
            store: StoreConfig {
                path,
                fsync: crate::FsyncPolicy::Never,
                cache_bytes: 8 << 20,
            },
            ring_size: 16,
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            doc_cache_bytes: 16 << 20,
            vnode: VnodeConfig::default(),
            aae: Default::default(),
        }
    }
}

/// One page of a keyspace scan. `cursor` 0 means the scan is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub cursor: u64,
    pub keys: Vec<Bytes>,
}

/// The RPC service id of the KV service.
pub const KV_SERVICE: ServiceId = colony_core::cluster::msg::FIRST_APP;

pub struct KvService {
    partitioner: Partitioner,
    ring: Ring,
    vnodes: VnodeSet<KvVnode>,
    store: Arc<Store>,
    max_key_bytes: usize,
    router: Router,
    aae: Arc<aae::AaeNode>,
}

/// What a request needs to find its partition, shareable with the futures
/// that retry it.
#[derive(Clone)]
pub struct Router(Arc<RouterInner>);

struct RouterInner {
    /// Unique in the process: names this router in per-thread memos.
    id: u64,
    me: NodeId,
    handles: Vec<VnodeHandle<KvVnode>>,
    cluster: OnceLock<Arc<Cluster>>,
    clock: Arc<dyn Clock>,
    /// Read repairs in flight, node-wide.
    repairs: Arc<tokio::sync::Semaphore>,
    /// The walks and bucket properties of the ring last routed by,
    /// recomputed when it changes.
    route_cache: std::sync::Mutex<Option<route::RouteCache>>,
    /// The buckets this node keeps whole (`n_val=all`), shared with its
    /// vnodes.
    shared: Arc<crate::shared::SharedBuckets>,
}

impl KvService {
    /// Open the store and start every vnode this node owns. Must run inside
    /// a tokio runtime. Fails on an unreadable or corrupt data directory.
    pub fn start(config: KvConfig, clock: Arc<dyn Clock>) -> Result<Self, KvError> {
        let partitioner = Partitioner::new(config.ring_size)?;
        let ring = Ring::single(config.node.clone(), config.ring_size)?;
        let store = Store::open(&config.store)?;
        let limits = Limits {
            max_value_bytes: config.max_value_bytes,
            doc_cache_bytes: usize::try_from(config.doc_cache_bytes / u64::from(config.ring_size))
                .unwrap_or(usize::MAX),
        };
        let s = store.clone();
        let node = config.node.clone();
        let vclock = clock.clone();
        let shared = crate::shared::SharedBuckets::new();
        let vshared = shared.clone();
        let settings = crate::vnode::AaeSettings {
            rebuild_every_ms: config.aae.rebuild_interval.as_millis() as u64,
            budget: Some(Arc::new(crate::aae::Budget::new(config.aae.build_rate))),
        };
        let factory = move |p: PartitionId| {
            KvVnode::open(p, &node, s.clone(), vclock.clone(), limits)
                .map(|v| v.with_aae(settings.clone()).with_shared(vshared.clone()))
                .map_err(|e| e.to_string())
        };
        // Every node runs a vnode for every partition: the ring decides
        // which ones serve clients, and the others send or receive handoffs.
        let all: Vec<_> = partitioner.partitions().collect();
        let vnodes = VnodeSet::start(all, Arc::new(factory), config.vnode.clone())
            .map_err(KvError::Corrupt)?;
        static ROUTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let router = Router(Arc::new(RouterInner {
            id: ROUTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            me: config.node.clone(),
            handles: vnodes.handles().to_vec(),
            cluster: OnceLock::new(),
            clock,
            repairs: coordinator::new_repair_budget(),
            route_cache: std::sync::Mutex::new(None),
            shared,
        }));
        Ok(Self {
            partitioner,
            ring,
            vnodes,
            store,
            max_key_bytes: config.max_key_bytes,
            router,
            aae: Arc::new(aae::AaeNode::new(
                config.aae.clone(),
                config.ring_size as u16,
            )),
        })
    }

    /// Serve as a member of `cluster`: route by its ring, answer requests
    /// forwarded from other members, and hand partitions off when it asks.
    pub fn attach(&self, cluster: Arc<Cluster>) {
        cluster.register(KV_SERVICE, Arc::new(KvRpcHandler(self.router.clone())));
        cluster.set_store(Arc::new(KvPartitions {
            router: self.router.clone(),
            store: self.store.clone(),
            import_gate: tokio::sync::Semaphore::new(1),
        }));
        let _ = self.router.0.cluster.set(cluster);
        tokio::spawn(hints::run(
            self.router.clone(),
            self.store.clone(),
            self.vnodes.closing(),
        ));
        if self.aae.config.enabled {
            tokio::spawn(aae::run(
                self.router.clone(),
                self.aae.clone(),
                self.router.0.clock.clone(),
                self.vnodes.closing(),
            ));
        }
    }

    /// Anti-entropy status of every partition on this node.
    pub async fn aae_status(&self) -> Vec<PartitionAae> {
        aae::status(&self.router, &self.aae).await
    }

    /// Rebuild every tree of this node from its store, now; with `wait`,
    /// answer once they are built.
    pub async fn aae_rebuild(&self, wait: bool) -> Result<(), KvError> {
        let calls = self.partitions().map(|p| async move {
            self.router
                .local(p)?
                .call(KvRequest::AaeRebuild { wait })
                .await
                .map_err(KvError::from)
        });
        for r in join_all(calls).await {
            if let KvResponse::Failed(e) = r? {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Test hook: damage the stored copy of one key on this node (see
    /// [`crate::vnode::Damage`]). Whether the key was stored here.
    pub async fn debug_damage(
        &self,
        bucket: &Bytes,
        key: &[u8],
        how: crate::vnode::Damage,
    ) -> Result<bool, KvError> {
        let (p, hash) = self.partitioner.locate(bucket, key);
        let skey = crate::store::data_key(p, bucket, hash, key);
        let req = KvRequest::DebugDamage {
            key: Bytes::from(skey),
            how,
        };
        match self.router.local(p)?.call(req).await? {
            KvResponse::Reply(Reply::Int(n)) => Ok(n > 0),
            KvResponse::Failed(e) => Err(e),
            other => Err(unexpected(&other)),
        }
    }

    /// Hints this node keeps for unreachable replicas.
    pub fn hints_pending(&self) -> u64 {
        hints::pending(&self.store)
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn partitioner(&self) -> Partitioner {
        self.partitioner
    }

    pub fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }

    /// (memtable bytes, block cache bytes) of the store.
    pub fn memory_bytes(&self) -> (u64, u64) {
        (self.store.write_buffer_bytes(), self.store.cache_bytes())
    }

    /// Memtables the store's keeper freed off fjall's locks, so far.
    pub fn memtables_freed(&self) -> u64 {
        self.store.memtables_freed()
    }

    /// Requests waiting in vnode mailboxes, summed.
    pub fn queued_requests(&self) -> usize {
        self.vnodes.handles().iter().map(|h| h.queue_len()).sum()
    }

    async fn request(&self, partition: PartitionId, req: KvRequest) -> Result<KvResponse, KvError> {
        self.router.clone().route(partition, req, None).await
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                size: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    async fn key_request(
        &self,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
        overrides: Overrides,
    ) -> Result<KvResponse, KvError> {
        self.check_key(&key)?;
        let (partition, hash) = self.partitioner.locate(bucket, &key);
        let kr = KeyReq {
            partition,
            bucket: bucket.clone(),
            key,
            hash,
            op,
            overrides,
        };
        self.router.clone().replicated(kr).await
    }

    /// Send `op` to its vnode now; the returned future yields the reply.
    /// Ops submitted in order from one task are applied in that order.
    pub fn submit(&self, bucket: &Bytes, key: Bytes, op: KeyOp) -> Submitted {
        self.submit_to(bucket, key, op, None)
    }

    /// [`submit`](Self::submit); a request for a local vnode joins that
    /// vnode's batch in `gathering` instead of being sent now.
    fn submit_to(
        &self,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
        gathering: Option<&mut Pipeline>,
    ) -> Submitted {
        if let Err(e) = self.check_key(&key) {
            return Submitted::Failed(Some(e));
        }
        let (partition, hash) = self.partitioner.locate(bucket, &key);
        let kr = KeyReq {
            partition,
            bucket: bucket.clone(),
            key,
            hash,
            op,
            overrides: Overrides::default(),
        };
        match self.router.path(&kr) {
            // This node alone holds the key: straight into the local vnode's
            // mailbox, in submission order, keeping a copy in case the
            // partition moves.
            Ok(Path::Local) => {
                let req = KvRequest::Key {
                    bucket: kr.bucket.clone(),
                    key: kr.key.clone(),
                    hash,
                    op: kr.op.clone(),
                };
                let handle = match self.router.local(partition) {
                    Ok(h) => h,
                    Err(e) => return Submitted::Failed(Some(e)),
                };
                let sent = match gathering {
                    Some(p) => Ok(p.batch_for(handle).push(req)),
                    None => handle.send(req),
                };
                match sent {
                    Ok(f) => Submitted::Sent(f, Some(Box::new((self.router.clone(), kr)))),
                    Err(e) => Submitted::Failed(Some(e.into())),
                }
            }
            Ok(Path::Replicated(..)) | Err(KvError::TryAgain(_)) => {
                Submitted::routed(self.router.clone().replicated(kr))
            }
            Err(e) => Submitted::Failed(Some(e)),
        }
    }

    /// [`submit`](Self::submit), ordered after the requests on the same key
    /// submitted earlier through `pipeline` (local requests are ordered by
    /// their vnode's mailbox already; replicated ones take several round
    /// trips and would otherwise overtake each other). While `pipeline` is
    /// gathering, a local request waits in it until it is sent.
    pub fn submit_ordered(
        &self,
        pipeline: &mut Pipeline,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
    ) -> Submitted {
        let gathering = pipeline.gathering.then_some(&mut *pipeline);
        match self.submit_to(bucket, key.clone(), op, gathering) {
            Submitted::Routed(fut) => {
                let slot = (bucket.clone(), key);
                let prev = pipeline.last.get(&slot).cloned();
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let done = async move {
                    let _ = done_rx.await;
                }
                .boxed()
                .shared();
                pipeline.last.insert(slot, done);
                Submitted::routed(async move {
                    if let Some(p) = prev {
                        p.await;
                    }
                    let r = fut.await;
                    let _ = done_tx.send(());
                    r
                })
            }
            other => other,
        }
    }

    /// Apply `op` to `key` and answer.
    pub async fn call(&self, bucket: &Bytes, key: Bytes, op: KeyOp) -> Reply {
        self.call_with(bucket, key, op, Overrides::default()).await
    }

    /// [`call`](Self::call) with per-request quorum overrides.
    pub async fn call_with(
        &self,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
        overrides: Overrides,
    ) -> Reply {
        match self.key_request(bucket, key, op, overrides).await {
            Ok(KvResponse::Reply(r)) => r,
            Ok(other) => Reply::Error(unexpected(&other)),
            Err(e) => Reply::Error(e),
        }
    }

    /// Like [`call`](Self::call), but a reply that is an error becomes `Err`.
    pub async fn call_ok(&self, bucket: &Bytes, key: Bytes, op: KeyOp) -> Result<Reply, KvError> {
        match self.call(bucket, key, op).await {
            Reply::Error(e) => Err(e),
            r => Ok(r),
        }
    }

    /// The whole object under `key` (`Take` also removes it).
    pub async fn object(
        &self,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
    ) -> Result<Option<Object>, KvError> {
        self.object_with(bucket, key, op, Overrides::default())
            .await
    }

    /// [`object`](Self::object) with per-request quorum overrides.
    pub async fn object_with(
        &self,
        bucket: &Bytes,
        key: Bytes,
        op: KeyOp,
        overrides: Overrides,
    ) -> Result<Option<Object>, KvError> {
        debug_assert!(matches!(op, KeyOp::Fetch | KeyOp::Take));
        match self.key_request(bucket, key, op, overrides).await? {
            KvResponse::Object(o) => Ok(o),
            other => Err(unexpected(&other)),
        }
    }

    /// The key's replicated state, merged over the replicas read (None if
    /// no replica has it). HTTP shows its siblings and causal context.
    pub async fn doc_with(
        &self,
        bucket: &Bytes,
        key: Bytes,
        overrides: Overrides,
    ) -> Result<Option<crate::crdt::Doc>, KvError> {
        match self
            .key_request(bucket, key, KeyOp::FetchDoc, overrides)
            .await?
        {
            KvResponse::Doc(None) => Ok(None),
            KvResponse::Doc(Some(b)) => crate::crdt::Doc::decode(&b).map(Some),
            other => Err(unexpected(&other)),
        }
    }

    /// Write a plain value (`value` Some) or delete, with the causal context
    /// a client read: only what the context covers is replaced, so writers
    /// working from stale reads leave siblings instead of losing a value.
    /// With a context, the replicas are read first, so everything the client
    /// saw is known to the replica that applies the write.
    pub async fn write_with_context(
        &self,
        bucket: &Bytes,
        key: Bytes,
        value: Option<(Bytes, Option<Bytes>)>,
        ctx: Option<Bytes>,
        overrides: Overrides,
    ) -> Reply {
        let prior = match &ctx {
            Some(_) => match self.doc_with(bucket, key.clone(), overrides).await {
                Ok(d) => d.map(|d| d.encode()),
                Err(e) => return Reply::Error(e),
            },
            None => None,
        };
        let op = match value {
            Some((value, content_type)) => KeyOp::PutCtx(Box::new(crate::op::CtxPut {
                value,
                content_type,
                ctx,
                prior,
            })),
            None => KeyOp::DelCtx(Box::new(crate::op::CtxDel { ctx, prior })),
        };
        self.call_with(bucket, key, op, overrides).await
    }

    /// One page of keys from `cursor` (0 starts). Examines about `count`
    /// keys, so a page may be short or empty while the cursor is not 0.
    pub async fn scan(
        &self,
        bucket: &Bytes,
        cursor: u64,
        count: usize,
        pattern: Option<Bytes>,
        kind: Option<ValueKind>,
    ) -> Result<ScanPage, KvError> {
        let count = count.max(1);
        let mut from = cursor;
        let mut keys = Vec::new();
        loop {
            let partition = self.partitioner.partition_of(from);
            let req = KvRequest::Scan {
                bucket: bucket.clone(),
                from,
                count: count.saturating_sub(keys.len()).max(1),
                pattern: pattern.clone(),
                kind,
            };
            let KvResponse::Page { keys: page, next } = self.request(partition, req).await? else {
                return Err(KvError::Storage(
                    "vnode answered a scan with something else".into(),
                ));
            };
            keys.extend(page);
            let next = match next {
                Some(h) => h,
                None if partition.0 + 1 < self.partitioner.ring_size() => {
                    self.partitioner.first_hash(PartitionId(partition.0 + 1))
                }
                None => return Ok(ScanPage { cursor: 0, keys }),
            };
            // Cursor 0 means "done", so a scan can never resume at hash 0:
            // the key at hash 0, if any, is always returned by the first page.
            if keys.len() >= count || next == 0 {
                return Ok(ScanPage { cursor: next, keys });
            }
            from = next;
        }
    }

    /// Every key of `bucket` matching `pattern` (KEYS).
    pub async fn keys(
        &self,
        bucket: &Bytes,
        pattern: Option<Bytes>,
    ) -> Result<Vec<Bytes>, KvError> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self
                .scan(bucket, cursor, 1000, pattern.clone(), None)
                .await?;
            out.extend(page.keys);
            if page.cursor == 0 {
                return Ok(out);
            }
            cursor = page.cursor;
        }
    }

    /// Live key and expiry counts per bucket, over every partition.
    pub async fn counts(&self) -> Result<BTreeMap<Bytes, BucketCount>, KvError> {
        let calls = self.partitions().map(|p| self.request(p, KvRequest::Count));
        let mut total: BTreeMap<Bytes, BucketCount> = BTreeMap::new();
        for resp in join_all(calls).await {
            if let KvResponse::Counts(c) = resp? {
                for (bucket, n) in c {
                    let t = total.entry(bucket).or_default();
                    t.keys += n.keys;
                    t.expires += n.expires;
                }
            }
        }
        total.retain(|_, c| c.keys > 0);
        Ok(total)
    }

    /// Keys and stored bytes of one partition, wherever it lives.
    pub async fn partition_size(&self, partition: PartitionId) -> Result<(u64, u64), KvError> {
        match self.request(partition, KvRequest::Size).await? {
            KvResponse::Size { keys, bytes } => Ok((keys, bytes)),
            other => Err(unexpected(&other)),
        }
    }

    /// Remove every key of `bucket`, or of every bucket, on every replica
    /// (outright: a flush leaves no tombstones). A replica that cannot be
    /// reached keeps its copy; the error says which. A bucket every node
    /// keeps whole (`n_val=all`) is flushed on every node of each walk; a
    /// flush of everything flushes those buckets there by name (a vnode
    /// whose partition moved away serves only them).
    pub async fn flush(&self, bucket: Option<Bytes>) -> Result<(), KvError> {
        let ring = self.router.ring();
        let shared = self.router.0.shared.all();
        let mut calls = Vec::new();
        for p in self.partitions() {
            let (replicas, walk) = match &ring {
                Some(r) => (r.replicas(p), r.walk(p).into_iter().cloned().collect()),
                None => (vec![self.router.0.me.clone()], Vec::new()),
            };
            let mut sends: Vec<(NodeId, Option<Bytes>)> = Vec::new();
            match &bucket {
                Some(b) if shared.contains(b) => {
                    sends.extend(walk.iter().map(|n| (n.clone(), Some(b.clone()))));
                }
                b => {
                    sends.extend(replicas.iter().map(|n| (n.clone(), b.clone())));
                    if b.is_none() {
                        for n in walk.iter().filter(|n| !replicas.contains(n)) {
                            sends.extend(shared.iter().map(|s| (n.clone(), Some(s.clone()))));
                        }
                    }
                }
            }
            for (node, bucket) in sends {
                let req = KvRequest::Flush { bucket };
                let router = self.router.clone();
                calls.push(async move { router.call_node_err(&node, p, req).await });
            }
        }
        for r in join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// A random live key of `bucket`, or None if it is empty.
    pub async fn random_key(&self, bucket: &Bytes) -> Result<Option<Bytes>, KvError> {
        let q = self.partitioner.ring_size();
        let start = rand::rng().random_range(0..q);
        for i in 0..q {
            let p = PartitionId((start + i) % q);
            let from = if i == 0 {
                self.partitioner.first_hash(p)
                    | (rand::rng().random::<u64>() & self.partitioner.span_mask())
            } else {
                self.partitioner.first_hash(p)
            };
            let req = KvRequest::RandomKey {
                bucket: bucket.clone(),
                from,
            };
            if let KvResponse::Key(Some(k)) = self.request(p, req).await? {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.partitioner.partitions()
    }

    /// Make every write so far durable.
    pub fn sync(&self) {
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "sync failed");
        }
    }

    /// Stop every vnode after it finishes what it holds; the store syncs on drop.
    pub async fn shutdown(self) {
        self.vnodes.shutdown().await;
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final sync failed");
        }
    }
}

pub(crate) fn unexpected(resp: &KvResponse) -> KvError {
    KvError::Storage(format!("vnode gave an unexpected answer: {resp:?}"))
}
