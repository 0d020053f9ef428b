//! colony-kv: the key/value data service, built on colony-core's vnodes.
//!
//! Owns the object model (typed values with expiry), its storage layout on
//! the embedded engine (fjall), the per-partition vnode that applies
//! operations atomically, expiry (lazy on access, active on tick), and the
//! request coordinator that routes single- and multi-key requests to vnodes,
//! and buckets' replication properties (kept in the ring's metadata).
//!
//! It knows nothing of sockets facing clients: the Redis protocol and HTTP
//! live in colony-server, which maps their commands onto [`KeyOp`]s and
//! [`Reply`]s onto the wire.

pub mod aae;
pub mod clock;
pub mod crdt;
pub mod error;
pub mod glob;
pub mod object;
pub mod op;
pub mod props;
pub mod reply;
pub mod service;
pub mod shared;
pub mod store;
pub mod vnode;

mod apply;
pub mod coordinator;
mod counts;
pub mod multi;
mod retire;

pub use clock::{Clock, SystemClock};
pub use error::KvError;
pub use multi::SetAlgebra;
pub use object::{Object, Value, ValueKind};
pub use op::{ExpireCond, KeyOp, SetCond, SetExpire};
pub use props::{BucketProps, Overrides, Quorum, Resolved};
pub use reply::Reply;
pub use service::{KvConfig, KvService, Pipeline, ScanPage, Submitted};
pub use store::{FsyncPolicy, Store, StoreConfig};
pub use vnode::BucketCount;
