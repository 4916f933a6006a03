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
//!
//! One test stops the private pcscd (SIGTERM, as a package upgrade or an idle socket-activated
//! pcscd would) and starts another with the same configuration in the same mount namespace;
//! that one serves the tests after it and is stopped when this test process exits (it is
//! started with `setpriv --pdeathsig TERM` from a thread that lives as long as the process).
//! The harness stops the first daemon as before (it reaps the exited process) and gives the
//! next suite a fresh one. The suite runs every workspace test target named `stack`; this is
//! the only one, and one added after it would find no pcscd once this binary has exited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{mpsc, Arc, Mutex};
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

/// Logs `session` in with the PIN, signs `message` with the hello key `key` and checks the
/// signature.
fn sign_and_verify(session: &mut token_core::TokenSession, key: &KeyItem, message: &[u8]) {
    let signature = block_on(async {
        session.verify_pin(PinKind::User, &Pin::from(PIN)).await?;
        session
            .sign(&key.object_id, SignatureAlgorithm::Ed25519, message)
            .await
    })
    .unwrap();
    verifying_key(key)
        .verify(message, &Signature::from_slice(&signature).unwrap())
        .unwrap();
}

/// [`sign_and_verify`] in a new session of `token`, closed after.
fn sign_and_verify_in_new_session(token: &TokenHandle, key: &KeyItem, message: &[u8]) {
    let mut session = block_on(token.open_session()).unwrap();
    sign_and_verify(&mut session, key, message);
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
    sign_and_verify(&mut session, &key, message);

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
    sign_and_verify_in_new_session(&token, &key, message);
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

/// How long the readers and the card may take to come back once pcscd runs again (the
/// provider pauses at most 5 s between tries to reach it, and pcscd polls vpcd every 400 ms).
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// pcscd's socket inside the private mount namespace (Debian's pcscd ignores
/// `PCSCLITE_CSOCK_NAME`).
const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// The pcscd serving this test: its PID and the reader configuration directory it was started
/// with (`pcscd --foreground -c DIR`).
#[derive(Debug)]
struct RunningPcscd {
    pid: u32,
    config: PathBuf,
}

/// The one pcscd in this process's mount namespace serving vpcd on `port`: this test stops
/// the daemon it finds, so it takes only one started with `-c DIR` where DIR configures vpcd
/// on that port (as `cargo xtask stack` does), never the machine's own pcscd.
fn private_pcscd(port: u16) -> RunningPcscd {
    let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
    // Unreadable in some containers; where it can be read, it must differ.
    if let Ok(init) = fs::read_link("/proc/1/ns/mnt") {
        assert_ne!(
            ours, init,
            "not in a private mount namespace: refusing to stop this machine's pcscd \
             (run `cargo xtask stack`)"
        );
    }
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let is_pcscd = fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "pcscd");
        let same_ns = fs::read_link(dir.join("ns/mnt")).is_ok_and(|ns| ns == ours);
        if !(is_pcscd && same_ns && is_running(pid)) {
            continue;
        }
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let config = args
            .iter()
            .position(|a| a == "-c" || a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("pcscd {pid} was started without -c DIR: {args:?}"));
        let config = PathBuf::from(config);
        let channel = format!("CHANNELID 0x{port:X}");
        let serves_port = fs::read_dir(&config).is_ok_and(|files| {
            files
                .flatten()
                .any(|f| fs::read_to_string(f.path()).is_ok_and(|c| c.contains(&channel)))
        });
        assert!(
            serves_port,
            "pcscd {pid} here does not run vpcd on {port} ({}): refusing to stop it",
            config.display()
        );
        found.push(RunningPcscd { pid, config });
    }
    assert_eq!(found.len(), 1, "expected one pcscd here: {found:?}");
    found.pop().unwrap()
}

