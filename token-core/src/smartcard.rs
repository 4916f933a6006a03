//! [`SmartCard`]: the APDU layer every smart-card driver talks through, after CryptoTokenKit's
//! `TKSmartCard`.
//!
//! A transport supplies a raw [`CardChannel`]; `SmartCard` adds, once for every driver:
//!
//! * GET RESPONSE (ISO 7816-4 §7.6.1) on 61xx, concatenating the pieces;
//! * one resend with the right Le on 6Cxx;
//! * extended-length APDUs when [`SmartCard::use_extended_length`] is on and the reader takes
//!   them, else command chaining (ISO 7816-4 §5.1.1.1, CLA bit 10 on every block but the last)
//!   when [`SmartCard::use_command_chaining`] is on;
//! * exclusivity: a [`CardSession`] holds an in-process lock and the channel's exclusive
//!   section (PC/SC transaction) until it is dropped; a command sent outside a session gets
//!   both for the length of its exchange, as `TKSmartCard` does;
//! * an APDU trace at target `tokenkit::apdu`, level TRACE, with the data of sensitive commands
//!   ([`Command::is_sensitive`]: PINs, keys) replaced by `<N bytes redacted>`.
//!
//! ```no_run
//! # async fn example(card: token_core::SmartCard) -> token_core::Result<()> {
//! use token_core::Ins;
//!
//! let session = card.begin_session().await?;
//! session
//!     .send_ins(Ins::SELECT, 0x04, 0x00, &[0xA0, 0x00, 0x00, 0x03, 0x08], None)
//!     .await?;
//! let chuid = session
//!     .send_ins(Ins::GET_DATA_ODD, 0x3F, 0xFF, &[0x5C, 0x03, 0x5F, 0xC1, 0x02], Some(256))
//!     .await?;
//! # let _ = chuid;
//! // Dropping the session ends the exclusive section.
//! # Ok(()) }
//! ```

use core::fmt;
use std::sync::Arc;

use async_lock::{Mutex, MutexGuardArc};
use zeroize::Zeroizing;

use crate::apdu::{Command, Hex, Ins, Response};
use crate::atr::Atr;
use crate::channel::{CardChannel, ChannelCaps};
use crate::error::{Error, Result};
use crate::sw::StatusWord;

/// The trace target of APDU exchanges.
const TRACE_TARGET: &str = "tokenkit::apdu";
/// CLA bit of command chaining: more blocks follow (ISO 7816-4 §5.4.1).
const CLA_CHAINING: u8 = 0x10;
/// Bound on GET RESPONSE rounds for one command, so a card answering 61xx forever cannot
/// keep us looping.
const MAX_GET_RESPONSE_ROUNDS: usize = 1024;

/// The class byte of the GET RESPONSE that follows a command of class `cla`: GET RESPONSE is
/// an interindustry command (ISO 7816-4 §7.6.1), so after a proprietary command (class 80-FE,
/// e.g. FIDO's NFCCTAP_MSG) it goes as 00 on the same logical channel; after an interindustry
/// one it keeps the class without the chaining bit.
fn get_response_cla(cla: u8) -> u8 {
    if cla & 0x80 != 0 {
        cla & 0x03
    } else {
        cla & !CLA_CHAINING
    }
}
/// Bound on the response data gathered for one command (1 MiB).
const MAX_RESPONSE_DATA: usize = 1 << 20;

/// A smart card behind a [`CardChannel`], with the APDU handling drivers share.
///
/// Clones share the channel and the session lock; the settings ([`SmartCard::set_cla`] and the
/// like) belong to each clone.
#[derive(Clone)]
pub struct SmartCard {
    channel: Arc<dyn CardChannel>,
    lock: Arc<Mutex<()>>,
    atr_bytes: Arc<[u8]>,
    atr: Option<Arc<Atr>>,
    cla: u8,
    use_extended_length: bool,
    use_command_chaining: bool,
}

impl fmt::Debug for SmartCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartCard")
            .field("atr", &format_args!("{}", Hex(&self.atr_bytes)))
            .field("cla", &format_args!("{:02X}", self.cla))
            .field("use_extended_length", &self.use_extended_length)
            .field("use_command_chaining", &self.use_command_chaining)
            .finish_non_exhaustive()
    }
}

