//! The APDU codec (ISO 7816-4 §5.1): command APDUs in short and extended form, response APDUs.
//!
//! A [`Command`] knows its four cases from what it holds: no data and no Le (case 1), Le only
//! (case 2), data only (case 3), data and Le (case 4). It encodes in the short form (Lc 1 to
//! 255, Le 1 to 256) or the extended form (Lc 1 to 65535, Le 1 to 65536), and
//! [`Command::decode`] reads every case of both forms back, for card simulators.
//!
//! Sending, with GET RESPONSE, wrong-Le resends and command chaining, is
//! [`SmartCard`](crate::SmartCard)'s job.
//!
//! ```
//! use token_core::{Command, Ins};
//!
//! // SP 800-73-4 GET DATA for the CHUID.
//! let cmd = Command::new(0x00, Ins::GET_DATA_ODD, 0x3F, 0xFF)
//!     .with_data([0x5C, 0x03, 0x5F, 0xC1, 0x02])
//!     .with_le(256);
//! let bytes = cmd.encode_short().unwrap();
//! assert_eq!(bytes, [0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00]);
//! assert_eq!(Command::decode(&bytes).unwrap(), cmd);
//! ```

use core::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::sw::StatusWord;
use crate::tlv::Reader;

/// An instruction byte (INS), with named constants for the common ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ins(pub u8);

impl Ins {
    /// 0x20 VERIFY (ISO 7816-4 §11.5.6): presents a PIN.
    pub const VERIFY: Self = Self(0x20);
    /// 0x22 MANAGE SECURITY ENVIRONMENT.
    pub const MANAGE_SECURITY_ENVIRONMENT: Self = Self(0x22);
    /// 0x24 CHANGE REFERENCE DATA: changes a PIN (old and new PIN in the data).
    pub const CHANGE_REFERENCE_DATA: Self = Self(0x24);
    /// 0x2A PERFORM SECURITY OPERATION (sign, decipher).
    pub const PERFORM_SECURITY_OPERATION: Self = Self(0x2A);
    /// 0x2C RESET RETRY COUNTER: unblocks a PIN (PUK or resetting code and new PIN in the data).
    pub const RESET_RETRY_COUNTER: Self = Self(0x2C);
    /// 0x44 ACTIVATE FILE.
    pub const ACTIVATE_FILE: Self = Self(0x44);
    /// 0x47 GENERATE ASYMMETRIC KEY PAIR.
    pub const GENERATE_ASYMMETRIC_KEY_PAIR: Self = Self(0x47);
    /// 0x84 GET CHALLENGE.
    pub const GET_CHALLENGE: Self = Self(0x84);
    /// 0x87 GENERAL AUTHENTICATE.
    pub const GENERAL_AUTHENTICATE: Self = Self(0x87);
    /// 0x88 INTERNAL AUTHENTICATE.
    pub const INTERNAL_AUTHENTICATE: Self = Self(0x88);
    /// 0xA4 SELECT.
    pub const SELECT: Self = Self(0xA4);
    /// 0xA5 SELECT DATA.
    pub const SELECT_DATA: Self = Self(0xA5);
    /// 0xB0 READ BINARY.
    pub const READ_BINARY: Self = Self(0xB0);
    /// 0xB2 READ RECORD.
    pub const READ_RECORD: Self = Self(0xB2);
    /// 0xC0 GET RESPONSE: fetches the bytes a 61xx status announced.
    pub const GET_RESPONSE: Self = Self(0xC0);
    /// 0xCA GET DATA (even INS; P1-P2 is the tag).
    pub const GET_DATA: Self = Self(0xCA);
    /// 0xCB GET DATA (odd INS; tag list in the data, as PIV uses it).
    pub const GET_DATA_ODD: Self = Self(0xCB);
    /// 0xCC GET NEXT DATA.
    pub const GET_NEXT_DATA: Self = Self(0xCC);
    /// 0xD6 UPDATE BINARY.
    pub const UPDATE_BINARY: Self = Self(0xD6);
    /// 0xDA PUT DATA (even INS; P1-P2 is the tag).
    pub const PUT_DATA: Self = Self(0xDA);
    /// 0xDB PUT DATA (odd INS): PIV data objects, OpenPGP key import with P1-P2 3FFF.
    pub const PUT_DATA_ODD: Self = Self(0xDB);
    /// 0xE6 TERMINATE DF.
    pub const TERMINATE_DF: Self = Self(0xE6);
    /// 0xFE IMPORT KEY (YubiKey PIV extension, also used by other PIV applets).
    pub const IMPORT_KEY: Self = Self(0xFE);
    /// 0xFF SET MANAGEMENT KEY (YubiKey PIV extension; the new key is in the data).
    pub const SET_MANAGEMENT_KEY: Self = Self(0xFF);
}

