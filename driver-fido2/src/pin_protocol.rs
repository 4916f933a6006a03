//! PIN/UV auth protocols one and two (CTAP 2.1 §6.5.6, §6.5.7), for both sides.
//!
//! The platform and the authenticator agree on a shared secret by ECDH on P-256
//! ([`KeyAgreementKey`], [`CoseKey`]); the secret encrypts the PIN on its way to the
//! authenticator and the pinUvAuthToken on its way back ([`PinUvAuthProtocol::encrypt`],
//! [`PinUvAuthProtocol::decrypt`]), and the token then authenticates commands
//! ([`PinUvAuthProtocol::authenticate`], checked by [`PinUvAuthProtocol::verify`]).
//!
//! | | protocol 1 | protocol 2 |
//! |---|---|---|
//! | KDF | SHA-256(Z) | HKDF-SHA-256, salt 32×00, "CTAP2 HMAC key" ‖ "CTAP2 AES key" |
//! | encryption | AES-256-CBC, zero IV | AES-256-CBC, random IV in front |
//! | authenticate | HMAC-SHA-256, first 16 bytes | HMAC-SHA-256, all 32 bytes |
//!
//! Secrets ([`SharedSecret`], padded PINs) are zeroized on drop and never printed.
//!
//! ```
//! use driver_fido2::pin_protocol::{KeyAgreementKey, PinUvAuthProtocol};
//!
//! let protocol = PinUvAuthProtocol::Two;
//! // The authenticator's key, published by clientPIN getKeyAgreement.
//! let authenticator = KeyAgreementKey::generate()?;
//! // The platform's side: its own key and the shared secret, in one step.
//! let (platform_public, platform_secret) = protocol.encapsulate(&authenticator.public())?;
//! // The authenticator derives the same secret from the platform's public key.
//! let authenticator_secret = protocol.decapsulate(&authenticator, &platform_public)?;
//!
//! let pin_hash_enc = protocol.encrypt(&platform_secret, &driver_fido2::pin_protocol::pin_hash("1234"))?;
//! let pin_hash = protocol.decrypt(&authenticator_secret, &pin_hash_enc)?;
//! assert_eq!(&pin_hash[..], &driver_fido2::pin_protocol::pin_hash("1234"));
//! # Ok::<(), token_core::Error>(())
//! ```

use std::fmt;

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use token_core::{Error, Result};
use zeroize::{Zeroize, Zeroizing};

use crate::cbor::{self, Value};

/// The smallest PIN CTAP 2.1 allows, in Unicode code points (authenticators may ask more).
pub const MIN_PIN_CODE_POINTS: usize = 4;
/// The longest PIN, in UTF-8 bytes (it is padded to 64 with at least one zero byte).
pub const MAX_PIN_BYTES: usize = 63;
/// The length of a padded PIN (`newPinEnc` encrypts this many bytes).
pub const PADDED_PIN_LEN: usize = 64;

/// A PIN/UV auth protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinUvAuthProtocol {
    /// Protocol one (CTAP 2.0's only protocol).
    One,
    /// Protocol two (CTAP 2.1; preferred where the authenticator lists it).
    Two,
}

