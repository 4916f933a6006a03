//! The whole stack through a real pcscd: the hello card simulator in vpcd's virtual reader
//! (through our vpcd bridge), pcscd, libpcsclite, the `pcsc` crate, our provider and channel,
//! the hello driver, the hub; and OpenSC's `opensc-tool` against the same card.
//!
//! Run by `cargo xtask stack` (or `cargo xtask test`), which starts a private pcscd with vpcd
//! and runs `cargo test -p transport-pcsc --test stack -- --ignored --test-threads=1` inside
//! its mount namespace with `TOKENKIT_VPCD_PORT` set. The tests are ignored (with a reason) so that a
//! plain `cargo test --workspace` skips them, and they share the one reader, hence one
//! thread. Run without `TOKENKIT_VPCD_PORT`, every test says so loudly and returns, or fails
//! when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hello_driver::{HelloCard, HelloDriver};
use token_core::{
    block_on, CardChannel, CardSimulator, ErrorCode, Hub, Item, KeyItem, Pin, PinKind,
    SignatureAlgorithm, SlotState, TokenHandle, TokenId, TokenWatcher, WatchEvent,
};
use transport_pcsc::vpcd::VpcdBridge;
use transport_pcsc::{is_card_reset, PcscCard, PcscProvider};

/// The reader vpcd's first port serves, as pcscd names it.
const READER: &str = "Virtual PCD 00 00";
const SERIAL: u32 = 0x00C0_FFEE;
const TOKEN: &str = "hello:00c0ffee";
const PIN: &str = "1234";
/// How long an insertion or removal may take to show before the test gives up on it.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !v.is_empty() && v != "false" && v != "0" && v != "no"
    })
}

/// vpcd's port, or `None` (after saying so loudly) when this does not run under
/// `cargo xtask stack`. Under CI that is a failure.
fn vpcd_port() -> Option<u16> {
    match std::env::var("TOKENKIT_VPCD_PORT") {
        Ok(port) => Some(
            port.trim()
                .parse()
                .expect("TOKENKIT_VPCD_PORT is a port number"),
        ),
        Err(_) => {
            // Straight to the terminal: libtest hides what a passing test prints.
            let _ = std::io::stderr().write_all(
                b"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                  !!! STACK TEST NOT RUN: TOKENKIT_VPCD_PORT is not set.\n\
                  !!! These tests need a pcscd with vsmartcard's vpcd reader; run them with\n\
                  !!! `cargo xtask stack`, which starts a private one (as root) and sets it.\n\
                  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            );
            assert!(
                !in_ci(),
                "CI is set: a stack test that cannot run is a failure (run `cargo xtask stack`)"
            );
            None
        }
    }
}

/// The hello card, watched: when it was last powered on.
struct Watched {
    card: HelloCard,
    powered_on: Arc<Mutex<Option<Instant>>>,
}

impl Watched {
    fn new() -> (Box<Self>, Arc<Mutex<Option<Instant>>>) {
        let powered_on = Arc::new(Mutex::new(None));
        let sim = Box::new(Self {
            card: HelloCard::new(SERIAL, [42; 32], PIN),
            powered_on: powered_on.clone(),
        });
        (sim, powered_on)
    }
}

impl CardSimulator for Watched {
    fn atr(&self) -> Vec<u8> {
        self.card.atr()
    }
    fn power_on(&mut self) {
        *self.powered_on.lock().unwrap() = Some(Instant::now());
        self.card.power_on();
    }
    fn power_off(&mut self) {
        self.card.power_off();
    }
    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        self.card.process(command)
    }
}

struct Stack {
    hub: Hub,
    events: Receiver<WatchEvent>,
    port: u16,
}

