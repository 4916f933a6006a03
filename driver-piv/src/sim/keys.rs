//! The simulator's private keys and what it does with them.

use core::fmt;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::BoxedUint;
use token_core::{Error, KeyType, PublicKey, Result, StatusWord, Tag, TlvBuilder, TlvIter};
use zeroize::Zeroizing;

use crate::objects::{rsa_public_key_der, strip_zeros};
use crate::types::AlgorithmId;

/// The public exponent of every RSA key the simulator holds (YubiKeys generate and import
/// keys with 65537 only; IMPORT KEY does not even carry it).
const RSA_EXPONENT: u64 = 65_537;

/// A private key held by the simulated card. Its `Debug` never shows the secret.
///
/// RSA keys keep their primes (`01 p 02 q`, BER-TLV) as their secret bytes and, beside them,
/// the `rsa` crate's key with its CRT values (zeroized on drop too).
#[derive(Clone)]
pub struct SimKey {
    algorithm: AlgorithmId,
    secret: Zeroizing<Vec<u8>>,
    rsa: Option<Box<rsa::PrivateKey>>,
}

impl PartialEq for SimKey {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm && self.secret == other.secret
    }
}

impl Eq for SimKey {}

impl fmt::Debug for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimKey({}, ***)", self.algorithm)
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| Error::communication("the system random source failed"))
}

