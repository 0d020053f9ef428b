//! The node's background work: joining through the seeds, and the
//! housekeeping loop that keeps the ring in step (digest gossip, exchanges),
//! starts handoffs, rebalances a settled ring, retires a node that has left,
//! and drops partitions handed away.

use super::msg::{self, Control, ControlReply, SVC_CONTROL};
use super::{digest_of, handoff, handoff_lock, DropStep, Inner, PartitionStore};
use crate::membership::Peer;
use crate::{MemberStatus, NodeId, PartitionId, Ring};
use bytes::Bytes;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Ask the seeds to let this node in until one does.
pub(super) async fn join_loop(inner: Arc<Inner>) {
    let mut delay = Duration::from_millis(200);
    let body = msg::encode(&Control::Join {
        node: inner.me.clone(),
        addr: inner.config.advertise.to_string(),
    });
    loop {
        for seed in &inner.config.join {
            let addr = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(mut a) => match a.next() {
                    Some(a) => a,
                    None => continue,
                },
                Err(e) => {
                    tracing::warn!(%seed, error = %e, "cannot resolve seed");
                    continue;
                }
            };
            match inner.rpc.call(addr, SVC_CONTROL, body.clone()).await {
                Ok(reply) => match msg::decode::<ControlReply>(&reply) {
                    Ok(ControlReply::Ring(bytes)) => {
                        let installed = match Ring::decode(&bytes) {
                            Ok(r) => inner.merge_ring(&r).await,
                            Err(e) => Err(e),
                        };
                        match installed {
                            Ok(ring) => {
                                tracing::info!(%seed, cluster = %format!("{:016x}", ring.cluster()), "joined the cluster");
                                return;
                            }
                            Err(e) => tracing::error!(%seed, error = %e, "joining failed"),
                        }
                    }
                    Ok(ControlReply::Refused(e)) => {
                        tracing::error!(%seed, reason = %e, "join refused")
                    }
                    Err(e) => tracing::error!(%seed, error = %e, "bad join answer"),
                },
                Err(e) => tracing::warn!(%seed, error = %e, "cannot reach seed to join"),
            }
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The node's housekeeping loop: gossip the ring digest, pull rings that
/// differ, start handoffs, retire, and drop data this node no longer owns.
pub(super) async fn maintain(inner: Arc<Inner>) {
    let period = inner.config.gossip_interval.max(Duration::from_millis(50)) * 2;
    let mut published = String::new();
    let mut last_drop_check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(ring) = inner.ring() else { continue };
        let digest = format!("{:016x}", ring.digest());
        if digest != published {
            inner.membership.set("ring", digest.clone()).await;
            published = digest.clone();
        }
        let peers = inner.membership.peers().await;
        let down: HashSet<NodeId> = peers
            .iter()
            .filter(|p| !p.live)
            .map(|p| p.node.clone())
            .collect();
        *inner.down.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(down);
        // Anti-entropy for the ring: exchange with a few live members whose
        // digest differs from ours.
        let mut differing: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.live && p.state.get("ring").is_some_and(|d| *d != digest))
            .collect();
        differing.truncate(3);
        for p in differing {
            let Some(addr) = p
                .state
                .get("rpc")
                .and_then(|a| a.parse::<SocketAddr>().ok())
            else {
                continue;
            };
            let body = msg::encode(&Control::Exchange {
                ring: Bytes::from(ring.encode()),
            });
            match inner
                .rpc
                .call_timeout(addr, SVC_CONTROL, body, Duration::from_secs(2))
                .await
            {
                Ok(reply) => inner.absorb(&reply).await,
                Err(e) => tracing::debug!(peer = %p.node, error = %e, "ring exchange failed"),
            }
        }
        let Some(ring) = inner.ring() else { continue };
        if ring.clone().as_ref().clone().retire_exited() {
            let _ = inner
                .update_ring(|r| {
                    r.retire_exited();
                    Ok(())
                })
                .await;
        }
        let Some(ring) = inner.ring() else { continue };
        // Stop only when nothing is ours or on its way to us, and every
        // member has seen that we left (a hand-over racing our retirement can
        // still give us a partition, with the only copy of its data).
        let gone = ring.member(&inner.me).map(|m| m.status) == Some(MemberStatus::Left)
            && ring.owned_by(&inner.me).next().is_none()
            && !ring.transfers().iter().any(|t| t.to == inner.me)
            && converged(&ring, &inner.me, &peers, &digest_of(&ring));
        if gone {
            inner.left.send_if_modified(|l| !std::mem::replace(l, true));
        }
        start_handoffs(&inner, &ring, &peers);
        rebalance(&inner, &ring, &peers, &digest).await;
        if last_drop_check.elapsed() >= Duration::from_secs(2) {
            last_drop_check = tokio::time::Instant::now();
            drop_foreign(&inner, &ring, &peers, &digest);
        }
    }
}

