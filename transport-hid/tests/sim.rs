//! The CTAPHID client against the simulated HID device, through real 64-byte reports.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_core::{block_on, CtapChannel, ErrorCode, Underlying};
use transport_hid::sim::{
    EchoHandler, Fault, PresencePolicy, SimConfig, SimControl, SimHidDevice,
    CTAP2_ERR_KEEPALIVE_CANCEL,
};
use transport_hid::{
    fragment, Capabilities, Cid, Cmd, CtapHidChannel, HidDevice, HidErrorCode, HidOptions,
    KeepaliveStatus, Reassembler, Report, Step, MAX_PAYLOAD,
};

fn fast_options() -> HidOptions {
    HidOptions {
        response_timeout: Duration::from_secs(1),
        transaction_timeout: Duration::from_secs(10),
        busy_retries: 2,
        busy_backoff: Duration::from_millis(10),
    }
}

fn fast_config() -> SimConfig {
    SimConfig {
        keepalive_interval: Duration::from_millis(20),
        message_timeout: Duration::from_millis(200),
        presence_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    }
}

fn open(require_presence: bool) -> (CtapHidChannel<SimHidDevice>, SimControl) {
    let (device, control) =
        SimHidDevice::with_config(EchoHandler { require_presence }, fast_config());
    let channel = CtapHidChannel::open_with(device, fast_options()).expect("INIT");
    (channel, control)
}

#[test]
fn init_allocates_a_channel() {
    let (channel, _c) = open(false);
    let info = channel.info();
    assert!(info.cid.is_allocatable());
    assert_eq!(info.protocol_version, 2);
    assert!(info.capabilities.contains(Capabilities::CBOR));
    assert_eq!(channel.capabilities(), info.capabilities.0);
}

#[test]
fn two_channels_get_different_ids() {
    let (device, _c) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    let device = Arc::new(device);
    let a = CtapHidChannel::open_with(device.clone(), fast_options()).expect("INIT a");
    let b = CtapHidChannel::open_with(device, fast_options()).expect("INIT b");
    assert_ne!(a.cid(), b.cid());
    block_on(a.ping(b"a")).expect("ping a");
    block_on(b.ping(b"b")).expect("ping b");
}

#[test]
fn ping_at_the_packet_boundaries() {
    let (channel, _c) = open(false);
    for len in [0, 1, 57, 58, 116, 117, 1000, MAX_PAYLOAD] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        block_on(channel.ping(&data)).unwrap_or_else(|e| panic!("PING {len}: {e:?}"));
    }
}

#[test]
fn oversized_payload_is_refused_before_sending() {
    let (channel, _c) = open(false);
    let e = block_on(channel.ping(&vec![0; MAX_PAYLOAD + 1])).expect_err("too long");
    assert_eq!(e.code(), ErrorCode::BadParameter);
}

#[test]
fn cbor_through_the_echo_handler() {
    let (channel, _c) = open(false);
    let req = [0x04u8];
    assert_eq!(block_on(channel.transact(0x90, &req)).expect("CBOR"), req);
    let big: Vec<u8> = (0..3000).map(|i| i as u8).collect();
    assert_eq!(block_on(channel.cbor(&big)).expect("CBOR"), big);
    let e = block_on(channel.transact(0x10, &req)).expect_err("not a command");
    assert_eq!(e.code(), ErrorCode::BadParameter);
}

#[test]
fn wink_and_lock() {
    let (channel, control) = open(false);
    block_on(channel.wink()).expect("WINK");
    assert_eq!(control.winks(), 1);
    block_on(channel.lock(2)).expect("LOCK");
    block_on(channel.ping(b"still mine")).expect("PING while locked");
    block_on(channel.lock(0)).expect("unlock");
    assert_eq!(
        block_on(channel.lock(11)).expect_err("too long").code(),
        ErrorCode::BadParameter
    );
}

#[test]
fn a_second_handle_is_busy_while_the_first_waits_for_the_user() {
    let (device, control) = SimHidDevice::with_config(
        EchoHandler {
            require_presence: true,
        },
        fast_config(),
    );
    control.set_presence(PresencePolicy::WaitForPress);
    let other = device.open_again();
    let a = CtapHidChannel::open_with(device, fast_options()).expect("INIT a");
    let b = CtapHidChannel::open_with(other, fast_options()).expect("INIT b");
    let waiting = std::thread::spawn(move || block_on(a.cbor(&[1])));
    // Wait until A's request is pending (its keep-alives flow), then try B.
    let start = Instant::now();
    while control.keepalives_sent() == 0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = block_on(b.ping(b"x")).expect_err("busy");
    assert_eq!(
        *e.underlying(),
        Underlying::CtapHid(HidErrorCode::CHANNEL_BUSY.0)
    );
    control.press();
    assert_eq!(waiting.join().expect("thread").expect("CBOR"), [1]);
    block_on(b.ping(b"x")).expect("free again");
}

