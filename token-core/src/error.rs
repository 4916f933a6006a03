//! Errors with CryptoTokenKit's codes, and what lies underneath them.

use core::fmt;
use std::borrow::Cow;
use std::sync::Arc;

use crate::model::PinKind;
use crate::sw::{StatusWord, SwMeaning};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// CryptoTokenKit's error codes (`TKError.Code`), with their numbers.
///
/// Every [`Error`] carries exactly one of these, so a caller can branch on what happened
/// without knowing which driver or transport was involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// -1: the driver or token does not implement this.
    NotImplemented = -1,
    /// -2: talking to the token failed (transport error, card went mute, garbled exchange).
    CommunicationError = -2,
    /// -3: the token or a file returned data that does not parse or does not verify.
    CorruptedData = -3,
    /// -4: the user canceled (for example at the PIN prompt).
    CanceledByUser = -4,
    /// -5: authentication failed (wrong PIN; see [`Error::retries_left`]) or is blocked.
    AuthenticationFailed = -5,
    /// -6: the object (key, certificate, data object, item) does not exist.
    ObjectNotFound = -6,
    /// -7: the token is not present (removed, or never was).
    TokenNotFound = -7,
    /// -8: a parameter was not acceptable.
    BadParameter = -8,
    /// -9: the operation needs authentication first.
    AuthenticationNeeded = -9,
}

impl ErrorCode {
    /// The number CryptoTokenKit gives this code.
    pub const fn number(self) -> i32 {
        self as i32
    }

    /// The CryptoTokenKit name of this code, as in `TKError.Code`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotImplemented => "notImplemented",
            Self::CommunicationError => "communicationError",
            Self::CorruptedData => "corruptedData",
            Self::CanceledByUser => "canceledByUser",
            Self::AuthenticationFailed => "authenticationFailed",
            Self::ObjectNotFound => "objectNotFound",
            Self::TokenNotFound => "tokenNotFound",
            Self::BadParameter => "badParameter",
            Self::AuthenticationNeeded => "authenticationNeeded",
        }
    }
}

impl TryFrom<i32> for ErrorCode {
    type Error = i32;

    fn try_from(n: i32) -> core::result::Result<Self, i32> {
        Ok(match n {
            -1 => Self::NotImplemented,
            -2 => Self::CommunicationError,
            -3 => Self::CorruptedData,
            -4 => Self::CanceledByUser,
            -5 => Self::AuthenticationFailed,
            -6 => Self::ObjectNotFound,
            -7 => Self::TokenNotFound,
            -8 => Self::BadParameter,
            -9 => Self::AuthenticationNeeded,
            other => return Err(other),
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// What lies under an [`Error`]: the device's own answer, where there was one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Underlying {
    /// Nothing more specific than the code.
    None,
    /// The status word a card answered.
    StatusWord(StatusWord),
    /// A CTAP 2 status code (CTAP 2.1 §8.2), as an authenticator answered it.
    Ctap(u8),
    /// A CTAPHID transport error (CTAP 2.1 §11.2.9.1.6); its numbers overlap CTAP 2's, so it
    /// is kept apart.
    CtapHid(u8),
    /// A PC/SC return code (`SCARD_E_…`, `SCARD_W_…`), as the platform numbers it.
    Pcsc(u32),
    /// An operating-system I/O error.
    Io(std::io::ErrorKind),
}

/// The error type of every tokenkit API.
///
/// It always has an [`ErrorCode`] (CryptoTokenKit's set), and may carry the card status word or
/// device code underneath, the PIN tries left when a PIN was refused, a static context naming
/// what was being done, and a source error from a third-party crate.
///
/// Errors never contain secret material: PINs and keys are not part of any variant.
#[derive(Clone)]
pub struct Error {
    code: ErrorCode,
    underlying: Underlying,
    retries_left: Option<u8>,
    needed_pin: Option<PinKind>,
    context: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error with `code` and nothing more.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            underlying: Underlying::None,
            retries_left: None,
            needed_pin: None,
            context: Cow::Borrowed(""),
            source: None,
        }
    }

    /// An error with `code` and a short description of what was being done.
    pub fn with_code(code: ErrorCode, context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code).context(context)
    }

