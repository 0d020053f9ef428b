//! Turning a plain write into CRDT mutations.
//!
//! Redis commands keep running on the plain view (`apply::*`): the vnode
//! materializes [`Doc::view`], applies the command, and hands the before and
//! after objects here. Most writes are diffed (a changed string or field is
//! an overwrite, a set's added and removed members are adds and removes).
//! Increments are not: "set to 11" would lose a concurrent increment, so
//! the vnode passes an [`OpHint`] and the increment becomes a counter delta.

use super::register::Sibling;
use super::version::Actor;
use super::{Doc, Stamp};
use crate::{KeyOp, Object, Value, ValueKind};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// A plain write, mirroring apply's `Write` (so this module need not
/// depend on it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    None,
    Put(&'a Object),
    Delete,
}

/// What the command was, where the diff alone would lose intent.
#[derive(Debug, Clone, PartialEq)]
pub enum OpHint {
    /// INCR, DECR, INCRBY, DECRBY.
    Incr(i64),
    /// INCRBYFLOAT.
    IncrFloat(f64),
    /// HINCRBY on a field.
    HIncr(Bytes, i64),
    /// HINCRBYFLOAT on a field.
    HIncrFloat(Bytes, f64),
    /// A replicated write of the whole value (SET and the like): recorded
    /// with a fresh dot even where it equals what the replica holds.
    Overwrite,
    /// A replicated HSET of these fields: each gets a fresh dot.
    Fields(Vec<Bytes>),
    /// A replicated SADD of these members: each gets a fresh dot.
    Members(Vec<Bytes>),
    /// Anything else: diff before and after.
    Other,
}

impl OpHint {
    /// The hint for `op`. `replicated`: other replicas may hold concurrent
    /// writes, so what the command wrote must carry fresh dots even where
    /// it changes nothing here. A later SET of the value a replica already
    /// holds must still beat an earlier concurrent SET elsewhere, and an
    /// SADD of a member already present must still win over a concurrent
    /// SREM: a diff alone would record neither. A sole replica has no
    /// concurrent writer, so it records only changes.
    pub fn of(op: &KeyOp, replicated: bool) -> Self {
        match op {
            KeyOp::IncrBy(n) => OpHint::Incr(*n),
            KeyOp::IncrByFloat(f) => OpHint::IncrFloat(*f),
            KeyOp::HIncrBy(field, n) => OpHint::HIncr(field.clone(), *n),
            KeyOp::HIncrByFloat(field, f) => OpHint::HIncrFloat(field.clone(), *f),
            _ if !replicated => OpHint::Other,
            KeyOp::Set { .. }
            | KeyOp::Put { .. }
            | KeyOp::Replace(_)
            | KeyOp::Append(_)
            | KeyOp::SetRange { .. } => OpHint::Overwrite,
            // HSETNX writes only fields that were absent: the diff has them.
            KeyOp::HSet { pairs, nx: false } => {
                OpHint::Fields(pairs.iter().map(|(f, _)| f.clone()).collect())
            }
            KeyOp::SAdd(members) => OpHint::Members(members.clone()),
            _ => OpHint::Other,
        }
    }
}

impl Doc {
    /// Apply a plain write made by `actor` at `stamp`. `before` must be the
    /// view the write was computed from: [`Doc::view`], or None when the
    /// caller treats the key as absent (expired). In that case whatever the
    /// doc still holds is removed first, so an expired value cannot leak
    /// into the new one. The expiry is diffed against the doc's own, not
    /// `before`'s, for the same reason.
    ///
    /// Returns whether the state may have changed. False means it surely
    /// did not (a SADD of members already there, an HSET of the values the
    /// fields hold): the caller need not store or replicate anything.
    #[must_use]
    pub fn update(
        &mut self,
        before: Option<&Object>,
        write: Change<'_>,
        hint: OpHint,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        match write {
            Change::None => false,
            Change::Delete => {
                self.delete(stamp);
                true
            }
            Change::Put(after) => self.put(before, after, hint, actor, stamp),
        }
    }

