//! The vnode's side of active anti-entropy: its partition's hash tree,
//! kept in step with every write it stages, built from the store at start
//! (in budgeted chunks, while serving) and rebuilt on a slow schedule to
//! catch what bypassed it (a disk that flipped bits, a bug); and the
//! requests an exchange makes of a replica.

use super::{KvResponse, KvVnode};
use crate::aae::tree::{self, Tree};
use crate::aae::Budget;
use crate::crdt::Doc;
use crate::{store, KvError, Reply};
use bytes::Bytes;
use colony_core::cluster::HandoffItem;
use std::ops::Bound;
use std::sync::Arc;

/// Entries a build reads per vnode tick, at most (the node-wide budget
/// may allow fewer).
const BUILD_CHUNK: u64 = 2_000;

/// How a test hook damages one stored key (see [`KvVnode::debug_damage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Damage {
    /// Remove it as if this replica had missed its writes (the tree
    /// follows, as it does for any write).
    Lose,
    /// Remove it behind the tree's back, as a disk losing data would: only
    /// a rebuild of the tree notices.
    LoseSilently,
    /// Overwrite it with bytes that do not decode, behind the tree's back.
    Corrupt,
}

/// Anti-entropy settings of a vnode.
#[derive(Clone, Default)]
pub struct AaeSettings {
    /// Rebuild the tree from the store this often (ms; 0: only at start).
    pub rebuild_every_ms: u64,
    /// Node-wide budget of entries read per second by builds.
    pub budget: Option<Arc<Budget>>,
}

/// A vnode's anti-entropy state.
#[derive(Default)]
pub struct AaeState {
    /// The tree exchanges use; None until the first build completes.
    tree: Option<Tree>,
    built_at_ms: Option<u64>,
    /// A build under way: the tree of the entries up to `cursor`.
    build: Option<Build>,
    pub(super) settings: AaeSettings,
    rebuilds: u64,
}

struct Build {
    tree: Tree,
    /// The last storage key read (None: not started).
    cursor: Option<Vec<u8>>,
}

/// What a replica tells of its tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeInfo {
    /// When the tree in use was built (None: still building the first).
    pub built_at_ms: Option<u64>,
    /// A rebuild is under way.
    pub building: bool,
    pub root: u64,
    pub entries: u64,
    pub rebuilds: u64,
}

impl KvVnode {
    /// Stage the write of `skey` (None removes it) in this batch, and keep
    /// the trees in step: the old entry's hash out, the new one's in.
    pub(super) fn stage(&mut self, skey: Vec<u8>, new: Option<Bytes>) {
        self.stage_known(skey, new, None);
    }

    /// [`stage`](Self::stage), given the stored entry's hash if the caller
    /// knows it (`Some(None)`: no entry). Returns the new entry's hash.
    pub(super) fn stage_known(
        &mut self,
        skey: Vec<u8>,
        new: Option<Bytes>,
        old: Option<Option<u64>>,
    ) -> Option<u64> {
        // Whatever was cached for the key is no longer its state.
        self.docs.remove(&skey);
        let old = match old {
            Some(h) => Ok(h),
            None => self.with_stored(&skey, |v| Ok(tree::entry_hash(&skey, v))),
        };
        let old = match old {
            Ok(h) => h,
            Err(e) => {
                // The old entry cannot be read: its hash cannot be taken
                // out. Rebuild rather than trust the tree.
                tracing::warn!(partition = %self.partition, error = %e, "anti-entropy tree out of step; rebuilding");
                self.aae.tree = None;
                self.aae.build = None;
                None
            }
        };
        let new_hash = new.as_ref().map(|v| tree::entry_hash(&skey, v));
        if let Some(t) = &mut self.aae.tree {
            t.update(&skey, old, new_hash);
        }
        if let Some(b) = &mut self.aae.build {
            // Entries past the cursor are read later as they are then.
            if b.cursor.as_deref().is_some_and(|c| skey.as_slice() <= c) {
                b.tree.update(&skey, old, new_hash);
            }
        }
        self.pending.insert(skey, new);
        new_hash
    }

    /// Anti-entropy work of one tick: start a build when due, and read the
    /// next chunk of a build under way.
    pub(super) fn aae_tick(&mut self, now_ms: u64) -> Result<(), KvError> {
        let due = match self.aae.built_at_ms {
            None => self.aae.tree.is_none(),
            Some(at) => {
                self.aae.settings.rebuild_every_ms > 0
                    && now_ms.saturating_sub(at) >= self.aae.settings.rebuild_every_ms
            }
        };
        if self.aae.build.is_none() && due {
            self.aae.build = Some(Build {
                tree: Tree::new(),
                cursor: None,
            });
        }
        if self.aae.build.is_none() {
            return Ok(());
        }
        let chunk = match &self.aae.settings.budget {
            Some(b) => b.take_up_to(BUILD_CHUNK),
            None => BUILD_CHUNK,
        };
        if chunk > 0 {
            self.build_step(chunk as usize, now_ms)?;
        }
        Ok(())
    }

