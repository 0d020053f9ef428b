//! A small per-vnode cache of decoded objects, so hot keys are neither
//! looked up in the LSM tree nor decoded again on every request.
//!
//! It is write-through: the vnode updates it on every change it makes, so
//! it never disagrees with the store (including the batch's pending writes).
//! Bounded in entries and in the size of an object it will hold; when full,
//! an arbitrary entry makes room (the map's hashing makes that a random one).

use crate::Object;
use std::collections::HashMap;

pub(crate) struct ObjectCache {
    map: HashMap<Vec<u8>, Object>,
    max_entries: usize,
    max_object_bytes: usize,
}

impl ObjectCache {
    pub(crate) fn new(max_entries: usize, max_object_bytes: usize) -> Self {
        Self {
            map: HashMap::with_capacity(max_entries.min(1024)),
            max_entries,
            max_object_bytes,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Object> {
        self.map.get(key).cloned()
    }

    pub(crate) fn put(&mut self, key: &[u8], object: &Object) {
        if self.max_entries == 0 || object.payload_size() > self.max_object_bytes {
            self.map.remove(key);
            return;
        }
        if let Some(slot) = self.map.get_mut(key) {
            *slot = object.detached();
            return;
        }
        if self.map.len() >= self.max_entries {
            if let Some(victim) = self.map.keys().next().cloned() {
                self.map.remove(&victim);
            }
        }
        self.map.insert(key.to_vec(), object.detached());
    }

    pub(crate) fn remove(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use bytes::Bytes;

    fn obj(n: usize) -> Object {
        Object::new(Value::Str(Bytes::from(vec![b'x'; n])))
    }

    #[test]
    fn holds_at_most_its_bound_and_skips_large_objects() {
        let mut c = ObjectCache::new(4, 100);
        for i in 0..10u8 {
            c.put(&[i], &obj(10));
        }
        assert_eq!(c.map.len(), 4);
        c.put(b"big", &obj(101));
        assert!(c.get(b"big").is_none());
    }

    #[test]
    fn a_large_write_evicts_the_stale_small_copy() {
        let mut c = ObjectCache::new(4, 100);
        c.put(b"k", &obj(10));
        c.put(b"k", &obj(500));
        assert!(c.get(b"k").is_none(), "a stale copy would be served");
    }
}
