//! The stack tests: a private pcscd with vpcd's virtual reader, and the suites run against it.
//!
//! Debian 12's pcscd always listens on `/run/pcscd/pcscd.comm` (it ignores
//! `PCSCLITE_CSOCK_NAME`), so each run gets its own daemon in a private mount namespace with a
//! tmpfs on `/run/pcscd`:
//!
//! ```text
//! unshare --mount --propagation private sh -c \
//!     'mkdir -p /run/pcscd && mount -t tmpfs tmpfs /run/pcscd && exec pcscd --foreground -c DIR'
//! ```
//!
//! `exec` makes the daemon the very process we spawned, so we hold its PID and stop it by that
//! PID. Commands that must talk to it run in its namespace through
//! `nsenter --target PID --mount`, with `TOKENKIT_VPCD_PORT` telling the card simulators where
//! vpcd listens (that port for reader `Virtual PCD 00 00` and the next for `00 01`). This
//! needs root (for `unshare -m` and `mount`), util-linux, `pcscd` and `vsmartcard-vpcd`.
//!
//! The suites are [`STACK_SUITES`]: later work adds a line per suite. Each gets a fresh
//! daemon. Before them a smoke check starts the daemon and lists its readers with a
//! third-party tool, expecting `Virtual PCD`.

use std::env;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pipeline::Outcome;
use crate::run;
use crate::Error;

/// vpcd's pcscd driver, from Debian's `vsmartcard-vpcd`.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// The name our reader.conf gives vpcd's readers (pcscd appends ` 00 00` and ` 00 01`).
pub const READER_NAME: &str = "Virtual PCD";

/// The environment variable that tells a suite which port vpcd listens on.
pub const PORT_VAR: &str = "TOKENKIT_VPCD_PORT";

/// A stack suite: a shell command run inside the private pcscd's mount namespace, in the
/// workspace root, with `TOKENKIT_VPCD_PORT` set and `TOKENKIT_STACK_DIR` naming a scratch
/// directory of its own.
///
/// A suite whose output has libtest `test result:` lines counts its tests; otherwise it counts
/// as one check, passed if it exits 0.
#[derive(Debug)]
pub struct StackSuite {
    /// Short name, shown in the log.
    pub name: &'static str,
    /// The `sh -c` command, e.g. `cargo test -p driver-piv --features stack -- --ignored`.
    pub command: &'static str,
    /// Killed (with its process group) after this long.
    pub timeout_secs: u64,
}

/// The stack suites, run in this order, each against a fresh pcscd. The simulators and
/// third-party tool runs add theirs here.
pub const STACK_SUITES: &[StackSuite] = &[
    StackSuite {
        name: "transport-pcsc",
        // Ignored by plain `cargo test`; they share vpcd's first reader, so one at a time.
        command: "cargo test --workspace --all-features --test stack -- --ignored \
                  --test-threads=1",
        timeout_secs: 900,
    },
    StackSuite {
        name: "piv-tools",
        // The PIV simulator against OpenSC, yubico-piv-tool, openssl and tokenctl; faults and
        // two signing processes at once. One reader, so one test at a time. `--workspace
        // --all-features` as the test step builds, so its build is reused, not redone with
        // other features.
        command: "cargo test --workspace --all-features --test piv_stack -- --ignored \
                  --test-threads=1",
        timeout_secs: 900,
    },
    StackSuite {
        name: "openpgp-tools",
        // The OpenPGP simulator (alone, and with PIV on one card) against GnuPG, OpenSC's
        // openpgp-tool and pkcs11-tool, openssl and tokenctl. One reader, so one test at a
        // time; built like piv-tools, to reuse the test step's build.
        command: "cargo test --workspace --all-features --test openpgp_stack -- --ignored \
                  --test-threads=1",
        timeout_secs: 600,
    },
    StackSuite {
        name: FIDO2_SUITE,
        // Yubico's python-fido2 (from a venv xtask makes, see [`crate::python`]) against the
        // FIDO2 simulator as an NFC key (`tokenctl sim fido2`): PIN, makeCredential,
        // getAssertion, credential management. One reader, so one test at a time.
        command: "cargo test --workspace --all-features --test fido2_stack -- --ignored \
                  --test-threads=1",
        timeout_secs: 900,
    },
];

