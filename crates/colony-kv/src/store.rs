//! The storage layout on fjall, shared by every vnode of the node.
//!
//! One `data` keyspace holds every object, keyed
//! `[partition u16][bucket len u16][bucket][key hash u64][key]`, so a
//! partition's keys are one contiguous range (handoff streams it), a bucket's
//! keys within a partition are one prefix (FLUSHDB, listing), and within a
//! bucket keys are in hash order (SCAN's cursor is a hash, stable under
//! inserts). An `expiry` keyspace indexes expiring keys by
//! `[partition][expire_at u64][bucket len][bucket][key]` for active expiry;
//! entries are hints, checked against the object before anything is deleted.
//! A `meta` keyspace holds the format version.
//!
//! A data directory carries a `COLONY` marker file. Start-up refuses a
//! directory that has files but no marker, a marker without a store, or a
//! store that fjall cannot open: never a silent empty store.

use crate::KvError;
use colony_core::vnode::GroupFlush;
use colony_core::PartitionId;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MARKER: &str = "COLONY";
const MARKER_TEXT: &str = "colony data directory, format 1\n";
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"1";

/// The data keyspace's memtable size (fjall's default is 64 MiB): resident
/// memory after loading 1M 100-byte values is 179-203 MiB, not 252. (fjall
/// would free a flushed memtable under its version lock, stalling the node
/// for as long as that takes; [`crate::retire`] frees it elsewhere.) Set
/// when the keyspace is created, so a data directory keeps the size it was
/// made with.
const DATA_MEMTABLE_BYTES: u64 = 8 << 20;

/// When acknowledged writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before every reply (group-committed per vnode batch).
    Always,
    /// fsync every interval; a process crash loses nothing (writes are in the
    /// OS), an OS crash or power loss at most the interval.
    Periodic(Duration),
    /// Leave it to the OS.
    Never,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    pub cache_bytes: u64,
}