impl PinUvAuthProtocol {
    /// Its number in `pinUvAuthProtocol` parameters and getInfo's list.
    pub fn number(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    /// The protocol with this number, if it is one of these two.
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(Self::One),
            2 => Some(Self::Two),
            _ => None,
        }
    }

    /// The length of an authenticate() result (the pinUvAuthParam).
    pub fn auth_param_len(self) -> usize {
        match self {
            Self::One => 16,
            Self::Two => 32,
        }
    }

    /// The shared secret from the ECDH result Z (the x coordinate of the shared point).
    pub fn kdf(self, z: &[u8]) -> SharedSecret {
        match self {
            Self::One => SharedSecret {
                protocol: self,
                bytes: Zeroizing::new(Sha256::digest(z).to_vec()),
            },
            Self::Two => {
                let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut bytes = Zeroizing::new(vec![0u8; 64]);
                // 32-byte outputs are always within HKDF-SHA-256's limit.
                let _ = hk.expand(b"CTAP2 HMAC key", &mut bytes[..32]);
                let _ = hk.expand(b"CTAP2 AES key", &mut bytes[32..]);
                SharedSecret {
                    protocol: self,
                    bytes,
                }
            }
        }
    }

    /// The platform's half of key agreement: a fresh key pair, ECDH with the
    /// authenticator's `peer` key, and the shared secret. Returns the platform's public key
    /// (the `keyAgreement` parameter) and the secret.
    ///
    /// # Errors
    /// `BadParameter` when `peer` is not a point on P-256; `CommunicationError` when the
    /// system random source fails.
    pub fn encapsulate(self, peer: &CoseKey) -> Result<(CoseKey, SharedSecret)> {
        let mine = KeyAgreementKey::generate()?;
        let secret = self.decapsulate(&mine, peer)?;
        Ok((mine.public(), secret))
    }

    /// The shared secret from our `key` and the other side's public key.
    ///
    /// # Errors
    /// `BadParameter` when `peer` is not a point on P-256.
    pub fn decapsulate(self, key: &KeyAgreementKey, peer: &CoseKey) -> Result<SharedSecret> {
        let peer = peer.to_public_key()?;
        let shared = p256::ecdh::diffie_hellman(key.secret.to_nonzero_scalar(), peer.as_affine());
        Ok(self.kdf(shared.raw_secret_bytes().as_slice()))
    }

    /// Encrypts `plaintext` (a multiple of 16 bytes) under the shared secret.
    ///
    /// # Errors
    /// `BadParameter` when the length is not a multiple of 16; `CommunicationError` when
    /// the random source fails (protocol two).
    pub fn encrypt(self, secret: &SharedSecret, plaintext: &[u8]) -> Result<Vec<u8>> {
        if !plaintext.len().is_multiple_of(16) {
            return Err(Error::bad_parameter(
                "PIN protocol plaintext must be a multiple of 16 bytes",
            ));
        }
        let mut iv = [0u8; 16];
        if self == Self::Two {
            getrandom::fill(&mut iv)
                .map_err(|_| Error::communication("the system random source failed"))?;
        }
        let mut out = Vec::with_capacity(plaintext.len() + 16);
        if self == Self::Two {
            out.extend_from_slice(&iv);
        }
        let cipher = aes::Aes256::new_from_slice(secret.aes_key())
            .map_err(|_| Error::bad_parameter("shared secret of the wrong length"))?;
        let mut chain = iv;
        for block in plaintext.chunks(16) {
            let mut b = aes::Block::default();
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = block[i] ^ chain[i];
            }
            cipher.encrypt_block(&mut b);
            chain.copy_from_slice(&b);
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Decrypts what [`encrypt`](Self::encrypt) made, on either side.
    ///
    /// # Errors
    /// `BadParameter` when the ciphertext's length is wrong for the protocol.
    pub fn decrypt(self, secret: &SharedSecret, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (iv, body) = match self {
            Self::One => ([0u8; 16], ciphertext),
            Self::Two => {
                let (iv, body) = ciphertext.split_at_checked(16).ok_or_else(|| {
                    Error::bad_parameter("PIN protocol 2 ciphertext shorter than its IV")
                })?;
                let mut v = [0u8; 16];
                v.copy_from_slice(iv);
                (v, body)
            }
        };
        if !body.len().is_multiple_of(16) {
            return Err(Error::bad_parameter(
                "PIN protocol ciphertext is not a multiple of 16 bytes",
            ));
        }
        let cipher = aes::Aes256::new_from_slice(secret.aes_key())
            .map_err(|_| Error::bad_parameter("shared secret of the wrong length"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(body.len()));
        let mut chain = iv;
        for block in body.chunks(16) {
            let mut b = aes::Block::try_from(block)
                .map_err(|_| Error::bad_parameter("ciphertext block"))?;
            cipher.decrypt_block(&mut b);
            for (i, byte) in b.iter().enumerate() {
                out.push(byte ^ chain[i]);
            }
            chain.copy_from_slice(block);
            b.zeroize();
        }
        Ok(out)
    }

    /// authenticate(key, message): the pinUvAuthParam over `message` with `key`, which is
    /// a pinUvAuthToken or a [`SharedSecret`]'s bytes (protocol two then uses its HMAC half).
    pub fn authenticate(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let key = match self {
            Self::Two if key.len() > 32 => &key[..32],
            _ => key,
        };
        let mut mac = match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return Vec::new(),
        };
        mac.update(message);
        let mut tag = mac.finalize().into_bytes().to_vec();
        tag.truncate(self.auth_param_len());
        tag
    }

    /// The authenticator's check of a pinUvAuthParam, in constant time.
    pub fn verify(self, key: &[u8], message: &[u8], param: &[u8]) -> bool {
        let expected = self.authenticate(key, message);
        !expected.is_empty() && ct_eq(&expected, param)
    }
}

