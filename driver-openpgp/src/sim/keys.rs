//! The simulator's private keys and what it does with them.

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::BoxedUint;
use token_core::StatusWord;
use zeroize::Zeroizing;

use crate::types::Algorithm;

type SwResult<T> = core::result::Result<T, StatusWord>;

/// A private key held by the simulated card: the scalar or seed of an ECC key, the DER
/// `RSAPrivateKey` (PKCS#1) of an RSA key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SimKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimKey({:?}, ***)", self.algorithm)
    }
}

impl SimKey {
    /// A key from its secret, or `None` when it is not a valid key of `algorithm`.
    pub(crate) fn from_secret(algorithm: Algorithm, secret: &[u8]) -> Option<SimKey> {
        if let Algorithm::Rsa { bits, .. } = algorithm {
            let key = rsa::PrivateKey::from_pkcs1_der(secret).ok()?;
            return (key.n().bit_width() == u32::from(bits)).then(|| SimKey {
                algorithm,
                secret: Zeroizing::new(secret.to_vec()),
            });
        }
        if secret.len() != algorithm.private_len() {
            return None;
        }
        let ok = match algorithm {
            Algorithm::EcdsaP256 | Algorithm::EcdhP256 => {
                p256::SecretKey::from_slice(secret).is_ok()
            }
            Algorithm::EcdsaP384 | Algorithm::EcdhP384 => {
                p384::SecretKey::from_slice(secret).is_ok()
            }
            Algorithm::Ed25519 | Algorithm::X25519 => true,
            Algorithm::Rsa { .. } => false,
        };
        ok.then(|| SimKey {
            algorithm,
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// A fresh random key.
    pub(crate) fn generate(algorithm: Algorithm) -> SwResult<SimKey> {
        if let Algorithm::Rsa { bits, .. } = algorithm {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, usize::from(bits))
                .map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
            return Self::from_rsa(algorithm, &key);
        }
        for _ in 0..16 {
            let mut secret = Zeroizing::new(vec![0u8; algorithm.private_len()]);
            getrandom::fill(&mut secret).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
            if let Some(k) = Self::from_secret(algorithm, &secret) {
                return Ok(k);
            }
        }
        Err(StatusWord::NO_PRECISE_DIAGNOSIS)
    }

    /// An RSA key of `algorithm` from the `rsa` crate's key.
    pub(crate) fn from_rsa(algorithm: Algorithm, key: &rsa::PrivateKey) -> SwResult<SimKey> {
        let der = key
            .to_pkcs1_der()
            .map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
        Self::from_secret(algorithm, der.as_bytes()).ok_or(StatusWord::INCORRECT_DATA)
    }

    fn rsa(&self) -> SwResult<rsa::PrivateKey> {
        rsa::PrivateKey::from_pkcs1_der(&self.secret).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)
    }

    /// The modulus and public exponent of an RSA key, big-endian without leading zeros.
    pub(crate) fn rsa_public(&self) -> SwResult<(Vec<u8>, Vec<u8>)> {
        let key = self.rsa()?;
        Ok((
            key.n().to_be_bytes_trimmed_vartime().to_vec(),
            key.e().to_be_bytes_trimmed_vartime().to_vec(),
        ))
    }

    /// The raw RSA private-key operation on a k-byte block (k the modulus length).
    fn rsa_private_op(&self, block: &[u8]) -> SwResult<Zeroizing<Vec<u8>>> {
        let key = self.rsa()?;
        let k = key.size();
        if block.len() != k {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let c = BoxedUint::from_be_slice(block, key.n_bits_precision())
            .map_err(|_| StatusWord::INCORRECT_DATA)?;
        let m = rsa::hazmat::rsa_decrypt_and_check(&key, Some(&mut getrandom::SysRng), &c)
            .map_err(|_| StatusWord::INCORRECT_DATA)?;
        let bytes = Zeroizing::new(m.to_be_bytes().to_vec());
        let start = bytes
            .len()
            .checked_sub(k)
            .ok_or(StatusWord::INCORRECT_DATA)?;
        Ok(Zeroizing::new(bytes.get(start..).unwrap_or(&[]).to_vec()))
    }

    /// An RSA PKCS#1 v1.5 signature (RFC 8017 §8.2.1, type 1 padding) of what the card got:
    /// the DigestInfo, at most 40% of the modulus long (OpenPGP card 3.4 §7.2.10).
    fn rsa_sign(&self, input: &[u8]) -> SwResult<Vec<u8>> {
        let k = self.algorithm.private_len();
        if input.is_empty() || input.len() * 10 > k * 4 {
            return Err(StatusWord::WRONG_LENGTH);
        }
        let mut em = vec![0xFFu8; k];
        em[0] = 0x00;
        em[1] = 0x01;
        em[k - input.len() - 1] = 0x00;
        em[k - input.len()..].copy_from_slice(input);
        Ok(self.rsa_private_op(&em)?.to_vec())
    }

    /// RSA decryption with PKCS#1 v1.5 (type 2) padding removed; bad padding is 6A80.
    pub(crate) fn rsa_decrypt(&self, cryptogram: &[u8]) -> SwResult<Zeroizing<Vec<u8>>> {
        let em = self.rsa_private_op(cryptogram)?;
        let bad = StatusWord::INCORRECT_DATA;
        let (&[0x00, 0x02], rest) = em.split_at_checked(2).ok_or(bad)? else {
            return Err(bad);
        };
        let zero = rest.iter().position(|&b| b == 0).ok_or(bad)?;
        if zero < 8 {
            return Err(bad);
        }
        Ok(Zeroizing::new(rest.get(zero + 1..).unwrap_or(&[]).to_vec()))
    }

    /// The public key as the card gives it in 7F49/86: an uncompressed point for NIST curves,
    /// the 32 native bytes for Curve25519 keys; for RSA (whose template holds 81 and 82
    /// instead), the DER `RSAPublicKey`.
    pub(crate) fn public(&self) -> SwResult<Vec<u8>> {
        let bad = StatusWord::NO_PRECISE_DIAGNOSIS;
        Ok(match self.algorithm {
            Algorithm::Rsa { .. } => {
                let (n, e) = self.rsa_public()?;
                crate::rsa_der::public_der(&n, &e)
            }
            Algorithm::EcdsaP256 | Algorithm::EcdhP256 => {
                let sk = p256::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                sk.verifying_key().to_sec1_point(false).as_bytes().to_vec()
            }
            Algorithm::EcdsaP384 | Algorithm::EcdhP384 => {
                let sk = p384::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                sk.verifying_key().to_sec1_point(false).as_bytes().to_vec()
            }
            Algorithm::Ed25519 => {
                let seed: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .verifying_key()
                    .to_bytes()
                    .to_vec()
            }
            Algorithm::X25519 => {
                let s: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
                curve25519_dalek::MontgomeryPoint::mul_base_clamped(s)
                    .to_bytes()
                    .to_vec()
            }
        })
    }

    /// Signs: ECDSA over a digest (left-padded to the field size, or truncated to it), the
    /// answer raw r || s (OpenPGP card 3.4 §7.2.10); EdDSA over the message; RSA PKCS#1 v1.5
    /// over the DigestInfo.
    pub(crate) fn sign(&self, input: &[u8]) -> SwResult<Vec<u8>> {
        if self.algorithm.is_rsa() {
            return self.rsa_sign(input);
        }
        let bad = StatusWord::INCORRECT_DATA;
        if input.is_empty() {
            return Err(bad);
        }
        let field = |n: usize| -> Vec<u8> {
            let mut v = vec![0u8; n.saturating_sub(input.len())];
            v.extend_from_slice(input.get(..n.min(input.len())).unwrap_or(input));
            v
        };
        match self.algorithm {
            Algorithm::EcdsaP256 => {
                let sk = p256::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                let sig: p256::ecdsa::Signature = sk.sign_prehash(&field(32)).map_err(|_| bad)?;
                Ok(sig.to_bytes().to_vec())
            }
            Algorithm::EcdsaP384 => {
                let sk = p384::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                let sig: p384::ecdsa::Signature = sk.sign_prehash(&field(48)).map_err(|_| bad)?;
                Ok(sig.to_bytes().to_vec())
            }
            Algorithm::Ed25519 => {
                use ed25519_dalek::Signer;
                let seed: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
                let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                Ok(sk.sign(input).to_bytes().to_vec())
            }
            _ => Err(StatusWord::CONDITIONS_NOT_SATISFIED),
        }
    }

    /// ECDH with `peer` (an uncompressed point, or 32 bytes for X25519): the shared x
    /// coordinate, or the X25519 output.
    pub(crate) fn agree(&self, peer: &[u8]) -> SwResult<Zeroizing<Vec<u8>>> {
        let bad = StatusWord::INCORRECT_DATA;
        match self.algorithm {
            Algorithm::EcdhP256 => {
                let sk = p256::SecretKey::from_slice(&self.secret).map_err(|_| bad)?;
                let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| bad)?;
                let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Algorithm::EcdhP384 => {
                let sk = p384::SecretKey::from_slice(&self.secret).map_err(|_| bad)?;
                let pk = p384::PublicKey::from_sec1_bytes(peer).map_err(|_| bad)?;
                let shared = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Algorithm::X25519 => {
                let s: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
                // Some cards take the point with a 40 prefix (the OpenPGP native form).
                let peer = match peer {
                    [0x40, rest @ ..] if rest.len() == 32 => rest,
                    p => p,
                };
                let p: [u8; 32] = peer.try_into().map_err(|_| bad)?;
                let out = curve25519_dalek::MontgomeryPoint(p)
                    .mul_clamped(s)
                    .to_bytes();
                // A low-order peer point gives all zeros (RFC 7748 §6.1): refuse it.
                if out.iter().all(|&b| b == 0) {
                    return Err(bad);
                }
                Ok(Zeroizing::new(out.to_vec()))
            }
            _ => Err(StatusWord::CONDITIONS_NOT_SATISFIED),
        }
    }
}