impl From<u8> for Ins {
    fn from(b: u8) -> Self {
        Self(b)
    }
}

impl From<Ins> for u8 {
    fn from(i: Ins) -> Self {
        i.0
    }
}

impl fmt::Debug for Ins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ins({:02X})", self.0)
    }
}

impl fmt::Display for Ins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}", self.0)
    }
}

/// Writes bytes as upper-case hex pairs separated by spaces: `00 A4 04 00`.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// A command APDU (ISO 7816-4 §5.1).
///
/// `le` is the number of response bytes expected: `None` for no Le field (cases 1 and 3),
/// `Some(n)` with n from 1 to 256 (short form) or 65536 (extended form) otherwise; 256 and
/// 65536 travel as 00 and 0000. Ask for "as much as there is" with [`Command::LE_MAX_SHORT`].
///
/// The data field is zeroized when the command is dropped, and it is redacted from `Debug`
/// output and APDU traces when the command [is sensitive](Command::is_sensitive).
///
/// Equality compares what goes over the wire; the [`Command::sensitive`] mark is not part of it.
#[derive(Clone)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: Ins,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Lc is its length), zeroized on drop.
    pub data: Zeroizing<Vec<u8>>,
    /// Expected response length (Le), if any.
    pub le: Option<usize>,
    sensitive: bool,
}

impl Command {
    /// The largest Lc of the short form.
    pub const LC_MAX_SHORT: usize = 255;
    /// The largest Le of the short form (encoded 00).
    pub const LE_MAX_SHORT: usize = 256;
    /// The largest Lc of the extended form.
    pub const LC_MAX_EXTENDED: usize = 65_535;
    /// The largest Le of the extended form (encoded 0000).
    pub const LE_MAX_EXTENDED: usize = 65_536;

