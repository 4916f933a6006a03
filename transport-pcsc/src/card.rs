//! A connected card: [`PcscCard`], the [`CardChannel`] over `SCardConnect`ed card, with its
//! blocking calls on a thread of its own.
//!
//! PC/SC transactions are scoped (`SCardBeginTransaction` .. `SCardEndTransaction`) and the
//! `pcsc` crate models one as a guard borrowing the card, while [`CardChannel`] splits begin
//! and end into two calls. One I/O thread per card squares the two: it owns the card, and while
//! an exclusive section is open it serves requests from inside the guard's scope.

use core::fmt;
use std::ffi::CString;
use std::sync::mpsc;

use pcsc::{Attribute, Card, Context, Disposition, Protocols, Scope, ShareMode};
use token_core::{async_trait, Atr, CardChannel, ChannelCaps, Error, Result};
use zeroize::Zeroizing;

use crate::error::from_pcsc;
use crate::reply;

/// T=0 or T=1, whichever the card and reader agree on.
const PROTOCOLS: Protocols = Protocols::T0.union(Protocols::T1);

/// The longest short command APDU: header, Lc, 255 data bytes, Le (ISO 7816-4 §5.1).
const SHORT_MAX_COMMAND: usize = 261;

/// The longest extended response APDU: 65536 data bytes and the status word.
const EXTENDED_MAX_RESPONSE: usize = 65_538;

type Reply<T> = reply::Sender<Result<T>>;

enum Request {
    Transmit(Zeroizing<Vec<u8>>, Reply<Vec<u8>>),
    /// Begin an exclusive section. No answer: the caller does not wait for it, and a failure
    /// is the answer to every command of the section instead (see [`serve`]).
    Begin,
    End,
    /// The last handle is going: end any transaction, disconnect, release the context.
    Close,
    Reset(Reply<()>),
}

