//! The host side of CTAPHID: a [`HidDevice`] moves 64-byte reports, a [`CtapHidChannel`] turns
//! it into a [`token_core::CtapChannel`] (channel allocation, framing, keep-alives, errors).

use core::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use token_core::{async_trait, unblock, CtapChannel, Error, Result, Underlying};

use crate::codec::{
    fragment, Capabilities, Cid, Cmd, FrameError, HidErrorCode, KeepaliveStatus, Reassembler,
    Report, Step, MAX_PAYLOAD,
};

/// A HID device that carries 64-byte reports, one at a time (a hidraw node, a simulator).
///
/// Both methods take `&self`: a CANCEL is written from one thread while another waits in
/// [`HidDevice::read`], so implementations must allow a write during a read.
pub trait HidDevice: Send + Sync + 'static {
    /// Writes one report (without report ID).
    ///
    /// # Errors
    /// `TokenNotFound` when the device is gone, `CommunicationError` otherwise.
    fn write(&self, report: &Report) -> Result<()>;

    /// Reads one report, waiting at most `timeout`; `Ok(None)` when none came in time.
    ///
    /// # Errors
    /// `TokenNotFound` when the device is gone, `CommunicationError` otherwise.
    fn read(&self, timeout: Duration) -> Result<Option<Report>>;
}

impl<D: HidDevice + ?Sized> HidDevice for Arc<D> {
    fn write(&self, report: &Report) -> Result<()> {
        (**self).write(report)
    }
    fn read(&self, timeout: Duration) -> Result<Option<Report>> {
        (**self).read(timeout)
    }
}

impl HidDevice for Box<dyn HidDevice> {
    fn write(&self, report: &Report) -> Result<()> {
        (**self).write(report)
    }
    fn read(&self, timeout: Duration) -> Result<Option<Report>> {
        (**self).read(timeout)
    }
}

/// Timeouts and retries of a [`CtapHidChannel`]. Every wait is bounded by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HidOptions {
    /// The longest silence allowed while an answer is due. Every KEEPALIVE restarts it, so an
    /// authenticator waiting for a touch is given as long as it keeps saying so (bounded by
    /// `transaction_timeout`).
    pub response_timeout: Duration,
    /// The longest one transaction may take in all, keep-alives included.
    pub transaction_timeout: Duration,
    /// How many times a command answered with ERR_CHANNEL_BUSY is sent again, after
    /// `busy_backoff`, before `transact` gives up with `CommunicationError`. 0 disables retries.
    pub busy_retries: u32,
    /// The pause before a busy retry.
    pub busy_backoff: Duration,
}

impl Default for HidOptions {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(3),
            transaction_timeout: Duration::from_secs(120),
            busy_retries: 3,
            busy_backoff: Duration::from_millis(100),
        }
    }
}

/// What the authenticator said about itself in its INIT answer (CTAP 2.1 §11.2.9.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The channel it allocated.
    pub cid: Cid,
    /// The CTAPHID protocol version (2).
    pub protocol_version: u8,
    /// The device's major version number.
    pub major: u8,
    /// The device's minor version number.
    pub minor: u8,
    /// The device's build version number.
    pub build: u8,
    /// Its capability flags.
    pub capabilities: Capabilities,
}

/// At most this many leftover reports (two whole maximal answers) are discarded before a
/// transaction; a device that keeps talking past that gets its reports read as the answer.
const STALE_REPORTS_MAX: usize = 2 * 130;

type Observer = Arc<dyn Fn(KeepaliveStatus) + Send + Sync>;

struct Inner<D> {
    device: D,
    info: DeviceInfo,
    options: HidOptions,
    /// One transaction at a time on this channel.
    transaction: Mutex<()>,
    /// Writes of one message are never interleaved with a CANCEL.
    writing: Mutex<()>,
    observer: Mutex<Option<Observer>>,
}

