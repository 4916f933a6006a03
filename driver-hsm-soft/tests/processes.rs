//! What must survive the process: the PIN counter across processes, a check killed with
//! SIGKILL, and a write loop killed with SIGKILL.
//!
//! The children are this test binary itself, running one of the `child_*` tests (ignored in
//! normal runs; they do nothing unless `SOFT_TOKEN_TEST_CHILD` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, PIN, WRONG};
use driver_hsm_soft::{CreateOptions, KdfParams, SoftToken, TokenFile};
use token_core::{block_on, ErrorCode, Item, KeyType, PinKind, SignatureAlgorithm};

const CHILD_ENV: &str = "SOFT_TOKEN_TEST_CHILD";
const PATH_ENV: &str = "SOFT_TOKEN_TEST_PATH";

fn child_path() -> Option<PathBuf> {
    std::env::var_os(CHILD_ENV)?;
    std::env::var_os(PATH_ENV).map(PathBuf::from)
}

fn spawn(test: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env(PATH_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
#[ignore = "child process of the_pin_counter_holds_across_processes"]
fn child_wrong_pin() {
    let Some(path) = child_path() else { return };
    let mut s = SoftToken::open(&path).unwrap().session().unwrap();
    let e = block_on(s.verify_pin(PinKind::User, &WRONG.into())).unwrap_err();
    println!("child: {:?} {:?}", e.code(), e.retries_left());
}

#[test]
fn the_pin_counter_holds_across_processes() {
    let f = Fixture::new();
    for expected in [2, 1] {
        let out = spawn("child_wrong_pin", &f.path)
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("child: AuthenticationFailed Some({expected})")),
            "{text}"
        );
        assert_eq!(f.tries(), expected);
        let mut s = f.session();
        assert_eq!(
            block_on(s.pin_status(PinKind::User)).unwrap().retries_left,
            Some(expected)
        );
    }
}

#[test]
#[ignore = "child process of a_check_killed_midway_keeps_the_try_spent"]
fn child_slow_right_pin() {
    let Some(path) = child_path() else { return };
    let mut s = SoftToken::open(&path).unwrap().session().unwrap();
    println!("child: checking");
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
    println!("child: verified");
}

#[test]
fn a_check_killed_midway_keeps_the_try_spent() {
    // A KDF slow enough (64 MiB, 10 passes: about a second) that the kill lands inside it.
    let dir = tempfile::tempdir().unwrap();
    let slow = KdfParams::new(64 * 1024, 10, 1).unwrap();
    let options = CreateOptions::new("slow", PIN.into(), common::PUK.into()).kdf(slow);
    let id = driver_hsm_soft::create_with(dir.path(), &options).unwrap();
    let path = driver_hsm_soft::token_path(dir.path(), &id).unwrap();
    let tries = || TokenFile::read(&path).unwrap().pin_tries_left();
    assert_eq!(tries(), 3);

    let mut child = spawn("child_slow_right_pin", &path);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The counter is written down before the PIN is checked.
    while tries() == 3 {
        assert!(
            Instant::now() < deadline,
            "the child never started checking"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("child: checking"), "{out}");
    assert!(
        !out.contains("child: verified"),
        "the check finished before the kill; the test proved nothing: {out}"
    );
    // The right PIN was being checked, yet the try stays spent: nothing can hand it back.
    assert_eq!(tries(), 2);
}

#[test]
#[ignore = "child process of a_write_loop_killed_leaves_the_last_committed_state"]
fn child_write_loop() {
    let Some(path) = child_path() else { return };
    let mut s = SoftToken::open(&path).unwrap().session().unwrap();
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
    for i in 1.. {
        let t = if i % 2 == 0 {
            KeyType::Ed25519
        } else {
            KeyType::EcP256
        };
        common::generate(&mut s, t, &format!("k{i}"));
        println!("committed {i}");
    }
}

#[test]
fn a_write_loop_killed_leaves_the_last_committed_state() {
    for round in 0..3 {
        let f = Fixture::new();
        let mut child = spawn("child_write_loop", &f.path);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last = 0;
        // Let it run a while, a different time each round, then kill it mid-flight.
        let target = 15 + round * 11;
        while last < target {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                last = n.parse().unwrap();
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                last = n.parse().unwrap();
            }
        }

        // The file loads, and holds every key committed, plus possibly the one in flight.
        let file = TokenFile::read(&f.path).unwrap();
        let keys: Vec<_> = file
            .items()
            .into_iter()
            .filter_map(|i| match i {
                Item::Key(k) => Some(k),
                _ => None,
            })
            .collect();
        assert!(
            keys.len() == last || keys.len() == last + 1,
            "round {round}: {} keys after {last} commits",
            keys.len()
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k.label, format!("k{}", i + 1));
        }
        assert_eq!(file.pin_tries_left(), 3);
        // Every key opens and signs: the state is whole, not half-written.
        let mut s = f.login();
        for k in &keys {
            let alg = if k.key_type == KeyType::EcP256 {
                SignatureAlgorithm::EcdsaMessage(token_core::HashAlg::Sha256)
            } else {
                SignatureAlgorithm::Ed25519
            };
            block_on(s.sign(&k.object_id, alg, b"after the crash")).unwrap();
        }
        // Leftover temporary files are not tokens.
        let listed = driver_hsm_soft::list(f.dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].file.is_ok());
        // And the token goes on being written.
        common::generate(&mut s, KeyType::Ed25519, "after");
        let e = block_on(s.verify_pin(PinKind::User, &WRONG.into())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    }
}
