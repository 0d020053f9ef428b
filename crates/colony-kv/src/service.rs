//! The request coordinator: routes each key to the vnode of its partition,
//! on this node or, through cluster RPC, on the node that owns it, and fans
//! partition-wide requests (scan, count, flush) out to every partition.
//!
//! A request that reaches a partition mid-handoff is answered "moved to X"
//! or "try again"; the coordinator follows the hint or waits and retries,
//! so clients never see a partition move.

use crate::store::{Store, StoreConfig};
use crate::vnode::KvRequest as Req;
use crate::vnode::{BucketCount, KvRequest, KvResponse, KvVnode, Limits};
use crate::{Clock, KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::cluster::{BoxFut, Chunk, Cluster, HandoffItem, PartitionStore};
use colony_core::rpc::{RpcError, RpcHandler, ServiceId};
use colony_core::vnode::{ReplyFuture, VnodeConfig, VnodeHandle, VnodeSet};
use colony_core::{NodeId, PartitionId, Partitioner, Ring};
use futures::future::join_all;
use rand::Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KvConfig {
    pub node: NodeId,
    pub store: StoreConfig,
    pub ring_size: u32,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub vnode: VnodeConfig,
}

/// One page of a keyspace scan. `cursor` 0 means the scan is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub cursor: u64,
    pub keys: Vec<Bytes>,
}

/// The RPC service id of the KV service.
pub const KV_SERVICE: ServiceId = colony_core::cluster::msg::FIRST_APP;

/// How long a coordinator keeps retrying a request whose partition is
/// moving or whose owner is unreachable before answering TRYAGAIN.
const ROUTE_DEADLINE: Duration = Duration::from_secs(5);

pub struct KvService {
    partitioner: Partitioner,
    ring: Ring,
    vnodes: VnodeSet<KvVnode>,
    store: Arc<Store>,
    max_key_bytes: usize,
    router: Router,
}

/// What a request needs to find its partition, shareable with the futures
/// that retry it.
#[derive(Clone)]
pub struct Router(Arc<RouterInner>);

struct RouterInner {
    me: NodeId,
    handles: Vec<VnodeHandle<KvVnode>>,
    cluster: OnceLock<Arc<Cluster>>,
}

enum Target {
    Local,
    Remote(NodeId),
}

impl Router {
    fn local(&self, partition: PartitionId) -> Result<&VnodeHandle<KvVnode>, KvError> {
        self.0.handles.get(partition.index()).ok_or(KvError::Core(
            colony_core::CoreError::NoSuchPartition {
                partition,
                ring_size: self.0.handles.len() as u16,
            },
        ))
    }

    /// Where the partition lives, by this node's ring.
    fn target(&self, partition: PartitionId) -> Result<Target, KvError> {
        let Some(cluster) = self.0.cluster.get() else {
            return Ok(Target::Local);
        };
        let ring = cluster.ring().ok_or_else(|| {
            KvError::TryAgain("this node is joining the cluster; retry shortly".into())
        })?;
        match ring.owner(partition) {
            Some(o) if *o == self.0.me => Ok(Target::Local),
            Some(o) => Ok(Target::Remote(o.clone())),
            None => Err(KvError::Core(colony_core::CoreError::NoSuchPartition {
                partition,
                ring_size: ring.ring_size(),
            })),
        }
    }