impl SmartCard {
    /// Wraps a channel. CLA is 00; extended length is used if the channel's caps allow it;
    /// command chaining if the ATR's card capabilities announce it.
    pub fn new(channel: Arc<dyn CardChannel>) -> Self {
        let atr_bytes: Arc<[u8]> = channel.atr().into();
        let atr = Atr::parse(&atr_bytes).ok().map(Arc::new);
        let use_extended_length = channel.caps().extended_length;
        let use_command_chaining = atr.as_ref().is_some_and(|a| a.supports_command_chaining());
        Self {
            channel,
            lock: Arc::new(Mutex::new(())),
            atr_bytes,
            atr,
            cla: 0x00,
            use_extended_length,
            use_command_chaining,
        }
    }

    /// The card's ATR, if it parses (a virtual card may present one that does not).
    pub fn atr(&self) -> Option<&Atr> {
        self.atr.as_deref()
    }

    /// The card's ATR bytes as the channel read them.
    pub fn atr_bytes(&self) -> &[u8] {
        &self.atr_bytes
    }

    /// How many times the card was reset since it was connected
    /// ([`CardChannel::reset_count`]): a session whose PIN was verified at another count must
    /// consider the PIN lost.
    pub fn reset_count(&self) -> u64 {
        self.channel.reset_count()
    }

    /// What the channel can carry.
    pub fn caps(&self) -> ChannelCaps {
        self.channel.caps()
    }

    /// The class byte [`SmartCard::send_ins`] uses (default 00).
    pub fn cla(&self) -> u8 {
        self.cla
    }

    /// Sets the class byte [`SmartCard::send_ins`] uses.
    pub fn set_cla(&mut self, cla: u8) {
        self.cla = cla;
    }

    /// Whether commands too long for the short form go as extended-length APDUs.
    pub fn use_extended_length(&self) -> bool {
        self.use_extended_length
    }

    /// Turns extended-length APDUs on or off (for a card whose ATR does not tell the truth).
    pub fn set_use_extended_length(&mut self, on: bool) {
        self.use_extended_length = on;
    }

    /// Whether command data too long for one APDU is split by command chaining.
    pub fn use_command_chaining(&self) -> bool {
        self.use_command_chaining
    }

    /// Turns command chaining on or off (PIV cards chain whatever their ATR says).
    pub fn set_use_command_chaining(&mut self, on: bool) {
        self.use_command_chaining = on;
    }

    /// Starts a session: waits for the in-process lock, then begins the channel's exclusive
    /// section. Both end when the returned guard is dropped.
    ///
    /// While a session is open, the card's own methods (on any clone) wait for it to end: send
    /// through the session.
    ///
    /// # Errors
    /// What [`CardChannel::begin_exclusive`] fails with (`TokenNotFound` when the card is gone).
    pub async fn begin_session(&self) -> Result<CardSession> {
        let guard = self.lock.lock_arc().await;
        self.channel.begin_exclusive().await?;
        Ok(CardSession {
            card: self.clone(),
            _guard: guard,
        })
    }

