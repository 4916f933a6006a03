//! The token model: identifiers, key types and algorithms, items (keys, certificates).

use core::fmt;
use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::cert::SubjectPublicKeyInfo;
use crate::error::{Error, Result};
use crate::tlv::Tlv;

/// A token's identifier: `<driver-id>:<instance>`, stable across re-insertion of the same
/// token (for a PIV card, its CHUID GUID or serial; for a soft token, its store UUID).
///
/// It plays the part of CryptoTokenKit's token ID (`kSecAttrTokenID`): the keychain index tags
/// every item with it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(Arc<str>);

impl TokenId {
    /// Builds `driver:instance`.
    ///
    /// # Errors
    /// `BadParameter` if `driver` is empty or contains `:`, or `instance` is empty, or either
    /// holds whitespace or control characters.
    pub fn new(driver: &str, instance: &str) -> Result<Self> {
        let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad(driver) || driver.contains(':') || bad(instance) {
            return Err(Error::bad_parameter(
                "token ID parts must be non-empty, without spaces",
            ));
        }
        Ok(Self(format!("{driver}:{instance}").into()))
    }

    /// Parses the `driver:instance` form.
    ///
    /// # Errors
    /// `BadParameter` if there is no `:` or a part is empty.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((d, i)) => Self::new(d, i),
            None => Err(Error::bad_parameter(
                "a token ID has the form driver:instance",
            )),
        }
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The driver part, before the first `:`.
    pub fn driver(&self) -> &str {
        self.0.split_once(':').map_or(&*self.0, |(d, _)| d)
    }

    /// The instance part, after the first `:`.
    pub fn instance(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, i)| i)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for TokenId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// An object's identifier inside its token, chosen by the driver (a PIV slot, an OpenPGP key
/// reference, a soft token's record ID). Opaque to everyone else.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(Arc<[u8]>);

impl ObjectId {
    /// Wraps the driver's bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(bytes.as_ref()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The type of a key pair, with its size where sizes vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// NIST P-256 (secp256r1), for ECDSA and ECDH.
    EcP256,
    /// NIST P-384 (secp384r1), for ECDSA and ECDH.
    EcP384,
    /// Ed25519, for EdDSA signatures.
    Ed25519,
    /// X25519 (Curve25519), for key agreement.
    X25519,
    /// RSA with this modulus size in bits (2048 to 4096 for new keys; 1024 read only).
    Rsa(u16),
}

impl KeyType {
    /// The key size in bits, as `kSecAttrKeySizeInBits` reports it.
    pub fn size_bits(self) -> u32 {
        match self {
            Self::EcP256 | Self::Ed25519 | Self::X25519 => 256,
            Self::EcP384 => 384,
            Self::Rsa(bits) => u32::from(bits),
        }
    }

    /// A short lowercase name: `p256`, `p384`, `ed25519`, `x25519`, `rsa2048`.
    pub fn name(self) -> String {
        match self {
            Self::EcP256 => "p256".into(),
            Self::EcP384 => "p384".into(),
            Self::Ed25519 => "ed25519".into(),
            Self::X25519 => "x25519".into(),
            Self::Rsa(bits) => format!("rsa{bits}"),
        }
    }

    /// The usages a key of this type can have at most.
    pub fn possible_usage(self) -> KeyUsage {
        match self {
            Self::EcP256 | Self::EcP384 => KeyUsage::SIGN | KeyUsage::DERIVE,
            Self::Ed25519 => KeyUsage::SIGN,
            Self::X25519 => KeyUsage::DERIVE,
            Self::Rsa(_) => KeyUsage::SIGN | KeyUsage::DECRYPT,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl core::str::FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "secp256r1" | "prime256v1" => Self::EcP256,
            "p384" | "p-384" | "secp384r1" => Self::EcP384,
            "ed25519" => Self::Ed25519,
            "x25519" | "cv25519" => Self::X25519,
            "rsa2048" => Self::Rsa(2048),
            "rsa3072" => Self::Rsa(3072),
            "rsa4096" => Self::Rsa(4096),
            _ => return Err(Error::bad_parameter("unknown key type")),
        })
    }
}

