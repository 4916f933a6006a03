//! The test kit for driver authors (feature `testkit`).
//!
//! - [`MemoryCard`]: a [`CardChannel`](crate::CardChannel) over any
//!   [`CardSimulator`](crate::CardSimulator), with fault injection (remove the card mid-command).
//! - [`MemoryAuthenticator`]: a [`CtapChannel`](crate::CtapChannel) over any
//!   [`CtapHandler`](crate::CtapHandler) (a FIDO authenticator simulator), with a scripted
//!   user (touch, cancel, time out) and removal mid-request.
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
mod ctap;
mod garbage;
mod slots;

pub use card::{MemoryCard, NoCard};
pub use ctap::MemoryAuthenticator;
pub use garbage::GarbageCard;
pub use slots::{TestSlotProvider, TestSlots};

use std::sync::Arc;

use crate::driver::{Claim, Probe, Token, TokenDriver};
use crate::error::Result;
use crate::session::TokenSession;

/// Probes a simulated card with `driver` directly, without a hub or slots: the token the
/// driver makes of it, or `None` when the driver answers that its application is not there.
/// For driver tests that feed a driver one card at a time (garbage, fault injection).
///
/// # Errors
/// What the driver's probe fails with.
pub fn probe_card(
    driver: &dyn TokenDriver,
    sim: Box<dyn crate::CardSimulator>,
) -> Result<Option<Arc<dyn Token>>> {
    let card = crate::SmartCard::new(Arc::new(MemoryCard::new(sim)));
    let probe = Probe {
        slot_name: "testkit".into(),
        device: crate::Device::SmartCard(card),
        notifier: crate::ItemsNotifier::detached(),
    };
    Ok(match crate::exec::block_on(driver.probe(&probe))? {
        Claim::Token(t) | Claim::Exclusive(t) => Some(t),
        Claim::NotMine => None,
    })
}

/// Opens a [`TokenSession`] on a token made without a hub (by [`probe_card`], say).
///
/// # Errors
/// What the token's `open_session` fails with.
pub async fn open_session(token: &Arc<dyn Token>) -> Result<TokenSession> {
    let delegate = token.open_session().await?;
    Ok(TokenSession::new(token.id().clone(), delegate))
}
