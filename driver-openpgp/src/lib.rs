//! # driver-openpgp: OpenPGP cards for tokenkit
//!
//! A driver for the OpenPGP card application, version 3.4 (YubiKey, Nitrokey, Gnuk, CanoKey
//! and the others), and a simulator of it.
//!
//! - **The driver** ([`OpenPgpDriver`], ID `openpgp`): probes a card by SELECTing
//!   D2 76 00 01 24 01, reads the application related data (6E) and names the token
//!   `openpgp:<manufacturer><serial>` from the AID. Its items are the keys of the three slots
//!   (`sig` signs with PSO:COMPUTE DIGITAL SIGNATURE, `dec` agrees keys or decrypts with
//!   PSO:DECIPHER, `aut` signs with INTERNAL AUTHENTICATE) and the cardholder certificates.
//!   Sessions verify PW1 (`PinKind::User`), PW3 (`PinKind::Admin`) and unblock with the
//!   resetting code (`PinKind::Unblock`); keys are generated and imported into a slot named by
//!   [`token_core::KeySpec::slot`] (`sig`, `dec`, `aut`) after the admin PIN. Algorithms: ECDSA
//!   P-256/P-384, EdDSA Ed25519, ECDH P-256/P-384/X25519, and RSA 2048/3072/4096 (PKCS#1 v1.5
//!   signatures with SHA-256/384/512, the driver building the DigestInfo; PKCS#1 v1.5
//!   decryption in `dec`; import in the card's import format, with or without CRT parts and
//!   modulus). When the card has a KDF-DO (F9) that is on, every PIN is sent as its iterated
//!   and salted S2K hash, as GnuPG sends it.
//! - **The simulator** (`sim::OpenPgpCard`, feature `simulator`): the card as an APDU
//!   handler, with its state in memory or in a file.
//!
//! OpenPGP-specific operations (the signature counter, setting the resetting code, a factory
//! reset, PSO:ENCIPHER / DECIPHER with the AES key in D5 on cards that announce it) are on
//! [`OpenPgpSession`], reached through
//! [`token_core::TokenSession::delegate_mut`] and `as_any_mut`.
//!
//! ## Use
//!
//! ```
//! use std::sync::Arc;
//! use driver_openpgp::sim::OpenPgpCard;
//! use driver_openpgp::{Algorithm, KeyRef, OpenPgpDriver};
//! use token_core::{block_on, testkit::TestSlots, HashAlg, Hub, ObjectId, Pin, PinKind,
//!     SignatureAlgorithm, TokenId};
//!
//! let mut card = OpenPgpCard::new(0x0C0FFEE0);
//! card.put_key(KeyRef::Sig, Algorithm::Ed25519, &[7; 32])?;
//!
//! let slots = TestSlots::new();
//! let hub = Hub::builder()
//!     .registered(false)
//!     .driver(0, Arc::new(OpenPgpDriver))
//!     .provider(slots.provider())
//!     .start()?;
//! slots.insert_card("Reader 0", Box::new(card));
//! hub.settle();
//!
//! let token = hub.token(&TokenId::parse("openpgp:fffe0c0ffee0")?)?;
//! let signature = block_on(async {
//!     let mut session = token.open_session().await?;
//!     session.verify_pin(PinKind::User, &Pin::from("123456")).await?;
//!     session.sign(&ObjectId::new("sig"), SignatureAlgorithm::Ed25519, b"hello").await
//! })?;
//! assert_eq!(signature.len(), 64);
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Next: `tests/driver.rs` for every operation end to end, `src/sim` for what the simulated
//! card does.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod driver;
mod fingerprint;
mod kdf;
mod pkcs8;
mod rsa_der;
#[cfg(feature = "simulator")]
pub mod sim;
mod types;

pub use driver::{OpenPgpDriver, OpenPgpSession, OpenPgpToken};
pub use fingerprint::fingerprint_v4;
pub use types::{Algorithm, KeyRef, RsaImportFormat, AID_PREFIX, RSA_SIZES};

token_core::register_driver!(token_core::DriverRegistration::new("openpgp", 0, || {
    std::sync::Arc::new(OpenPgpDriver)
}));
