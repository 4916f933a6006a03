//! # transport-pcsc
//!
//! tokenkit's PC/SC transport, over pcsc-lite (`pcscd`) through the `pcsc` crate:
//!
//! - [`PcscProvider`]: every PC/SC reader is a slot, with CryptoTokenKit's states (missing,
//!   empty, mute card, valid card; the hub adds probing) and its card's ATR. Readers attaching
//!   and detaching and cards coming and going are reported from one event-driven
//!   `SCardGetStatusChange` loop; a slot's [`token_core::Slot::generation`] is PC/SC's event
//!   counter, so a quick remove-and-insert is reported once. When the PC/SC service goes away
//!   (pcscd stopped, restarted, or exiting when idle), its readers are reported gone with
//!   their tokens, and the loop reaches the service again with pauses growing to 5 s, reporting
//!   the readers and cards again when it is back. The provider registers itself as
//!   `pcsc`: any program that links this crate and starts a [`token_core::Hub`] has it, and
//!   where no PC/SC service runs the hub logs that and goes on without it.
//! - [`PcscCard`]: the [`token_core::CardChannel`] over a card connected in shared mode, its
//!   blocking calls on a thread of its own; exclusive sessions are PC/SC transactions; PC/SC
//!   errors become token-core codes with the PC/SC code underneath
//!   ([`token_core::Underlying::Pcsc`]).
//! - [`vpcd`]: the bridge that puts any [`token_core::CardSimulator`] into a real pcscd through
//!   vsmartcard's virtual reader, so the whole stack (pcscd, libpcsclite, this crate, the
//!   drivers, and third-party tools such as OpenSC) runs against a simulated card.
//!
//! ## A hub with PC/SC readers
//!
//! ```no_run
//! use token_core::{Hub, TokenWatcher, WatchEvent};
//! use std::time::Duration;
//!
//! // Linking transport-pcsc registers the PC/SC provider; linked drivers probe its cards.
//! let hub = Hub::builder().start()?;
//! for slot in hub.slot_manager().slots() {
//!     println!("{}: {} {:?}", slot.name, slot.state, slot.tokens);
//! }
//! let events = hub.watcher().subscribe();
//! if let Ok(WatchEvent::Inserted(id)) = TokenWatcher::next_event(&events, Duration::from_secs(30)) {
//!     println!("inserted: {id}");
//! }
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! ## A simulated card in pcscd
//!
//! With pcscd running vpcd (see `xtask/src/pcscd.rs` for a private one), the card appears in
//! reader `Virtual PCD 00 00` for every PC/SC program:
//!
//! ```no_run
//! use hello_driver::HelloCard;
//! use transport_pcsc::vpcd::{VpcdBridge, DEFAULT_PORT};
//!
//! let bridge = VpcdBridge::connect(
//!     ("127.0.0.1", DEFAULT_PORT),
//!     Box::new(HelloCard::new(0x1234, [7; 32], "1234")),
//! )?;
//! // `opensc-tool -r 'Virtual PCD 00 00' --atr` shows the card now.
//! let card = bridge.disconnect()?; // pulled out; insert it again with its state kept
//! # drop(card);
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! ## Where to go next
//!
//! `tests/stack.rs` runs the hello driver through a real pcscd (`cargo xtask stack`); the
//! token model is in `token_core`.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod card;
mod error;
mod provider;
mod reply;
pub mod vpcd;

pub use card::PcscCard;
pub use error::{is_card_reset, SCARD_W_REMOVED_CARD, SCARD_W_RESET_CARD};
pub use provider::PcscProvider;

token_core::register_slot_provider!(token_core::SlotProviderRegistration::new(
    PcscProvider::ID,
    || Ok(std::sync::Arc::new(PcscProvider::new()?))
));
