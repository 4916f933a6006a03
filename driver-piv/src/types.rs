//! PIV protocol values as types: key slots, algorithms, PIN and touch policies, instructions,
//! and the table of data objects (SP 800-73-4 Part 1 §3, Table 3; YubiKey extensions).

use core::fmt;
use core::str::FromStr;

use token_core::{Constraint, Error, KeyType, KeyUsage, ObjectId, Result};

/// The PIV application identifier (SP 800-73-4 Part 1 §2.2): the NIST RID `A0 00 00 03 08`
/// then the PIX `00 00 10 00 01 00`.
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// NIST's registered application provider identifier, the first five bytes of [`PIV_AID`].
/// Tools (yubico-piv-tool) SELECT with it alone.
pub const PIV_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];

/// The default YubiKey management key (3DES before firmware 5.7, AES-192 from 5.7 on, same
/// bytes).
pub const DEFAULT_MANAGEMENT_KEY: [u8; 24] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

/// Instruction bytes of PIV (SP 800-73-4 Part 2 §3) and of the YubiKey extensions.
// The driver sends some; the simulator answers all.
#[cfg_attr(not(feature = "simulator"), allow(dead_code))]
pub(crate) mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_DATA: u8 = 0xCB;
    pub const PUT_DATA: u8 = 0xDB;
    pub const VERIFY: u8 = 0x20;
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
    pub const RESET_RETRY_COUNTER: u8 = 0x2C;
    pub const GENERAL_AUTHENTICATE: u8 = 0x87;
    pub const GENERATE_ASYMMETRIC_KEY_PAIR: u8 = 0x47;
    pub const GET_RESPONSE: u8 = 0xC0;
    // YubiKey extensions.
    pub const GET_METADATA: u8 = 0xF7;
    pub const GET_SERIAL: u8 = 0xF8;
    pub const ATTEST: u8 = 0xF9;
    pub const SET_PIN_RETRIES: u8 = 0xFA;
    pub const RESET: u8 = 0xFB;
    pub const GET_VERSION: u8 = 0xFD;
    pub const IMPORT_KEY: u8 = 0xFE;
    pub const SET_MANAGEMENT_KEY: u8 = 0xFF;
}

/// Key references that are not key slots (SP 800-73-4 Part 1 Table 4b).
pub(crate) mod keyref {
    /// The PIV card application PIN.
    pub const PIN: u8 = 0x80;
    /// The PIN unblocking key.
    pub const PUK: u8 = 0x81;
    /// The card management key (symmetric).
    pub const MANAGEMENT: u8 = 0x9B;
}

/// Tags of the GENERAL AUTHENTICATE dynamic authentication template (SP 800-73-4 Part 2
/// Table 7) and of other templates.
pub(crate) mod tag {
    pub const DYNAMIC_AUTH: u32 = 0x7C;
    pub const WITNESS: u32 = 0x80;
    pub const CHALLENGE: u32 = 0x81;
    pub const RESPONSE: u32 = 0x82;
    pub const EXPONENTIATION: u32 = 0x85;
    pub const DATA: u32 = 0x53;
    pub const TAG_LIST: u32 = 0x5C;
    pub const CERTIFICATE: u32 = 0x70;
    pub const CERT_INFO: u32 = 0x71;
    pub const ERROR_DETECTION: u32 = 0xFE;
    pub const PUBLIC_KEY_TEMPLATE: u32 = 0x7F49;
    pub const RSA_MODULUS: u32 = 0x81;
    pub const RSA_EXPONENT: u32 = 0x82;
    pub const EC_POINT: u32 = 0x86;
    pub const KEY_TEMPLATE: u32 = 0xAC;
    pub const ALGORITHM: u32 = 0x80;
    pub const PIN_POLICY: u32 = 0xAA;
    pub const TOUCH_POLICY: u32 = 0xAB;
    pub const CHUID_FASCN: u32 = 0x30;
    pub const CHUID_GUID: u32 = 0x34;
    pub const CHUID_EXPIRATION: u32 = 0x35;
    pub const CHUID_SIGNATURE: u32 = 0x3E;
}

