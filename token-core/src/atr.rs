//! The answer to reset (ISO 7816-3 §8) and the historical bytes it carries (ISO 7816-4 §8.1.1).
//!
//! [`Atr::parse`] checks the structure (TS, T0, the interface-byte groups, K historical bytes,
//! TCK when a protocol other than T=0 is offered) and keeps the raw bytes. From the historical
//! bytes it reads the COMPACT-TLV records and the card capabilities that decide whether
//! [`SmartCard`](crate::SmartCard) chains commands or uses extended length.
//!
//! ```
//! use token_core::{Atr, Protocol};
//!
//! // A YubiKey 5 NFC.
//! let atr = Atr::parse(&[
//!     0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0,
//!     0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
//! ])
//! .unwrap();
//! assert_eq!(atr.protocols(), [Protocol::T1]);
//! assert!(atr.supports_extended_length());
//! ```

use core::fmt;

use crate::apdu::Hex;
use crate::error::{Error, Result};
use crate::tlv::{CompactTlv, Reader};

/// A transmission protocol type T, as the low nibble of a TDi byte gives it (ISO 7816-3 §8.2.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// T=0, character protocol.
    pub const T0: Self = Self(0);
    /// T=1, block protocol.
    pub const T1: Self = Self(1);
    /// T=15: not a protocol, announces global interface bytes.
    pub const T15: Self = Self(15);
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T={}", self.0)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T={}", self.0)
    }
}

/// One group of interface bytes TAi, TBi, TCi, TDi; each is present or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceGroup {
    /// TAi.
    pub ta: Option<u8>,
    /// TBi.
    pub tb: Option<u8>,
    /// TCi.
    pub tc: Option<u8>,
    /// TDi: the next group's presence bits (high nibble) and a protocol (low nibble).
    pub td: Option<u8>,
}

/// A parsed answer to reset, holding its raw bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Atr {
    raw: Vec<u8>,
    groups: Vec<InterfaceGroup>,
    protocols: Vec<Protocol>,
    historical_start: usize,
    historical_len: usize,
    tck: Option<u8>,
}

/// Category indicator: COMPACT-TLV records, status indicator (if any) as the last record.
const CATEGORY_TLV: u8 = 0x80;
/// Category indicator: COMPACT-TLV records followed by a 3-byte status indicator.
const CATEGORY_TLV_STATUS: u8 = 0x00;
/// COMPACT-TLV tag of the card capabilities (ISO 7816-4 §8.1.1.2.7).
const TAG_CARD_CAPABILITIES: u8 = 0x7;