/// A hash function named by a signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    /// SHA-1 (legacy; verification of old signatures only).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// A signature algorithm, in the sense of `SecKeyAlgorithm`: what the caller hands in (a
/// message or a digest) and what comes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// ECDSA over the hash of the message; the signature is DER (`ECDSA-Sig-Value`).
    EcdsaMessage(HashAlg),
    /// ECDSA over a digest the caller computed (its length must match the hash); DER output.
    EcdsaDigest(HashAlg),
    /// Ed25519 (pure EdDSA) over the message; 64-byte signature.
    Ed25519,
    /// RSA PKCS#1 v1.5 over the hash of the message.
    RsaPkcs1v15Message(HashAlg),
    /// RSA PKCS#1 v1.5 over a digest the caller computed.
    RsaPkcs1v15Digest(HashAlg),
    /// RSA-PSS over the hash of the message, MGF1 with the same hash, salt as long as the hash.
    RsaPssMessage(HashAlg),
    /// RSA-PSS over a digest the caller computed.
    RsaPssDigest(HashAlg),
}

impl SignatureAlgorithm {
    /// True when a key of `key_type` can make this kind of signature.
    pub fn fits(self, key_type: KeyType) -> bool {
        match self {
            Self::EcdsaMessage(_) | Self::EcdsaDigest(_) => {
                matches!(key_type, KeyType::EcP256 | KeyType::EcP384)
            }
            Self::Ed25519 => key_type == KeyType::Ed25519,
            Self::RsaPkcs1v15Message(_)
            | Self::RsaPkcs1v15Digest(_)
            | Self::RsaPssMessage(_)
            | Self::RsaPssDigest(_) => matches!(key_type, KeyType::Rsa(_)),
        }
    }
}

/// A decryption algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecryptAlgorithm {
    /// RSA with PKCS#1 v1.5 padding, removed by the driver or the card.
    RsaPkcs1v15,
    /// RSA-OAEP with this hash for the label and MGF1.
    RsaOaep(HashAlg),
    /// Raw RSA: the caller removes the padding.
    RsaRaw,
}

/// What an operation on a key is, as CryptoTokenKit's `TKTokenOperation` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Reading an item's data.
    ReadData,
    /// A signature.
    Sign(SignatureAlgorithm),
    /// A decryption.
    Decrypt(DecryptAlgorithm),
    /// A key agreement (ECDH, X25519).
    KeyExchange,
}

/// The usages a key allows: sign, decrypt, derive (key agreement).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyUsage(u8);

impl KeyUsage {
    /// No usage.
    pub const NONE: Self = Self(0);
    /// Signatures (`kSecAttrCanSign`).
    pub const SIGN: Self = Self(1);
    /// Decryption (`kSecAttrCanDecrypt`).
    pub const DECRYPT: Self = Self(2);
    /// Key agreement (`kSecAttrCanDerive`).
    pub const DERIVE: Self = Self(4);

    /// True when every usage of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when no usage is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw bits (sign 1, decrypt 2, derive 4).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 7)
    }
}

impl core::ops::BitOr for KeyUsage {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for KeyUsage {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUsage({self})")
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.contains(Self::SIGN) {
            parts.push("sign");
        }
        if self.contains(Self::DECRYPT) {
            parts.push("decrypt");
        }
        if self.contains(Self::DERIVE) {
            parts.push("derive");
        }
        if parts.is_empty() {
            parts.push("none");
        }
        f.write_str(&parts.join(","))
    }
}

/// What an operation on an item requires, as a `TKTokenKeychainItem` constraint says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Constraint {
    /// Always allowed, no authentication.
    Always,
    /// Never allowed.
    Never,
    /// Allowed once the user PIN was verified in this session.
    Pin,
    /// Allowed only with a PIN verified immediately before each operation (PIV "PIN always",
    /// OpenPGP signature PIN not forced to stay valid).
    PinAlways,
    /// Needs the user's touch on the device as well as the PIN where one is set.
    Touch,
}