/// The python-fido2 suite: it gets the venv's interpreter in
/// [`crate::python::FIDO2_PYTHON_VAR`].
const FIDO2_SUITE: &str = "fido2-tools";

/// What a suite needs in its environment beyond the daemon's port and scratch directory,
/// prepared before its daemon starts.
fn suite_env(root: &Path, suite: &StackSuite) -> Result<Vec<(&'static str, PathBuf)>, Error> {
    if suite.name == FIDO2_SUITE {
        let python = crate::python::fido2_venv(root)
            .map_err(|e| format!("python-fido2 for `{}`: {e}", suite.name))?;
        return Ok(vec![(crate::python::FIDO2_PYTHON_VAR, python)]);
    }
    Ok(Vec::new())
}

/// How long the daemon may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the smoke check waits for the readers to show.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/tokenkit-<label>-<pid>-<nanos>`.
    pub fn new(label: &str) -> io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = env::temp_dir().join(format!(
            "tokenkit-{label}-{}-{nanos:09}",
            std::process::id()
        ));
        fs::create_dir(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What this machine lacks to run a private pcscd, in words; empty when nothing is missing.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    match run::user_id() {
        Some(0) => {}
        Some(uid) => missing.push(format!(
            "root (running as uid {uid}; `unshare --mount` and `mount` need root)"
        )),
        None => missing.push("`id -u` (cannot tell whether we are root)".into()),
    }
    for (program, package) in [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("timeout", "coreutils"),
        ("pcscd", "pcscd"),
    ] {
        if run::find_program(program).is_none() {
            missing.push(format!("`{program}` (Debian package {package})"));
        }
    }
    if !Path::new(VPCD_DRIVER).is_file() {
        missing.push(format!("{VPCD_DRIVER} (Debian package vsmartcard-vpcd)"));
    }
    missing
}

/// A port `p` such that `p` and `p + 1` are both free now, for vpcd's two readers.
fn free_port_pair() -> Result<u16, Error> {
    for _ in 0..100 {
        // Bind port 0 for a port the kernel thinks free, then release it.
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        // vpcd listens on all addresses: check both ports there, and release them.
        let first = TcpListener::bind(("0.0.0.0", port));
        let second = TcpListener::bind(("0.0.0.0", next));
        if first.is_ok() && second.is_ok() {
            return Ok(port);
        }
    }
    Err("found no two free consecutive TCP ports for vpcd".into())
}

/// pcscd's reader configuration for vpcd on `port`.
pub fn reader_conf(port: u16) -> String {
    format!(
        "FRIENDLYNAME \"{READER_NAME}\"\n\
         DEVICENAME /dev/null:0x{port:X}\n\
         LIBPATH {VPCD_DRIVER}\n\
         CHANNELID 0x{port:X}\n"
    )
}

/// A pcscd of our own in a private mount namespace, with vpcd configured. Stopped on drop.
#[derive(Debug)]
pub struct PrivatePcscd {
    child: Child,
    port: u16,
    dir: TempDir,
    stopped: bool,
}