    /// A case 1 command: header only. Add data and Le with [`Command::with_data`] and
    /// [`Command::with_le`].
    pub fn new(cla: u8, ins: impl Into<Ins>, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins: ins.into(),
            p1,
            p2,
            data: Zeroizing::new(Vec::new()),
            le: None,
            sensitive: false,
        }
    }

    /// Sets the data field (copied into a zeroizing buffer).
    #[must_use]
    pub fn with_data(mut self, data: impl AsRef<[u8]>) -> Self {
        self.data = Zeroizing::new(data.as_ref().to_vec());
        self
    }

    /// Sets the data field, taking the buffer (no copy left behind).
    #[must_use]
    pub fn with_data_vec(mut self, data: Zeroizing<Vec<u8>>) -> Self {
        self.data = data;
        self
    }

    /// Sets Le, the number of response bytes expected (1 to 65536; 256 is "up to 256").
    #[must_use]
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    /// Sets or clears Le.
    #[must_use]
    pub fn with_le_opt(mut self, le: Option<usize>) -> Self {
        self.le = le;
        self
    }

    /// Marks the data field as secret (a PIN, a key, a password) whatever the instruction, so
    /// traces and `Debug` show `<N bytes redacted>` instead.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// True when the data field must not be logged: VERIFY (20), CHANGE REFERENCE DATA (24),
    /// RESET RETRY COUNTER (2C), the YubiKey PIV IMPORT KEY (FE) and SET MANAGEMENT KEY (FF),
    /// PUT DATA with odd INS (DB) and P1-P2 3FFF (OpenPGP key import; this also covers PIV
    /// data objects, which errs on the safe side), OpenPGP PUT DATA of the resetting code (DA
    /// 00D3) and of the AES key (DA 00D5), and any command marked with [`Command::sensitive`].
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
            || matches!(
                (self.ins, self.p1, self.p2),
                (
                    Ins::VERIFY
                        | Ins::CHANGE_REFERENCE_DATA
                        | Ins::RESET_RETRY_COUNTER
                        | Ins::IMPORT_KEY
                        | Ins::SET_MANAGEMENT_KEY,
                    _,
                    _
                ) | (Ins::PUT_DATA_ODD, 0x3F, 0xFF)
                    | (Ins::PUT_DATA, 0x00, 0xD3 | 0xD5)
            )
    }

    /// The ISO 7816-3 case: 1 (header only), 2 (Le), 3 (data), 4 (data and Le).
    pub fn case(&self) -> u8 {
        match (self.data.is_empty(), self.le.is_some()) {
            (true, false) => 1,
            (true, true) => 2,
            (false, false) => 3,
            (false, true) => 4,
        }
    }

    /// True when the command does not fit the short form (data over 255 bytes or Le over 256).
    pub fn needs_extended(&self) -> bool {
        self.data.len() > Self::LC_MAX_SHORT || self.le.is_some_and(|le| le > Self::LE_MAX_SHORT)
    }

    /// Encodes in the short form: Lc one byte (1 to 255), Le one byte (1 to 256, 256 as 00).
    ///
    /// # Errors
    /// `BadParameter` if the data is longer than 255 bytes or Le is 0 or above 256.
    pub fn encode_short(&self) -> Result<Vec<u8>> {
        let lc = u8::try_from(self.data.len())
            .map_err(|_| Error::bad_parameter("APDU data too long for a short Lc"))?;
        let le = match self.le {
            None => None,
            // 256 wraps to 00 as the short form wants.
            Some(n @ 1..=Self::LE_MAX_SHORT) => Some((n & 0xFF) as u8),
            Some(_) => return Err(Error::bad_parameter("APDU Le out of the short range")),
        };
        let mut out = Vec::with_capacity(6 + self.data.len());
        out.extend_from_slice(&[self.cla, self.ins.0, self.p1, self.p2]);
        if lc > 0 {
            out.push(lc);
            out.extend_from_slice(&self.data);
        }
        out.extend(le);
        Ok(out)
    }

    /// Encodes in the extended form: a 00 byte, then Lc in two bytes (1 to 65535) and Le in
    /// two bytes (1 to 65536, 65536 as 0000); a case 1 command is the bare header.
    ///
    /// # Errors
    /// `BadParameter` if the data is longer than 65535 bytes or Le is 0 or above 65536.
    pub fn encode_extended(&self) -> Result<Vec<u8>> {
        let lc = u16::try_from(self.data.len())
            .map_err(|_| Error::bad_parameter("APDU data too long for an extended Lc"))?;
        let le = match self.le {
            None => None,
            // 65536 wraps to 0000 as the extended form wants.
            Some(n @ 1..=Self::LE_MAX_EXTENDED) => Some(((n & 0xFFFF) as u16).to_be_bytes()),
            Some(_) => return Err(Error::bad_parameter("APDU Le out of the extended range")),
        };
        let mut out = Vec::with_capacity(9 + self.data.len());
        out.extend_from_slice(&[self.cla, self.ins.0, self.p1, self.p2]);
        if lc > 0 || le.is_some() {
            out.push(0x00);
        }
        if lc > 0 {
            out.extend_from_slice(&lc.to_be_bytes());
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = le {
            out.extend_from_slice(&le);
        }
        Ok(out)
    }

    /// Encodes in the extended form if `extended`, else in the short form.
    ///
    /// # Errors
    /// As [`Command::encode_short`] or [`Command::encode_extended`].
    pub fn encode(&self, extended: bool) -> Result<Vec<u8>> {
        if extended {
            self.encode_extended()
        } else {
            self.encode_short()
        }
    }

    /// Reads a command APDU of any case in either form (ISO 7816-3 §12.1.3).
    ///
    /// A byte after the header that is not 00 is a short Lc (or, alone, a short Le); 00
    /// followed by two bytes is an extended Le; 00 followed by more is an extended Lc, and the
    /// total length must then match exactly.
    ///
    /// # Errors
    /// `CorruptedData` if the APDU is shorter than a header, Lc is 0000, or the length does
    /// not match what Lc announces.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        let mut r = Reader::new(bytes);
        let header = r
            .take(4)
            .ok_or_else(|| Error::corrupted("APDU shorter than its header"))?;
        let &[cla, ins, p1, p2] = header else {
            return Err(Error::corrupted("APDU header"));
        };
        let mut cmd = Command::new(cla, ins, p1, p2);
        let Some(b5) = r.u8() else {
            return Ok(cmd); // case 1
        };
        if r.is_empty() {
            // Case 2 short: Le 00 means 256.
            cmd.le = Some(if b5 == 0 { 256 } else { usize::from(b5) });
            return Ok(cmd);
        }
        let (lc, extended) = if b5 != 0 {
            (usize::from(b5), false)
        } else {
            let n = r
                .u16_be()
                .ok_or_else(|| Error::corrupted("APDU extended length cut short"))?;
            if r.is_empty() {
                // Case 2 extended: Le 0000 means 65536.
                cmd.le = Some(if n == 0 { 65_536 } else { usize::from(n) });
                return Ok(cmd);
            }
            if n == 0 {
                return Err(Error::corrupted("APDU extended Lc of 0000"));
            }
            (usize::from(n), true)
        };
        let data = r
            .take(lc)
            .ok_or_else(|| Error::corrupted("APDU shorter than its Lc announces"))?;
        let le = match (extended, r.rest()) {
            (_, []) => None,
            (false, &[0]) => Some(256),
            (false, &[b]) => Some(usize::from(b)),
            (true, &[0, 0]) => Some(65_536),
            (true, &[a, b]) => Some(usize::from(u16::from_be_bytes([a, b]))),
            _ => return Err(Error::corrupted("APDU longer than its Lc and Le announce")),
        };
        cmd.data = Zeroizing::new(data.to_vec());
        cmd.le = le;
        Ok(cmd)
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        (self.cla, self.ins, self.p1, self.p2, self.le)
            == (other.cla, other.ins, other.p1, other.p2, other.le)
            && *self.data == *other.data
    }
}

