//! A PIV signature through tokenkit's library path, beside the same APDUs sent with the bare
//! `pcsc` crate through the same pcscd, in one run; and the time from the simulated card's
//! power-on to the hub's insertion event.
//!
//! The library path is what `tokenctl sign` does: hub, PC/SC transport (its own I/O thread per
//! card, a PC/SC transaction per operation), the PIV driver (SELECT, then GENERAL AUTHENTICATE
//! with the 9A key) and `TokenSession`. The peer replays the exact APDUs that one library
//! signature sent (recorded by the vpcd bridge) inside one `SCardBeginTransaction`, with
//! nothing else around them: the difference is tokenkit's overhead. Target: at most 5 %.
//!
//! It needs a pcscd with vsmartcard's vpcd reader: `cargo xtask bench` starts a private one
//! (as root) and sets `TOKENKIT_VPCD_PORT`. Without it the benchmark says so and measures
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use driver_piv::sim::{PivCard, SimKey};
use driver_piv::{PivDriver, SlotId};
use token_core::{
    block_on, CardSimulator, HashAlg, Hub, ObjectId, Pin, PinKind, SignatureAlgorithm,
    TokenWatcher, WatchEvent,
};
use transport_pcsc::vpcd::VpcdBridge;
use transport_pcsc::PcscProvider;

const READER: &str = "Virtual PCD 00 00";

/// Remembers when the reader powered the card on.
struct Timed {
    inner: PivCard,
    powered_on: Arc<Mutex<Option<Instant>>>,
}

impl CardSimulator for Timed {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }
    fn power_on(&mut self) {
        *self.powered_on.lock().unwrap() = Some(Instant::now());
        self.inner.power_on();
    }
    fn power_off(&mut self) {
        self.inner.power_off();
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        self.inner.process(command)
    }
}

fn wait_for(events: &Receiver<WatchEvent>, want: fn(&WatchEvent) -> bool) -> Instant {
    loop {
        let e = TokenWatcher::next_event(events, Duration::from_secs(10))
            .expect("the hub reported no event within 10 s");
        if want(&e) {
            return Instant::now();
        }
    }
}

fn card() -> PivCard {
    PivCard::new_with_keys(
        4_242_424,
        [(SlotId::AUTHENTICATION, SimKey::p256(&[0x11; 32]).unwrap())],
    )
}

fn bench(c: &mut Criterion) {
    let Some(port) = std::env::var("TOKENKIT_VPCD_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        eprintln!(
            "!!! piv_pcsc NOT RUN: TOKENKIT_VPCD_PORT is not set. It needs a pcscd with the vpcd \
             reader: run `cargo xtask bench` (as root), which starts a private one."
        );
        return;
    };
    let recording = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let powered_on = Arc::new(Mutex::new(None));
    let (rec, log) = (recording.clone(), recorded.clone());
    let sim = Timed {
        inner: card(),
        powered_on: powered_on.clone(),
    };
    let bridge = VpcdBridge::builder(Box::new(sim))
        .apdu_log(move |command, _| {
            if rec.load(Ordering::Acquire) {
                log.lock().unwrap().push(command.to_vec());
            }
        })
        .connect(("127.0.0.1", port))
        .unwrap();

    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(PivDriver))
        .provider(Arc::new(PcscProvider::new().unwrap()))
        .start()
        .unwrap();
    let events = hub.watcher().subscribe();
    wait_for(&events, |e| matches!(e, WatchEvent::Inserted(_)));
    let token = hub
        .tokens()
        .into_iter()
        .find(|t| t.driver_id() == "piv")
        .unwrap();
    let mut session = block_on(token.open_session()).unwrap();
    block_on(session.verify_pin(PinKind::User, &Pin::from("123456"))).unwrap();
    let key = ObjectId::new([0x9A]);
    let algorithm = SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256);
    let digest = [0x42u8; 32];

    recording.store(true, Ordering::Release);
    block_on(session.sign(&key, algorithm, &digest)).unwrap();
    recording.store(false, Ordering::Release);
    let apdus = recorded.lock().unwrap().clone();
    eprintln!("one library-path signature sent {} APDUs", apdus.len());

    let context = pcsc::Context::establish(pcsc::Scope::User).unwrap();
    let reader = CString::new(READER).unwrap();
    let mut bare = context
        .connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .unwrap();
    let mut buffer = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];

    let mut group = c.benchmark_group("piv_sign_p256_through_pcscd");
    group.bench_function("tokenkit: hub + PivDriver + transport-pcsc", |b| {
        b.iter(|| block_on(session.sign(&key, algorithm, &digest)).unwrap())
    });
    group.bench_function("bare pcsc crate: the same APDUs in one transaction", |b| {
        b.iter(|| {
            let tx = bare.transaction().unwrap();
            for apdu in &apdus {
                let answer = tx.transmit(apdu, &mut buffer).unwrap();
                assert!(answer.len() >= 2);
            }
            tx.end(pcsc::Disposition::LeaveCard)
                .map_err(|(_, e)| e)
                .unwrap();
        })
    });
    group.finish();

    // The overhead as one figure that drift on a shared machine does not decide: 20 blocks
    // of 100 signatures per path, the paths alternating block by block, each signature
    // timed; the medians of the 2,000 times per path. (The first bare transaction after a
    // library block can wait for pcsc-lite's lock poll while the library's last transaction
    // ends on the card's I/O thread; one such wait per block leaves the median alone.)
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for _ in 0..100 {
            let started = Instant::now();
            block_on(session.sign(&key, algorithm, &digest)).unwrap();
            ours.push(started.elapsed());
        }
        for _ in 0..100 {
            let started = Instant::now();
            let tx = bare.transaction().unwrap();
            for apdu in &apdus {
                let answer = tx.transmit(apdu, &mut buffer).unwrap();
                assert!(answer.len() >= 2);
            }
            tx.end(pcsc::Disposition::LeaveCard)
                .map_err(|(_, e)| e)
                .unwrap();
            theirs.push(started.elapsed());
        }
    }
    ours.sort();
    theirs.sort();
    let (a, b) = (ours[ours.len() / 2], theirs[theirs.len() / 2]);
    eprintln!(
        "medians of 2,000 signatures per path in alternating blocks: tokenkit {:.1} µs, bare \
         pcsc {:.1} µs, overhead {:+.1} % (target at most 5 %)",
        a.as_secs_f64() * 1e6,
        b.as_secs_f64() * 1e6,
        (a.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
    );
    drop(session);

    // Power-on to insertion: pull the card, put it back, and time from the reader's power-on
    // (seen by the simulator) to the hub's Inserted event.
    let mut group = c.benchmark_group("card_power_on_to_insertion_event");
    group.sample_size(10);
    let mut current = Some(bridge);
    group.bench_function("PC/SC status change + PIV probe", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if let Some(old) = current.take() {
                    drop(old.disconnect());
                    wait_for(&events, |e| matches!(e, WatchEvent::Removed(_)));
                }
                *powered_on.lock().unwrap() = None;
                let sim = Timed {
                    inner: card(),
                    powered_on: powered_on.clone(),
                };
                current = Some(VpcdBridge::connect(("127.0.0.1", port), Box::new(sim)).unwrap());
                let inserted = wait_for(&events, |e| matches!(e, WatchEvent::Inserted(_)));
                let on = powered_on
                    .lock()
                    .unwrap()
                    .expect("the reader powered the card on");
                total += inserted.saturating_duration_since(on);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