    /// Read up to `max` entries into the build; finish it at the end of
    /// the partition.
    fn build_step(&mut self, max: usize, now_ms: u64) -> Result<(), KvError> {
        // The build reads the store: this batch's writes go there first.
        self.flush_pending(false)?;
        let Some(build) = &mut self.aae.build else {
            return Ok(());
        };
        let prefix = self.partition.to_be_bytes();
        let lower = match &build.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut read = 0;
        let mut done = true;
        for item in self
            .store
            .data()
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
        {
            if read >= max {
                done = false;
                break;
            }
            let (k, v) = item.into_inner()?;
            if !k.starts_with(&prefix) {
                break;
            }
            build.tree.insert(&k, &v);
            build.cursor = Some(k.to_vec());
            read += 1;
        }
        metrics::counter!("colony_aae_tree_entries_read_total").increment(read as u64);
        if done {
            if let Some(b) = self.aae.build.take() {
                if let Some(old) = &self.aae.tree {
                    if old.root() != b.tree.root() {
                        // The tree in use had drifted from the store: a
                        // write that bypassed it, or data the disk lost.
                        metrics::counter!("colony_aae_tree_drift_total").increment(1);
                        tracing::warn!(partition = %self.partition,
                            "anti-entropy rebuild found the tree out of step with the store");
                    }
                }
                self.aae.tree = Some(b.tree);
                self.aae.built_at_ms = Some(now_ms);
                self.aae.rebuilds += 1;
                metrics::counter!("colony_aae_tree_builds_total").increment(1);
            }
        }
        Ok(())
    }

    /// Drop a build that failed; the next tick starts over.
    pub(super) fn aae_abandon_build(&mut self) {
        self.aae.build = None;
    }

    /// Start a rebuild now; with `wait`, finish it before answering.
    pub(super) fn aae_rebuild(&mut self, wait: bool) -> Result<KvResponse, KvError> {
        self.aae.build = Some(Build {
            tree: Tree::new(),
            cursor: None,
        });
        if wait {
            let now = self.clock.now_ms();
            while self.aae.build.is_some() {
                self.build_step(usize::MAX, now)?;
            }
        }
        Ok(KvResponse::Reply(Reply::Ok))
    }

    pub(super) fn aae_info(&self) -> KvResponse {
        let (root, entries) = self
            .aae
            .tree
            .as_ref()
            .map(|t| (t.root(), t.entries()))
            .unwrap_or_default();
        KvResponse::AaeInfo(TreeInfo {
            built_at_ms: self.aae.built_at_ms,
            building: self.aae.build.is_some(),
            root,
            entries,
            rebuilds: self.aae.rebuilds,
        })
    }

    /// The branch hashes (empty while the first build is under way).
    pub(super) fn aae_branches(&self) -> KvResponse {
        KvResponse::Hashes(
            self.aae
                .tree
                .as_ref()
                .map(Tree::branches)
                .unwrap_or_default(),
        )
    }

    pub(super) fn aae_segments(&self, branches: &[u16]) -> KvResponse {
        KvResponse::Hashes(
            self.aae
                .tree
                .as_ref()
                .map(|t| t.segments_of(branches))
                .unwrap_or_default(),
        )
    }

    /// Every entry of the given segments: (storage key, entry hash).
    pub(super) fn aae_keys(&mut self, segments: &[u16]) -> Result<KvResponse, KvError> {
        self.flush_pending(false)?;
        let mut want = vec![false; tree::SEGMENTS];
        for s in segments {
            if let Some(w) = want.get_mut(usize::from(*s)) {
                *w = true;
            }
        }
        let mut out = Vec::new();
        for item in self.store.data().prefix(self.partition.to_be_bytes()) {
            let (k, v) = item.into_inner()?;
            if want[tree::segment_of(&k)] {
                out.push((Bytes::copy_from_slice(&k), tree::entry_hash(&k, &v)));
            }
        }
        Ok(KvResponse::KeyHashes(out))
    }