/// A PIV key slot holding an asymmetric key: 9A, 9C, 9D, 9E or a retired key management slot
/// 82 to 95 (SP 800-73-4 Part 1 §3.1.1-3.1.4, §3.3.2).
///
/// As an [`ObjectId`] a slot is its single key-reference byte (`[0x9A]`); both the key item and
/// the certificate item of a slot carry it. Its text form is the lower-case hex PIV tools use
/// (`9a`), see [`SlotId::from_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u8);

impl SlotId {
    /// 9A, PIV Authentication: PIN once per session.
    pub const AUTHENTICATION: Self = Self(0x9A);
    /// 9C, Digital Signature: PIN before every use.
    pub const SIGNATURE: Self = Self(0x9C);
    /// 9D, Key Management: PIN once per session.
    pub const KEY_MANAGEMENT: Self = Self(0x9D);
    /// 9E, Card Authentication: no PIN.
    pub const CARD_AUTHENTICATION: Self = Self(0x9E);

    /// Every key slot in the order cards are read: 9A, 9C, 9D, 9E, then 82 to 95.
    pub fn all() -> impl Iterator<Item = SlotId> {
        [0x9A, 0x9C, 0x9D, 0x9E]
            .into_iter()
            .chain(0x82..=0x95)
            .map(SlotId)
    }

    /// The retired key management slot `n` (1 to 20: 82 to 95).
    pub fn retired(n: u8) -> Option<SlotId> {
        (1..=20).contains(&n).then(|| SlotId(0x81 + n))
    }

    /// The key reference byte.
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// The slot as an item's [`ObjectId`]: its one byte.
    pub fn object_id(self) -> ObjectId {
        ObjectId::new([self.0])
    }

    /// The slot an [`ObjectId`] names, if it is one byte naming a key slot.
    pub fn from_object_id(id: &ObjectId) -> Option<SlotId> {
        match id.as_bytes() {
            [b] => SlotId::try_from(*b).ok(),
            _ => None,
        }
    }

    /// True for the retired key management slots 82 to 95.
    pub fn is_retired(self) -> bool {
        (0x82..=0x95).contains(&self.0)
    }

    /// The tag of the data object holding the slot's certificate (SP 800-73-4 Part 1 Table 3):
    /// 9A 5FC105, 9C 5FC10A, 9D 5FC10B, 9E 5FC101, 82..95 5FC10D..5FC120.
    pub fn certificate_tag(self) -> u32 {
        match self.0 {
            0x9A => 0x5F_C105,
            0x9C => 0x5F_C10A,
            0x9D => 0x5F_C10B,
            0x9E => 0x5F_C101,
            n => 0x5F_C10D + u32::from(n - 0x82),
        }
    }

    /// The key's label, as SP 800-73-4 and OpenSC name the slots.
    pub fn label(self) -> String {
        match self.0 {
            0x9A => "PIV Authentication".into(),
            0x9C => "Digital Signature".into(),
            0x9D => "Key Management".into(),
            0x9E => "Card Authentication".into(),
            n => format!("Retired Key Management {}", n - 0x81),
        }
    }

    /// The PIN policy a slot has when the card does not say (YubiKey defaults, SP 800-73-4
    /// Part 1 §3.2.2): 9C always, 9E never, the others once.
    pub fn default_pin_policy(self) -> PinPolicy {
        match self.0 {
            0x9C => PinPolicy::Always,
            0x9E => PinPolicy::Never,
            _ => PinPolicy::Once,
        }
    }

