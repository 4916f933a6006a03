//! Persistent references: opaque bytes naming an item, which another process can resolve.
//!
//! Format version 2, little-endian:
//!
//! ```text
//! version u8 = 2 | class u8 (0 key, 1 certificate, 2 identity)
//! token ID: length u32, UTF-8 bytes | object ID: length u32, bytes
//! hint: slot u32, index u32, generation u64, position u32
//! check u32
//! ```
//!
//! Version 1 (the same without the position) is still read: its hint works, one memory access
//! slower. The position is where the item's hint flags were in its slot's chunk: knowing it
//! from the reference alone lets the lookup read the flags and the slot at the same time
//! instead of one after the other (two cache misses in parallel, not in series); it is used
//! only if the slot's current layout puts the item there.
//!
//! The name (class, token ID, object ID) is what the reference means. The hint says where the
//! item was in the index that made it; it is used only if the slot still holds the same
//! generation (unique to one build of one token's positions in one index, starting at a random
//! point) and the position still holds a live item of that class, so a stale hint, or one from
//! another process, costs one comparison and falls back to the lookup by name. The check (two
//! running sums over everything before it) turns a truncated or garbled reference into
//! `CorruptedData` instead of a lookup of some other name.

use token_core::{Error, ItemClass, Result};

use crate::hash::name_hash;

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
/// `pos` of a reference that carries none (version 1).
pub(crate) const NO_POS: u32 = u32::MAX;
const CHECK_SEED: u64 = 0x6B65_7963_6861_696E; // "keychain"

fn class_code(class: ItemClass) -> u8 {
    match class {
        ItemClass::Key => 0,
        ItemClass::Certificate => 1,
        ItemClass::Identity => 2,
        _ => u8::MAX,
    }
}

fn class_of(code: u8) -> Option<ItemClass> {
    Some(match code {
        0 => ItemClass::Key,
        1 => ItemClass::Certificate,
        2 => ItemClass::Identity,
        _ => return None,
    })
}

/// A Fletcher-style check over 8-byte words: two running sums, so any change of one byte,
/// and any reordering of words, changes it. Integrity against damage, not against forgery
/// (a forged reference can only name an item its maker could name anyway).
fn check(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (CHECK_SEED, 0u64);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        a = a.wrapping_add(u64::from_le_bytes(x));
        b = b.wrapping_add(a);
    }
    let rest = words.remainder();
    // The last 0-7 bytes as a little-endian word, composed in registers (a copy through a
    // stack buffer costs a store-forwarding stall on every resolve).
    let tail = rest
        .iter()
        .rev()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
    a = a.wrapping_add(tail ^ (rest.len() as u64) << 59);
    b = b.wrapping_add(a);
    let h = a ^ b.rotate_left(29);
    (h ^ (h >> 32)) as u32
}

/// A decoded reference, borrowing the bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefParts<'a> {
    pub(crate) class: ItemClass,
    /// The token ID's bytes, not yet checked to be UTF-8 (only the lookup by name needs it).
    pub(crate) token: &'a [u8],
    pub(crate) object: &'a [u8],
    pub(crate) slot: u32,
    pub(crate) idx: u32,
    pub(crate) gen: u64,
    /// The position of the item's hint flags in its chunk, or [`NO_POS`].
    pub(crate) pos: u32,
}

fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// Encodes a reference.
pub(crate) fn encode(
    class: ItemClass,
    token: &str,
    object: &[u8],
    slot: u32,
    idx: u32,
    gen: u64,
    pos: u32,
) -> Vec<u8> {
    let code = class_code(class);
    let mut out = Vec::with_capacity(34 + token.len() + object.len());
    out.push(VERSION);
    out.push(code);
    out.extend_from_slice(&len32(token.len()));
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(&len32(object.len()));
    out.extend_from_slice(object);
    out.extend_from_slice(&slot.to_le_bytes());
    out.extend_from_slice(&idx.to_le_bytes());
    out.extend_from_slice(&gen.to_le_bytes());
    out.extend_from_slice(&pos.to_le_bytes());
    let c = check(&out);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

/// Reads a byte slice front to back, never past its end.
struct Reader<'a>(&'a [u8]);

