//! A simulated FIDO HID device: the authenticator side of CTAPHID (CTAP 2.1 §11.2) behind the
//! same [`HidDevice`] trait as a real device, with the CTAP2 logic left to a pluggable
//! [`CtapHandler`], and fault injection for tests.
//!
//! The authenticator runs on its own thread and exchanges 64-byte reports with the host side
//! ([`SimHidDevice`]) over in-memory queues; a [`SimControl`] steers it from tests (user
//! presence, faults, unplugging).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use token_core::{Error, Result};

use crate::client::HidDevice;
use crate::codec::{
    fragment, Capabilities, Cid, Cmd, FrameError, HidErrorCode, KeepaliveStatus, Message, Packet,
    Reassembler, Report, Step, INIT_DATA_LEN,
};

/// CTAP2_ERR_KEEPALIVE_CANCEL: the status a CBOR request ends with when it was canceled.
pub const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2D;
/// CTAP2_ERR_USER_ACTION_TIMEOUT: the user did not touch the device in time.
pub const CTAP2_ERR_USER_ACTION_TIMEOUT: u8 = 0x2F;

pub use token_core::{CtapHandler, Presence, UserPresence};

/// A handler that answers every CBOR request with the request itself; with
/// `require_presence` it first waits for the user (answering [`CTAP2_ERR_KEEPALIVE_CANCEL`] or
/// [`CTAP2_ERR_USER_ACTION_TIMEOUT`] alone when that fails).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoHandler {
    /// Wait for the user before answering.
    pub require_presence: bool,
}

impl CtapHandler for EchoHandler {
    fn handle_cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        if self.require_presence {
            match presence.user_presence() {
                UserPresence::Confirmed => {}
                UserPresence::Canceled => return vec![CTAP2_ERR_KEEPALIVE_CANCEL],
                UserPresence::TimedOut => return vec![CTAP2_ERR_USER_ACTION_TIMEOUT],
            }
        }
        request.to_vec()
    }
}

/// How the simulated user answers a request for presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresencePolicy {
    /// Touches at once, before any keep-alive.
    Immediate,
    /// Touches after this many UP_NEEDED keep-alives.
    AfterKeepalives(u64),
    /// Touches only when [`SimControl::press`] is called.
    WaitForPress,
}

/// A fault injected into the simulated device's next answer, for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The answer goes out on another channel (the client must ignore it and time out).
    WrongCid,
    /// The answer's first continuation packet carries the wrong SEQ.
    OutOfOrderSeq,
    /// The answer's last packet is never sent (or, for a one-packet answer, its BCNT promises
    /// more than comes).
    Truncated,
    /// The command is answered with a CTAPHID ERROR carrying this code (known or not).
    Error(u8),
    /// The answer announces a BCNT of 0xFFFF.
    OversizedBcnt,
    /// The command is never answered.
    Silence,
    /// The device disappears instead of answering.
    Unplug,
}

/// Timings and identity of a simulated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The pause between keep-alives while waiting for the user (the spec asks for at most
    /// 100 ms).
    pub keepalive_interval: Duration,
    /// How long a message may take to arrive in full before ERR_MSG_TIMEOUT.
    pub message_timeout: Duration,
    /// How long the simulated device waits for a touch.
    pub presence_timeout: Duration,
    /// The capability flags it reports in INIT.
    pub capabilities: Capabilities,
    /// Major, minor and build version numbers it reports in INIT.
    pub version: (u8, u8, u8),
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_millis(100),
            message_timeout: Duration::from_millis(500),
            presence_timeout: Duration::from_secs(30),
            capabilities: Capabilities(
                Capabilities::WINK | Capabilities::CBOR | Capabilities::NMSG,
            ),
            version: (0, 1, 0),
        }
    }
}

struct Shared {
    gone: AtomicBool,
    pressed: AtomicBool,
    policy: Mutex<PresencePolicy>,
    faults: Mutex<VecDeque<Fault>>,
    keepalives: AtomicU64,
    winks: AtomicU64,
    cancels: AtomicU64,
    /// Every open host handle; each sees every report the device sends, as every open hidraw
    /// file does.
    hosts: Mutex<Vec<Sender<Report>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Steers a simulated device from a test: the user's touch, faults, unplugging. Cheap to
/// clone; usable from any thread.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl SimControl {
    /// Sets how the simulated user answers requests for presence.
    pub fn set_presence(&self, policy: PresencePolicy) {
        *lock(&self.shared.policy) = policy;
    }

