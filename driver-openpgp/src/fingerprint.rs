//! OpenPGP v4 fingerprints of card keys (RFC 9580 §5.5.2, §5.5.5.5-7, §12.2), written to C7-C9
//! with the generation time after a key is generated or imported, as GnuPG's scdaemon does.

use sha1::{Digest, Sha1};

use crate::types::Algorithm;

/// The v4 fingerprint of a card key: SHA-1 over 99 || length || the public-key packet body
/// (version 4, creation time, algorithm, curve OID, the point as an MPI, and for ECDH the KDF
/// parameters GnuPG uses by default: SHA-256/AES-128, or SHA-384/AES-256 on P-384).
///
/// `public` is the key as the card gives it: an uncompressed point, or 32 bytes for
/// Curve25519 keys (which OpenPGP prefixes with 40). For RSA it is the DER `RSAPublicKey`
/// (as in [`token_core::PublicKey::raw`]), and the packet holds the MPIs n and e; RSA bytes
/// that are not such a key give the fingerprint of an empty modulus and exponent.
pub fn fingerprint_v4(algorithm: Algorithm, public: &[u8], created: u32) -> [u8; 20] {
    if algorithm.is_rsa() {
        let (n, e) = crate::rsa_der::public_parts(public).unwrap_or((&[], &[]));
        let mut body = vec![0x04];
        body.extend_from_slice(&created.to_be_bytes());
        body.push(0x01);
        for mpi in [n, e] {
            body.extend_from_slice(&(crate::rsa_der::bit_len(mpi) as u16).to_be_bytes());
            body.extend_from_slice(mpi);
        }
        return v4(&body);
    }
    let attributes = algorithm.attributes();
    let (&id, oid) = attributes.split_first().unwrap_or((&0, &[]));
    let mut point = Vec::with_capacity(public.len() + 1);
    if matches!(algorithm, Algorithm::Ed25519 | Algorithm::X25519) {
        point.push(0x40);
    }
    point.extend_from_slice(public);
    let bits = point.first().map_or(0, |&top| {
        (point.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    let mut body = vec![0x04];
    body.extend_from_slice(&created.to_be_bytes());
    body.push(id);
    body.push(oid.len() as u8);
    body.extend_from_slice(oid);
    body.extend_from_slice(&(bits as u16).to_be_bytes());
    body.extend_from_slice(&point);
    match algorithm {
        Algorithm::EcdhP256 | Algorithm::X25519 => body.extend_from_slice(&[3, 1, 8, 7]),
        Algorithm::EcdhP384 => body.extend_from_slice(&[3, 1, 9, 9]),
        _ => {}
    }
    v4(&body)
}

/// SHA-1 over 99 || the two-byte length || the public-key packet body.
fn v4(body: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update([0x99]);
    h.update((body.len() as u16).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9580_sample_v4_ed25519_key() {
        // RFC 9580 Appendix A.1: created 2014-08-19 14:28:27 UTC.
        let public = [
            0x3f, 0x09, 0x89, 0x94, 0xbd, 0xd9, 0x16, 0xed, 0x40, 0x53, 0x19, 0x79, 0x34, 0xe4,
            0xa8, 0x7c, 0x80, 0x73, 0x3a, 0x12, 0x80, 0xd6, 0x2f, 0x80, 0x10, 0x99, 0x2e, 0x43,
            0xee, 0x3b, 0x24, 0x06,
        ];
        let fp = fingerprint_v4(Algorithm::Ed25519, &public, 0x53F3_5F0B);
        assert_eq!(
            fp,
            [
                0xC9, 0x59, 0xBD, 0xBA, 0xFA, 0x32, 0xA2, 0xF8, 0x9A, 0x15, 0x3B, 0x67, 0x8C, 0xFD,
                0xE1, 0x21, 0x97, 0x96, 0x5A, 0x9A
            ]
        );
    }
}
