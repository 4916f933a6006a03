//! The simulator's private keys and what it does with them.

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use token_core::{Error, KeyType, PublicKey, Result, StatusWord};
use zeroize::Zeroizing;

use crate::types::AlgorithmId;

/// A private key held by the simulated card. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SimKey {
    algorithm: AlgorithmId,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimKey({}, ***)", self.algorithm)
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| Error::communication("the system random source failed"))
}

impl SimKey {
    /// A key of `algorithm` (11 P-256, 14 P-384, E0 Ed25519, E1 X25519) from its secret: the
    /// scalar for ECC, the seed for Ed25519, the secret for X25519.
    ///
    /// # Errors
    /// `BadParameter` for another algorithm or a secret that is not a valid key.
    pub fn from_secret(algorithm: AlgorithmId, secret: &[u8]) -> Result<SimKey> {
        let ok = match algorithm {
            AlgorithmId::ECC_P256 => {
                p256::SecretKey::from_slice(secret).is_ok() && secret.len() == 32
            }
            AlgorithmId::ECC_P384 => {
                p384::SecretKey::from_slice(secret).is_ok() && secret.len() == 48
            }
            AlgorithmId::ED25519 | AlgorithmId::X25519 => secret.len() == 32,
            _ => {
                return Err(Error::bad_parameter(
                    "the simulator holds P-256, P-384, Ed25519 and X25519 keys",
                ))
            }
        };
        if !ok {
            return Err(Error::bad_parameter("not a valid private key"));
        }
        Ok(SimKey {
            algorithm,
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// A P-256 key from its 32-byte scalar.
    ///
    /// # Errors
    /// `BadParameter` for a scalar out of range.
    pub fn p256(scalar: &[u8]) -> Result<SimKey> {
        Self::from_secret(AlgorithmId::ECC_P256, scalar)
    }

    /// A P-384 key from its 48-byte scalar.
    ///
    /// # Errors
    /// `BadParameter` for a scalar out of range.
    pub fn p384(scalar: &[u8]) -> Result<SimKey> {
        Self::from_secret(AlgorithmId::ECC_P384, scalar)
    }

    /// An Ed25519 key from its seed.
    pub fn ed25519(seed: [u8; 32]) -> SimKey {
        SimKey {
            algorithm: AlgorithmId::ED25519,
            secret: Zeroizing::new(seed.to_vec()),
        }
    }

    /// An X25519 key from its secret.
    pub fn x25519(secret: [u8; 32]) -> SimKey {
        SimKey {
            algorithm: AlgorithmId::X25519,
            secret: Zeroizing::new(secret.to_vec()),
        }
    }

    /// A fresh random key of `algorithm`.
    ///
    /// # Errors
    /// `BadParameter` for an algorithm the simulator does not generate.
    pub fn generate(algorithm: AlgorithmId) -> Result<SimKey> {
        let len = match algorithm {
            AlgorithmId::ECC_P384 => 48,
            AlgorithmId::ECC_P256 | AlgorithmId::ED25519 | AlgorithmId::X25519 => 32,
            _ => {
                return Err(Error::bad_parameter(
                    "the simulator generates P-256, P-384, Ed25519 and X25519 keys",
                ))
            }
        };
        // A uniformly random scalar: the chance of landing outside [1, n) is below 2^-32.
        for _ in 0..16 {
            let mut secret = Zeroizing::new(vec![0u8; len]);
            random(&mut secret)?;
            if let Ok(k) = Self::from_secret(algorithm, &secret) {
                return Ok(k);
            }
        }
        Err(Error::communication(
            "the random source gives no valid scalar",
        ))
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> AlgorithmId {
        self.algorithm
    }

    /// The secret bytes (for the simulator's state file). Never log them.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The public key, in token-core's raw form.
    ///
    /// # Errors
    /// None for keys built through this type's constructors.
    pub fn public_key(&self) -> Result<PublicKey> {
        let bad = || Error::corrupted("simulator key");
        let (key_type, raw) = match self.algorithm {
            AlgorithmId::ECC_P256 => {
                let sk = p256::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad())?;
                (
                    KeyType::EcP256,
                    sk.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
                )
            }
            AlgorithmId::ECC_P384 => {
                let sk = p384::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad())?;
                (
                    KeyType::EcP384,
                    sk.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
                )
            }
            AlgorithmId::ED25519 => {
                let seed: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad())?;
                let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                (KeyType::Ed25519, sk.verifying_key().to_bytes().to_vec())
            }
            AlgorithmId::X25519 => {
                let s: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad())?;
                (
                    KeyType::X25519,
                    curve25519_dalek::MontgomeryPoint::mul_base_clamped(s)
                        .to_bytes()
                        .to_vec(),
                )
            }
            _ => return Err(bad()),
        };
        Ok(PublicKey { key_type, raw })
    }

    /// The GENERAL AUTHENTICATE private key operation on `input`: ECDSA over a digest of the
    /// field size (shorter is left-padded, longer refused), DER-encoded; Ed25519 over the
    /// message. X25519 keys do not sign.
    pub(crate) fn sign(&self, input: &[u8]) -> core::result::Result<Vec<u8>, StatusWord> {
        let bad = StatusWord::INCORRECT_DATA;
        let field = |n: usize| -> core::result::Result<Vec<u8>, StatusWord> {
            if input.len() > n || input.is_empty() {
                return Err(bad);
            }
            let mut v = vec![0u8; n - input.len()];
            v.extend_from_slice(input);
            Ok(v)
        };
        match self.algorithm {
            AlgorithmId::ECC_P256 => {
                let sk = p256::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                let sig: p256::ecdsa::DerSignature =
                    sk.sign_prehash(&field(32)?).map_err(|_| bad)?;
                Ok(sig.as_bytes().to_vec())
            }
            AlgorithmId::ECC_P384 => {
                let sk = p384::ecdsa::SigningKey::from_slice(&self.secret).map_err(|_| bad)?;
                let sig: p384::ecdsa::DerSignature =
                    sk.sign_prehash(&field(48)?).map_err(|_| bad)?;
                Ok(sig.as_bytes().to_vec())
            }
            AlgorithmId::ED25519 => {
                use ed25519_dalek::Signer;
                let seed: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
                let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                Ok(sk.sign(input).to_bytes().to_vec())
            }
            _ => Err(bad),
        }
    }

    /// The GENERAL AUTHENTICATE key agreement with `peer` (an uncompressed point, or 32
    /// bytes for X25519): the shared secret's x-coordinate (or the X25519 output).
    pub(crate) fn agree(
        &self,
        peer: &[u8],
    ) -> core::result::Result<Zeroizing<Vec<u8>>, StatusWord> {
        let bad = StatusWord::INCORRECT_DATA;
        match self.algorithm {
            AlgorithmId::ECC_P256 => {
                let sk = p256::SecretKey::from_slice(&self.secret).map_err(|_| bad)?;
                let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| bad)?;
                let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            AlgorithmId::ECC_P384 => {
                let sk = p384::SecretKey::from_slice(&self.secret).map_err(|_| bad)?;
                let pk = p384::PublicKey::from_sec1_bytes(peer).map_err(|_| bad)?;
                let shared = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            AlgorithmId::X25519 => {
                let s: [u8; 32] = self.secret.as_slice().try_into().map_err(|_| bad)?;
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
            _ => Err(bad),
        }
    }
}
