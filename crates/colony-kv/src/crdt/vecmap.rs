//! Small ordered maps and sets kept in one sorted vector.
//!
//! A key's state holds several tiny maps: its context (one entry per actor
//! that wrote it), a register's siblings (usually one), its counts, and a
//! set member's dots (usually one). As `BTreeMap`s each costs a node of
//! eleven slots, a few hundred bytes for one entry (a string's siblings
//! alone took over a KiB); as a sorted vector it costs its entries. Lookups are
//! binary searches and inserts shift, which is the right trade for the few
//! entries these maps hold. Large collections (a hash's fields, a set's
//! members) stay in `BTreeMap`s.
//!
//! Both types serialize exactly as `BTreeMap` and `BTreeSet` do (a map or a
//! sequence in key order), so stored states are unchanged. Deserializing
//! accepts what those accept: entries in any order, a repeated key keeping
//! its last value.

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

/// An ordered map in a sorted vector (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The value under `key`, inserting `make()` first if there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (key, make()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.0.iter().map(|(_, v)| v)
    }

    /// Build from entries in any order; a repeated key keeps its last value.
    fn from_unsorted(mut entries: Vec<(K, V)>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable, so equal keys keep their order and the last one is
            // the one kept, as repeated `BTreeMap` inserts would.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
            for e in entries {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            entries = out;
        }
        Self(entries)
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        Self::from_unsorted(entries.into())
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_unsorted(iter.into_iter().collect())
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // The length is the input's claim: cap what it reserves.
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                Ok(VecMap::from_unsorted(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// An ordered set in a sorted vector (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    pub fn contains(&self, item: &T) -> bool {
        self.0.binary_search(item).is_ok()
    }

    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Items in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    fn from_unsorted(mut items: Vec<T>) -> Self {
        if !items.windows(2).all(|w| w[0] < w[1]) {
            items.sort();
            items.dedup();
        }
        Self(items)
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Ord, const N: usize> From<[T; N]> for VecSet<T> {
    fn from(items: [T; N]) -> Self {
        Self::from_unsorted(items.into())
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from_unsorted(iter.into_iter().collect())
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in &self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: Ord + Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
            type Value = VecSet<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(item) = access.next_element()? {
                    items.push(item);
                }
                Ok(VecSet::from_unsorted(items))
            }
        }
        d.deserialize_seq(SeqVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    proptest! {
        /// Same operations, same contents and the same bytes as a BTreeMap.
        #[test]
        fn map_behaves_and_encodes_as_a_btreemap(
            ops in prop::collection::vec((0u8..3, 0u16..40, any::<u32>()), 0..120)
        ) {
            let mut ours = VecMap::new();
            let mut theirs = BTreeMap::new();
            for (op, k, v) in ops {
                match op {
                    0 => prop_assert_eq!(ours.insert(k, v), theirs.insert(k, v)),
                    1 => prop_assert_eq!(ours.remove(&k), theirs.remove(&k)),
                    _ => {
                        *ours.get_or_insert_with(k, || 0) ^= v;
                        *theirs.entry(k).or_insert(0) ^= v;
                    }
                }
                prop_assert_eq!(ours.get(&k), theirs.get(&k));
            }
            ours.retain(|k, _| k % 3 != 0);
            theirs.retain(|k, _| k % 3 != 0);
            let a: Vec<_> = ours.iter().collect();
            let b: Vec<_> = theirs.iter().collect();
            prop_assert_eq!(a, b);
            prop_assert_eq!(ours.len(), theirs.len());
            prop_assert_eq!(
                postcard::to_stdvec(&ours).unwrap(),
                postcard::to_stdvec(&theirs).unwrap()
            );
        }

        /// Decoding entries in any order, with repeats, gives what a
        /// BTreeMap decodes from the same bytes.
        #[test]
        fn map_decodes_as_a_btreemap(entries in prop::collection::vec((0u8..20, any::<u16>()), 0..40)) {
            // A map's encoding: its length, then its entries.
            let mut bytes = postcard::to_stdvec(&(entries.len() as u32)).unwrap();
            for e in &entries {
                bytes.extend(postcard::to_stdvec(e).unwrap());
            }
            let ours: VecMap<u8, u16> = postcard::from_bytes(&bytes).unwrap();
            let theirs: BTreeMap<u8, u16> = postcard::from_bytes(&bytes).unwrap();
            let a: Vec<_> = ours.iter().map(|(k, v)| (*k, *v)).collect();
            let b: Vec<_> = theirs.into_iter().collect();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn set_behaves_and_encodes_as_a_btreeset(items in prop::collection::vec(0u16..50, 0..60)) {
            let mut bytes = postcard::to_stdvec(&(items.len() as u32)).unwrap();
            for i in &items {
                bytes.extend(postcard::to_stdvec(i).unwrap());
            }
            let mut ours: VecSet<u16> = postcard::from_bytes(&bytes).unwrap();
            let mut theirs: BTreeSet<u16> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(ours.iter().collect::<Vec<_>>(), theirs.iter().collect::<Vec<_>>());
            for i in 0..50 {
                prop_assert_eq!(ours.contains(&i), theirs.contains(&i));
            }
            ours.retain(|i| i % 2 == 0);
            theirs.retain(|i| i % 2 == 0);
            prop_assert_eq!(
                postcard::to_stdvec(&ours).unwrap(),
                postcard::to_stdvec(&theirs).unwrap()
            );
            let collected: VecSet<u16> = items.iter().copied().collect();
            let expected: BTreeSet<u16> = items.iter().copied().collect();
            prop_assert_eq!(collected.iter().collect::<Vec<_>>(), expected.iter().collect::<Vec<_>>());
        }
    }
}
