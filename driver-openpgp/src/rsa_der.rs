//! RSA public keys as token-core carries them (DER `RSAPublicKey`, PKCS#1 / RFC 8017 A.1.1),
//! the DigestInfo prefixes of PKCS#1 v1.5 signatures (RFC 8017 §9.2), and PKCS#8 RSA private
//! keys (RFC 8017 A.1.2). Every parser is total: malformed input is `None` or an error.

use token_core::{HashAlg, Tag, Tlv, TlvBuilder};
use zeroize::Zeroizing;

const INTEGER: Tag = Tag::new(0x02);
const SEQUENCE: Tag = Tag::new(0x30);

/// A big-endian unsigned integer without its leading zero bytes.
pub(crate) fn strip(v: &[u8]) -> &[u8] {
    let skip = v.iter().take_while(|&&b| b == 0).count();
    v.get(skip..).unwrap_or(&[])
}

/// The DER INTEGER contents of an unsigned big-endian number: minimal, with a 00 before a
/// top bit.
fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = strip(v);
    let mut out = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(v);
    out
}

/// DER `RSAPublicKey { modulus, publicExponent }` from the unsigned modulus and exponent.
pub(crate) fn public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut b = TlvBuilder::new();
    b.constructed(SEQUENCE, |b| {
        b.put(INTEGER, &der_uint(n));
        b.put(INTEGER, &der_uint(e));
    });
    b.finish()
}

/// The modulus and exponent (without leading zeros) of a DER `RSAPublicKey`.
pub(crate) fn public_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let seq = Tlv::parse_exact(der).ok()?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let mut children = seq.children();
    let n = children.next()?.ok()?;
    let e = children.next()?.ok()?;
    if n.tag != INTEGER || e.tag != INTEGER || children.next().is_some() {
        return None;
    }
    let (n, e) = (strip(n.value), strip(e.value));
    (!n.is_empty() && !e.is_empty()).then_some((n, e))
}

/// The size in bits of an unsigned big-endian number.
pub(crate) fn bit_len(v: &[u8]) -> usize {
    let v = strip(v);
    v.first()
        .map_or(0, |&top| v.len() * 8 - top.leading_zeros() as usize)
}

/// The DER prefix of `DigestInfo { AlgorithmIdentifier { hash OID, NULL }, OCTET STRING }`
/// before the digest (RFC 8017 §9.2 note 1).
pub(crate) fn digest_info_prefix(hash: HashAlg) -> Option<&'static [u8]> {
    Some(match hash {
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => return None,
    })
}

/// An RSA private key taken out of PKCS#8 (`RSAPrivateKey`, two primes), every part
/// unsigned big-endian without leading zeros.
pub(crate) struct RsaPrivate {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    pub p: Zeroizing<Vec<u8>>,
    pub q: Zeroizing<Vec<u8>>,
    /// d mod (p-1)
    pub dp: Zeroizing<Vec<u8>>,
    /// d mod (q-1)
    pub dq: Zeroizing<Vec<u8>>,
    /// 1/q mod p
    pub qinv: Zeroizing<Vec<u8>>,
}

/// Parses `RSAPrivateKey ::= SEQUENCE { version 0, n, e, d, p, q, dp, dq, qinv }`.
pub(crate) fn parse_private(der: &[u8]) -> Option<RsaPrivate> {
    let seq = Tlv::parse_exact(der).ok()?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let mut ints = Vec::with_capacity(9);
    for child in seq.children() {
        let child = child.ok()?;
        if child.tag != INTEGER || ints.len() == 9 {
            return None;
        }
        ints.push(strip(child.value));
    }
    let [version, n, e, _d, p, q, dp, dq, qinv] = ints[..] else {
        return None;
    };
    if !version.is_empty() || [n, e, p, q, dp, dq, qinv].iter().any(|v| v.is_empty()) {
        return None;
    }
    let secret = |v: &[u8]| Zeroizing::new(v.to_vec());
    Some(RsaPrivate {
        n: n.to_vec(),
        e: e.to_vec(),
        p: secret(p),
        q: secret(q),
        dp: secret(dp),
        dq: secret(dq),
        qinv: secret(qinv),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn public_keys_round_trip_and_integers_are_minimal() {
        let der = public_der(&[0x00, 0x80, 0x01], &[0x01, 0x00, 0x01]);
        // SEQUENCE { INTEGER 00 80 01, INTEGER 01 00 01 }
        assert_eq!(
            der,
            [0x30, 0x0A, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]
        );
        assert_eq!(
            public_parts(&der),
            Some((&[0x80, 0x01][..], &[0x01, 0x00, 0x01][..]))
        );
        assert_eq!(bit_len(&[0x00, 0x80, 0x01]), 16);
        assert_eq!(bit_len(&[0x01, 0x00, 0x01]), 17);
        assert_eq!(public_parts(&der[..der.len() - 1]), None);
    }

    #[test]
    fn digest_info_prefixes_are_der_of_the_right_length() {
        for (h, len) in [
            (HashAlg::Sha256, 32),
            (HashAlg::Sha384, 48),
            (HashAlg::Sha512, 64),
        ] {
            let mut di = digest_info_prefix(h).unwrap().to_vec();
            di.extend(std::iter::repeat_n(0xAB, len));
            let t = Tlv::parse_exact(&di).unwrap();
            let mut c = t.children();
            let alg = c.next().unwrap().unwrap();
            let digest = c.next().unwrap().unwrap();
            assert_eq!(alg.tag, SEQUENCE);
            assert_eq!(digest.value.len(), len);
        }
        assert!(digest_info_prefix(HashAlg::Sha1).is_none());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = public_parts(&data);
            let _ = parse_private(&data);
            let _ = bit_len(&data);
        }
    }
}