impl Atr {
    /// Parses an ATR.
    ///
    /// # Errors
    /// `CorruptedData` if TS is neither 3B nor 3F, the bytes end before T0, an interface
    /// byte, a historical byte or a required TCK, bytes follow the ATR, or TCK is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Atr> {
        let cut = || Error::corrupted("ATR cut short");
        let mut r = Reader::new(bytes);
        let ts = r.u8().ok_or_else(cut)?;
        if ts != 0x3B && ts != 0x3F {
            return Err(Error::corrupted("ATR: TS is neither 3B nor 3F"));
        }
        let t0 = r.u8().ok_or_else(cut)?;
        let k = usize::from(t0 & 0x0F);
        let mut y = t0 >> 4;
        let mut groups = Vec::new();
        let mut protocols = Vec::new();
        loop {
            let mut g = InterfaceGroup::default();
            let mut read = |bit: u8| -> Result<Option<u8>> {
                if y & bit != 0 {
                    r.u8().map(Some).ok_or_else(cut)
                } else {
                    Ok(None)
                }
            };
            g.ta = read(0x1)?;
            g.tb = read(0x2)?;
            g.tc = read(0x4)?;
            g.td = read(0x8)?;
            groups.push(g);
            let Some(td) = g.td else { break };
            let p = Protocol(td & 0x0F);
            if !protocols.contains(&p) {
                protocols.push(p);
            }
            y = td >> 4;
        }
        if protocols.is_empty() {
            // ISO 7816-3 §8.2.3: without TD1 the only offer is T=0.
            protocols.push(Protocol::T0);
        }
        let historical_start = bytes.len() - r.remaining();
        r.take(k).ok_or_else(cut)?;
        let tck = if protocols.iter().any(|&p| p != Protocol::T0) {
            let tck = r.u8().ok_or_else(cut)?;
            let sum = bytes.iter().skip(1).fold(0u8, |acc, b| acc ^ b);
            if sum != 0 {
                return Err(Error::corrupted("ATR: wrong TCK"));
            }
            Some(tck)
        } else {
            None
        };
        if !r.is_empty() {
            return Err(Error::corrupted("ATR: bytes after the ATR"));
        }
        Ok(Atr {
            raw: bytes.to_vec(),
            groups,
            protocols,
            historical_start,
            historical_len: k,
            tck,
        })
    }

    /// The raw bytes, TS to TCK.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// TS: 3B for direct convention, 3F for inverse.
    pub fn ts(&self) -> u8 {
        self.raw.first().copied().unwrap_or(0x3B)
    }

    /// T0: presence bits of the first group (high nibble) and the number of historical bytes.
    pub fn t0(&self) -> u8 {
        self.raw.get(1).copied().unwrap_or(0)
    }

    /// The interface-byte groups, from TA1..TD1 on. The first group is always there, possibly
    /// empty; group i+1 is there when TDi is.
    pub fn interface_groups(&self) -> &[InterfaceGroup] {
        &self.groups
    }

    /// The protocols offered, in the order the TDi bytes name them, without repeats; T=0 alone
    /// when there is no TD1. T=15 appears when global interface bytes were announced.
    pub fn protocols(&self) -> &[Protocol] {
        &self.protocols
    }

    /// The historical bytes (at most 15).
    pub fn historical_bytes(&self) -> &[u8] {
        self.raw
            .get(self.historical_start..)
            .and_then(|h| h.get(..self.historical_len))
            .unwrap_or(&[])
    }

    /// The check byte TCK, present when a protocol other than T=0 is offered.
    pub fn tck(&self) -> Option<u8> {
        self.tck
    }

    /// The COMPACT-TLV records of the historical bytes, for category indicators 80 (records,
    /// the status indicator being tag 8 if present) and 00 (records, then a 3-byte status
    /// indicator that is not returned). Other categories have no records: the list is empty.
    ///
    /// # Errors
    /// `CorruptedData` if the records are malformed.
    pub fn historical_records(&self) -> Result<Vec<CompactTlv<'_>>> {
        let hist = self.historical_bytes();
        let records = match hist.split_first() {
            Some((&CATEGORY_TLV, rest)) => rest,
            Some((&CATEGORY_TLV_STATUS, rest)) => rest
                .len()
                .checked_sub(3)
                .and_then(|n| rest.get(..n))
                .ok_or_else(|| Error::corrupted("ATR: status indicator missing"))?,
            _ => return Ok(Vec::new()),
        };
        CompactTlv::iter(records).collect()
    }

    /// The value of the card capabilities record (tag 7, ISO 7816-4 §8.1.1.2.7): up to three
    /// software function tables (selection methods, data coding, chaining and lengths).
    pub fn card_capabilities(&self) -> Option<&[u8]> {
        self.historical_records()
            .ok()?
            .into_iter()
            .find(|r| r.tag == TAG_CARD_CAPABILITIES)
            .map(|r| r.value)
    }

    fn third_function_table(&self) -> u8 {
        self.card_capabilities()
            .and_then(|c| c.get(2).copied())
            .unwrap_or(0)
    }

    /// True when the card capabilities say the card accepts command chaining (third software
    /// function table, bit 8).
    pub fn supports_command_chaining(&self) -> bool {
        self.third_function_table() & 0x80 != 0
    }

    /// True when the card capabilities say the card accepts extended Lc and Le fields (third
    /// software function table, bit 7).
    pub fn supports_extended_length(&self) -> bool {
        self.third_function_table() & 0x40 != 0
    }
}

impl TryFrom<&[u8]> for Atr {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes)
    }
}

impl fmt::Debug for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atr({})", Hex(&self.raw))
    }
}

