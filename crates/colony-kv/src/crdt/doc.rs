//! [`Doc`]: the replicated state of one key, and its join.
//!
//! A key holds one Redis type at a time, but replicas may concurrently give
//! it different types. A single tagged body cannot merge that associatively
//! (a hash born at t5, a set born at t4 and a hash born at t3 give different
//! results depending on which pair meets first), so the doc keeps one slot
//! per type, each a CRDT with the stamp of the write that gave the key that
//! type (`born`, merged by max). Slots merge independently, which makes the
//! doc a product of lattices; the view shows the present slot with the
//! greatest `born`. A write clears the slots it does not write (removing
//! only what it observed), so a losing type does not linger once anyone
//! writes the key again.

use super::map::FieldMap;
use super::orset::OrSet;
use super::register::{Register, Sibling};
use super::version::{Actor, Dot, VersionVector};
use super::Stamp;
use crate::{Object, Value, ValueKind};
use bytes::Bytes;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Slot<T> {
    /// The stamp of the write that (last) gave the key this type.
    pub born: Stamp,
    pub body: T,
}

/// The replicated state of one key: a state-based CRDT whose join is
/// [`Doc::merge`]. A doc with nothing present but a non-empty context is a
/// tombstone: a deleted key that remembers what its delete observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Doc {
    pub(super) ctx: VersionVector,
    pub(super) str: Slot<Register>,
    pub(super) hash: Slot<FieldMap>,
    pub(super) set: Slot<OrSet>,
    /// Expiry as last-writer-wins metadata: `(stamp of the change, expiry)`.
    pub(super) ttl: Option<(Stamp, Option<u64>)>,
}

impl Doc {
    /// A key never written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything this state has observed.
    pub fn ctx(&self) -> &VersionVector {
        &self.ctx
    }

    /// The type Redis sees, or None if the key is absent.
    pub fn kind(&self) -> Option<ValueKind> {
        let candidates = [
            (self.str.body.is_present(), self.str.born, ValueKind::Str),
            (self.hash.body.is_present(), self.hash.born, ValueKind::Hash),
            (self.set.body.is_present(), self.set.born, ValueKind::Set),
        ];
        candidates
            .into_iter()
            .filter(|(present, _, _)| *present)
            .max_by_key(|(_, born, kind)| (*born, *kind as u8))
            .map(|(_, _, kind)| kind)
    }

    pub fn is_present(&self) -> bool {
        self.kind().is_some()
    }

    /// A deleted key that still remembers what it observed.
    pub fn is_tombstone(&self) -> bool {
        !self.is_present() && !self.ctx.is_empty()
    }

    /// The stamp of the write that gave the key its current type.
    pub fn born(&self) -> Option<Stamp> {
        self.kind().map(|k| match k {
            ValueKind::Str => self.str.born,
            ValueKind::Hash => self.hash.born,
            ValueKind::Set => self.set.born,
        })
    }

    /// Expiry in ms since the epoch, not filtered by time (the caller
    /// decides whether it has passed).
    pub fn expire_at(&self) -> Option<u64> {
        self.ttl.and_then(|(_, at)| at)
    }

    /// The stamp of the last expiry change, if any.
    pub fn ttl_stamp(&self) -> Option<Stamp> {
        self.ttl.map(|(s, _)| s)
    }

    /// The plain Redis view, or None if absent or a tombstone.
    pub fn view(&self) -> Option<Object> {
        let (value, content_type) = match self.kind()? {
            ValueKind::Str => {
                let (v, ct) = self.str.body.view()?;
                (Value::Str(v), ct)
            }
            ValueKind::Hash => (Value::Hash(self.hash.body.view()), None),
            ValueKind::Set => (Value::Set(self.set.body.view()), None),
        };
        Some(Object {
            value,
            expire_at: self.expire_at(),
            content_type,
        })
    }

    /// Join another replica's state into this one. Commutative,
    /// associative and idempotent (see the property tests).
    pub fn merge(&mut self, other: &Doc) {
        let mine = &self.ctx;
        let theirs = &other.ctx;
        self.str.body.merge(mine, &other.str.body, theirs);
        self.hash.body.merge(mine, &other.hash.body, theirs);
        self.set.body.merge(mine, &other.set.body, theirs);
        self.str.born = self.str.born.max(other.str.born);
        self.hash.born = self.hash.born.max(other.hash.born);
        self.set.born = self.set.born.max(other.set.born);
        self.ttl = self.ttl.max(other.ttl);
        self.ctx.merge(theirs);
    }