impl Stack {
    /// A hub with the PC/SC provider and the hello driver only; the reader starts empty.
    fn start() -> Option<Self> {
        let port = vpcd_port()?;
        let hub = Hub::builder()
            .registered(false)
            .driver(0, Arc::new(HelloDriver))
            .provider(Arc::new(PcscProvider::new().expect("pcscd answers")))
            .start()
            .unwrap();
        // A card an earlier test left behind may still be on its way out (pcscd polls vpcd
        // every 400 ms).
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let slot = hub
                .slot_manager()
                .slot(READER)
                .unwrap_or_else(|| panic!("no slot {READER}: {:?}", hub.slot_manager().slots()));
            if slot.state == SlotState::Empty {
                break;
            }
            assert!(Instant::now() < deadline, "{READER} is not empty: {slot:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let events = hub.watcher().subscribe();
        Some(Self { hub, events, port })
    }

    fn insert(&self, sim: Box<dyn CardSimulator>) -> VpcdBridge {
        VpcdBridge::connect(("127.0.0.1", self.port), sim).unwrap()
    }

    fn next_event(&self) -> WatchEvent {
        TokenWatcher::next_event(&self.events, EVENT_TIMEOUT).unwrap()
    }

    fn expect_inserted(&self) -> TokenId {
        match self.next_event() {
            WatchEvent::Inserted(id) => id,
            other => panic!("expected an insertion, got {other:?}"),
        }
    }

    fn expect_removed(&self, id: &TokenId) {
        assert_eq!(self.next_event(), WatchEvent::Removed(id.clone()));
    }

    fn token(&self, id: &TokenId) -> TokenHandle {
        self.hub.token(id).unwrap()
    }
}

fn hello_key(token: &TokenHandle) -> KeyItem {
    match token.items().into_iter().next() {
        Some(Item::Key(key)) => key,
        other => panic!("expected the hello key, got {other:?}"),
    }
}

fn verifying_key(key: &KeyItem) -> VerifyingKey {
    let raw: [u8; 32] = key
        .public_key
        .as_ref()
        .unwrap()
        .raw
        .clone()
        .try_into()
        .unwrap();
    VerifyingKey::from_bytes(&raw).unwrap()
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn hello_card_signs_through_pcscd_and_keeps_its_id_across_reinsertion() {
    let Some(stack) = Stack::start() else { return };
    let (sim, powered_on) = Watched::new();
    let connected = Instant::now();
    let bridge = stack.insert(sim);

    let id = stack.expect_inserted();
    let inserted = Instant::now();
    let power_on = powered_on
        .lock()
        .unwrap()
        .expect("pcscd powered the card on");
    println!(
        "insertion event {:.1} ms after power-on ({:.1} ms after the bridge connected)",
        (inserted - power_on).as_secs_f64() * 1e3,
        (inserted - connected).as_secs_f64() * 1e3
    );
    assert_eq!(id, TokenId::parse(TOKEN).unwrap());
    let slot = stack.hub.slot_manager().slot(READER).unwrap();
    assert_eq!(slot.state, SlotState::ValidCard);
    assert_eq!(slot.atr, Some(HelloCard::new(SERIAL, [42; 32], PIN).atr()));
    assert_eq!(slot.tokens, vec![id.clone()]);

    let token = stack.token(&id);
    let key = hello_key(&token);
    let message = b"signed through pcscd";
    let mut session = block_on(token.open_session()).unwrap();
    let signature = block_on(async {
        session.verify_pin(PinKind::User, &Pin::from(PIN)).await?;
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, message)
            .await
    })
    .unwrap();
    verifying_key(&key)
        .verify(message, &Signature::from_slice(&signature).unwrap())
        .unwrap();

    // Pull the card: the token is removed, and the open session says so.
    let pulled = Instant::now();
    let sim = bridge.disconnect().unwrap();
    stack.expect_removed(&id);
    println!(
        "removal event {:.1} ms after the card was pulled",
        pulled.elapsed().as_secs_f64() * 1e3
    );
    let e =
        block_on(session.sign(&key.object_id, SignatureAlgorithm::Ed25519, message)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TokenNotFound, "{e}");
    stack.hub.settle();
    assert_eq!(
        stack.hub.slot_manager().slot(READER).unwrap().state,
        SlotState::Empty
    );

    // Put it back: the same token ID, and it signs again.
    let bridge = stack.insert(sim);
    assert_eq!(stack.expect_inserted(), id);
    let token = stack.token(&id);
    let signature = block_on(async {
        let mut session = token.open_session().await?;
        session.verify_pin(PinKind::User, &Pin::from(PIN)).await?;
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, message)
            .await
    })
    .unwrap();
    verifying_key(&key)
        .verify(message, &Signature::from_slice(&signature).unwrap())
        .unwrap();
    drop(bridge);
    stack.expect_removed(&id);

