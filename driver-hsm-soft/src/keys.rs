//! Key material: generation, PKCS#8 import, the signing backends, ECDH, public key encodings.
//!
//! ECDSA P-256 over SHA-256 messages signs with `ring` (about 5x the rate of `p256` 0.14 on
//! the machines this project runs on; see `benches/sign.rs`). Pre-hashed digests, which `ring`
//! does not take, and other hashes sign with `p256`; Ed25519 signs with `ed25519-dalek`;
//! ECDH uses `p256`.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::Signer;
use token_core::{
    pem_to_der, Error, HashAlg, KeyType, PublicKey, Result, SignatureAlgorithm,
    SubjectPublicKeyInfo,
};
use zeroize::Zeroizing;

use crate::crypto::{self, Secret};

/// A freshly generated or imported private key: its type, 32 secret bytes (P-256 scalar or
/// Ed25519 seed) and the raw public key.
pub(crate) struct NewKey {
    pub key_type: KeyType,
    pub secret: Secret,
    pub public: Vec<u8>,
}

fn p256_public(sk: &p256::SecretKey) -> Result<Vec<u8>> {
    let raw = sk.public_key().to_sec1_bytes().to_vec();
    if raw.len() == 65 {
        Ok(raw)
    } else {
        Err(Error::bad_parameter(
            "P-256 public key not in uncompressed form",
        ))
    }
}

fn from_p256(sk: &p256::SecretKey) -> Result<NewKey> {
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&sk.to_bytes());
    Ok(NewKey {
        key_type: KeyType::EcP256,
        public: p256_public(sk)?,
        secret,
    })
}

fn from_ed25519(sk: &ed25519_dalek::SigningKey) -> NewKey {
    NewKey {
        key_type: KeyType::Ed25519,
        secret: Zeroizing::new(sk.to_bytes()),
        public: sk.verifying_key().to_bytes().to_vec(),
    }
}

/// Generates a key of `key_type` from the system's random source.
pub(crate) fn generate(key_type: KeyType) -> Result<NewKey> {
    match key_type {
        KeyType::EcP256 => loop {
            // A uniformly random scalar: retry the 2^-32 chance of landing outside [1, n).
            let bytes = Zeroizing::new(crypto::random::<32>()?);
            if let Ok(sk) = p256::SecretKey::from_slice(bytes.as_slice()) {
                return from_p256(&sk);
            }
        },
        KeyType::Ed25519 => {
            let seed = Zeroizing::new(crypto::random::<32>()?);
            Ok(from_ed25519(&ed25519_dalek::SigningKey::from_bytes(&seed)))
        }
        _ => Err(Error::bad_parameter(
            "the soft token makes P-256 and Ed25519 keys only",
        )),
    }
}

/// Reads a private key: PKCS#8 `PrivateKeyInfo` DER, or PEM (`PRIVATE KEY`, or SEC1
/// `EC PRIVATE KEY`), for P-256 or Ed25519.
pub(crate) fn parse_private(input: &[u8]) -> Result<NewKey> {
    let bad = || Error::corrupted("not a P-256 or Ed25519 private key in PKCS#8 DER or PEM");
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let text = Zeroizing::new(
            String::from_utf8(trimmed.to_vec()).map_err(|_| Error::corrupted("PEM is not text"))?,
        );
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(Error::bad_parameter(
                "encrypted PKCS#8 is not supported: decrypt the key first",
            ));
        }
        if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            let der = Zeroizing::new(pem_to_der(&text, "EC PRIVATE KEY")?);
            let sk = p256::SecretKey::from_sec1_der(&der).map_err(|_| bad())?;
            return from_p256(&sk);
        }
        let der = Zeroizing::new(pem_to_der(&text, "PRIVATE KEY")?);
        return parse_pkcs8_der(&der).ok_or_else(bad)?;
    }
    parse_pkcs8_der(input).ok_or_else(bad)?
}

fn parse_pkcs8_der(der: &[u8]) -> Option<Result<NewKey>> {
    if let Ok(sk) = p256::SecretKey::from_pkcs8_der(der) {
        return Some(from_p256(&sk));
    }
    ed25519_dalek::SigningKey::from_pkcs8_der(der)
        .ok()
        .map(|sk| Ok(from_ed25519(&sk)))
}

/// A private key opened for a session, with its signing backends ready.
pub(crate) enum LoadedKey {
    P256 {
        /// `ring`, for ECDSA over SHA-256 of a message (the common case).
        ring: EcdsaKeyPair,
        /// `p256`, for pre-hashed digests and ECDH.
        rc: p256::ecdsa::SigningKey,
    },
    Ed25519(ed25519_dalek::SigningKey),
}

