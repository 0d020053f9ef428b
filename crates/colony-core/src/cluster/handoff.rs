//! Ownership handoff: streaming a partition to its next owner while the
//! current owner keeps serving it.
//!
//! The sender asks its store to record every key written from now on, then
//! streams the partition in chunks (rate-limited; the receiver remembers the
//! last chunk's cursor, so a broken transfer resumes where it stopped). It
//! then re-sends what was written meanwhile, a few rounds while still
//! serving, and a last round after sealing the partition (writes wait and are
//! retried by their coordinators). Only then does it mark the partition moved,
//! hand it over in the ring and tell the receiver, which owns it from then on.
//! A receiver that owns nothing yet also gets the shared part of every
//! other partition (data every owner keeps whole) before it owns one.

mod host;
mod store;
mod stream;

use super::msg::{self, Handoff, HandoffReply, SVC_HANDOFF};
use super::Inner;
use crate::{CoreError, NodeId, PartitionId, Ring};
use bytes::Bytes;
use host::lock;
pub(crate) use host::Incoming;
pub use host::{HandoffBook, HandoffHost, RingEdit};
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use store::{Chunk, DropStep, PartitionStore};
use stream::{send_dirty, stream_range, Part};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// Bytes per second, per transfer.
    pub rate_bytes: u64,
    pub chunk_bytes: usize,
    /// Transfers this node sends at once.
    pub concurrency: usize,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            rate_bytes: 64 << 20,
            chunk_bytes: 256 << 10,
            concurrency: 2,
        }
    }
}

/// A transfer this node is sending, as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferProgress {
    pub partition: PartitionId,
    pub to: NodeId,
    pub phase: &'static str,
    pub keys_done: u64,
    pub keys_total: u64,
    pub bytes_done: u64,
    pub elapsed_ms: u64,
    /// Estimated time left, from the key rate so far.
    pub eta_ms: Option<u64>,
    pub attempts: u32,
    #[serde(skip)]
    pub started: Option<Instant>,
}

impl TransferProgress {
    fn refresh(&mut self) {
        let Some(started) = self.started else { return };
        let elapsed = started.elapsed();
        self.elapsed_ms = elapsed.as_millis() as u64;
        self.eta_ms = (self.keys_done > 0).then(|| {
            let left = self.keys_total.saturating_sub(self.keys_done) as f64;
            let per_key = elapsed.as_secs_f64() / self.keys_done as f64;
            (left * per_key * 1000.0) as u64
        });
    }
}

/// Run one transfer of `partition` to `to`. Errors leave the partition
/// serving here; the scheduler retries, resuming where the receiver stopped.
pub async fn send<H: HandoffHost>(inner: Arc<H>, partition: PartitionId, to: NodeId) {
    let Some(store) = inner.store() else { return };
    let attempt = {
        let mut t = lock(&inner.book().transfers);
        let keys_total = 0;
        let e = t.entry(partition).or_insert_with(|| TransferProgress {
            partition,
            to: to.clone(),
            phase: "starting",
            keys_done: 0,
            keys_total,
            bytes_done: 0,
            elapsed_ms: 0,
            eta_ms: None,
            attempts: 0,
            started: Some(inner.now()),
        });
        e.attempts += 1;
        e.attempts
    };
    metrics::gauge!("colony_handoff_active").increment(1.0);
    let mut touched = Vec::new();
    let result = transfer(&*inner, &*store, partition, &to, attempt, &mut touched).await;
    metrics::gauge!("colony_handoff_active").decrement(1.0);
    match result {
        Ok(()) => {
            lock(&inner.book().transfers).remove(&partition);
            metrics::counter!("colony_handoff_completed_total").increment(1);
            tracing::info!(%partition, %to, "handoff complete");
        }
        Err(Outcome::Cancelled) => {
            lock(&inner.book().transfers).remove(&partition);
            for range in touched {
                if let Err(e) = store.cancel(range).await {
                    tracing::warn!(%partition, %range, error = %e, "cancelling a handoff");
                }
            }
            tracing::info!(%partition, %to, "handoff called off: the ring changed");
        }
        Err(Outcome::Failed(e)) => {
            for range in touched {
                if let Err(e) = store.unseal(range).await {
                    tracing::warn!(%partition, %range, error = %e, "unsealing after a failed handoff");
                }
            }
            if let Some(t) = lock(&inner.book().transfers).get_mut(&partition) {
                t.phase = "retrying";
            }
            metrics::counter!("colony_handoff_failures_total").increment(1);
            tracing::warn!(%partition, %to, attempt, error = %e, "handoff failed; will resume");
        }
    }
}

