//! Slots: the places a token can be (a reader, a HID device, a registered persistent token),
//! their states, and the providers that report them.

use core::any::Any;
use core::fmt;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::CtapChannel;
use crate::error::Result;
use crate::hub::Msg;
use crate::smartcard::SmartCard;

/// A slot's state, as CryptoTokenKit's `TKSmartCardSlot.State` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SlotState {
    /// 0: the slot is gone for good (reader unplugged). Terminal.
    Missing = 0,
    /// 1: nothing in the slot.
    Empty = 1,
    /// 2: something was inserted and drivers are probing it.
    Probing = 2,
    /// 3: a card is inserted but does not answer (no ATR, or it went mute).
    MuteCard = 3,
    /// 4: a card answered; drivers have been given the chance to make tokens of it.
    ValidCard = 4,
}

impl SlotState {
    /// The lowercase name used in output: `missing`, `empty`, `probing`, `mute`, `valid`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Empty => "empty",
            Self::Probing => "probing",
            Self::MuteCard => "mute",
            Self::ValidCard => "valid",
        }
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of thing a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SlotKind {
    /// A smart-card reader (PC/SC, NFC, a virtual reader).
    SmartCard,
    /// A FIDO HID device speaking CTAPHID.
    Hid,
    /// An always-available token (software or HSM), present while registered.
    Persistent,
}

/// The configuration of a persistent token, handed to the driver that serves it (the
/// counterpart of `TKTokenDriverConfiguration` / `TKTokenConfiguration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistentConfig {
    /// The driver that serves it (its [`crate::TokenDriver::id`]).
    pub driver: String,
    /// The instance ID; the token ID becomes `driver:instance`.
    pub instance: String,
    /// Driver-defined configuration data (a path to the store file, say).
    pub data: Vec<u8>,
}

/// What a slot yields when connected: the channel a driver probes.
#[derive(Clone)]
#[non_exhaustive]
pub enum Device {
    /// A smart card, with APDU-level helpers and its exclusive-session lock. Shared by every
    /// driver that makes a token of this card.
    SmartCard(SmartCard),
    /// A CTAPHID authenticator.
    Ctap(Arc<dyn CtapChannel>),
    /// A persistent token's configuration.
    Persistent(PersistentConfig),
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SmartCard(_) => f.write_str("Device::SmartCard"),
            Self::Ctap(_) => f.write_str("Device::Ctap"),
            Self::Persistent(c) => write!(f, "Device::Persistent({}:{})", c.driver, c.instance),
        }
    }
}

/// One slot, as a provider reports it (the counterpart of `TKSmartCardSlot`).
#[async_trait]
pub trait Slot: Send + Sync {
    /// The slot's name, unique within the hub (e.g. the PC/SC reader name).
    fn name(&self) -> &str;
    /// What it holds.
    fn kind(&self) -> SlotKind;
    /// Its state as the transport sees it. The hub reports `Probing` on top of this while its
    /// drivers probe.
    fn state(&self) -> SlotState;
    /// The ATR of the card in it, for smart-card slots holding a card.
    fn atr(&self) -> Option<Vec<u8>> {
        None
    }
    /// A number that changes every time what the slot holds changes (a card inserted or
    /// removed), like PC/SC's event counter; `None` when the transport cannot tell. The hub
    /// uses it to ignore a change notification that it has already seen the effect of, so a
    /// quick remove-and-insert gives one removal and one insertion, not two of each.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Connects to what the slot holds.
    ///
    /// # Errors
    /// `TokenNotFound` if the slot is empty or gone; `CommunicationError` if the card is mute.
    async fn connect(&self) -> Result<Device>;
}

/// The handle a provider reports slot changes through. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct SlotEvents {
    pub(crate) tx: Sender<Msg>,
}

impl SlotEvents {
    /// A new slot appeared (a reader attached, a device plugged in, a token registered).
    pub fn slot_added(&self, slot: Arc<dyn Slot>) {
        // A send fails only when the hub is gone; nothing is left to tell then.
        let _ = self.tx.send(Msg::SlotAdded(slot));
    }

    /// What is in a slot changed (card inserted or removed, device reconnected): the hub drops
    /// the tokens it made from the slot and probes again if the slot now holds something.
    pub fn slot_changed(&self, name: &str) {
        let _ = self.tx.send(Msg::SlotChanged(name.to_owned()));
    }

    /// A slot is gone for good (reader detached, token unregistered): its tokens are removed.
    pub fn slot_removed(&self, name: &str) {
        let _ = self.tx.send(Msg::SlotRemoved(name.to_owned()));
    }
}

/// What keeps a provider running: dropping it stops the provider (its threads end).
pub trait ProviderGuard: Send {}

impl ProviderGuard for () {}
impl<T: Send> ProviderGuard for std::thread::JoinHandle<T> {}

/// A source of slots: PC/SC readers, HID devices, registered persistent tokens. Registered with
/// [`crate::register_slot_provider!`] or handed to [`crate::HubBuilder::provider`].
pub trait SlotProvider: Send + Sync + 'static {
    /// A short stable name (`pcsc`, `hid`, `hsm-soft`).
    fn id(&self) -> &'static str;

    /// Starts reporting slots through `events`: first every slot present now, then changes as
    /// they happen, from the provider's own thread (event-driven, never a sleep loop). The hub
    /// calls this once.
    ///
    /// # Errors
    /// Any error means the provider is unavailable (no PC/SC service, say); the hub logs it and
    /// runs on without it.
    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>>;

    /// For reaching a provider's own API through [`crate::Hub::provider`].
    fn as_any(&self) -> &dyn Any;
}
