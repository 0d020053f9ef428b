//! Sending a transfer's entries: a range streamed in chunks (the whole of
//! it, or only its shared part), and keys recorded as written meanwhile.

use super::{progress, range_id, HandoffHost, Outcome, PartitionStore};
use crate::cluster::msg::{Handoff, HandoffItem, HandoffReply};
use crate::{NodeId, PartitionId};
use bytes::Bytes;
use std::time::Duration;

/// Which entries of a range a stream sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// All of them, recording keys written from the start on.
    Whole,
    /// Only those every owner shares ([`PartitionStore::read_shared_chunk`]),
    /// recording nothing: from the commit on, coordinators send the shared
    /// data's writes to a node about to own a partition too.
    Shared,
}

/// Stream `part` of one range's entries to `to`, resuming from the
/// receiver's cursor.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_range<H: HandoffHost>(
    inner: &H,
    store: &dyn PartitionStore,
    vnode: PartitionId,
    range: PartitionId,
    to: &NodeId,
    base: &str,
    part: Part,
    still_planned: &(dyn Fn() -> bool + Sync),
) -> Result<(), Outcome> {
    // A shared stream has an id of its own: a later whole stream of the
    // range must not resume from its cursor.
    let id = match part {
        Part::Whole => range_id(base, range),
        Part::Shared => format!("{}+shared", range_id(base, range)),
    };
    if part == Part::Whole {
        store.begin(range).await?;
    }
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
    let rate = inner.handoff_config().rate_bytes.max(1);
    let chunk = inner.handoff_config().chunk_bytes;
    let started = inner.now();
    let mut sent_bytes = 0u64;
    loop {
        if !still_planned() {
            return Err(Outcome::Cancelled);
        }
        let (items, next) = match part {
            Part::Whole => store.read_chunk(range, cursor.clone(), chunk).await?,
            Part::Shared => {
                store
                    .read_shared_chunk(range, cursor.clone(), chunk)
                    .await?
            }
        };
        if part == Part::Shared && items.is_empty() && next.is_none() {
            return Ok(()); // nothing (more) of it to send
        }
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
        if let Some(wait) = due.checked_sub(inner.now().saturating_duration_since(started)) {
            inner.sleep(wait).await;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Send keys recorded as written; if that fails, record them again so the
/// retry sends them (they may be behind the receiver's resume cursor).
pub(super) async fn send_dirty<H: HandoffHost>(
    inner: &H,
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

async fn send_items<H: HandoffHost>(
    inner: &H,
    vnode: PartitionId,
    partition: PartitionId,
    to: &NodeId,
    id: &str,
    items: Vec<HandoffItem>,
) -> Result<(), Outcome> {
    let chunk_bytes = inner.handoff_config().chunk_bytes.max(1);
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
