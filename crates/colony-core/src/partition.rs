//! Key hashing and the mapping from hash to partition.
//!
//! The hash is xxh3-64 of the length-prefixed bucket followed by the key, so
//! `("ab","c")` and `("a","bc")` never collide by construction. xxh3 is stable
//! across platforms and versions (it is a specified algorithm), which matters
//! because the hash decides where data lives on disk and in the cluster.

use crate::{CoreError, PartitionId};

/// The 64-bit position of `(bucket, key)` on the ring.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Bucket names are short; a u16 length is enough and keeps this stable.
    let len = u16::try_from(bucket.len()).unwrap_or(u16::MAX);
    h.update(&len.to_be_bytes());
    h.update(bucket);
    h.update(key);
    h.digest()
}

/// Maps hashes to partitions for a ring of `Q = 2^bits` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioner {
    bits: u32,
}

impl Partitioner {
    /// `ring_size` must be a power of two from 1 to 1024.
    pub fn new(ring_size: u32) -> Result<Self, CoreError> {
        if !ring_size.is_power_of_two() || ring_size > 1024 {
            return Err(CoreError::InvalidRingSize(ring_size));
        }
        Ok(Self {
            bits: ring_size.trailing_zeros(),
        })
    }

    pub fn ring_size(&self) -> u16 {
        // At most 1024, checked in `new`.
        1u16 << self.bits
    }

    /// The partition covering `hash`: its top `bits` bits.
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        if self.bits == 0 {
            return PartitionId(0);
        }
        // Shift leaves at most 10 bits, so the cast cannot truncate.
        PartitionId((hash >> (64 - self.bits)) as u16)
    }

    /// The first hash covered by `partition`.
    pub fn first_hash(&self, partition: PartitionId) -> u64 {
        if self.bits == 0 {
            return 0;
        }
        u64::from(partition.0) << (64 - self.bits)
    }

    /// The bits of a hash below its partition bits.
    pub fn span_mask(&self) -> u64 {
        u64::MAX.checked_shr(self.bits).unwrap_or(0)
    }

    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> {
        (0..self.ring_size()).map(PartitionId)
    }

    pub fn locate(&self, bucket: &[u8], key: &[u8]) -> (PartitionId, u64) {
        let hash = key_hash(bucket, key);
        (self.partition_of(hash), hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert!(Partitioner::new(64).is_ok());
        assert!(Partitioner::new(1).is_ok());
        assert_eq!(Partitioner::new(48), Err(CoreError::InvalidRingSize(48)));
        assert!(Partitioner::new(2048).is_err());
    }

    #[test]
    fn bucket_and_key_boundaries_do_not_alias() {
        assert_ne!(key_hash(b"ab", b"c"), key_hash(b"a", b"bc"));
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Data placement depends on this value never changing.
        assert_eq!(key_hash(b"default", b"foo"), key_hash(b"default", b"foo"));
        let p = Partitioner::new(64).unwrap();
        let counts = (0..64_000u32).fold(vec![0u32; 64], |mut c, i| {
            let (pid, _) = p.locate(b"default", format!("key:{i}").as_bytes());
            c[pid.index()] += 1;
            c
        });
        // Well mixed: every partition within 20% of the mean of 1000.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn partition_ranges_are_contiguous_and_ordered(hash in any::<u64>(), bits in 0u32..=10) {
            let p = Partitioner::new(1 << bits).unwrap();
            let part = p.partition_of(hash);
            prop_assert!(p.first_hash(part) <= hash);
            if part.0 + 1 < p.ring_size() {
                prop_assert!(hash < p.first_hash(PartitionId(part.0 + 1)));
            }
        }
    }
}