    /// The user touches the device (consumed by the next wait for presence).
    pub fn press(&self) {
        self.shared.pressed.store(true, Ordering::SeqCst);
    }

    /// Queues a fault for the next answer; several queue up, one per answer.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// The device disappears: every later read or write fails with `TokenNotFound`, and a read
    /// in progress ends promptly.
    pub fn unplug(&self) {
        self.shared.gone.store(true, Ordering::SeqCst);
    }

    /// KEEPALIVE packets sent so far.
    pub fn keepalives_sent(&self) -> u64 {
        self.shared.keepalives.load(Ordering::SeqCst)
    }

    /// WINK commands served so far.
    pub fn winks(&self) -> u64 {
        self.shared.winks.load(Ordering::SeqCst)
    }

    /// CANCEL commands that reached a pending request so far.
    pub fn cancels(&self) -> u64 {
        self.shared.cancels.load(Ordering::SeqCst)
    }
}

/// The host side of a simulated FIDO HID device: a [`HidDevice`] whose reports reach a
/// CTAPHID authenticator running on its own thread. Dropping it stops that thread.
pub struct SimHidDevice {
    to_auth: Sender<Report>,
    from_auth: Mutex<Receiver<Report>>,
    shared: Arc<Shared>,
}

impl SimHidDevice {
    /// Starts a simulated device serving `handler` with the default [`SimConfig`].
    pub fn new(handler: impl CtapHandler) -> (Self, SimControl) {
        Self::with_config(handler, SimConfig::default())
    }

    /// Starts a simulated device serving `handler`.
    pub fn with_config(handler: impl CtapHandler, config: SimConfig) -> (Self, SimControl) {
        let shared = Arc::new(Shared {
            gone: AtomicBool::new(false),
            pressed: AtomicBool::new(false),
            policy: Mutex::new(PresencePolicy::Immediate),
            faults: Mutex::new(VecDeque::new()),
            keepalives: AtomicU64::new(0),
            winks: AtomicU64::new(0),
            cancels: AtomicU64::new(0),
            hosts: Mutex::new(Vec::new()),
        });
        let (to_auth, rx) = mpsc::channel();
        let (tx, from_auth) = mpsc::channel();
        lock(&shared.hosts).push(tx);
        let mut auth = Authenticator {
            handler,
            link: Link {
                rx,
                shared: shared.clone(),
                config,
                channels: HashSet::new(),
                next_cid: 1,
                reasm: Reassembler::new(),
                started: None,
                locked: None,
            },
        };
        std::thread::spawn(move || auth.run());
        let control = SimControl {
            shared: shared.clone(),
        };
        (
            Self {
                to_auth,
                from_auth: Mutex::new(from_auth),
                shared,
            },
            control,
        )
    }

    /// Another host handle on the same device, as a second program opening the same hidraw
    /// node: it sees every report the device sends (and ignores other channels' answers, as
    /// [`crate::CtapHidChannel`] does). Use one handle per concurrently used channel.
    pub fn open_again(&self) -> Self {
        let (tx, from_auth) = mpsc::channel();
        lock(&self.shared.hosts).push(tx);
        Self {
            to_auth: self.to_auth.clone(),
            from_auth: Mutex::new(from_auth),
            shared: self.shared.clone(),
        }
    }

    fn gone(&self) -> Error {
        Error::token_not_found("the simulated HID device was unplugged")
    }
}

impl HidDevice for SimHidDevice {
    fn write(&self, report: &Report) -> Result<()> {
        if self.shared.gone.load(Ordering::SeqCst) {
            return Err(self.gone());
        }
        self.to_auth.send(*report).map_err(|_| self.gone())
    }

