//! Protocol values of OpenPGP card 3.4: the three key references and the algorithm
//! attributes the card supports.

use core::fmt;

use token_core::{Error, KeyType, KeyUsage, Tag};

/// The application identifier prefix of OpenPGP cards (OpenPGP card 3.4 §4.2.1): RID
/// D2 76 00 01 24 and PIX application 01. SELECT uses these six bytes.
pub const AID_PREFIX: [u8; 6] = [0xD2, 0x76, 0x00, 0x01, 0x24, 0x01];

/// One of the card's three key slots (OpenPGP card 3.4 §7.2.14, control reference templates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyRef {
    /// The signature key (CRT B6), used by PSO:COMPUTE DIGITAL SIGNATURE.
    Sig,
    /// The decryption key (CRT B8), used by PSO:DECIPHER.
    Dec,
    /// The authentication key (CRT A4), used by INTERNAL AUTHENTICATE.
    Aut,
}

impl KeyRef {
    /// All three, in the card's order.
    pub const ALL: [KeyRef; 3] = [KeyRef::Sig, KeyRef::Dec, KeyRef::Aut];

    /// The slot name used in [`token_core::KeySpec::slot`]: `sig`, `dec` or `aut`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sig => "sig",
            Self::Dec => "dec",
            Self::Aut => "aut",
        }
    }

    /// The item label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sig => "Signature key",
            Self::Dec => "Decryption key",
            Self::Aut => "Authentication key",
        }
    }

    /// The control reference template tag (B6, B8, A4).
    pub fn crt(self) -> u8 {
        match self {
            Self::Sig => 0xB6,
            Self::Dec => 0xB8,
            Self::Aut => 0xA4,
        }
    }

    /// The key from a control reference template tag.
    pub fn from_crt(tag: u8) -> Option<KeyRef> {
        Self::ALL.into_iter().find(|k| k.crt() == tag)
    }

    /// The index 0..3 (sig, dec, aut).
    pub fn index(self) -> usize {
        match self {
            Self::Sig => 0,
            Self::Dec => 1,
            Self::Aut => 2,
        }
    }

    /// The algorithm attributes data object (C1, C2, C3).
    pub fn attributes_tag(self) -> u16 {
        0xC1 + self.index() as u16
    }

    /// The fingerprint data object (C7, C8, C9).
    pub fn fingerprint_tag(self) -> u16 {
        0xC7 + self.index() as u16
    }

    /// The generation time data object (CE, CF, D0).
    pub fn time_tag(self) -> u16 {
        0xCE + self.index() as u16
    }

    /// The usages tokenkit gives a key of this slot and type.
    pub fn usage(self, key_type: KeyType) -> KeyUsage {
        match self {
            Self::Sig | Self::Aut => KeyUsage::SIGN,
            Self::Dec if matches!(key_type, KeyType::Rsa(_)) => KeyUsage::DECRYPT,
            Self::Dec => KeyUsage::DERIVE,
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for KeyRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "sig" | "b6" | "1" | "signature" => Ok(Self::Sig),
            "dec" | "b8" | "2" | "decryption" | "enc" => Ok(Self::Dec),
            "aut" | "a4" | "3" | "authentication" | "auth" => Ok(Self::Aut),
            _ => Err(Error::bad_parameter(
                "an OpenPGP key slot is sig, dec or aut",
            )),
        }
    }
}

const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0xDA, 0x47, 0x0F, 0x01];
const OID_CV25519: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x97, 0x55, 0x01, 0x05, 0x01];

/// RFC 4880 / RFC 6637 public-key algorithm IDs as used in algorithm attributes.
const ALG_ECDH: u8 = 0x12;
const ALG_ECDSA: u8 = 0x13;
const ALG_EDDSA: u8 = 0x16;

/// An algorithm the driver and simulator know (OpenPGP card 3.4 §4.4.3.9). RSA is not
/// implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// ECDH on P-256.
    EcdhP256,
    /// ECDH on P-384.
    EcdhP384,
    /// EdDSA on Ed25519.
    Ed25519,
    /// ECDH on Curve25519 (X25519).
    X25519,
}

