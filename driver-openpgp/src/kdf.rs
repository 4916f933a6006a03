//! The KDF-DO (F9, OpenPGP card 3.4 §4.3.2): when it names KDF_ITERSALTED_S2K, every PIN goes
//! to the card as the iterated and salted S2K hash of the PIN (RFC 4880 §3.7.1.3), not as
//! typed.

use sha2::Digest;
use token_core::{Error, Result, Tag, Tlv};
use zeroize::Zeroizing;

/// KDF algorithm byte (81) of KDF_ITERSALTED_S2K.
pub(crate) const KDF_ITERSALTED_S2K: u8 = 0x03;
/// Hash algorithm bytes (82): SHA-256 and SHA-512 (RFC 4880 §9.4).
pub(crate) const HASH_SHA256: u8 = 0x08;
pub(crate) const HASH_SHA512: u8 = 0x0A;
/// The most bytes the driver hashes for one PIN (a card asking more is refused, not obeyed).
const MAX_COUNT: u32 = 0x1000_0000;

/// Which PIN is derived: each has its salt (84, 85, 86; the resetting code and PW3 fall back
/// to PW1's salt when the card has one salt only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinRef {
    /// PW1 (VERIFY 81/82, CHANGE REFERENCE DATA 81, the new PIN of RESET RETRY COUNTER).
    Pw1,
    /// The resetting code.
    Rc,
    /// PW3.
    Pw3,
}

/// A KDF-DO that is on.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Kdf {
    hash: u8,
    count: u32,
    salts: [Option<Vec<u8>>; 3],
}

impl core::fmt::Debug for Kdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kdf")
            .field("hash", &self.hash)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Kdf {
    /// Reads the KDF-DO (with or without the outer F9): `None` when it is absent, empty or
    /// says 00 (no KDF).
    ///
    /// # Errors
    /// `CorruptedData` for a KDF-DO that names another algorithm or hash, or lacks the
    /// iteration count or PW1's salt.
    pub(crate) fn parse(do_f9: &[u8]) -> Result<Option<Kdf>> {
        let inner = match Tlv::parse_exact(do_f9) {
            Ok(t) if t.tag == Tag::new(0xF9) => t.value,
            _ => do_f9,
        };
        if inner.is_empty() {
            return Ok(None);
        }
        let find = |t: u32| -> Result<Option<&[u8]>> {
            Ok(Tlv::find(inner, Tag::new(t))?.map(|t| t.value))
        };
        match find(0x81)? {
            None | Some([0x00]) => return Ok(None),
            Some([KDF_ITERSALTED_S2K]) => {}
            Some(_) => return Err(Error::corrupted("KDF-DO with an unknown KDF algorithm")),
        }
        let hash = match find(0x82)? {
            Some(&[h @ (HASH_SHA256 | HASH_SHA512)]) => h,
            _ => return Err(Error::corrupted("KDF-DO with an unknown hash algorithm")),
        };
        let count = match find(0x83)? {
            Some(c) if (1..=4).contains(&c.len()) => {
                c.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
            }
            _ => return Err(Error::corrupted("KDF-DO without an iteration count")),
        };
        if count > MAX_COUNT {
            return Err(Error::corrupted("KDF-DO iteration count too large"));
        }
        let salt = |t: u32| -> Result<Option<Vec<u8>>> {
            Ok(find(t)?.filter(|s| !s.is_empty()).map(<[u8]>::to_vec))
        };
        let salts = [salt(0x84)?, salt(0x85)?, salt(0x86)?];
        if salts[0].is_none() {
            return Err(Error::corrupted("KDF-DO without a salt for PW1"));
        }
        Ok(Some(Kdf { hash, count, salts }))
    }

    /// The value the card takes for `pin`: the hash of salt || PIN repeated until `count`
    /// bytes (at least once) went in.
    pub(crate) fn derive(&self, which: PinRef, pin: &[u8]) -> Zeroizing<Vec<u8>> {
        let own = match which {
            PinRef::Pw1 => &self.salts[0],
            PinRef::Rc => &self.salts[1],
            PinRef::Pw3 => &self.salts[2],
        };
        let salt = own.as_ref().or(self.salts[0].as_ref());
        let mut unit = Zeroizing::new(salt.cloned().unwrap_or_default());
        unit.extend_from_slice(pin);
        match self.hash {
            HASH_SHA512 => s2k::<sha2::Sha512>(&unit, self.count),
            _ => s2k::<sha2::Sha256>(&unit, self.count),
        }
    }
}

