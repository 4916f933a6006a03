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
const ALG_RSA: u8 = 0x01;
const ALG_ECDH: u8 = 0x12;
const ALG_ECDSA: u8 = 0x13;
const ALG_EDDSA: u8 = 0x16;

/// The RSA modulus sizes the driver and simulator use.
pub const RSA_SIZES: [u16; 3] = [2048, 3072, 4096];

/// How an RSA private key is imported (the last byte of RSA algorithm attributes, OpenPGP
/// card 3.4 §4.4.3.9): which parts follow e, p and q in the extended header list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RsaImportFormat {
    /// 00: e, p, q.
    Standard,
    /// 01: e, p, q and the modulus n.
    StandardWithModulus,
    /// 02: e, p, q, 1/q mod p, d mod (p-1), d mod (q-1).
    Crt,
    /// 03: the CRT parts and the modulus n.
    CrtWithModulus,
}

impl RsaImportFormat {
    /// The format from its byte.
    pub fn from_byte(b: u8) -> Option<RsaImportFormat> {
        Some(match b {
            0 => Self::Standard,
            1 => Self::StandardWithModulus,
            2 => Self::Crt,
            3 => Self::CrtWithModulus,
            _ => return None,
        })
    }

    /// The format's byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Standard => 0,
            Self::StandardWithModulus => 1,
            Self::Crt => 2,
            Self::CrtWithModulus => 3,
        }
    }

    /// True when the CRT parts (94 1/q mod p, 95 d mod (p-1), 96 d mod (q-1)) are imported.
    pub fn has_crt(self) -> bool {
        matches!(self, Self::Crt | Self::CrtWithModulus)
    }

    /// True when the modulus (97) is imported.
    pub fn has_modulus(self) -> bool {
        matches!(self, Self::StandardWithModulus | Self::CrtWithModulus)
    }
}

/// An algorithm the driver and simulator know (OpenPGP card 3.4 §4.4.3.9).
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
    /// RSA (attributes 01 | modulus bits | exponent bits | import format): PKCS#1 v1.5
    /// signatures in `sig` and `aut`, PKCS#1 v1.5 decryption in `dec`.
    Rsa {
        /// The modulus size in bits: 2048, 3072 or 4096.
        bits: u16,
        /// The size of the public exponent field in bits: 32 (0x20) as the specification
        /// suggests, 17 (0x11) as some cards report.
        exponent_bits: u16,
        /// How the card takes an imported private key.
        format: RsaImportFormat,
    },
}

impl Algorithm {
    /// RSA with this modulus size, a 32-bit exponent field and the standard import format
    /// (the attributes GnuPG writes).
    pub fn rsa(bits: u16) -> Algorithm {
        Self::Rsa {
            bits,
            exponent_bits: 0x20,
            format: RsaImportFormat::Standard,
        }
    }

    /// Parses algorithm attributes (C1/C2/C3): the algorithm ID, then the curve OID and an
    /// optional import-format byte (ECC), or the modulus size, exponent size and import format
    /// (RSA, 2048 to 4096 bits in steps of 1024, exponent field of 17 to 32 bits).
    pub fn from_attributes(attr: &[u8]) -> Option<Algorithm> {
        let (&id, rest) = attr.split_first()?;
        let oid_is = |oid: &[u8]| rest == oid || rest.strip_suffix(&[0xFF]) == Some(oid);
        Some(match id {
            ALG_RSA => {
                let (bits, exponent_bits, format) = match *rest {
                    [n1, n2, e1, e2] => (
                        u16::from_be_bytes([n1, n2]),
                        u16::from_be_bytes([e1, e2]),
                        0,
                    ),
                    [n1, n2, e1, e2, f] => (
                        u16::from_be_bytes([n1, n2]),
                        u16::from_be_bytes([e1, e2]),
                        f,
                    ),
                    _ => return None,
                };
                if !RSA_SIZES.contains(&bits) || !(17..=32).contains(&exponent_bits) {
                    return None;
                }
                Self::Rsa {
                    bits,
                    exponent_bits,
                    format: RsaImportFormat::from_byte(format)?,
                }
            }
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
            Self::Rsa {
                bits,
                exponent_bits,
                format,
            } => {
                let mut v = vec![ALG_RSA];
                v.extend_from_slice(&bits.to_be_bytes());
                v.extend_from_slice(&exponent_bits.to_be_bytes());
                v.push(format.byte());
                return v;
            }
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
            Self::Rsa { bits, .. } => KeyType::Rsa(bits),
        }
    }

    /// The algorithm a slot uses for a key type: ECDH for the decryption key, ECDSA or EdDSA
    /// for the others, RSA ([`Algorithm::rsa`]) in any slot.
    ///
    /// # Errors
    /// `BadParameter` for a type the slot cannot hold (X25519 outside `dec`, Ed25519 in `dec`,
    /// RSA of another size than 2048, 3072 or 4096 bits).
    pub fn for_slot(slot: KeyRef, key_type: KeyType) -> Result<Algorithm, Error> {
        Ok(match (slot, key_type) {
            (_, KeyType::Rsa(bits)) if RSA_SIZES.contains(&bits) => Self::rsa(bits),
            (KeyRef::Dec, KeyType::EcP256) => Self::EcdhP256,
            (KeyRef::Dec, KeyType::EcP384) => Self::EcdhP384,
            (KeyRef::Dec, KeyType::X25519) => Self::X25519,
            (KeyRef::Sig | KeyRef::Aut, KeyType::EcP256) => Self::EcdsaP256,
            (KeyRef::Sig | KeyRef::Aut, KeyType::EcP384) => Self::EcdsaP384,
            (KeyRef::Sig | KeyRef::Aut, KeyType::Ed25519) => Self::Ed25519,
            _ => {
                return Err(Error::bad_parameter(
                    "OpenPGP slots take P-256, P-384, Ed25519 or RSA 2048/3072/4096 (sig, aut) \
                     and P-256, P-384, X25519 or RSA 2048/3072/4096 (dec)",
                ))
            }
        })
    }

    /// True when a key of this algorithm belongs in `slot`: RSA anywhere, ECDH and X25519 in
    /// `dec` only, ECDSA and EdDSA outside it.
    pub fn fits_slot(self, slot: KeyRef) -> bool {
        match self {
            Self::Rsa { .. } => true,
            _ => self.signs() != (slot == KeyRef::Dec),
        }
    }

    /// The length of an ECC private key (scalar, seed or secret); for RSA, the length of the
    /// modulus in bytes.
    pub fn private_len(self) -> usize {
        match self {
            Self::EcdsaP384 | Self::EcdhP384 => 48,
            Self::Rsa { bits, .. } => usize::from(bits) / 8,
            _ => 32,
        }
    }

    /// True for the ECC algorithms that sign (ECDSA, EdDSA). RSA signs or decrypts by its slot.
    pub fn signs(self) -> bool {
        matches!(self, Self::EcdsaP256 | Self::EcdsaP384 | Self::Ed25519)
    }

    /// True for RSA.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa { .. })
    }
}

/// A data object tag as used in GET DATA / PUT DATA P1-P2.
pub(crate) fn tag(v: u16) -> Tag {
    Tag::new(u32::from(v))
}
