//! A small, fast, non-cryptographic hash for the index's own tables.
//!
//! Word-at-a-time multiply-rotate (the FxHash step) with murmur3's 64-bit finaliser, so every
//! output bit depends on every input bit: the tries take their branches from the top bits.
//! Byte strings are written with their length first, so `("ab", "c")` and `("a", "bc")` differ.

/// 2^64 / golden ratio.
const K: u64 = 0x9E37_79B9_7F4A_7C15;
/// An odd multiplier with good avalanche (splitmix64's first).
const M: u64 = 0xBF58_476D_1CE4_E5B9;

/// A streaming hasher over bytes and words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hasher64(u64);

impl Hasher64 {
    /// A hasher; equal seeds give equal hashes, in this process and in any other.
    pub(crate) const fn new(seed: u64) -> Self {
        Self(seed ^ K)
    }

    #[inline]
    pub(crate) fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(23) ^ w).wrapping_mul(M);
    }

    /// Writes a length-prefixed byte string.
    #[inline]
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w));
        }
    }

    #[inline]
    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// murmur3's 64-bit finaliser.
#[inline]
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The seed of [`name_hash`]. Fixed: a persistent reference made by one process is checked
/// against it by another.
const NAME_SEED: u64 = 0x746F_6B65_6E6B_6974; // "tokenkit"

/// The hash of an item's name (token ID, object ID), stored with every item and recomputed
/// from a persistent reference to check its position hint.
#[inline]
pub(crate) fn name_hash(token: &[u8], object: &[u8]) -> u64 {
    let mut h = Hasher64::new(NAME_SEED);
    h.bytes(token);
    h.bytes(object);
    h.finish()
}

/// The hash of a token ID alone, for the token table.
#[inline]
pub(crate) fn token_hash(token: &str) -> u64 {
    let mut h = Hasher64::new(NAME_SEED ^ 1);
    h.bytes(token.as_bytes());
    h.finish()
}

/// A per-index random seed for attribute hashes (labels, names, key IDs come from tokens, so
/// their hashes should not be predictable).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(K);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_separates_parts() {
        assert_ne!(name_hash(b"a:b", b"c"), name_hash(b"a:", b"bc"));
        assert_ne!(name_hash(b"a:b", b""), name_hash(b"a:b", b"\0"));
        assert_eq!(name_hash(b"piv:1", b"\x9a"), name_hash(b"piv:1", b"\x9a"));
    }

    #[test]
    fn every_input_byte_matters() {
        let base = [0u8; 19];
        let h0 = name_hash(b"x:y", &base);
        for i in 0..base.len() {
            let mut b = base;
            b[i] = 1;
            assert_ne!(name_hash(b"x:y", &b), h0, "byte {i}");
        }
    }
}
