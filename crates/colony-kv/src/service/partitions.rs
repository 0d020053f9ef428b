//! The KV store's side of ownership handoff: core drives it through the
//! vnodes of this node.

use super::Router;
use crate::store::Store;
use crate::vnode::KvRequest as Req;
use crate::vnode::{KvRequest, KvResponse, KvVnode};
use bytes::Bytes;
use colony_core::cluster::{BoxFut, Chunk, DropStep, HandoffItem, PartitionStore};
use colony_core::{NodeId, PartitionId};
use std::sync::Arc;

/// About the most bytes of received entries one vnode call merges.
const IMPORT_SLICE_BYTES: usize = 32 << 10;

/// The KV store's side of handoff: core drives it through the vnodes.
pub(super) struct KvPartitions {
    pub(super) router: Router,
    pub(super) store: Arc<Store>,
    /// One import slice at a time on this node, whatever the number of
    /// transfers coming in: between two slices every client request
    /// already queued on the node's threads runs, so a joining node's
    /// clients wait behind one slice, not one per incoming transfer.
    pub(super) import_gate: tokio::sync::Semaphore,
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
    fn replicating(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        self.unit(partition, Req::HandoffServe)
    }
    fn drop_some(
        &self,
        partition: PartitionId,
        start: bool,
    ) -> BoxFut<'_, Result<DropStep, String>> {
        // Buckets this node keeps whole stay, as of the ring now (each
        // step looks again).
        let keep = match self.router.ring() {
            Some(_) => self.router.0.shared.held().to_vec(),
            None => Vec::new(),
        };
        let f = self.ask(partition, Req::HandoffDrop { start, keep });
        Box::pin(async move {
            match f.await? {
                KvResponse::Dropping(step) => Ok(step),
                other => Err(format!("unexpected answer {other:?}")),
            }
        })
    }
    /// A chunk is merged a slice at a time, each slice its own vnode call
    /// (and one slice at a time on the node), so the partition's requests
    /// wait behind one slice at most. A chunk cut short is sent again whole
    /// (the cursor moves only once all of it is in), and merging a slice
    /// twice changes nothing.
    fn import(
        &self,
        partition: PartitionId,
        items: Vec<HandoffItem>,
    ) -> BoxFut<'_, Result<(), String>> {
        Box::pin(async move {
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let mut slice = Vec::new();
                let mut size = 0;
                while size < IMPORT_SLICE_BYTES {
                    let Some(item) = items.next() else { break };
                    size += item.size();
                    slice.push(item);
                }
                let turn = self
                    .import_gate
                    .acquire()
                    .await
                    .map_err(|e| e.to_string())?;
                self.unit(partition, Req::HandoffImport { items: slice })
                    .await?;
                drop(turn);
                tokio::task::yield_now().await;
            }
            Ok(())
        })
    }
    /// Whether the partition holds anything a drop would remove: entries
    /// of buckets this node keeps whole do not count.
    fn has_data(&self, partition: PartitionId) -> bool {
        let keep = match self.router.ring() {
            Some(_) => self.router.0.shared.held(),
            None => Default::default(),
        };
        // Unreadable: say yes, and let the drop find out.
        crate::vnode::holds_other_than(&self.store, partition, &keep).unwrap_or(true)
    }
    fn shares_data(&self) -> bool {
        self.router.ring().is_some() && !self.router.0.shared.all().is_empty()
    }
    fn read_shared_chunk(
        &self,
        partition: PartitionId,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> BoxFut<'_, Result<Chunk, String>> {
        let buckets = self.router.0.shared.all().to_vec();
        let f = self.ask(
            partition,
            Req::HandoffReadBuckets {
                buckets,
                after,
                max_bytes,
            },
        );
        Box::pin(async move {
            match f.await? {
                KvResponse::Items { items, next } => Ok((items, next)),
                other => Err(format!("unexpected answer {other:?}")),
            }
        })
    }
    fn pinned(&self, partition: PartitionId) -> bool {
        KvVnode::has_hints(&self.store, partition)
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