impl fmt::Display for PinUvAuthProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PIN/UV auth protocol {}", self.number())
    }
}

/// Constant-time equality of byte strings of public length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The result of key agreement: 32 bytes (protocol one) or HMAC key ‖ AES key (two).
#[derive(Clone)]
pub struct SharedSecret {
    protocol: PinUvAuthProtocol,
    bytes: Zeroizing<Vec<u8>>,
}

impl SharedSecret {
    /// The protocol it was derived for.
    pub fn protocol(&self) -> PinUvAuthProtocol {
        self.protocol
    }

    /// All of it (the key argument of `authenticate` for setPIN and changePIN).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn aes_key(&self) -> &[u8] {
        match self.protocol {
            PinUvAuthProtocol::One => &self.bytes,
            PinUvAuthProtocol::Two => &self.bytes[32..],
        }
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret({}, ***)", self.protocol.number())
    }
}

/// A P-256 key-agreement key pair (the authenticator's, regenerated at power-up and on
/// demand, or the platform's ephemeral one).
pub struct KeyAgreementKey {
    secret: p256::SecretKey,
}

impl KeyAgreementKey {
    /// A fresh key pair from the system random source.
    ///
    /// # Errors
    /// `CommunicationError` when the random source fails.
    pub fn generate() -> Result<Self> {
        loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            getrandom::fill(scalar.as_mut())
                .map_err(|_| Error::communication("the system random source failed"))?;
            if let Ok(secret) = p256::SecretKey::from_slice(scalar.as_ref()) {
                return Ok(Self { secret });
            }
        }
    }

    /// Its public half as a COSE key.
    pub fn public(&self) -> CoseKey {
        let point = self.secret.public_key().to_sec1_bytes();
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // An uncompressed P-256 point is 04 ‖ x ‖ y.
        if point.len() == 65 {
            x.copy_from_slice(&point[1..33]);
            y.copy_from_slice(&point[33..]);
        }
        CoseKey { x, y }
    }
}

impl fmt::Debug for KeyAgreementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyAgreementKey({:?}, ***)", self.public())
    }
}

/// A P-256 public key as CTAP2 carries it for key agreement: COSE_Key
/// `{1: 2 (EC2), 3: -25 (ECDH-ES+HKDF-256), -1: 1 (P-256), -2: x, -3: y}`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CoseKey {
    /// The x coordinate, big-endian.
    pub x: [u8; 32],
    /// The y coordinate, big-endian.
    pub y: [u8; 32],
}

