//! Damaged and newer-version files give `CorruptedData` and are never rewritten; arbitrary
//! bytes never panic the reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Fixture, PIN};
use driver_hsm_soft::{SoftToken, SoftTokenDriver, SoftTokenProvider, TokenFile};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use token_core::{block_on, ErrorCode, Hub, KeyType, PinKind};

/// A token file with keys and a certificate.
fn populated() -> (Fixture, Vec<u8>) {
    let f = Fixture::new();
    let mut s = f.login();
    let k = common::generate(&mut s, KeyType::EcP256, "p");
    common::generate(&mut s, KeyType::Ed25519, "e");
    block_on(driver_hsm_soft::self_signed_certificate(&mut s, &k, "me")).unwrap();
    let bytes = std::fs::read(&f.path).unwrap();
    (f, bytes)
}

/// Rewrites the checksum, as a newer or hostile writer would.
fn reseal(mut file: Vec<u8>) -> Vec<u8> {
    let n = file.len() - 32;
    let sum = Sha256::digest(&file[..n]);
    file[n..].copy_from_slice(&sum);
    file
}

fn damaged_variants(good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for n in [
        0,
        1,
        8,
        13,
        14,
        good.len() / 2,
        good.len() - 32,
        good.len() - 1,
    ] {
        v.push((format!("truncated to {n}"), good[..n].to_vec()));
    }
    for i in [0, 7, 9, 12, 20, good.len() / 2, good.len() - 1] {
        let mut b = good.to_vec();
        b[i] ^= 0x10;
        v.push((format!("bit flip at {i}"), b));
    }
    let mut longer = good.to_vec();
    longer.push(0);
    v.push(("one byte appended".into(), longer));
    let mut newer = good.to_vec();
    let [hi, lo] = (driver_hsm_soft::FORMAT_VERSION + 1).to_be_bytes();
    newer[8] = hi;
    newer[9] = lo;
    v.push(("a newer format version".into(), newer.clone()));
    v.push((
        "a newer format version, consistent checksum".into(),
        reseal(newer),
    ));
    let mut v0 = good.to_vec();
    v0[9] = 0;
    v.push(("format version 0".into(), reseal(v0)));
    v
}

#[test]
fn damaged_or_newer_files_give_corrupted_data_and_stay_byte_identical() {
    let (f, good) = populated();
    for (what, bytes) in damaged_variants(&good) {
        std::fs::write(&f.path, &bytes).unwrap();
        let e = TokenFile::read(&f.path).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CorruptedData, "{what}: {e}");
        let e = SoftToken::open(&f.path).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CorruptedData, "{what}: {e}");
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            bytes,
            "{what}: file changed"
        );
        if what.contains("newer") {
            assert!(e.to_string().contains("newer"), "{what}: {e}");
        }
    }
}

#[test]
fn a_file_damaged_under_an_open_token_is_not_written_over() {
    let (f, good) = populated();
    let token = f.token();
    let mut s = token.session().unwrap();
    for (what, bytes) in damaged_variants(&good) {
        std::fs::write(&f.path, &bytes).unwrap();
        // A PIN check writes the counter first: it must refuse rather than replace the file.
        let e = block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap_err();
        let expected = if bytes.is_empty() {
            ErrorCode::CorruptedData
        } else {
            e.code()
        };
        assert_eq!(e.code(), ErrorCode::CorruptedData, "{what}: {e}");
        assert_eq!(expected, ErrorCode::CorruptedData);
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            bytes,
            "{what}: file changed"
        );
    }
    // Put the good file back: everything works again, no try was spent.
    std::fs::write(&f.path, &good).unwrap();
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
    assert_eq!(f.tries(), 3);
}