    /// What the slot is for: signatures for 9A, 9C and 9E; decryption and key agreement for
    /// 9D and the retired slots; 9A also decrypts and agrees (TLS client keys do).
    pub fn purpose(self) -> KeyUsage {
        match self.0 {
            0x9A => KeyUsage::SIGN | KeyUsage::DECRYPT | KeyUsage::DERIVE,
            0x9C | 0x9E => KeyUsage::SIGN,
            _ => KeyUsage::DECRYPT | KeyUsage::DERIVE,
        }
    }

    /// The usages a key of `key_type` in this slot gets: what the type allows within the
    /// slot's purpose, or what the type allows when the two do not meet (an Ed25519 key in 9D
    /// still signs).
    pub fn usage_for(self, key_type: KeyType) -> KeyUsage {
        let possible = key_type.possible_usage();
        let both = KeyUsage::from_bits(possible.bits() & self.purpose().bits());
        if both.is_empty() {
            possible
        } else {
            both
        }
    }
}

impl TryFrom<u8> for SlotId {
    type Error = Error;

    fn try_from(b: u8) -> Result<Self> {
        match b {
            0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95 => Ok(Self(b)),
            _ => Err(Error::bad_parameter("not a PIV key slot")),
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}

impl FromStr for SlotId {
    type Err = Error;

    /// Reads a slot as PIV tools write it: hex `9a`, `9C`, `0x9d`, `82` .. `95`; or by name:
    /// `authentication`, `signature`, `key-management`, `card-authentication`, `retired1` ..
    /// `retired20`.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let named = match lower.as_str() {
            "authentication" | "piv-authentication" | "auth" => Some(Self::AUTHENTICATION),
            "signature" | "digital-signature" | "sign" => Some(Self::SIGNATURE),
            "key-management" | "keymgmt" | "encryption" => Some(Self::KEY_MANAGEMENT),
            "card-authentication" | "card-auth" => Some(Self::CARD_AUTHENTICATION),
            _ => None,
        };
        if let Some(slot) = named {
            return Ok(slot);
        }
        if let Some(n) = lower.strip_prefix("retired") {
            let n: u8 = n
                .trim_start_matches(['-', '_', ' '])
                .parse()
                .map_err(|_| Error::bad_parameter("retired slots are retired1 to retired20"))?;
            return Self::retired(n)
                .ok_or_else(|| Error::bad_parameter("retired slots are retired1 to retired20"));
        }
        let hex = lower.strip_prefix("0x").unwrap_or(&lower);
        if hex.len() != 2 {
            return Err(Error::bad_parameter(
                "a PIV slot is two hex digits, like 9a",
            ));
        }
        let b = u8::from_str_radix(hex, 16)
            .map_err(|_| Error::bad_parameter("a PIV slot is two hex digits, like 9a"))?;
        Self::try_from(b)
    }
}

/// A PIV algorithm identifier (SP 800-78-4 Table 6-2; YubiKey additions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlgorithmId(pub u8);

impl AlgorithmId {
    /// 03, Triple DES (three-key), for the management key.
    pub const TDES: Self = Self(0x03);
    /// 08, AES-128, for the management key.
    pub const AES128: Self = Self(0x08);
    /// 0A, AES-192, for the management key (the YubiKey 5.7 default).
    pub const AES192: Self = Self(0x0A);
    /// 0C, AES-256, for the management key.
    pub const AES256: Self = Self(0x0C);
    /// 06, RSA 1024.
    pub const RSA1024: Self = Self(0x06);
    /// 07, RSA 2048.
    pub const RSA2048: Self = Self(0x07);
    /// 05, RSA 3072 (YubiKey 5.7).
    pub const RSA3072: Self = Self(0x05);
    /// 16, RSA 4096 (YubiKey 5.7).
    pub const RSA4096: Self = Self(0x16);
    /// 11, ECC P-256.
    pub const ECC_P256: Self = Self(0x11);
    /// 14, ECC P-384.
    pub const ECC_P384: Self = Self(0x14);
    /// E0, Ed25519 (YubiKey 5.7).
    pub const ED25519: Self = Self(0xE0);
    /// E1, X25519 (YubiKey 5.7).
    pub const X25519: Self = Self(0xE1);

