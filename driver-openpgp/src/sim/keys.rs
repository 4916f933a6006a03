//! The simulator's private keys and what it does with them.

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use token_core::StatusWord;
use zeroize::Zeroizing;

use crate::types::Algorithm;

type SwResult<T> = core::result::Result<T, StatusWord>;

/// A private key held by the simulated card. Its `Debug` never shows the secret.
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
        };
        ok.then(|| SimKey {
            algorithm,
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// A fresh random key.
    pub(crate) fn generate(algorithm: Algorithm) -> SwResult<SimKey> {
        for _ in 0..16 {
            let mut secret = Zeroizing::new(vec![0u8; algorithm.private_len()]);
            getrandom::fill(&mut secret).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
            if let Some(k) = Self::from_secret(algorithm, &secret) {
                return Ok(k);
            }
        }
        Err(StatusWord::NO_PRECISE_DIAGNOSIS)
    }

    /// The public key as the card gives it in 7F49/86: an uncompressed point for NIST curves,
    /// the 32 native bytes for Curve25519 keys.
    pub(crate) fn public(&self) -> SwResult<Vec<u8>> {
        let bad = StatusWord::NO_PRECISE_DIAGNOSIS;
        Ok(match self.algorithm {
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
    /// answer raw r || s (OpenPGP card 3.4 §7.2.10); EdDSA over the message.
    pub(crate) fn sign(&self, input: &[u8]) -> SwResult<Vec<u8>> {
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
