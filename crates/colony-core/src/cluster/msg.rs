//! Messages between cluster members, encoded with postcard. Every body is
//! one of these enums; a peer that sends something else gets an error.

use crate::{NodeId, PartitionId};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// RPC service ids. Services built on core register ids from `FIRST_APP` on.
pub const SVC_CONTROL: u8 = 0;
pub const SVC_HANDOFF: u8 = 1;
pub const FIRST_APP: u8 = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Control {
    /// A node asks to join; the answer is the ring with it staged (and
    /// committed, when the cluster auto-commits joins).
    Join { node: NodeId, addr: String },
    /// The sender's ring; the answer is the receiver's ring after merging.
    Exchange { ring: Bytes },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    Ring(Bytes),
    Refused(String),
}

/// One stored entry of a partition, opaque to core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffItem {
    pub key: Bytes,
    /// None: the key is gone (removed while the transfer ran).
    pub value: Option<Bytes>,
}

impl HandoffItem {
    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, |v| v.len())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Handoff {
    /// Start (or resume) transfer `id` of `partition`. The answer is the
    /// cursor to resume after, if the receiver holds part of this transfer.
    Begin { partition: PartitionId, id: String },
    Chunk {
        partition: PartitionId,
        id: String,
        items: Vec<HandoffItem>,
        /// The sender's cursor after this chunk, for a later resume.
        cursor: Option<Bytes>,
    },
    /// The transfer is complete and the sender has handed the partition
    /// over in `ring`: the receiver owns it now.
    Commit {
        partition: PartitionId,
        id: String,
        ring: Bytes,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HandoffReply {
    Resume(Option<Bytes>),
    Ok,
    Refused(String),
}

pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    // Encoding owned data into a Vec cannot fail.
    Bytes::from(postcard::to_stdvec(msg).unwrap_or_default())
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("undecodable message: {e}"))
}
