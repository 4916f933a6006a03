//! Saved-format fixtures: every store format version that shipped is loaded here with its
//! known PIN, so a later format change can never strand a user's keys.
//!
//! `store_data/vN/` holds one token written by `write_fixture` when version N was current (run
//! once per version, committed):
//! `TOKENKIT_WRITE_FIXTURE=1 cargo test -p driver-hsm-soft --test fixture -- --ignored`.
//! v1 has no contents seal; v2 has one, and a v1 file is sealed (becomes v2) at its first
//! login.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use driver_hsm_soft::{CreateOptions, KdfParams, SoftToken, TokenFile};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::EncodePrivateKey;
use token_core::{
    block_on, CertificateInfo, HashAlg, Item, KeyImport, KeyType, KeyUsage, PinKind,
    SignatureAlgorithm,
};
use zeroize::Zeroizing;

const PIN: &str = "123456";
const PUK: &str = "12345678";
/// The fixture's keys are imported from these, so their public halves are known here.
const P256_SCALAR: [u8; 32] = [0x11; 32];
const ED25519_SEED: [u8; 32] = [0x22; 32];

fn fixture_dir(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/store_data/v{version}"))
}

fn token_file_in(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "softtoken"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one token file expected in {}",
        dir.display()
    );
    files.into_iter().next().unwrap()
}

#[test]
#[ignore = "writes the committed fixture of the current format; run once per format version, with TOKENKIT_WRITE_FIXTURE=1"]
fn write_fixture() {
    if std::env::var_os("TOKENKIT_WRITE_FIXTURE").is_none() {
        return;
    }
    let version = driver_hsm_soft::FORMAT_VERSION;
    let dir = fixture_dir(version);
    assert!(
        !dir.exists(),
        "the v{version} fixture exists; a shipped fixture is never rewritten"
    );
    // Cheap KDF: the fixture's PIN is public anyway, and the test stays fast.
    let options = CreateOptions::new(format!("fixture v{version}"), PIN.into(), PUK.into())
        .kdf(KdfParams::insecure_fast());
    let id = driver_hsm_soft::create_with(&dir, &options).unwrap();
    let path = driver_hsm_soft::token_path(&dir, &id).unwrap();
    let mut s = SoftToken::open(&path).unwrap().session().unwrap();
    block_on(async {
        s.verify_pin(PinKind::User, &PIN.into()).await.unwrap();
        let p = p256::SecretKey::from_slice(&P256_SCALAR).unwrap();
        let p = s
            .import_key(&KeyImport {
                pkcs8: Zeroizing::new(p.to_pkcs8_der().unwrap().as_bytes().to_vec()),
                label: "fixture P-256".into(),
                slot: None,
            })
            .await
            .unwrap();
        let e = ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED);
        s.import_key(&KeyImport {
            pkcs8: Zeroizing::new(e.to_pkcs8_der().unwrap().as_bytes().to_vec()),
            label: "fixture Ed25519".into(),
            slot: None,
        })
        .await
        .unwrap();
        driver_hsm_soft::self_signed_certificate(&mut s, &p, "fixture identity")
            .await
            .unwrap();
    });
}

#[test]
fn every_format_version_up_to_the_current_one_has_its_fixture() {
    for version in 1..=driver_hsm_soft::FORMAT_VERSION {
        assert!(
            fixture_dir(version).is_dir(),
            "no fixture for format version {version}: run write_fixture"
        );
    }
}

#[test]
fn the_v1_fixture_loads_with_its_pin_and_signs() {
    check_fixture(1);
}

#[test]
fn the_v2_fixture_loads_with_its_pin_and_signs() {
    check_fixture(2);
}

fn check_fixture(version: u16) {
    let committed = token_file_in(&fixture_dir(version));
    let original = std::fs::read(&committed).unwrap();
    assert_eq!(
        &original[8..10],
        &version.to_be_bytes(),
        "the v{version} fixture is format version {version}"
    );

    // Work on a copy: a PIN check writes the retry counter.
    let store = tempfile::tempdir().unwrap();
    let path = store.path().join(committed.file_name().unwrap());
    std::fs::write(&path, &original).unwrap();

    let file = TokenFile::read(&path).unwrap();
    assert_eq!(file.label(), format!("fixture v{version}"));
    assert_eq!(file.pin_tries_left(), 3);
    let items = file.items();
    assert_eq!(items.len(), 3);
    let key = |t| {
        items
            .iter()
            .find_map(|i| match i {
                Item::Key(k) if k.key_type == t => Some(k.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (p, e) = (key(KeyType::EcP256), key(KeyType::Ed25519));
    assert_eq!(p.label, "fixture P-256");
    assert_eq!(p.usage, KeyUsage::SIGN | KeyUsage::DERIVE);
    let p_vk = *p256::ecdsa::SigningKey::from_slice(&P256_SCALAR)
        .unwrap()
        .verifying_key();
    assert_eq!(
        p.public_key.as_ref().unwrap().raw,
        p_vk.to_sec1_bytes().to_vec()
    );
    let e_vk = ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED).verifying_key();
    assert_eq!(e.public_key.as_ref().unwrap().raw, e_vk.to_bytes().to_vec());
    let cert = items
        .iter()
        .find_map(|i| match i {
            Item::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let info = CertificateInfo::parse(&cert.der).unwrap();
    assert_eq!(
        info.subject_common_name().as_deref(),
        Some("fixture identity")
    );
    assert_eq!(
        info.subject_public_key_info().unwrap().public_key,
        p_vk.to_sec1_bytes().as_ref()
    );

    let token = SoftToken::open(&path).unwrap();
    assert_eq!(
        token_core::Token::id(&token).to_string(),
        format!("soft:{}", committed.file_stem().unwrap().to_string_lossy())
    );
    let mut s = token.session().unwrap();
    block_on(async {
        s.verify_pin(PinKind::User, &PIN.into()).await.unwrap();
        let der = s
            .sign(
                &p.object_id,
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
                b"fixture",
            )
            .await
            .unwrap();
        p_vk.verify(
            b"fixture",
            &p256::ecdsa::DerSignature::from_bytes(&der).unwrap(),
        )
        .unwrap();
        let sig = s
            .sign(&e.object_id, SignatureAlgorithm::Ed25519, b"fixture")
            .await
            .unwrap();
        e_vk.verify_strict(
            b"fixture",
            &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
        s.verify_pin(PinKind::Unblock, &PUK.into()).await.unwrap();
    });
    // After a login the copy is in the current format, sealed.
    let upgraded = std::fs::read(&path).unwrap();
    assert_eq!(
        &upgraded[8..10],
        &driver_hsm_soft::FORMAT_VERSION.to_be_bytes()
    );
    assert_eq!(TokenFile::read(&path).unwrap().items().len(), 3);
    assert_eq!(
        std::fs::read(&committed).unwrap(),
        original,
        "the committed fixture changed"
    );
}