#[test]
fn concurrent_channels_on_separate_handles() {
    let (device, _c) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    let handles: Vec<_> = (0..4).map(|_| device.open_again()).collect();
    drop(device);
    let threads: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            std::thread::spawn(move || {
                let options = HidOptions {
                    busy_retries: 50,
                    ..fast_options()
                };
                let ch = CtapHidChannel::open_with(d, options).expect("INIT");
                for n in 0..20 {
                    let data = vec![i as u8; 10 + n * 13];
                    block_on(ch.ping(&data)).expect("PING");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[test]
fn lock_keeps_other_channels_out() {
    let (device, _c) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    let device = Arc::new(device);
    let a = CtapHidChannel::open_with(device.clone(), fast_options()).expect("INIT a");
    let b = CtapHidChannel::open_with(device, fast_options()).expect("INIT b");
    block_on(a.lock(10)).expect("LOCK");
    let e = block_on(b.ping(b"x")).expect_err("busy");
    assert_eq!(e.code(), ErrorCode::CommunicationError);
    assert_eq!(
        *e.underlying(),
        Underlying::CtapHid(HidErrorCode::CHANNEL_BUSY.0)
    );
    block_on(a.lock(0)).expect("unlock");
    block_on(b.ping(b"x")).expect("free again");
}

#[test]
fn keepalives_reach_the_observer() {
    let (channel, control) = open(true);
    control.set_presence(PresencePolicy::AfterKeepalives(3));
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    channel.on_keepalive(move |status| {
        assert_eq!(status, KeepaliveStatus::UP_NEEDED);
        s.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(block_on(channel.cbor(&[1, 2, 3])).expect("CBOR"), [1, 2, 3]);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let mut direct = Vec::new();
    let answer = channel
        .transact_blocking(Cmd::CBOR, &[9], &mut |s| direct.push(s))
        .expect("CBOR");
    assert_eq!(answer, [9]);
    assert_eq!(direct, vec![KeepaliveStatus::UP_NEEDED; 3]);
}

#[test]
fn press_confirms_presence() {
    let (channel, control) = open(true);
    control.set_presence(PresencePolicy::WaitForPress);
    let c = control.clone();
    channel.on_keepalive(move |_| c.press());
    assert_eq!(block_on(channel.cbor(&[7])).expect("CBOR"), [7]);
}

#[test]
fn cancel_while_waiting_for_the_user() {
    let (channel, control) = open(true);
    control.set_presence(PresencePolicy::WaitForPress);
    let canceler = channel.clone();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        canceler.cancel().expect("CANCEL");
    });
    let answer = block_on(channel.cbor(&[1])).expect("CBOR ends");
    t.join().expect("canceler thread");
    assert_eq!(answer, [CTAP2_ERR_KEEPALIVE_CANCEL]);
    assert_eq!(control.cancels(), 1);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The channel is still usable.
    block_on(channel.ping(b"after")).expect("PING after CANCEL");
}

#[test]
fn cancel_without_a_request_is_harmless() {
    let (channel, _c) = open(false);
    channel.cancel().expect("CANCEL");
    block_on(channel.ping(b"x")).expect("PING");
}

fn expect_comm_error(fault: Fault, payload_len: usize) -> token_core::Error {
    let (channel, control) = open(false);
    control.inject(fault);
    let start = Instant::now();
    let e = block_on(channel.ping(&vec![0x55; payload_len])).expect_err("fault must fail");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{fault:?} took too long"
    );
    e
}

#[test]
fn every_fault_gives_a_clean_error() {
    for len in [10, 200] {
        for fault in [
            Fault::WrongCid,
            Fault::OutOfOrderSeq,
            Fault::Truncated,
            Fault::OversizedBcnt,
            Fault::Silence,
        ] {
            let (channel, control) = open(false);
            control.inject(fault);
            let start = Instant::now();
            let e = block_on(channel.ping(&vec![0x55; len])).expect_err("fault must fail");
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{fault:?} took too long"
            );
            assert_eq!(
                e.code(),
                ErrorCode::CommunicationError,
                "{fault:?} {len}: {e:?}"
            );
            // The channel recovers: leftovers of the broken answer are not taken for the next.
            let data = vec![0xAA; len + 1];
            block_on(channel.ping(&data))
                .unwrap_or_else(|e| panic!("after {fault:?} {len}: {e:?}"));
        }
    }
}

#[test]
fn error_answers_keep_the_code() {
    for code in [
        HidErrorCode::INVALID_CMD,
        HidErrorCode::INVALID_PAR,
        HidErrorCode::OTHER,
        HidErrorCode(0x42),
    ] {
        let e = expect_comm_error(Fault::Error(code.0), 5);
        assert_eq!(e.code(), ErrorCode::CommunicationError);
        assert_eq!(*e.underlying(), Underlying::CtapHid(code.0));
    }
}

#[test]
fn busy_is_retried_a_bounded_number_of_times() {
    let (channel, control) = open(false);
    control.inject(Fault::Error(HidErrorCode::CHANNEL_BUSY.0));
    block_on(channel.ping(b"retry")).expect("one busy answer is retried");
    for _ in 0..3 {
        control.inject(Fault::Error(HidErrorCode::CHANNEL_BUSY.0));
    }
    let e = block_on(channel.ping(b"x")).expect_err("gives up");
    assert_eq!(e.code(), ErrorCode::CommunicationError);
    assert_eq!(
        *e.underlying(),
        Underlying::CtapHid(HidErrorCode::CHANNEL_BUSY.0)
    );
}

#[test]
fn an_unplugged_device_is_token_not_found() {
    let e = expect_comm_error(Fault::Unplug, 5);
    assert_eq!(e.code(), ErrorCode::TokenNotFound);

    let (channel, control) = open(true);
    control.set_presence(PresencePolicy::WaitForPress);
    let c = control.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c.unplug();
    });
    let start = Instant::now();
    let e = block_on(channel.cbor(&[1])).expect_err("gone");
    t.join().expect("unplug thread");
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = block_on(channel.ping(b"x")).expect_err("still gone");
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
}