    /// [`ErrorCode::NotImplemented`] for `what`.
    pub fn not_implemented(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::NotImplemented, what)
    }

    /// [`ErrorCode::CommunicationError`] for `what`.
    pub fn communication(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::CommunicationError, what)
    }

    /// [`ErrorCode::CorruptedData`]: `what` did not parse or did not verify.
    pub fn corrupted(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::CorruptedData, what)
    }

    /// [`ErrorCode::BadParameter`] for `what`.
    pub fn bad_parameter(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::BadParameter, what)
    }

    /// [`ErrorCode::ObjectNotFound`] for `what`.
    pub fn object_not_found(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::ObjectNotFound, what)
    }

    /// [`ErrorCode::TokenNotFound`] for `what`.
    pub fn token_not_found(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::TokenNotFound, what)
    }

    /// [`ErrorCode::CanceledByUser`].
    pub fn canceled() -> Self {
        Self::with_code(ErrorCode::CanceledByUser, "canceled by the user")
    }

    /// [`ErrorCode::AuthenticationNeeded`] for `what`.
    pub fn authentication_needed(what: impl Into<Cow<'static, str>>) -> Self {
        Self::with_code(ErrorCode::AuthenticationNeeded, what)
    }

    /// [`ErrorCode::AuthenticationNeeded`] naming the PIN that is needed (the admin PIN for a
    /// key generation on an OpenPGP card, say), so [`crate::TokenSession`] asks its callback
    /// for that one.
    pub fn authentication_needed_for(kind: PinKind, what: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::with_code(ErrorCode::AuthenticationNeeded, what);
        e.needed_pin = Some(kind);
        e
    }

    /// [`ErrorCode::AuthenticationFailed`] with the tries left, where the token said.
    /// `Some(0)` means the PIN is now blocked.
    pub fn authentication_failed(retries_left: Option<u8>) -> Self {
        let mut e = Self::with_code(ErrorCode::AuthenticationFailed, "wrong PIN");
        e.retries_left = retries_left;
        if retries_left == Some(0) {
            e.context = Cow::Borrowed("PIN blocked");
        }
        e
    }

    /// The error a card's status word means, per ISO 7816-4, keeping the status word.
    ///
    /// 63Cx becomes `AuthenticationFailed` with x tries left, 6983 `AuthenticationFailed` with
    /// none (blocked), 6982 `AuthenticationNeeded`, 6A82 and 6A88 `ObjectNotFound`, wrong-data
    /// and wrong-parameter words `BadParameter`, unsupported instructions `NotImplemented`, and
    /// anything else `CommunicationError`.
    pub fn from_status(sw: StatusWord) -> Self {
        use SwMeaning as M;
        let (code, retries) = match sw.meaning() {
            M::VerificationFailed { retries_left } => {
                (ErrorCode::AuthenticationFailed, Some(retries_left))
            }
            M::AuthenticationBlocked => (ErrorCode::AuthenticationFailed, Some(0)),
            M::SecurityStatusNotSatisfied => (ErrorCode::AuthenticationNeeded, None),
            M::FileNotFound | M::ReferencedDataNotFound => (ErrorCode::ObjectNotFound, None),
            M::IncorrectData | M::IncorrectP1P2 | M::WrongLength | M::WrongLe(_) => {
                (ErrorCode::BadParameter, None)
            }
            M::InsNotSupported | M::ClaNotSupported | M::FunctionNotSupported => {
                (ErrorCode::NotImplemented, None)
            }
            _ => (ErrorCode::CommunicationError, None),
        };
        Self {
            code,
            underlying: Underlying::StatusWord(sw),
            retries_left: retries,
            needed_pin: None,
            context: Cow::Borrowed(sw.description()),
            source: None,
        }
    }

    /// Replaces the description of what was being done.
    #[must_use]
    pub fn context(mut self, context: impl Into<Cow<'static, str>>) -> Self {
        self.context = context.into();
        self
    }

    /// Sets what lies underneath (a status word, CTAP code, PC/SC code).
    #[must_use]
    pub fn with_underlying(mut self, underlying: Underlying) -> Self {
        self.underlying = underlying;
        self
    }

    /// Sets the PIN tries left.
    #[must_use]
    pub fn with_retries(mut self, retries_left: Option<u8>) -> Self {
        self.retries_left = retries_left;
        self
    }

    /// Attaches a source error from another crate (I/O, a crypto backend, a PC/SC library).
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The CryptoTokenKit code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What lies underneath.
    pub fn underlying(&self) -> &Underlying {
        &self.underlying
    }

    /// The status word, if a card answered one.
    pub fn status_word(&self) -> Option<StatusWord> {
        match self.underlying {
            Underlying::StatusWord(sw) => Some(sw),
            _ => None,
        }
    }

    /// PIN tries left, where a PIN was refused and the token said how many remain.
    pub fn retries_left(&self) -> Option<u8> {
        self.retries_left
    }

    /// Which PIN an `AuthenticationNeeded` error asks for, when the driver said; `None` means
    /// the user PIN.
    pub fn needed_pin(&self) -> Option<PinKind> {
        self.needed_pin
    }

    /// True when the PIN (or the key it guards) is blocked: no tries left.
    pub fn is_blocked(&self) -> bool {
        self.code == ErrorCode::AuthenticationFailed && self.retries_left == Some(0)
    }

    /// The description of what was being done, possibly empty.
    pub fn context_str(&self) -> &str {
        &self.context
    }
}

