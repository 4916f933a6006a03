//! PIN rules: tries left, lockout, PUK unblock, PIN and PUK change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, PIN, PUK, WRONG};
use token_core::{block_on, ErrorCode, HashAlg, KeyType, PinKind, SignatureAlgorithm};

const DIGEST: SignatureAlgorithm = SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256);

#[test]
fn signing_without_the_pin_needs_authentication() {
    let f = Fixture::new();
    let key = common::generate(&mut f.login(), KeyType::EcP256, "k");
    let mut s = f.session();
    let e = block_on(s.sign(&key.object_id, DIGEST, &[1; 32])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
    let e = block_on(s.generate_key(&common::spec(KeyType::Ed25519, "x"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
}

#[test]
fn a_wrong_pin_reports_the_tries_left_and_the_right_one_resets_them() {
    let f = Fixture::new();
    let mut s = f.session();
    let e = block_on(s.verify_pin(PinKind::User, &WRONG.into())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(2));
    assert!(!e.is_blocked());
    let status = block_on(s.pin_status(PinKind::User)).unwrap();
    assert_eq!((status.retries_left, status.verified), (Some(2), false));
    let e = block_on(s.verify_pin(PinKind::User, &WRONG.into())).unwrap_err();
    assert_eq!(e.retries_left(), Some(1));
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
    let status = block_on(s.pin_status(PinKind::User)).unwrap();
    assert_eq!((status.retries_left, status.verified), (Some(3), true));
    assert_eq!(f.tries(), 3);
}

#[test]
fn a_pin_of_impossible_length_costs_no_try() {
    let f = Fixture::new();
    let mut s = f.session();
    for bad in ["", "123", &"9".repeat(65)] {
        let e = block_on(s.verify_pin(PinKind::User, &bad.into())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    }
    assert_eq!(f.tries(), 3);
}

#[test]
fn three_wrong_pins_block_it_and_even_the_right_one_is_refused() {
    let f = Fixture::new();
    let mut s = f.session();
    for left in [2, 1, 0] {
        let e = block_on(s.verify_pin(PinKind::User, &WRONG.into())).unwrap_err();
        assert_eq!(e.retries_left(), Some(left));
    }
    let e = block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap_err();
    assert!(e.is_blocked(), "{e}");
    assert_eq!(f.tries(), 0);
    // A fresh session, a fresh token object: still blocked.
    let e = block_on(f.session().verify_pin(PinKind::User, &PIN.into())).unwrap_err();
    assert!(e.is_blocked());
}

#[test]
fn the_puk_unblocks_and_sets_a_new_pin_keeping_the_keys() {
    let f = Fixture::new();
    let key = common::generate(&mut f.login(), KeyType::EcP256, "k");
    let mut s = f.session();
    for _ in 0..3 {
        let _ = block_on(s.verify_pin(PinKind::User, &WRONG.into()));
    }
    // A wrong PUK costs a PUK try.
    let e = block_on(s.unblock_pin(&"87654321".into(), &"2468".into())).unwrap_err();
    assert_eq!(
        (e.code(), e.retries_left()),
        (ErrorCode::AuthenticationFailed, Some(2))
    );
    let status = block_on(s.pin_status(PinKind::Unblock)).unwrap();
    assert_eq!(status.retries_left, Some(2));

    block_on(s.unblock_pin(&PUK.into(), &"2468".into())).unwrap();
    assert_eq!(f.tries(), 3);
    assert_eq!(
        block_on(s.pin_status(PinKind::Unblock))
            .unwrap()
            .retries_left,
        Some(3)
    );
    let e = block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    block_on(s.verify_pin(PinKind::User, &"2468".into())).unwrap();
    let sig = block_on(s.sign(&key.object_id, DIGEST, &[7; 32])).unwrap();
    assert!(!sig.is_empty());
}

#[test]
fn a_blocked_puk_locks_the_token() {
    let f = Fixture::new();
    let mut s = f.session();
    for left in [2, 1, 0] {
        let e = block_on(s.verify_pin(PinKind::Unblock, &"87654321".into())).unwrap_err();
        assert_eq!(e.retries_left(), Some(left));
    }
    let e = block_on(s.unblock_pin(&PUK.into(), &"2468".into())).unwrap_err();
    assert!(e.is_blocked());
    // The user PIN itself still works.
    block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
}

#[test]
fn verifying_the_puk_does_not_unlock_keys() {
    let f = Fixture::new();
    let key = common::generate(&mut f.login(), KeyType::Ed25519, "k");
    let mut s = f.session();
    block_on(s.verify_pin(PinKind::Unblock, &PUK.into())).unwrap();
    let e = block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"m")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
}

#[test]
fn pin_change_needs_the_old_pin_and_keeps_the_keys() {
    let f = Fixture::new();
    let key = common::generate(&mut f.login(), KeyType::Ed25519, "k");
    let mut s = f.session();
    let e = block_on(s.change_pin(PinKind::User, &WRONG.into(), &"55555555".into())).unwrap_err();
    assert_eq!(
        (e.code(), e.retries_left()),
        (ErrorCode::AuthenticationFailed, Some(2))
    );
    let e = block_on(s.change_pin(PinKind::User, &PIN.into(), &"55".into())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter);
    block_on(s.change_pin(PinKind::User, &PIN.into(), &"55555555".into())).unwrap();
    assert_eq!(f.tries(), 3);
    let mut s = f.session();
    assert!(block_on(s.verify_pin(PinKind::User, &PIN.into())).is_err());
    block_on(s.verify_pin(PinKind::User, &"55555555".into())).unwrap();
    block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"m")).unwrap();
}

#[test]
fn puk_change() {
    let f = Fixture::new();
    let mut s = f.session();
    block_on(s.change_pin(PinKind::Unblock, &PUK.into(), &"11223344".into())).unwrap();
    for _ in 0..3 {
        let _ = block_on(s.verify_pin(PinKind::User, &WRONG.into()));
    }
    assert!(block_on(s.unblock_pin(&PUK.into(), &"2468".into())).is_err());
    block_on(s.unblock_pin(&"11223344".into(), &"2468".into())).unwrap();
}

#[test]
fn logout_forgets_the_pin() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    block_on(s.logout()).unwrap();
    let e = block_on(s.sign(&key.object_id, DIGEST, &[1; 32])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
}

#[test]
fn the_admin_pin_does_not_exist() {
    let f = Fixture::new();
    let e = block_on(f.session().pin_status(PinKind::Admin)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotImplemented);
}

#[test]
fn pins_never_show_in_debug_output() {
    let o = common::options("x");
    let text = format!("{o:?}");
    assert!(!text.contains(PIN) && !text.contains(PUK), "{text}");
}
