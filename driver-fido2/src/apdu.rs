//! CTAP over ISO 7816 APDUs (CTAP 2.1 §11.3): NFC readers and CCID (USB smart-card)
//! interfaces, as an [`ApduCtapChannel`] that implements [`CtapChannel`], so the same client
//! runs over HID and over cards.
//!
//! Each CTAP2 message is one NFCCTAP_MSG (`80 10 80 00`, data = command byte ‖ CBOR) sent
//! through token-core's [`SmartCard`]: an extended-length APDU when the reader takes them, else
//! by command chaining (CLA 90 on every block but the last; CTAP 2.1 §11.3 requires NFC
//! authenticators to accept it), and the answer gathered with ISO 7816 GET RESPONSE (`00 C0`)
//! on 61xx. While the authenticator is still working (waiting for a touch) it answers 9100 and
//! is polled with NFCCTAP_GETRESPONSE (`80 11`) for at most [`DEFAULT_POLL_TIMEOUT`].
//!
//! The FIDO application is SELECTed (AID `A0 00 00 06 47 2F 00 01`) at the start of every
//! message, inside one exclusive card session: other applications on the same card (PIV,
//! OpenPGP) may have been selected by other drivers in between.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use token_core::{CardSession, Command, CtapChannel, Error, Ins, Result, SmartCard, StatusWord};

use crate::client::CTAPHID_CBOR;
use crate::ctap;

/// How long a 9100 (still processing: waiting for the user's touch) answer is polled before
/// giving up, by default: longer than any authenticator waits for a touch.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between two NFCCTAP_GETRESPONSE polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// CLA of NFCCTAP_MSG.
const CLA_PROPRIETARY: u8 = 0x80;
/// P1 of NFCCTAP_MSG: the client takes NFCCTAP_GETRESPONSE status updates.
const P1_GETRESPONSE_SUPPORTED: u8 = 0x80;

/// What SELECT of the FIDO AID answered: the applet's version string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FidoApplet {
    /// `FIDO_2_0` for a CTAP2 authenticator, `U2F_V2` for a U2F-only one.
    pub version: String,
}

impl FidoApplet {
    /// True when the applet speaks CTAP2 (`FIDO_2_0`), rather than only U2F.
    pub fn is_ctap2(&self) -> bool {
        self.version.starts_with("FIDO_2")
    }
}

/// SELECTs the FIDO application in `session`: `None` when the card does not have it.
///
/// # Errors
/// Transport errors, and an error status word other than "not found".
pub async fn select_fido(session: &CardSession) -> Result<Option<FidoApplet>> {
    let Some(answer) = session.select_application(&ctap::FIDO_AID).await? else {
        return Ok(None);
    };
    if answer.sw != StatusWord::SUCCESS {
        return Ok(None);
    }
    Ok(Some(FidoApplet {
        version: String::from_utf8_lossy(&answer.data).into_owned(),
    }))
}

/// A [`CtapChannel`] over a smart card (NFC or CCID) carrying the FIDO application.
#[derive(Clone, Debug)]
pub struct ApduCtapChannel {
    card: SmartCard,
    poll_timeout: Duration,
}

impl ApduCtapChannel {
    /// A channel over `card`. Nothing is sent until the first message. Command chaining is
    /// used for long messages when the reader takes no extended APDUs, whatever the ATR says:
    /// NFC authenticators must accept it.
    pub fn new(mut card: SmartCard) -> Self {
        card.set_use_command_chaining(true);
        Self {
            card,
            poll_timeout: DEFAULT_POLL_TIMEOUT,
        }
    }

    /// Sets how long 9100 answers are polled before the message fails
    /// ([`DEFAULT_POLL_TIMEOUT`] by default).
    #[must_use]
    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// The card.
    pub fn card(&self) -> &SmartCard {
        &self.card
    }

    async fn message(&self, data: &[u8]) -> Result<Vec<u8>> {
        let session = self.card.begin_session().await?;
        if select_fido(&session).await?.is_none() {
            return Err(Error::token_not_found(
                "the FIDO application is no longer on the card",
            ));
        }
        let msg = Command::new(
            CLA_PROPRIETARY,
            Ins(ctap::INS_NFCCTAP_MSG),
            P1_GETRESPONSE_SUPPORTED,
            0,
        )
        .with_data(data)
        .with_le(Command::LE_MAX_EXTENDED);
        let poll = Command::new(CLA_PROPRIETARY, Ins(ctap::INS_NFCCTAP_GETRESPONSE), 0, 0)
            .with_le(Command::LE_MAX_SHORT);
        let mut answer = session.send(&msg).await?;
        let start = Instant::now();
        let mut polls = 0u32;
        while answer.sw == StatusWord(0x9100) {
            if start.elapsed() > self.poll_timeout {
                return Err(Error::communication(
                    "the authenticator kept processing (9100) for too long",
                ));
            }
            // The first polls go at once (a quick answer); then the authenticator is waiting
            // for the user, and is asked every POLL_INTERVAL. Transports block; so does this.
            polls += 1;
            if polls > 3 {
                std::thread::sleep(POLL_INTERVAL);
            }
            answer = session.send(&poll).await?;
        }
        let (body, sw) = (answer.data, answer.sw);
        if sw != StatusWord::SUCCESS {
            return Err(Error::from_status(sw));
        }
        Ok(body)
    }
}

