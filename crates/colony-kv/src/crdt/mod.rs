//! The replicated object model: every replica of a key stores a [`Doc`], a
//! state-based CRDT, and replicas converge by [`Doc::merge`].
//!
//! Redis commands still run on the plain view ([`Doc::view`] gives an
//! [`crate::Object`]); [`Doc::update`] turns the resulting plain write into
//! CRDT mutations. Strings and hash fields are registers (last writer wins
//! by [`Stamp`], with siblings for HTTP clients and a counter for
//! INCR-style commands), sets are add-wins observed-remove sets, deletes
//! remove only what they observed, and expiry is last-writer-wins
//! metadata. See `docs/design/crdt.md`.
//!
//! This module knows nothing of vnodes, storage or the network: it takes
//! the actor, the stamp and the plain write as parameters.

mod codec;
mod doc;
mod hlc;
mod map;
mod orset;
mod read;
mod register;
mod update;
mod vecmap;
mod version;

pub use doc::Doc;
pub use hlc::{Hlc, Stamp};
pub use update::{Change, OpHint};
pub use version::{Actor, Dot, VersionVector};

/// `b` in an allocation of its own. Bytes that come with a request are
/// slices of the connection's read buffer and keep the whole buffer alive
/// (tens of KiB) while they live; a state kept in the vnode's cache for
/// minutes must not hold on to that, so whatever a write puts into a state
/// is copied first. For the small values most keys hold the copy is a
/// fraction of the write's cost; without it, a cache holding one value in
/// ten pinned nearly every read buffer of the load.
pub(crate) fn owned(b: &bytes::Bytes) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
