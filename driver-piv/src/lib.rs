//! # driver-piv: PIV cards for tokenkit
//!
//! A [`token_core::TokenDriver`] for the PIV card application of NIST SP 800-73-4, with the
//! YubiKey extensions PIV tools rely on, and a simulator of such a card.
//!
//! - **The driver** ([`PivDriver`], registered as `piv` at priority 0): SELECTs the PIV AID,
//!   reads the CHUID, CCC, discovery and key history objects, the certificates of slots 9A,
//!   9C, 9D, 9E and the retired slots 82 to 95 (gzip'd ones too), and on YubiKeys (5.3 and
//!   later) each slot's metadata. Keys are RSA 1024 to 4096, ECC P-256 and P-384, Ed25519 and
//!   X25519.
//! - **Token IDs** are `piv:<instance>`: the CHUID GUID in lower-case hex when the card has a
//!   non-zero one, else the YubiKey serial in decimal (`piv:12345678`), else the FASC-N
//!   (`piv:fascn-<hex>`); the same on every insertion.
//! - **Items**: one [`token_core::KeyItem`] per slot holding a key (known from YubiKey
//!   metadata or the certificate's public key) and one [`token_core::CertificateItem`] per
//!   certificate. **Both carry the slot byte as their [`token_core::ObjectId`]** (`[0x9A]`),
//!   see [`SlotId::object_id`]; [`resolve_key_name`] turns `9a`, `9c`, `82` .. `95`,
//!   `signature`, `retired3` or a key's label into it. Constraints: PIN for 9A, 9D and the
//!   retired slots, PIN before every use for 9C, none for 9E, or what the key's YubiKey PIN
//!   policy says.
//! - **Sessions** keep their own PIN state: the card's verified state is shared with every
//!   other program, so a session that did not verify the PIN gets `AuthenticationNeeded`
//!   (and [`token_core::TokenSession`] asks its PIN callback). A PIN-always key (9C) needs a
//!   PIN given to the session before each signature; the driver VERIFYs right before it.
//!   Signatures: ECDSA (the digest truncated or padded to the curve), RSA PKCS#1 v1.5 and PSS
//!   (padding made on the host), Ed25519; RSA decryption; ECDH and X25519 key agreement.
//! - **Card management** (management key 9B: 3DES or AES, mutual authentication) is behind
//!   [`PivManagement`]: key generation with PIN and touch policies, certificates, data
//!   objects, changing the management key, PIN retry counts, YubiKey attestation
//!   ([`PivManagement::attest`], the F9 certificate), reset. Token-core's
//!   `generate_key` (`KeySpec.slot` = `"9a"` ..) and `import_certificate` (the key's
//!   `ObjectId` names the slot) use the same key, the factory default unless set there.
//! - **The simulator** ([`sim::PivCard`], feature `simulator`): a YubiKey 5.7-like PIV card
//!   as a [`token_core::CardSimulator`], in memory for tests and in a real pcscd through
//!   transport-pcsc's vpcd bridge; its state can live in a file. It holds RSA 1024 to 4096,
//!   P-256, P-384, Ed25519 and X25519 keys and attests generated ones with its own
//!   attestation key in F9. See [`sim`] for what it does and does not do.
//!
//! ## Use
//!
//! ```
//! use driver_piv::sim::{PivCard, SimKey};
//! use driver_piv::{resolve_key_name, SlotId};
//! use token_core::testkit::TestSlots;
//! use token_core::{block_on, HashAlg, Hub, Pin, PinKind, SignatureAlgorithm, TokenId};
//!
//! // A simulated card with a P-256 key in 9A, in a scripted reader.
//! let card = PivCard::new_with_keys(
//!     12345678,
//!     [(SlotId::AUTHENTICATION, SimKey::p256(&[0x11; 32])?)],
//! );
//! let slots = TestSlots::new();
//! // The registered drivers are found through inventory: this one among them.
//! let hub = Hub::builder().provider(slots.provider()).start()?;
//! slots.insert_card("Reader 0", Box::new(card));
//! hub.settle();
//!
//! let token = hub.token(&TokenId::parse("piv:12345678")?)?;
//! let key = resolve_key_name("9a", &token.items()).expect("a key in 9a");
//! let signature = block_on(async {
//!     let mut session = token.open_session().await?;
//!     session.verify_pin(PinKind::User, &Pin::from("123456")).await?;
//!     session
//!         .sign(&key, SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256), b"hello")
//!         .await
//! })?;
//! assert_eq!(signature[0], 0x30); // DER ECDSA-Sig-Value
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Next: [`PivManagement`] for key generation and the management key; [`sim`] for the
//! simulator's commands; the tests in `tests/` for every behaviour above.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod driver;
mod manage;
mod mgmt;
mod objects;
mod padding;
mod types;

#[cfg(feature = "simulator")]
pub mod sim;

pub use commands::Metadata;
pub use driver::PivDriver;
pub use manage::{resolve_key_name, PivManagement};
pub use mgmt::ManagementKey;
pub use objects::{
    build_ccc, build_discovery, certificate_container, gzip, inflate, parse_certificate_container,
    parse_public_key, public_key_template, CertificateObject, Chuid, Discovery, KeyHistory,
    MAX_CERTIFICATE,
};
pub use types::{
    data_object, objects as object_tags, AlgorithmId, DataObject, PinPolicy, ReadAccess, SlotId,
    TouchPolicy, DATA_OBJECTS, DEFAULT_MANAGEMENT_KEY, PIV_AID, PIV_RID,
};

token_core::register_driver!(token_core::DriverRegistration::new("piv", 0, || {
    std::sync::Arc::new(PivDriver)
}));
