//! PC/SC return codes as token-core errors: one table, so every call site says the same thing
//! about the same code, and the code itself always travels underneath
//! ([`Underlying::Pcsc`]).

use std::borrow::Cow;

use token_core::{Error, ErrorCode, Underlying};

/// `SCARD_W_RESET_CARD`: another program reset the card; what was selected and verified is
/// lost.
pub const SCARD_W_RESET_CARD: u32 = pcsc::Error::ResetCard as u32;

/// `SCARD_W_REMOVED_CARD`: the card was removed.
pub const SCARD_W_REMOVED_CARD: u32 = pcsc::Error::RemovedCard as u32;

/// The code and a plain statement of what a PC/SC error means for a token.
fn classify(e: pcsc::Error) -> (ErrorCode, &'static str) {
    use pcsc::Error as E;
    use ErrorCode as C;
    match e {
        E::RemovedCard => (C::TokenNotFound, "the card was removed"),
        E::NoSmartcard => (C::TokenNotFound, "no card is in the reader"),
        E::ReaderUnavailable => (C::TokenNotFound, "the reader is gone"),
        E::UnknownReader => (C::TokenNotFound, "no such reader"),
        E::NoReadersAvailable => (C::TokenNotFound, "no reader is attached"),
        E::UnresponsiveCard => (C::CommunicationError, "the card does not answer (mute)"),
        E::UnpoweredCard => (C::CommunicationError, "the card is not powered"),
        E::UnsupportedCard => (C::CommunicationError, "the reader cannot talk to this card"),
        E::ResetCard => (
            C::CommunicationError,
            "another program reset the card: selected applications and verified PINs are \
             lost; select again and ask for the PIN",
        ),
        E::SharingViolation => (
            C::CommunicationError,
            "another program holds the card exclusively",
        ),
        E::Timeout | E::WaitedTooLong => (C::CommunicationError, "the reader timed out"),
        E::ProtoMismatch => (
            C::CommunicationError,
            "the card speaks neither T=0 nor T=1 as the reader asked",
        ),
        E::NotTransacted | E::CommError | E::CommDataLost => {
            (C::CommunicationError, "the exchange with the card failed")
        }
        E::InsufficientBuffer => (C::CommunicationError, "the card's answer is too long"),
        E::NoService | E::ServiceStopped | E::Shutdown => (
            C::CommunicationError,
            "the PC/SC service (pcscd) is not running",
        ),
        E::CancelledByUser => (C::CanceledByUser, "canceled at the reader"),
        E::InvalidParameter | E::InvalidValue => (C::BadParameter, "PC/SC refused a parameter"),
        E::UnsupportedFeature => (C::NotImplemented, "the reader does not support this"),
        _ => (C::CommunicationError, "PC/SC call failed"),
    }
}

/// The token-core error for a PC/SC error during `what` (a short description of the call).
pub(crate) fn from_pcsc(e: pcsc::Error, what: &'static str) -> Error {
    let (code, meaning) = classify(e);
    Error::with_code(code, Cow::Owned(format!("{what}: {meaning}")))
        .with_underlying(Underlying::Pcsc(e as u32))
        .with_source(e)
}

/// True when `error` says another program reset the card (`SCARD_W_RESET_CARD`): the card is
/// connected again, but whatever application was selected and whatever PIN was verified is
/// gone. A driver that sees it selects again, and its session must count the PIN as not
/// verified.
pub fn is_card_reset(error: &Error) -> bool {
    *error.underlying() == Underlying::Pcsc(SCARD_W_RESET_CARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table_and_keep_the_pcsc_code() {
        use pcsc::Error as E;
        let cases = [
            (E::RemovedCard, ErrorCode::TokenNotFound, 0x8010_0069),
            (E::NoSmartcard, ErrorCode::TokenNotFound, 0x8010_000C),
            (E::ReaderUnavailable, ErrorCode::TokenNotFound, 0x8010_0017),
            (E::UnknownReader, ErrorCode::TokenNotFound, 0x8010_0009),
            (
                E::UnresponsiveCard,
                ErrorCode::CommunicationError,
                0x8010_0066,
            ),
            (
                E::SharingViolation,
                ErrorCode::CommunicationError,
                0x8010_000B,
            ),
            (E::Timeout, ErrorCode::CommunicationError, 0x8010_000A),
            (E::ResetCard, ErrorCode::CommunicationError, 0x8010_0068),
            (E::NotTransacted, ErrorCode::CommunicationError, 0x8010_0016),
            (E::NoService, ErrorCode::CommunicationError, 0x8010_001D),
            (E::InternalError, ErrorCode::CommunicationError, 0x8010_0001),
        ];
        for (pcsc, code, raw) in cases {
            let e = from_pcsc(pcsc, "transmit");
            assert_eq!(e.code(), code, "{pcsc:?}");
            assert_eq!(*e.underlying(), Underlying::Pcsc(raw), "{pcsc:?}");
            assert!(e.context_str().starts_with("transmit: "), "{e}");
            assert!(
                e.to_string().contains(&format!("[PC/SC 0x{raw:08X}]")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_contexts_say_what_happened() {
        let e = from_pcsc(pcsc::Error::SharingViolation, "connect");
        assert!(e.context_str().contains("exclusively"), "{e}");
        let e = from_pcsc(pcsc::Error::UnresponsiveCard, "connect");
        assert!(e.context_str().contains("mute"), "{e}");
        let e = from_pcsc(pcsc::Error::ResetCard, "transmit");
        assert!(e.context_str().contains("PIN"), "{e}");
        assert!(is_card_reset(&e));
        assert!(!is_card_reset(&from_pcsc(
            pcsc::Error::RemovedCard,
            "transmit"
        )));
    }

    #[test]
    fn raw_constants_match_pcsclite() {
        assert_eq!(SCARD_W_RESET_CARD, 0x8010_0068);
        assert_eq!(SCARD_W_REMOVED_CARD, 0x8010_0069);
    }
}
