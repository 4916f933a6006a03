//! What the host prepares for the card's raw private-key operations: message hashes, the ECDSA
//! input at the curve's size, RSA PKCS#1 v1.5 and PSS encodings (RFC 8017 §9), and PKCS#1 v1.5
//! padding removal after decryption.

use sha2::Digest;
use token_core::{Error, HashAlg, Result};
use zeroize::Zeroizing;

/// Hashes `data` with `alg`.
pub(crate) fn hash(alg: HashAlg, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match alg {
        HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(Error::bad_parameter("unsupported hash")),
    })
}

/// The digest to sign: `data` hashed, or `data` itself when the caller hashed it (whose length
/// must then match the hash).
pub(crate) fn digest(alg: HashAlg, data: &[u8], prehashed: bool) -> Result<Vec<u8>> {
    if prehashed {
        if data.len() != alg.output_len() {
            return Err(Error::bad_parameter(
                "digest length does not match the hash algorithm",
            ));
        }
        Ok(data.to_vec())
    } else {
        hash(alg, data)
    }
}

/// The ECDSA input for a curve of `field_len` bytes: the leftmost `field_len` bytes of the
/// digest (FIPS 186-4 §6.4), or the digest left-padded with zeros when shorter (SP 800-73-4
/// Part 2 §3.2.4: the card takes exactly the field size).
pub(crate) fn ecdsa_input(digest: &[u8], field_len: usize) -> Vec<u8> {
    if digest.len() >= field_len {
        digest.get(..field_len).unwrap_or(digest).to_vec()
    } else {
        let mut out = vec![0u8; field_len - digest.len()];
        out.extend_from_slice(digest);
        out
    }
}

/// The DER prefix of `DigestInfo` for each hash (RFC 8017 §9.2 note 1).
fn digest_info_prefix(alg: HashAlg) -> Result<&'static [u8]> {
    Ok(match alg {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => return Err(Error::bad_parameter("unsupported hash")),
    })
}

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2): `00 01 FF..FF 00 DigestInfo`, `k` bytes.
pub(crate) fn pkcs1v15_sign_pad(alg: HashAlg, digest: &[u8], k: usize) -> Result<Vec<u8>> {
    let prefix = digest_info_prefix(alg)?;
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return Err(Error::bad_parameter("RSA key too short for this hash"));
    }
    let mut em = Vec::with_capacity(k);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(k - t_len - 1, 0xFF);
    em.push(0x00);
    em.extend_from_slice(prefix);
    em.extend_from_slice(digest);
    Ok(em)
}

/// MGF1 (RFC 8017 §B.2.1) with `alg`, `len` bytes.
fn mgf1(alg: HashAlg, seed: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len + 64);
    let mut counter = 0u32;
    while out.len() < len {
        let mut input = seed.to_vec();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&hash(alg, &input)?);
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with MGF1 of the same hash and a salt as long as the
/// hash, for a modulus of `mod_bits` bits; the result is left-padded to `k` bytes for the card.
pub(crate) fn pss_encode(
    alg: HashAlg,
    digest: &[u8],
    salt: &[u8],
    mod_bits: usize,
    k: usize,
) -> Result<Vec<u8>> {
    let h_len = digest.len();
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    if em_len < h_len + salt.len() + 2 {
        return Err(Error::bad_parameter(
            "RSA key too short for PSS with this hash",
        ));
    }
    let mut m_prime = vec![0u8; 8];
    m_prime.extend_from_slice(digest);
    m_prime.extend_from_slice(salt);
    let h = hash(alg, &m_prime)?;
    let ps_len = em_len - salt.len() - h_len - 2;
    let mut db = vec![0u8; ps_len];
    db.push(0x01);
    db.extend_from_slice(salt);
    let mask = mgf1(alg, &h, db.len())?;
    for (d, m) in db.iter_mut().zip(&mask) {
        *d ^= m;
    }
    // Clear the leftmost 8*emLen - emBits bits.
    let clear = 8 * em_len - em_bits;
    if let Some(first) = db.first_mut() {
        *first &= 0xFFu8 >> clear;
    }
    let mut em = vec![0u8; k.saturating_sub(em_len)];
    em.extend_from_slice(&db);
    em.extend_from_slice(&h);
    em.push(0xBC);
    Ok(em)
}

/// Removes EME-PKCS1-v1_5 padding (RFC 8017 §7.2.2) from a decrypted block.
pub(crate) fn pkcs1v15_unpad(em: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let bad = || Error::corrupted("decryption: bad PKCS#1 v1.5 padding");
    match em {
        [0x00, 0x02, rest @ ..] => {
            let zero = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
            if zero < 8 {
                return Err(bad());
            }
            Ok(Zeroizing::new(
                rest.get(zero + 1..).ok_or_else(bad)?.to_vec(),
            ))
        }
        _ => Err(bad()),
    }
}

/// Fills a buffer from the system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| Error::communication("the system random source failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_input_truncates_and_pads() {
        assert_eq!(ecdsa_input(&[1; 48], 32), vec![1; 32]);
        let padded = ecdsa_input(&[2; 32], 48);
        assert_eq!(&padded[..16], &[0; 16]);
        assert_eq!(&padded[16..], &[2; 32]);
    }

    #[test]
    fn pkcs1v15_layout() {
        let d = hash(HashAlg::Sha256, b"abc").unwrap();
        let em = pkcs1v15_sign_pad(HashAlg::Sha256, &d, 256).unwrap();
        assert_eq!(em.len(), 256);
        assert_eq!(&em[..2], &[0, 1]);
        assert_eq!(em[256 - 52], 0);
        assert!(em[2..256 - 52].iter().all(|&b| b == 0xFF));
        assert_eq!(&em[256 - 32..], &d[..]);
    }

    #[test]
    fn pss_encoding_verifies_by_rfc8017_steps() {
        let d = hash(HashAlg::Sha256, b"message").unwrap();
        let salt = [9u8; 32];
        for (bits, k) in [(2048usize, 256usize), (2049, 257)] {
            let em = pss_encode(HashAlg::Sha256, &d, &salt, bits, k).unwrap();
            assert_eq!(em.len(), k);
            // EMSA-PSS-VERIFY (RFC 8017 §9.1.2).
            let em_len = (bits - 1).div_ceil(8);
            let em = &em[k - em_len..];
            assert_eq!(*em.last().unwrap(), 0xBC);
            let (masked, rest) = em.split_at(em_len - 33);
            let h = &rest[..32];
            let mask = mgf1(HashAlg::Sha256, h, masked.len()).unwrap();
            let mut db: Vec<u8> = masked.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
            db[0] &= 0xFF >> (8 * em_len - (bits - 1));
            let one = db.iter().position(|&b| b != 0).unwrap();
            assert_eq!(db[one], 1);
            assert_eq!(&db[one + 1..], &salt);
            let mut m = vec![0u8; 8];
            m.extend_from_slice(&d);
            m.extend_from_slice(&salt);
            assert_eq!(hash(HashAlg::Sha256, &m).unwrap(), h);
        }
    }

    #[test]
    fn pkcs1v15_unpadding() {
        let mut em = vec![0, 2];
        em.extend_from_slice(&[0x55; 10]);
        em.push(0);
        em.extend_from_slice(b"secret");
        assert_eq!(&*pkcs1v15_unpad(&em).unwrap(), b"secret");
        assert!(pkcs1v15_unpad(&[0, 2, 1, 0, 1]).is_err());
        assert!(pkcs1v15_unpad(&[0, 1, 1]).is_err());
    }
}
