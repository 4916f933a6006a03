//! # hello-driver: how to write a tokenkit driver
//!
//! A complete, small driver for an imaginary "hello" card, written as the example a driver
//! author copies from. It has the three parts every driver crate has:
//!
//! 1. **The driver** ([`HelloDriver`]): probes a card by SELECTing its application, reads what
//!    names the token (a serial number) and its items (one Ed25519 key), and builds a
//!    [`token_core::Token`]. It registers itself with [`token_core::register_driver!`], so any
//!    program that links this crate (and starts a [`token_core::Hub`]) finds "hello" cards.
//! 2. **The session** (`HelloSession`): PIN verification and signing, reporting
//!    `AuthenticationNeeded` when its own session has not verified the PIN. The PIN prompt,
//!    retry reporting and "never retry a wrong PIN" logic come from
//!    [`token_core::TokenSession`]; a driver does not write them.
//! 3. **The simulator** ([`HelloCard`]): the card as an APDU handler. The same simulator runs in
//!    memory in tests (token-core's test kit) and in a real pcscd through transport-pcsc's vpcd
//!    bridge.
//!
//! ## The card's protocol
//!
//! | command | APDU | answer |
//! | --- | --- | --- |
//! | SELECT | `00 A4 04 00 0A F0 74 6F 6B 65 6E 6B 69 74 01` | 9000, or 6A82 |
//! | serial | `00 CA 00 01 00` | 4 bytes |
//! | public key | `00 CA 00 02 00` | 32 bytes (Ed25519) |
//! | VERIFY | `00 20 00 80 Lc PIN` | 9000, 63Cx (x tries left), 6983 blocked; empty data asks the state |
//! | SIGN | `00 2A 9E 9A Lc message 00` | 64-byte Ed25519 signature, or 6982 without PIN |
//!
//! Long messages go in a command chain, which [`token_core::SmartCard`] builds by itself.
//!
//! ## Use
//!
//! ```
//! use std::sync::Arc;
//! use token_core::{block_on, testkit::TestSlots, Hub, Item, Pin, PinKind, SignatureAlgorithm};
//! use hello_driver::HelloCard;
//!
//! let slots = TestSlots::new();
//! // The registered driver is found through inventory: no driver is named here.
//! let hub = Hub::builder().provider(slots.provider()).start()?;
//! slots.insert_card("Reader 0", Box::new(HelloCard::new(0x1234, [7; 32], "1234")));
//! hub.settle();
//!
//! let id = token_core::TokenId::parse("hello:00001234")?;
//! let token = hub.token(&id)?;
//! let Some(Item::Key(key)) = token.items().into_iter().next() else { panic!("no key") };
//! let signature = block_on(async {
//!     let mut session = token.open_session().await?;
//!     session.verify_pin(PinKind::User, &Pin::from("1234")).await?;
//!     session.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"hello").await
//! })?;
//! assert_eq!(signature.len(), 64);
//! # Ok::<(), token_core::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod driver;
mod sim;

pub use driver::HelloDriver;
pub use sim::HelloCard;

/// The application identifier of the hello applet: `F0` (proprietary, no registered RID) then
/// "tokenkit" and version 1.
pub const AID: [u8; 10] = [0xF0, 0x74, 0x6F, 0x6B, 0x65, 0x6E, 0x6B, 0x69, 0x74, 0x01];

token_core::register_driver!(token_core::DriverRegistration::new("hello", 0, || {
    std::sync::Arc::new(HelloDriver)
}));