/// A public key as the token reports it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    /// Its type.
    pub key_type: KeyType,
    /// The raw key: the uncompressed point `04 || X || Y` for EC keys, the 32 bytes for
    /// Ed25519 and X25519, the DER `RSAPublicKey` (PKCS#1) for RSA.
    pub raw: Vec<u8>,
}

impl PublicKey {
    /// The key ID CryptoTokenKit and the keychain use (`kSecAttrApplicationLabel`): SHA-1 of
    /// the raw public key as defined on [`PublicKey::raw`].
    pub fn key_id(&self) -> [u8; 20] {
        let digest = Sha1::digest(&self.raw);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest);
        out
    }
}

impl PublicKey {
    /// The key as a DER `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7), as `openssl pkey -pubin`
    /// reads it: id-ecPublicKey with the curve for EC keys (RFC 5480), the RFC 8410 OIDs for
    /// Ed25519 and X25519, rsaEncryption with NULL parameters for RSA.
    pub fn to_spki_der(&self) -> Vec<u8> {
        type Spki<'a> = SubjectPublicKeyInfo<'a>;
        let curve = |oid: &[u8]| {
            let mut p = vec![0x06, oid.len() as u8];
            p.extend_from_slice(oid);
            p
        };
        match self.key_type {
            KeyType::EcP256 => Spki::encode(
                Spki::OID_EC_PUBLIC_KEY,
                Some(&curve(Spki::OID_P256)),
                &self.raw,
            ),
            KeyType::EcP384 => Spki::encode(
                Spki::OID_EC_PUBLIC_KEY,
                Some(&curve(Spki::OID_P384)),
                &self.raw,
            ),
            KeyType::Ed25519 => Spki::encode(Spki::OID_ED25519, None, &self.raw),
            KeyType::X25519 => Spki::encode(Spki::OID_X25519, None, &self.raw),
            KeyType::Rsa(_) => {
                Spki::encode(Spki::OID_RSA_ENCRYPTION, Some(&[0x05, 0x00]), &self.raw)
            }
        }
    }

    /// The key as a PEM `PUBLIC KEY` block.
    pub fn to_spki_pem(&self) -> String {
        crate::cert::der_to_pem("PUBLIC KEY", &self.to_spki_der())
    }

    /// Reads a public key from a `SubjectPublicKeyInfo` (of a certificate, say).
    ///
    /// # Errors
    /// `NotImplemented` for an algorithm or curve tokenkit does not know; `CorruptedData` for
    /// a key of the wrong length or an RSA key that does not parse.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self> {
        type Spki<'a> = SubjectPublicKeyInfo<'a>;
        let raw = spki.public_key.to_vec();
        let (key_type, len) = if spki.algorithm_oid == Spki::OID_EC_PUBLIC_KEY {
            let curve = spki
                .parameters
                .and_then(|p| p.get(2..))
                .ok_or_else(|| Error::corrupted("EC key without a named curve"))?;
            if curve == Spki::OID_P256 {
                (KeyType::EcP256, Some(65))
            } else if curve == Spki::OID_P384 {
                (KeyType::EcP384, Some(97))
            } else {
                return Err(Error::not_implemented("EC curve not supported"));
            }
        } else if spki.algorithm_oid == Spki::OID_ED25519 {
            (KeyType::Ed25519, Some(32))
        } else if spki.algorithm_oid == Spki::OID_X25519 {
            (KeyType::X25519, Some(32))
        } else if spki.algorithm_oid == Spki::OID_RSA_ENCRYPTION {
            (KeyType::Rsa(rsa_modulus_bits(&raw)?), None)
        } else {
            return Err(Error::not_implemented("public key algorithm not supported"));
        };
        if len.is_some_and(|l| l != raw.len()) {
            return Err(Error::corrupted("public key of the wrong length"));
        }
        Ok(Self { key_type, raw })
    }
}