impl SimKey {
    /// A key of `algorithm` (11 P-256, 14 P-384, E0 Ed25519, E1 X25519; 06, 07, 05, 16 RSA
    /// 1024 to 4096) from its secret: the scalar for ECC, the seed for Ed25519, the secret for
    /// X25519, the primes as `01 p 02 q` (BER-TLV, what [`SimKey::secret`] gives) for RSA.
    ///
    /// # Errors
    /// `BadParameter` for another algorithm or a secret that is not a valid key (an RSA key
    /// whose modulus is not the algorithm's size included).
    pub fn from_secret(algorithm: AlgorithmId, secret: &[u8]) -> Result<SimKey> {
        if let Some(KeyType::Rsa(_)) = algorithm.key_type() {
            let (mut p, mut q) = (None, None);
            for item in TlvIter::new(secret) {
                match item {
                    Ok(t) if t.tag.value() == 0x01 => p = Some(t.value),
                    Ok(t) if t.tag.value() == 0x02 => q = Some(t.value),
                    Ok(_) => {}
                    Err(_) => return Err(Error::bad_parameter("RSA key: not 01 p 02 q")),
                }
            }
            let (Some(p), Some(q)) = (p, q) else {
                return Err(Error::bad_parameter("RSA key: p or q missing"));
            };
            let key = Self::rsa(p, q)?;
            if key.algorithm != algorithm {
                return Err(Error::bad_parameter(
                    "RSA key: the modulus is not this algorithm's size",
                ));
            }
            return Ok(key);
        }
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
            rsa: None,
        })
    }

    /// An RSA key from its primes `p` and `q` (big-endian), with public exponent 65537, as
    /// YubiKey IMPORT KEY takes it. The algorithm follows from the modulus: 1024 (06), 2048
    /// (07), 3072 (05) or 4096 (16) bits.
    ///
    /// # Errors
    /// `BadParameter` when `p` and `q` do not make an RSA key of one of those sizes.
    pub fn rsa(p: &[u8], q: &[u8]) -> Result<SimKey> {
        let bad = || Error::bad_parameter("not the primes of an RSA key the simulator holds");
        let (p, q) = (strip_zeros(p), strip_zeros(q));
        if p.len() > 256 || q.len() > 256 {
            return Err(bad());
        }
        let key = rsa::PrivateKey::from_p_q(
            BoxedUint::from_be_slice_vartime(p),
            BoxedUint::from_be_slice_vartime(q),
            BoxedUint::from(RSA_EXPONENT),
        )
        .map_err(|_| bad())?;
        Self::from_rsa(key)
    }

    fn from_rsa(key: rsa::PrivateKey) -> Result<SimKey> {
        let bad = || Error::bad_parameter("not an RSA key the simulator holds");
        let algorithm = match key.n().bit_width() {
            1024 => AlgorithmId::RSA1024,
            2048 => AlgorithmId::RSA2048,
            3072 => AlgorithmId::RSA3072,
            4096 => AlgorithmId::RSA4096,
            _ => return Err(bad()),
        };
        let (Some(p), Some(q)) = (key.p(), key.q()) else {
            return Err(bad());
        };
        let p = Zeroizing::new(p.modulus().to_be_bytes());
        let q = Zeroizing::new(q.modulus().to_be_bytes());
        let mut b = TlvBuilder::new();
        b.put(Tag::new(0x01), strip_zeros(&p));
        b.put(Tag::new(0x02), strip_zeros(&q));
        Ok(SimKey {
            algorithm,
            secret: Zeroizing::new(b.finish()),
            rsa: Some(Box::new(key)),
        })
    }

    /// True when `dp`, `dq` and `qinv` (IMPORT KEY's 03, 04, 05) are this RSA key's CRT
    /// values for its `p` and `q` in their order.
    pub(crate) fn crt_matches(&self, dp: &[u8], dq: &[u8], qinv: &[u8]) -> bool {
        let Some(key) = self.rsa.as_deref() else {
            return false;
        };
        let same = |a: &BoxedUint, b: &[u8]| {
            let a = Zeroizing::new(a.to_be_bytes());
            crate::mgmt::ct_eq(strip_zeros(&a), strip_zeros(b))
        };
        match (
            key.dp(),
            key.dq(),
            key.crt_coefficient().map(Zeroizing::new),
        ) {
            (Some(x), Some(y), Some(z)) => same(x, dp) & same(y, dq) & same(&z, qinv),
            _ => false,
        }
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
            rsa: None,
        }
    }

    /// An X25519 key from its secret.
    pub fn x25519(secret: [u8; 32]) -> SimKey {
        SimKey {
            algorithm: AlgorithmId::X25519,
            secret: Zeroizing::new(secret.to_vec()),
            rsa: None,
        }
    }

    /// A fresh random key of `algorithm` (RSA with exponent 65537; RSA 4096 takes seconds).
    ///
    /// # Errors
    /// `BadParameter` for an algorithm the simulator does not generate.
    pub fn generate(algorithm: AlgorithmId) -> Result<SimKey> {
        if let Some(KeyType::Rsa(bits)) = algorithm.key_type() {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, usize::from(bits))
                .map_err(|_| Error::communication("RSA key generation failed"))?;
            return Self::from_rsa(key);
        }
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

    /// The secret bytes (for the simulator's state file; `01 p 02 q` for RSA). Never log
    /// them.
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
            _ => {
                let key = self.rsa.as_deref().ok_or_else(bad)?;
                let key_type = self.algorithm.key_type().ok_or_else(bad)?;
                let raw = rsa_public_key_der(&key.n_bytes(), &key.e_bytes());
                return Ok(PublicKey { key_type, raw });
            }
        };
        Ok(PublicKey { key_type, raw })
    }

    /// The raw RSA private-key operation (RSASP1 / RSADP, RFC 8017 §5) on a block of the
    /// modulus's length, blinded and checked: the host did the padding. Longer or shorter
    /// blocks, and blocks not below the modulus, are refused.
    fn rsa_private(
        key: &rsa::PrivateKey,
        input: &[u8],
    ) -> core::result::Result<Zeroizing<Vec<u8>>, StatusWord> {
        let bad = StatusWord::INCORRECT_DATA;
        let k = key.size();
        if input.len() != k {
            return Err(bad);
        }
        let c = BoxedUint::from_be_slice(input, key.n_bits_precision()).map_err(|_| bad)?;
        let m = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut getrandom::SysRng), &c)
            .map(Zeroizing::new)
            .map_err(|_| bad)?;
        let bytes = Zeroizing::new(m.to_be_bytes());
        let value = strip_zeros(&bytes);
        let mut out = Zeroizing::new(vec![0u8; k.saturating_sub(value.len())]);
        out.extend_from_slice(value);
        if out.len() != k {
            return Err(bad);
        }
        Ok(out)
    }

    /// The GENERAL AUTHENTICATE private key operation on `input`: ECDSA over a digest of the
    /// field size (shorter is left-padded, longer refused), DER-encoded; Ed25519 over the
    /// message; the raw RSA operation on a modulus-sized block (signature or decryption, the
    /// host pads and unpads). X25519 keys do not sign.
    pub(crate) fn sign(
        &self,
        input: &[u8],
    ) -> core::result::Result<Zeroizing<Vec<u8>>, StatusWord> {
        if let Some(key) = self.rsa.as_deref() {
            return Self::rsa_private(key, input);
        }
        self.sign_curve(input).map(Zeroizing::new)
    }

    fn sign_curve(&self, input: &[u8]) -> core::result::Result<Vec<u8>, StatusWord> {
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