    /// Sends raw bytes and returns the raw response, status word included; nothing is added.
    /// Takes the session lock for the exchange.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn transmit(&self, apdu: &[u8]) -> Result<Vec<u8>> {
        let session = self.begin_session().await?;
        session.transmit(apdu).await
    }

    /// Sends a command, handling 61xx, 6Cxx, chaining and extended length; returns the final
    /// response whatever its status word. Takes the session lock for the exchange.
    ///
    /// # Errors
    /// Transport errors; `BadParameter` if the command cannot be sent with the settings
    /// (too long with neither extended length nor chaining); `CorruptedData` for a response
    /// shorter than a status word or an endless 61xx series.
    pub async fn send(&self, command: &Command) -> Result<Response> {
        let session = self.begin_session().await?;
        session.send(command).await
    }

    /// Sends `ins p1 p2` with [`SmartCard::cla`], `data` and `le`, and returns the response data
    /// on 9000. Takes the session lock for the exchange.
    ///
    /// # Errors
    /// As [`SmartCard::send`], and [`Error::from_status`] of any status word but 9000.
    pub async fn send_ins(
        &self,
        ins: impl Into<Ins>,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<usize>,
    ) -> Result<Vec<u8>> {
        let session = self.begin_session().await?;
        session.send_ins(ins, p1, p2, data, le).await
    }

    // -- the exchange logic, run with the session held --

    async fn exchange(&self, command: &Command, extended: bool) -> Result<Response> {
        let bytes = Zeroizing::new(command.encode(extended)?);
        let redact = if command.is_sensitive() && !command.data.is_empty() {
            let start = if extended { 7 } else { 5 };
            Some((start, command.data.len()))
        } else {
            None
        };
        let raw = self.transmit_traced(&bytes, redact).await?;
        Response::decode(&raw)
    }

    async fn transmit_traced(
        &self,
        bytes: &[u8],
        redact: Option<(usize, usize)>,
    ) -> Result<Vec<u8>> {
        let result = self.channel.transmit(bytes).await;
        let command = ApduTrace { bytes, redact };
        match &result {
            Ok(response) => tracing::trace!(
                target: TRACE_TARGET,
                command = %command,
                response = %Hex(response),
                "APDU"
            ),
            Err(error) => tracing::trace!(
                target: TRACE_TARGET,
                command = %command,
                %error,
                "APDU failed"
            ),
        }
        result
    }

    async fn transmit_raw(&self, apdu: &[u8]) -> Result<Vec<u8>> {
        self.transmit_traced(apdu, raw_redaction(apdu)).await
    }

    async fn send_locked(&self, command: &Command) -> Result<Response> {
        let caps = self.channel.caps();
        if command.needs_extended()
            && self.use_extended_length
            && extended_len(command).is_some_and(|n| n <= caps.max_command)
        {
            return self.run(command, true).await;
        }
        let le = command.le.map(|le| le.min(Command::LE_MAX_SHORT));
        if command.data.len() <= Command::LC_MAX_SHORT {
            // Short form; a larger Le is asked for 256 at a time through 61xx.
            if le == command.le {
                return self.run(command, false).await;
            }
            return self.run(&command.clone().with_le_opt(le), false).await;
        }
        if !self.use_command_chaining {
            return Err(Error::bad_parameter(
                "command data too long for one APDU, and neither extended length nor command \
                 chaining is in use",
            ));
        }
        // ISO 7816-4 §5.1.1.1: every block but the last has the chaining bit and no Le.
        let mut blocks = command.data.chunks(Command::LC_MAX_SHORT).peekable();
        while let Some(chunk) = blocks.next() {
            let last = blocks.peek().is_none();
            let cla = if last {
                command.cla
            } else {
                command.cla | CLA_CHAINING
            };
            let mut block = Command::new(cla, command.ins, command.p1, command.p2)
                .with_data(chunk)
                .with_le_opt(if last { le } else { None });
            if command.is_sensitive() {
                block = block.sensitive();
            }
            if last {
                return self.run(&block, false).await;
            }
            let response = self.exchange(&block, false).await?;
            if response.sw != StatusWord::SUCCESS {
                return Ok(response);
            }
        }
        Err(Error::bad_parameter("empty command chain"))
    }

    /// Sends one APDU, then resends once on 6Cxx and follows 61xx with GET RESPONSE.
    async fn run(&self, command: &Command, extended: bool) -> Result<Response> {
        let mut response = self.exchange(command, extended).await?;
        let mut resent = false;
        if let Some(le) = wrong_le(response.sw) {
            resent = true;
            let again = command.clone().with_le(le);
            response = self.exchange(&again, extended).await?;
        }
        let mut data = std::mem::take(&mut response.data);
        let mut sw = response.sw;
        let mut rounds = 0;
        while sw.sw1() == 0x61 {
            rounds += 1;
            if rounds > MAX_GET_RESPONSE_ROUNDS {
                return Err(Error::corrupted("card keeps answering 61xx"));
            }
            let le = match sw.sw2() {
                0 => Command::LE_MAX_SHORT,
                n => usize::from(n),
            };
            let get =
                Command::new(get_response_cla(command.cla), Ins::GET_RESPONSE, 0, 0).with_le(le);
            let mut next = self.exchange(&get, false).await?;
            if let (Some(le), false) = (wrong_le(next.sw), resent) {
                resent = true;
                next = self.exchange(&get.with_le(le), false).await?;
            }
            if data.len().saturating_add(next.data.len()) > MAX_RESPONSE_DATA {
                return Err(Error::corrupted("response data longer than 1 MiB"));
            }
            data.extend_from_slice(&next.data);
            sw = next.sw;
        }
        Ok(Response { data, sw })
    }
}