impl CoseKey {
    /// The COSE map, as sent in `keyAgreement` parameters and results.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (cbor::int(1), cbor::int(2)),
            (cbor::int(3), cbor::int(-25)),
            (cbor::int(-1), cbor::int(1)),
            (cbor::int(-2), Value::Bytes(self.x.to_vec())),
            (cbor::int(-3), Value::Bytes(self.y.to_vec())),
        ])
    }

    /// Reads a COSE EC2 P-256 key (the algorithm field is not checked: CTAP 2.1 says -25,
    /// but authenticators in the field send other values there).
    ///
    /// # Errors
    /// `BadParameter` when it is not an EC2 key on P-256 with 32-byte coordinates on the
    /// curve.
    pub fn from_value(value: &Value) -> Result<Self> {
        let bad = || Error::bad_parameter("keyAgreement is not a COSE EC2 P-256 key");
        let map = cbor::as_map(value).map_err(|_| bad())?;
        if cbor::integer(map, 1) != Some(2) || cbor::integer(map, -1) != Some(1) {
            return Err(bad());
        }
        let coord = |key| -> Result<[u8; 32]> {
            cbor::bytes(map, key)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(bad)
        };
        let key = CoseKey {
            x: coord(-2)?,
            y: coord(-3)?,
        };
        key.to_public_key()?;
        Ok(key)
    }

    /// The SEC1 uncompressed encoding, 04 ‖ x ‖ y.
    pub fn to_sec1(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }

    fn to_public_key(self) -> Result<p256::PublicKey> {
        p256::PublicKey::from_sec1_bytes(&self.to_sec1())
            .map_err(|_| Error::bad_parameter("keyAgreement point is not on P-256"))
    }
}

