//! The test kit for driver authors (feature `testkit`).
//!
//! - [`MemoryCard`]: a [`CardChannel`](crate::CardChannel) over any
//!   [`CardSimulator`](crate::CardSimulator), with fault injection (remove the card mid-command).
//! - [`TestSlots`]: a scriptable [`SlotProvider`](crate::SlotProvider): add readers, insert and
//!   remove cards, register persistent tokens, make a card fail in the middle of a command.
//! - [`conformance`]: the suite a driver author runs against their own simulator: probing,
//!   TokenId stability across re-insertion, items, session and PIN rules, removal mid-operation.
//! - [`GarbageCard`]: wraps any simulator and mangles its answers (lengths, TLV, status
//!   words), for the "garbage in, clean error out, never a panic" property tests.
//!
//! ```
//! use token_core::testkit::{NoCard, TestSlots};
//! use token_core::Hub;
//!
//! let slots = TestSlots::new();
//! slots.add_reader("Reader 0");
//! let hub = Hub::builder().registered(false).provider(slots.provider()).start()?;
//! slots.insert_card("Reader 0", Box::new(NoCard::default()));
//! hub.settle();
//! // No driver was given, so the card gives no token.
//! assert!(hub.token_ids().is_empty());
//! # Ok::<(), token_core::Error>(())
//! ```

mod card;
pub mod conformance;
mod garbage;
mod slots;

pub use card::{MemoryCard, NoCard};
pub use garbage::GarbageCard;
pub use slots::{TestSlotProvider, TestSlots};