    fn put(
        &mut self,
        before: Option<&Object>,
        after: &Object,
        hint: OpHint,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        let kind = after.value.kind();
        // On a type change, or when the caller saw no key, nothing carries
        // over: remove everything observed (expired remains included) and
        // diff from empty.
        let mut changed = false;
        let before = match before {
            Some(b) if b.value.kind() == kind => {
                // Every dot held is in the context, so clearing the other
                // slots changes something exactly when one is present.
                changed |= self.others_present(kind);
                self.clear_others(kind);
                Some(b)
            }
            _ => {
                self.clear_observed();
                self.rebirth(kind, stamp);
                changed = true;
                None
            }
        };
        let ct = after.content_type.clone();
        changed |= match (&after.value, hint) {
            (Value::Str(v), OpHint::Incr(by)) => self.incr_str(v, ct, by, 0.0, actor, stamp),
            (Value::Str(v), OpHint::IncrFloat(by)) => self.incr_str(v, ct, 0, by, actor, stamp),
            (Value::Hash(h), OpHint::HIncr(f, by)) => self.incr_field(h, f, by, 0.0, actor, stamp),
            (Value::Hash(h), OpHint::HIncrFloat(f, by)) => {
                self.incr_field(h, f, 0, by, actor, stamp)
            }
            (Value::Str(v), hint) => {
                let unchanged =
                    before.is_some_and(|b| b.value == after.value && b.content_type == ct);
                let record = !unchanged || matches!(hint, OpHint::Overwrite);
                if record {
                    self.write_str(v.clone(), ct, actor, stamp);
                }
                record
            }
            (Value::Hash(h), hint) => {
                let before = before.map(|b| &b.value);
                let diffed = self.diff_hash(before, h, actor, stamp);
                let named = match hint {
                    OpHint::Overwrite => h.keys().cloned().collect(),
                    OpHint::Fields(fields) => fields,
                    _ => Vec::new(),
                };
                self.rewrite_fields(before, h, named, actor, stamp) | diffed
            }
            (Value::Set(s), hint) => {
                let before = before.map(|b| &b.value);
                let diffed = self.diff_set(before, s, actor);
                let named = match hint {
                    OpHint::Overwrite => s.iter().cloned().collect(),
                    OpHint::Members(members) => members,
                    _ => Vec::new(),
                };
                self.readd_members(before, s, named, actor) | diffed
            }
        };
        if self.expire_at() != after.expire_at {
            self.ttl = Some((stamp, after.expire_at));
            changed = true;
        }
        changed
    }

    /// SET-like overwrite of the string register.
    fn write_str(&mut self, value: Bytes, content_type: Option<Bytes>, actor: Actor, stamp: Stamp) {
        let dot = self.take_dot(actor);
        let sib = Sibling {
            value: super::owned(&value),
            content_type: content_type.as_ref().map(super::owned),
            stamp,
            kept: false,
        };
        self.str.body.write(&self.ctx, dot, sib);
    }

    /// A counter delta on the string. The client was already answered with
    /// `expect`; if float summation in another order reads differently (or
    /// the string carried an HTTP content type, which apply drops), the
    /// reply is recorded as an overwrite, so the replica shows exactly what
    /// the client was told (unobserved increments still add to it).
    fn incr_str(
        &mut self,
        expect: &Bytes,
        ct: Option<Bytes>,
        int: i64,
        float: f64,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        let dot = self.take_dot(actor);
        self.str.body.increment(dot, int, float);
        if self.str.body.view() != Some((expect.clone(), ct.clone())) {
            self.write_str(expect.clone(), ct, actor, stamp);
        }
        true
    }

    /// The integer an INCRBY adds to, when the increment can be made on
    /// this state in place ([`Doc::incr_to`]) with the outcome of the
    /// general path (the plain view through `apply`, then [`Doc::update`]
    /// with [`OpHint::Incr`]): a live string key holding an integer, with
    /// no values of another type beside it. (A content type is dropped, as
    /// there.) None when the general path must run (it also gives the
    /// errors).
    pub fn incr_base(&self, now_ms: u64) -> Option<i64> {
        if self.expire_at().is_some_and(|at| at <= now_ms)
            || self.kind()? != ValueKind::Str
            || self.others_present(ValueKind::Str)
        {
            return None;
        }
        self.str.body.int_view()
    }