    /// The asymmetric key type this algorithm names, if it names one.
    pub fn key_type(self) -> Option<KeyType> {
        Some(match self {
            Self::RSA1024 => KeyType::Rsa(1024),
            Self::RSA2048 => KeyType::Rsa(2048),
            Self::RSA3072 => KeyType::Rsa(3072),
            Self::RSA4096 => KeyType::Rsa(4096),
            Self::ECC_P256 => KeyType::EcP256,
            Self::ECC_P384 => KeyType::EcP384,
            Self::ED25519 => KeyType::Ed25519,
            Self::X25519 => KeyType::X25519,
            _ => return None,
        })
    }

    /// The algorithm of an asymmetric key type.
    ///
    /// # Errors
    /// `BadParameter` for a type PIV has no identifier for.
    pub fn for_key_type(key_type: KeyType) -> Result<Self> {
        Ok(match key_type {
            KeyType::Rsa(1024) => Self::RSA1024,
            KeyType::Rsa(2048) => Self::RSA2048,
            KeyType::Rsa(3072) => Self::RSA3072,
            KeyType::Rsa(4096) => Self::RSA4096,
            KeyType::EcP256 => Self::ECC_P256,
            KeyType::EcP384 => Self::ECC_P384,
            KeyType::Ed25519 => Self::ED25519,
            KeyType::X25519 => Self::X25519,
            _ => {
                return Err(Error::bad_parameter(
                    "PIV has no algorithm for this key type",
                ))
            }
        })
    }

    /// True for the symmetric (management key) algorithms.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            Self::TDES | Self::AES128 | Self::AES192 | Self::AES256
        )
    }
}

impl fmt::Display for AlgorithmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}", self.0)
    }
}

/// How often a key needs the PIN (YubiKey PIN policy; `Default` lets the slot decide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinPolicy {
    /// 00: the slot's default.
    Default,
    /// 01: no PIN.
    Never,
    /// 02: PIN once per session.
    Once,
    /// 03: PIN before every use.
    Always,
    /// 04: biometric match once (YubiKey Bio), else PIN once.
    MatchOnce,
    /// 05: biometric match always.
    MatchAlways,
}

impl PinPolicy {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Self::Default => 0,
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
            Self::MatchOnce => 4,
            Self::MatchAlways => 5,
        }
    }

    /// From the byte on the wire.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Default,
            1 => Self::Never,
            2 => Self::Once,
            3 => Self::Always,
            4 => Self::MatchOnce,
            5 => Self::MatchAlways,
            _ => return None,
        })
    }

    /// The item constraint this policy gives a key in `slot`.
    pub fn constraint(self, slot: SlotId) -> Constraint {
        match self {
            Self::Default => slot.default_pin_policy().constraint(slot),
            Self::Never => Constraint::Always,
            Self::Once | Self::MatchOnce => Constraint::Pin,
            Self::Always | Self::MatchAlways => Constraint::PinAlways,
        }
    }
}

/// Whether a key needs a touch of the YubiKey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TouchPolicy {
    /// 00: the slot's default (never).
    Default,
    /// 01: no touch.
    Never,
    /// 02: a touch for every use.
    Always,
    /// 03: a touch, cached for 15 seconds.
    Cached,
}

impl TouchPolicy {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Self::Default => 0,
            Self::Never => 1,
            Self::Always => 2,
            Self::Cached => 3,
        }
    }

    /// From the byte on the wire.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Default,
            1 => Self::Never,
            2 => Self::Always,
            3 => Self::Cached,
            _ => return None,
        })
    }
}

/// Who may read a data object (SP 800-73-4 Part 1 Table 3, "Access Rule for Read").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAccess {
    /// Anyone.
    Always,
    /// After the PIN was verified.
    Pin,
}

