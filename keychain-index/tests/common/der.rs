//! Just enough DER to make X.509 certificates for tests and benchmarks (RFC 5280 §4.1): the
//! fields the keychain reads are real, the signature is filler.
#![allow(dead_code)]

/// A TLV with a definite length (X.690 §8.1.3).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already-encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0A];
const OID_EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    tlv(0x31, &seq(&[&tlv(0x06, oid), &tlv(0x0C, value.as_bytes())]))
}

/// A Name: `O=<org>, CN=<cn>` (or just the CN).
pub fn name(cn: &str, org: Option<&str>) -> Vec<u8> {
    let cn = attribute(OID_CN, cn);
    match org {
        Some(o) => seq(&[&attribute(OID_O, o), &cn]),
        None => seq(&[&cn]),
    }
}

/// The SubjectPublicKeyInfo of a P-256 point.
pub fn spki_p256(point: &[u8]) -> Vec<u8> {
    let mut bits = vec![0];
    bits.extend_from_slice(point);
    seq(&[
        &seq(&[&tlv(0x06, OID_EC), &tlv(0x06, OID_P256)]),
        &tlv(0x03, &bits),
    ])
}

/// A v3 certificate.
pub fn certificate(serial: &[u8], issuer: &[u8], subject: &[u8], spki: &[u8]) -> Vec<u8> {
    let alg = seq(&[&tlv(0x06, OID_ECDSA_SHA256)]);
    let validity = seq(&[&tlv(0x17, b"260101000000Z"), &tlv(0x17, b"360101000000Z")]);
    let tbs = seq(&[
        &tlv(0xA0, &tlv(0x02, &[2])),
        &tlv(0x02, serial),
        &alg,
        issuer,
        &validity,
        subject,
        spki,
    ]);
    let mut signature = vec![0];
    signature.extend_from_slice(&[0x5A; 64]);
    seq(&[&tbs, &alg, &tlv(0x03, &signature)])
}

/// A fake but well-formed uncompressed P-256 point, different for every seed.
pub fn ec_point(seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(65);
    out.push(0x04);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < 65 {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(65);
    out
}