#[test]
fn a_tampered_public_key_makes_its_private_key_refuse_to_open() {
    let (f, good) = populated();
    // The first key's public point starts after its ID, label, type and usage; flip a byte of
    // it and fix the checksum, as an attacker who can write the file would.
    let pos = good
        .windows(3)
        .position(|w| w == [0x84, 0x41, 0x04])
        .unwrap()
        + 10;
    let mut bad = good.clone();
    bad[pos] ^= 1;
    std::fs::write(&f.path, reseal(bad)).unwrap();
    let tampered = std::fs::read(&f.path).unwrap();
    // The contents seal catches it at login, with the right PIN; the file is left as it is.
    let mut s = f.session();
    let e = block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptedData, "{e}");
    assert!(e.to_string().contains("outside tokenkit"), "{e}");
    let after = std::fs::read(&f.path).unwrap();
    assert_eq!(after.len(), tampered.len());
}

#[test]
fn a_swapped_certificate_or_a_deleted_record_is_caught_at_login() {
    let (f, good) = populated();
    // Rename the certificate (its label bytes) and fix the checksum: public parts only, what
    // an attacker with write access but no PIN can do.
    let file = TokenFile::read(&f.path).unwrap();
    let label = file
        .items()
        .into_iter()
        .find_map(|i| match i {
            token_core::Item::Certificate(c) => Some(c.label),
            _ => None,
        })
        .unwrap();
    let pos = good
        .windows(label.len())
        .rposition(|w| w == label.as_bytes())
        .unwrap();
    let mut bad = good.clone();
    bad[pos] ^= 0x20;
    std::fs::write(&f.path, reseal(bad)).unwrap();
    // Listing still works without the PIN (as with a card)...
    assert!(TokenFile::read(&f.path).is_ok());
    // ...but the login refuses the changed contents.
    let mut s = f.session();
    let e = block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptedData, "{e}");
    // The good file logs in again.
    std::fs::write(&f.path, &good).unwrap();
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
}

#[test]
fn a_damaged_file_shows_as_a_slot_without_token_and_can_be_deleted() {
    let (f, good) = populated();
    let bad = good[..good.len() - 5].to_vec();
    std::fs::write(&f.path, &bad).unwrap();
    let provider = Arc::new(SoftTokenProvider::new(f.dir.path()));
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(SoftTokenDriver))
        .provider(provider.clone())
        .start()
        .unwrap();
    assert!(hub.token_ids().is_empty());
    assert_eq!(hub.slot_manager().slots().len(), 1);
    assert_eq!(std::fs::read(&f.path).unwrap(), bad);
    let listed = provider.list().unwrap();
    assert_eq!(
        listed[0].file.as_ref().unwrap_err().code(),
        ErrorCode::CorruptedData
    );
    provider.delete_token(&f.id).unwrap();
    assert!(!f.path.exists());
}

fn with_header(body: &[u8]) -> Vec<u8> {
    let mut file = b"\x89TKSOFT\n\x00\x01".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_be_bytes());
    file.extend_from_slice(body);
    file.extend_from_slice(&[0; 32]);
    reseal(file)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let r = TokenFile::parse(&bytes);
        prop_assert!(r.is_err());
    }

    /// Past the checksum: arbitrary bodies reach the record parser.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Err(e) = TokenFile::parse(&with_header(&body)) {
            prop_assert_eq!(e.code(), ErrorCode::CorruptedData);
        }
    }
}

#[test]
fn mutated_valid_bodies_never_panic() {
    let (_f, good) = populated();
    let body = &good[14..good.len() - 32];
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(0..body.len(), any::<u8>(), 0..body.len(), 0usize..3),
            |(at, byte, cut, mode)| {
                let mut b = body.to_vec();
                match mode {
                    0 => b[at] = byte,
                    1 => b.truncate(cut),
                    _ => b.insert(at, byte),
                }
                if let Err(e) = TokenFile::parse(&with_header(&b)) {
                    prop_assert_eq!(e.code(), ErrorCode::CorruptedData);
                }
                Ok(())
            },
        )
        .unwrap();
}
