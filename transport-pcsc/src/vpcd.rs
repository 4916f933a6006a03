//! The vpcd bridge: any [`CardSimulator`] as a card in a real pcscd, through vsmartcard's
//! virtual reader driver (Debian's `vsmartcard-vpcd`).
//!
//! pcscd loads vpcd from a reader.conf entry; vpcd listens on a TCP port (35963 by default,
//! the next one for its second reader) and the virtual card connects to it as a client. A
//! connection is a card in the reader; closing it is pulling the card out.
//!
//! Every message is a 2-byte big-endian length and the payload. A 1-byte payload from the
//! reader is a control (00 power off, 01 power on, 02 reset, 04 get ATR, which the card answers
//! with its ATR); anything longer is a command APDU, which the card answers with the response
//! APDU. The length field bounds a frame at 65535 bytes, so a frame never costs more than that
//! much memory, whatever its header claims.
//!
//! vpcd writes the length and the payload with two `send`s; with Nagle on its side and delayed
//! ACK on ours every APDU would wait ~40 ms for a timer, so the bridge sets `TCP_NODELAY` once
//! and `TCP_QUICKACK` before every read (Linux clears it again by itself).
//!
//! ```no_run
//! use hello_driver::HelloCard;
//! use transport_pcsc::vpcd::{VpcdBridge, DEFAULT_PORT};
//!
//! // The card is in "Virtual PCD 00 00" until the bridge is disconnected.
//! let card = Box::new(HelloCard::new(0x1234, [7; 32], "1234"));
//! let bridge = VpcdBridge::connect(("127.0.0.1", DEFAULT_PORT), card)?;
//! // ... use it through PC/SC ...
//! let card = bridge.disconnect()?; // pulled out; its state (keys, PIN tries) comes back
//! # drop(card);
//! # Ok::<(), token_core::Error>(())
//! ```

use core::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::SockRef;
use token_core::{CardSimulator, Error, Result};

/// vpcd's default port (`0x8C7B`), for reader `Virtual PCD 00 00`; the second reader listens
/// on the next port.
pub const DEFAULT_PORT: u16 = 35963;

/// How long [`VpcdBridge::connect`] waits for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Control bytes from the reader (vsmartcard's `VPCD_CTRL_*`).
const CTRL_OFF: u8 = 0x00;
const CTRL_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_ATR: u8 = 0x04;

/// A message from the reader, decoded from one frame's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// 00: power removed.
    PowerOff,
    /// 01: power applied (cold reset).
    PowerOn,
    /// 02: warm reset.
    Reset,
    /// 04: the reader asks for the ATR.
    GetAtr,
    /// A control byte vpcd does not define.
    UnknownControl(u8),
    /// A command APDU.
    Apdu(&'a [u8]),
}

impl<'a> Message<'a> {
    /// Decodes a payload; `None` for an empty one, which vpcd never sends.
    pub(crate) fn decode(payload: &'a [u8]) -> Option<Self> {
        Some(match payload {
            [] => return None,
            [CTRL_OFF] => Self::PowerOff,
            [CTRL_ON] => Self::PowerOn,
            [CTRL_RESET] => Self::Reset,
            [CTRL_ATR] => Self::GetAtr,
            [other] => Self::UnknownControl(*other),
            apdu => Self::Apdu(apdu),
        })
    }
}

/// Reads one frame into `payload` (replacing what it held). `Ok(false)` when the stream ended
/// cleanly between frames.
///
/// # Errors
/// `UnexpectedEof` for a frame cut short, `InvalidData` for an empty frame, and read errors.
pub(crate) fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<bool> {
    let mut header = [0u8; 2];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "vpcd frame header cut short",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty vpcd frame",
        ));
    }
    payload.clear();
    payload.resize(len, 0);
    r.read_exact(payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("vpcd frame of {len} bytes cut short"),
            )
        } else {
            e
        }
    })?;
    Ok(true)
}

/// Encodes one frame: the length, then the payload.
///
/// # Errors
/// `InvalidInput` for a payload longer than 65535 bytes, which the length cannot say.
pub(crate) fn encode_frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} bytes do not fit a vpcd frame", payload.len()),
        )
    })?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Reads from the socket with `TCP_QUICKACK` set before every read, so vpcd's second segment