impl fmt::Display for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex(&self.raw).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    const YUBIKEY_5_NFC: &str =
        "3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40";

    #[test]
    fn yubikey_5_nfc() {
        let bytes = hex(YUBIKEY_5_NFC);
        let atr = Atr::parse(&bytes).unwrap();
        assert_eq!(atr.as_bytes(), &bytes[..]);
        assert_eq!(atr.ts(), 0x3B);
        assert_eq!(atr.t0(), 0xFD);
        assert_eq!(
            atr.interface_groups(),
            [
                InterfaceGroup {
                    ta: Some(0x13),
                    tb: Some(0x00),
                    tc: Some(0x00),
                    td: Some(0x81)
                },
                InterfaceGroup {
                    td: Some(0x31),
                    ..Default::default()
                },
                InterfaceGroup {
                    ta: Some(0xFE),
                    tb: Some(0x15),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(atr.protocols(), [Protocol::T1]);
        assert_eq!(atr.tck(), Some(0x40));
        assert_eq!(
            atr.historical_bytes(),
            hex("80 73 C0 21 C0 57 59 75 62 69 4B 65 79")
        );
        let recs = atr.historical_records().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].value, b"YubiKey");
        assert_eq!(atr.card_capabilities(), Some(&[0xC0, 0x21, 0xC0][..]));
        assert!(atr.supports_command_chaining());
        assert!(atr.supports_extended_length());
        assert_eq!(atr.to_string(), YUBIKEY_5_NFC);
    }

    #[test]
    fn wrong_tck_is_corrupted_data() {
        let mut bytes = hex(YUBIKEY_5_NFC);
        *bytes.last_mut().unwrap() ^= 1;
        assert_eq!(
            Atr::parse(&bytes).unwrap_err().code(),
            ErrorCode::CorruptedData
        );
        // Missing TCK.
        bytes.pop();
        assert_eq!(
            Atr::parse(&bytes).unwrap_err().code(),
            ErrorCode::CorruptedData
        );
    }

    #[test]
    fn t0_only_card_has_no_tck() {
        // TS, T0 = 0x12 (TB1, 2 historical bytes), TB1 = 00, historical 80 00... (T=0 only).
        let atr = Atr::parse(&hex("3B 12 00 80 01")).unwrap();
        assert_eq!(atr.protocols(), [Protocol::T0]);
        assert_eq!(atr.tck(), None);
        assert_eq!(atr.historical_bytes(), [0x80, 0x01]);
        assert!(!atr.supports_extended_length());
        // A byte after a T=0 ATR is not a TCK.
        assert!(Atr::parse(&hex("3B 12 00 80 01 93")).is_err());
    }

    #[test]
    fn dual_protocol_and_global_bytes() {
        // TD1 = 80 (T=0, TD2 follows), TD2 = 11 (T=1, TA3 follows): T=1 makes TCK required.
        let mut bytes = hex("3B 80 80 11 FE");
        let x = bytes.iter().skip(1).fold(0, |a, b| a ^ b);
        bytes.push(x);
        let atr = Atr::parse(&bytes).unwrap();
        assert_eq!(atr.protocols(), [Protocol::T0, Protocol::T1]);
        assert_eq!(atr.interface_groups().len(), 3);
        assert_eq!(atr.interface_groups()[2].ta, Some(0xFE));

        // TD1 = 81 (T=1, TD2 follows), TD2 = 1F (T=15, TA3 follows).
        let mut bytes = hex("3B 80 81 1F C3");
        let x = bytes.iter().skip(1).fold(0, |a, b| a ^ b);
        bytes.push(x);
        let atr = Atr::parse(&bytes).unwrap();
        assert_eq!(atr.protocols(), [Protocol::T1, Protocol::T15]);
    }

    #[test]
    fn malformed() {
        for bad in ["", "3A 00", "3B", "3B 10", "3B 02 80", "3F 80"] {
            assert_eq!(
                Atr::parse(&hex(bad)).unwrap_err().code(),
                ErrorCode::CorruptedData,
                "{bad}"
            );
        }
        // Category 00 without room for the status indicator.
        let atr = Atr::parse(&hex("3B 02 00 11")).unwrap();
        assert!(atr.historical_records().is_err());
        // Category 00: records then the status indicator.
        let atr = Atr::parse(&hex("3B 08 00 73 00 00 80 00 90 00")).unwrap();
        let recs = atr.historical_records().unwrap();
        assert_eq!(recs.len(), 1);
        assert!(atr.supports_command_chaining());
        assert!(!atr.supports_extended_length());
    }
}