    /// Record INCRBY `by` that took the value from
    /// [`incr_base`](Self::incr_base) to `value`, as the general path does:
    /// the increment; then, where the string carried a content type (which
    /// the reply drops), an overwrite with the value the client was told.
    /// (After an integer increment of an integer view the view is `value`,
    /// so nothing else differs from what the client was told.)
    pub fn incr_to(&mut self, value: i64, by: i64, actor: Actor, stamp: Stamp) {
        let dot = self.take_dot(actor);
        self.str.body.increment(dot, by, 0.0);
        debug_assert_eq!(self.str.body.int_view(), Some(value));
        if self.str.body.has_content_type() {
            self.write_str(Bytes::from(value.to_string()), None, actor, stamp);
        }
    }

    /// [`Doc::incr_str`] for a hash field.
    fn incr_field(
        &mut self,
        after: &BTreeMap<Bytes, Bytes>,
        field: Bytes,
        int: i64,
        float: f64,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        let Some(expect) = after.get(&field) else {
            return self.diff_hash(None, after, actor, stamp);
        };
        let dot = self.take_dot(actor);
        self.hash
            .body
            .increment(super::owned(&field), dot, int, float);
        if self.hash.body.field_view(&field).as_ref() != Some(expect) {
            self.write_field(field, expect.clone(), actor, stamp);
        }
        true
    }

    fn write_field(&mut self, field: Bytes, value: Bytes, actor: Actor, stamp: Stamp) {
        let dot = self.take_dot(actor);
        let sib = Sibling {
            value: super::owned(&value),
            content_type: None,
            stamp,
            kept: false,
        };
        self.hash
            .body
            .write(&self.ctx, super::owned(&field), dot, sib);
    }

    fn diff_hash(
        &mut self,
        before: Option<&Value>,
        after: &BTreeMap<Bytes, Bytes>,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        let empty = BTreeMap::new();
        let before = match before {
            Some(Value::Hash(h)) => h,
            _ => &empty,
        };
        let mut changed = false;
        for (f, v) in after {
            if before.get(f) != Some(v) {
                self.write_field(f.clone(), v.clone(), actor, stamp);
                changed = true;
            }
        }
        for f in before.keys().filter(|f| !after.contains_key(*f)) {
            self.hash.body.remove(&self.ctx, f);
            changed = true;
        }
        changed
    }

    /// Fresh dots for the `named` fields the diff left alone because they
    /// already held the value written.
    fn rewrite_fields(
        &mut self,
        before: Option<&Value>,
        after: &BTreeMap<Bytes, Bytes>,
        named: Vec<Bytes>,
        actor: Actor,
        stamp: Stamp,
    ) -> bool {
        let Some(Value::Hash(before)) = before else {
            return false;
        };
        let mut changed = false;
        for f in named {
            match after.get(&f) {
                Some(v) if before.get(&f) == Some(v) => {
                    self.write_field(f, v.clone(), actor, stamp);
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    /// Fresh dots for the `named` members the diff left alone because they
    /// were already there.
    fn readd_members(
        &mut self,
        before: Option<&Value>,
        after: &BTreeSet<Bytes>,
        named: Vec<Bytes>,
        actor: Actor,
    ) -> bool {
        let Some(Value::Set(before)) = before else {
            return false;
        };
        let mut changed = false;
        for m in named {
            if after.contains(&m) && before.contains(&m) {
                let dot = self.take_dot(actor);
                self.set.body.add(super::owned(&m), dot);
                changed = true;
            }
        }
        changed
    }

    fn diff_set(&mut self, before: Option<&Value>, after: &BTreeSet<Bytes>, actor: Actor) -> bool {
        let empty = BTreeSet::new();
        let before = match before {
            Some(Value::Set(s)) => s,
            _ => &empty,
        };
        let mut changed = false;
        for m in after.difference(before) {
            let dot = self.take_dot(actor);
            self.set.body.add(super::owned(m), dot);
            changed = true;
        }
        for m in before.difference(after) {
            self.set.body.remove(m);
            changed = true;
        }
        changed
    }
}
