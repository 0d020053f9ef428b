//! colony-core: the distribution layer every Colony service is built on.
//!
//! Owns node identity, key hashing and partitioning, the ring (which node owns
//! which partition, and the claim that decides it), and the vnode runtime: one
//! task per partition with a bounded mailbox, supervised and restarted when it
//! panics; membership: who is in the cluster, what each member gossips
//! about itself, and which members answer (authenticated gossip with a
//! failure detector); cluster RPC: authenticated, multiplexed connections
//! between nodes; and the cluster itself: the ring kept in step across
//! members, joins, leaves and ownership handoff.
//!
//! It knows nothing of values, Redis or HTTP: a service (the KV store is the
//! first) plugs in by implementing [`vnode::Vnode`].

pub mod cluster;
pub mod error;
pub mod id;
pub mod membership;
pub mod partition;
pub mod ring;
pub mod rpc;
pub mod secret;
pub mod vnode;

pub use error::CoreError;
pub use id::{NodeId, PartitionId, RingVersion};
pub use membership::{AuthUdpTransport, Membership, MembershipConfig, Peer};
pub use partition::{key_hash, Partitioner};
pub use ring::{Member, MemberStatus, Move, Plan, Ring};
pub use rpc::{Rpc, RpcConfig, RpcError, RpcHandler, ServiceId, PROTOCOL_VERSION};
pub use secret::ClusterSecret;