fn truncated() -> Error {
    Error::corrupted("persistent reference: truncated")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| truncated())
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()?;
        self.take(usize::try_from(n).map_err(|_| truncated())?)
    }
}

/// Decodes a reference.
///
/// # Errors
/// `BadParameter` for bytes that are not a reference of a known version; `CorruptedData` for
/// one that is truncated, has bytes after its end, fails its check, or holds a token ID that is
/// not UTF-8.
pub(crate) fn decode(bytes: &[u8]) -> Result<RefParts<'_>> {
    let hint_len = match bytes.first() {
        None => return Err(Error::bad_parameter("persistent reference: empty")),
        Some(&VERSION) => 20,
        Some(&VERSION_1) => 16,
        Some(_) => {
            return Err(Error::bad_parameter(
                "persistent reference: not a keychain-index reference of a known version",
            ))
        }
    };
    let (body, stored) = bytes.split_last_chunk::<4>().ok_or_else(truncated)?;
    if check(body) != u32::from_le_bytes(*stored) {
        return Err(Error::corrupted("persistent reference: check failed"));
    }
    let (head, hint) = body
        .split_at_checked(body.len().checked_sub(hint_len).ok_or_else(truncated)?)
        .ok_or_else(truncated)?;
    let mut r = Reader(head.get(1..).unwrap_or_default());
    let code = r.u8()?;
    let token = r.bytes()?;
    let object = r.bytes()?;
    if !r.0.is_empty() {
        return Err(Error::corrupted(
            "persistent reference: bytes after the end",
        ));
    }
    let class = class_of(code)
        .ok_or_else(|| Error::corrupted("persistent reference: unknown item class"))?;
    let (slot, rest) = hint.split_first_chunk::<4>().ok_or_else(truncated)?;
    let (idx, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let (gen, pos) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let pos = match <[u8; 4]>::try_from(pos) {
        Ok(pos) => u32::from_le_bytes(pos),
        Err(_) if pos.is_empty() => NO_POS,
        Err(_) => return Err(truncated()),
    };
    Ok(RefParts {
        class,
        token,
        object,
        slot: u32::from_le_bytes(*slot),
        idx: u32::from_le_bytes(*idx),
        gen: u64::from_le_bytes(*gen),
        pos,
    })
}

impl<'a> RefParts<'a> {
    /// [`name_hash`] of the reference's name.
    pub(crate) fn name_hash(&self) -> u64 {
        name_hash(self.token, self.object)
    }

    /// The token ID as text.
    ///
    /// # Errors
    /// `CorruptedData` if it is not UTF-8.
    pub(crate) fn token_str(&self) -> Result<&'a str> {
        std::str::from_utf8(self.token)
            .map_err(|_| Error::corrupted("persistent reference: token ID is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_core::ErrorCode;

    /// The check as the first release wrote it (the tail copied through a buffer): references
    /// stored by it must still verify.
    fn check_as_first_written(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (CHECK_SEED, 0u64);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            a = a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
            b = b.wrapping_add(a);
        }
        let rest = words.remainder();
        let mut x = [0u8; 8];
        x[..rest.len()].copy_from_slice(rest);
        a = a.wrapping_add(u64::from_le_bytes(x) ^ (rest.len() as u64) << 59);
        b = b.wrapping_add(a);
        let h = a ^ b.rotate_left(29);
        (h ^ (h >> 32)) as u32
    }

    proptest::proptest! {
        #[test]
        fn the_check_is_what_earlier_builds_computed(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)
        ) {
            proptest::prop_assert_eq!(check(&bytes), check_as_first_written(&bytes));
        }
    }