/// One PIV data object of SP 800-73-4 Part 1 Table 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataObject {
    /// The BER-TLV tag naming it in GET DATA / PUT DATA (`5FC102`).
    pub tag: u32,
    /// Its name in the standard.
    pub name: &'static str,
    /// The largest content the standard allows, in bytes.
    pub max_len: usize,
    /// Who may read it.
    pub read: ReadAccess,
}

const fn object(tag: u32, name: &'static str, max_len: usize, read: ReadAccess) -> DataObject {
    DataObject {
        tag,
        name,
        max_len,
        read,
    }
}

/// The PIV data objects (SP 800-73-4 Part 1 Table 3), with the container sizes of the standard.
pub const DATA_OBJECTS: &[DataObject] = &[
    object(
        0x5F_C107,
        "Card Capability Container",
        266,
        ReadAccess::Always,
    ),
    object(
        0x5F_C102,
        "Card Holder Unique Identifier",
        3395,
        ReadAccess::Always,
    ),
    object(
        0x5F_C105,
        "X.509 Certificate for PIV Authentication",
        1905,
        ReadAccess::Always,
    ),
    object(0x5F_C103, "Cardholder Fingerprints", 4006, ReadAccess::Pin),
    object(0x5F_C106, "Security Object", 1336, ReadAccess::Always),
    object(0x5F_C108, "Cardholder Facial Image", 12710, ReadAccess::Pin),
    object(
        0x5F_C101,
        "X.509 Certificate for Card Authentication",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C10A,
        "X.509 Certificate for Digital Signature",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C10B,
        "X.509 Certificate for Key Management",
        1905,
        ReadAccess::Always,
    ),
    object(0x5F_C109, "Printed Information", 245, ReadAccess::Pin),
    object(0x7E, "Discovery Object", 20, ReadAccess::Always),
    object(0x5F_C10C, "Key History Object", 128, ReadAccess::Always),
    object(
        0x5F_C10D,
        "Retired X.509 Certificate for Key Management 1",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C10E,
        "Retired X.509 Certificate for Key Management 2",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C10F,
        "Retired X.509 Certificate for Key Management 3",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C110,
        "Retired X.509 Certificate for Key Management 4",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C111,
        "Retired X.509 Certificate for Key Management 5",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C112,
        "Retired X.509 Certificate for Key Management 6",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C113,
        "Retired X.509 Certificate for Key Management 7",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C114,
        "Retired X.509 Certificate for Key Management 8",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C115,
        "Retired X.509 Certificate for Key Management 9",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C116,
        "Retired X.509 Certificate for Key Management 10",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C117,
        "Retired X.509 Certificate for Key Management 11",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C118,
        "Retired X.509 Certificate for Key Management 12",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C119,
        "Retired X.509 Certificate for Key Management 13",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11A,
        "Retired X.509 Certificate for Key Management 14",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11B,
        "Retired X.509 Certificate for Key Management 15",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11C,
        "Retired X.509 Certificate for Key Management 16",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11D,
        "Retired X.509 Certificate for Key Management 17",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11E,
        "Retired X.509 Certificate for Key Management 18",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C11F,
        "Retired X.509 Certificate for Key Management 19",
        1905,
        ReadAccess::Always,
    ),
    object(
        0x5F_C120,
        "Retired X.509 Certificate for Key Management 20",
        1905,
        ReadAccess::Always,
    ),
    object(0x5F_C121, "Cardholder Iris Images", 7106, ReadAccess::Pin),
    object(
        0x7F61,
        "Biometric Information Templates Group Template",
        65,
        ReadAccess::Always,
    ),
    object(
        0x5F_C122,
        "Secure Messaging Certificate Signer",
        2471,
        ReadAccess::Always,
    ),
    object(
        0x5F_C123,
        "Pairing Code Reference Data Container",
        12,
        ReadAccess::Pin,
    ),
];