impl fmt::Debug for CoseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoseKey(x=")?;
        for b in &self.x[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// pinHash: the first 16 bytes of SHA-256 of the PIN's UTF-8 bytes.
pub fn pin_hash(pin: &str) -> [u8; 16] {
    let mut digest = Sha256::digest(pin.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    digest.as_mut_slice().zeroize();
    out
}

/// The PIN as setPIN and changePIN send it: UTF-8, zero-padded to 64 bytes.
///
/// # Errors
/// `BadParameter` when it has fewer than [`MIN_PIN_CODE_POINTS`] code points or more than
/// [`MAX_PIN_BYTES`] bytes.
pub fn pad_pin(pin: &str) -> Result<Zeroizing<[u8; PADDED_PIN_LEN]>> {
    if pin.chars().count() < MIN_PIN_CODE_POINTS {
        return Err(Error::bad_parameter(
            "a FIDO2 PIN has at least 4 characters",
        ));
    }
    if pin.len() > MAX_PIN_BYTES {
        return Err(Error::bad_parameter("a FIDO2 PIN has at most 63 bytes"));
    }
    let mut out = Zeroizing::new([0u8; PADDED_PIN_LEN]);
    out[..pin.len()].copy_from_slice(pin.as_bytes());
    Ok(out)
}

/// The authenticator's reading of a decrypted `newPinEnc`: the PIN's bytes before the
/// padding, or `None` when the padding is wrong (no zero byte, a non-zero byte after it,
/// not 64 bytes) or the PIN is not UTF-8.
pub fn unpad_pin(padded: &[u8]) -> Option<Zeroizing<String>> {
    if padded.len() != PADDED_PIN_LEN {
        return None;
    }
    let end = padded.iter().position(|b| *b == 0)?;
    if padded[end..].iter().any(|b| *b != 0) {
        return None;
    }
    let pin = std::str::from_utf8(&padded[..end]).ok()?;
    Some(Zeroizing::new(pin.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both() -> [PinUvAuthProtocol; 2] {
        [PinUvAuthProtocol::One, PinUvAuthProtocol::Two]
    }

    #[test]
    fn both_sides_agree_and_roundtrip() {
        for protocol in both() {
            let authenticator = KeyAgreementKey::generate().unwrap();
            let (platform_public, platform) =
                protocol.encapsulate(&authenticator.public()).unwrap();
            let auth = protocol
                .decapsulate(&authenticator, &platform_public)
                .unwrap();
            assert_eq!(platform.as_bytes(), auth.as_bytes());
            let padded = pad_pin("12345678").unwrap();
            let enc = protocol.encrypt(&platform, padded.as_ref()).unwrap();
            assert_eq!(
                enc.len(),
                64 + if protocol == PinUvAuthProtocol::Two {
                    16
                } else {
                    0
                }
            );
            let dec = protocol.decrypt(&auth, &enc).unwrap();
            assert_eq!(unpad_pin(&dec).unwrap().as_str(), "12345678");
            let param = protocol.authenticate(platform.as_bytes(), &enc);
            assert_eq!(param.len(), protocol.auth_param_len());
            assert!(protocol.verify(auth.as_bytes(), &enc, &param));
            let mut forged = param.clone();
            forged[0] ^= 1;
            assert!(!protocol.verify(auth.as_bytes(), &enc, &forged));
        }
    }

    #[test]
    fn protocol_one_matches_the_spec_construction() {
        // Protocol one: AES-256-CBC with a zero IV under SHA-256(Z); check one block by hand.
        let secret = PinUvAuthProtocol::One.kdf(&[7u8; 32]);
        assert_eq!(secret.as_bytes(), Sha256::digest([7u8; 32]).as_slice());
        let enc = PinUvAuthProtocol::One.encrypt(&secret, &[0u8; 16]).unwrap();
        let cipher = aes::Aes256::new_from_slice(secret.as_bytes()).unwrap();
        let mut block = aes::Block::default();
        cipher.encrypt_block(&mut block);
        assert_eq!(enc, block.to_vec());
    }

    #[test]
    fn protocol_two_uses_separate_hmac_and_aes_keys() {
        let secret = PinUvAuthProtocol::Two.kdf(&[9u8; 32]);
        let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &[9u8; 32]);
        let mut hmac_key = [0u8; 32];
        hk.expand(b"CTAP2 HMAC key", &mut hmac_key).unwrap();
        assert_eq!(&secret.as_bytes()[..32], &hmac_key);
        assert_ne!(&secret.as_bytes()[..32], &secret.as_bytes()[32..]);
        // authenticate with the whole secret = HMAC with its first half, full length.
        let tag = PinUvAuthProtocol::Two.authenticate(secret.as_bytes(), b"m");
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&hmac_key).unwrap();
        mac.update(b"m");
        assert_eq!(tag, mac.finalize().into_bytes().to_vec());
    }

    #[test]
    fn pin_rules() {
        assert!(pad_pin("123").is_err());
        assert!(pad_pin("1234").is_ok());
        assert!(pad_pin(&"x".repeat(63)).is_ok());
        assert!(pad_pin(&"x".repeat(64)).is_err());
        // Four code points, more bytes: allowed.
        assert!(pad_pin("äöüß").is_ok());
        assert_eq!(unpad_pin(&[0u8; 64]).unwrap().as_str(), "");
        let mut bad = [0u8; 64];
        bad[0] = b'1';
        bad[10] = b'2';
        assert!(unpad_pin(&bad).is_none());
        assert!(unpad_pin(&[b'1'; 64]).is_none());
    }

    #[test]
    fn cose_key_roundtrip_and_rejects_points_off_the_curve() {
        let key = KeyAgreementKey::generate().unwrap().public();
        let back =
            CoseKey::from_value(&cbor::decode(&cbor::encode(&key.to_value())).unwrap()).unwrap();
        assert_eq!(back, key);
        let mut off = key;
        off.y[31] ^= 1;
        assert!(CoseKey::from_value(&off.to_value()).is_err());
        assert!(format!("{:?}", KeyAgreementKey::generate().unwrap()).contains("***"));
    }

    proptest! {
        #[test]
        fn decrypt_and_cose_parsing_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for protocol in both() {
                let secret = protocol.kdf(&[1u8; 32]);
                let _ = protocol.decrypt(&secret, &bytes);
            }
            if let Ok(value) = cbor::decode(&bytes) {
                let _ = CoseKey::from_value(&value);
            }
            let _ = unpad_pin(&bytes);
        }
    }
}