/// A CTAPHID channel to one authenticator: a [`CtapChannel`] over any [`HidDevice`].
///
/// Cloning gives another handle to the same channel; [`CtapHidChannel::cancel`] on one clone
/// cancels a CBOR request that another thread is waiting on.
pub struct CtapHidChannel<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for CtapHidChannel<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<D> fmt::Debug for CtapHidChannel<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtapHidChannel")
            .field("info", &self.inner.info)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_all<D: HidDevice>(device: &D, reports: &[Report]) -> Result<()> {
    for r in reports {
        device.write(r)?;
    }
    Ok(())
}

fn timeout_error(what: &'static str) -> Error {
    Error::communication(what)
}

impl<D: HidDevice> CtapHidChannel<D> {
    /// Allocates a channel on `device` with the default [`HidOptions`]. Blocks for at most
    /// `response_timeout`; call it from a blocking thread in async code.
    ///
    /// # Errors
    /// `TokenNotFound` when the device is gone; `CommunicationError` when it does not answer
    /// INIT in time or answers it wrongly.
    pub fn open(device: D) -> Result<Self> {
        Self::open_with(device, HidOptions::default())
    }

    /// Allocates a channel with the INIT handshake of CTAP 2.1 §11.2.9.1.3: an 8-byte random
    /// nonce on the broadcast channel; answers carrying another nonce (another program's INIT)
    /// are skipped.
    ///
    /// # Errors
    /// As [`CtapHidChannel::open`].
    pub fn open_with(device: D, options: HidOptions) -> Result<Self> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|_| Error::communication("no random numbers for the CTAPHID INIT nonce"))?;
        let reports = fragment(Cid::BROADCAST, Cmd::INIT, &nonce)
            .map_err(|_| Error::communication("framing INIT"))?;
        write_all(&device, &reports)?;
        let mut deadline = Instant::now() + options.response_timeout;
        let mut reasm = Reassembler::for_channel(Cid::BROADCAST);
        let mut busy = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout_error("no CTAPHID INIT answer in time"));
            }
            let Some(report) = device.read(left)? else {
                continue;
            };
            let msg = match reasm.push(&report) {
                Ok(Step::Complete(m)) => m,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(target: "tokenkit::ctaphid", "INIT answer: {e}");
                    reasm.reset();
                    continue;
                }
            };
            if msg.cmd == Cmd::ERROR {
                let code = msg
                    .payload
                    .first()
                    .copied()
                    .unwrap_or(HidErrorCode::OTHER.0);
                // Busy (another channel's message in progress) may be meant for another
                // program's INIT on the same broadcast channel: send ours again, a bounded
                // number of times.
                if code == HidErrorCode::CHANNEL_BUSY.0 && busy < options.busy_retries {
                    busy += 1;
                    std::thread::sleep(options.busy_backoff);
                    write_all(&device, &reports)?;
                    deadline = Instant::now() + options.response_timeout;
                    continue;
                }
                return Err(hid_error(code, "the device refused CTAPHID INIT"));
            }
            let Some(info) = parse_init_answer(&nonce, msg.cmd, &msg.payload) else {
                continue;
            };
            if !info.cid.is_allocatable() {
                return Err(Error::corrupted(
                    "CTAPHID INIT allocated an invalid channel",
                ));
            }
            tracing::debug!(target: "tokenkit::ctaphid", "allocated channel {}", info.cid);
            return Ok(Self {
                inner: Arc::new(Inner {
                    device,
                    info,
                    options,
                    transaction: Mutex::new(()),
                    writing: Mutex::new(()),
                    observer: Mutex::new(None),
                }),
            });
        }
    }

    /// What the device said about itself in its INIT answer.
    pub fn info(&self) -> DeviceInfo {
        self.inner.info
    }

    /// The channel this handle talks on.
    pub fn cid(&self) -> Cid {
        self.inner.info.cid
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.inner.device
    }

    /// Calls `observer` with the status of every KEEPALIVE received during [`CtapChannel::transact`]
    /// (for example to tell the user to touch the device on
    /// [`KeepaliveStatus::UP_NEEDED`]). Replaces any earlier observer.
    pub fn on_keepalive(&self, observer: impl Fn(KeepaliveStatus) + Send + Sync + 'static) {
        *lock(&self.inner.observer) = Some(Arc::new(observer));
    }

    /// Sends CANCEL (CTAP 2.1 §11.2.9.2.1) on this channel: the authenticator abandons the CBOR
    /// request pending on it, which then ends with CTAP2_ERR_KEEPALIVE_CANCEL (0x2D). Meant to
    /// be called from another thread or task while a transaction waits for the user; there is
    /// no answer to CANCEL itself. Without a pending request it does nothing.
    ///
    /// # Errors
    /// `TokenNotFound` when the device is gone.
    pub fn cancel(&self) -> Result<()> {
        let reports = fragment(self.cid(), Cmd::CANCEL, &[])
            .map_err(|_| Error::communication("framing CANCEL"))?;
        let _w = lock(&self.inner.writing);
        write_all(&self.inner.device, &reports)
    }

    /// One whole CTAPHID transaction, blocking: sends `payload` as `cmd` and waits for the
    /// answer, passing every KEEPALIVE status to `on_keepalive` (and to the observer set with
    /// [`CtapHidChannel::on_keepalive`]).
    ///
    /// # Errors
    /// `BadParameter` for a payload over [`MAX_PAYLOAD`]; `TokenNotFound` when the device is
    /// gone; `CommunicationError` for timeouts, framing errors, a busy device after the bounded
    /// retries, and CTAPHID ERROR answers (with the code as [`Underlying::CtapHid`]).
    pub fn transact_blocking(
        &self,
        cmd: Cmd,
        payload: &[u8],
        on_keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::bad_parameter("CTAPHID payload over 7609 bytes"));
        }
        let reports = fragment(self.cid(), cmd, payload)
            .map_err(|_| Error::bad_parameter("CTAPHID payload over 7609 bytes"))?;
        let _t = lock(&self.inner.transaction);
        let mut busy = 0;
        loop {
            match self.exchange_once(cmd, &reports, on_keepalive) {
                Err(e)
                    if *e.underlying() == Underlying::CtapHid(HidErrorCode::CHANNEL_BUSY.0)
                        && busy < self.inner.options.busy_retries =>
                {
                    busy += 1;
                    std::thread::sleep(self.inner.options.busy_backoff);
                }
                other => return other,
            }
        }
    }

    fn exchange_once(
        &self,
        cmd: Cmd,
        reports: &[Report],
        on_keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>> {
        let inner = &*self.inner;
        // CTAPHID has no transaction IDs: what is left of an earlier answer that failed or
        // timed out must not be read as this one's.
        for _ in 0..STALE_REPORTS_MAX {
            if inner.device.read(Duration::ZERO)?.is_none() {
                break;
            }
        }
        {
            let _w = lock(&inner.writing);
            write_all(&inner.device, reports)?;
        }
        let start = Instant::now();
        let mut last = start;
        let mut reasm = Reassembler::for_channel(self.cid());
        loop {
            let now = Instant::now();
            let total_left = inner
                .options
                .transaction_timeout
                .saturating_sub(now.duration_since(start));
            let silence_left = inner
                .options
                .response_timeout
                .saturating_sub(now.duration_since(last));
            let wait = total_left.min(silence_left);
            if wait.is_zero() {
                return Err(if total_left.is_zero() {
                    timeout_error("CTAPHID transaction timed out")
                } else {
                    timeout_error("no CTAPHID answer in time")
                });
            }
            let Some(report) = inner.device.read(wait)? else {
                continue;
            };
            let msg = match reasm.push(&report) {
                Ok(Step::Complete(m)) => m,
                Ok(Step::Incomplete) => {
                    last = Instant::now();
                    continue;
                }
                // Another channel's packet, or the tail of an earlier answer: the client side
                // ignores both (CTAP 2.1 §11.2.4).
                Ok(Step::Ignored) | Err(FrameError::ContinuationWithoutInit { .. }) => continue,
                Err(e) => {
                    return Err(
                        Error::communication(format!("CTAPHID framing: {e}")).with_source(e)
                    );
                }
            };
            last = Instant::now();
            match msg.cmd {
                Cmd::KEEPALIVE => {
                    let status = KeepaliveStatus(msg.payload.first().copied().unwrap_or(0));
                    on_keepalive(status);
                    let observer = lock(&inner.observer).clone();
                    if let Some(o) = observer {
                        o(status);
                    }
                }
                Cmd::ERROR => {
                    let code = msg
                        .payload
                        .first()
                        .copied()
                        .unwrap_or(HidErrorCode::OTHER.0);
                    return Err(hid_error(code, "CTAPHID ERROR answer"));
                }
                c if c == cmd => return Ok(msg.payload),
                other => {
                    return Err(Error::communication(format!(
                        "CTAPHID answer {other} to {cmd}"
                    )));
                }
            }
        }
    }

    async fn transact_cmd(&self, cmd: Cmd, payload: &[u8]) -> Result<Vec<u8>> {
        let this = self.clone();
        let payload = payload.to_vec();
        unblock(move || this.transact_blocking(cmd, &payload, &mut |_| {})).await
    }

    /// PING (CTAP 2.1 §11.2.9.1.2): sends `data` and checks that it comes back unchanged.
    ///
    /// # Errors
    /// As [`CtapHidChannel::transact_blocking`]; `CorruptedData` when the echo differs.
    pub async fn ping(&self, data: &[u8]) -> Result<()> {
        let echo = self.transact_cmd(Cmd::PING, data).await?;
        if echo == data {
            Ok(())
        } else {
            Err(Error::corrupted("CTAPHID PING echo differs"))
        }
    }

    /// WINK (CTAP 2.1 §11.2.9.2.1): the device shows the user that it is this one.
    ///
    /// # Errors
    /// `NotImplemented` when the device lacks CAPABILITY_WINK; otherwise as
    /// [`CtapHidChannel::transact_blocking`].
    pub async fn wink(&self) -> Result<()> {
        if !self.inner.info.capabilities.contains(Capabilities::WINK) {
            return Err(Error::not_implemented("the device does not WINK"));
        }
        self.transact_cmd(Cmd::WINK, &[]).await.map(drop)
    }

    /// LOCK (CTAP 2.1 §11.2.9.2.2): reserves the device for this channel for `seconds`
    /// (1..=10); 0 releases it.
    ///
    /// # Errors
    /// `BadParameter` for more than 10 s; otherwise as [`CtapHidChannel::transact_blocking`].
    pub async fn lock(&self, seconds: u8) -> Result<()> {
        if seconds > 10 {
            return Err(Error::bad_parameter("CTAPHID LOCK lasts at most 10 s"));
        }
        self.transact_cmd(Cmd::LOCK, &[seconds]).await.map(drop)
    }

    /// Sends a CTAP2 request (CBOR, CTAP 2.1 §11.2.9.1.2) and returns the answer: the CTAP
    /// status byte and the CBOR data.
    ///
    /// # Errors
    /// As [`CtapHidChannel::transact_blocking`].
    pub async fn cbor(&self, request: &[u8]) -> Result<Vec<u8>> {
        self.transact_cmd(Cmd::CBOR, request).await
    }
}

