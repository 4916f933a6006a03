//! The store directory: file modes, no leftovers, the plain functions, token IDs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use driver_hsm_soft::{create_with, delete, list, token_path, TokenFile};
use token_core::{block_on, ErrorCode, KeyType, PinKind, TokenId};

#[test]
fn files_are_private_and_writes_leave_no_temporaries() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("new/store");
    let id = create_with(&store, &common::options("modes")).unwrap();
    let path = token_path(&store, &id).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&path), 0o600);

    let token = driver_hsm_soft::SoftToken::open(&path).unwrap();
    let mut s = token.session().unwrap();
    block_on(s.verify_pin(PinKind::User, &common::WRONG.into())).unwrap_err();
    block_on(s.verify_pin(PinKind::User, &common::PIN.into())).unwrap();
    common::generate(&mut s, KeyType::EcP256, "k");
    assert_eq!(mode(&path), 0o600);
    let names: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{}.softtoken", id.instance())]);
}

#[test]
fn plain_functions_create_list_and_delete() {
    let store = tempfile::tempdir().unwrap();
    assert!(list(store.path()).unwrap().is_empty());
    assert!(list(&store.path().join("missing")).unwrap().is_empty());
    let a = create_with(store.path(), &common::options("a")).unwrap();
    let b = create_with(store.path(), &common::options("b")).unwrap();
    assert_ne!(a, b);
    assert_eq!(a.driver(), "soft");
    let listed = list(store.path()).unwrap();
    let mut labels: Vec<_> = listed
        .iter()
        .map(|t| t.file.as_ref().unwrap().label().to_owned())
        .collect();
    labels.sort();
    assert_eq!(labels, ["a", "b"]);
    for t in &listed {
        assert_eq!(t.file.as_ref().unwrap().token_id().unwrap(), t.id);
        assert_eq!(TokenFile::read(&t.path).unwrap().pin_tries_left(), 3);
    }
    delete(store.path(), &a).unwrap();
    assert_eq!(
        delete(store.path(), &a).unwrap_err().code(),
        ErrorCode::TokenNotFound
    );
    assert_eq!(list(store.path()).unwrap().len(), 1);
    // Other files in the store are not tokens.
    std::fs::write(store.path().join("notes.txt"), "x").unwrap();
    std::fs::write(store.path().join("NOT-A-UUID.softtoken"), "x").unwrap();
    assert_eq!(list(store.path()).unwrap().len(), 1);
}

#[test]
fn only_soft_token_ids_name_files() {
    let store = tempfile::tempdir().unwrap();
    for bad in ["piv:00112233", "soft:../../etc/passwd", "soft:ABCDEF"] {
        let id = TokenId::parse(bad).unwrap();
        assert_eq!(
            token_path(store.path(), &id).unwrap_err().code(),
            ErrorCode::BadParameter
        );
    }
}

#[test]
fn bad_creation_options_are_refused() {
    let store = tempfile::tempdir().unwrap();
    let mut o = common::options("x");
    o.pin = "123".into();
    assert_eq!(
        create_with(store.path(), &o).unwrap_err().code(),
        ErrorCode::BadParameter
    );
    let mut o = common::options(&"x".repeat(256));
    assert_eq!(
        create_with(store.path(), &o).unwrap_err().code(),
        ErrorCode::BadParameter
    );
    o = common::options("x");
    o.pin_tries = 0;
    assert_eq!(
        create_with(store.path(), &o).unwrap_err().code(),
        ErrorCode::BadParameter
    );
    assert!(driver_hsm_soft::KdfParams::new(4, 1, 1).is_err());
    assert!(list(store.path()).unwrap().is_empty());
}

#[test]
fn token_info_names_the_token() {
    let f = common::Fixture::new();
    let info = token_core::Token::info(&f.token());
    assert_eq!(info.label, "test token");
    assert_eq!(info.serial.as_deref(), Some(f.id.instance()));
    assert_eq!(info.manufacturer.as_deref(), Some("tokenkit"));
}
