//! The FIDO2 simulator in a real pcscd, used by a real third-party client: Yubico's
//! python-fido2 (`fido2.pcsc.CtapPcscDevice`, `Ctap2`, `ClientPin`, `CredentialManagement`,
//! `Fido2Client` with its `Fido2Server` checking attestation and signatures) drives
//! `tokenctl sim fido2` through vpcd's first reader as it would an NFC security key.
//!
//! Run by `cargo xtask stack` (and `cargo xtask test`): xtask makes a venv with python-fido2
//! (see xtask's `python` module) and passes its interpreter in `TOKENKIT_FIDO2_PYTHON`,
//! starts a private pcscd with vpcd and runs
//! `cargo test --workspace --all-features --test fido2_stack -- --ignored --test-threads=1` in
//! its mount namespace with `TOKENKIT_VPCD_PORT` set. The Python side is
//! `tests/fido2_stack.py`; it prints one line per step and this test checks them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use support::*;

/// The PIN python-fido2 sets.
const FIDO_PIN: &str = "fido-2468";

/// The venv's interpreter, or `None` (loudly; a failure under CI) when xtask did not give one.
fn python() -> Option<PathBuf> {
    match std::env::var_os("TOKENKIT_FIDO2_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "!!! FIDO2 STACK TEST NOT RUN: TOKENKIT_FIDO2_PYTHON is not set \
                 (`cargo xtask stack` makes python-fido2's venv and sets it)"
            );
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "CI is set: a stack test that cannot run is a failure");
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fido2_stack.py")
}

/// Runs the python-fido2 script with `python` on the reader, with the PIN it sets and
/// `mode` (the whole run when `None`), and returns its output, asserting it succeeded.
fn run_script(python: &Path, dir: &Scratch, mode: Option<&str>) -> String {
    let script = script();
    let mut args = vec![script.as_os_str(), OsStr::new(READER), OsStr::new(FIDO_PIN)];
    args.extend(mode.map(OsStr::new));
    run(tool(python.to_str().unwrap(), args), dir).ok()
}

/// The line of `out` that starts with `key ` (the rest of it), asserting there is one.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
}