impl PrivatePcscd {
    /// Starts the daemon and waits until its socket is there.
    pub fn start() -> Result<Self, Error> {
        let port = free_port_pair()?;
        let dir = TempDir::new("pcscd")?;
        let conf_dir = dir.path().join("reader.conf.d");
        fs::create_dir(&conf_dir)?;
        fs::write(conf_dir.join("vpcd"), reader_conf(port))?;
        fs::create_dir(dir.path().join("scratch"))?;
        let log = File::create(dir.path().join("pcscd.log"))?;

        let script = "mkdir -p /run/pcscd && mount -t tmpfs -o mode=0755 tmpfs /run/pcscd \
                      && exec pcscd --foreground -c \"$1\"";
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&conf_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        println!("$ {}", run::describe(&cmd));
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start `unshare`: {e}"))?;
        let mut daemon = Self {
            child,
            port,
            dir,
            stopped: false,
        };
        daemon.wait_ready()?;
        println!(
            "pcscd started: PID {}, private /run/pcscd, vpcd on 127.0.0.1:{port} and {}",
            daemon.pid(),
            daemon.port() + 1
        );
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let pid = self.pid();
        let deadline = Instant::now() + START_TIMEOUT;
        let our_ns = fs::read_link("/proc/self/ns/mnt")?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.stopped = true;
                return Err(format!(
                    "pcscd did not start ({status}); its output:\n{}",
                    self.log()
                )
                .into());
            }
            // Once the process is pcscd (after `exec`) in a namespace other than ours, its
            // /run/pcscd is the private one: look at it through /proc/PID/root.
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let is_pcscd =
                fs::read_to_string(proc_dir.join("comm")).is_ok_and(|c| c.trim() == "pcscd");
            let own_ns = fs::read_link(proc_dir.join("ns/mnt")).is_ok_and(|ns| ns != our_ns);
            if is_pcscd && own_ns && proc_dir.join("root/run/pcscd/pcscd.comm").exists() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pcscd did not open its socket within {} s; its output:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.log()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// vpcd's first port (the second reader is on the next one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the daemon has printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }

    /// `sh -c SCRIPT` in the daemon's mount namespace, in the workspace root, with
    /// `TOKENKIT_VPCD_PORT` and `TOKENKIT_STACK_DIR` set, killed after `timeout`.
    pub fn command(&self, root: &Path, script: &str, timeout: Duration) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()))
            // Entering a mount namespace moves the working directory to its root: set it back.
            .arg("--mount")
            .arg(format!("--wd={}", root.display()))
            .args(["--", "timeout", "--kill-after=10"])
            .arg(format!("{}s", timeout.as_secs().max(1)))
            .args(["sh", "-c", script])
            .current_dir(root)
            .env(PORT_VAR, self.port.to_string())
            .env_remove("CARGO_MANIFEST_DIR")
            .env("TOKENKIT_STACK_DIR", self.dir.path().join("scratch"))
            // The client library honours this; in the namespace the default socket is ours.
            .env_remove("PCSCLITE_CSOCK_NAME")
            .stdin(Stdio::null());
        cmd
    }

    /// Stops the daemon: SIGTERM by PID, then SIGKILL if it lingers.
    pub fn stop(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err(format!("pcscd (PID {pid}) ignored SIGTERM and was killed").into())
    }
}

