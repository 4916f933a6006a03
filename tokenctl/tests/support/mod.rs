//! Helpers for the stack tests: the vpcd port, scratch directories, third-party tools run with
//! a time limit and their output shown, certificates made by openssl, and an in-process hub
//! with the PC/SC provider and the PIV driver watching vpcd's first reader.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_piv::sim::{PivCard, SimKey};
use driver_piv::{PivDriver, SlotId};
use keychain_index::KeychainIndex;
use token_core::{
    CardSimulator, Hub, PublicKey, SlotState, TokenHandle, TokenId, TokenWatcher, WatchEvent,
};
use transport_pcsc::vpcd::{BridgeBuilder, VpcdBridge};
use transport_pcsc::PcscProvider;

/// The reader vpcd's first port serves, as pcscd names it.
pub const READER: &str = "Virtual PCD 00 00";
/// OpenSC's PKCS#11 module on Debian.
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// The simulator's factory PIN and PUK.
pub const PIN: &str = "123456";
pub const PUK: &str = "12345678";
/// How long an insertion or removal may take to show before a test gives up on it.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one run of a tool may take before it is killed and the test fails.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !v.is_empty() && v != "false" && v != "0" && v != "no"
    })
}

/// vpcd's port, or `None` (after saying so loudly) when this does not run under
/// `cargo xtask stack`. Under CI that is a failure.
pub fn vpcd_port() -> Option<u16> {
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
                  !!! PIV STACK TEST NOT RUN: TOKENKIT_VPCD_PORT is not set.\n\
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

/// A scratch directory of the test's own (under `TOKENKIT_STACK_DIR` when xtask gives one),
/// removed on drop. Tools run with it as their `HOME`, so OpenSC's file cache and the like
/// never carry one test's card into the next.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let base = std::env::var_os("TOKENKIT_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("piv-stack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a tool printed, and how it ended.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Asserts the tool succeeded; returns its standard output.
    pub fn ok(self) -> String {
        assert!(
            self.status.success(),
            "failed ({}): {}",
            self.status,
            self.stderr
        );
        self.stdout
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` at most `timeout`; kills it (by its own PID) if it is still running then.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` to the end (at most [`TOOL_TIMEOUT`]) with `HOME` in `home`, and prints the
/// command line and what it wrote (shown when the test fails).
pub fn run(mut cmd: Command, home: &Scratch) -> Ran {
    cmd.env("HOME", home.dir())
        .env("XDG_CACHE_HOME", home.path(".cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = describe(&cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e} (`cargo xtask` installs the tools)"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, TOOL_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    println!(
        "$ {line}   ({:.0} ms)\n{stdout}{}{stderr}",
        started.elapsed().as_secs_f64() * 1e3,
        if stderr.is_empty() { "" } else { "[stderr] " }
    );
    let status =
        status.unwrap_or_else(|| panic!("`{line}` still ran after {TOOL_TIMEOUT:?}; killed"));
    Ran {
        status,
        stdout,
        stderr,
    }
}

/// A command for `program` with `args`.
pub fn tool<S: AsRef<OsStr>>(program: &str, args: impl IntoIterator<Item = S>) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// `tokenctl` with its soft-token store in the scratch directory.
pub fn tokenctl<S: AsRef<OsStr>>(dir: &Scratch, args: impl IntoIterator<Item = S>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenctl"));
    c.arg("--store")
        .arg(dir.path("store"))
        .args(args)
        .env_remove("TOKENKIT_HOME")
        .env("T_PIN", PIN)
        .env("T_PUK", PUK);
    c
}

/// Runs openssl with `args`; asserts success.
pub fn openssl<S: AsRef<OsStr>>(dir: &Scratch, args: impl IntoIterator<Item = S>) -> String {
    run(tool("openssl", args), dir).ok()
}

/// `openssl dgst -sha256 -verify PUB -signature SIG DATA`, run to the end whatever it says.
pub fn openssl_verify(dir: &Scratch, public_pem: &Path, signature: &Path, data: &Path) -> Ran {
    run(
        tool(
            "openssl",
            [
                OsStr::new("dgst"),
                OsStr::new("-sha256"),
                OsStr::new("-verify"),
                public_pem.as_os_str(),
                OsStr::new("-signature"),
                signature.as_os_str(),
                data.as_os_str(),
            ],
        ),
        dir,
    )
}

/// `openssl dgst -sha256 -verify PUB -signature SIG DATA` says `Verified OK`.
pub fn openssl_verifies(dir: &Scratch, public_pem: &Path, signature: &Path, data: &Path) {
    let out = openssl_verify(dir, public_pem, signature, data);
    assert!(
        out.status.success() && out.stdout.contains("Verified OK"),
        "openssl did not verify {}: {}{}",
        signature.display(),
        out.stdout,
        out.stderr
    );
}

/// `openssl genpkey -algorithm ALGORITHM -pkeyopt OPTION -out OUT`: a new private key (PEM).
pub fn openssl_genpkey(dir: &Scratch, algorithm: &str, option: &str, out: &Path) {
    openssl(
        dir,
        [
            OsStr::new("genpkey"),
            OsStr::new("-algorithm"),
            OsStr::new(algorithm),
            OsStr::new("-pkeyopt"),
            OsStr::new(option),
            OsStr::new("-out"),
            out.as_os_str(),
        ],
    );
}

/// `openssl pkey -in KEY -pubout -out OUT`: the public key of a private key, PEM, in `out`.
pub fn openssl_pubout(dir: &Scratch, key_pem: &Path, out: &Path) {
    openssl(
        dir,
        [
            OsStr::new("pkey"),
            OsStr::new("-in"),
            key_pem.as_os_str(),
            OsStr::new("-pubout"),
            OsStr::new("-out"),
            out.as_os_str(),
        ],
    );
}

/// `openssl pkey -pubin -in PEM -outform DER -out DER`: a public key's SubjectPublicKeyInfo
/// (DER), written to `der_path` and returned.
pub fn openssl_public_der(dir: &Scratch, public_pem: &Path, der_path: &Path) -> Vec<u8> {
    openssl(
        dir,
        [
            OsStr::new("pkey"),
            OsStr::new("-pubin"),
            OsStr::new("-in"),
            public_pem.as_os_str(),
            OsStr::new("-outform"),
            OsStr::new("DER"),
            OsStr::new("-out"),
            der_path.as_os_str(),
        ],
    );
    std::fs::read(der_path).unwrap()
}

/// `openssl pkey -pubin -in PEM -noout -text`: how openssl describes a public key.
pub fn openssl_public_text(dir: &Scratch, public_pem: &Path) -> String {
    openssl(
        dir,
        [
            OsStr::new("pkey"),
            OsStr::new("-pubin"),
            OsStr::new("-in"),
            public_pem.as_os_str(),
            OsStr::new("-noout"),
            OsStr::new("-text"),
        ],
    )
}

/// `openssl x509 -in CERT -pubkey -noout`: a certificate's public key, PEM.
pub fn openssl_cert_public_pem(dir: &Scratch, cert_pem: &Path) -> String {
    openssl(
        dir,
        [
            OsStr::new("x509"),
            OsStr::new("-in"),
            cert_pem.as_os_str(),
            OsStr::new("-pubkey"),
            OsStr::new("-noout"),
        ],
    )
}

/// `openssl x509 -in CERT -outform DER -out DER`: a PEM certificate as DER, in `der`; returns
/// what openssl printed (nothing).
pub fn openssl_cert_der(dir: &Scratch, cert_pem: &Path, der: &Path) -> String {
    openssl(
        dir,
        [
            OsStr::new("x509"),
            OsStr::new("-in"),
            cert_pem.as_os_str(),
            OsStr::new("-outform"),
            OsStr::new("DER"),
            OsStr::new("-out"),
            der.as_os_str(),
        ],
    )
}

/// `tokenctl pubkey --token TOKEN --key KEY`: the key's public key (PEM); asserts success.
pub fn tokenctl_pubkey(dir: &Scratch, token: &str, key: &str) -> String {
    run(
        tokenctl(dir, ["pubkey", "--token", token, "--key", key]),
        dir,
    )
    .ok()
}

/// `tokenctl sign --token TOKEN --key KEY --in INPUT --out OUTPUT --pin-env T_PIN`.
pub fn tokenctl_sign(
    dir: &Scratch,
    token: &str,
    key: &str,
    input: &Path,
    output: &Path,
) -> Command {
    tokenctl(
        dir,
        [
            OsStr::new("sign"),
            OsStr::new("--token"),
            OsStr::new(token),
            OsStr::new("--key"),
            OsStr::new(key),
            OsStr::new("--in"),
            input.as_os_str(),
            OsStr::new("--out"),
            output.as_os_str(),
            OsStr::new("--pin-env"),
            OsStr::new("T_PIN"),
        ],
    )
}

/// The first line of `text` with `needle` in it; panics (showing `text`) when there is none.
pub fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

/// A certificate for the public key in `public_pem` with subject `CN=cn`, issued by a P-256 CA
/// key made once per scratch directory, the way protocols.md says works with OpenSSL 3
/// (`openssl x509 -new -force_pubkey`). Returns the PEM file and the DER.
pub fn certificate_for(dir: &Scratch, public_pem: &Path, cn: &str) -> (PathBuf, Vec<u8>) {
    let ca = dir.path("ca.key");
    if !ca.exists() {
        openssl(
            dir,
            [
                OsStr::new("ecparam"),
                OsStr::new("-name"),
                OsStr::new("prime256v1"),
                OsStr::new("-genkey"),
                OsStr::new("-noout"),
                OsStr::new("-out"),
                ca.as_os_str(),
            ],
        );
    }
    let stem = format!(
        "cert-{}",
        cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let pem = dir.path(&format!("{stem}.pem"));
    let der = dir.path(&format!("{stem}.der"));
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        [
            OsStr::new("x509"),
            OsStr::new("-new"),
            OsStr::new("-subj"),
            OsStr::new(&subject),
            OsStr::new("-key"),
            ca.as_os_str(),
            OsStr::new("-force_pubkey"),
            public_pem.as_os_str(),
            OsStr::new("-days"),
            OsStr::new("365"),
            OsStr::new("-out"),
            pem.as_os_str(),
        ],
    );
    openssl_cert_der(dir, &pem, &der);
    (pem, std::fs::read(&der).unwrap())
}

/// A PIV card with a P-256 key in 9A and an openssl-made certificate (`CN=cn`) for it.
pub struct Prepared {
    pub card: PivCard,
    /// The key's SubjectPublicKeyInfo, PEM.
    pub public_pem: PathBuf,
    /// The certificate, PEM and DER.
    pub cert_pem: PathBuf,
    pub cert_der: Vec<u8>,
    /// The key's public key, as the card reports it.
    pub public: PublicKey,
    pub id: TokenId,
}

/// A card (YubiKey 5.7-like, serial `serial`, so token `piv:<serial>`) with a P-256 key in 9A
/// and a certificate `CN=cn` for it.
pub fn card_with_9a(dir: &Scratch, serial: u32, cn: &str) -> Prepared {
    // Any scalar below the group order: a different one per serial.
    let mut scalar = [0x5Au8; 32];
    scalar[28..].copy_from_slice(&serial.to_be_bytes());
    let card = PivCard::new_with_keys(
        serial,
        [(SlotId::AUTHENTICATION, SimKey::p256(&scalar).unwrap())],
    );
    let public = card.public_key(SlotId::AUTHENTICATION).unwrap();
    let public_pem = dir.write("9a.pub.pem", public.to_spki_pem().as_bytes());
    let (cert_pem, cert_der) = certificate_for(dir, &public_pem, cn);
    let card = card.with_certificate(SlotId::AUTHENTICATION, &cert_der, false);
    Prepared {
        card,
        public_pem,
        cert_pem,
        cert_der,
        public,
        id: TokenId::parse(&format!("piv:{serial}")).unwrap(),
    }
}

/// A hub in this process with the PC/SC provider and the PIV driver only, and a watcher
/// subscription; the reader is empty when [`Stack::start`] returns.
pub struct Stack {
    pub hub: Arc<Hub>,
    pub events: Receiver<WatchEvent>,
    pub port: u16,
}

impl Stack {
    pub fn start() -> Option<Self> {
        let port = vpcd_port()?;
        let hub = Hub::builder()
            .registered(false)
            .driver(0, Arc::new(PivDriver))
            .provider(Arc::new(PcscProvider::new().expect("pcscd answers")))
            .start()
            .unwrap();
        let stack = Self {
            events: hub.watcher().subscribe(),
            hub: Arc::new(hub),
            port,
        };
        // A card an earlier test left behind may still be on its way out (pcscd polls vpcd).
        stack.wait_state(SlotState::Empty);
        // Forget what the subscription said about it.
        while stack.events.try_recv().is_ok() {}
        Some(stack)
    }

    /// Waits until the reader's slot is in `state` (after probing, for a card).
    pub fn wait_state(&self, state: SlotState) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let slot = self.hub.slot_manager().slot(READER).unwrap_or_else(|| {
                panic!("no slot {READER}: {:?}", self.hub.slot_manager().slots())
            });
            if slot.state == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{READER} is not {state:?}: {slot:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn address(&self) -> (&'static str, u16) {
        ("127.0.0.1", self.port)
    }

    /// Inserts `sim` into the first reader.
    pub fn insert(&self, sim: Box<dyn CardSimulator>) -> VpcdBridge {
        VpcdBridge::connect(self.address(), sim).unwrap()
    }

    /// Inserts `sim` into the first reader and waits for its token: the bridge that holds the
    /// card in the reader, and the token's ID.
    pub fn insert_token(&self, sim: Box<dyn CardSimulator>) -> (VpcdBridge, TokenId) {
        let bridge = self.insert(sim);
        (bridge, self.expect_inserted())
    }

    /// Takes the card out of the reader (drops its bridge) and waits for its token `id` to go.
    pub fn remove_token(&self, bridge: VpcdBridge, id: &TokenId) {
        drop(bridge);
        self.expect_removed(id);
    }

    /// Inserts a card set up with a log or a fault.
    pub fn insert_with(&self, builder: BridgeBuilder) -> VpcdBridge {
        builder.connect(self.address()).unwrap()
    }

    /// The next insertion or removal (item changes are skipped).
    pub fn next_event(&self) -> WatchEvent {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match TokenWatcher::next_event(&self.events, left) {
                Ok(WatchEvent::ItemsChanged(_)) => continue,
                Ok(e) => return e,
                Err(e) => panic!("no insertion or removal within {EVENT_TIMEOUT:?}: {e}"),
            }
        }
    }

    pub fn expect_inserted(&self) -> TokenId {
        match self.next_event() {
            WatchEvent::Inserted(id) => id,
            other => panic!("expected an insertion, got {other:?}"),
        }
    }

    pub fn expect_removed(&self, id: &TokenId) {
        assert_eq!(self.next_event(), WatchEvent::Removed(id.clone()));
    }

    pub fn token(&self, id: &TokenId) -> TokenHandle {
        self.hub.token(id).unwrap()
    }

    /// A keychain index following this hub.
    pub fn index(&self) -> KeychainIndex {
        KeychainIndex::attach(&self.hub).unwrap()
    }
}

/// The lines a child process writes to its standard output, as they come.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Hex, lower case, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tokenctl sim KIND` (piv, openpgp, multi) as a child process serving vpcd's port `port`
/// with its state in `state`: the simulator in a process of its own, killed by its PID when
/// the test is done with it.
pub struct SimProcess {
    child: Child,
}

impl SimProcess {
    pub fn start(dir: &Scratch, port: u16, kind: &str, state: &Path) -> Self {
        let vpcd = format!("127.0.0.1:{port}");
        let mut cmd = tokenctl(
            dir,
            [
                OsStr::new("sim"),
                OsStr::new(kind),
                OsStr::new("--vpcd"),
                OsStr::new(&vpcd),
                OsStr::new("--state"),
                state.as_os_str(),
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Self {
            child: cmd.spawn().unwrap(),
        }
    }

    /// SIGKILL: the simulator dies at once, in whatever it was doing.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
