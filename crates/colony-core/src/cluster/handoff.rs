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

use super::msg::{self, Handoff, HandoffItem, HandoffReply, SVC_HANDOFF};
use super::Inner;
use crate::{NodeId, PartitionId};
use bytes::Bytes;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
pub(super) async fn send(inner: Arc<Inner>, partition: PartitionId, to: NodeId) {
    let store = match inner.store.get() {
        Some(s) => s.clone(),
        None => return,
    };
    let attempt = {
        let mut t = lock(&inner.transfers);
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
            started: Some(Instant::now()),
        });
        e.attempts += 1;
        e.attempts
    };
    metrics::gauge!("colony_handoff_active").increment(1.0);
    let mut touched = Vec::new();
    let result = transfer(&inner, &*store, partition, &to, &mut touched).await;
    metrics::gauge!("colony_handoff_active").decrement(1.0);
    match result {
        Ok(()) => {
            lock(&inner.transfers).remove(&partition);
            metrics::counter!("colony_handoff_completed_total").increment(1);
            tracing::info!(%partition, %to, "handoff complete");
        }
        Err(Outcome::Cancelled) => {
            lock(&inner.transfers).remove(&partition);
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
            if let Some(t) = lock(&inner.transfers).get_mut(&partition) {
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_phase(inner: &Inner, partition: PartitionId, phase: &'static str) {
    if let Some(t) = lock(&inner.transfers).get_mut(&partition) {
        t.phase = phase;
    }
}

fn progress(inner: &Inner, partition: PartitionId, keys: u64, bytes: u64) {
    metrics::counter!("colony_handoff_keys_total").increment(keys);
    metrics::counter!("colony_handoff_bytes_total").increment(bytes);
    if let Some(t) = lock(&inner.transfers).get_mut(&partition) {
        t.keys_done += keys;
        t.bytes_done += bytes;
        t.refresh();
    }
}

async fn transfer(
    inner: &Arc<Inner>,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    to: &NodeId,
    touched: &mut Vec<PartitionId>,
) -> Result<(), Outcome> {
    let still_planned = || {
        inner
            .ring()
            .is_some_and(|r| r.owner(vnode) == Some(&inner.me) && r.next(vnode) == Some(to))
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
    let base = format!("{}/{}/{}/{:016x}", inner.me, vnode, gen, inner.session);
    let mut keys_total = 0;
    for (r, _) in &ranges {
        keys_total += store.key_count(*r).await;
    }
    if let Some(t) = lock(&inner.transfers).get_mut(&vnode) {
        t.keys_total = keys_total;
    }
    set_phase(inner, vnode, "streaming");
    for (range, dest) in &ranges {
        stream_range(inner, store, vnode, *range, dest, &base, &still_planned).await?;
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
        for (range, dest) in &extra {
            stream_range(inner, store, vnode, *range, dest, &base, &still_planned).await?;
        }
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
    let ring = inner
        .update_ring_local(|r| {
            // Checked under the ring lock: a move completed since the last
            // check could still add a range; then this attempt fails and
            // the retry sends it.
            if let Some((g, dest)) = r
                .gained_by(vnode, to)
                .into_iter()
                .find(|g| !ranges.contains(g))
            {
                return Err(crate::CoreError::BadRing(format!(
                    "partition {g} must reach {dest} too; sending it first"
                )));
            }
            r.complete(vnode, &inner.me, to).map(|_| ())
        })
        .await
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    let streamed = partitions_of(&ranges);
    for i in 0..ring.ring_size() {
        let range = PartitionId(i);
        let was = before.replicates(range, &inner.me);
        let is = ring.replicates(range, &inner.me);
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Stream one range's entries to `to`, resuming from the receiver's cursor.
async fn stream_range(
    inner: &Arc<Inner>,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    range: PartitionId,
    to: &NodeId,
    base: &str,
    still_planned: &(dyn Fn() -> bool + Sync),
) -> Result<(), Outcome> {
    let id = range_id(base, range);
    store.begin(range).await?;
    let HandoffReply::Resume(mut cursor) = inner
        .call_handoff(
            to,
            Handoff::Begin {
                partition: range,
                id: id.clone(),
            },
        )
        .await?
    else {
        return Err(Outcome::Failed(format!("{to} refused the handoff")));
    };
    if cursor.is_some() {
        tracing::info!(%vnode, %range, %to, "resuming a handoff");
    }
    let rate = inner.config.handoff.rate_bytes.max(1);
    let started = Instant::now();
    let mut sent_bytes = 0u64;
    loop {
        if !still_planned() {
            return Err(Outcome::Cancelled);
        }
        let (items, next) = store
            .read_chunk(range, cursor.clone(), inner.config.handoff.chunk_bytes)
            .await?;
        let bytes: u64 = items.iter().map(|i| i.size() as u64).sum();
        let keys = items.len() as u64;
        expect_ok(
            inner
                .call_handoff(
                    to,
                    Handoff::Chunk {
                        partition: range,
                        id: id.clone(),
                        items,
                        cursor: next.clone(),
                    },
                )
                .await?,
        )?;
        progress(inner, vnode, keys, bytes);
        sent_bytes += bytes;
        // Rate limit: never run ahead of `rate` bytes per second.
        let due = Duration::from_secs_f64(sent_bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Send keys recorded as written; if that fails, record them again so the
/// retry sends them (they may be behind the receiver's resume cursor).
async fn send_dirty(
    inner: &Arc<Inner>,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    range: PartitionId,
    to: &NodeId,
    id: &str,
    items: Vec<HandoffItem>,
) -> Result<(), Outcome> {
    let keys: Vec<Bytes> = items.iter().map(|i| i.key.clone()).collect();
    let sent = send_items(inner, vnode, range, to, id, items).await;
    if sent.is_err() {
        store.redirty(range, keys).await?;
    }
    sent
}

async fn send_items(
    inner: &Arc<Inner>,
    vnode: PartitionId,
    partition: PartitionId,
    to: &NodeId,
    id: &str,
    items: Vec<HandoffItem>,
) -> Result<(), Outcome> {
    let chunk_bytes = inner.config.handoff.chunk_bytes.max(1);
    let mut batch = Vec::new();
    let mut size = 0;
    let mut iter = items.into_iter().peekable();
    while let Some(item) = iter.next() {
        size += item.size();
        batch.push(item);
        if size >= chunk_bytes || iter.peek().is_none() {
            let keys = batch.len() as u64;
            let bytes = size as u64;
            expect_ok(
                inner
                    .call_handoff(
                        to,
                        Handoff::Chunk {
                            partition,
                            id: id.to_string(),
                            items: std::mem::take(&mut batch),
                            cursor: None,
                        },
                    )
                    .await?,
            )?;
            progress(inner, vnode, keys, bytes);
            size = 0;
        }
    }
    Ok(())
}

fn expect_ok(reply: HandoffReply) -> Result<(), Outcome> {
    match reply {
        HandoffReply::Ok => Ok(()),
        HandoffReply::Refused(e) => Err(Outcome::Failed(e)),
        HandoffReply::Resume(_) => Err(Outcome::Failed("unexpected handoff reply".into())),
    }
}

/// The receiving side of every transfer to this node. Entries are merged
/// into what this node holds (the store's import is a merge), so a range
/// this node already replicates, a resent chunk or a stale transfer can
/// never roll data back.
pub(super) async fn receive(inner: &Arc<Inner>, m: Handoff) -> HandoffReply {
    let Some(store) = inner.store.get().cloned() else {
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
            let mut incoming = lock(&inner.incoming);
            let e = incoming.entry(id).or_insert(super::Incoming {
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
            let known = lock(&inner.incoming)
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
                if let Some(e) = lock(&inner.incoming).get_mut(&id) {
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
            lock(&inner.incoming).retain(|k, _| !k.starts_with(&prefix));
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

impl Inner {
    async fn call_handoff(&self, to: &NodeId, m: Handoff) -> Result<HandoffReply, String> {
        let body = self
            .call(to, SVC_HANDOFF, msg::encode(&m))
            .await
            .map_err(|e| format!("{to}: {e}"))?;
        msg::decode(&body)
    }
}