/// (the payload after the length) is not held back by our delayed ACK.
struct QuickAck<'a>(&'a TcpStream);

impl Read for QuickAck<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        SockRef::from(self.0).set_tcp_quickack(true)?;
        (&*self.0).read(buf)
    }
}

type ApduLog = Arc<dyn Fn(&[u8], &[u8]) + Send + Sync>;
type PullOn = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Options of a bridge session.
#[derive(Clone, Default)]
struct Options {
    log: Option<ApduLog>,
    pull_on: Option<PullOn>,
}

/// How a session ended, as the reader side would tell it.
enum End {
    /// The reader closed the connection, or we did ([`VpcdBridge::disconnect`]).
    Closed,
    /// A command matched [`BridgeBuilder::pull_card_on`].
    Pulled,
}

/// Serves the reader until the connection ends. The simulator is powered off at the end if
/// it was on.
fn serve(stream: &TcpStream, sim: &mut dyn CardSimulator, options: &Options) -> io::Result<End> {
    let mut powered = false;
    let result = serve_powered(stream, sim, options, &mut powered);
    if powered {
        sim.power_off();
    }
    result
}

fn serve_powered(
    stream: &TcpStream,
    sim: &mut dyn CardSimulator,
    options: &Options,
    powered: &mut bool,
) -> io::Result<End> {
    let mut reader = QuickAck(stream);
    let mut writer = stream;
    let mut payload = Vec::new();
    while read_frame(&mut reader, &mut payload)? {
        let Some(message) = Message::decode(&payload) else {
            continue;
        };
        match message {
            Message::PowerOff => {
                if *powered {
                    sim.power_off();
                }
                *powered = false;
            }
            Message::PowerOn => {
                sim.power_on();
                *powered = true;
            }
            Message::Reset => {
                sim.reset();
                *powered = true;
            }
            Message::GetAtr => writer.write_all(&encode_frame(&sim.atr())?)?,
            Message::UnknownControl(byte) => {
                tracing::warn!(control = byte, "vpcd sent an unknown control byte; ignored");
            }
            Message::Apdu(command) => {
                if options.pull_on.as_ref().is_some_and(|pull| pull(command)) {
                    tracing::debug!("pulling the simulated card in the middle of a command");
                    return Ok(End::Pulled);
                }
                let response = sim.process(command);
                if let Some(log) = &options.log {
                    log(command, &response);
                }
                writer.write_all(&encode_frame(&response)?)?;
            }
        }
    }
    Ok(End::Closed)
}

fn connect_stream(addr: impl ToSocketAddrs) -> Result<(TcpStream, SocketAddr)> {
    let mut last = None;
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| Error::from(e).context("resolve vpcd's address"))?;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_nodelay(true)
                    .map_err(|e| Error::from(e).context("set TCP_NODELAY"))?;
                return Ok((stream, a));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => Error::from(e).context("connect to vpcd (is pcscd running with vpcd?)"),
        None => Error::bad_parameter("vpcd's address resolves to nothing"),
    })
}

/// Sets up a bridge: the simulator, and optionally an APDU log and a fault to inject.
pub struct BridgeBuilder {
    sim: Box<dyn CardSimulator>,
    options: Options,
}

impl fmt::Debug for BridgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeBuilder")
            .field("apdu_log", &self.options.log.is_some())
            .field("pull_card_on", &self.options.pull_on.is_some())
            .finish_non_exhaustive()
    }
}

impl BridgeBuilder {
    /// Calls `log(command, response)` after every APDU the card answers, on the bridge's
    /// thread, in order. Commands are logged as sent: PINs included, so keep it to tests.
    #[must_use]
    pub fn apdu_log(mut self, log: impl Fn(&[u8], &[u8]) + Send + Sync + 'static) -> Self {
        self.options.log = Some(Arc::new(log));
        self
    }