pub struct Store {
    db: Database,
    data: Keyspace,
    expiry: Keyspace,
    counts: Keyspace,
    hints: Keyspace,
    fsync: FsyncPolicy,
    stop: Arc<AtomicBool>,
    /// Commits not fsynced one by one are flushed to the OS together
    /// before their replies are seen.
    group: Arc<GroupFlush>,
    /// Memtables freed by the keeper (see [`crate::retire`]).
    memtables_freed: Arc<AtomicU64>,
    /// The keeper's thread, joined on drop (it holds the keyspaces).
    keeper: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Arc<Self>, KvError> {
        let engine_dir = check_data_dir(&config.path)?;
        let db = Database::builder(&engine_dir)
            .cache_size(config.cache_bytes)
            .worker_threads(storage_workers())
            .open()
            .map_err(|e| {
                KvError::Corrupt(format!(
                    "cannot open the store in {}: {e}",
                    engine_dir.display()
                ))
            })?;
        let data = db.keyspace("data", || {
            KeyspaceCreateOptions::default().max_memtable_size(DATA_MEMTABLE_BYTES)
        })?;
        let expiry = db.keyspace("expiry", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let counts = db.keyspace("counts", KeyspaceCreateOptions::default)?;
        let hints = db.keyspace("hints", KeyspaceCreateOptions::default)?;
        let marker = config.path.join(MARKER);
        match meta.get(FORMAT_KEY)? {
            Some(v) if &*v == FORMAT => {}
            Some(v) => {
                return Err(KvError::Corrupt(format!(
                    "unsupported store format {:?}",
                    String::from_utf8_lossy(&v)
                )))
            }
            None if marker.exists() => {
                return Err(KvError::Corrupt(format!(
                    "{} says this is a Colony data directory, but its store has no format record: \
                     the store was lost or replaced",
                    marker.display()
                )))
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT)?;
                db.persist(PersistMode::SyncAll)?;
                std::fs::write(&marker, MARKER_TEXT)
                    .map_err(|e| KvError::Storage(format!("{}: {e}", marker.display())))?;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        if let FsyncPolicy::Periodic(every) = config.fsync {
            spawn_syncer(db.clone(), every, stop.clone());
        }
        let memtables_freed = Arc::new(AtomicU64::new(0));
        let keeper = crate::retire::spawn(
            crate::retire::Keeper::new(
                vec![
                    data.clone(),
                    expiry.clone(),
                    meta.clone(),
                    counts.clone(),
                    hints.clone(),
                ],
                memtables_freed.clone(),
            ),
            stop.clone(),
        );
        let flush_db = db.clone();
        let group = GroupFlush::new(move || {
            flush_db
                .persist(PersistMode::Buffer)
                .map_err(|e| format!("writing the journal failed: {e}"))
        });
        Ok(Arc::new(Self {
            group,
            db,
            data,
            expiry,
            counts,
            hints,
            fsync: config.fsync,
            stop,
            memtables_freed,
            keeper: std::sync::Mutex::new(keeper),
        }))
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    pub fn data(&self) -> &Keyspace {
        &self.data
    }

    pub fn expiry(&self) -> &Keyspace {
        &self.expiry
    }

    /// Hints: keys this node took for an unreachable replica, by
    /// [`hint_key`]; values are empty (the state is in `data`).
    pub fn hints(&self) -> &Keyspace {
        &self.hints
    }

    pub fn counts(&self) -> &Keyspace {
        &self.counts
    }

    /// A new atomic write batch (flushed to the OS on commit).
    /// A batch of writes; committed, it is in the journal's buffer but not
    /// yet handed to the OS: see [`Store::group_flush`].
    pub fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(None)
    }

    /// The node-wide group flush that hands committed batches to the OS.
    pub fn group_flush(&self) -> &Arc<GroupFlush> {
        &self.group
    }

    /// Make every write so far durable.
    pub fn sync(&self) -> Result<(), KvError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Memory held by memtables (active and sealed, not yet flushed).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// Memory held by the block cache.
    pub fn cache_bytes(&self) -> u64 {
        self.db.cache_size()
    }

    /// Memtables fjall retired that were freed off its locks, by the keeper.
    pub fn memtables_freed(&self) -> u64 {
        self.memtables_freed.load(Ordering::Relaxed)
    }

    /// Bytes the store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let keeper = self.keeper.get_mut().map(Option::take).unwrap_or(None);
        if let Some(handle) = keeper {
            if handle.join().is_err() {
                tracing::error!("the memtable keeper panicked");
            }
        }
        if let Err(e) = self.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final sync of the store failed");
        }
    }
}

/// fjall's background threads (flushes and compactions). fjall's default is
/// one per core up to four, but with more than one, its first worker hands
/// every compaction request on to the others and, while they are all busy,
/// takes the same request back at once, spinning a whole core for as long as
/// a compaction runs (seen in perf: `worker_tick` bouncing a `Compact`
/// message through its channel). On two cores that starved the runtime
/// threads for 100 ms and more under a write load. One worker runs flushes
/// and compactions in turn, which at 8 MiB memtables keeps up; with four or
/// more cores the others are free to take the request and the spin is short.
fn storage_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores <= 2 {
        1
    } else {
        cores.min(4)
    }
}

