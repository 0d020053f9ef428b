//! The request coordinator: routes each key to the vnode of its partition,
//! and fans partition-wide requests (scan, count, flush) out to every vnode.

use crate::store::{Store, StoreConfig};
use crate::vnode::{BucketCount, KvRequest, KvResponse, KvVnode, Limits};
use crate::{Clock, KeyOp, KvError, Object, Reply, ValueKind};
use bytes::Bytes;
use colony_core::vnode::{ReplyFuture, VnodeConfig, VnodeSet};
use colony_core::{NodeId, PartitionId, Partitioner, Ring};
use futures::future::join_all;
use rand::Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

pub struct KvService {
    partitioner: Partitioner,
    ring: Ring,
    vnodes: VnodeSet<KvVnode>,
    store: Arc<Store>,
    max_key_bytes: usize,
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
        let owned: Vec<_> = ring.owned_by(&config.node).collect();
        let vnodes = VnodeSet::start(owned, Arc::new(factory), config.vnode.clone())
            .map_err(KvError::Corrupt)?;
        Ok(Self {
            partitioner,
            ring,
            vnodes,
            store,
            max_key_bytes: config.max_key_bytes,
        })
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
        let resp = self.vnodes.get(partition)?.call(req).await?;
        match resp {
            KvResponse::Failed(e) => Err(e),
            other => Ok(other),
        }
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
        let sent = self.check_key(&key).and_then(|()| {
            let (partition, hash) = self.partitioner.locate(bucket, &key);
            let req = KvRequest::Key {
                bucket: bucket.clone(),
                key,
                hash,
                op,
            };
            Ok(self.vnodes.get(partition)?.send(req)?)
        });
        match sent {
            Ok(f) => Submitted::Sent(f),
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
        self.vnodes.handles().iter().map(|h| h.partition())
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
    Sent(ReplyFuture<KvResponse>),
    Failed(Option<KvError>),
}

impl Future for Submitted {
    type Output = Reply;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match self.get_mut() {
            Submitted::Failed(e) => Poll::Ready(Reply::Error(
                e.take()
                    .unwrap_or(KvError::Storage("reply polled twice".into())),
            )),
            Submitted::Sent(f) => Pin::new(f).poll(cx).map(|r| match r {
                Ok(KvResponse::Reply(reply)) => reply,
                Ok(KvResponse::Failed(e)) => Reply::Error(e),
                Ok(other) => Reply::Error(unexpected(&other)),
                Err(e) => Reply::Error(e.into()),
            }),
        }
    }
}

fn unexpected(resp: &KvResponse) -> KvError {
    KvError::Storage(format!("vnode gave an unexpected answer: {resp:?}"))
}