/// The length of the extended encoding, without encoding (and copying the data again), or
/// `None` if the command does not fit the extended form.
fn extended_len(command: &Command) -> Option<usize> {
    let data = command.data.len();
    if data > Command::LC_MAX_EXTENDED || command.le.is_some_and(|le| le > Command::LE_MAX_EXTENDED)
    {
        return None;
    }
    let lc_field = if data > 0 { 3 + data } else { 0 };
    let le_field = match (command.le, data) {
        (None, _) => 0,
        (Some(_), 0) => 3,
        (Some(_), _) => 2,
    };
    Some(4 + lc_field + le_field)
}

/// The Le a 6Cxx status asks for (00 meaning 256).
fn wrong_le(sw: StatusWord) -> Option<usize> {
    (sw.sw1() == 0x6C).then(|| match sw.sw2() {
        0 => Command::LE_MAX_SHORT,
        n => usize::from(n),
    })
}

/// Where the data field of a raw APDU is, when it must not be traced.
fn raw_redaction(apdu: &[u8]) -> Option<(usize, usize)> {
    match Command::decode(apdu) {
        Ok(c) if c.is_sensitive() && !c.data.is_empty() => {
            let start = if apdu.get(4) == Some(&0) { 7 } else { 5 };
            Some((start, c.data.len()))
        }
        Ok(_) => None,
        // Not a well-formed APDU: if the header names a sensitive instruction, hide all
        // that follows it.
        Err(_) => match apdu {
            &[cla, ins, p1, p2, ref rest @ ..]
                if !rest.is_empty() && Command::new(cla, ins, p1, p2).is_sensitive() =>
            {
                Some((4, rest.len()))
            }
            _ => None,
        },
    }
}

/// A command APDU in hex, with a byte range shown as `<N bytes redacted>`.
struct ApduTrace<'a> {
    bytes: &'a [u8],
    redact: Option<(usize, usize)>,
}

impl fmt::Display for ApduTrace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((start, len)) = self.redact else {
            return Hex(self.bytes).fmt(f);
        };
        let head = self.bytes.get(..start).unwrap_or(self.bytes);
        let tail = self.bytes.get(start.saturating_add(len)..).unwrap_or(&[]);
        write!(f, "{} <{len} bytes redacted>", Hex(head))?;
        if !tail.is_empty() {
            write!(f, " {}", Hex(tail))?;
        }
        Ok(())
    }
}

/// An open session on a [`SmartCard`]: the in-process lock and the channel's exclusive
/// section are held until it is dropped (or [`CardSession::end`]ed).
///
/// It has the card's sending methods, which run without taking the lock again.
pub struct CardSession {
    card: SmartCard,
    _guard: MutexGuardArc<()>,
}

impl fmt::Debug for CardSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardSession")
            .field("card", &self.card)
            .finish_non_exhaustive()
    }
}

impl CardSession {
    /// The card, with the settings it had when the session began.
    pub fn card(&self) -> &SmartCard {
        &self.card
    }