/// A card in a PC/SC reader, connected in shared mode (`SCARD_SHARE_SHARED`, T=0 or T=1): the
/// [`CardChannel`] the PC/SC slots hand to drivers.
///
/// Every PC/SC call runs on the card's own I/O thread, never on the async executor.
/// [`CardChannel::begin_exclusive`] is `SCardBeginTransaction`, queued on that thread ahead
/// of the section's first command rather than waited for (one thread round trip less per
/// section; if it fails, every command of the section fails with its error), and
/// [`CardChannel::end_exclusive`] `SCardEndTransaction(SCARD_LEAVE_CARD)`. The thread ends, leaving the card as it is, when
/// the last handle is dropped.
///
/// When another program resets the card, the next call reconnects (`SCardReconnect`) and
/// fails once with `CommunicationError` carrying `SCARD_W_RESET_CARD`
/// ([`crate::is_card_reset`]): the card is usable again, but the application must be selected
/// again and a PIN verified before the reset no longer counts.
pub struct PcscCard {
    reader: String,
    requests: mpsc::Sender<Request>,
    /// Disconnected when the I/O thread has released everything of PC/SC's.
    finished: std::sync::Mutex<mpsc::Receiver<()>>,
    atr: Vec<u8>,
    caps: ChannelCaps,
    /// Resets seen: by another program (`SCARD_W_RESET_CARD`) or by [`CardChannel::reset`].
    resets: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for PcscCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcscCard")
            .field("reader", &self.reader)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl PcscCard {
    /// Connects to the card in the reader named `reader` (as PC/SC lists it).
    ///
    /// # Errors
    /// `TokenNotFound` when the reader is empty or unknown; `CommunicationError` when the card
    /// is mute, held exclusively by another program, or PC/SC is not running. The PC/SC code
    /// is underneath ([`token_core::Underlying::Pcsc`]).
    pub async fn connect(reader: &str) -> Result<Self> {
        let name = CString::new(reader)
            .map_err(|_| Error::bad_parameter("a reader name cannot contain a NUL byte"))?;
        Self::connect_reader(name).await
    }

    pub(crate) async fn connect_reader(reader: CString) -> Result<Self> {
        let (requests, rx) = mpsc::channel();
        let (finished_tx, finished) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = reply::channel();
        let name = reader.to_string_lossy().into_owned();
        std::thread::Builder::new()
            .name("tokenkit-pcsc-card".into())
            .spawn(move || {
                io_thread(&reader, ready_tx, &rx);
                // Everything of PC/SC's is released by now (card, context): say so.
                drop(finished_tx);
            })
            .map_err(|e| {
                Error::communication("cannot start the card's I/O thread").with_source(e)
            })?;
        let (atr, caps) = ready_rx.await.unwrap_or_else(|| Err(thread_ended()))?;
        Ok(Self {
            reader: name,
            requests,
            finished: std::sync::Mutex::new(finished),
            atr,
            caps,
            resets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The name of the reader the card is in.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    async fn call<T, F>(&self, make: F) -> Result<T>
    where
        F: FnOnce(Reply<T>) -> Request + Send,
        T: Send,
    {
        let (tx, rx) = reply::channel();
        self.requests.send(make(tx)).map_err(|_| thread_ended())?;
        let result = rx.await.unwrap_or_else(|| Err(thread_ended()));
        if matches!(&result, Err(e) if crate::is_card_reset(e)) {
            self.resets
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        result
    }
}

/// How long dropping the last handle waits for the I/O thread to let go of PC/SC.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for PcscCard {
    /// Ends the card's I/O thread and waits (at most two seconds) until it has
    /// disconnected and released its PC/SC context. A program that drops its hub and then
    /// exits must not have a thread still inside libpcsclite while the library's exit-time
    /// destructor frees the handle tables (a double free seen at `tokenctl` exit).
    fn drop(&mut self) {
        if self.requests.send(Request::Close).is_err() {
            return;
        }
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(CLOSE_TIMEOUT) {
            tracing::warn!(reader = %self.reader, "the card's I/O thread did not end in time");
        }
    }
}

#[async_trait]
impl CardChannel for PcscCard {
    async fn transmit(&self, command: &[u8]) -> Result<Vec<u8>> {
        let command = Zeroizing::new(command.to_vec());
        self.call(move |r| Request::Transmit(command, r)).await
    }

    fn caps(&self) -> ChannelCaps {
        self.caps
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    async fn begin_exclusive(&self) -> Result<()> {
        // Queued, not waited for: the thread begins the transaction before it serves the
        // section's first command, and answers that command with the error if it cannot.
        self.requests
            .send(Request::Begin)
            .map_err(|_| thread_ended())
    }

    fn end_exclusive(&self) {
        // Queued behind whatever the session sent; the thread ends the transaction in order.
        let _ = self.requests.send(Request::End);
    }

    async fn reset(&self) -> Result<()> {
        self.call(Request::Reset).await?;
        self.resets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    fn reset_count(&self) -> u64 {
        self.resets.load(std::sync::atomic::Ordering::Acquire)
    }
}

fn thread_ended() -> Error {
    Error::communication("the card's I/O thread has ended")
}

/// What the channel can carry: extended length when the reader's `SCARD_ATTR_MAXINPUT` takes
/// more than a short APDU and the ATR announces extended Lc/Le; otherwise short APDUs.
fn caps_of(card: &Card, atr: &[u8]) -> ChannelCaps {
    let max_input = card
        .get_attribute_owned(Attribute::Maxinput)
        .ok()
        .and_then(|v| parse_dword(&v));
    caps_from(max_input, atr)
}

fn caps_from(max_input: Option<usize>, atr: &[u8]) -> ChannelCaps {
    let Some(max_input) = max_input.filter(|&n| n > 0) else {
        return ChannelCaps::default();
    };
    let card_extended = Atr::parse(atr).is_ok_and(|a| a.supports_extended_length());
    let extended_length = card_extended && max_input > SHORT_MAX_COMMAND;
    ChannelCaps {
        extended_length,
        max_command: max_input,
        max_response: if extended_length {
            EXTENDED_MAX_RESPONSE
        } else {
            ChannelCaps::default().max_response
        },
    }
}

/// A reader attribute holding a DWORD: 4 bytes from IFD handlers such as CCID, 8 where the
/// platform's DWORD is 64 bits; native byte order.
fn parse_dword(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut raw = [0u8; 8];
    let value = if cfg!(target_endian = "little") {
        raw[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(raw)
    } else {
        raw[8 - bytes.len()..].copy_from_slice(bytes);
        u64::from_be_bytes(raw)
    };
    usize::try_from(value).ok()
}

fn open(reader: &CString) -> Result<(Card, Vec<u8>, ChannelCaps)> {
    // A context of the card's own: pcsclite serializes calls on one context, and the slot
    // monitor's context sits in SCardGetStatusChange.
    let context =
        Context::establish(Scope::User).map_err(|e| from_pcsc(e, "reach the PC/SC service"))?;
    let card = context
        .connect(reader, ShareMode::Shared, PROTOCOLS)
        .map_err(|e| from_pcsc(e, "connect to the card"))?;
    let status = card
        .status2_owned()
        .map_err(|e| from_pcsc(e, "read the card's status"))?;
    let atr = status.atr().to_vec();
    let caps = caps_of(&card, &atr);
    Ok((card, atr, caps))
}

fn io_thread(
    reader: &CString,
    ready: reply::Sender<Result<(Vec<u8>, ChannelCaps)>>,
    requests: &mpsc::Receiver<Request>,
) {
    let mut card = match open(reader) {
        Ok((card, atr, caps)) => {
            ready.send(Ok((atr, caps)));
            card
        }
        Err(e) => {
            ready.send(Err(e));
            return;
        }
    };
    let mut buffer = Zeroizing::new(vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED]);
    serve(&mut card, &mut buffer, requests);
    // Leave the card as it is for other programs (the pcsc crate's drop would reset it).
    if let Err((card, e)) = card.disconnect(Disposition::LeaveCard) {
        tracing::debug!(error = %e, "SCardDisconnect failed");
        drop(card);
    }
}

/// A card connection the I/O thread can use: the card itself, or the card inside a
/// transaction.
trait Connection {
    fn card(&self) -> &Card;
    fn reconnect(&mut self, disposition: Disposition) -> Result<(), pcsc::Error>;
}

impl Connection for Card {
    fn card(&self) -> &Card {
        self
    }
    fn reconnect(&mut self, disposition: Disposition) -> Result<(), pcsc::Error> {
        Card::reconnect(self, ShareMode::Shared, PROTOCOLS, disposition)
    }
}

impl Connection for pcsc::Transaction<'_> {
    fn card(&self) -> &Card {
        self
    }
    fn reconnect(&mut self, disposition: Disposition) -> Result<(), pcsc::Error> {
        pcsc::Transaction::reconnect(self, ShareMode::Shared, PROTOCOLS, disposition)
    }
}

/// Serves requests until every handle is gone.
fn serve(card: &mut Card, buffer: &mut [u8], requests: &mpsc::Receiver<Request>) {
    while let Ok(request) = requests.recv() {
        match request {
            Request::Transmit(command, reply) => reply.send(exchange(card, &command, buffer)),
            Request::Reset(reply) => reply.send(reset(card)),
            Request::End => tracing::debug!("end of an exclusive section that was not begun"),
            Request::Close => return,
            Request::Begin => match card.transaction2() {
                Ok(transaction) => {
                    if !exclusive(transaction, buffer, requests) {
                        return;
                    }
                }
                Err((card, e)) => {
                    let error = recover(card, e, "begin an exclusive session");
                    if !failed_section(error, requests) {
                        return;
                    }
                }
            },
        }
    }
}

/// A section whose transaction could not begin: its first command gets the error, the
/// others the same code (so a reset by another program is counted once), and none reaches
/// the card outside a transaction, until the section ends; false when every handle is gone.
fn failed_section(error: Error, requests: &mpsc::Receiver<Request>) -> bool {
    let mut depth = 1u32;
    let mut first = Some(error.clone());
    let mut next = || {
        first.take().unwrap_or_else(|| {
            Error::with_code(error.code(), "the exclusive section could not begin")
        })
    };
    while let Ok(request) = requests.recv() {
        match request {
            Request::Transmit(_, reply) => reply.send(Err(next())),
            Request::Reset(reply) => reply.send(Err(next())),
            Request::Begin => depth += 1,
            Request::Close => return false,
            Request::End => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
        }
    }
    false
}

/// How long the I/O thread waits awake for the next request of an exclusive section before
/// it sleeps: inside a section the next command follows as soon as the caller has read the
/// answer, and waking a sleeping thread for it costs about as long again, on every APDU.
/// Outside sections the thread sleeps at once.
const SECTION_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The next request of an exclusive section: polled for [`SECTION_SPIN`], then waited for.
fn next_in_section(requests: &mpsc::Receiver<Request>) -> Result<Request, mpsc::RecvError> {
    let started = std::time::Instant::now();
    loop {
        match requests.try_recv() {
            Ok(request) => return Ok(request),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) if started.elapsed() < SECTION_SPIN => {
                std::hint::spin_loop();
            }
            Err(mpsc::TryRecvError::Empty) => return requests.recv(),
        }
    }
}

/// Serves requests inside a transaction until it ends; false when every handle is gone.
fn exclusive(
    mut transaction: pcsc::Transaction<'_>,
    buffer: &mut [u8],
    requests: &mpsc::Receiver<Request>,
) -> bool {
    let mut depth = 1u32;
    while let Ok(request) = next_in_section(requests) {
        match request {
            Request::Transmit(command, reply) => {
                reply.send(exchange(&mut transaction, &command, buffer));
            }
            Request::Reset(reply) => reply.send(reset(&mut transaction)),
            Request::Begin => depth += 1,
            // Dropping the transaction below ends it with SCARD_LEAVE_CARD.
            Request::Close => return false,
            Request::End => {
                depth -= 1;
                if depth == 0 {
                    if let Err((_, e)) = transaction.end(Disposition::LeaveCard) {
                        // The guard dropped here tries SCardEndTransaction once more.
                        tracing::debug!(error = %e, "SCardEndTransaction failed");
                    }
                    return true;
                }
            }
        }
    }
    // Dropping the transaction ends it with SCARD_LEAVE_CARD.
    false
}

/// One APDU exchange.
fn exchange(conn: &mut impl Connection, command: &[u8], buffer: &mut [u8]) -> Result<Vec<u8>> {
    let response = match conn.card().transmit(command, buffer) {
        Ok(response) => response.to_vec(),
        Err(e) => return Err(recover(conn, e, "transmit")),
    };
    if response.len() >= 2 {
        return Ok(response);
    }
    // No status word is no answer. vpcd reports a card that went away in the middle of a
    // command this way (success, nothing received); a real reader would not. Ask PC/SC
    // whether the card is still there.
    match conn.card().status2_owned() {
        Err(e) => Err(from_pcsc(e, "transmit")),
        Ok(status) if !status.status().contains(pcsc::Status::PRESENT) => {
            Err(from_pcsc(pcsc::Error::RemovedCard, "transmit"))
        }
        Ok(_) => Err(Error::communication(
            "transmit: the reader returned no status word (was the card pulled in the middle \
             of the command?)",
        )),
    }
}

fn reset(conn: &mut impl Connection) -> Result<()> {
    conn.reconnect(Disposition::ResetCard)
        .map_err(|e| from_pcsc(e, "reset the card"))
}

/// The error for a failed call; after `SCARD_W_RESET_CARD` (another program reset the card)
/// it first reconnects, so the next call works and the caller can select again.
fn recover(conn: &mut impl Connection, e: pcsc::Error, what: &'static str) -> Error {
    if e == pcsc::Error::ResetCard {
        if let Err(again) = conn.reconnect(Disposition::LeaveCard) {
            return from_pcsc(again, "reconnect after another program reset the card");
        }
        tracing::info!("the card was reset by another program; reconnected");
    }
    from_pcsc(e, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3B 8F 80 01 80 73 00 00 E0 ... is long; this one says "chaining and extended Lc/Le" in
    /// its card capabilities (third byte 0xC0).
    fn extended_atr() -> Vec<u8> {
        let mut atr = vec![0x3B, 0x85, 0x80, 0x01, 0x80, 0x73, 0x00, 0x00, 0xC0];
        let tck = atr.iter().skip(1).fold(0u8, |a, b| a ^ b);
        atr.push(tck);
        atr
    }

    #[test]
    fn dwords_parse_in_native_order_and_odd_sizes_are_refused() {
        let n: u32 = 65_544;
        assert_eq!(parse_dword(&n.to_ne_bytes()), Some(65_544));
        assert_eq!(parse_dword(&u64::from(n).to_ne_bytes()), Some(65_544));
        assert_eq!(parse_dword(&[]), None);
        assert_eq!(parse_dword(&[0; 9]), None);
    }

    #[test]
    fn extended_length_needs_both_reader_and_card() {
        let atr = extended_atr();
        assert!(Atr::parse(&atr).is_ok_and(|a| a.supports_extended_length()));
        let caps = caps_from(Some(65_544), &atr);
        assert!(caps.extended_length);
        assert_eq!(caps.max_command, 65_544);
        assert_eq!(caps.max_response, EXTENDED_MAX_RESPONSE);
        // A reader limited to short APDUs.
        assert!(!caps_from(Some(261), &atr).extended_length);
        // A reader that does not say: short.
        assert_eq!(caps_from(None, &atr), ChannelCaps::default());
        // A card that does not announce it.
        let short = [0x3B, 0x00];
        let caps = caps_from(Some(65_544), &short);
        assert!(!caps.extended_length);
        assert_eq!(caps.max_response, ChannelCaps::default().max_response);
    }
}