/// Whether every member (live or not, other than those gone for good) last
/// reported the ring with `digest`. Live peers only is not enough: a node
/// just restarted has heard from nobody, and would find itself agreeing.
fn converged(ring: &Ring, me: &NodeId, peers: &[Peer], digest: &str) -> bool {
    ring.members()
        .iter()
        .filter(|(n, m)| *n != me && !matches!(m.status, MemberStatus::Left | MemberStatus::Down))
        .all(|(n, _)| {
            peers
                .iter()
                .any(|p| &p.node == n && p.state.get("ring").map(String::as_str) == Some(digest))
        })
}

/// With auto-commit, once the ring is settled (no transfers, every member
/// agreeing), commit whatever the claim still wants: concurrent joins each
/// commit a plan made without the other, and their merge may leave the ring
/// unbalanced. One member does it (the first valid live one by name), so
/// members do not race to commit the same plan.
async fn rebalance(inner: &Arc<Inner>, ring: &Ring, peers: &[Peer], digest: &str) {
    if !inner.config.auto_commit
        || !ring.transfers().is_empty()
        || !converged(ring, &inner.me, peers, digest)
    {
        return;
    }
    let live: HashSet<&NodeId> = peers.iter().filter(|p| p.live).map(|p| &p.node).collect();
    let first = ring
        .members()
        .iter()
        .find(|(n, m)| m.status == MemberStatus::Valid && (**n == inner.me || live.contains(n)))
        .map(|(n, _)| n);
    if first != Some(&inner.me) || ring.plan().is_empty() {
        return;
    }
    tracing::info!("committing a rebalance of the settled ring");
    if let Err(e) = inner
        .update_ring(|r| {
            r.commit();
            Ok(())
        })
        .await
    {
        tracing::warn!(error = %e, "rebalance commit failed");
    }
}

fn start_handoffs(inner: &Arc<Inner>, ring: &Ring, peers: &[Peer]) {
    if inner.store.get().is_none() {
        return;
    }
    let live: HashSet<&NodeId> = peers.iter().filter(|p| p.live).map(|p| &p.node).collect();
    let mut running = handoff_lock(&inner.running);
    for t in ring.transfers() {
        if t.from != inner.me || running.contains(&t.partition) || !live.contains(&t.to) {
            continue;
        }
        if running.len() >= inner.config.handoff.concurrency.max(1) {
            break;
        }
        running.insert(t.partition);
        let inner = inner.clone();
        tokio::spawn(async move {
            handoff::send(inner.clone(), t.partition, t.to).await;
            handoff_lock(&inner.running).remove(&t.partition);
        });
    }
}

/// Pause between two chunks of a drop: requests queued at the partition's
/// vnode meanwhile run first, and dropping never holds the node's threads
/// for long.
const DROP_PAUSE: Duration = Duration::from_millis(2);