/// True while `pid` exists and is not a zombie (the harness reaps its pcscd only when the
/// suite ends).
fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // pid (comm) STATE ...: the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Sends SIGTERM to the daemon and waits (bounded) until it has exited.
fn stop_pcscd(daemon: &RunningPcscd) {
    let status = Command::new("kill")
        .args(["-TERM", &daemon.pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {}: {status}", daemon.pid);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while is_running(daemon.pid) {
        assert!(
            Instant::now() < deadline,
            "pcscd {} still runs {EVENT_TIMEOUT:?} after SIGTERM",
            daemon.pid
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // pcscd removes its socket and PID file when it exits on SIGTERM; were they left, the
    // next pcscd would refuse to start. They are on this namespace's private tmpfs.
    for leftover in [PCSCD_SOCKET, "/run/pcscd/pcscd.pid"] {
        if Path::new(leftover).exists() {
            println!("removing {leftover}, left by the stopped pcscd");
            let _ = fs::remove_file(leftover);
        }
    }
}

/// Starts `pcscd --foreground -c CONFIG` in this mount namespace, logging to `log`, and waits
/// (bounded) for its socket; returns its PID. The daemon gets SIGTERM when this process exits:
/// it is started with `setpriv --pdeathsig TERM` from a thread that waits for it and so lives
/// as long as it does (the parent-death signal follows the thread that started the child). So
/// it serves the tests that run after this one and never outlives the test binary.
fn start_pcscd(config: &Path, log: &Path) -> u32 {
    let out = fs::File::create(log).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "TERM", "pcscd", "--foreground", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let (started_tx, started) = mpsc::channel();
    let (exited_tx, exited) = mpsc::channel();
    std::thread::Builder::new()
        .name("pcscd-parent".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let _ = exited_tx.send(child.wait());
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })
        .unwrap();
    let pid = started
        .recv()
        .unwrap()
        .expect("setpriv and pcscd run (util-linux, pcscd)");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !Path::new(PCSCD_SOCKET).exists() {
        if let Ok(status) = exited.try_recv() {
            panic!(
                "the new pcscd exited ({status:?}):\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the new pcscd did not open {PCSCD_SOCKET} within {EVENT_TIMEOUT:?}:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

/// True when a TCP socket listens on `port` (from `/proc/net/tcp` and `tcp6`, so that vpcd,
/// which takes any connection as a card inserted, is not probed by connecting).
fn listening(port: u16) -> bool {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st: 0A is LISTEN.
                fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
            })
        })
    })
}