/// The modulus size in bits of a DER `RSAPublicKey { modulus, publicExponent }`.
fn rsa_modulus_bits(der: &[u8]) -> Result<u16> {
    let seq = Tlv::parse_exact(der)?;
    let modulus = seq
        .children()
        .next()
        .ok_or_else(|| Error::corrupted("RSA key without a modulus"))??;
    let digits = modulus.value;
    let skip = digits.iter().take_while(|&&b| b == 0).count();
    let significant = digits.get(skip..).unwrap_or(&[]);
    let bits = match significant.first() {
        Some(&top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    u16::try_from(bits).map_err(|_| Error::corrupted("RSA modulus too long"))
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {} bytes)", self.key_type, self.raw.len())
    }
}

/// A key held by a token (the counterpart of `TKTokenKeychainKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyItem {
    /// Its identifier inside the token.
    pub object_id: ObjectId,
    /// A human label (`kSecAttrLabel`).
    pub label: String,
    /// The key type and size.
    pub key_type: KeyType,
    /// What the key may be used for.
    pub usage: KeyUsage,
    /// The public half, when the token reports it (most do; some cards only through a
    /// certificate).
    pub public_key: Option<PublicKey>,
    /// SHA-1 of the public key ([`PublicKey::key_id`]); empty when the public key is unknown.
    pub key_id: Vec<u8>,
    /// What signing, decrypting or agreeing needs.
    pub constraint: Constraint,
    /// The key can stand for the user at login (`isSuitableForLogin`).
    pub suitable_for_login: bool,
}

impl KeyItem {
    /// A key item whose key ID is computed from `public_key`.
    pub fn new(
        object_id: ObjectId,
        label: impl Into<String>,
        public_key: PublicKey,
        usage: KeyUsage,
        constraint: Constraint,
    ) -> Self {
        Self {
            object_id,
            label: label.into(),
            key_type: public_key.key_type,
            usage,
            key_id: public_key.key_id().to_vec(),
            public_key: Some(public_key),
            constraint,
            suitable_for_login: false,
        }
    }
}

/// A certificate held by a token (the counterpart of `TKTokenKeychainCertificate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateItem {
    /// Its identifier inside the token.
    pub object_id: ObjectId,
    /// A human label; by default the subject's common name.
    pub label: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// An item a token holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// A key (private key with its public half).
    Key(KeyItem),
    /// A certificate.
    Certificate(CertificateItem),
}

impl Item {
    /// The item's identifier inside its token.
    pub fn object_id(&self) -> &ObjectId {
        match self {
            Self::Key(k) => &k.object_id,
            Self::Certificate(c) => &c.object_id,
        }
    }

    /// The item's label.
    pub fn label(&self) -> &str {
        match self {
            Self::Key(k) => &k.label,
            Self::Certificate(c) => &c.label,
        }
    }

    /// The item's class.
    pub fn class(&self) -> ItemClass {
        match self {
            Self::Key(_) => ItemClass::Key,
            Self::Certificate(_) => ItemClass::Certificate,
        }
    }
}

/// The class of an item as the keychain names them (`kSecClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ItemClass {
    /// A key.
    Key,
    /// A certificate.
    Certificate,
    /// A certificate together with the key on the same token that matches its public key.
    Identity,
}

impl ItemClass {
    /// `key`, `cert` or `identity`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Certificate => "cert",
            Self::Identity => "identity",
        }
    }
}

impl core::str::FromStr for ItemClass {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "key" | "keys" => Self::Key,
            "cert" | "certificate" | "certs" | "certificates" => Self::Certificate,
            "identity" | "identities" => Self::Identity,
            _ => return Err(Error::bad_parameter("item class is key, cert or identity")),
        })
    }
}

/// Which PIN (reference data) an operation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PinKind {
    /// The user PIN (PIV PIN, OpenPGP PW1, FIDO2 clientPIN, soft token PIN).
    User,
    /// The unblocking code (PIV PUK, OpenPGP resetting code, soft token PUK).
    Unblock,
    /// The administrator's PIN (OpenPGP PW3, a security officer PIN).
    Admin,
}