    /// Sends raw bytes and returns the raw response, status word included.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn transmit(&self, apdu: &[u8]) -> Result<Vec<u8>> {
        self.card.transmit_raw(apdu).await
    }

    /// As [`SmartCard::send`], within this session.
    ///
    /// # Errors
    /// As [`SmartCard::send`].
    pub async fn send(&self, command: &Command) -> Result<Response> {
        self.card.send_locked(command).await
    }

    /// As [`SmartCard::send_ins`], within this session.
    ///
    /// # Errors
    /// As [`SmartCard::send_ins`].
    pub async fn send_ins(
        &self,
        ins: impl Into<Ins>,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<usize>,
    ) -> Result<Vec<u8>> {
        let command = Command::new(self.card.cla, ins, p1, p2)
            .with_data(data)
            .with_le_opt(le);
        self.send(&command).await?.into_result()
    }

    /// SELECTs an application by its AID (ISO 7816-4 §11.1.1: P1 04 by DF name, P2 00 first
    /// occurrence with the FCI returned, Le 256).
    ///
    /// Returns the card's answer when it selected the application: 9000, or a warning such as
    /// 6285 (selected, in termination state) that the caller may look at in
    /// [`Response::sw`]. Returns `None` when the application is not on the card: 6A82, and the
    /// 6A86, 6B00, 6D00 and 6E00 some cards answer instead.
    ///
    /// # Errors
    /// Transport errors, and [`Error::from_status`] for any other status word.
    pub async fn select_application(&self, aid: &[u8]) -> Result<Option<Response>> {
        let command = Command::new(self.card.cla, Ins::SELECT, 0x04, 0x00)
            .with_data(aid)
            .with_le(Command::LE_MAX_SHORT);
        let response = self.send(&command).await?;
        let sw = response.sw;
        if sw == StatusWord::SUCCESS || matches!(sw.sw1(), 0x62 | 0x63) {
            return Ok(Some(response));
        }
        if matches!(
            sw,
            StatusWord::FILE_NOT_FOUND
                | StatusWord::INCORRECT_P1P2
                | StatusWord::WRONG_P1P2
                | StatusWord::INS_NOT_SUPPORTED
                | StatusWord::CLA_NOT_SUPPORTED
        ) {
            return Ok(None);
        }
        Err(Error::from_status(sw))
    }

    /// Ends the session (the same as dropping it).
    pub fn end(self) {}
}