impl Algorithm {
    /// Parses algorithm attributes (C1/C2/C3): the algorithm ID, the curve OID, and an optional
    /// import-format byte.
    pub fn from_attributes(attr: &[u8]) -> Option<Algorithm> {
        let (&id, rest) = attr.split_first()?;
        let oid_is = |oid: &[u8]| rest == oid || rest.strip_suffix(&[0xFF]) == Some(oid);
        Some(match id {
            ALG_ECDSA if oid_is(OID_P256) => Self::EcdsaP256,
            ALG_ECDSA if oid_is(OID_P384) => Self::EcdsaP384,
            ALG_ECDH if oid_is(OID_P256) => Self::EcdhP256,
            ALG_ECDH if oid_is(OID_P384) => Self::EcdhP384,
            ALG_ECDH if oid_is(OID_CV25519) => Self::X25519,
            ALG_EDDSA if oid_is(OID_ED25519) => Self::Ed25519,
            _ => return None,
        })
    }

    /// The algorithm attributes bytes.
    pub fn attributes(self) -> Vec<u8> {
        let (id, oid) = match self {
            Self::EcdsaP256 => (ALG_ECDSA, OID_P256),
            Self::EcdsaP384 => (ALG_ECDSA, OID_P384),
            Self::EcdhP256 => (ALG_ECDH, OID_P256),
            Self::EcdhP384 => (ALG_ECDH, OID_P384),
            Self::Ed25519 => (ALG_EDDSA, OID_ED25519),
            Self::X25519 => (ALG_ECDH, OID_CV25519),
        };
        let mut v = vec![id];
        v.extend_from_slice(oid);
        v
    }

    /// The token-core key type.
    pub fn key_type(self) -> KeyType {
        match self {
            Self::EcdsaP256 | Self::EcdhP256 => KeyType::EcP256,
            Self::EcdsaP384 | Self::EcdhP384 => KeyType::EcP384,
            Self::Ed25519 => KeyType::Ed25519,
            Self::X25519 => KeyType::X25519,
        }
    }

    /// The algorithm a slot uses for a key type: ECDH for the decryption key, ECDSA or EdDSA
    /// for the others.
    ///
    /// # Errors
    /// `BadParameter` for a type the slot cannot hold (X25519 outside `dec`, Ed25519 in `dec`,
    /// RSA anywhere).
    pub fn for_slot(slot: KeyRef, key_type: KeyType) -> Result<Algorithm, Error> {
        Ok(match (slot, key_type) {
            (KeyRef::Dec, KeyType::EcP256) => Self::EcdhP256,
            (KeyRef::Dec, KeyType::EcP384) => Self::EcdhP384,
            (KeyRef::Dec, KeyType::X25519) => Self::X25519,
            (KeyRef::Sig | KeyRef::Aut, KeyType::EcP256) => Self::EcdsaP256,
            (KeyRef::Sig | KeyRef::Aut, KeyType::EcP384) => Self::EcdsaP384,
            (KeyRef::Sig | KeyRef::Aut, KeyType::Ed25519) => Self::Ed25519,
            _ => {
                return Err(Error::bad_parameter(
                    "OpenPGP slots take P-256, P-384 or Ed25519 (sig, aut) and P-256, P-384 or \
                     X25519 (dec); RSA is not implemented",
                ))
            }
        })
    }

    /// The length of the private key (scalar, seed or secret).
    pub fn private_len(self) -> usize {
        match self {
            Self::EcdsaP384 | Self::EcdhP384 => 48,
            _ => 32,
        }
    }

    /// True for the algorithms that sign.
    pub fn signs(self) -> bool {
        matches!(self, Self::EcdsaP256 | Self::EcdsaP384 | Self::Ed25519)
    }
}

/// A data object tag as used in GET DATA / PUT DATA P1-P2.
pub(crate) fn tag(v: u16) -> Tag {
    Tag::new(u32::from(v))
}