    fn read(&self, timeout: Duration) -> Result<Option<Report>> {
        if self.shared.gone.load(Ordering::SeqCst) {
            return Err(self.gone());
        }
        match lock(&self.from_auth).recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) if !self.shared.gone.load(Ordering::SeqCst) => Ok(None),
            Err(_) => Err(self.gone()),
        }
    }
}

/// How often the authenticator thread looks at the unplug flag when idle.
const POLL: Duration = Duration::from_millis(20);

struct Authenticator<H> {
    handler: H,
    link: Link,
}

/// Everything of the authenticator but the handler, so a handler can hold a [`Presence`]
/// borrowing it.
struct Link {
    rx: Receiver<Report>,
    shared: Arc<Shared>,
    config: SimConfig,
    channels: HashSet<Cid>,
    next_cid: u32,
    reasm: Reassembler,
    /// When the message in progress began, for ERR_MSG_TIMEOUT.
    started: Option<Instant>,
    /// The channel holding a LOCK, and until when.
    locked: Option<(Cid, Instant)>,
}

impl<H: CtapHandler> Authenticator<H> {
    fn run(&mut self) {
        loop {
            if self.link.is_gone() {
                return;
            }
            match self.link.rx.recv_timeout(POLL) {
                Ok(report) => {
                    if let Some(msg) = self.link.on_report(&report) {
                        self.dispatch(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.link.check_message_timeout(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn dispatch(&mut self, msg: Message) {
        let link = &mut self.link;
        let cid = msg.cid;
        match msg.cmd {
            Cmd::PING => link.reply(cid, Cmd::PING, &msg.payload),
            Cmd::WINK if !msg.payload.is_empty() => link.error(cid, HidErrorCode::INVALID_LEN),
            Cmd::WINK if link.config.capabilities.contains(Capabilities::WINK) => {
                self.handler.wink();
                link.shared.winks.fetch_add(1, Ordering::SeqCst);
                link.reply(cid, Cmd::WINK, &[]);
            }
            Cmd::LOCK => match msg.payload[..] {
                [s @ 0..=10] => {
                    link.locked =
                        (s > 0).then(|| (cid, Instant::now() + Duration::from_secs(u64::from(s))));
                    link.reply(cid, Cmd::LOCK, &[]);
                }
                [_] => link.error(cid, HidErrorCode::INVALID_PAR),
                _ => link.error(cid, HidErrorCode::INVALID_LEN),
            },
            Cmd::CBOR if msg.payload.is_empty() => link.error(cid, HidErrorCode::INVALID_LEN),
            Cmd::CBOR if link.config.capabilities.contains(Capabilities::CBOR) => {
                let mut p = Pending::new(link, cid);
                let answer = self.handler.handle_cbor(&msg.payload, &mut p);
                link.reply(cid, Cmd::CBOR, &answer);
            }
            Cmd::MSG if !link.config.capabilities.contains(Capabilities::NMSG) => {
                let mut p = Pending::new(link, cid);
                let answer = self.handler.handle_msg(&msg.payload, &mut p);
                link.reply(cid, Cmd::MSG, &answer);
            }
            // CANCEL with nothing pending is ignored, and never answered (§11.2.9.2.1).
            Cmd::CANCEL => {}
            _ => link.error(cid, HidErrorCode::INVALID_CMD),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The device is gone (unplugged, or every handle dropped): hosts waiting in a read
        // wake up to `TokenNotFound` at once.
        lock(&self.shared.hosts).clear();
    }
}

impl Link {
    fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::SeqCst)
    }

    fn send_raw(&self, reports: &[Report]) {
        if self.is_gone() {
            return;
        }
        // A host handle that was dropped is forgotten.
        lock(&self.shared.hosts).retain(|h| reports.iter().all(|r| h.send(*r).is_ok()));
    }

    fn error(&self, cid: Cid, code: HidErrorCode) {
        if let Ok(r) = fragment(cid, Cmd::ERROR, &[code.0]) {
            self.send_raw(&r);
        }
    }

    fn keepalive(&self, cid: Cid, status: KeepaliveStatus) {
        self.shared.keepalives.fetch_add(1, Ordering::SeqCst);
        if let Ok(r) = fragment(cid, Cmd::KEEPALIVE, &[status.0]) {
            self.send_raw(&r);
        }
    }

    /// Answers a command, through the next injected fault if there is one.
    fn reply(&self, cid: Cid, cmd: Cmd, payload: &[u8]) {
        let fault = lock(&self.shared.faults).pop_front();
        let Ok(mut reports) = fragment(cid, cmd, payload) else {
            return self.error(cid, HidErrorCode::OTHER);
        };
        match fault {
            None => {}
            Some(Fault::Silence) => return,
            Some(Fault::Unplug) => return self.shared.gone.store(true, Ordering::SeqCst),
            Some(Fault::Error(code)) => return self.error(cid, HidErrorCode(code)),
            Some(Fault::WrongCid) => {
                let other = Cid(cid.0 ^ 0x5A5A_5A5A).to_bytes();
                for r in &mut reports {
                    r[..4].copy_from_slice(&other);
                }
            }
            Some(Fault::OutOfOrderSeq) => match reports.get_mut(1) {
                Some(r) => r[4] = 1,
                None => {
                    // A one-packet answer: promise a continuation, then send one out of order.
                    let mut cont = [0u8; 64];
                    cont[..4].copy_from_slice(&cid.to_bytes());
                    cont[4] = 3;
                    if let Some(r) = reports.first_mut() {
                        r[5..7].copy_from_slice(&((INIT_DATA_LEN + 1) as u16).to_be_bytes());
                    }
                    reports.push(cont);
                }
            },
            Some(Fault::Truncated) => {
                if reports.len() > 1 {
                    reports.pop();
                } else if let Some(r) = reports.first_mut() {
                    r[5..7].copy_from_slice(&((INIT_DATA_LEN + 1) as u16).to_be_bytes());
                }
            }
            Some(Fault::OversizedBcnt) => {
                if let Some(r) = reports.first_mut() {
                    r[5..7].copy_from_slice(&[0xFF, 0xFF]);
                }
            }
        }
        self.send_raw(&reports);
    }

    fn check_message_timeout(&mut self) {
        if let (Some(t), Some(cid)) = (self.started, self.reasm.in_progress()) {
            if t.elapsed() >= self.config.message_timeout {
                self.reasm.reset();
                self.started = None;
                self.error(cid, HidErrorCode::MSG_TIMEOUT);
            }
        }
    }

    fn allocate(&mut self) -> Cid {
        loop {
            let cid = Cid(self.next_cid);
            self.next_cid = self.next_cid.wrapping_add(1);
            if cid.is_allocatable() && !self.channels.contains(&cid) {
                self.channels.insert(cid);
                return cid;
            }
        }
    }

    /// INIT on the broadcast channel allocates a channel; on an allocated one it resynchronizes
    /// it (CTAP 2.1 §11.2.9.1.3).
    fn init(&mut self, cid: Cid, bcnt: u16, data: &[u8]) {
        if self.reasm.in_progress() == Some(cid) {
            self.reasm.reset();
            self.started = None;
        }
        let Some(nonce) = data.get(..8).filter(|_| bcnt == 8) else {
            return self.error(cid, HidErrorCode::INVALID_LEN);
        };
        let new = if cid == Cid::BROADCAST {
            self.allocate()
        } else if self.channels.contains(&cid) {
            cid
        } else {
            return self.error(cid, HidErrorCode::INVALID_CHANNEL);
        };
        let (major, minor, build) = self.config.version;
        let mut answer = nonce.to_vec();
        answer.extend_from_slice(&new.to_bytes());
        answer.extend_from_slice(&[2, major, minor, build, self.config.capabilities.0]);
        self.reply(cid, Cmd::INIT, &answer);
    }

    /// Takes one report from the host; a complete message is returned for dispatch.
    fn on_report(&mut self, report: &Report) -> Option<Message> {
        self.check_message_timeout();
        let packet = Packet::parse(report);
        let cid = packet.cid();
        let is_init = matches!(packet, Packet::Init(_));
        if cid == Cid::RESERVED {
            if is_init {
                self.error(cid, HidErrorCode::INVALID_CHANNEL);
            }
            return None;
        }
        if let Some((owner, until)) = self.locked {
            if Instant::now() >= until {
                self.locked = None;
            } else if owner != cid {
                if is_init {
                    self.error(cid, HidErrorCode::CHANNEL_BUSY);
                }
                return None;
            }
        }
        if let Packet::Init(p) = packet {
            if p.cmd == Cmd::INIT {
                if matches!(self.reasm.in_progress(), Some(c) if c != cid) {
                    self.error(cid, HidErrorCode::CHANNEL_BUSY);
                    return None;
                }
                self.init(cid, p.bcnt, &p.data);
                return None;
            }
            if !self.channels.contains(&cid) {
                self.error(cid, HidErrorCode::INVALID_CHANNEL);
                return None;
            }
        }
        match self.reasm.push(report) {
            Ok(Step::Complete(m)) => {
                self.started = None;
                Some(m)
            }
            Ok(Step::Incomplete) => {
                self.started.get_or_insert_with(Instant::now);
                None
            }
            Ok(Step::Ignored) => None,
            // A stray continuation is ignored (§11.2.4).
            Err(FrameError::ContinuationWithoutInit { .. }) => None,
            Err(FrameError::ChannelBusy { from, .. }) => {
                if is_init {
                    self.error(from, HidErrorCode::CHANNEL_BUSY);
                }
                None
            }
            Err(e) => {
                self.started = None;
                self.error(cid, e.hid_error());
                None
            }
        }
    }
}

/// The [`Presence`] a handler gets: a CBOR or MSG request pending on `cid`.
struct Pending<'a> {
    link: &'a mut Link,
    cid: Cid,
    canceled: bool,
}

impl<'a> Pending<'a> {
    fn new(link: &'a mut Link, cid: Cid) -> Self {
        Self {
            link,
            cid,
            canceled: false,
        }
    }

    /// Handles what the host sends while the request is pending, for up to `wait`.
    fn serve(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            if self.link.is_gone() {
                self.canceled = true;
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let report = if left.is_zero() {
                match self.link.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                match self.link.rx.recv_timeout(left.min(POLL)) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.canceled = true;
                        return;
                    }
                }
            };
            match Packet::parse(&report) {
                // CANCEL, or INIT (resync), on our channel ends the request (§11.2.9.2.1).
                Packet::Init(p)
                    if p.cid == self.cid && (p.cmd == Cmd::CANCEL || p.cmd == Cmd::INIT) =>
                {
                    self.link.shared.cancels.fetch_add(1, Ordering::SeqCst);
                    self.canceled = true;
                    if p.cmd == Cmd::INIT {
                        self.link.init(p.cid, p.bcnt, &p.data);
                    }
                }
                Packet::Init(p) if p.cid == self.cid => {
                    self.link.error(p.cid, HidErrorCode::CHANNEL_BUSY);
                }
                // Other channels wait: the device is busy with this request.
                Packet::Init(p) => self.link.error(p.cid, HidErrorCode::CHANNEL_BUSY),
                Packet::Cont(_) => {}
            }
        }
    }
}

impl Presence for Pending<'_> {
    fn keepalive(&mut self, status: KeepaliveStatus) -> bool {
        if !self.canceled {
            self.link.keepalive(self.cid, status);
            self.serve(Duration::ZERO);
        }
        !self.canceled
    }

    fn user_presence(&mut self) -> UserPresence {
        let start = Instant::now();
        let mut sent = 0u64;
        loop {
            if self.canceled {
                return UserPresence::Canceled;
            }
            let pressed = self.link.shared.pressed.swap(false, Ordering::SeqCst);
            let confirmed = pressed
                || match *lock(&self.link.shared.policy) {
                    PresencePolicy::Immediate => true,
                    PresencePolicy::AfterKeepalives(n) => sent >= n,
                    PresencePolicy::WaitForPress => false,
                };
            if confirmed {
                return UserPresence::Confirmed;
            }
            if start.elapsed() >= self.link.config.presence_timeout {
                return UserPresence::TimedOut;
            }
            self.link.keepalive(self.cid, KeepaliveStatus::UP_NEEDED);
            sent += 1;
            self.serve(self.link.config.keepalive_interval);
        }
    }
}
