//! tokenctl as a user runs it: a fresh store, a soft token, keys, signatures that openssl
//! verifies, PIN handling and one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tokenctl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tokenctl"))
            .arg("--store")
            .arg(self.dir.join("store"))
            .args(args)
            .env("TOKENKIT_SOFT_INSECURE_KDF", "1")
            .env("T_PIN", "4321")
            .env("T_PUK", "87654321")
            .env("T_WRONG", "0000")
            .env("T_NEW", "5678")
            .env_remove("TOKENKIT_HOME")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tokenctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its one-line error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "tokenctl {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        err
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn create_token(&self) -> String {
        let id = self.ok(&[
            "soft",
            "create",
            "--label",
            "cli test",
            "--pin-env",
            "T_PIN",
            "--puk-env",
            "T_PUK",
        ]);
        id.trim().to_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl_verify(pubkey: &Path, sig: &Path, data: &Path) {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(pubkey)
        .arg("-signature")
        .arg(sig)
        .arg(data)
        .output()
        .expect("openssl must be installed (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "openssl rejected the signature: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn soft_token_key_signature_verified_by_openssl() {
    let env = Env::new("sign");
    let id = env.create_token();
    assert!(id.starts_with("soft:"), "{id}");
    let tokens = env.ok(&["tokens", "--json"]);
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(tokens[0]["id"], id.as_str());
    assert_eq!(tokens[0]["label"], "cli test");

    env.ok(&[
        "keygen",
        "--token",
        &id,
        "--alg",
        "p256",
        "--label",
        "signer",
        "--self-signed",
        "CLI Test",
        "--pin-env",
        "T_PIN",
    ]);
    let items: serde_json::Value =
        serde_json::from_str(&env.ok(&["items", "--token", &id, "--json"])).unwrap();
    let classes: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["class"].as_str().unwrap())
        .collect();
    assert!(
        classes.contains(&"key") && classes.contains(&"cert"),
        "{items}"
    );
    let identities = env.ok(&["items", "--token", &id, "--class", "identity", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&identities)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let data = env.path("data.txt");
    std::fs::write(&data, b"signed by tokenctl\n").unwrap();
    let sig = env.path("data.sig");
    env.ok(&[
        "sign",
        "--token",
        &id,
        "--key",
        "signer",
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
        "--pin-env",
        "T_PIN",
    ]);
    let pem = env.ok(&["pubkey", "--token", &id, "--key", "signer"]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let pubkey = env.path("pub.pem");
    std::fs::write(&pubkey, pem).unwrap();
    openssl_verify(&pubkey, &sig, &data);

    // The certificate is a real X.509 certificate openssl reads, carrying the same key.
    let cert = env.ok(&["cert", "--token", &id, "--label", "CLI Test"]);
    let cert_path = env.path("cert.pem");
    std::fs::write(&cert_path, cert).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-pubkey", "-in"])
        .arg(&cert_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("CN = CLI Test"),
        "{text}"
    );
    assert!(text.contains(std::fs::read_to_string(&pubkey).unwrap().trim()));
}

#[test]
fn ed25519_signatures_are_64_bytes_and_verify() {
    let env = Env::new("ed");
    let id = env.create_token();
    env.ok(&[
        "keygen",
        "--token",
        &id,
        "--alg",
        "ed25519",
        "--label",
        "ed",
        "--pin-env",
        "T_PIN",
    ]);
    let data = env.path("m");
    std::fs::write(&data, b"ed25519 message").unwrap();
    let sig = env.path("m.sig");
    env.ok(&[
        "sign",
        "--token",
        &id,
        "--key",
        "ed",
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
        "--pin-env",
        "T_PIN",
    ]);
    let signature = std::fs::read(&sig).unwrap();
    assert_eq!(signature.len(), 64);
    let pem = env.ok(&["pubkey", "--token", &id, "--key", "ed"]);
    let pubkey = env.path("ed.pem");
    std::fs::write(&pubkey, pem).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
        .arg(&pubkey)
        .arg("-in")
        .arg(&data)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pin_verify_change_unblock_and_errors_name_the_code() {
    let env = Env::new("pin");
    let id = env.create_token();
    env.ok(&["pin", "verify", "--token", &id, "--pin-env", "T_PIN"]);
    let err = env.fails(&["pin", "verify", "--token", &id, "--pin-env", "T_WRONG"]);
    assert!(err.contains("authenticationFailed (-5)"), "{err}");
    assert!(
        err.contains("tries left") || err.contains("try left"),
        "{err}"
    );
    // The counter survives the process: the next wrong PIN reports one fewer.
    let err2 = env.fails(&["pin", "verify", "--token", &id, "--pin-env", "T_WRONG"]);
    assert_ne!(err, err2);
    env.ok(&[
        "pin",
        "change",
        "--token",
        &id,
        "--pin-env",
        "T_PIN",
        "--new-pin-env",
        "T_NEW",
    ]);
    env.fails(&["pin", "verify", "--token", &id, "--pin-env", "T_PIN"]);
    env.ok(&["pin", "verify", "--token", &id, "--pin-env", "T_NEW"]);
    // Block it, then unblock with the PUK.
    loop {
        let err = env.fails(&["pin", "verify", "--token", &id, "--pin-env", "T_WRONG"]);
        if err.contains("blocked") || err.contains("0 tries") {
            break;
        }
    }
    let err = env.fails(&["pin", "verify", "--token", &id, "--pin-env", "T_NEW"]);
    assert!(err.contains("authenticationFailed"), "{err}");
    env.ok(&[
        "pin",
        "unblock",
        "--token",
        &id,
        "--puk-env",
        "T_PUK",
        "--new-pin-env",
        "T_PIN",
    ]);
    env.ok(&["pin", "verify", "--token", &id, "--pin-env", "T_PIN"]);

    let err = env.fails(&["pubkey", "--token", "not-a-token-id", "--key", "k"]);
    assert!(err.contains("badParameter (-8)"), "{err}");
    let err = env.fails(&["pubkey", "--token", "soft:no-such-token", "--key", "k"]);
    assert!(err.contains("tokenNotFound (-7)"), "{err}");
    let err = env.fails(&["pubkey", "--token", &id, "--key", "missing"]);
    assert!(err.contains("objectNotFound (-6)"), "{err}");
}

#[test]
fn soft_delete_removes_the_token() {
    let env = Env::new("delete");
    let id = env.create_token();
    assert!(env.ok(&["tokens"]).contains(&id));
    env.ok(&["soft", "delete", "--token", &id]);
    assert!(!env.ok(&["tokens"]).contains(&id));
}

#[test]
fn demo_runs_twice_on_the_same_store() {
    let env = Env::new("demo");
    let first = env.ok(&["demo"]);
    assert!(first.contains("created the soft token"), "{first}");
    assert!(first.contains("the signature verifies"), "{first}");
    let second = env.ok(&["demo"]);
    assert!(second.contains("using the soft token"), "{second}");
    assert!(second.contains("demo done"), "{second}");
}

#[test]
fn watch_reports_the_tokens_present_as_insertions() {
    let env = Env::new("watch");
    let id = env.create_token();
    let out = env.ok(&["watch", "--count", "1"]);
    assert_eq!(out, format!("inserted {id}\n"));
    let out = env.ok(&["watch", "--count", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["event"], "inserted");
    assert_eq!(v["token"], id.as_str());
}

#[test]
fn ecdh_derive_agrees_with_openssl() {
    let env = Env::new("derive");
    let id = env.create_token();
    env.ok(&[
        "keygen",
        "--token",
        &id,
        "--alg",
        "p256",
        "--label",
        "kx",
        "--pin-env",
        "T_PIN",
    ]);
    let ours = env.path("ours.pem");
    std::fs::write(&ours, env.ok(&["pubkey", "--token", &id, "--key", "kx"])).unwrap();
    let peer_key = env.path("peer.key");
    let peer_pub = env.path("peer.pem");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&peer_key)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&peer_key)
        .arg("-out")
        .arg(&peer_pub)
        .status()
        .unwrap();
    assert!(st.success());
    let secret = env.path("secret.bin");
    env.ok(&[
        "derive",
        "--token",
        &id,
        "--key",
        "kx",
        "--peer",
        peer_pub.to_str().unwrap(),
        "--out",
        secret.to_str().unwrap(),
        "--pin-env",
        "T_PIN",
    ]);
    let theirs = env.path("theirs.bin");
    let st = Command::new("openssl")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(&peer_key)
        .arg("-peerkey")
        .arg(&ours)
        .arg("-out")
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(st.success());
    let a = std::fs::read(&secret).unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(a, std::fs::read(&theirs).unwrap());
}
