//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use driver_hsm_soft::{CreateOptions, KdfParams, SoftToken};
use token_core::{block_on, KeyItem, KeySpec, KeyType, PinKind, TokenId, TokenSession};

pub const PIN: &str = "123456";
pub const PUK: &str = "12345678";
pub const WRONG: &str = "000000";

/// Options with the test-only KDF, so a PIN check costs microseconds.
pub fn options(label: &str) -> CreateOptions {
    CreateOptions::new(label, PIN.into(), PUK.into()).kdf(KdfParams::insecure_fast())
}

/// A store in a fresh temporary directory with one token.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub id: TokenId,
    pub path: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let id = driver_hsm_soft::create_with(dir.path(), &options("test token")).unwrap();
        let path = driver_hsm_soft::token_path(dir.path(), &id).unwrap();
        Self { dir, id, path }
    }

    pub fn token(&self) -> SoftToken {
        SoftToken::open(&self.path).unwrap()
    }

    pub fn session(&self) -> TokenSession {
        self.token().session().unwrap()
    }

    /// A session with the PIN verified.
    pub fn login(&self) -> TokenSession {
        let mut s = self.session();
        block_on(s.verify_pin(PinKind::User, &PIN.into())).unwrap();
        s
    }

    pub fn tries(&self) -> u8 {
        driver_hsm_soft::TokenFile::read(&self.path)
            .unwrap()
            .pin_tries_left()
    }
}

pub fn spec(key_type: KeyType, label: &str) -> KeySpec {
    KeySpec {
        key_type,
        label: label.into(),
        slot: None,
        usage: None,
    }
}

pub fn generate(session: &mut TokenSession, key_type: KeyType, label: &str) -> KeyItem {
    block_on(session.generate_key(&spec(key_type, label))).unwrap()
}
