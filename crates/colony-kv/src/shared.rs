//! Share-everything buckets (`n_val=all`) as this node last saw them.
//!
//! Such a bucket's keys live on every node that owns partitions, in every
//! partition's vnode, whichever partitions the node replicates: a vnode
//! must keep and serve them after its partition moved away, and a drop of
//! the partition must leave them. The vnodes learn which buckets these are
//! from this node-wide view, which the service brings in step with every
//! ring it routes or admits a request by (bucket properties travel in the
//! ring's metadata).

use bytes::Bytes;
use colony_core::{NodeId, Ring};
use std::sync::{Arc, RwLock};

/// Which buckets this node keeps whole, by the last ring it saw.
#[derive(Default)]
pub struct SharedBuckets {
    view: RwLock<View>,
}

#[derive(Default)]
struct View {
    ring: Option<Arc<Ring>>,
    /// The buckets of the ring with `n_val=all`, in storage order.
    all: Arc<Vec<Bytes>>,
    /// Those this node keeps: `all` if it owns or is about to own a
    /// partition, none otherwise (a node that left keeps nothing).
    held: Arc<Vec<Bytes>>,
}

impl SharedBuckets {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Bring the view in step with `ring` (`me` being this node). Costs a
    /// pointer comparison while the ring is the one seen last.
    pub fn observe(&self, ring: &Arc<Ring>, me: &NodeId) {
        {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            if v.ring.as_ref().is_some_and(|r| Arc::ptr_eq(r, ring)) {
                return;
            }
        }
        let all = Arc::new(crate::props::shared_buckets(ring));
        let held = if ring.shares(me) {
            all.clone()
        } else {
            Arc::new(Vec::new())
        };
        let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
        *v = View {
            ring: Some(ring.clone()),
            all,
            held,
        };
    }

    /// The buckets with `n_val=all`, whether or not this node keeps them.
    pub fn all(&self) -> Arc<Vec<Bytes>> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .clone()
    }

    /// The buckets this node keeps whole.
    pub fn held(&self) -> Arc<Vec<Bytes>> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .clone()
    }

    /// Whether this node keeps `bucket` whole.
    pub fn holds(&self, bucket: &[u8]) -> bool {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .iter()
            .any(|b| b.as_ref() == bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::{meta_key, BucketProps};

    #[test]
    fn a_node_keeps_the_shared_buckets_while_it_owns_partitions() {
        let me = NodeId::new("a");
        let mut ring = Ring::single(me.clone(), 8).unwrap();
        let mut all = BucketProps::default();
        all.set("n_val", "all").unwrap();
        ring.set_meta(&meta_key(b"everywhere"), all.encode());
        let ring = Arc::new(ring);
        let shared = SharedBuckets::new();
        assert!(!shared.holds(b"everywhere"));
        shared.observe(&ring, &me);
        assert!(shared.holds(b"everywhere"));
        assert!(!shared.holds(b"default"));
        assert_eq!(shared.all().len(), 1);
        // Another node that owns nothing keeps nothing.
        let other = SharedBuckets::new();
        other.observe(&ring, &NodeId::new("b"));
        assert!(other.held().is_empty());
        assert_eq!(other.all().len(), 1);
    }
}