enum Outcome {
    Cancelled,
    Failed(String),
}

impl From<String> for Outcome {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

fn set_phase(inner: &impl HandoffHost, partition: PartitionId, phase: &'static str) {
    if let Some(t) = lock(&inner.book().transfers).get_mut(&partition) {
        t.phase = phase;
    }
}

fn progress(inner: &impl HandoffHost, partition: PartitionId, keys: u64, bytes: u64) {
    metrics::counter!("colony_handoff_keys_total").increment(keys);
    metrics::counter!("colony_handoff_bytes_total").increment(bytes);
    if let Some(t) = lock(&inner.book().transfers).get_mut(&partition) {
        t.keys_done += keys;
        t.bytes_done += bytes;
        t.refresh();
    }
}

/// Stream each of `ranges` whole to the node it goes to.
async fn stream_whole<H: HandoffHost>(
    inner: &H,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    ranges: &[(PartitionId, NodeId)],
    base: &str,
    still_planned: &(dyn Fn() -> bool + Sync),
) -> Result<(), Outcome> {
    for (range, dest) in ranges {
        stream_range(
            inner,
            store,
            vnode,
            *range,
            dest,
            base,
            Part::Whole,
            still_planned,
        )
        .await?;
    }
    Ok(())
}

async fn transfer<H: HandoffHost>(
    inner: &H,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    to: &NodeId,
    attempt: u32,
    touched: &mut Vec<PartitionId>,
) -> Result<(), Outcome> {
    let still_planned = || {
        inner
            .ring()
            .is_some_and(|r| r.owner(vnode) == Some(inner.me()) && r.next(vnode) == Some(to))
    };
    let Some(ring) = inner.ring() else {
        return Err(Outcome::Cancelled);
    };
    let gen = ring.generation(vnode);
    // Every range whose replicas gain a node through this move, with that
    // node (mostly `to`); this node is a replica of each (see preflist.rs).
    let ranges = ring.gained_by(vnode, to);
    touched.clone_from(&partitions_of(&ranges));
    // The session changes when this process restarts: the keys it recorded
    // as written meanwhile are lost then, so the receiver must not resume
    // an earlier session's transfer past them.
    let base = format!("{}/{}/{}/{:016x}", inner.me(), vnode, gen, inner.session());
    let mut keys_total = 0;
    for (r, _) in &ranges {
        keys_total += store.key_count(*r).await;
    }
    if let Some(t) = lock(&inner.book().transfers).get_mut(&vnode) {
        t.keys_total = keys_total;
    }
    set_phase(inner, vnode, "streaming");
    stream_whole(inner, store, vnode, &ranges, &base, &still_planned).await?;
    // A node that owns nothing yet starts keeping the data every owner
    // shares with its first partition, so that transfer brings every other
    // partition's share too. Of several transfers to it, the one of the
    // lowest partition does this first time round; the others do it if
    // they get to the hand-over first (checked there).
    let share = store.shares_data() && !ring.owns_any(to);
    let first = ring
        .transfers()
        .iter()
        .filter(|t| &t.to == to)
        .map(|t| t.partition)
        .min()
        == Some(vnode);
    let mut shared = false;
    if share && (first || attempt > 1) {
        set_phase(inner, vnode, "streaming shared");
        for i in 0..ring.ring_size() {
            let range = PartitionId(i);
            if ranges.iter().any(|(r, d)| *r == range && d == to) {
                continue; // streamed whole already
            }
            stream_range(
                inner,
                store,
                vnode,
                range,
                to,
                &base,
                Part::Shared,
                &still_planned,
            )
            .await?;
        }
        shared = true;
    }
    set_phase(inner, vnode, "catching up");
    for _ in 0..5 {
        let mut n = 0;
        for (range, dest) in &ranges {
            let dirty = store.take_dirty(*range, false).await?;
            n += dirty.len();
            send_dirty(
                inner,
                store,
                vnode,
                *range,
                dest,
                &range_id(&base, *range),
                dirty,
            )
            .await?;
        }
        if n < 256 {
            break;
        }
    }
    // Other moves may have completed meanwhile and changed which ranges
    // gain a node through this one (the receiver may have handed one away
    // and be about to get it back): send those too, until nothing is
    // missing.
    let mut ranges = ranges;
    loop {
        let Some(now) = inner.ring() else {
            return Err(Outcome::Cancelled);
        };
        let extra: Vec<(PartitionId, NodeId)> = now
            .gained_by(vnode, to)
            .into_iter()
            .filter(|r| !ranges.contains(r))
            .collect();
        if extra.is_empty() {
            break;
        }
        stream_whole(inner, store, vnode, &extra, &base, &still_planned).await?;
        ranges.extend(extra);
        touched.clone_from(&partitions_of(&ranges));
    }
    if !still_planned() {
        return Err(Outcome::Cancelled);
    }
    set_phase(inner, vnode, "sealed");
    for range in partitions_of(&ranges) {
        let last = store.take_dirty(range, true).await?;
        for (_, dest) in ranges.iter().filter(|(r, _)| *r == range) {
            send_dirty(
                inner,
                store,
                vnode,
                range,
                dest,
                &range_id(&base, range),
                last.clone(),
            )
            .await?;
        }
    }
    // Sealed, so no write lands here any more. Hand over in the ring, which
    // refuses if the plan changed while the data was on its way (the new
    // target holds none of it); only then refuse requests here for the
    // ranges this node no longer replicates.
    let before = ring;
    let must_share = store.shares_data() && !shared;
    let ring = inner
        .update_ring_local(Box::new(|r: &mut Ring| {
            if must_share && !r.owns_any(to) {
                return Err(CoreError::BadRing(format!(
                    "{to} owns nothing yet: it must receive the shared data first"
                )));
            }
            // Checked under the ring lock: a move completed since the last
            // check could still add a range; then this attempt fails and
            // the retry sends it.
            if let Some((g, dest)) = r
                .gained_by(vnode, to)
                .into_iter()
                .find(|g| !ranges.contains(g))
            {
                return Err(CoreError::BadRing(format!(
                    "partition {g} must reach {dest} too; sending it first"
                )));
            }
            r.complete(vnode, inner.me(), to).map(|_| ())
        }))
        .await
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    let streamed = partitions_of(&ranges);
    for i in 0..ring.ring_size() {
        let range = PartitionId(i);
        let was = before.replicates(range, inner.me());
        let is = ring.replicates(range, inner.me());
        if was && !is {
            let dest = ranges
                .iter()
                .find(|(r, _)| *r == range)
                .map_or(to, |(_, d)| d);
            store.moved(range, dest.clone()).await?;
        } else if streamed.contains(&range) {
            store.cancel(range).await?;
        }
    }
    // Tell the new owner first: until it knows, requests for the partition
    // bounce between the two of us. Then everyone else.
    set_phase(inner, vnode, "committing");
    let commit = Handoff::Commit {
        partition: vnode,
        id: base,
        ring: Bytes::from(ring.encode()),
    };
    let mut dests: Vec<&NodeId> = vec![to];
    for (_, d) in &ranges {
        if !dests.contains(&d) {
            dests.push(d);
        }
    }
    for dest in dests {
        for attempt in 0..3 {
            match inner.call_handoff(dest, commit.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    // The ring reaches the receiver by gossip anyway.
                    tracing::warn!(%vnode, %dest, attempt, error = %e, "handoff commit not delivered");
                    inner.sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    inner.push(&ring).await;
    Ok(())
}

/// The distinct ranges of a transfer's (range, receiver) pairs, in order.
fn partitions_of(ranges: &[(PartitionId, NodeId)]) -> Vec<PartitionId> {
    let mut out: Vec<PartitionId> = Vec::with_capacity(ranges.len());
    for (r, _) in ranges {
        if !out.contains(r) {
            out.push(*r);
        }
    }
    out
}

fn range_id(base: &str, range: PartitionId) -> String {
    format!("{base}/{range}")
}

/// The receiving side of every transfer to this node. Entries are merged
/// into what this node holds (the store's import is a merge), so a range
/// this node already replicates, a resent chunk or a stale transfer can
/// never roll data back.
pub async fn receive<H: HandoffHost + ?Sized>(inner: &H, m: Handoff) -> HandoffReply {
    let Some(store) = inner.store() else {
        return HandoffReply::Refused("this node has no store yet".into());
    };
    match m {
        Handoff::Begin { partition, id } => {
            let Some(vnode) = vnode_of(&id) else {
                return HandoffReply::Refused(format!("malformed transfer id {id}"));
            };
            if let Err(e) = store.replicating(partition).await {
                return HandoffReply::Refused(e);
            }
            let mut incoming = lock(&inner.book().incoming);
            let e = incoming.entry(id).or_insert(Incoming {
                vnode,
                range: partition,
                cursor: None,
            });
            HandoffReply::Resume(e.cursor.clone())
        }
        Handoff::Chunk {
            partition,
            id,
            items,
            cursor,
        } => {
            let known = lock(&inner.book().incoming)
                .get(&id)
                .is_some_and(|e| e.range == partition);
            if !known {
                return HandoffReply::Refused(format!(
                    "no transfer {id} of partition {partition} in progress here"
                ));
            }
            let n = items.len() as u64;
            if let Err(e) = store.import(partition, items).await {
                return HandoffReply::Refused(e);
            }
            metrics::counter!("colony_handoff_received_keys_total").increment(n);
            if cursor.is_some() {
                if let Some(e) = lock(&inner.book().incoming).get_mut(&id) {
                    e.cursor = cursor;
                }
            }
            HandoffReply::Ok
        }
        Handoff::Commit { id, ring, .. } => {
            let ring = match crate::Ring::decode(&ring) {
                Ok(r) => r,
                Err(e) => return HandoffReply::Refused(e.to_string()),
            };
            if let Err(e) = inner.merge_ring(&ring).await {
                return HandoffReply::Refused(e.to_string());
            }
            let prefix = format!("{id}/");
            lock(&inner.book().incoming).retain(|k, _| !k.starts_with(&prefix));
            HandoffReply::Ok
        }
    }
}

/// The vnode a transfer id names: ids are `node/vnode/gen/session/range`.
fn vnode_of(id: &str) -> Option<PartitionId> {
    let mut parts = id.rsplit('/');
    let _range = parts.next()?;
    let _session = parts.next()?;
    let _gen = parts.next()?;
    parts.next()?.parse::<u16>().ok().map(PartitionId)
}

/// The cluster's node as a handoff host: tokio's clock, the RPC layer and
/// the ring on disk.
impl HandoffHost for Inner {
    fn me(&self) -> &NodeId {
        &self.me
    }

    fn session(&self) -> u64 {
        self.session
    }

    fn handoff_config(&self) -> &HandoffConfig {
        &self.config.handoff
    }

    fn store(&self) -> Option<Arc<dyn PartitionStore>> {
        self.store.get().cloned()
    }

    fn book(&self) -> &HandoffBook {
        &self.handoff
    }

    fn ring(&self) -> Option<Arc<Ring>> {
        Inner::ring(self)
    }

    fn update_ring_local<'a>(
        &'a self,
        edit: RingEdit<'a>,
    ) -> BoxFut<'a, Result<Arc<Ring>, CoreError>> {
        Box::pin(Inner::update_ring_local(self, edit))
    }

    fn merge_ring<'a>(&'a self, theirs: &'a Ring) -> BoxFut<'a, Result<Arc<Ring>, CoreError>> {
        Box::pin(Inner::merge_ring(self, theirs))
    }

    fn call_handoff<'a>(
        &'a self,
        to: &'a NodeId,
        m: Handoff,
    ) -> BoxFut<'a, Result<HandoffReply, String>> {
        Box::pin(async move {
            let body = self
                .call(to, SVC_HANDOFF, msg::encode(&m))
                .await
                .map_err(|e| format!("{to}: {e}"))?;
            msg::decode(&body)
        })
    }

    fn push<'a>(&'a self, ring: &'a Arc<Ring>) -> BoxFut<'a, ()> {
        Box::pin(Inner::push(self, ring))
    }

    fn sleep(&self, d: Duration) -> BoxFut<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