    /// The stored states of `keys` (None: absent).
    pub(super) fn aae_fetch(&mut self, keys: Vec<Bytes>) -> Result<KvResponse, KvError> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.with_stored(&key, |v| Ok(Bytes::copy_from_slice(v)))?;
            items.push(HandoffItem { key, value });
        }
        Ok(KvResponse::Items { items, next: None })
    }

    /// Repair: merge each state sent (None: the sender has none) into the
    /// key's, and answer the states the sender lacks part of: the merged
    /// state where this replica knew more. A stored state that does not
    /// decode is replaced by the one sent (it is the only readable copy).
    pub(super) fn aae_sync(&mut self, items: Vec<HandoffItem>) -> Result<KvResponse, KvError> {
        let mut back = Vec::new();
        for item in items {
            if item.key.get(..2) != Some(&self.partition.to_be_bytes()[..]) {
                return Err(KvError::Corrupt(format!(
                    "anti-entropy entry for another partition than {}",
                    self.partition
                )));
            }
            let Some((bucket, _, key)) = store::split_data_key(&item.key) else {
                return Err(KvError::Corrupt(
                    "anti-entropy entry with a malformed key".into(),
                ));
            };
            let (bucket, key) = (Bytes::copy_from_slice(bucket), key.to_vec());
            let mine = self.with_stored(&item.key, |v| Ok(Bytes::copy_from_slice(v)))?;
            let readable = match &mine {
                Some(m) => Doc::decode(m).is_ok(),
                None => true,
            };
            match (item.value, mine) {
                (None, None) => {}
                (None, Some(m)) => {
                    if readable {
                        back.push(HandoffItem {
                            key: item.key,
                            value: Some(m),
                        });
                    }
                }
                (Some(theirs), _) if !readable => {
                    // Only their copy can be read: take it as it is.
                    let doc = Doc::decode(&theirs)?;
                    metrics::counter!("colony_aae_corrupt_entries_replaced_total").increment(1);
                    tracing::warn!(partition = %self.partition, "replacing an unreadable stored state with a replica's");
                    let after = Self::presence(&doc);
                    self.account(&bucket, None, after);
                    self.stage(item.key.to_vec(), Some(theirs));
                }
                (Some(theirs), _) => {
                    let doc = Doc::decode(&theirs)?;
                    if let Some(merged) =
                        self.merge_doc(&bucket, &key, item.key.to_vec(), doc, &[])?
                    {
                        back.push(HandoffItem {
                            key: item.key,
                            value: Some(merged),
                        });
                    }
                }
            }
        }
        Ok(KvResponse::Items {
            items: back,
            next: None,
        })
    }

    /// Tombstones older than `before_ms` (by their newest stamp) for which
    /// no hint is kept here, up to `max`: candidates for reaping.
    pub(super) fn aae_tombstones(
        &mut self,
        before_ms: u64,
        max: usize,
    ) -> Result<KvResponse, KvError> {
        self.flush_pending(false)?;
        let hinted: std::collections::HashSet<Vec<u8>> = self
            .store
            .hints()
            .prefix(self.partition.to_be_bytes())
            .filter_map(|h| h.key().ok())
            .filter_map(|h| store::split_hint_key(&h).map(|(_, k)| k.to_vec()))
            .collect();
        let mut items = Vec::new();
        for item in self.store.data().prefix(self.partition.to_be_bytes()) {
            if items.len() >= max {
                break;
            }
            let (k, v) = item.into_inner()?;
            if Doc::peek_kind(&v).ok() != Some(None) || hinted.contains(&*k) {
                continue;
            }
            let Ok(doc) = Doc::decode(&v) else { continue };
            if doc.max_stamp().time >> 16 < before_ms {
                items.push(HandoffItem {
                    key: Bytes::copy_from_slice(&k),
                    value: Some(Bytes::copy_from_slice(&v)),
                });
            }
        }
        Ok(KvResponse::Items { items, next: None })
    }

    /// Which of `items` this replica holds exactly (same key, same bytes).
    pub(super) fn aae_holds(&mut self, items: &[HandoffItem]) -> Result<KvResponse, KvError> {
        let mut held = Vec::new();
        for item in items {
            let same = self
                .with_stored(&item.key, |v| Ok(Some(v) == item.value.as_deref()))?
                .unwrap_or(false);
            if same {
                held.push(item.key.clone());
            }
        }
        Ok(KvResponse::Keys(held))
    }

    /// Remove each of `items` that is still exactly that tombstone and
    /// holds no hint: every replica was found holding it.
    pub(super) fn aae_reap(&mut self, items: Vec<HandoffItem>) -> Result<KvResponse, KvError> {
        let mut reaped = 0u64;
        for item in items {
            let Some(doc) = &item.value else { continue };
            let Some((bucket, hash, key)) = store::split_data_key(&item.key) else {
                continue;
            };
            if self.reap_one(bucket, key, hash, doc)? {
                reaped += 1;
            }
        }
        Ok(KvResponse::Reply(Reply::Int(reaped as i64)))
    }

    /// Test hook: damage one stored key (see [`Damage`]).
    pub(super) fn debug_damage(
        &mut self,
        skey: Vec<u8>,
        how: Damage,
    ) -> Result<KvResponse, KvError> {
        self.flush_pending(false)?;
        let Some(stored) = self.store.data().get(&skey)? else {
            return Ok(KvResponse::Reply(Reply::Int(0)));
        };
        // The key counts follow (they are an index of what is stored).
        if let (Ok(doc), Some((bucket, _, _))) =
            (Doc::decode(&stored), store::split_data_key(&skey))
        {
            let bucket = Bytes::copy_from_slice(bucket);
            self.account(&bucket, Self::presence(&doc), None);
        }
        // Behind the vnode's back: nothing cached may survive it.
        self.docs.clear();
        match how {
            Damage::Lose => self.stage(skey, None),
            Damage::LoseSilently => {
                self.pending.insert(skey, None);
            }
            Damage::Corrupt => {
                self.pending
                    .insert(skey, Some(Bytes::from_static(b"\xffnot a document")));
            }
        }
        self.flush_pending(true)?;
        Ok(KvResponse::Reply(Reply::Int(1)))
    }
}
