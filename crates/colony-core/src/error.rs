//! Errors of the distribution layer.

use crate::PartitionId;
use std::net::SocketAddr;

/// What can go wrong in the distribution layer: routing a request to a vnode,
/// membership, the ring.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoreError {
    /// The vnode's mailbox is full: the node is saturated. Retry later.
    #[error("partition {partition} is overloaded, retry later")]
    Overloaded { partition: PartitionId },
    /// The vnode crashed while handling the request (it is being restarted).
    #[error("partition {partition} restarted while handling the request, retry")]
    VnodeCrashed { partition: PartitionId },
    /// The request was handled, but its commit could not be handed to
    /// storage: whether it persists is unknown.
    #[error("partition {partition} could not persist the write: {reason}")]
    NotDurable {
        partition: PartitionId,
        reason: String,
    },
    /// The vnode is stopped (node shutting down, or restart budget exhausted).
    #[error("partition {partition} is not running")]
    VnodeStopped { partition: PartitionId },
    /// No such partition on this ring.
    #[error("partition {partition} is not on this ring of {ring_size}")]
    NoSuchPartition {
        partition: PartitionId,
        ring_size: u16,
    },
    /// The ring size is not a power of two in the allowed range.
    #[error("ring size {0} is invalid: it must be a power of two from 1 to 1024")]
    InvalidRingSize(u32),
    /// A ring document that cannot be used, or a ring change that is not allowed.
    #[error("{0}")]
    BadRing(String),
    /// Membership could not open its gossip socket or start gossiping.
    #[error("gossip on {addr} is unavailable: {reason}")]
    GossipUnavailable { addr: SocketAddr, reason: String },
    /// A membership setting is out of range.
    #[error("invalid membership setting: {0}")]
    InvalidMembershipConfig(String),
    /// Joining, gossip, the cluster port or the ring file.
    #[error("{0}")]
    Cluster(String),
}

impl CoreError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Overloaded { .. } | Self::VnodeCrashed { .. })
    }
}