#[test]
fn open_fails_cleanly() {
    let (device, control) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    control.inject(Fault::Silence);
    let e = CtapHidChannel::open_with(device, fast_options()).expect_err("no answer");
    assert_eq!(e.code(), ErrorCode::CommunicationError);

    let (device, control) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    control.unplug();
    let e = CtapHidChannel::open_with(device, fast_options()).expect_err("gone");
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
}

// The authenticator side, driven with raw reports (CTAP 2.1 §11.2.9.1).

struct Raw {
    device: SimHidDevice,
    _control: SimControl,
}

impl Raw {
    fn new() -> Self {
        let (device, control) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
        Self {
            device,
            _control: control,
        }
    }

    fn send(&self, reports: &[Report]) {
        for r in reports {
            self.device.write(r).expect("write");
        }
    }

    fn answer(&self, cid: Cid) -> (Cmd, Vec<u8>) {
        let mut r = Reassembler::for_channel(cid);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Some(rep) = self.device.read(Duration::from_millis(100)).expect("read") else {
                continue;
            };
            if let Step::Complete(m) = r.push(&rep).expect("framing") {
                return (m.cmd, m.payload);
            }
        }
        panic!("no answer on {cid}");
    }

    fn init(&self) -> Cid {
        let nonce = [8u8; 8];
        self.send(&fragment(Cid::BROADCAST, Cmd::INIT, &nonce).expect("frame"));
        let (cmd, p) = self.answer(Cid::BROADCAST);
        assert_eq!(cmd, Cmd::INIT);
        assert_eq!(&p[..8], &nonce);
        Cid::from_bytes([p[8], p[9], p[10], p[11]])
    }

    fn expect_error(&self, cid: Cid, code: HidErrorCode) {
        assert_eq!(
            self.answer(cid),
            (Cmd::ERROR, vec![code.0]),
            "expected {code}"
        );
    }
}