/// Inserts `sim` again once vpcd listens (a new pcscd opens vpcd's port a little after its
/// socket), bounded.
fn insert_when_listening(port: u16, sim: Box<dyn CardSimulator>) -> VpcdBridge {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !listening(port) {
        assert!(
            Instant::now() < deadline,
            "vpcd did not listen on {port} within {EVENT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    VpcdBridge::connect(("127.0.0.1", port), sim).unwrap()
}

/// The hub's slots once `done` holds for them, or as they are after [`EVENT_TIMEOUT`] (for
/// the caller to assert on): each reader is reported on its own, so one event says nothing
/// about the others.
fn slots_until(
    hub: &Hub,
    done: impl Fn(&[token_core::SlotInfo]) -> bool,
) -> Vec<token_core::SlotInfo> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        hub.settle();
        let slots = hub.slot_manager().slots();
        if done(&slots) || Instant::now() >= deadline {
            return slots;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signs with `session` on a thread of its own and waits for the answer, at most
/// [`EVENT_TIMEOUT`]: `None` if it is still waiting then (a call on a stopped PC/SC service
/// must fail, not hang).
fn sign_bounded(
    mut session: token_core::TokenSession,
    key: &KeyItem,
    message: &'static [u8],
) -> Option<token_core::Result<Vec<u8>>> {
    let object = key.object_id.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = block_on(session.sign(&object, SignatureAlgorithm::Ed25519, message));
        let _ = tx.send(result);
    });
    rx.recv_timeout(EVENT_TIMEOUT).ok()
}

#[test]
#[ignore = "needs pcscd with vpcd: run by `cargo xtask stack`"]
fn readers_and_tokens_go_with_pcscd_and_come_back_with_a_new_one() {
    let Some(stack) = Stack::start() else { return };
    let daemon = private_pcscd(stack.port);
    println!(
        "pcscd {} with reader configuration {}",
        daemon.pid,
        daemon.config.display()
    );
    let (sim, _) = Watched::new();
    let bridge = stack.insert(sim);
    let id = stack.expect_inserted();
    assert_eq!(id, TokenId::parse(TOKEN).unwrap());
    let token = stack.token(&id);
    let key = hello_key(&token);
    let message = b"signed through pcscd";
    let mut session = block_on(token.open_session()).unwrap();
    block_on(session.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    block_on(session.sign(&key.object_id, SignatureAlgorithm::Ed25519, message)).unwrap();
    // A second hub on the same service, to be dropped while the service is away.
    let other_hub = Hub::builder()
        .registered(false)
        .provider(Arc::new(PcscProvider::new().unwrap()))
        .start()
        .unwrap();

    // The service goes away: the reader's slot and its token are removed, and the open
    // session fails instead of hanging.
    stop_pcscd(&daemon);
    let stopped = Instant::now();
    let removed = TokenWatcher::next_event(&stack.events, EVENT_TIMEOUT);
    println!(
        "after pcscd stopped ({:.1} ms): {removed:?}",
        stopped.elapsed().as_secs_f64() * 1e3
    );
    let signed = sign_bounded(session, &key, message);
    println!("a signature in the session opened before: {signed:?}");
    let slots_while_stopped = slots_until(&stack.hub, |slots| slots.is_empty());
    // Its monitor is waiting to reach the service again: dropping the hub stops it, bounded.
    let (dropped_tx, dropped) = mpsc::channel();
    std::thread::spawn(move || {
        drop(other_hub);
        let _ = dropped_tx.send(());
    });
    let other_hub_dropped = dropped.recv_timeout(EVENT_TIMEOUT).is_ok();
    let sim = bridge.disconnect().unwrap();
    // The new pcscd starts before any assertion, so that the tests after this one have a
    // pcscd even if this one fails.
    let scratch =
        std::env::var_os("TOKENKIT_STACK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let log = scratch.join("pcscd-restarted.log");
    let restarted = start_pcscd(&daemon.config, &log);
    println!("new pcscd {restarted} (log: {})", log.display());

    assert_eq!(removed.unwrap(), WatchEvent::Removed(id.clone()));
    let e = signed
        .unwrap_or_else(|| {
            panic!("a signature on a stopped pcscd still hangs after {EVENT_TIMEOUT:?}")
        })
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            ErrorCode::TokenNotFound | ErrorCode::CommunicationError
        ),
        "{e}"
    );
    assert!(
        slots_while_stopped.is_empty(),
        "vpcd's readers are still slots without pcscd: {slots_while_stopped:?}"
    );
    assert!(stack.hub.token(&id).is_err(), "{id} is still a token");
    assert!(
        other_hub_dropped,
        "dropping a hub while pcscd is away still hangs after {EVENT_TIMEOUT:?}"
    );

    // A new pcscd with the same configuration: the reader comes back, and once the card is
    // in it again (vpcd's connection went with the old daemon), its token with the same ID.
    let bridge = insert_when_listening(stack.port, sim);
    let back = TokenWatcher::next_event(&stack.events, RESTART_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "{e}; slots: {:?}; new pcscd's output:\n{}",
            stack.hub.slot_manager().slots(),
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    println!(
        "{back:?} {:.1} ms after pcscd stopped",
        stopped.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(back, WatchEvent::Inserted(id.clone()));
    let slot = stack.hub.slot_manager().slot(READER).unwrap();
    assert_eq!(slot.state, SlotState::ValidCard);
    assert_eq!(slot.tokens, vec![id.clone()]);
    // Both of vpcd's readers are back, the second one empty.
    let second = READER.replace(" 00 00", " 00 01");
    let slots = slots_until(&stack.hub, |slots| slots.iter().any(|s| s.name == second));
    assert!(
        slots
            .iter()
            .any(|s| s.name == second && s.state == SlotState::Empty),
        "{second} is not back: {slots:?}"
    );

    // And it signs again through the new daemon.
    let token = stack.token(&id);
    sign_and_verify_in_new_session(&token, &key, message);
    drop(bridge);
    stack.expect_removed(&id);
}