impl LoadedKey {
    /// Opens the 32 secret bytes of a key of `key_type` whose public key is `public`.
    pub(crate) fn new(key_type: KeyType, secret: &Secret, public: &[u8]) -> Result<Self> {
        let mismatch = || Error::corrupted("store: private key does not match its public key");
        match key_type {
            KeyType::EcP256 => {
                let rc = p256::ecdsa::SigningKey::from_slice(secret.as_slice())
                    .map_err(|_| Error::corrupted("store: invalid P-256 private key"))?;
                let ring = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    secret.as_slice(),
                    public,
                    &SystemRandom::new(),
                )
                .map_err(|_| mismatch())?;
                Ok(Self::P256 { ring, rc })
            }
            KeyType::Ed25519 => {
                let sk = ed25519_dalek::SigningKey::from_bytes(secret);
                if sk.verifying_key().as_bytes().as_slice() != public {
                    return Err(mismatch());
                }
                Ok(Self::Ed25519(sk))
            }
            _ => Err(Error::corrupted("store: unknown key type")),
        }
    }

    /// Signs `data` as `algorithm` says.
    pub(crate) fn sign(&self, algorithm: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>> {
        match (self, algorithm) {
            (Self::P256 { ring, .. }, SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256)) => ring
                .sign(&SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::communication("ECDSA signing failed")),
            (Self::P256 { rc, .. }, SignatureAlgorithm::EcdsaMessage(h)) => {
                let digest = match h {
                    HashAlg::Sha384 => Sha384::digest(data).to_vec(),
                    HashAlg::Sha512 => Sha512::digest(data).to_vec(),
                    _ => return Err(Error::bad_parameter("ECDSA hashes with SHA-256/384/512")),
                };
                sign_prehash(rc, &digest)
            }
            (Self::P256 { rc, .. }, SignatureAlgorithm::EcdsaDigest(h)) => {
                if data.len() != h.output_len() {
                    return Err(Error::bad_parameter(
                        "digest length does not match its hash",
                    ));
                }
                sign_prehash(rc, data)
            }
            (Self::Ed25519(sk), SignatureAlgorithm::Ed25519) => {
                let sig: ed25519_dalek::Signature = sk.sign(data);
                Ok(sig.to_bytes().to_vec())
            }
            _ => Err(Error::bad_parameter(
                "the key cannot make this kind of signature",
            )),
        }
    }

    /// ECDH with a peer's uncompressed (or compressed) P-256 point; the shared x-coordinate.
    pub(crate) fn key_exchange(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let Self::P256 { rc, .. } = self else {
            return Err(Error::bad_parameter("key agreement needs a P-256 key"));
        };
        let peer = p256::PublicKey::from_sec1_bytes(peer)
            .map_err(|_| Error::bad_parameter("the peer key is not a P-256 point"))?;
        let secret = p256::SecretKey::from(rc.as_nonzero_scalar());
        let shared = secret.diffie_hellman(&peer);
        Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
    }
}

fn sign_prehash(key: &p256::ecdsa::SigningKey, digest: &[u8]) -> Result<Vec<u8>> {
    let sig: p256::ecdsa::DerSignature = key
        .sign_prehash(digest)
        .map_err(|_| Error::bad_parameter("digest not accepted for ECDSA"))?;
    Ok(sig.as_bytes().to_vec())
}

/// SHA-256 of `data`, the digest [`SignatureAlgorithm::EcdsaDigest`] with SHA-256 expects.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The `AlgorithmIdentifier` parameters of an EC public key on P-256: the curve's OID, DER.
const P256_PARAMETERS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// A public key as a DER `SubjectPublicKeyInfo` (RFC 5480 for P-256, RFC 8410 for Ed25519), the
/// form `openssl` and most libraries import.
///
/// # Errors
/// `BadParameter` for key types other than P-256 and Ed25519.
pub fn spki_der(key: &PublicKey) -> Result<Vec<u8>> {
    match key.key_type {
        KeyType::EcP256 => Ok(SubjectPublicKeyInfo::encode(
            SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY,
            Some(P256_PARAMETERS),
            &key.raw,
        )),
        KeyType::Ed25519 => Ok(SubjectPublicKeyInfo::encode(
            SubjectPublicKeyInfo::OID_ED25519,
            None,
            &key.raw,
        )),
        _ => Err(Error::bad_parameter(
            "SPKI export covers P-256 and Ed25519 keys",
        )),
    }
}

/// A public key as PEM (`-----BEGIN PUBLIC KEY-----`), for `openssl dgst -verify`.
///
/// # Errors
/// As [`spki_der`].
pub fn spki_pem(key: &PublicKey) -> Result<String> {
    Ok(token_core::der_to_pem("PUBLIC KEY", &spki_der(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign() {
        for t in [KeyType::EcP256, KeyType::Ed25519] {
            let k = generate(t).unwrap();
            let loaded = LoadedKey::new(t, &k.secret, &k.public).unwrap();
            let alg = if t == KeyType::EcP256 {
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256)
            } else {
                SignatureAlgorithm::Ed25519
            };
            assert!(!loaded.sign(alg, b"x").unwrap().is_empty());
            let other = generate(t).unwrap();
            assert!(LoadedKey::new(t, &k.secret, &other.public).is_err());
        }
    }
}
