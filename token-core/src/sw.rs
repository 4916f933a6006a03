//! ISO 7816-4 status words (§5.6) as a newtype with named meanings.

use core::fmt;

/// The two status bytes SW1 SW2 that end every response APDU (ISO 7816-4 §5.6).
///
/// Unknown values are kept as they are; [`StatusWord::meaning`] decodes the ranges that carry
/// data (61xx, 6Cxx, 63Cx).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusWord(pub u16);

/// What a status word says, with the data some ranges carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwMeaning {
    /// 9000: normal processing.
    Success,
    /// 61xx: success, xx more bytes available with GET RESPONSE (0 means 256 or more).
    MoreAvailable(u8),
    /// 6Cxx: wrong Le; resend the command with Le = xx.
    WrongLe(u8),
    /// 63Cx: verification failed, x tries left.
    VerificationFailed {
        /// Tries left before the reference data is blocked.
        retries_left: u8,
    },
    /// 62xx/63xx other than 63Cx: warning, non-volatile memory unchanged or changed.
    Warning,
    /// 6581: memory failure.
    MemoryFailure,
    /// 6700: wrong length.
    WrongLength,
    /// 6882 / 6883 / 6884: secure messaging or chaining not supported, or last command of a
    /// chain expected.
    ChainingError,
    /// 6982: security status not satisfied.
    SecurityStatusNotSatisfied,
    /// 6983: authentication method blocked.
    AuthenticationBlocked,
    /// 6984: reference data not usable.
    ReferenceDataNotUsable,
    /// 6985: conditions of use not satisfied.
    ConditionsNotSatisfied,
    /// 6986: command not allowed (no current EF).
    CommandNotAllowed,
    /// 6A80: incorrect parameters in the command data field.
    IncorrectData,
    /// 6A81: function not supported.
    FunctionNotSupported,
    /// 6A82: file or application not found.
    FileNotFound,
    /// 6A84: not enough memory space in the file.
    NotEnoughMemory,
    /// 6A86 / 6B00: incorrect parameters P1-P2.
    IncorrectP1P2,
    /// 6A88: referenced data or reference data not found.
    ReferencedDataNotFound,
    /// 6D00: instruction code not supported or invalid.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// 6F00: no precise diagnosis.
    NoPreciseDiagnosis,
    /// Any other value.
    Other,
}