impl Eq for Command {}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Command");
        d.field("cla", &format_args!("{:02X}", self.cla))
            .field("ins", &format_args!("{:02X}", self.ins.0))
            .field("p1", &format_args!("{:02X}", self.p1))
            .field("p2", &format_args!("{:02X}", self.p2));
        if self.is_sensitive() {
            d.field(
                "data",
                &format_args!("<{} bytes redacted>", self.data.len()),
            );
        } else {
            d.field("data", &format_args!("[{}]", Hex(&self.data)));
        }
        d.field("le", &self.le).finish()
    }
}

/// A response APDU: the data and the status word SW1 SW2 (ISO 7816-4 §5.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The response data, possibly empty.
    pub data: Vec<u8>,
    /// The status word.
    pub sw: StatusWord,
}

impl Response {
    /// A response with `data` and `sw`.
    pub fn new(data: impl Into<Vec<u8>>, sw: StatusWord) -> Self {
        Self {
            data: data.into(),
            sw,
        }
    }

    /// Splits a response APDU into data and status word.
    ///
    /// # Errors
    /// `CorruptedData` if there are fewer than two bytes.
    pub fn decode(bytes: &[u8]) -> Result<Response> {
        let split = bytes
            .len()
            .checked_sub(2)
            .ok_or_else(|| Error::corrupted("response APDU shorter than a status word"))?;
        match bytes.split_at_checked(split) {
            Some((data, &[sw1, sw2])) => Ok(Self::new(data, StatusWord::from_bytes(sw1, sw2))),
            _ => Err(Error::corrupted("response APDU shorter than a status word")),
        }
    }