#[async_trait]
impl CtapChannel for ApduCtapChannel {
    async fn transact(&self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>> {
        if cmd != CTAPHID_CBOR {
            return Err(Error::not_implemented(
                "only CTAP2 CBOR messages go over NFC/CCID",
            ));
        }
        self.message(payload).await
    }

    fn capabilities(&self) -> u8 {
        // CBOR, and no CTAP1 MSG through this channel (NMSG).
        0x04 | 0x08
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use token_core::testkit::MemoryCard;
    use token_core::{block_on, CardSimulator, ChannelCaps, ErrorCode};

    /// A FIDO applet that records every APDU, answers NFCCTAP_MSG with 9100 `busy` times
    /// before the answer, and gives long answers 100 bytes at a time through 61xx.
    struct Scripted {
        seen: Arc<Mutex<Vec<Vec<u8>>>>,
        busy: usize,
        answer: Vec<u8>,
        pending: Vec<u8>,
    }

    impl Scripted {
        fn give(&mut self) -> Vec<u8> {
            let n = self.pending.len().min(100);
            let mut out: Vec<u8> = self.pending.drain(..n).collect();
            if self.pending.is_empty() {
                out.extend([0x90, 0x00]);
            } else {
                out.extend([0x61, self.pending.len().min(255) as u8]);
            }
            out
        }
    }

    impl CardSimulator for Scripted {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
            self.seen.lock().unwrap().push(apdu.to_vec());
            match apdu {
                [0x00, 0xA4, 0x04, ..] => {
                    let mut out = b"FIDO_2_0".to_vec();
                    out.extend([0x90, 0x00]);
                    out
                }
                [0x80 | 0x90, 0x10, ..] if apdu[0] == 0x90 => vec![0x90, 0x00],
                [0x80, 0x10, ..] | [0x80, 0x11, ..] => {
                    if self.busy > 0 {
                        self.busy -= 1;
                        return vec![0x01, 0x91, 0x00];
                    }
                    self.pending = self.answer.clone();
                    self.give()
                }
                [0x00, 0xC0, ..] => self.give(),
                _ => vec![0x6D, 0x00],
            }
        }
    }

    fn channel(
        busy: usize,
        answer: Vec<u8>,
        caps: ChannelCaps,
    ) -> (ApduCtapChannel, Arc<Mutex<Vec<Vec<u8>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sim = Scripted {
            seen: seen.clone(),
            busy,
            answer,
            pending: Vec::new(),
        };
        let card = SmartCard::new(Arc::new(MemoryCard::new(Box::new(sim)).with_caps(caps)));
        (ApduCtapChannel::new(card), seen)
    }

    #[test]
    fn polls_9100_and_gathers_61xx_pieces() {
        let answer: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let (ch, seen) = channel(3, answer.clone(), ChannelCaps::default());
        let got = block_on(ch.transact(CTAPHID_CBOR, &[0x04])).unwrap();
        assert_eq!(got, answer);
        let seen = seen.lock().unwrap();
        let polls = seen.iter().filter(|a| a[..2] == [0x80, 0x11]).count();
        assert_eq!(polls, 3);
        assert_eq!(&seen[1][..5], &[0x80, 0x10, 0x80, 0x00, 0x01]);
        assert!(seen.iter().any(|a| a[..2] == [0x00, 0xC0]));
    }

    #[test]
    fn long_messages_chain_or_go_extended_as_the_reader_allows() {
        let data = vec![0x42; 600];
        let (ch, seen) = channel(0, vec![0x00], ChannelCaps::default());
        block_on(ch.transact(CTAPHID_CBOR, &data)).unwrap();
        let msgs: Vec<Vec<u8>> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a[1] == 0x10)
            .cloned()
            .collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0][0], 0x90);
        assert_eq!(msgs[1][0], 0x90);
        assert_eq!(msgs[2][0], 0x80);
        let total: usize = msgs.iter().map(|a| usize::from(a[4])).sum();
        assert_eq!(total, 600);

        let caps = ChannelCaps {
            extended_length: true,
            max_command: 65_544,
            max_response: 65_538,
        };
        let (ch, seen) = channel(0, vec![0x00], caps);
        block_on(ch.transact(CTAPHID_CBOR, &data)).unwrap();
        let seen = seen.lock().unwrap();
        let msg = seen.iter().find(|a| a[1] == 0x10).unwrap();
        assert_eq!(&msg[4..7], &[0x00, 0x02, 0x58]);
        assert_eq!(msg.len(), 7 + 600 + 2);
    }

    #[test]
    fn endless_9100_is_bounded() {
        let (ch, _) = channel(usize::MAX, vec![0x00], ChannelCaps::default());
        let ch = ch.with_poll_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let e = block_on(ch.transact(CTAPHID_CBOR, &[0x04])).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(e.code(), ErrorCode::CommunicationError);
    }

    /// A card answering arbitrary bytes to everything.
    struct Noise(Vec<Vec<u8>>);

    impl CardSimulator for Noise {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn process(&mut self, _: &[u8]) -> Vec<u8> {
            if self.0.is_empty() {
                vec![0x6F, 0x00]
            } else {
                self.0.remove(0)
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_card_answers_give_errors_never_a_panic(
            answers in proptest::collection::vec(proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..40), 0..12)
        ) {
            let card = SmartCard::new(Arc::new(MemoryCard::new(Box::new(Noise(answers)))));
            let ch = ApduCtapChannel::new(card).with_poll_timeout(std::time::Duration::from_millis(50));
            let _ = block_on(ch.transact(CTAPHID_CBOR, &[0x04]));
            let _ = block_on(crate::client::Ctap2::new(Arc::new(ch)));
        }
    }

    #[test]
    fn only_cbor_goes_over_apdus() {
        let (ch, _) = channel(0, vec![0x00], ChannelCaps::default());
        let e = block_on(ch.transact(0x83, &[0x00])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotImplemented);
    }
}