    let dropping = Instant::now();
    drop(stack);
    println!(
        "hub with the PC/SC monitor stopped in {:.1} ms",
        dropping.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn apdus_through_vpcd_are_answered_and_logged_in_order() {
    let Some(stack) = Stack::start() else { return };
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let (sim, _) = Watched::new();
    let bridge = VpcdBridge::builder(sim)
        .apdu_log(move |c, r| seen.lock().unwrap().push((c.to_vec(), r.to_vec())))
        .connect(("127.0.0.1", stack.port))
        .unwrap();
    let id = stack.expect_inserted();

    let card = block_on(PcscCard::connect(READER)).unwrap();
    assert_eq!(card.atr(), HelloCard::new(SERIAL, [42; 32], PIN).atr());
    // vpcd's IFD handler does not report SCARD_ATTR_MAXINPUT: short APDUs.
    assert!(!card.caps().extended_length, "{:?}", card.caps());
    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 0x0A];
    select.extend_from_slice(&hello_driver::AID);
    let before = log.lock().unwrap().len();
    const ROUNDS: u32 = 100;
    let started = Instant::now();
    block_on(async {
        for _ in 0..ROUNDS {
            assert_eq!(card.transmit(&select).await.unwrap(), vec![0x90, 0x00]);
        }
    });
    let each = started.elapsed() / ROUNDS;
    println!(
        "{ROUNDS} SELECTs through pcscd and vpcd: {:.2} ms per APDU",
        each.as_secs_f64() * 1e3
    );
    // Printed, not asserted (speed is measured by the criterion benchmark in
    // tokenctl/benches/piv_pcsc.rs): about 0.1 ms per APDU with TCP_QUICKACK set before every
    // read, 49 ms without it, on this machine kind.
    let log = log.lock().unwrap();
    assert_eq!(log.len() - before, ROUNDS as usize);
    assert!(log[before..]
        .iter()
        .all(|(c, r)| *c == select && r == &[0x90, 0x00]));
    drop(log);
    drop(card);
    drop(bridge);
    stack.expect_removed(&id);
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn pulling_the_card_during_a_signature_fails_within_a_second() {
    let Some(stack) = Stack::start() else { return };
    let pulled_at = Arc::new(Mutex::new(None));
    let mark = pulled_at.clone();
    let (sim, _) = Watched::new();
    let bridge = VpcdBridge::builder(sim)
        .pull_card_on(move |command| {
            // INS 2A: the hello card's SIGN.
            let sign = command.get(1) == Some(&0x2A);
            if sign {
                *mark.lock().unwrap() = Some(Instant::now());
            }
            sign
        })
        .connect(("127.0.0.1", stack.port))
        .unwrap();
    let id = stack.expect_inserted();
    let token = stack.token(&id);
    let key = hello_key(&token);

    let result = block_on(async {
        let mut session = token.open_session().await?;
        session.verify_pin(PinKind::User, &Pin::from(PIN)).await?;
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, b"never signed")
            .await
    });
    let failed = Instant::now();
    let e = result.unwrap_err();
    let pulled = pulled_at
        .lock()
        .unwrap()
        .expect("the SIGN command reached the card");
    let after = failed - pulled;
    println!(
        "signature failed {:.1} ms after the card was pulled: {e}",
        after.as_secs_f64() * 1e3
    );
    assert!(
        matches!(
            e.code(),
            ErrorCode::TokenNotFound | ErrorCode::CommunicationError
        ),
        "{e}"
    );
    assert!(after < Duration::from_secs(1), "took {after:?}: {e}");
    stack.expect_removed(&id);
    assert!(!bridge.is_connected());
    let sim = bridge.disconnect().unwrap();
    drop(sim);
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn a_reset_by_another_program_is_reported_and_the_lost_pin_is_not_hidden() {
    let Some(stack) = Stack::start() else { return };
    let (sim, _) = Watched::new();
    let bridge = stack.insert(sim);
    let id = stack.expect_inserted();
    let token = stack.token(&id);
    let key = hello_key(&token);

    block_on(async {
        let mut session = token.open_session().await.unwrap();
        session
            .verify_pin(PinKind::User, &Pin::from(PIN))
            .await
            .unwrap();
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, b"before")
            .await
            .unwrap();

        // Another program (another PC/SC connection) resets the card.
        let other = PcscCard::connect(READER).await.unwrap();
        other.reset().await.unwrap();
        drop(other);

        // The next call is told, once, with the PC/SC code underneath.
        let e = session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, b"after")
            .await
            .unwrap_err();
        println!("after the reset: {e}");
        assert_eq!(e.code(), ErrorCode::CommunicationError, "{e}");
        assert!(is_card_reset(&e), "{e:?}");

        // The connection is back, but the card forgot the PIN: the driver's next signature
        // is refused for want of it, not silently signed or retried.
        let e = session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, b"after")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded, "{e}");
        session
            .verify_pin(PinKind::User, &Pin::from(PIN))
            .await
            .unwrap();
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, b"after")
            .await
            .unwrap();
    });
    drop(bridge);
    stack.expect_removed(&id);
}

