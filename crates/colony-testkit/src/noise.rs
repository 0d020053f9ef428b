//! Deterministic garbage: the same seed gives the same bytes on every machine.

/// `len` pseudo-random bytes from `seed` (SplitMix64), for fuzz-like traffic and
/// corrupted files whose failures can be replayed.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&z.to_le_bytes()[..take]);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::seeded_bytes;

    #[test]
    fn same_seed_gives_same_bytes_and_the_requested_length() {
        assert_eq!(seeded_bytes(7, 13), seeded_bytes(7, 13));
        assert_ne!(seeded_bytes(7, 13), seeded_bytes(8, 13));
        assert_eq!(seeded_bytes(1, 0).len(), 0);
        assert_eq!(seeded_bytes(1, 1001).len(), 1001);
    }
}