    /// The greatest stamp in the state, for [`super::Hlc::observe`] when a
    /// remote state arrives.
    pub fn max_stamp(&self) -> Stamp {
        [
            self.str.born,
            self.hash.born,
            self.set.born,
            self.str.body.max_stamp(),
            self.hash.body.max_stamp(),
            self.ttl.map(|(s, _)| s).unwrap_or_default(),
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }

    /// Roughly the stored size, for the value-size limit.
    pub fn payload_size(&self) -> usize {
        self.str.body.size()
            + self.hash.body.size()
            + self.set.body.size()
            + self.ctx.iter().count() * 12
    }

    /// String values for HTTP, oldest first; one element unless concurrent
    /// writes left siblings. A string with a live counter has one value, its
    /// Redis view. Other types have none.
    pub fn siblings(&self) -> Vec<(Bytes, Option<Bytes>)> {
        if self.kind() != Some(ValueKind::Str) {
            return Vec::new();
        }
        let r = &self.str.body;
        if r.has_counter() {
            return r.view().into_iter().collect();
        }
        // Values written with a context all show; of the last-writer-wins
        // ones, only the latest.
        let all = r.siblings();
        let latest_lww = all
            .iter()
            .filter(|(_, s)| !s.kept)
            .max_by_key(|(_, s)| s.stamp)
            .map(|(d, _)| **d);
        all.into_iter()
            .filter(|(d, s)| s.kept || Some(**d) == latest_lww)
            .map(|(_, s)| (s.value.clone(), s.content_type.clone()))
            .collect()
    }

    pub fn sibling_count(&self) -> usize {
        match self.kind() {
            Some(ValueKind::Str) if self.str.body.has_counter() => 1,
            Some(ValueKind::Str) => self.str.body.sibling_count(),
            _ => 0,
        }
    }

    /// The causal context an HTTP client sends back with its next write.
    pub fn context_bytes(&self) -> Bytes {
        self.ctx.encode()
    }

    /// HTTP PUT. With `ctx`, replace only the siblings the client observed
    /// (a stale context leaves siblings); without, replace all (like SET).
    /// Only what this replica holds is removed: the client's context is not
    /// adopted, since a bogus one would hide other actors' future writes.
    /// Clears any expiry, like SET.
    pub fn put_with_context(
        &mut self,
        value: Bytes,
        content_type: Option<Bytes>,
        ctx: Option<&VersionVector>,
        actor: Actor,
        stamp: Stamp,
    ) {
        if self.kind() != Some(ValueKind::Str) {
            self.clear_observed();
            self.str.born = self.str.born.max(stamp);
        } else {
            self.clear_others(ValueKind::Str);
        }
        let dot = self.take_dot(actor);
        let sib = Sibling {
            value: super::owned(&value),
            content_type: content_type.as_ref().map(super::owned),
            stamp,
            kept: ctx.is_some(),
        };
        let observed = ctx.unwrap_or(&self.ctx);
        self.str.body.write(observed, dot, sib);
        if self.expire_at().is_some() {
            self.ttl = Some((stamp, None));
        }
    }

    /// HTTP DELETE. With `ctx`, remove only what the client observed.
    pub fn delete_with_context(&mut self, ctx: Option<&VersionVector>, stamp: Stamp) {
        let Some(observed) = ctx else {
            self.delete(stamp);
            return;
        };
        self.str.body.clear_within(observed);
        self.hash.body.clear_within(observed);
        self.set.body.clear_within(observed);
        if !self.is_present() {
            self.ttl = Some((stamp, None));
        }
    }

    /// Delete the key: remove everything observed (concurrent unobserved
    /// writes survive the merge) and clear the expiry.
    pub fn delete(&mut self, stamp: Stamp) {
        self.clear_observed();
        self.ttl = Some((stamp, None));
    }

    /// A fresh dot for `actor`, already recorded in the context.
    pub(super) fn take_dot(&mut self, actor: Actor) -> Dot {
        let dot = self.ctx.next_dot(actor);
        self.ctx.add(dot);
        dot
    }

    /// Observed-remove of every slot.
    pub(super) fn clear_observed(&mut self) {
        self.str.body.clear_within(&self.ctx);
        self.hash.body.clear_within(&self.ctx);
        self.set.body.clear_within(&self.ctx);
    }

    /// Observed-remove of every slot but `keep`'s (losers of a type race).
    pub(super) fn clear_others(&mut self, keep: ValueKind) {
        if keep != ValueKind::Str {
            self.str.body.clear_within(&self.ctx);
        }
        if keep != ValueKind::Hash {
            self.hash.body.clear_within(&self.ctx);
        }
        if keep != ValueKind::Set {
            self.set.body.clear_within(&self.ctx);
        }
    }

    /// Whether a slot other than `keep`'s holds a value (a loser of a type
    /// race that [`Doc::clear_others`] would remove).
    pub(super) fn others_present(&self, keep: ValueKind) -> bool {
        (keep != ValueKind::Str && self.str.body.is_present())
            || (keep != ValueKind::Hash && self.hash.body.is_present())
            || (keep != ValueKind::Set && self.set.body.is_present())
    }

    /// Give the key type `kind` as of `stamp`.
    pub(super) fn rebirth(&mut self, kind: ValueKind, stamp: Stamp) {
        let born = match kind {
            ValueKind::Str => &mut self.str.born,
            ValueKind::Hash => &mut self.hash.born,
            ValueKind::Set => &mut self.set.born,
        };
        *born = (*born).max(stamp);
    }
}