    #[test]
    fn round_trip() {
        let b = encode(ItemClass::Identity, "piv:00aa", &[0x9a], 3, 7, 99, 130);
        let r = decode(&b).unwrap();
        assert_eq!(r.pos, 130);
        assert_eq!(r.class, ItemClass::Identity);
        assert_eq!(r.token_str().unwrap(), "piv:00aa");
        assert_eq!(r.object, [0x9a]);
        assert_eq!((r.slot, r.idx, r.gen), (3, 7, 99));
        assert_eq!(r.name_hash(), name_hash(b"piv:00aa", &[0x9a]));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_caught() {
        let b = encode(ItemClass::Key, "soft:1234", b"rec-1", 0, 0, 1, 0);
        for n in 0..b.len() {
            let e = decode(&b[..n]).unwrap_err();
            let want = if n == 0 {
                ErrorCode::BadParameter
            } else {
                ErrorCode::CorruptedData
            };
            assert_eq!(e.code(), want, "length {n}");
        }
        for i in 1..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                let e = decode(&c).unwrap_err();
                assert!(
                    matches!(e.code(), ErrorCode::CorruptedData | ErrorCode::BadParameter),
                    "byte {i} bit {bit}: {e}"
                );
            }
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(decode(&long).unwrap_err().code(), ErrorCode::CorruptedData);
        assert_eq!(decode(&[3]).unwrap_err().code(), ErrorCode::BadParameter);
    }

    /// A version-1 reference, as the previous release wrote it: no position.
    pub(crate) fn encode_v1(token: &str, object: &[u8], slot: u32, idx: u32, gen: u64) -> Vec<u8> {
        let mut out = vec![VERSION_1, 0];
        out.extend_from_slice(&len32(token.len()));
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(&len32(object.len()));
        out.extend_from_slice(object);
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&idx.to_le_bytes());
        out.extend_from_slice(&gen.to_le_bytes());
        let c = check(&out);
        out.extend_from_slice(&c.to_le_bytes());
        out
    }

    #[test]
    fn a_version_1_reference_resolves_by_its_hint_and_by_name() {
        use token_core::{Constraint, Item, KeyItem, KeyType, KeyUsage, ObjectId, PublicKey};
        let key = |oid: &str, b: u8| {
            let public = PublicKey {
                key_type: KeyType::EcP256,
                raw: vec![b; 65],
            };
            Item::Key(KeyItem::new(
                ObjectId::new(oid.as_bytes()),
                oid,
                public,
                KeyUsage::SIGN,
                Constraint::Pin,
            ))
        };
        let index = crate::KeychainIndex::new();
        let t = token_core::TokenId::parse("soft:v1").unwrap();
        index.insert_token(t.clone(), vec![key("a", 1), key("b", 2)]);
        let items = index.query(&crate::Query::keys()).to_vec();
        assert_eq!(items.len(), 2);
        for item in items {
            let current = item.persistent_ref();
            let now = decode(&current).unwrap();
            let object = item.object_id().as_bytes();
            let v1 = encode_v1(t.as_str(), object, now.slot, now.idx, now.gen);
            assert_eq!(index.resolve(&v1).unwrap(), item);
            let stale = encode_v1(t.as_str(), object, now.slot, now.idx, now.gen ^ 1);
            assert_eq!(index.resolve(&stale).unwrap(), item);
        }
    }

    #[test]
    fn version_1_references_still_decode() {
        let r_bytes = encode_v1("soft:1234", b"rec-1", 5, 6, 77);
        let r = decode(&r_bytes).unwrap();
        assert_eq!(
            (r.class, r.slot, r.idx, r.gen, r.pos),
            (ItemClass::Key, 5, 6, 77, NO_POS)
        );
        assert_eq!(r.object, b"rec-1");
        assert_eq!(
            decode(&r_bytes[..r_bytes.len() - 1]).unwrap_err().code(),
            ErrorCode::CorruptedData
        );
    }
}
