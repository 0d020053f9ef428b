//! A hash: one [`Register`] per field, so fields are last-writer-wins
//! independently and HINCRBY counts like INCR. A removed field whose
//! counter was ever used stays as a tombstone holding its reset snapshot;
//! other removed fields vanish.

use super::register::{Register, Sibling};
use super::version::{Dot, VersionVector};
use super::Stamp;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Never holds an empty register, so equal maps have one representation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FieldMap(BTreeMap<Bytes, Register>);

impl FieldMap {
    pub fn is_present(&self) -> bool {
        self.0.values().any(Register::is_present)
    }

    /// Present fields and their Redis values.
    pub fn view(&self) -> BTreeMap<Bytes, Bytes> {
        self.0
            .iter()
            .filter_map(|(f, r)| r.view().map(|(v, _)| (f.clone(), v)))
            .collect()
    }

    /// HSET of one field: overwrite what this replica observed of it.
    pub fn write(&mut self, observed: &VersionVector, field: Bytes, dot: Dot, sib: Sibling) {
        self.0.entry(field).or_default().write(observed, dot, sib);
    }

    /// HDEL of one field: remove what was observed; keep a tombstone only
    /// if counts need one.
    pub fn remove(&mut self, observed: &VersionVector, field: &[u8]) {
        if let Some(r) = self.0.get_mut(field) {
            r.clear_within(observed);
            if r.is_empty() {
                self.0.remove(field);
            }
        }
    }

    pub fn increment(&mut self, field: Bytes, dot: Dot, int: i64, float: f64) {
        self.0.entry(field).or_default().increment(dot, int, float);
    }

    /// One field's Redis value.
    pub fn field_view(&self, field: &[u8]) -> Option<Bytes> {
        self.0.get(field).and_then(|r| r.view()).map(|(v, _)| v)
    }

    pub fn clear_within(&mut self, observed: &VersionVector) {
        for r in self.0.values_mut() {
            r.clear_within(observed);
        }
        self.0.retain(|_, r| !r.is_empty());
    }

    pub fn merge(&mut self, mine: &VersionVector, other: &FieldMap, theirs: &VersionVector) {
        let empty = Register::default();
        let fields: BTreeSet<&Bytes> = self.0.keys().chain(other.0.keys()).collect();
        let mut out = BTreeMap::new();
        for f in fields {
            let mut r = self.0.get(f).cloned().unwrap_or_default();
            r.merge(mine, other.0.get(f).unwrap_or(&empty), theirs);
            if !r.is_empty() {
                out.insert(f.clone(), r);
            }
        }
        self.0 = out;
    }

    pub fn registers(&self) -> impl Iterator<Item = &Register> {
        self.0.values()
    }

    /// Restore the normal form (what `is_normal` checks decoded input for).
    #[cfg(test)]
    pub fn normalize(&mut self) {
        for r in self.0.values_mut() {
            r.normalize();
        }
        self.0.retain(|_, r| !r.is_empty());
    }

    /// Whether [`normalize`](Self::normalize) would leave it unchanged.
    pub fn is_normal(&self) -> bool {
        self.0.values().all(|r| r.is_normal() && !r.is_empty())
    }

    pub fn max_stamp(&self) -> Stamp {
        self.0
            .values()
            .map(Register::max_stamp)
            .max()
            .unwrap_or_default()
    }

    pub fn size(&self) -> usize {
        self.0.iter().map(|(f, r)| f.len() + 4 + r.size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::version::{Actor, Dot};

    #[test]
    fn is_normal_is_what_normalize_leaves_alone() {
        let dot = Dot {
            actor: Actor(1),
            counter: 1,
        };
        let mut m = FieldMap::default();
        m.increment(Bytes::from_static(b"f"), dot, 1, 0.0);
        assert!(m.is_normal());
        m.0.insert(Bytes::from_static(b"g"), Register::default());
        assert!(!m.is_normal(), "a field with an empty register");
        let mut n = m.clone();
        n.normalize();
        assert!(n.is_normal() && n != m);
    }
}
