use core::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::card::MemoryCard;
use crate::error::{Error, Result};
use crate::sim::CardSimulator;
use crate::slot::{
    Device, PersistentConfig, ProviderGuard, Slot, SlotEvents, SlotKind, SlotProvider, SlotState,
};
use crate::smartcard::SmartCard;

enum Content {
    Empty,
    Card(MemoryCard),
    Mute,
    Persistent(PersistentConfig),
}

struct TestSlot {
    name: String,
    kind: SlotKind,
    content: Mutex<Content>,
    generation: AtomicU64,
}

impl TestSlot {
    fn replace(&self, content: Content) -> Content {
        let mut guard = self.content.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        std::mem::replace(&mut *guard, content)
    }
}

#[async_trait]
impl Slot for TestSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SlotKind {
        self.kind
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }

    fn state(&self) -> SlotState {
        match &*self.content.lock().unwrap_or_else(PoisonError::into_inner) {
            Content::Empty => SlotState::Empty,
            Content::Card(c) if !c.is_present() => SlotState::Empty,
            Content::Card(_) | Content::Persistent(_) => SlotState::ValidCard,
            Content::Mute => SlotState::MuteCard,
        }
    }

    fn atr(&self) -> Option<Vec<u8>> {
        match &*self.content.lock().unwrap_or_else(PoisonError::into_inner) {
            Content::Card(c) => Some(crate::CardChannel::atr(c)),
            _ => None,
        }
    }

    async fn connect(&self) -> Result<Device> {
        let content = self.content.lock().unwrap_or_else(PoisonError::into_inner);
        match &*content {
            Content::Card(c) if c.is_present() => {
                Ok(Device::SmartCard(SmartCard::new(Arc::new(c.clone()))))
            }
            Content::Persistent(p) => Ok(Device::Persistent(p.clone())),
            Content::Mute => Err(Error::communication("the card does not answer")),
            _ => Err(Error::token_not_found("the slot is empty")),
        }
    }
}

/// The slot provider half of [`TestSlots`], to hand to [`crate::HubBuilder::provider`].
pub struct TestSlotProvider {
    shared: Arc<Shared>,
}

struct Shared {
    slots: Mutex<BTreeMap<String, Arc<TestSlot>>>,
    events: Mutex<Option<SlotEvents>>,
}

impl Shared {
    fn events(&self) -> Option<SlotEvents> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SlotProvider for TestSlotProvider {
    fn id(&self) -> &'static str {
        "test"
    }

    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
        for slot in self
            .shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            events.slot_added(slot.clone());
        }
        *self
            .shared
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(events);
        Ok(Box::new(()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A scriptable slot provider: readers, cards and persistent tokens appear and vanish when a
/// test says so. Events reach the hub at once; call [`crate::Hub::settle`] to wait until they
/// are handled.
#[derive(Clone)]
pub struct TestSlots {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for TestSlots {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TestSlots").finish_non_exhaustive()
    }
}

impl Default for TestSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSlots {
    /// No slots yet.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                slots: Mutex::new(BTreeMap::new()),
                events: Mutex::new(None),
            }),
        }
    }

    /// The provider to give the hub.
    pub fn provider(&self) -> Arc<TestSlotProvider> {
        Arc::new(TestSlotProvider {
            shared: self.shared.clone(),
        })
    }

    fn add(&self, name: &str, kind: SlotKind, content: Content) -> Arc<TestSlot> {
        let slot = Arc::new(TestSlot {
            name: name.to_owned(),
            kind,
            content: Mutex::new(content),
            generation: AtomicU64::new(0),
        });
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), slot.clone());
        if let Some(ev) = self.shared.events() {
            ev.slot_added(slot.clone());
        }
        slot
    }

    fn slot(&self, name: &str) -> Option<Arc<TestSlot>> {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn set(&self, name: &str, content: Content) {
        let slot = match self.slot(name) {
            Some(s) => s,
            None => self.add(name, SlotKind::SmartCard, Content::Empty),
        };
        slot.replace(content);
        if let Some(ev) = self.shared.events() {
            ev.slot_changed(name);
        }
    }

    /// Attaches an empty reader.
    pub fn add_reader(&self, name: &str) {
        self.add(name, SlotKind::SmartCard, Content::Empty);
    }

    /// Detaches a reader (its slot goes `Missing` and disappears).
    pub fn remove_reader(&self, name: &str) {
        let removed = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let (Some(slot), Some(ev)) = (removed, self.shared.events()) {
            if let Content::Card(c) = &*slot.content.lock().unwrap_or_else(PoisonError::into_inner)
            {
                c.remove();
            }
            ev.slot_removed(name);
        }
    }

    /// Inserts a card running `sim` into the reader `name` (attaching the reader if needed).
    /// Returns the card, for fault injection.
    pub fn insert_card(&self, name: &str, sim: Box<dyn CardSimulator>) -> MemoryCard {
        let card = MemoryCard::new(sim);
        self.insert(name, card.clone());
        card
    }

    /// Inserts an existing card (for instance [`MemoryCard::reinserted`]).
    pub fn insert(&self, name: &str, card: MemoryCard) {
        self.set(name, Content::Card(card));
    }

    /// Inserts a card that does not answer (no ATR): the slot goes `MuteCard`.
    pub fn insert_mute_card(&self, name: &str) {
        self.set(name, Content::Mute);
    }

    /// Pulls the card out of the reader `name`; returns it so the test can put it back with
    /// [`MemoryCard::reinserted`].
    pub fn remove_card(&self, name: &str) -> Option<MemoryCard> {
        let slot = self.slot(name)?;
        let old = slot.replace(Content::Empty);
        if let Some(ev) = self.shared.events() {
            ev.slot_changed(name);
        }
        match old {
            Content::Card(c) => {
                c.remove();
                Some(c)
            }
            _ => None,
        }
    }

    /// Tells the hub the card in `name` went away by itself (after
    /// [`MemoryCard::fail_after`] pulled it), as a reader's status change would.
    pub fn card_gone(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            slot.generation.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(ev) = self.shared.events() {
            ev.slot_changed(name);
        }
    }

    /// Registers a persistent token in a slot named `driver:instance`.
    pub fn register_persistent(&self, config: PersistentConfig) {
        let name = format!("{}:{}", config.driver, config.instance);
        self.add(&name, SlotKind::Persistent, Content::Persistent(config));
    }

    /// Unregisters a persistent token.
    pub fn unregister_persistent(&self, driver: &str, instance: &str) {
        self.remove_reader(&format!("{driver}:{instance}"));
    }
}