    /// Send `req` to one node and return its answer, errors included.
    async fn once(
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
    async fn route(
        self,
        partition: PartitionId,
        req: KvRequest,
        mut hint: Option<NodeId>,
    ) -> Result<KvResponse, KvError> {
        let deadline = Instant::now() + ROUTE_DEADLINE;
        let mut delay = Duration::from_millis(1);
        loop {
            let to = match hint.take() {
                Some(n) if n == self.0.me => Target::Local,
                Some(n) => Target::Remote(n),
                None => self.target(partition)?,
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
                KvError::TryAgain(_) | KvError::Unavailable(_) => {}
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

/// A request forwarded to the node owning its partition.
#[derive(serde::Serialize, serde::Deserialize)]
struct KvRpc {
    partition: PartitionId,
    req: KvRequest,
}

/// Serves requests other nodes forward to this one.
struct KvRpcHandler(Router);

impl RpcHandler for KvRpcHandler {
    fn handle(
        &self,
        _from: NodeId,
        _service: ServiceId,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>> {
        let router = self.0.clone();
        Box::pin(async move {
            let KvRpc { partition, req } =
                colony_core::cluster::msg::decode(&body).map_err(RpcError::Protocol)?;
            if !req_is_client(&req) {
                return Err(RpcError::Protocol("not a client request".into()));
            }
            let resp = match router.target(partition) {
                Ok(Target::Local) => match router.local(partition) {
                    Ok(h) => match h.call(req).await {
                        Ok(r) => r,
                        Err(e) => KvResponse::Failed(e.into()),
                    },
                    Err(e) => KvResponse::Failed(e),
                },
                Ok(Target::Remote(owner)) => {
                    KvResponse::Failed(KvError::NotOwner(owner.to_string()))
                }
                Err(e) => KvResponse::Failed(e),
            };
            Ok(colony_core::cluster::msg::encode(&resp))
        })
    }
}

fn req_is_client(req: &KvRequest) -> bool {
    matches!(
        req,
        Req::Key { .. }
            | Req::Scan { .. }
            | Req::Count
            | Req::Flush { .. }
            | Req::RandomKey { .. }
            | Req::Size
    )
}

/// The KV store's side of handoff: core drives it through the vnodes.
struct KvPartitions {
    router: Router,
    store: Arc<Store>,
}

impl KvPartitions {
    fn ask(
        &self,
        partition: PartitionId,
        req: KvRequest,
    ) -> BoxFut<'_, Result<KvResponse, String>> {
        Box::pin(async move {
            let h = self.router.local(partition).map_err(|e| e.to_string())?;
            match h.call(req).await {
                Ok(KvResponse::Failed(e)) => Err(e.to_string()),
                Ok(r) => Ok(r),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn unit(&self, partition: PartitionId, req: KvRequest) -> BoxFut<'_, Result<(), String>> {
        let f = self.ask(partition, req);
        Box::pin(async move { f.await.map(|_| ()) })
    }
}

impl PartitionStore for KvPartitions {
    fn begin(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffBegin)
    }
    fn read_chunk(
        &self,
        partition: PartitionId,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> BoxFut<'_, Result<Chunk, String>> {
        let f = self.ask(partition, Req::HandoffRead { after, max_bytes });
        Box::pin(async move {
            match f.await? {
                KvResponse::Items { items, next } => Ok((items, next)),
                other => Err(format!("unexpected answer {other:?}")),
            }
        })
    }
    fn take_dirty(
        &self,
        partition: PartitionId,
        seal: bool,
    ) -> BoxFut<'_, Result<Vec<HandoffItem>, String>> {
        let f = self.ask(partition, Req::HandoffDirty { seal });
        Box::pin(async move {
            match f.await? {
                KvResponse::Items { items, .. } => Ok(items),
                other => Err(format!("unexpected answer {other:?}")),
            }
        })
    }
    fn redirty(&self, partition: PartitionId, keys: Vec<Bytes>) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffRedirty { keys })
    }
    fn unseal(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffUnseal)
    }
    fn cancel(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffCancel)
    }
    fn moved(&self, partition: PartitionId, to: NodeId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffMoved { to })
    }
    fn reset(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffReset)
    }
    fn import(
        &self,
        partition: PartitionId,
        items: Vec<HandoffItem>,
    ) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffImport { items })
    }
    fn has_data(&self, partition: PartitionId) -> bool {
        self.store
            .data()
            .prefix(partition.to_be_bytes())
            .next()
            .is_some()
    }
    fn key_count(&self, partition: PartitionId) -> BoxFut<'_, u64> {
        let f = self.ask(partition, Req::Count);
        Box::pin(async move {
            match f.await {
                Ok(KvResponse::Counts(c)) => c.values().map(|b| b.keys).sum(),
                _ => 0,
            }
        })
    }
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
        };
        let s = store.clone();
        let factory = move |p: PartitionId| {
            KvVnode::open(p, s.clone(), clock.clone(), limits).map_err(|e| e.to_string())
        };
        // Every node runs a vnode for every partition: the ring decides
        // which ones serve clients, and the others send or receive handoffs.
        let all: Vec<_> = partitioner.partitions().collect();
        let vnodes = VnodeSet::start(all, Arc::new(factory), config.vnode.clone())
            .map_err(KvError::Corrupt)?;
        let router = Router(Arc::new(RouterInner {
            me: config.node.clone(),
            handles: vnodes.handles().to_vec(),
            cluster: OnceLock::new(),
        }));
        Ok(Self {
            partitioner,
            ring,
            vnodes,
            store,
            max_key_bytes: config.max_key_bytes,
            router,
        })
    }

    /// Serve as a member of `cluster`: route by its ring, answer requests
    /// forwarded from other members, and hand partitions off when it asks.
    pub fn attach(&self, cluster: Arc<Cluster>) {
        cluster.register(KV_SERVICE, Arc::new(KvRpcHandler(self.router.clone())));
        cluster.set_store(Arc::new(KvPartitions {
            router: self.router.clone(),
            store: self.store.clone(),
        }));
        let _ = self.router.0.cluster.set(cluster);
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
    ) -> Result<KvResponse, KvError> {
        self.check_key(&key)?;
        let (partition, hash) = self.partitioner.locate(bucket, &key);
        let req = KvRequest::Key {
            bucket: bucket.clone(),
            key,
            hash,
            op,
        };
        self.request(partition, req).await
    }

    /// Send `op` to its vnode now; the returned future yields the reply.
    /// Ops submitted in order from one task are applied in that order.
    pub fn submit(&self, bucket: &Bytes, key: Bytes, op: KeyOp) -> Submitted {
        if let Err(e) = self.check_key(&key) {
            return Submitted::Failed(Some(e));
        }
        let (partition, hash) = self.partitioner.locate(bucket, &key);
        let req = KvRequest::Key {
            bucket: bucket.clone(),
            key,
            hash,
            op,
        };
        match self.router.target(partition) {
            // The common case: straight into the local vnode's mailbox, in
            // submission order, keeping a copy in case the partition moves.
            Ok(Target::Local) => match self
                .router
                .local(partition)
                .and_then(|h| Ok(h.send(req.clone())?))
            {
                Ok(f) => Submitted::Sent(f, Some((self.router.clone(), partition, req))),
                Err(e) => Submitted::Failed(Some(e)),
            },
            Ok(Target::Remote(_)) | Err(KvError::TryAgain(_)) => {
                Submitted::routed(self.router.clone().route(partition, req, None))
            }
            Err(e) => Submitted::Failed(Some(e)),
        }
    }

    /// Apply `op` to `key` and answer.
    pub async fn call(&self, bucket: &Bytes, key: Bytes, op: KeyOp) -> Reply {
        match self.key_request(bucket, key, op).await {
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
        debug_assert!(matches!(op, KeyOp::Fetch | KeyOp::Take));
        match self.key_request(bucket, key, op).await? {
            KvResponse::Object(o) => Ok(o),
            other => Err(unexpected(&other)),
        }
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

    /// Remove every key of `bucket`, or of every bucket.
    pub async fn flush(&self, bucket: Option<Bytes>) -> Result<(), KvError> {
        let calls = self.partitions().map(|p| {
            self.request(
                p,
                KvRequest::Flush {
                    bucket: bucket.clone(),
                },
            )
        });
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

/// A submitted key operation's reply, to await.
pub enum Submitted {
    /// In a local vnode's mailbox; the request is kept to re-route it if
    /// the partition turns out to have moved.
    Sent(
        ReplyFuture<KvResponse>,
        Option<(Router, PartitionId, KvRequest)>,
    ),
    /// Going to (or retrying at) another node.
    Routed(Pin<Box<dyn Future<Output = Result<KvResponse, KvError>> + Send>>),
    Failed(Option<KvError>),
}

impl Submitted {
    fn routed(f: impl Future<Output = Result<KvResponse, KvError>> + Send + 'static) -> Self {
        Self::Routed(Box::pin(f))
    }
}

fn to_reply(r: Result<KvResponse, KvError>) -> Reply {
    match r {
        Ok(KvResponse::Reply(reply)) => reply,
        Ok(KvResponse::Failed(e)) | Err(e) => Reply::Error(e),
        Ok(other) => Reply::Error(unexpected(&other)),
    }
}

impl Future for Submitted {
    type Output = Reply;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let this = self.get_mut();
        match this {
            Submitted::Failed(e) => Poll::Ready(Reply::Error(
                e.take()
                    .unwrap_or(KvError::Storage("reply polled twice".into())),
            )),
            Submitted::Sent(f, retry) => {
                let r = match Pin::new(f).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                let hint = match &r {
                    Ok(KvResponse::Failed(KvError::NotOwner(n))) => Some(NodeId::new(n.clone())),
                    Ok(KvResponse::Failed(KvError::TryAgain(_))) => None,
                    _ => return Poll::Ready(to_reply(r.map_err(KvError::from))),
                };
                match retry.take() {
                    Some((router, partition, req)) => {
                        let mut routed = Box::pin(router.route(partition, req, hint));
                        let polled = routed.as_mut().poll(cx);
                        *this = Submitted::Routed(routed);
                        polled.map(to_reply)
                    }
                    None => Poll::Ready(to_reply(r.map_err(KvError::from))),
                }
            }
            Submitted::Routed(f) => f.as_mut().poll(cx).map(to_reply),
        }
    }
}

fn unexpected(resp: &KvResponse) -> KvError {
    KvError::Storage(format!("vnode gave an unexpected answer: {resp:?}"))
}