impl Drop for PrivatePcscd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Lists the readers in `daemon` with a third-party tool until `Virtual PCD` shows.
fn smoke(root: &Path, daemon: &PrivatePcscd) -> Result<(), Error> {
    let tool = if run::find_program("opensc-tool").is_some() {
        "opensc-tool --list-readers"
    } else if run::find_program("pcsc_scan").is_some() {
        "pcsc_scan -r"
    } else {
        return Err(
            "neither opensc-tool (package opensc) nor pcsc_scan (pcsc-tools) is here".into(),
        );
    };
    let deadline = Instant::now() + SMOKE_TIMEOUT;
    loop {
        let mut cmd = daemon.command(root, tool, Duration::from_secs(10));
        println!("$ {}", run::describe(&cmd));
        let output = cmd.output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        print!("{stdout}");
        eprint!("{stderr}");
        if stdout.contains(READER_NAME) {
            println!("smoke: `{tool}` sees the {READER_NAME} readers");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "`{tool}` did not list {READER_NAME} within {} s ({}); pcscd's output:\n{}",
                SMOKE_TIMEOUT.as_secs(),
                output.status,
                daemon.log()
            )
            .into());
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Says why the stack tests cannot run; a failure under CI, a skip elsewhere.
fn cannot_run(reasons: &[String]) -> Outcome {
    let ci = run::in_ci();
    let checks = 1 + STACK_SUITES.len() as u64;
    println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    println!("!!! STACK TESTS NOT RUN: a private pcscd cannot be started here. Missing:");
    for reason in reasons {
        for line in reason.lines() {
            println!("!!!   {line}");
        }
    }
    if ci {
        println!("!!! CI is set: counting the pcscd smoke check and every stack suite FAILED");
    } else {
        println!("!!! counting them SKIPPED, not passed (under CI=true they fail)");
    }
    println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    if ci {
        Outcome::failed(checks, "pcscd cannot be started")
    } else {
        Outcome::skipped("pcscd cannot be started here")
    }
}

/// The stack step: the smoke check, then every suite in [`STACK_SUITES`] (or those named in
/// `only`, when it is not empty).
pub fn step(root: &Path, only: &[String]) -> Result<Outcome, Error> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !STACK_SUITES.iter().any(|s| s.name == name.as_str()))
    {
        let names: Vec<&str> = STACK_SUITES.iter().map(|s| s.name).collect();
        return Err(format!(
            "no stack suite `{unknown}`; there are: {}",
            names.join(", ")
        )
        .into());
    }
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        return Ok(cannot_run(&missing));
    }
    let mut daemon = match PrivatePcscd::start() {
        Ok(daemon) => daemon,
        Err(error) => return Ok(cannot_run(&[error.to_string()])),
    };
    let mut outcome = Outcome::empty();
    match smoke(root, &daemon) {
        Ok(()) => outcome.add_check(true),
        Err(error) => {
            println!("!!! pcscd smoke check FAILED: {error}");
            outcome.add_check(false);
        }
    }
    if let Err(error) = daemon.stop() {
        println!("warning: {error}");
    }

    if STACK_SUITES.is_empty() {
        println!(
            "no stack suites registered yet (xtask/src/pcscd.rs, STACK_SUITES): smoke check only"
        );
    }
    for suite in STACK_SUITES
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|n| n == s.name))
    {
        println!("--- stack suite `{}`", suite.name);
        let started = Instant::now();
        let result = run_suite(root, suite);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(suite_outcome) => {
                println!(
                    "--- stack suite `{}`: {} passed, {} failed ({secs:.1} s)",
                    suite.name, suite_outcome.passed, suite_outcome.failed
                );
                outcome.merge(&suite_outcome);
            }
            Err(error) => {
                println!("!!! stack suite `{}` could not run: {error}", suite.name);
                outcome.add_check(false);
            }
        }
    }
    Ok(outcome.settle())
}

fn run_suite(root: &Path, suite: &StackSuite) -> Result<Outcome, Error> {
    let env = suite_env(root, suite)?;
    let daemon = PrivatePcscd::start()?;
    let mut cmd = daemon.command(root, suite.command, Duration::from_secs(suite.timeout_secs));
    cmd.envs(env);
    let (status, output) = run::tee(&mut cmd)?;
    if status.code() == Some(124) {
        println!(
            "!!! stack suite `{}` timed out after {} s and was killed",
            suite.name, suite.timeout_secs
        );
    }
    if !status.success() {
        let log = daemon.log();
        if log.trim().is_empty() {
            println!("(pcscd printed nothing)");
        } else {
            println!("pcscd's output:\n{log}");
        }
    }
    Ok(Outcome::from_tests(status.success(), &output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_conf_names_port_in_hex() {
        let conf = reader_conf(35963);
        assert!(conf.contains("FRIENDLYNAME \"Virtual PCD\"\n"));
        assert!(conf.contains("DEVICENAME /dev/null:0x8C7B\n"));
        assert!(conf.contains("CHANNELID 0x8C7B\n"));
        assert!(conf.contains(&format!("LIBPATH {VPCD_DRIVER}\n")));
    }

    #[test]
    fn finds_two_free_ports() -> Result<(), Error> {
        let port = free_port_pair()?;
        assert!(port < u16::MAX);
        Ok(())
    }

    #[test]
    fn suites_are_well_formed() {
        for suite in STACK_SUITES {
            assert!(!suite.name.is_empty() && !suite.command.trim().is_empty());
            assert!(suite.timeout_secs > 0, "{} has no timeout", suite.name);
        }
    }
}