fn values<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key} ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn python_fido2_sets_a_pin_registers_signs_and_manages_credentials() {
    let Some(port) = vpcd_port() else { return };
    let Some(python) = python() else { return };
    let dir = Scratch::new("fido2-python");
    let state = dir.path("fido2.state");
    let mut sim = SimProcess::start(&dir, port, "fido2", &state);

    let out = run_script(&python, &dir, None);

    // getInfo as python-fido2 parsed it.
    assert_eq!(value(&out, "versions"), "FIDO_2_0,FIDO_2_1");
    assert_eq!(value(&out, "aaguid"), hex(b"tokenkit-sim-fid"));
    assert_eq!(value(&out, "pin_protocols"), "2,1");
    assert_eq!(value(&out, "transports"), "nfc");
    for option in ["credMgmt", "largeBlobs", "pinUvAuthToken", "authnrCfg"] {
        assert!(
            values(&out, "option").contains(&format!("{option} True").as_str()),
            "{option}: {out}"
        );
    }
    // No PIN, then python-fido2 sets one (with protocol 2, the one it prefers).
    assert_eq!(values(&out, "clientPin"), ["False", "True"]);
    assert_eq!(value(&out, "protocol"), "2");
    assert_eq!(value(&out, "pin_retries"), "8");
    assert_eq!(value(&out, "wrong_pin"), "PIN_INVALID 7");

    // Two discoverable credentials with UV through the PIN; python-fido2 checked the packed
    // self attestation of each.
    assert_eq!(values(&out, "attestation"), ["packed SELF", "packed SELF"]);
    let registered = values(&out, "registered");
    assert_eq!(registered.len(), 2, "{out}");
    for (line, name) in registered.iter().zip(["alice", "bob"]) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(&fields[..4], [name, "50", "UP", "UV"], "{line}");
    }
    // Each time the client asked the PIN for this RP (the token carries its RP ID).
    let asked = value(&out, "pin_requests");
    assert!(
        asked.split(';').all(|r| r.ends_with(":example.com")),
        "{asked}"
    );

    // python-fido2's prf extension over the simulator's hmac-secret: enabled for both, and
    // deterministic per salt.
    assert_eq!(values(&out, "prf_enabled"), ["alice True", "bob True"]);
    assert_eq!(value(&out, "prf"), "True True True");

    // largeBlob over largeBlobKey and authenticatorLargeBlobs: written with the assertion's
    // token (lbw outlives the touch), read back by python-fido2.
    assert_eq!(
        values(&out, "large_blob_supported"),
        ["alice True", "bob True"]
    );
    assert_eq!(value(&out, "large_blob_written"), "True");
    assert_eq!(value(&out, "large_blob_read"), "b\"alice's large blob\"");

    // Registering alice again with her credential excluded is refused.
    assert_eq!(
        value(&out, "excluded"),
        "DEVICE_INELIGIBLE CREDENTIAL_EXCLUDED"
    );

    // Signatures python-fido2's server verified: with an allow list, then both discoverable
    // credentials through getNextAssertion.
    let counter: u32 = value(&out, "authenticated")
        .strip_prefix("alice ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(counter > 2, "the signature counter moves: {counter}");
    assert_eq!(value(&out, "discoverable"), "2 alice,bob");

    // Credential management.
    assert_eq!(value(&out, "metadata"), "2 48");
    assert_eq!(value(&out, "rps"), "example.com");
    assert_eq!(value(&out, "creds"), "alice,bob");
    assert_eq!(value(&out, "after_delete"), "alice");
    assert!(
        value(&out, "deleted_refused").contains("NO_CREDENTIALS")
            || value(&out, "deleted_refused").contains("DEVICE_INELIGIBLE"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "ALL OK"), "{out}");

    // The state file keeps the PIN and the credential across a restart of the simulator.
    sim.kill();
    assert!(state.exists());
    let _sim = SimProcess::start(&dir, port, "fido2", &state);
    let out = run_script(&python, &dir, Some("after-restart"));
    assert_eq!(value(&out, "clientPin"), "True");
    assert_eq!(value(&out, "pin_retries"), "8");
    assert_eq!(value(&out, "creds"), "alice");
    assert!(out.lines().any(|l| l == "ALL OK"), "{out}");
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn python_fido2_finds_the_fido_applet_on_the_multi_application_card() {
    let Some(port) = vpcd_port() else { return };
    let Some(python) = python() else { return };
    let dir = Scratch::new("fido2-multi");
    let _sim = SimProcess::start(&dir, port, "multi", &dir.path("card"));
    let out = run_script(&python, &dir, Some("info"));
    assert_eq!(value(&out, "versions"), "FIDO_2_0,FIDO_2_1");
    // The YubiKey 5 NFC's ATR that the PIV application gives the card.
    assert!(value(&out, "atr").starts_with("3bfd130000813"), "{out}");
    assert!(out.lines().any(|l| l == "ALL OK"), "{out}");
    // The FIDO2 application keeps its state beside the other two.
    assert!(dir.path("card.fido2").exists());
}

/// Runs tokenctl with the PINs in its environment (`T_PIN`, `T_WRONG`, `T_NEW`).
fn tokenctl_pins<S: AsRef<OsStr>>(dir: &Scratch, args: impl IntoIterator<Item = S>) -> Ran {
    let mut cmd = tokenctl(dir, args);
    cmd.env("T_PIN", PIN)
        .env("T_WRONG", "000000")
        .env("T_NEW", "fido-1357");
    run(cmd, dir)
}

/// The `fido2:` token tokenctl lists, waiting for the simulator to come up.
fn wait_fido2_token(dir: &Scratch) -> String {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let out = tokenctl(dir, ["tokens", "--json"]).output().unwrap();
        let listed: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let found = listed.as_array().and_then(|tokens| {
            tokens.iter().find_map(|t| {
                let id = t["id"].as_str()?;
                id.starts_with("fido2:").then(|| id.to_owned())
            })
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fido2 token within {EVENT_TIMEOUT:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Our own driver, not python's, through the same pcscd: tokenctl finds the simulated NFC key
/// as a `fido2:` token (the AAGUID in its ID) and verifies and changes its PIN with clientPIN
/// over NFCCTAP_MSG inside PC/SC transactions. A wrong PIN comes back as AuthenticationFailed
/// with the authenticator's tries left, one fewer each time: the framework never retries it.
#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn tokenctl_finds_the_key_and_verifies_and_changes_its_pin_through_pcscd() {
    let Some(port) = vpcd_port() else { return };
    let dir = Scratch::new("fido2-tokenctl");
    let vpcd = format!("127.0.0.1:{port}");
    let state = dir.path("fido2.state");
    let mut sim = tokenctl(
        &dir,
        [
            OsStr::new("sim"),
            OsStr::new("fido2"),
            OsStr::new("--vpcd"),
            OsStr::new(&vpcd),
            OsStr::new("--state"),
            state.as_os_str(),
            OsStr::new("--pin"),
            OsStr::new(PIN),
        ],
    )
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();

    let id = wait_fido2_token(&dir);
    assert!(
        id.starts_with(&format!("fido2:{}", hex(b"tokenkit-sim-fid"))),
        "{id}"
    );

    tokenctl_pins(
        &dir,
        ["pin", "verify", "--token", &id, "--pin-env", "T_PIN"],
    )
    .ok();
    let first = tokenctl_pins(
        &dir,
        ["pin", "verify", "--token", &id, "--pin-env", "T_WRONG"],
    );
    assert!(!first.status.success());
    assert!(
        first.stderr.contains("authenticationFailed (-5)"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains("7 tries left"), "{}", first.stderr);
    let second = tokenctl_pins(
        &dir,
        ["pin", "verify", "--token", &id, "--pin-env", "T_WRONG"],
    );
    assert!(second.stderr.contains("6 tries left"), "{}", second.stderr);

    tokenctl_pins(
        &dir,
        [
            "pin",
            "change",
            "--token",
            &id,
            "--pin-env",
            "T_PIN",
            "--new-pin-env",
            "T_NEW",
        ],
    )
    .ok();
    let old = tokenctl_pins(
        &dir,
        ["pin", "verify", "--token", &id, "--pin-env", "T_PIN"],
    );
    assert!(!old.status.success(), "the old PIN still works");
    tokenctl_pins(
        &dir,
        ["pin", "verify", "--token", &id, "--pin-env", "T_NEW"],
    )
    .ok();

    let _ = sim.kill();
    let _ = sim.wait();
}