impl Drop for CardSession {
    fn drop(&mut self) {
        // Runs before the lock guard field is dropped: the exclusive section ends first.
        self.card.channel.end_exclusive();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorCode;
    use async_trait::async_trait;
    use std::collections::VecDeque;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct ThreadWaker(std::thread::Thread);

    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs a future to completion on this thread.
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    const YUBIKEY_ATR: &str =
        "3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40";

    /// A channel that checks each command against a script and answers from it.
    struct Script {
        steps: std::sync::Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
        caps: ChannelCaps,
        atr: Vec<u8>,
        begins: AtomicUsize,
        ends: AtomicUsize,
    }

    impl Script {
        fn new(steps: &[(&str, &str)]) -> Arc<Self> {
            Self::with(steps, ChannelCaps::default(), hex("3B 00"))
        }

        fn with(steps: &[(&str, &str)], caps: ChannelCaps, atr: Vec<u8>) -> Arc<Self> {
            Arc::new(Self {
                steps: std::sync::Mutex::new(steps.iter().map(|(c, r)| (hex(c), hex(r))).collect()),
                caps,
                atr,
                begins: AtomicUsize::new(0),
                ends: AtomicUsize::new(0),
            })
        }

        fn push(&self, command: Vec<u8>, response: &str) {
            self.steps
                .lock()
                .unwrap()
                .push_back((command, hex(response)));
        }

        fn assert_done(&self) {
            assert!(self.steps.lock().unwrap().is_empty(), "script not finished");
        }
    }

    #[async_trait]
    impl CardChannel for Script {
        async fn transmit(&self, command: &[u8]) -> Result<Vec<u8>> {
            let (expected, response) = self
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected APDU");
            assert_eq!(Hex(command).to_string(), Hex(&expected).to_string());
            Ok(response)
        }

        fn caps(&self) -> ChannelCaps {
            self.caps
        }

        fn atr(&self) -> Vec<u8> {
            self.atr.clone()
        }

        async fn begin_exclusive(&self) -> Result<()> {
            self.begins.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn end_exclusive(&self) {
            self.ends.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn defaults_come_from_caps_and_atr() {
        let ch = Script::with(&[], ChannelCaps::default(), hex(YUBIKEY_ATR));
        let card = SmartCard::new(ch);
        assert_eq!(card.cla(), 0);
        assert!(!card.use_extended_length());
        assert!(card.use_command_chaining());
        assert_eq!(card.atr().unwrap().as_bytes(), hex(YUBIKEY_ATR));

        let caps = ChannelCaps {
            extended_length: true,
            max_command: 65_544,
            max_response: 65_538,
        };
        let card = SmartCard::new(Script::with(&[], caps, hex("3B 00 00")));
        assert!(card.use_extended_length());
        assert!(!card.use_command_chaining());
        assert!(card.atr().is_none());
        assert_eq!(card.atr_bytes(), hex("3B 00 00"));
    }

    #[test]
    fn get_response_chain_is_concatenated() {
        let ch = Script::new(&[
            ("00 CB 3F FF 05 5C 03 5F C1 02 00", "01 02 61 00"),
            ("00 C0 00 00 00", "03 04 61 02"),
            ("00 C0 00 00 02", "05 06 90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let data =
            block_on(card.send_ins(0xCB, 0x3F, 0xFF, &hex("5C 03 5F C1 02"), Some(256))).unwrap();
        assert_eq!(data, [1, 2, 3, 4, 5, 6]);
        ch.assert_done();
    }

    #[test]
    fn wrong_le_is_resent_once() {
        let ch = Script::new(&[("00 CA 00 6E 00", "6C 10"), ("00 CA 00 6E 10", "6C 08")]);
        let card = SmartCard::new(ch.clone());
        let cmd = Command::new(0x00, Ins::GET_DATA, 0x00, 0x6E).with_le(256);
        let r = block_on(card.send(&cmd)).unwrap();
        // The second 6Cxx is returned, not chased.
        assert_eq!(r.sw, StatusWord(0x6C08));
        ch.assert_done();

        let ch = Script::new(&[
            ("00 84 00 00 00", "6C 08"),
            ("00 84 00 00 08", "AA 61 01"),
            ("00 C0 00 00 01", "BB 90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let data = block_on(card.send_ins(Ins::GET_CHALLENGE, 0, 0, &[], Some(256))).unwrap();
        assert_eq!(data, [0xAA, 0xBB]);
        ch.assert_done();
    }

    #[test]
    fn command_chaining_splits_into_blocks() {
        let data: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let ch = Script::with(&[], ChannelCaps::default(), hex(YUBIKEY_ATR));
        let cmd = Command::new(0x00, Ins::PUT_DATA_ODD, 0x3F, 0xFF)
            .with_data(&data)
            .with_le(256);
        let blocks = [
            (0x10, 0..255, None),
            (0x10, 255..510, None),
            (0x00, 510..600, Some(256)),
        ];
        for (cla, range, le) in blocks {
            let block = Command::new(cla, Ins::PUT_DATA_ODD, 0x3F, 0xFF)
                .with_data(&data[range])
                .with_le_opt(le);
            ch.push(block.encode_short().unwrap(), "90 00");
        }
        let card = SmartCard::new(ch.clone());
        assert!(card.use_command_chaining());
        let r = block_on(card.send(&cmd)).unwrap();
        assert!(r.is_ok());
        ch.assert_done();

        // A refused block ends the chain with its status.
        let ch = Script::with(&[], ChannelCaps::default(), hex(YUBIKEY_ATR));
        let first = Command::new(0x10, Ins::PUT_DATA_ODD, 0x3F, 0xFF).with_data(&data[..255]);
        ch.push(first.encode_short().unwrap(), "6A 84");
        let card = SmartCard::new(ch.clone());
        let e = block_on(card.send_ins(Ins::PUT_DATA_ODD, 0x3F, 0xFF, &data, None)).unwrap_err();
        assert_eq!(e.status_word(), Some(StatusWord::NOT_ENOUGH_MEMORY));
        ch.assert_done();

        // Neither chaining nor extended length: refused before anything is sent.
        let mut card = SmartCard::new(Script::new(&[]));
        assert!(!card.use_command_chaining());
        let e = block_on(card.send(&cmd)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
        card.set_use_command_chaining(true);
        assert!(card.use_command_chaining());
    }

    #[test]
    fn extended_length_when_enabled() {
        let caps = ChannelCaps {
            extended_length: true,
            max_command: 65_544,
            max_response: 65_538,
        };
        let data = vec![0x5A; 300];
        let cmd = Command::new(0x00, Ins::PUT_DATA_ODD, 0x3F, 0xFF)
            .with_data(&data)
            .with_le(1000);
        let ch = Script::with(&[], caps, hex(YUBIKEY_ATR));
        ch.push(cmd.encode_extended().unwrap(), "12 34 90 00");
        let card = SmartCard::new(ch.clone());
        assert_eq!(block_on(card.send(&cmd)).unwrap().data, [0x12, 0x34]);
        ch.assert_done();

        // Short commands stay short even with extended length on.
        let ch = Script::with(&[("00 A4 04 00 02 A0 00", "90 00")], caps, hex(YUBIKEY_ATR));
        let card = SmartCard::new(ch.clone());
        block_on(card.send_ins(Ins::SELECT, 4, 0, &[0xA0, 0], None)).unwrap();
        ch.assert_done();

        // The reader takes too little for this extended APDU: chaining instead.
        let small = ChannelCaps {
            max_command: 261,
            ..caps
        };
        let ch = Script::with(&[], small, hex(YUBIKEY_ATR));
        ch.push(
            Command::new(0x10, 0xDB, 0x3F, 0xFF)
                .with_data(&data[..255])
                .encode_short()
                .unwrap(),
            "90 00",
        );
        ch.push(
            Command::new(0x00, 0xDB, 0x3F, 0xFF)
                .with_data(&data[255..])
                .with_le(256)
                .encode_short()
                .unwrap(),
            "90 00",
        );
        let card = SmartCard::new(ch.clone());
        block_on(card.send(&cmd)).unwrap();
        ch.assert_done();

        // Without extended length a large Le becomes 256 and 61xx does the rest.
        let ch = Script::new(&[
            ("00 B0 00 00 00", "AA 61 01"),
            ("00 C0 00 00 01", "BB 90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let data = block_on(card.send_ins(Ins::READ_BINARY, 0, 0, &[], Some(4096))).unwrap();
        assert_eq!(data, [0xAA, 0xBB]);
        ch.assert_done();
    }

    #[test]
    fn extended_len_matches_the_encoding() {
        for data in [0usize, 1, 255, 256, 65_535] {
            for le in [None, Some(1), Some(256), Some(65_536)] {
                let c = Command::new(0, 0xDB, 0, 0)
                    .with_data(vec![0; data])
                    .with_le_opt(le);
                assert_eq!(extended_len(&c), Some(c.encode_extended().unwrap().len()));
            }
        }
        let too_long = Command::new(0, 0xDB, 0, 0).with_data(vec![0; 65_536]);
        assert_eq!(extended_len(&too_long), None);
    }

    #[test]
    fn get_response_after_a_proprietary_command_is_interindustry() {
        // FIDO's NFCCTAP_MSG is class 80; its 61xx is collected with 00 C0, not 80 C0.
        let ch = Script::new(&[
            ("80 10 80 00 01 04 00", "01 61 01"),
            ("00 C0 00 00 01", "02 90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let r = block_on(
            card.send(
                &Command::new(0x80, Ins(0x10), 0x80, 0x00)
                    .with_data([0x04])
                    .with_le(256),
            ),
        )
        .unwrap();
        assert_eq!((r.data, r.sw), (vec![1, 2], StatusWord::SUCCESS));
        ch.assert_done();
        assert_eq!(get_response_cla(0x81), 0x01);
        assert_eq!(get_response_cla(0x10), 0x00);
    }

    #[test]
    fn endless_61xx_is_cut_off() {
        let ch = Script::new(&[("00 C0 00 00 00", "61 00")]);
        for _ in 0..MAX_GET_RESPONSE_ROUNDS {
            ch.push(hex("00 C0 00 00 00"), "61 00");
        }
        let card = SmartCard::new(ch.clone());
        let e = block_on(card.send(&Command::new(0, 0xC0, 0, 0).with_le(256))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CorruptedData);
        ch.assert_done();
    }

    #[test]
    fn session_lock_and_exclusive_section() {
        let ch = Script::new(&[
            ("00 A4 04 00 01 AA", "90 00"),
            ("00 A4 04 00 01 BB", "90 00"),
            ("00 A4 04 00 01 CC", "90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let other = card.clone();

        let session = block_on(card.begin_session()).unwrap();
        assert_eq!(ch.begins.load(Ordering::SeqCst), 1);
        block_on(session.send_ins(Ins::SELECT, 4, 0, &[0xAA], None)).unwrap();

        // A command from another clone waits for the session.
        let mut waiting = std::pin::pin!(other.send_ins(Ins::SELECT, 4, 0, &[0xBB], None));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ch.ends.load(Ordering::SeqCst), 0);

        session.end();
        assert_eq!(ch.ends.load(Ordering::SeqCst), 1);
        block_on(waiting).unwrap();
        // Outside a session, the exchange had its own exclusive section.
        assert_eq!(ch.begins.load(Ordering::SeqCst), 2);
        assert_eq!(ch.ends.load(Ordering::SeqCst), 2);

        // Dropping a session ends it too.
        {
            let s = block_on(other.begin_session()).unwrap();
            block_on(s.transmit(&hex("00 A4 04 00 01 CC"))).unwrap();
        }
        assert_eq!(ch.ends.load(Ordering::SeqCst), 3);
        ch.assert_done();
    }

    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let card = SmartCard::new(Script::new(&[]));
        let f = card.send_ins(Ins::SELECT, 4, 0, &[], None);
        assert_send(&f);
        let s = card.begin_session();
        assert_send(&s);
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn traced<T>(f: impl FnOnce() -> T) -> (T, String) {
        // tracing caches each callsite's interest. While a single dispatcher is registered it
        // computes that interest from the *registering thread's* default, so a parallel test
        // that hits the APDU callsite first would cache "never" for everyone. Two dispatchers
        // kept alive for the whole run make it compute over all live dispatchers, under a lock.
        static KEEP: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
        KEEP.get_or_init(|| {
            let none = || tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
            [none(), none()]
        });
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, || {
            // Recompute what may have been cached before KEEP existed.
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    #[test]
    fn traces_redact_pins() {
        let ch = Script::new(&[
            ("00 20 00 80 08 31 32 33 34 35 36 FF FF", "63 C2"),
            ("00 CB 3F FF 05 5C 03 5F C1 02 00", "53 00 90 00"),
        ]);
        let card = SmartCard::new(ch.clone());
        let (result, log) = traced(|| {
            let verify = block_on(card.send_ins(
                Ins::VERIFY,
                0x00,
                0x80,
                &hex("31 32 33 34 35 36 FF FF"),
                None,
            ));
            let get = block_on(card.send_ins(0xCB, 0x3F, 0xFF, &hex("5C 03 5F C1 02"), Some(256)));
            (verify, get)
        });
        assert_eq!(result.0.unwrap_err().retries_left(), Some(2));
        result.1.unwrap();
        assert!(log.contains("tokenkit::apdu"), "{log}");
        assert!(log.contains("00 20 00 80 08 <8 bytes redacted>"), "{log}");
        assert!(log.contains("63 C2"), "{log}");
        assert!(!log.contains("31 32 33 34 35 36"), "{log}");
        assert!(!log.contains("313233343536"), "{log}");
        // Other commands are traced in full.
        assert!(log.contains("00 CB 3F FF 05 5C 03 5F C1 02 00"), "{log}");
        assert!(log.contains("53 00 90 00"), "{log}");
        ch.assert_done();
    }

    #[test]
    fn traces_redact_raw_and_chained_sensitive_commands() {
        let pin = hex("31 32 33 34 35 36");
        let mut key = pin.clone();
        key.resize(300, 0x31);
        let ch = Script::with(&[], ChannelCaps::default(), hex(YUBIKEY_ATR));
        ch.push(hex("00 20 00 81 06 31 32 33 34 35 36"), "90 00");
        ch.push(hex("00 20 00 81 07 31 32 33 34 35 36"), "67 00"); // malformed Lc
        ch.push(
            Command::new(0x10, Ins::IMPORT_KEY, 0x11, 0x9A)
                .with_data(&key[..255])
                .encode_short()
                .unwrap(),
            "90 00",
        );
        ch.push(
            Command::new(0x00, Ins::IMPORT_KEY, 0x11, 0x9A)
                .with_data(&key[255..])
                .encode_short()
                .unwrap(),
            "90 00",
        );
        let card = SmartCard::new(ch.clone());
        let (_, log) = traced(|| {
            block_on(card.transmit(&hex("00 20 00 81 06 31 32 33 34 35 36"))).unwrap();
            block_on(card.transmit(&hex("00 20 00 81 07 31 32 33 34 35 36"))).unwrap();
            block_on(card.send_ins(Ins::IMPORT_KEY, 0x11, 0x9A, &key, None)).unwrap();
        });
        assert!(log.contains("00 20 00 81 06 <6 bytes redacted>"), "{log}");
        assert!(log.contains("00 20 00 81 <7 bytes redacted>"), "{log}");
        assert!(log.contains("10 FE 11 9A FF <255 bytes redacted>"), "{log}");
        assert!(log.contains("00 FE 11 9A 2D <45 bytes redacted>"), "{log}");
        assert!(!log.contains("31 32 33"), "{log}");
        ch.assert_done();
    }
}