    /// Fault injection: when `pull(command)` is true, the bridge closes the connection instead
    /// of answering, as a card pulled out in the middle of that command.
    #[must_use]
    pub fn pull_card_on(mut self, pull: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> Self {
        self.options.pull_on = Some(Arc::new(pull));
        self
    }

    /// Connects to vpcd at `addr` (a card is inserted) and serves it on a thread of its own.
    ///
    /// # Errors
    /// `CommunicationError` (with the I/O error underneath) when vpcd does not accept the
    /// connection within 5 seconds.
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<VpcdBridge> {
        let (stream, peer) = connect_stream(addr)?;
        let theirs = stream
            .try_clone()
            .map_err(|e| Error::from(e).context("clone the vpcd socket"))?;
        let Self { mut sim, options } = self;
        let thread = std::thread::Builder::new()
            .name("tokenkit-vpcd".into())
            .spawn(move || {
                let end = serve(&theirs, sim.as_mut(), &options);
                // The bridge holds a second descriptor: shut the connection itself down.
                let _ = theirs.shutdown(Shutdown::Both);
                match &end {
                    Ok(End::Closed) => tracing::debug!("vpcd connection closed"),
                    Ok(End::Pulled) => tracing::debug!("vpcd connection dropped (card pulled)"),
                    Err(e) => tracing::warn!(error = %e, "vpcd session ended with an error"),
                }
                sim
            })
            .map_err(|e| Error::communication("cannot start the vpcd thread").with_source(e))?;
        Ok(VpcdBridge {
            stream,
            peer,
            thread: Some(thread),
        })
    }

    /// Connects to vpcd at `addr` and serves it on this thread until the reader closes the
    /// connection (pcscd stopped) or a [`BridgeBuilder::pull_card_on`] fault fires; returns
    /// the simulator.
    ///
    /// # Errors
    /// As [`BridgeBuilder::connect`]; and `CommunicationError` with the I/O error kind
    /// underneath when the reader breaks the protocol (a frame cut short, an empty frame) or
    /// the connection fails.
    pub fn run_blocking(self, addr: impl ToSocketAddrs) -> Result<Box<dyn CardSimulator>> {
        let (stream, _) = connect_stream(addr)?;
        let Self { mut sim, options } = self;
        let end = serve(&stream, sim.as_mut(), &options);
        let _ = stream.shutdown(Shutdown::Both);
        end.map_err(|e| Error::from(e).context("vpcd session"))?;
        Ok(sim)
    }
}

/// A simulated card inserted in vpcd's virtual reader: a TCP connection to vpcd served by a
/// thread of its own. Dropping it pulls the card out, as [`VpcdBridge::disconnect`] does.
pub struct VpcdBridge {
    stream: TcpStream,
    peer: SocketAddr,
    thread: Option<JoinHandle<Box<dyn CardSimulator>>>,
}

impl fmt::Debug for VpcdBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VpcdBridge")
            .field("vpcd", &self.peer)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl VpcdBridge {
    /// A builder, for an APDU log or fault injection.
    pub fn builder(sim: Box<dyn CardSimulator>) -> BridgeBuilder {
        BridgeBuilder {
            sim,
            options: Options::default(),
        }
    }

    /// Inserts `sim` into the vpcd reader listening at `addr`, served on a thread of its own.
    ///
    /// # Errors
    /// As [`BridgeBuilder::connect`].
    pub fn connect(addr: impl ToSocketAddrs, sim: Box<dyn CardSimulator>) -> Result<Self> {
        Self::builder(sim).connect(addr)
    }

    /// Serves `sim` to the vpcd reader at `addr` on this thread until the reader closes the
    /// connection; returns the simulator.
    ///
    /// # Errors
    /// As [`BridgeBuilder::run_blocking`].
    pub fn run_blocking(
        addr: impl ToSocketAddrs,
        sim: Box<dyn CardSimulator>,
    ) -> Result<Box<dyn CardSimulator>> {
        Self::builder(sim).run_blocking(addr)
    }

    /// vpcd's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True while the card is in the reader: the connection is up and served.
    pub fn is_connected(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Pulls the card out (closes the connection) and returns the simulator, its state kept,
    /// to insert again later.
    ///
    /// # Errors
    /// `CommunicationError` if the simulator panicked; it is lost then.
    pub fn disconnect(mut self) -> Result<Box<dyn CardSimulator>> {
        self.stop()
            .ok_or_else(|| Error::communication("the vpcd bridge was already stopped"))?
    }

    fn stop(&mut self) -> Option<Result<Box<dyn CardSimulator>>> {
        let thread = self.thread.take()?;
        // Wakes the thread's blocking read with end-of-stream.
        let _ = self.stream.shutdown(Shutdown::Both);
        Some(
            thread
                .join()
                .map_err(|_| Error::communication("the card simulator panicked")),
        )
    }
}

impl Drop for VpcdBridge {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// A card that echoes its command with 9000 and counts power cycles.
    #[derive(Default)]
    struct Echo {
        on: Arc<Mutex<Vec<&'static str>>>,
    }

    impl CardSimulator for Echo {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x02, 0x14, 0x50]
        }
        fn power_on(&mut self) {
            self.on.lock().unwrap().push("on");
        }
        fn power_off(&mut self) {
            self.on.lock().unwrap().push("off");
        }
        fn process(&mut self, command: &[u8]) -> Vec<u8> {
            let mut r = command.to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
    }

    /// The reader's side: a listener the bridge connects to.
    fn reader() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    fn send(stream: &mut TcpStream, payload: &[u8]) {
        stream.write_all(&encode_frame(payload).unwrap()).unwrap();
    }

    fn receive(stream: &mut TcpStream) -> Vec<u8> {
        let mut payload = Vec::new();
        assert!(read_frame(stream, &mut payload).unwrap(), "stream ended");
        payload
    }

    #[test]
    fn a_fake_reader_powers_on_reads_the_atr_and_exchanges_an_apdu() {
        let (listener, addr) = reader();
        let on = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let bridge = VpcdBridge::builder(Box::new(Echo { on: on.clone() }))
            .apdu_log(move |c, r| seen.lock().unwrap().push((c.to_vec(), r.to_vec())))
            .connect(addr)
            .unwrap();
        let (mut vpcd, _) = listener.accept().unwrap();
        send(&mut vpcd, &[CTRL_ON]);
        send(&mut vpcd, &[CTRL_ATR]);
        assert_eq!(receive(&mut vpcd), vec![0x3B, 0x02, 0x14, 0x50]);
        let select = [0x00, 0xA4, 0x04, 0x00, 0x02, 0xF0, 0x01];
        send(&mut vpcd, &select);
        let mut expected = select.to_vec();
        expected.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(receive(&mut vpcd), expected);
        // An unknown control byte is ignored; the session goes on.
        send(&mut vpcd, &[0x7F]);
        send(&mut vpcd, &[CTRL_RESET]);
        send(&mut vpcd, &[CTRL_ATR]);
        assert_eq!(receive(&mut vpcd).len(), 4);
        assert!(bridge.is_connected());
        assert_eq!(*log.lock().unwrap(), vec![(select.to_vec(), expected)]);

        // Pulling the card closes the connection; the reader sees end-of-stream.
        let sim = bridge.disconnect().unwrap();
        let mut rest = Vec::new();
        assert!(!read_frame(&mut vpcd, &mut rest).unwrap());
        drop(sim);
        // Reset is a power cycle; the card was powered off when pulled.
        assert_eq!(*on.lock().unwrap(), vec!["on", "off", "on", "off"]);
    }

    #[test]
    fn the_reader_closing_ends_the_session_and_returns_the_simulator() {
        let (listener, addr) = reader();
        let bridge = VpcdBridge::connect(addr, Box::<Echo>::default()).unwrap();
        let (vpcd, _) = listener.accept().unwrap();
        drop(vpcd);
        let sim = bridge.disconnect().unwrap();
        assert_eq!(sim.atr().len(), 4);
    }

    #[test]
    fn a_truncated_frame_is_a_clean_error() {
        let (listener, addr) = reader();
        let reader = std::thread::spawn(move || {
            let (mut vpcd, _) = listener.accept().unwrap();
            // Claims 10 bytes, sends 3, hangs up.
            vpcd.write_all(&[0x00, 0x0A, 0x00, 0xA4, 0x04]).unwrap();
        });
        let e = match VpcdBridge::run_blocking(addr, Box::<Echo>::default()) {
            Err(e) => e,
            Ok(_) => panic!("a truncated frame was accepted"),
        };
        reader.join().unwrap();
        assert_eq!(e.code(), token_core::ErrorCode::CommunicationError);
        assert_eq!(
            *e.underlying(),
            token_core::Underlying::Io(io::ErrorKind::UnexpectedEof)
        );
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn a_huge_length_is_a_clean_error_not_a_huge_allocation() {
        let (listener, addr) = reader();
        let reader = std::thread::spawn(move || {
            let (mut vpcd, _) = listener.accept().unwrap();
            // The largest length there is, then a few bytes and a hang-up.
            vpcd.write_all(&[0xFF, 0xFF, 0x00, 0xA4]).unwrap();
        });
        let e = VpcdBridge::run_blocking(addr, Box::<Echo>::default())
            .err()
            .unwrap();
        reader.join().unwrap();
        assert_eq!(
            *e.underlying(),
            token_core::Underlying::Io(io::ErrorKind::UnexpectedEof)
        );
    }

    #[test]
    fn an_empty_frame_is_refused() {
        let mut input = Cursor::new(vec![0x00, 0x00]);
        let e = read_frame(&mut input, &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_header_cut_short_is_not_a_clean_end() {
        let e = read_frame(&mut Cursor::new(vec![0x00]), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!read_frame(&mut Cursor::new(Vec::new()), &mut Vec::new()).unwrap());
    }

    #[test]
    fn the_fault_pulls_the_card_without_answering() {
        let (listener, addr) = reader();
        let bridge = VpcdBridge::builder(Box::<Echo>::default())
            .pull_card_on(|c| c.get(1) == Some(&0x2A))
            .connect(addr)
            .unwrap();
        let (mut vpcd, _) = listener.accept().unwrap();
        send(&mut vpcd, &[CTRL_ON]);
        send(&mut vpcd, &[0x00, 0xA4, 0x04, 0x00]);
        assert_eq!(receive(&mut vpcd), vec![0x00, 0xA4, 0x04, 0x00, 0x90, 0x00]);
        send(&mut vpcd, &[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0x55]);
        let mut rest = Vec::new();
        assert!(
            !read_frame(&mut vpcd, &mut rest).unwrap(),
            "answered anyway"
        );
        assert!(bridge.disconnect().is_ok());
    }

    #[test]
    fn payloads_too_long_for_the_length_field_are_refused() {
        assert!(encode_frame(&[0; 65_535]).is_ok());
        let e = encode_frame(&[0; 65_536]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn messages_decode_by_length_and_value() {
        assert_eq!(Message::decode(&[]), None);
        assert_eq!(Message::decode(&[0]), Some(Message::PowerOff));
        assert_eq!(Message::decode(&[1]), Some(Message::PowerOn));
        assert_eq!(Message::decode(&[2]), Some(Message::Reset));
        assert_eq!(Message::decode(&[4]), Some(Message::GetAtr));
        assert_eq!(Message::decode(&[3]), Some(Message::UnknownControl(3)));
        assert_eq!(Message::decode(&[0, 1]), Some(Message::Apdu(&[0, 1])));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_frames_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            let mut input = Cursor::new(bytes);
            let mut payload = Vec::new();
            // Each frame read consumes at least its header, so this loop ends.
            while let Ok(true) = read_frame(&mut input, &mut payload) {
                prop_assert!(!payload.is_empty() && payload.len() <= usize::from(u16::MAX));
                let _ = Message::decode(&payload);
            }
        }

        #[test]
        fn frames_round_trip(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 1..600), 0..8)
        ) {
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(&encode_frame(p).unwrap());
            }
            let mut input = Cursor::new(wire);
            let mut payload = Vec::new();
            for p in &payloads {
                prop_assert!(read_frame(&mut input, &mut payload).unwrap());
                prop_assert_eq!(&payload, p);
            }
            prop_assert!(!read_frame(&mut input, &mut payload).unwrap());
        }
    }
}