/// Remove partitions this node holds data for but neither owns nor is
/// receiving, once every member last reported the same ring (so no member can
/// still hand ownership back to us from an older ring). The removal runs on
/// its own task, a bounded chunk per vnode call, so neither this loop nor the
/// partition's clients wait for a whole partition to go.
fn drop_foreign(inner: &Arc<Inner>, ring: &Ring, peers: &[Peer], digest: &str) {
    let Some(store) = inner.store.get().cloned() else {
        return;
    };
    if !converged(ring, &inner.me, peers, digest) {
        return;
    }
    // Incoming entries of transfers every member has forgotten are over.
    inner
        .handoff
        .retain_incoming(|vnode| ring.next(vnode) == Some(&inner.me));
    if !handoff_lock(&inner.running).is_empty() {
        // A transfer this node sends may still read any range.
        return;
    }
    if inner.dropping.swap(true, Ordering::SeqCst) {
        return; // the last pass is still going
    }
    let inner = inner.clone();
    let digest = digest.to_string();
    tokio::spawn(async move {
        let pass = DropPass(inner);
        pass.run(&*store, &digest).await;
    });
}

/// One pass over the partitions; lets the next pass start when it ends
/// (panics included).
struct DropPass(Arc<Inner>);

impl Drop for DropPass {
    fn drop(&mut self) {
        self.0.dropping.store(false, Ordering::SeqCst);
    }
}

impl DropPass {
    async fn run(&self, store: &dyn PartitionStore, digest: &str) {
        let inner = &self.0;
        let Some(ring) = inner.ring() else { return };
        for i in 0..ring.ring_size() {
            let p = PartitionId(i);
            if ring.replicates(p, &inner.me) {
                // A range handed away earlier and back again since serves again.
                if let Err(e) = store.replicating(p).await {
                    tracing::warn!(partition = %p, error = %e, "serving a partition again");
                }
                continue;
            }
            if store.has_data(p) && !self.drop_partition(store, p, digest).await {
                return;
            }
        }
    }

    /// Drop `p` chunk by chunk while this node may; false if the pass
    /// should end (the ring or the transfers changed).
    async fn drop_partition(
        &self,
        store: &dyn PartitionStore,
        p: PartitionId,
        digest: &str,
    ) -> bool {
        let inner = &self.0;
        let mut start = true;
        loop {
            match self.may_drop(store, p, digest).await {
                Ok(true) => {}
                Ok(false) => return true,
                Err(why) => {
                    if !start {
                        tracing::info!(partition = %p, why, "dropping a partition paused; a later pass goes on");
                    }
                    if inner.ring().is_some_and(|r| r.replicates(p, &inner.me)) {
                        if let Err(e) = store.replicating(p).await {
                            tracing::warn!(partition = %p, error = %e, "serving a partition again");
                        }
                    }
                    return false;
                }
            }
            match store.drop_some(p, start).await {
                Ok(DropStep::Done) => {
                    tracing::info!(partition = %p, "dropped a partition this node no longer replicates");
                    return true;
                }
                Ok(DropStep::More) => {}
                Ok(DropStep::Stopped) => {
                    tracing::info!(partition = %p, "dropping a partition stopped: it was written or served again");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(partition = %p, error = %e, "dropping a handed-off partition");
                    return true;
                }
            }
            start = false;
            tokio::time::sleep(DROP_PAUSE).await;
        }
    }

    /// Checked before every chunk: Ok(true) to go on with `p`, Ok(false)
    /// to leave `p` alone for now, Err(why) to end the pass.
    async fn may_drop(
        &self,
        store: &dyn PartitionStore,
        p: PartitionId,
        digest: &str,
    ) -> Result<bool, &'static str> {
        let inner = &self.0;
        if inner.shutdown.is_cancelled() {
            return Err("shutting down");
        }
        let Some(ring) = inner.ring() else {
            return Err("no ring");
        };
        if digest_of(&ring) != digest {
            return Err("the ring changed");
        }
        let peers = inner.membership.peers().await;
        if !converged(&ring, &inner.me, &peers, digest) {
            return Err("the members no longer agree on the ring");
        }
        if !handoff_lock(&inner.running).is_empty() {
            return Err("a transfer started");
        }
        let receiving = inner.handoff.receiving(p);
        Ok(!receiving && !store.pinned(p))
    }
}
