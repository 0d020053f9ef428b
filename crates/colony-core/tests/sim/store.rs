//! The simulated node's data as the `PartitionStore` the real handoff
//! drives, behaving as the KV vnode does: `begin` starts recording written
//! keys, `take_dirty` hands them over and forgets them (`redirty` brings
//! back those whose sending failed), a sealed partition refuses writes, a
//! moved one refuses everything, and `import` merges (the higher version
//! wins), so a late or repeated chunk never rolls a key back. Every call
//! answers at once.
//!
//! An entry travels as key `k007` and value `<version> <value>`.

use super::host::{lock, Port, Shared};
use super::node::Node;
use bytes::Bytes;
use colony_core::cluster::{BoxFut, Chunk, DropStep, HandoffItem, PartitionStore};
use colony_core::{NodeId, PartitionId};
use std::ops::Bound;

pub struct SimStore {
    node: Shared<Node>,
    port: Shared<Port>,
    drop_chunk_keys: usize,
}

fn ready<'a, T: Send + 'a>(t: T) -> BoxFut<'a, T> {
    Box::pin(std::future::ready(t))
}

pub fn encode(version: u64, value: &str) -> Bytes {
    Bytes::from(format!("{version} {value}"))
}

/// The entry an item carries; None for a key gone from the sender (as the
/// KV store, nothing to merge).
fn decode(item: &HandoffItem) -> Result<Option<(String, u64, String)>, String> {
    let key = std::str::from_utf8(&item.key).map_err(|e| e.to_string())?;
    let Some(v) = &item.value else {
        return Ok(None);
    };
    let v = std::str::from_utf8(v).map_err(|e| e.to_string())?;
    let (version, value) = v.split_once(' ').ok_or("malformed entry")?;
    let version = version.parse().map_err(|_| "malformed version")?;
    Ok(Some((key.to_string(), version, value.to_string())))
}

impl SimStore {
    pub fn new(node: Shared<Node>, port: Shared<Port>, drop_chunk_keys: usize) -> Self {
        Self {
            node,
            port,
            drop_chunk_keys,
        }
    }

    fn log(&self, who: &NodeId, what: impl FnOnce() -> String) {
        lock(&self.port).log(who, what);
    }
}

impl PartitionStore for SimStore {
    fn begin(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        lock(&self.node).mem.tracking.entry(partition).or_default();
        ready(Ok(()))
    }

    fn read_chunk(
        &self,
        partition: PartitionId,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> BoxFut<'_, Result<Chunk, String>> {
        let node = lock(&self.node);
        let lower = match &after {
            Some(c) => Bound::Excluded(String::from_utf8_lossy(c).into_owned()),
            None => Bound::Unbounded,
        };
        let mut entries = node
            .disk
            .data
            .get(&partition)
            .into_iter()
            .flat_map(|d| d.range::<String, _>((lower.clone(), Bound::Unbounded)))
            .peekable();
        let mut items = Vec::new();
        let mut size = 0;
        while size < max_bytes {
            let Some((k, (version, value))) = entries.next() else {
                break;
            };
            let item = HandoffItem {
                key: Bytes::from(k.clone()),
                value: Some(encode(*version, value)),
            };
            size += item.size();
            items.push(item);
        }
        let next = match entries.peek() {
            Some(_) => items.last().map(|i| i.key.clone()),
            None => None,
        };
        self.log(&node.id, || {
            let keys: Vec<_> = items
                .iter()
                .map(|i| String::from_utf8_lossy(&i.key))
                .collect();
            format!("reads {keys:?} of {partition} (more: {})", next.is_some())
        });
        ready(Ok((items, next)))
    }

    fn take_dirty(
        &self,
        partition: PartitionId,
        seal: bool,
    ) -> BoxFut<'_, Result<Vec<HandoffItem>, String>> {
        let mut node = lock(&self.node);
        let keys = node
            .mem
            .tracking
            .get_mut(&partition)
            .map(std::mem::take)
            .unwrap_or_default();
        let data = node.disk.data.get(&partition);
        let items: Vec<HandoffItem> = keys
            .iter()
            .map(|k| HandoffItem {
                key: Bytes::from(k.clone()),
                value: data.and_then(|d| d.get(k)).map(|(v, val)| encode(*v, val)),
            })
            .collect();
        if seal {
            node.mem.sealed.insert(partition);
        }
        self.log(&node.id, || {
            let s = if seal { ", seals it" } else { "" };
            format!("takes dirty {keys:?} of {partition}{s}")
        });
        ready(Ok(items))
    }

    fn redirty(&self, partition: PartitionId, keys: Vec<Bytes>) -> BoxFut<'_, Result<(), String>> {
        let mut node = lock(&self.node);
        let t = node.mem.tracking.entry(partition).or_default();
        t.extend(keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()));
        ready(Ok(()))
    }

    fn unseal(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        lock(&self.node).mem.sealed.remove(&partition);
        ready(Ok(()))
    }

    fn cancel(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        let mut node = lock(&self.node);
        node.mem.sealed.remove(&partition);
        node.mem.tracking.remove(&partition);
        ready(Ok(()))
    }

    fn moved(&self, partition: PartitionId, to: NodeId) -> BoxFut<'_, Result<(), String>> {
        let mut node = lock(&self.node);
        self.log(&node.id, || format!("has moved {partition} to {to}"));
        node.mem.moved.insert(partition, to);
        node.mem.sealed.remove(&partition);
        node.mem.tracking.remove(&partition);
        node.disk.handed_off += 1;
        ready(Ok(()))
    }

    fn replicating(&self, partition: PartitionId) -> BoxFut<'_, Result<(), String>> {
        lock(&self.node).mem.moved.remove(&partition);
        ready(Ok(()))
    }

    fn drop_some(
        &self,
        partition: PartitionId,
        start: bool,
    ) -> BoxFut<'_, Result<DropStep, String>> {
        let step = lock(&self.node).drop_step(partition, start, self.drop_chunk_keys);
        ready(Ok(step))
    }

    fn import(
        &self,
        partition: PartitionId,
        items: Vec<HandoffItem>,
    ) -> BoxFut<'_, Result<(), String>> {
        let mut node = lock(&self.node);
        let mut merged = Vec::new();
        for item in &items {
            let (key, version, value) = match decode(item) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => return ready(Err(e)),
            };
            let data = node.disk.data.entry(partition).or_default();
            if data.get(&key).is_none_or(|(v, _)| *v < version) {
                merged.push(format!("{key}@{version}"));
                data.insert(key, (version, value));
            }
        }
        self.log(&node.id, || format!("imports {merged:?} into {partition}"));
        ready(Ok(()))
    }

    fn has_data(&self, partition: PartitionId) -> bool {
        lock(&self.node)
            .disk
            .data
            .get(&partition)
            .is_some_and(|d| !d.is_empty())
    }

    fn key_count(&self, partition: PartitionId) -> BoxFut<'_, u64> {
        let n = lock(&self.node)
            .disk
            .data
            .get(&partition)
            .map_or(0, |d| d.len());
        ready(n as u64)
    }
}
