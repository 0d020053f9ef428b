//! The cluster secret: a shared passphrase every member holds. Nodes prove
//! they know it (gossip datagrams carry a MAC, RPC connections open with a
//! challenge/response) without ever sending it.

use std::fmt;

/// A 32-byte key derived from the operator's passphrase.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl ClusterSecret {
    /// Derive the key from a passphrase. The same passphrase gives the same
    /// key on every node.
    pub fn from_passphrase(passphrase: &str) -> Self {
        Self(blake3::derive_key(
            "colony cluster secret v1",
            passphrase.as_bytes(),
        ))
    }

    /// A keyed MAC over `parts`, each length-prefixed so that no two
    /// different part lists hash alike.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        *h.finalize().as_bytes()
    }

    /// Check a MAC in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let Ok(tag) = <[u8; 32]>::try_from(tag) else {
            return false;
        };
        blake3::Hash::from_bytes(self.mac(parts)) == blake3::Hash::from_bytes(tag)
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_passphrase_same_mac_and_parts_are_framed() {
        let a = ClusterSecret::from_passphrase("s3cret");
        let b = ClusterSecret::from_passphrase("s3cret");
        let other = ClusterSecret::from_passphrase("other");
        let tag = a.mac(&[b"ab", b"c"]);
        assert!(b.verify(&[b"ab", b"c"], &tag));
        assert!(!b.verify(&[b"a", b"bc"], &tag));
        assert!(!other.verify(&[b"ab", b"c"], &tag));
        assert!(!a.verify(&[b"ab", b"c"], &tag[..31]));
    }
}