/// RFC 4880 §3.7.1.3 iterated and salted S2K over `unit` (salt || passphrase).
fn s2k<D: Digest>(unit: &[u8], count: u32) -> Zeroizing<Vec<u8>> {
    let mut h = D::new();
    let total = usize::try_from(count).unwrap_or(usize::MAX).max(unit.len());
    let mut left = total;
    if !unit.is_empty() {
        // Whole units in blocks of about 8 KiB, then the start of one more.
        let per_block = (8192 / unit.len()).max(1);
        let block = Zeroizing::new(unit.repeat(per_block));
        while left >= block.len() {
            h.update(&block[..]);
            left -= block.len();
        }
        h.update(block.get(..left).unwrap_or(&[]));
    }
    Zeroizing::new(h.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same S2K, written as plainly as RFC 4880 says it.
    fn naive(salt: &[u8], pin: &[u8], count: usize) -> Vec<u8> {
        let unit: Vec<u8> = salt.iter().chain(pin).copied().collect();
        let total = count.max(unit.len());
        let stream: Vec<u8> = unit.iter().copied().cycle().take(total).collect();
        sha2::Sha256::digest(&stream).to_vec()
    }

    fn kdf_do(count: u32, salts: &[(u8, [u8; 8])]) -> Vec<u8> {
        let mut v = vec![0x81, 0x01, 0x03, 0x82, 0x01, 0x08, 0x83, 0x04];
        v.extend_from_slice(&count.to_be_bytes());
        for (t, s) in salts {
            v.extend_from_slice(&[*t, 0x08]);
            v.extend_from_slice(s);
        }
        v
    }

    #[test]
    fn derives_with_the_salt_of_each_pin() {
        let f9 = kdf_do(100_000, &[(0x84, [1; 8]), (0x86, [3; 8])]);
        let kdf = Kdf::parse(&f9).unwrap().unwrap();
        assert_eq!(
            &kdf.derive(PinRef::Pw1, b"123456")[..],
            &naive(&[1; 8], b"123456", 100_000)[..]
        );
        assert_eq!(
            &kdf.derive(PinRef::Pw3, b"12345678")[..],
            &naive(&[3; 8], b"12345678", 100_000)[..]
        );
        // No salt 85: the resetting code uses PW1's.
        assert_eq!(
            &kdf.derive(PinRef::Rc, b"abcdefgh")[..],
            &naive(&[1; 8], b"abcdefgh", 100_000)[..]
        );
        // A count smaller than salt || PIN hashes it once.
        let small = Kdf::parse(&kdf_do(3, &[(0x84, [1; 8])])).unwrap().unwrap();
        assert_eq!(
            &small.derive(PinRef::Pw1, b"123456")[..],
            &sha2::Sha256::digest([[1u8; 8].as_slice(), b"123456"].concat())[..]
        );
    }

    #[test]
    fn kdf_off_and_bad_kdf_dos() {
        assert_eq!(Kdf::parse(&[]).unwrap(), None);
        assert_eq!(Kdf::parse(&[0x81, 0x01, 0x00]).unwrap(), None);
        assert_eq!(Kdf::parse(&[0xF9, 0x03, 0x81, 0x01, 0x00]).unwrap(), None);
        assert!(Kdf::parse(&[0x81, 0x01, 0x02]).is_err());
        assert!(Kdf::parse(&kdf_do(1000, &[])).is_err(), "no salt");
        assert!(Kdf::parse(&kdf_do(u32::MAX, &[(0x84, [1; 8])])).is_err());
        let sha1 = [
            0x81, 0x01, 0x03, 0x82, 0x01, 0x02, 0x83, 0x01, 0x10, 0x84, 0x01, 0x00,
        ];
        assert!(Kdf::parse(&sha1).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Kdf::parse(&data);
        }

        #[test]
        fn derivation_matches_the_plain_definition(
            salt in proptest::array::uniform8(any::<u8>()),
            pin in proptest::collection::vec(any::<u8>(), 1..20),
            count in 0u32..5000,
        ) {
            let kdf = Kdf::parse(&kdf_do(count, &[(0x84, salt)])).unwrap().unwrap();
            prop_assert_eq!(&kdf.derive(PinRef::Pw1, &pin)[..], &naive(&salt, &pin, count as usize)[..]);
        }
    }
}
