//! A third party checks our output: OpenSSL verifies signatures and self-signed certificates
//! made by the soft token, and its keys import into the token.
//!
//! These tests need the `openssl` command (Debian: `apt-get install openssl`). Without it they
//! fail and say so; they never pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Fixture;
use token_core::{block_on, HashAlg, KeyImport, KeyType, SignatureAlgorithm};
use zeroize::Zeroizing;

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `openssl` ({e}): these tests check our signatures with OpenSSL; \
                 install it (Debian: apt-get install openssl)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?} failed: {text}");
    text
}

#[test]
fn openssl_verifies_an_ecdsa_signature() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    let work = tempfile::tempdir().unwrap();
    let msg = b"signed by a tokenkit soft token\n".repeat(100);
    let sig = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        &msg,
    ))
    .unwrap();
    std::fs::write(work.path().join("file"), &msg).unwrap();
    std::fs::write(work.path().join("sig"), &sig).unwrap();
    let pem = driver_hsm_soft::spki_pem(key.public_key.as_ref().unwrap()).unwrap();
    std::fs::write(work.path().join("pub.pem"), pem).unwrap();
    let out = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "file",
        ],
    );
    assert!(out.contains("Verified OK"), "{out}");

    // The digest form too.
    let digest = driver_hsm_soft::sha256(&msg);
    let sig = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        &digest,
    ))
    .unwrap();
    std::fs::write(work.path().join("sig"), &sig).unwrap();
    let out = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "file",
        ],
    );
    assert!(out.contains("Verified OK"), "{out}");
}

#[test]
fn openssl_verifies_an_ed25519_signature() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::Ed25519, "k");
    let work = tempfile::tempdir().unwrap();
    let msg = b"pure EdDSA";
    let sig = block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, msg)).unwrap();
    std::fs::write(work.path().join("file"), msg).unwrap();
    std::fs::write(work.path().join("sig"), &sig).unwrap();
    let pem = driver_hsm_soft::spki_pem(key.public_key.as_ref().unwrap()).unwrap();
    std::fs::write(work.path().join("pub.pem"), pem).unwrap();
    let out = openssl(
        work.path(),
        &[
            "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "file",
            "-sigfile", "sig",
        ],
    );
    assert!(out.contains("Signature Verified Successfully"), "{out}");
}

#[test]
fn openssl_accepts_our_self_signed_certificates() {
    let f = Fixture::new();
    let mut s = f.login();
    let work = tempfile::tempdir().unwrap();
    for t in [KeyType::EcP256, KeyType::Ed25519] {
        let key = common::generate(&mut s, t, "k");
        let cert = block_on(driver_hsm_soft::self_signed_certificate(
            &mut s,
            &key,
            "Alice Example",
        ))
        .unwrap();
        std::fs::write(
            work.path().join("c.pem"),
            token_core::der_to_pem("CERTIFICATE", &cert.der),
        )
        .unwrap();
        let text = openssl(work.path(), &["x509", "-in", "c.pem", "-noout", "-text"]);
        assert!(
            text.contains("CN=Alice Example") || text.contains("CN = Alice Example"),
            "{text}"
        );
        assert!(text.contains("Version: 3"), "{text}");
        let out = openssl(work.path(), &["verify", "-CAfile", "c.pem", "c.pem"]);
        assert!(out.contains("c.pem: OK"), "{t:?}: {out}");
        // The certificate's key is the token's key.
        let pubkey = openssl(work.path(), &["x509", "-in", "c.pem", "-noout", "-pubkey"]);
        assert_eq!(
            pubkey,
            driver_hsm_soft::spki_pem(key.public_key.as_ref().unwrap()).unwrap()
        );
    }
}

#[test]
fn keys_openssl_generated_import_and_match() {
    let f = Fixture::new();
    let mut s = f.login();
    let work = tempfile::tempdir().unwrap();
    let cases: [(&[&str], KeyType); 3] = [
        (
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "k.pem",
            ],
            KeyType::EcP256,
        ),
        (
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "k.pem",
            ],
            KeyType::EcP256,
        ),
        (
            &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"],
            KeyType::Ed25519,
        ),
    ];
    for (args, t) in cases {
        openssl(work.path(), args);
        let pem = std::fs::read(work.path().join("k.pem")).unwrap();
        let item = block_on(s.import_key(&KeyImport {
            pkcs8: Zeroizing::new(pem),
            label: "from openssl".into(),
            slot: None,
        }))
        .unwrap();
        assert_eq!(item.key_type, t);
        let public = openssl(work.path(), &["pkey", "-in", "k.pem", "-pubout"]);
        assert_eq!(
            public,
            driver_hsm_soft::spki_pem(item.public_key.as_ref().unwrap()).unwrap()
        );
        // DER PKCS#8 as well.
        openssl(
            work.path(),
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER", "-out", "k.der",
            ],
        );
        let der = std::fs::read(work.path().join("k.der")).unwrap();
        let again = block_on(s.import_key(&KeyImport {
            pkcs8: Zeroizing::new(der),
            label: "der".into(),
            slot: None,
        }))
        .unwrap();
        assert_eq!(again.public_key, item.public_key);
    }
}
