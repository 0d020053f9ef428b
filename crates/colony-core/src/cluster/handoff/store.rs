//! What a service gives core so that core can move its partitions.

use super::BoxFut;
use crate::cluster::msg::HandoffItem;
use crate::{NodeId, PartitionId};
use bytes::Bytes;
use serde::Serialize;

/// A chunk of a partition and the cursor after it (None: the end).
pub type Chunk = (Vec<HandoffItem>, Option<Bytes>);

/// What a service gives core so it can move its partitions. Keys and values
/// are opaque bytes; a store must accept back what it handed out.
pub trait PartitionStore: Send + Sync + 'static {
    /// Start recording keys of `partition` written from now on (a store
    /// already recording keeps what it has).
    fn begin(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>>;
    /// Entries after `after` (from the start when None), about `max_bytes`
    /// of them, and the cursor to continue from (None when done).
    fn read_chunk(
        &self,
        partition: PartitionId,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> BoxFut<'_, Result<Chunk, String>>;
    /// The current state of every key recorded since the last call. With
    /// `seal`, refuse writes to the partition from now on (retryably).
    fn take_dirty(
        &self,
        partition: PartitionId,
        seal: bool,
    ) -> BoxFut<'_, Result<Vec<HandoffItem>, String>>;
    /// Whether this store keeps data that every owner holds whole ("share
    /// everything"): a node's first transfer in must then bring it along
    /// ([`read_shared_chunk`](Self::read_shared_chunk)). None by default.
    fn shares_data(&self) -> bool {
        false
    }
    /// Like [`read_chunk`](Self::read_chunk), but only the partition's
    /// entries every owner holds (see [`shares_data`](Self::shares_data)),
    /// without recording writes: a node gaining its first partition gets
    /// every partition's share this way. Nothing by default.
    fn read_shared_chunk(
        &self,
        _partition: PartitionId,
        _after: Option<Bytes>,
        _max_bytes: usize,
    ) -> BoxFut<'_, Result<Chunk, String>> {
        Box::pin(async { Ok((Vec::new(), None)) })
    }
    /// Record `keys` as written again (their sending failed).
    fn redirty(&self, partition: PartitionId, keys: Vec<Bytes>) -> BoxFut<'_, Result<(), String>>;
    /// Accept writes again (a sealed transfer failed; it will be retried).
    fn unseal(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>>;
    /// The transfer is called off: stop recording, accept writes.
    fn cancel(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>>;
    /// The partition now belongs to `to`: refuse every request, naming `to`.
    fn moved(&self, partition: PartitionId, to: NodeId) -> BoxFut<'_, Result<(), String>>;
    /// This node replicates the partition (again): serve it, even if an
    /// earlier hand-over had marked it moved.
    fn replicating(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>>;
    /// Remove a bounded part of the partition's entries (this node no
    /// longer replicates it), so no single call holds the partition's
    /// requests up for long. `start` begins a drop and forgets any handoff
    /// state; the calls after it go on only while the store has seen the
    /// partition neither written, hinted, received nor served again since
    /// (otherwise [`DropStep::Stopped`], keeping what is left). A drop cut
    /// short, by that or a crash, leaves part of the data: a later drop
    /// removes the rest.
    fn drop_some(
        &self,
        partition: PartitionId,
        start: bool,
    ) -> BoxFut<'_, Result<DropStep, String>>;
    /// Store entries received from the previous owner.
    fn import(
        &self,
        partition: PartitionId,
        items: Vec<HandoffItem>,
    ) -> BoxFut<'_, Result<(), String>>;
    /// Whether any entry of the partition is stored here.
    fn has_data(&self, partition: PartitionId) -> bool;
    /// Whether the partition's data must stay here although this node does
    /// not replicate it (it holds hints not yet handed back).
    fn pinned(&self, _partition: PartitionId) -> bool {
        false
    }
    /// About how many keys the partition holds.
    fn key_count(&self, partition: PartitionId) -> BoxFut<'_, u64>;
}

/// How far one [`PartitionStore::drop_some`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum DropStep {
    /// Nothing of the partition is left here.
    Done,
    /// A bounded part was removed; call again for the rest.
    More,
    /// The partition was written, hinted, received or served again since
    /// the drop began: what is left stays.
    Stopped,
}