impl PinKind {
    /// `PIN`, `PUK` or `admin PIN`.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "PIN",
            Self::Unblock => "PUK",
            Self::Admin => "admin PIN",
        }
    }
}

/// A PIN or other secret the user types. Zeroized on drop; its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(zeroize::Zeroizing<Vec<u8>>);

impl Pin {
    /// Wraps bytes (ASCII digits for most cards).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(zeroize::Zeroizing::new(bytes.into()))
    }

    /// The secret bytes. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty PIN.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Pin {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// The state of one PIN on a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinStatus {
    /// Tries left before blocking, where the token tells.
    pub retries_left: Option<u8>,
    /// True if this session already verified it (and the token still considers it verified).
    pub verified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_parse_and_reject_bad_forms() {
        let id = TokenId::parse("piv:0123456789").expect("valid");
        assert_eq!(id.driver(), "piv");
        assert_eq!(id.instance(), "0123456789");
        assert_eq!(id.to_string(), "piv:0123456789");
        // The instance may itself contain colons (e.g. a reader-scoped instance).
        assert_eq!(TokenId::parse("x:a:b").expect("valid").instance(), "a:b");
        for bad in ["", "piv", ":x", "piv:", "p iv:1", "piv:1 2"] {
            assert!(TokenId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_id_is_sha1_of_the_raw_public_key() {
        // SHA-1("abc") from FIPS 180 examples.
        let pk = PublicKey {
            key_type: KeyType::Ed25519,
            raw: b"abc".to_vec(),
        };
        assert_eq!(
            pk.key_id().to_vec(),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
    }

    #[test]
    fn spki_round_trips_and_matches_the_fixture() {
        let der = include_bytes!("../tests/data/p256-selfsigned.spki.der");
        let spki = SubjectPublicKeyInfo::parse(der).unwrap();
        let pk = PublicKey::from_spki(&spki).unwrap();
        assert_eq!(pk.key_type, KeyType::EcP256);
        assert_eq!(pk.to_spki_der(), der.to_vec());
        for (kt, len) in [
            (KeyType::Ed25519, 32),
            (KeyType::X25519, 32),
            (KeyType::EcP384, 97),
        ] {
            let pk = PublicKey {
                key_type: kt,
                raw: vec![4; len],
            };
            let der = pk.to_spki_der();
            let back = PublicKey::from_spki(&SubjectPublicKeyInfo::parse(&der).unwrap()).unwrap();
            assert_eq!(back, pk);
        }
    }

    #[test]
    fn rsa_modulus_size_is_read_from_the_key() {
        // RSAPublicKey { modulus 0x00 C0 followed by 255 bytes, exponent 65537 }: 2048 bits.
        let mut modulus = vec![0x00, 0xC0];
        modulus.extend(std::iter::repeat_n(0x11, 255));
        let mut b = crate::tlv::TlvBuilder::new();
        b.constructed(crate::tlv::Tag::new(0x30), |b| {
            b.put(crate::tlv::Tag::new(0x02), &modulus);
            b.put(crate::tlv::Tag::new(0x02), &[1, 0, 1]);
        });
        let der = b.finish();
        assert_eq!(rsa_modulus_bits(&der).unwrap(), 2048);
    }

    #[test]
    fn pin_debug_never_shows_the_secret() {
        let pin = Pin::from("123456");
        assert_eq!(format!("{pin:?}"), "Pin(***)");
    }

    #[test]
    fn usage_flags_compose() {
        let u = KeyUsage::SIGN | KeyUsage::DERIVE;
        assert!(u.contains(KeyUsage::SIGN));
        assert!(!u.contains(KeyUsage::DECRYPT));
        assert_eq!(u.to_string(), "sign,derive");
        assert!(SignatureAlgorithm::Ed25519.fits(KeyType::Ed25519));
        assert!(!SignatureAlgorithm::Ed25519.fits(KeyType::EcP256));
    }
}