fn hid_error(code: u8, context: &'static str) -> Error {
    let code_t = HidErrorCode(code);
    Error::communication(format!("{context}: {code_t}")).with_underlying(Underlying::CtapHid(code))
}

fn parse_init_answer(nonce: &[u8; 8], cmd: Cmd, payload: &[u8]) -> Option<DeviceInfo> {
    if cmd != Cmd::INIT {
        return None;
    }
    let (echo, rest) = payload.split_first_chunk::<8>()?;
    if echo != nonce {
        return None;
    }
    let (cid, rest) = rest.split_first_chunk::<4>()?;
    let [protocol_version, major, minor, build, caps, ..] = *rest else {
        return None;
    };
    Some(DeviceInfo {
        cid: Cid::from_bytes(*cid),
        protocol_version,
        major,
        minor,
        build,
        capabilities: Capabilities(caps),
    })
}

#[async_trait]
impl<D: HidDevice> CtapChannel for CtapHidChannel<D> {
    async fn transact(&self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>> {
        let cmd = Cmd::try_from(cmd)
            .map_err(|_| Error::bad_parameter("a CTAPHID command has its high bit set"))?;
        self.transact_cmd(cmd, payload).await
    }

    fn capabilities(&self) -> u8 {
        self.inner.info.capabilities.0
    }
}