impl StatusWord {
    /// 9000, normal processing.
    pub const SUCCESS: Self = Self(0x9000);
    /// 6700, wrong length.
    pub const WRONG_LENGTH: Self = Self(0x6700);
    /// 6882, secure messaging not supported.
    pub const SECURE_MESSAGING_NOT_SUPPORTED: Self = Self(0x6882);
    /// 6883, last command of the chain expected.
    pub const LAST_COMMAND_EXPECTED: Self = Self(0x6883);
    /// 6884, command chaining not supported.
    pub const CHAINING_NOT_SUPPORTED: Self = Self(0x6884);
    /// 6982, security status not satisfied.
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    /// 6983, authentication method blocked.
    pub const AUTH_METHOD_BLOCKED: Self = Self(0x6983);
    /// 6984, reference data not usable.
    pub const REFERENCE_DATA_NOT_USABLE: Self = Self(0x6984);
    /// 6985, conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    /// 6986, command not allowed.
    pub const COMMAND_NOT_ALLOWED: Self = Self(0x6986);
    /// 6A80, incorrect parameters in the data field.
    pub const INCORRECT_DATA: Self = Self(0x6A80);
    /// 6A81, function not supported.
    pub const FUNCTION_NOT_SUPPORTED: Self = Self(0x6A81);
    /// 6A82, file or application not found.
    pub const FILE_NOT_FOUND: Self = Self(0x6A82);
    /// 6A84, not enough memory.
    pub const NOT_ENOUGH_MEMORY: Self = Self(0x6A84);
    /// 6A86, incorrect P1-P2.
    pub const INCORRECT_P1P2: Self = Self(0x6A86);
    /// 6A88, referenced data not found.
    pub const REFERENCED_DATA_NOT_FOUND: Self = Self(0x6A88);
    /// 6B00, wrong parameters P1-P2.
    pub const WRONG_P1P2: Self = Self(0x6B00);
    /// 6D00, instruction not supported.
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    /// 6E00, class not supported.
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);
    /// 6F00, no precise diagnosis.
    pub const NO_PRECISE_DIAGNOSIS: Self = Self(0x6F00);

    /// Builds a status word from SW1 and SW2.
    pub const fn from_bytes(sw1: u8, sw2: u8) -> Self {
        Self(((sw1 as u16) << 8) | sw2 as u16)
    }

    /// SW1, the high byte.
    pub const fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// SW2, the low byte.
    pub const fn sw2(self) -> u8 {
        self.0 as u8
    }

    /// The two bytes as they travel: SW1, SW2.
    pub const fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// True for 9000 and for 61xx (success, more data waiting).
    pub const fn is_success(self) -> bool {
        self.0 == 0x9000 || self.sw1() == 0x61
    }

    /// Decodes the status word into its ISO 7816-4 meaning.
    pub fn meaning(self) -> SwMeaning {
        use SwMeaning as M;
        match (self.sw1(), self.sw2()) {
            (0x90, 0x00) => M::Success,
            (0x61, n) => M::MoreAvailable(n),
            (0x6C, n) => M::WrongLe(n),
            (0x63, n) if n & 0xF0 == 0xC0 => M::VerificationFailed {
                retries_left: n & 0x0F,
            },
            (0x62 | 0x63, _) => M::Warning,
            (0x65, 0x81) => M::MemoryFailure,
            (0x67, 0x00) => M::WrongLength,
            (0x68, 0x82..=0x84) => M::ChainingError,
            (0x69, 0x82) => M::SecurityStatusNotSatisfied,
            (0x69, 0x83) => M::AuthenticationBlocked,
            (0x69, 0x84) => M::ReferenceDataNotUsable,
            (0x69, 0x85) => M::ConditionsNotSatisfied,
            (0x69, 0x86) => M::CommandNotAllowed,
            (0x6A, 0x80) => M::IncorrectData,
            (0x6A, 0x81) => M::FunctionNotSupported,
            (0x6A, 0x82) => M::FileNotFound,
            (0x6A, 0x84) => M::NotEnoughMemory,
            (0x6A, 0x86) | (0x6B, 0x00) => M::IncorrectP1P2,
            (0x6A, 0x88) => M::ReferencedDataNotFound,
            (0x6D, 0x00) => M::InsNotSupported,
            (0x6E, 0x00) => M::ClaNotSupported,
            (0x6F, 0x00) => M::NoPreciseDiagnosis,
            _ => M::Other,
        }
    }

    /// A short English description, as ISO 7816-4 words it.
    pub fn description(self) -> &'static str {
        use SwMeaning as M;
        match self.meaning() {
            M::Success => "success",
            M::MoreAvailable(_) => "more data available",
            M::WrongLe(_) => "wrong Le",
            M::VerificationFailed { .. } => "verification failed",
            M::Warning => "warning",
            M::MemoryFailure => "memory failure",
            M::WrongLength => "wrong length",
            M::ChainingError => "secure messaging or chaining not supported",
            M::SecurityStatusNotSatisfied => "security status not satisfied",
            M::AuthenticationBlocked => "authentication method blocked",
            M::ReferenceDataNotUsable => "reference data not usable",
            M::ConditionsNotSatisfied => "conditions of use not satisfied",
            M::CommandNotAllowed => "command not allowed",
            M::IncorrectData => "incorrect data",
            M::FunctionNotSupported => "function not supported",
            M::FileNotFound => "file or application not found",
            M::NotEnoughMemory => "not enough memory",
            M::IncorrectP1P2 => "incorrect P1-P2",
            M::ReferencedDataNotFound => "referenced data not found",
            M::InsNotSupported => "instruction not supported",
            M::ClaNotSupported => "class not supported",
            M::NoPreciseDiagnosis => "no precise diagnosis",
            M::Other => "unknown status",
        }
    }
}

impl From<u16> for StatusWord {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

impl From<StatusWord> for u16 {
    fn from(sw: StatusWord) -> Self {
        sw.0
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:04X} {})", self.0, self.description())
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X} ({})", self.0, self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_decode_their_data() {
        assert_eq!(
            StatusWord(0x61_10).meaning(),
            SwMeaning::MoreAvailable(0x10)
        );
        assert_eq!(StatusWord(0x6C_08).meaning(), SwMeaning::WrongLe(8));
        assert_eq!(
            StatusWord(0x63_C2).meaning(),
            SwMeaning::VerificationFailed { retries_left: 2 }
        );
        assert_eq!(StatusWord(0x63_00).meaning(), SwMeaning::Warning);
        assert_eq!(StatusWord(0x6B_00).meaning(), SwMeaning::IncorrectP1P2);
        assert_eq!(StatusWord(0x12_34).meaning(), SwMeaning::Other);
    }

    #[test]
    fn bytes_round_trip() {
        for v in [0x9000u16, 0x61FF, 0x6A82, 0x0000, 0xFFFF] {
            let sw = StatusWord(v);
            let [a, b] = sw.to_bytes();
            assert_eq!(StatusWord::from_bytes(a, b), sw);
        }
        assert!(StatusWord(0x6100).is_success());
        assert!(!StatusWord(0x6982).is_success());
    }

    #[test]
    fn display_names_the_meaning() {
        assert_eq!(
            StatusWord(0x6982).to_string(),
            "6982 (security status not satisfied)"
        );
    }
}
