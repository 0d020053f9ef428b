//! Hinted handoff on this node: every second, the hints kept for each
//! replica the failure detector sees again are delivered, partition by
//! partition (the delivery itself is `coordinator::deliver_hints`).

use super::Router;
use crate::coordinator::deliver_hints;
use crate::store::{self, Store};
use colony_core::PartitionId;
use std::sync::Arc;
use std::time::Duration;

const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Hints kept on this node, over every partition.
pub fn pending(store: &Store) -> u64 {
    store.hints().iter().count() as u64
}

/// Deliver hints until `stop` fires.
pub(super) async fn run(
    router: Router,
    store: Arc<Store>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
        metrics::gauge!("colony_kv_hints_pending").set(pending(&store) as f64);
        let Some(cluster) = router.0.cluster.get().cloned() else {
            continue;
        };
        let Some(ring) = cluster.ring() else { continue };
        for node in ring.members().keys() {
            if *node == router.0.me || !cluster.is_live(node) {
                continue;
            }
            for i in 0..ring.ring_size() {
                let p = PartitionId(i);
                let prefix = store::hint_prefix(p, node.as_str());
                if store.hints().prefix(&prefix).next().is_none() {
                    continue;
                }
                if let Err(e) = deliver_hints(&router, &ring, node, p).await {
                    tracing::debug!(%node, partition = %p, error = %e, "hint delivery paused");
                    break;
                }
            }
        }
    }
}
