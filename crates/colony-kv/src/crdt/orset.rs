//! Add-wins observed-remove set: each member carries the dots of the adds
//! that put it there; a remove drops the dots it observed, so an add
//! concurrent with a remove (a dot the remover never saw) survives it.

use super::vecmap::VecSet;
use super::version::{join_dot_set, Dot, VersionVector};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Never holds a member with no dots, so equal sets have one representation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OrSet(BTreeMap<Bytes, VecSet<Dot>>);

impl OrSet {
    pub fn is_present(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn view(&self) -> BTreeSet<Bytes> {
        self.0.keys().cloned().collect()
    }

    /// Whether `member` is in the set: every member kept has a live dot.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.0.contains_key(member)
    }

    /// How many members the set has.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Add under a fresh dot; the member's observed dots are superseded.
    pub fn add(&mut self, member: Bytes, dot: Dot) {
        self.0.insert(member, VecSet::from([dot]));
    }

    /// Remove a member: all its dots are local, hence observed.
    pub fn remove(&mut self, member: &[u8]) {
        self.0.remove(member);
    }

    /// Drop every dot `observed` covers (a delete of the whole key).
    pub fn clear_within(&mut self, observed: &VersionVector) {
        for dots in self.0.values_mut() {
            dots.retain(|d| !observed.contains(*d));
        }
        self.0.retain(|_, dots| !dots.is_empty());
    }

    pub fn merge(&mut self, mine: &VersionVector, other: &OrSet, theirs: &VersionVector) {
        let empty = VecSet::default();
        let members: BTreeSet<&Bytes> = self.0.keys().chain(other.0.keys()).collect();
        let mut out = BTreeMap::new();
        for m in members {
            let a = self.0.get(m).unwrap_or(&empty);
            let b = other.0.get(m).unwrap_or(&empty);
            let dots = join_dot_set(a, mine, b, theirs);
            if !dots.is_empty() {
                out.insert(m.clone(), dots);
            }
        }
        self.0 = out;
    }

    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.0.values().flatten().copied()
    }

    /// Restore the normal form (what `is_normal` checks decoded input for).
    #[cfg(test)]
    pub fn normalize(&mut self) {
        self.0.retain(|_, dots| !dots.is_empty());
    }

    /// Whether [`normalize`](Self::normalize) would leave it unchanged.
    pub fn is_normal(&self) -> bool {
        self.0.values().all(|dots| !dots.is_empty())
    }

    pub fn size(&self) -> usize {
        self.0.iter().map(|(m, d)| m.len() + 2 + d.len() * 12).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::version::Actor;

    #[test]
    fn is_normal_is_what_normalize_leaves_alone() {
        let dot = Dot {
            actor: Actor(1),
            counter: 1,
        };
        let mut s = OrSet::default();
        s.add(Bytes::from_static(b"a"), dot);
        assert!(s.is_normal());
        s.0.insert(Bytes::from_static(b"b"), VecSet::default());
        assert!(!s.is_normal(), "a member without dots");
        let mut n = s.clone();
        n.normalize();
        assert!(n.is_normal() && n != s);
    }
}