impl From<StatusWord> for Error {
    fn from(sw: StatusWord) -> Self {
        Self::from_status(sw)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = e.kind();
        Self::communication("I/O error")
            .with_underlying(Underlying::Io(kind))
            .with_source(e)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code);
        if self.underlying != Underlying::None {
            d.field("underlying", &self.underlying);
        }
        if let Some(r) = self.retries_left {
            d.field("retries_left", &r);
        }
        if let Some(k) = self.needed_pin {
            d.field("needed_pin", &k);
        }
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if let Some(s) = &self.source {
            d.field("source", &format_args!("{s}"));
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        match &self.underlying {
            Underlying::None => {}
            Underlying::StatusWord(sw) => write!(f, " [SW {:04X}]", sw.0)?,
            Underlying::Ctap(c) => write!(f, " [CTAP 0x{c:02X}]")?,
            Underlying::CtapHid(c) => write!(f, " [CTAPHID error 0x{c:02X}]")?,
            Underlying::Pcsc(c) => write!(f, " [PC/SC 0x{c:08X}]")?,
            Underlying::Io(k) => write!(f, " [I/O {k}]")?,
        }
        if let Some(r) = self.retries_left {
            if r == 1 {
                write!(f, "; 1 try left, the next wrong PIN blocks it")?;
            } else {
                write!(f, "; {r} tries left")?;
            }
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_cryptotokenkit_numbers() {
        let all = [
            (ErrorCode::NotImplemented, -1),
            (ErrorCode::CommunicationError, -2),
            (ErrorCode::CorruptedData, -3),
            (ErrorCode::CanceledByUser, -4),
            (ErrorCode::AuthenticationFailed, -5),
            (ErrorCode::ObjectNotFound, -6),
            (ErrorCode::TokenNotFound, -7),
            (ErrorCode::BadParameter, -8),
            (ErrorCode::AuthenticationNeeded, -9),
        ];
        for (code, n) in all {
            assert_eq!(code.number(), n);
            assert_eq!(ErrorCode::try_from(n), Ok(code));
        }
        assert_eq!(ErrorCode::try_from(0), Err(0));
    }

    #[test]
    fn status_words_map_to_codes_and_keep_the_word() {
        let e = Error::from(StatusWord(0x63C2));
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
        assert_eq!(e.retries_left(), Some(2));
        assert_eq!(e.status_word(), Some(StatusWord(0x63C2)));
        assert!(!e.is_blocked());

        let e = Error::from(StatusWord(0x6983));
        assert!(e.is_blocked());
        assert_eq!(
            Error::from(StatusWord(0x6982)).code(),
            ErrorCode::AuthenticationNeeded
        );
        assert_eq!(
            Error::from(StatusWord(0x6A82)).code(),
            ErrorCode::ObjectNotFound
        );
        assert_eq!(
            Error::from(StatusWord(0x6A80)).code(),
            ErrorCode::BadParameter
        );
        assert_eq!(
            Error::from(StatusWord(0x6D00)).code(),
            ErrorCode::NotImplemented
        );
        assert_eq!(
            Error::from(StatusWord(0x6F00)).code(),
            ErrorCode::CommunicationError
        );
    }

    #[test]
    fn display_says_plainly_when_one_try_is_left() {
        let e = Error::authentication_failed(Some(1));
        let s = e.to_string();
        assert!(s.starts_with("authenticationFailed (-5)"), "{s}");
        assert!(s.contains("1 try left"), "{s}");
    }
}