    /// The response APDU's bytes: data then SW1 SW2.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }

    /// True for 9000.
    pub fn is_ok(&self) -> bool {
        self.sw == StatusWord::SUCCESS
    }

    /// The data on 9000, else the error the status word means ([`Error::from_status`]).
    ///
    /// # Errors
    /// Any status word other than 9000.
    pub fn into_result(self) -> Result<Vec<u8>> {
        if self.is_ok() {
            Ok(self.data)
        } else {
            Err(Error::from_status(self.sw))
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("data", &format_args!("[{}]", Hex(&self.data)))
            .field("sw", &self.sw)
            .finish()
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

    fn both(cmd: &Command, short: &str, extended: &str) {
        let s = cmd.encode_short().unwrap();
        assert_eq!(s, hex(short), "short {cmd:?}");
        assert_eq!(&Command::decode(&s).unwrap(), cmd);
        let e = cmd.encode_extended().unwrap();
        assert_eq!(e, hex(extended), "extended {cmd:?}");
        assert_eq!(&Command::decode(&e).unwrap(), cmd);
    }

    #[test]
    fn the_four_cases_in_both_forms() {
        let c1 = Command::new(0x00, 0x44, 0x00, 0x00);
        assert_eq!(c1.case(), 1);
        both(&c1, "00 44 00 00", "00 44 00 00");

        let c2 = Command::new(0x00, Ins::GET_CHALLENGE, 0x00, 0x00).with_le(8);
        assert_eq!(c2.case(), 2);
        both(&c2, "00 84 00 00 08", "00 84 00 00 00 00 08");

        let c2max = Command::new(0x00, Ins::GET_RESPONSE, 0x00, 0x00).with_le(256);
        both(&c2max, "00 C0 00 00 00", "00 C0 00 00 00 01 00");

        let c3 =
            Command::new(0x00, Ins::VERIFY, 0x00, 0x80).with_data(hex("31 32 33 34 35 36 FF FF"));
        assert_eq!(c3.case(), 3);
        both(
            &c3,
            "00 20 00 80 08 31 32 33 34 35 36 FF FF",
            "00 20 00 80 00 00 08 31 32 33 34 35 36 FF FF",
        );

        // SP 800-73-4 GET DATA (CHUID), Le 256.
        let c4 = Command::new(0x00, Ins::GET_DATA_ODD, 0x3F, 0xFF)
            .with_data(hex("5C 03 5F C1 02"))
            .with_le(256);
        assert_eq!(c4.case(), 4);
        both(
            &c4,
            "00 CB 3F FF 05 5C 03 5F C1 02 00",
            "00 CB 3F FF 00 00 05 5C 03 5F C1 02 01 00",
        );
    }

    #[test]
    fn extended_only_lengths() {
        let big = Command::new(0x00, Ins::PUT_DATA_ODD, 0x3F, 0xFF)
            .with_data(vec![0xAB; 300])
            .with_le(65_536);
        assert!(big.needs_extended());
        assert_eq!(
            big.encode_short().unwrap_err().code(),
            ErrorCode::BadParameter
        );
        let e = big.encode_extended().unwrap();
        assert_eq!(e.get(..7).unwrap(), hex("00 DB 3F FF 00 01 2C"));
        assert_eq!(e.get(307..).unwrap(), [0x00, 0x00]);
        assert_eq!(Command::decode(&e).unwrap(), big);

        let le_only = Command::new(0x00, Ins::READ_BINARY, 0, 0).with_le(65_536);
        assert_eq!(
            le_only.encode_extended().unwrap(),
            hex("00 B0 00 00 00 00 00")
        );
        assert!(le_only.encode_short().is_err());

        let too_long = Command::new(0, 0xDB, 0, 0).with_data(vec![0; 65_536]);
        assert!(too_long.encode_extended().is_err());
        assert!(Command::new(0, 0xB0, 0, 0)
            .with_le(0)
            .encode(false)
            .is_err());
        assert!(Command::new(0, 0xB0, 0, 0)
            .with_le(65_537)
            .encode(true)
            .is_err());
    }

    #[test]
    fn decode_rejects_inconsistent_lengths() {
        for bad in [
            "",
            "00 A4 04",
            "00 A4 04 00 05 A0 00",             // Lc 5, 2 bytes
            "00 A4 04 00 02 A0 00 00 00",       // Lc 2, 3 bytes after
            "00 A4 04 00 00 00",                // 00 then one byte
            "00 A4 04 00 00 00 00 01",          // extended Lc 0000
            "00 A4 04 00 00 00 03 A0 00",       // extended Lc 3, 2 bytes
            "00 A4 04 00 00 00 01 A0 00",       // extended, 1-byte Le
            "00 A4 04 00 00 00 01 A0 00 00 00", // extended, 3 bytes after data
        ] {
            let e = Command::decode(&hex(bad)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::CorruptedData, "{bad}");
        }
    }

    #[test]
    fn sensitivity() {
        let pin = hex("31 32 33 34 35 36");
        for ins in [
            Ins::VERIFY,
            Ins::CHANGE_REFERENCE_DATA,
            Ins::RESET_RETRY_COUNTER,
            Ins::IMPORT_KEY,
        ] {
            assert!(Command::new(0, ins, 0, 0x80).with_data(&pin).is_sensitive());
        }
        assert!(Command::new(0, Ins::PUT_DATA_ODD, 0x3F, 0xFF).is_sensitive());
        assert!(!Command::new(0, Ins::PUT_DATA_ODD, 0x00, 0xFF).is_sensitive());
        assert!(!Command::new(0, Ins::SELECT, 4, 0).is_sensitive());
        let marked = Command::new(0x80, 0x10, 0, 0).with_data(&pin).sensitive();
        assert!(marked.is_sensitive());
        let dbg = format!("{marked:?}");
        assert!(dbg.contains("<6 bytes redacted>"), "{dbg}");
        assert!(!dbg.contains("31 32"), "{dbg}");
        // The mark is not part of what travels.
        assert_eq!(marked, Command::new(0x80, 0x10, 0, 0).with_data(&pin));
        let plain = format!("{:?}", Command::new(0, 0xA4, 4, 0).with_data([0xA0, 0x00]));
        assert!(plain.contains("[A0 00]"), "{plain}");
    }

    #[test]
    fn responses() {
        let r = Response::decode(&hex("01 02 90 00")).unwrap();
        assert_eq!(r.data, [1, 2]);
        assert_eq!(r.sw, StatusWord::SUCCESS);
        assert_eq!(r.encode(), hex("01 02 90 00"));
        assert_eq!(r.clone().into_result().unwrap(), [1, 2]);
        let r = Response::decode(&hex("6A 82")).unwrap();
        assert!(r.data.is_empty());
        assert_eq!(
            r.into_result().unwrap_err().code(),
            ErrorCode::ObjectNotFound
        );
        for short in [&[][..], &[0x90]] {
            assert_eq!(
                Response::decode(short).unwrap_err().code(),
                ErrorCode::CorruptedData
            );
        }
    }
}
