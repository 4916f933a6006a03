//! # token-core
//!
//! The floor of tokenkit. Everything else (transports, drivers, the keychain index, `tokenctl`)
//! stands on the vocabulary defined here, and nothing here names a concrete driver or
//! transport.
//!
//! ## The model, after CryptoTokenKit
//!
//! - A **slot** ([`Slot`], [`SlotState`]) is a place a token can be: a smart-card reader, a FIDO
//!   HID device, a registered persistent token. **Slot providers** ([`SlotProvider`]) report
//!   slots as they come and go; [`SlotManager`] lists them.
//! - A **driver** ([`TokenDriver`]) probes what is in a slot and, when its application is there,
//!   builds a **token** ([`Token`]) named by a stable [`TokenId`] (`driver:instance`). A card
//!   carrying several applications (PIV, OpenPGP and FIDO2 on one security key) gives one token
//!   per application, all usable at once.
//! - A token holds **items** ([`Item`]): keys ([`KeyItem`]) and certificates
//!   ([`CertificateItem`]). A **session** ([`TokenSession`]) holds an authentication state and
//!   signs, decrypts and agrees keys. When an operation needs a PIN, a caller-supplied
//!   [`PinCallback`] is asked once and told the tries left; a wrong PIN is reported, never
//!   retried.
//! - The **hub** ([`Hub`]) ties it together: it takes slots from every registered provider,
//!   probes drivers in priority order and keeps the present tokens. Its [`TokenWatcher`]
//!   reports insertions and removals, each exactly once and in order.
//! - Every error ([`Error`]) carries one of CryptoTokenKit's codes ([`ErrorCode`]) and, where
//!   there was one, the status word or device code underneath and the PIN tries left.
//!
//! ## The smart-card layer
//!
//! [`SmartCard`] is what a driver talks to: [`SmartCard::send_ins`] builds the APDU and handles
//! GET RESPONSE (61xx), wrong-length resends (6Cxx), command chaining and extended length for
//! every driver; [`SmartCard::begin_session`] is an exclusive section (a PC/SC transaction
//! under `transport-pcsc`). Every APDU is traced through `tracing` (target `tokenkit::apdu`)
//! with PINs and imported keys redacted, so a trace can go into a bug report. The codecs (APDU
//! [`Command`] and [`Response`], BER-TLV [`Tlv`] and [`TlvBuilder`], SIMPLE-TLV, COMPACT-TLV,
//! [`Atr`], a minimal X.509 reader [`CertificateInfo`]) are total: arbitrary bytes give an
//! error, never a panic.
//!
//! ## Writing a driver
//!
//! Start with the worked example, `examples/hello-driver` in the repository: a driver, its card
//! simulator ([`CardSimulator`]) and its tests, about 400 lines. Register the driver with
//! [`register_driver!`]; any program that links the crate and starts a [`Hub`] finds it. Test it
//! with the `testkit` feature: [`testkit::TestSlots`] scripts readers and cards, and
//! [`testkit::conformance::Suite`] checks what every driver owes its users.
//!
//! ```
//! use token_core::{Hub, WatchEvent};
//!
//! // A hub with every driver and slot provider this program links (none in this example).
//! let hub = Hub::builder().start()?;
//! let events = hub.watcher().subscribe();
//! for id in hub.token_ids() {
//!     println!("present: {id}");
//! }
//! drop(hub); // the event stream ends with the hub
//! assert!(events.iter().all(|e| matches!(e, WatchEvent::Inserted(_))));
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Programs without an async runtime drive the async API with [`block_on`]; transports wrap
//! blocking calls once with [`unblock`]. token-core names no runtime.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod channel;
mod driver;
mod error;
mod exec;
mod hub;
mod model;
mod registry;
mod session;
mod sim;
mod slot;
mod sw;
#[cfg(feature = "testkit")]
pub mod testkit;
mod x509;
// -- codec modules (apdu, tlv, atr, smartcard, cert): add `mod` and `pub use` lines here --
mod apdu;
mod atr;
mod cert;
mod smartcard;
mod tlv;
pub use apdu::{Command, Ins, Response};
pub use atr::{Atr, InterfaceGroup, Protocol};
pub use cert::{der_to_pem, pem_to_der, CertificateInfo, SubjectPublicKeyInfo};
pub use smartcard::{CardSession, SmartCard};
pub use tlv::{
    CompactTlv, CompactTlvIter, SimpleTlv, SimpleTlvIter, Tag, TagClass, Tlv, TlvBuilder, TlvIter,
};
// -- end codec modules --

// The public interface is:
pub use channel::{CardChannel, ChannelCaps, CtapChannel, KeepaliveStatus};
pub use driver::{
    Claim, KeyImport, KeySpec, Probe, SessionDelegate, Token, TokenDriver, TokenInfo,
};
pub use error::{Error, ErrorCode, Result, Underlying};
pub use exec::{block_on, unblock, Unblock};
pub use hub::{
    Hub, HubBuilder, ItemsNotifier, SlotInfo, SlotManager, TokenHandle, TokenWatcher, WatchEvent,
    WatcherTokenInfo,
};
pub use model::{
    CertificateItem, Constraint, DecryptAlgorithm, HashAlg, Item, ItemClass, KeyItem, KeyType,
    KeyUsage, ObjectId, Operation, Pin, PinKind, PinStatus, PublicKey, SignatureAlgorithm, TokenId,
};
pub use registry::{
    registered_drivers, registered_slot_providers, DriverRegistration, SlotProviderRegistration,
};
pub use session::{AuthState, PinCallback, PinRequest, TokenSession};
pub use sim::{CardSimulator, CtapHandler, MultiApplicationCard, Presence, UserPresence};
pub use slot::{
    Device, PersistentConfig, ProviderGuard, Slot, SlotEvents, SlotKind, SlotProvider, SlotState,
};
pub use sw::{StatusWord, SwMeaning};
pub use x509::{self_signed_certificate, self_signed_certificate_der};

/// Re-exported so driver crates implement the traits with the same macro version.
pub use async_trait::async_trait;
/// Re-exported so driver crates register with the same `inventory` version as token-core.
pub use inventory;