/// Well-known data object tags.
pub mod objects {
    /// Card Capability Container.
    pub const CCC: u32 = 0x5F_C107;
    /// Card Holder Unique Identifier.
    pub const CHUID: u32 = 0x5F_C102;
    /// Discovery Object (read with `5C 01 7E`; the answer is the 7E template itself).
    pub const DISCOVERY: u32 = 0x7E;
    /// Key History Object.
    pub const KEY_HISTORY: u32 = 0x5F_C10C;
    /// Printed Information (YubiKey tools keep a PIN-protected management key here).
    pub const PRINTED_INFORMATION: u32 = 0x5F_C109;
    /// YubiKey attestation certificate (`5FFF01`).
    pub const YUBIKEY_ATTESTATION: u32 = 0x5F_FF01;
    /// YubiKey admin data (`5FFF00`).
    pub const YUBIKEY_ADMIN: u32 = 0x5F_FF00;
}

/// The entry of [`DATA_OBJECTS`] for `tag`.
pub fn data_object(tag: u32) -> Option<&'static DataObject> {
    DATA_OBJECTS.iter().find(|o| o.tag == tag)
}

/// The bytes of a data object tag as they go in a `5C` tag list (`5F C1 02`, `7E`).
pub(crate) fn tag_bytes(tag: u32) -> Vec<u8> {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    bytes.get(skip..).unwrap_or(&[]).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_read_and_print_as_piv_tools_write_them() {
        for (text, byte) in [
            ("9a", 0x9A),
            ("9C", 0x9C),
            ("0x9d", 0x9D),
            ("9e", 0x9E),
            ("82", 0x82),
            ("95", 0x95),
            ("signature", 0x9C),
            ("retired20", 0x95),
            ("retired-1", 0x82),
        ] {
            let slot: SlotId = text.parse().unwrap();
            assert_eq!(slot.byte(), byte, "{text}");
        }
        for bad in ["9b", "80", "96", "", "9", "9a0", "retired21", "zz"] {
            assert!(bad.parse::<SlotId>().is_err(), "{bad}");
        }
        assert_eq!(SlotId::AUTHENTICATION.to_string(), "9a");
        assert_eq!(SlotId::all().count(), 24);
    }

    #[test]
    fn certificate_tags_follow_table_3() {
        assert_eq!(SlotId::AUTHENTICATION.certificate_tag(), 0x5FC105);
        assert_eq!(SlotId::SIGNATURE.certificate_tag(), 0x5FC10A);
        assert_eq!(SlotId::KEY_MANAGEMENT.certificate_tag(), 0x5FC10B);
        assert_eq!(SlotId::CARD_AUTHENTICATION.certificate_tag(), 0x5FC101);
        assert_eq!(SlotId::retired(1).unwrap().certificate_tag(), 0x5FC10D);
        assert_eq!(SlotId::retired(20).unwrap().certificate_tag(), 0x5FC120);
        for slot in SlotId::all() {
            assert!(data_object(slot.certificate_tag()).is_some(), "{slot}");
        }
        assert_eq!(tag_bytes(0x5FC102), [0x5F, 0xC1, 0x02]);
        assert_eq!(tag_bytes(0x7E), [0x7E]);
        assert_eq!(tag_bytes(0x7F61), [0x7F, 0x61]);
    }

    #[test]
    fn usages_and_constraints() {
        let s = SlotId::SIGNATURE;
        assert_eq!(s.usage_for(KeyType::EcP256), KeyUsage::SIGN);
        assert_eq!(
            PinPolicy::Default.constraint(s),
            token_core::Constraint::PinAlways
        );
        let km = SlotId::KEY_MANAGEMENT;
        assert_eq!(km.usage_for(KeyType::EcP256), KeyUsage::DERIVE);
        assert_eq!(km.usage_for(KeyType::Ed25519), KeyUsage::SIGN);
        assert_eq!(
            PinPolicy::Default.constraint(SlotId::CARD_AUTHENTICATION),
            token_core::Constraint::Always
        );
    }
}