fn spawn_syncer(db: Database, every: Duration, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("colony-fsync".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if let Err(e) = db.persist(PersistMode::SyncData) {
                    tracing::error!(error = %e, "periodic fsync failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the periodic fsync thread");
    }
}

/// Decide whether `dir` is a new, an existing, or a foreign/damaged data
/// directory. Returns the engine's directory inside it.
fn check_data_dir(dir: &Path) -> Result<PathBuf, KvError> {
    let io = |e: std::io::Error| KvError::Storage(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let engine = dir.join("store");
    let marker = dir.join(MARKER);
    let has_entries = std::fs::read_dir(dir).map_err(io)?.next().is_some();
    if marker.exists() {
        let text = std::fs::read_to_string(&marker).map_err(io)?;
        if text != MARKER_TEXT {
            return Err(KvError::Corrupt(format!(
                "{} is damaged or from an unknown version",
                marker.display()
            )));
        }
        if !engine.is_dir() {
            return Err(KvError::Corrupt(format!(
                "{} is a Colony data directory but its store ({}) is missing",
                dir.display(),
                engine.display()
            )));
        }
    } else if has_entries {
        return Err(KvError::Corrupt(format!(
            "{} is not empty and is not a Colony data directory (no {MARKER} file); \
             refusing to start on it",
            dir.display()
        )));
    }
    Ok(engine)
}

/// `[partition][bucket len][bucket]`: the prefix of a bucket in a partition.
/// The hint index key: `[partition][node name length][node name][data key
/// after the partition]`, so a partition's hints share a prefix and so do
/// one node's hints within it.
pub fn hint_key(node: &str, skey: &[u8]) -> Vec<u8> {
    let name = &node.as_bytes()[..node.len().min(255)];
    let mut k = Vec::with_capacity(skey.len() + name.len() + 1);
    k.extend_from_slice(&skey[..2.min(skey.len())]);
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k.extend_from_slice(skey.get(2..).unwrap_or_default());
    k
}

/// (node name, data key) of a hint index key.
pub fn split_hint_key(k: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let len = usize::from(*k.get(2)?);
    let name = k.get(3..3 + len)?;
    let mut skey = k.get(..2)?.to_vec();
    skey.extend_from_slice(k.get(3 + len..)?);
    Some((name, skey))
}

/// The prefix of one node's hints within a partition.
pub fn hint_prefix(partition: PartitionId, node: &str) -> Vec<u8> {
    let name = &node.as_bytes()[..node.len().min(255)];
    let mut k = partition.to_be_bytes().to_vec();
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k
}

pub fn bucket_prefix(partition: PartitionId, bucket: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + bucket.len() + 8);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    k.extend_from_slice(bucket);
    k
}

/// The full storage key of an object.
pub fn data_key(partition: PartitionId, bucket: &[u8], hash: u64, key: &[u8]) -> Vec<u8> {
    let mut k = bucket_prefix(partition, bucket);
    k.extend_from_slice(&hash.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Split a storage key into (bucket, hash, key). None if malformed.
pub fn split_data_key(k: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let blen = usize::from(u16::from_be_bytes([*k.get(2)?, *k.get(3)?]));
    let bucket = k.get(4..4 + blen)?;
    let hash = u64::from_be_bytes(k.get(4 + blen..12 + blen)?.try_into().ok()?);
    let key = k.get(12 + blen..)?;
    Some((bucket, hash, key))
}

/// `[partition][expire_at][bucket len][bucket][key]`.
pub fn expiry_key(partition: PartitionId, at: u64, bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + bucket.len() + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    k.extend_from_slice(bucket);
    k.extend_from_slice(key);
    k
}

/// Split an expiry key into (expire_at, bucket, key).
pub fn split_expiry_key(k: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let at = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
    let blen = usize::from(u16::from_be_bytes([*k.get(10)?, *k.get(11)?]));
    let bucket = k.get(12..12 + blen)?;
    let key = k.get(12 + blen..)?;
    Some((at, bucket, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> StoreConfig {
        StoreConfig {
            path: path.to_path_buf(),
            fsync: FsyncPolicy::Always,
            cache_bytes: 8 << 20,
        }
    }

    #[test]
    fn keys_split_back_into_their_parts() {
        let k = data_key(PartitionId(7), b"default", 42, b"user:1");
        assert_eq!(
            split_data_key(&k),
            Some((&b"default"[..], 42, &b"user:1"[..]))
        );
        let e = expiry_key(PartitionId(7), 99, b"b", b"k");
        assert_eq!(split_expiry_key(&e), Some((99, &b"b"[..], &b"k"[..])));
        assert_eq!(split_data_key(b"\0\0\0\x09ab"), None);
    }

    #[test]
    fn a_store_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(&config(dir.path())).unwrap();
            s.data().insert("k", "v").unwrap();
        }
        let s = Store::open(&config(dir.path())).unwrap();
        assert_eq!(s.data().get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = Store::open(&config(dir.path())).err().unwrap();
        assert!(
            err.to_string().contains("not a Colony data directory"),
            "{err}"
        );
    }

    #[test]
    fn a_lost_store_is_refused_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&config(dir.path())).unwrap());
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        let err = Store::open(&config(dir.path())).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