#[test]
fn authenticator_reports_framing_errors() {
    let raw = Raw::new();
    let cid = raw.init();

    // Unknown channel, reserved channel, non-INIT on broadcast.
    raw.send(&fragment(Cid(0x1234_5678), Cmd::PING, b"x").expect("frame"));
    raw.expect_error(Cid(0x1234_5678), HidErrorCode::INVALID_CHANNEL);
    raw.send(&fragment(Cid(0), Cmd::PING, b"x").expect("frame"));
    raw.expect_error(Cid(0), HidErrorCode::INVALID_CHANNEL);
    raw.send(&fragment(Cid::BROADCAST, Cmd::PING, b"x").expect("frame"));
    raw.expect_error(Cid::BROADCAST, HidErrorCode::INVALID_CHANNEL);

    // Unknown command; WINK with data; LOCK over 10 s; CBOR without data.
    raw.send(&fragment(cid, Cmd::try_from(0xC5).expect("cmd"), b"").expect("frame"));
    raw.expect_error(cid, HidErrorCode::INVALID_CMD);
    raw.send(&fragment(cid, Cmd::WINK, b"x").expect("frame"));
    raw.expect_error(cid, HidErrorCode::INVALID_LEN);
    raw.send(&fragment(cid, Cmd::LOCK, &[11]).expect("frame"));
    raw.expect_error(cid, HidErrorCode::INVALID_PAR);
    raw.send(&fragment(cid, Cmd::CBOR, &[]).expect("frame"));
    raw.expect_error(cid, HidErrorCode::INVALID_LEN);

    // BCNT over the maximum.
    let mut big = fragment(cid, Cmd::PING, b"x").expect("frame")[0];
    big[5..7].copy_from_slice(&0xFFFFu16.to_be_bytes());
    raw.send(&[big]);
    raw.expect_error(cid, HidErrorCode::INVALID_LEN);

    // Out-of-order SEQ.
    let reports = fragment(cid, Cmd::PING, &[3; 200]).expect("frame");
    raw.send(&[reports[0], reports[2]]);
    raw.expect_error(cid, HidErrorCode::INVALID_SEQ);

    // A new command in the middle of a message.
    raw.send(&[reports[0], reports[0]]);
    raw.expect_error(cid, HidErrorCode::INVALID_SEQ);

    // A stray continuation is ignored; the next PING works.
    raw.send(&[reports[1]]);
    raw.send(&fragment(cid, Cmd::PING, b"ok").expect("frame"));
    assert_eq!(raw.answer(cid), (Cmd::PING, b"ok".to_vec()));

    // A message left incomplete times out.
    raw.send(&[reports[0]]);
    raw.expect_error(cid, HidErrorCode::MSG_TIMEOUT);

    // Another channel while a message is in progress is busy; INIT resyncs the channel.
    let other = raw.init();
    raw.send(&[reports[0]]);
    raw.send(&fragment(other, Cmd::PING, b"x").expect("frame"));
    raw.expect_error(other, HidErrorCode::CHANNEL_BUSY);
    raw.send(&fragment(cid, Cmd::INIT, &[5; 8]).expect("frame"));
    let (cmd, p) = raw.answer(cid);
    assert_eq!(cmd, Cmd::INIT);
    assert_eq!(&p[8..12], &cid.to_bytes());
    raw.send(&fragment(other, Cmd::PING, b"y").expect("frame"));
    assert_eq!(raw.answer(other), (Cmd::PING, b"y".to_vec()));
}

#[test]
fn capabilities_decide_wink_and_msg() {
    let config = SimConfig {
        capabilities: Capabilities(Capabilities::CBOR),
        ..fast_config()
    };
    let (device, _c) = SimHidDevice::with_config(EchoHandler::default(), config);
    let channel = CtapHidChannel::open_with(device, fast_options()).expect("INIT");
    let e = block_on(channel.wink()).expect_err("no WINK");
    assert_eq!(e.code(), ErrorCode::NotImplemented);
    // Without NMSG, MSG reaches the handler: the default answers 6D00 (INS not supported).
    let answer = block_on(channel.transact(Cmd::MSG.byte(), &[0, 1, 0, 0])).expect("MSG");
    assert_eq!(answer, [0x6D, 0x00]);

    let (device, _c) = SimHidDevice::with_config(EchoHandler::default(), fast_config());
    let channel = CtapHidChannel::open_with(device, fast_options()).expect("INIT");
    let e = block_on(channel.transact(Cmd::MSG.byte(), &[0, 1, 0, 0])).expect_err("NMSG");
    assert_eq!(
        *e.underlying(),
        Underlying::CtapHid(HidErrorCode::INVALID_CMD.0)
    );
}
