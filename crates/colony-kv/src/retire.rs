//! Frees the memtables fjall retires on a thread of ours, outside its locks.
//!
//! When fjall seals a memtable, flushes it and later forgets the versions
//! that still list it, the last reference to the memtable goes away inside
//! `SuperVersions::maintenance`, while the keyspace's version lock is held.
//! Freeing a skiplist is one deallocation per entry (8 MiB of small values:
//! tens of thousands), and every read and every commit of the node waits on
//! that lock meanwhile: perf showed both runtime threads parked for 20-40 ms
//! at every retirement under a steady write load, and at 20k requests/s the
//! queue that built up took a hundred milliseconds more to drain.
//!
//! The keeper holds one more reference to every memtable it has seen
//! active. fjall's last drop then only decrements a count, and the keeper
//! frees the memtable once its own reference is the only one left: nothing
//! inside fjall can reach it by then, so no lock is held while it goes. A
//! memtable is held no longer than it would have been plus one poll, so
//! memory use does not change. A memtable that lives less than one poll
//! interval is missed and freed by fjall as before (its size bounds how long
//! that takes).

use fjall::{AbstractTree, Keyspace};
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the keeper looks at the active memtables and frees what
/// fjall has let go of.
const POLL: Duration = Duration::from_millis(10);

/// A memtable, held without naming lsm-tree's type.
type Held = Arc<dyn Any + Send + Sync>;

/// What the keeper holds, and the memtable each keyspace writes into.
pub(crate) struct Keeper {
    watched: Vec<(Keyspace, Option<Held>)>,
    retired: Vec<Held>,
    freed: Arc<AtomicU64>,
}

impl Keeper {
    pub(crate) fn new(keyspaces: Vec<Keyspace>, freed: Arc<AtomicU64>) -> Self {
        Self {
            watched: keyspaces.into_iter().map(|k| (k, None)).collect(),
            retired: Vec::new(),
            freed,
        }
    }

    /// Take a reference to any memtable that became active since the last
    /// call, and free every held memtable that fjall no longer references.
    pub(crate) fn tick(&mut self) {
        for (keyspace, current) in &mut self.watched {
            let active: Held = keyspace.tree.active_memtable();
            let same = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &active));
            if !same {
                if let Some(old) = current.replace(active) {
                    self.retired.push(old);
                }
            }
        }
        let before = self.retired.len();
        // A count of one is ours alone: fjall has dropped every version
        // listing the memtable and cannot hand it out again, so it is freed
        // here, on this thread, with no lock of fjall's held.
        self.retired.retain(|m| Arc::strong_count(m) > 1);
        let freed = before - self.retired.len();
        if freed > 0 {
            self.freed.fetch_add(freed as u64, Ordering::Relaxed);
        }
    }

    /// Memtables held after fjall retired them, not yet released by it.
    #[cfg(test)]
    pub(crate) fn retired(&self) -> usize {
        self.retired.len()
    }
}

/// Run a [`Keeper`] on a thread of its own until `stop` is set. Join the
/// handle before the store is reopened: the keeper holds its keyspaces.
pub(crate) fn spawn(mut keeper: Keeper, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name("colony-memtables".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                keeper.tick();
                std::thread::sleep(POLL);
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "could not start the memtable keeper; fjall frees memtables under its lock");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::{Database, KeyspaceCreateOptions};

    #[test]
    fn a_flushed_memtable_is_freed_by_the_keeper_not_by_fjall() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("data", KeyspaceCreateOptions::default).unwrap();
        let freed = Arc::new(AtomicU64::new(0));
        let mut keeper = Keeper::new(vec![ks.clone()], freed.clone());

        ks.insert("a", "1").unwrap();
        keeper.tick();
        // Sealed, flushed to a table and forgotten by fjall: the keeper
        // still holds the first memtable.
        ks.rotate_memtable_and_wait().unwrap();
        ks.insert("b", "2").unwrap();
        keeper.tick();
        assert_eq!(keeper.retired(), 1, "the sealed memtable is held");
        // fjall forgets old versions when it next rotates a memtable.
        ks.rotate_memtable_and_wait().unwrap();
        ks.insert("c", "3").unwrap();
        for _ in 0..200 {
            keeper.tick();
            if freed.load(Ordering::Relaxed) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            freed.load(Ordering::Relaxed) >= 1,
            "the keeper freed no memtable: fjall still references them all, or it freed them itself"
        );
        // Nothing was lost on the way.
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(ks.get(k).unwrap().as_deref(), Some(v.as_bytes()));
        }
    }
}