fn opensc_tool(args: &[&str]) -> String {
    let output = Command::new("opensc-tool")
        .args(args)
        .output()
        .expect("opensc-tool runs (Debian package opensc; `cargo xtask` installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!(
        "$ opensc-tool {}\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "opensc-tool {args:?}: {}",
        output.status
    );
    stdout
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn opensc_tool_sees_the_simulated_card() {
    let Some(stack) = Stack::start() else { return };
    let (sim, _) = Watched::new();
    let atr = sim.atr();
    let bridge = stack.insert(sim);
    let id = stack.expect_inserted();

    let readers = opensc_tool(&["--list-readers"]);
    let line = readers
        .lines()
        .find(|l| l.contains(READER))
        .unwrap_or_else(|| panic!("{READER} is not listed"));
    assert!(line.contains("Yes"), "no card shown in: {line}");

    let shown = opensc_tool(&["-r", READER, "--atr"]);
    let hex: Vec<String> = atr.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        shown.to_ascii_lowercase().contains(&hex.join(":")),
        "ATR {} not in the output",
        hex.join(":")
    );
    drop(bridge);
    stack.expect_removed(&id);
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn an_exclusive_section_whose_owner_went_away_does_not_lock_others_out() {
    let Some(stack) = Stack::start() else { return };
    let (sim, _) = Watched::new();
    let bridge = stack.insert(sim);
    let id = stack.expect_inserted();

    let abandoned = block_on(PcscCard::connect(READER)).unwrap();
    {
        // Beginning is queued on the card's I/O thread, not waited for: the future is ready at
        // once. The section's first command runs inside the transaction.
        let mut begin = abandoned.begin_exclusive();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            begin.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(()))
        ));
    }
    block_on(abandoned.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x00])).unwrap();

    // Its owner goes away without ending the section. Another program must still get the
    // card: pcscd holds both its SCardConnect and its SCardBeginTransaction while a
    // transaction is open, so if the section were left open this would wait for ever.
    // Bounded here.
    drop(abandoned);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let began = block_on(async {
            let other = PcscCard::connect(READER).await?;
            other.begin_exclusive().await?;
            let answer = other.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x00]).await;
            other.end_exclusive();
            answer.map(|_| ())
        });
        let _ = tx.send(began);
    });
    let began = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the abandoned exclusive section still holds the card");
    began.unwrap();
    drop(bridge);
    stack.expect_removed(&id);
}
