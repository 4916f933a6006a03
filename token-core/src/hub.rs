//! The hub: it takes slots from every provider, probes drivers in priority order, keeps the
//! present tokens and tells watchers about insertions and removals.

use core::fmt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::driver::{Claim, Probe, Token, TokenDriver, TokenInfo};
use crate::error::{Error, Result};
use crate::exec::block_on;
use crate::model::{Item, TokenId};
use crate::registry::{registered_drivers, registered_slot_providers};
use crate::session::TokenSession;
use crate::slot::{ProviderGuard, Slot, SlotEvents, SlotKind, SlotProvider, SlotState};

type InsertionHandler = Arc<dyn Fn(&TokenId) + Send + Sync>;
type RemovalHandler = Box<dyn FnOnce(&TokenId) + Send>;

pub(crate) enum Msg {
    SlotAdded(Arc<dyn Slot>),
    SlotChanged(String),
    SlotRemoved(String),
    ItemsChanged(TokenId),
    SetInsertionHandler(InsertionHandler),
    AddRemovalHandler(TokenId, RemovalHandler),
    Subscribe(Sender<WatchEvent>),
    Barrier(Sender<()>),
    Shutdown,
}

/// An event a [`TokenWatcher`] subscriber receives, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A token appeared.
    Inserted(TokenId),
    /// A token's items changed (a key was generated, imported or deleted).
    ItemsChanged(TokenId),
    /// A token was removed.
    Removed(TokenId),
}

/// Tells the hub that a token's items changed, so the keychain index reads them again at once.
/// [`TokenSession`] calls it after every key generation, import and deletion; a driver may call
/// it for changes it notices itself.
#[derive(Clone)]
pub struct ItemsNotifier {
    tx: Option<Sender<Msg>>,
}

impl ItemsNotifier {
    /// A notifier that tells no one: for driver tests that call [`TokenDriver::probe`] without
    /// a hub.
    pub fn detached() -> Self {
        Self { tx: None }
    }

    /// Reports that the items of `token` changed.
    pub fn items_changed(&self, token: &TokenId) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::ItemsChanged(token.clone()));
        }
    }
}

impl fmt::Debug for ItemsNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ItemsNotifier")
    }
}

/// A present token as the hub keeps it: the driver's [`Token`] plus where it came from.
#[derive(Clone)]
pub struct TokenHandle {
    token: Arc<dyn Token>,
    slot_name: Arc<str>,
    driver: &'static str,
    driver_name: &'static str,
    present: Arc<AtomicBool>,
    notifier: ItemsNotifier,
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHandle")
            .field("id", self.token.id())
            .field("slot", &self.slot_name)
            .field("present", &self.is_present())
            .finish()
    }
}

impl TokenHandle {
    /// The token's ID.
    pub fn id(&self) -> &TokenId {
        self.token.id()
    }

    /// Descriptive facts from the driver.
    pub fn info(&self) -> TokenInfo {
        self.token.info()
    }

    /// The items the token holds now.
    pub fn items(&self) -> Vec<Item> {
        self.token.items()
    }

    /// The name of the slot the token is in.
    pub fn slot_name(&self) -> &str {
        &self.slot_name
    }

    /// The ID of the driver that made it.
    pub fn driver_id(&self) -> &'static str {
        self.driver
    }

    /// The human name of the driver that made it.
    pub fn driver_name(&self) -> &'static str {
        self.driver_name
    }

    /// False once the token was removed.
    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// The driver's token object.
    pub fn token(&self) -> &Arc<dyn Token> {
        &self.token
    }

    /// Opens a session with its own authentication state.
    ///
    /// # Errors
    /// `TokenNotFound` once the token was removed.
    pub async fn open_session(&self) -> Result<TokenSession> {
        if !self.is_present() {
            return Err(Error::token_not_found("the token was removed"));
        }
        let delegate = self.token.open_session().await?;
        Ok(TokenSession::new(self.id().clone(), delegate)
            .attach(self.present.clone(), self.notifier.clone()))
    }
}

/// Where a token is, for [`TokenWatcher::token_info`] (`TKTokenWatcher.TokenInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherTokenInfo {
    /// The token's ID.
    pub token_id: TokenId,
    /// The slot it is in.
    pub slot_name: String,
    /// The human name of its driver.
    pub driver_name: String,
}

/// A slot as the hub sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// What it holds.
    pub kind: SlotKind,
    /// Its state (`Probing` while the hub probes it).
    pub state: SlotState,
    /// The ATR of its card, for smart-card slots with a card.
    pub atr: Option<Vec<u8>>,
    /// The tokens made from it.
    pub tokens: Vec<TokenId>,
}

struct SlotEntry {
    slot: Arc<dyn Slot>,
    /// The slot's generation when it was last probed.
    probed: Option<u64>,
    state: SlotState,
    atr: Option<Vec<u8>>,
    tokens: Vec<TokenId>,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<String, SlotEntry>,
    tokens: BTreeMap<TokenId, TokenHandle>,
}

struct Inner {
    tx: Sender<Msg>,
    state: RwLock<State>,
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Configures and starts a [`Hub`].
pub struct HubBuilder {
    registered: bool,
    drivers: Vec<(i32, Arc<dyn TokenDriver>)>,
    providers: Vec<Arc<dyn SlotProvider>>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("registered", &self.registered)
            .field("drivers", &self.drivers.len())
            .field("providers", &self.providers.len())
            .finish()
    }
}

impl HubBuilder {
    /// Whether to take every driver and provider registered through `inventory` (the default).
    /// Tests turn it off to run a hub with exactly the parts they name.
    pub fn registered(mut self, yes: bool) -> Self {
        self.registered = yes;
        self
    }

    /// Adds a driver with a probing priority (higher first).
    pub fn driver(mut self, priority: i32, driver: Arc<dyn TokenDriver>) -> Self {
        self.drivers.push((priority, driver));
        self
    }

    /// Adds a slot provider.
    pub fn provider(mut self, provider: Arc<dyn SlotProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Starts the hub: its worker thread, then every provider; waits until the slots present
    /// at start are probed, so [`Hub::token_ids`] is complete when this returns.
    ///
    /// A provider that fails to start (no PC/SC service, say) is logged and left out.
    ///
    /// # Errors
    /// `CommunicationError` if the worker thread cannot be started.
    pub fn start(self) -> Result<Hub> {
        let mut drivers = self.drivers;
        let mut providers = self.providers;
        if self.registered {
            for reg in registered_drivers() {
                drivers.push((reg.priority, (reg.create)()));
            }
            for reg in registered_slot_providers() {
                match (reg.create)() {
                    Ok(p) => providers.push(p),
                    Err(e) => {
                        tracing::warn!(provider = reg.id, error = %e, "slot provider unavailable")
                    }
                }
            }
        }
        // Stable: equal priorities keep registration order, which registered_drivers() made
        // deterministic.
        drivers.sort_by_key(|d| std::cmp::Reverse(d.0));
        let (tx, rx) = channel();
        let inner = Arc::new(Inner {
            tx: tx.clone(),
            state: RwLock::new(State::default()),
        });
        let mut worker = Worker {
            inner: inner.clone(),
            drivers: drivers.into_iter().map(|(_, d)| d).collect(),
            insertion: None,
            removal: HashMap::new(),
            subscribers: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("tokenkit-hub".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::communication("cannot start the hub thread").with_source(e))?;
        let mut guards = Vec::new();
        let mut started = Vec::new();
        for p in providers {
            match p.start(SlotEvents { tx: tx.clone() }) {
                Ok(g) => {
                    guards.push(g);
                    started.push(p);
                }
                Err(e) => {
                    tracing::warn!(provider = p.id(), error = %e, "slot provider failed to start")
                }
            }
        }
        let hub = Hub {
            inner,
            providers: started,
            guards: Mutex::new(guards),
            worker: Mutex::new(Some(handle)),
        };
        hub.settle();
        Ok(hub)
    }
}

/// The hub: one per program. It owns the slot providers, the drivers and the present tokens.
///
/// ```
/// let hub = token_core::Hub::builder().start().expect("hub");
/// for id in hub.token_ids() {
///     println!("{id}");
/// }
/// ```
pub struct Hub {
    inner: Arc<Inner>,
    providers: Vec<Arc<dyn SlotProvider>>,
    guards: Mutex<Vec<Box<dyn ProviderGuard>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("tokens", &self.token_ids())
            .finish()
    }
}

impl Hub {
    /// A builder; by default it takes every registered driver and slot provider.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            registered: true,
            drivers: Vec::new(),
            providers: Vec::new(),
        }
    }

    /// Waits until every slot event reported so far has been handled (tokens probed, watchers
    /// told).
    pub fn settle(&self) {
        let (tx, rx) = channel();
        if self.inner.tx.send(Msg::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The IDs of the tokens present now.
    pub fn token_ids(&self) -> Vec<TokenId> {
        self.inner.read().tokens.keys().cloned().collect()
    }

    /// Every present token.
    pub fn tokens(&self) -> Vec<TokenHandle> {
        self.inner.read().tokens.values().cloned().collect()
    }

    /// The token with this ID.
    ///
    /// # Errors
    /// `TokenNotFound` when no such token is present.
    pub fn token(&self, id: &TokenId) -> Result<TokenHandle> {
        self.inner
            .read()
            .tokens
            .get(id)
            .cloned()
            .ok_or_else(|| Error::token_not_found("no token with this ID is present"))
    }

    /// Opens a session on the token with this ID.
    ///
    /// # Errors
    /// `TokenNotFound` when no such token is present.
    pub async fn open_session(&self, id: &TokenId) -> Result<TokenSession> {
        self.token(id)?.open_session().await
    }

    /// The slot manager: every slot and its state.
    pub fn slot_manager(&self) -> SlotManager {
        SlotManager {
            inner: self.inner.clone(),
        }
    }

    /// A watcher of token insertions and removals.
    pub fn watcher(&self) -> TokenWatcher {
        TokenWatcher {
            inner: self.inner.clone(),
        }
    }

    /// The running slot provider with this ID, to reach its own API through
    /// [`SlotProvider::as_any`] (registering a persistent token, say).
    pub fn provider(&self, id: &str) -> Option<Arc<dyn SlotProvider>> {
        self.providers.iter().find(|p| p.id() == id).cloned()
    }

    /// Every running slot provider.
    pub fn providers(&self) -> &[Arc<dyn SlotProvider>] {
        &self.providers
    }
}

impl Hub {
    /// Stops the hub now, as dropping it would: every slot provider stops (its threads end,
    /// PC/SC's monitor leaves `SCardGetStatusChange`), then the worker. Safe to call more than
    /// once; the hub reports no more events afterwards.
    ///
    /// A program that shares its hub (an `Arc<Hub>` that other threads may still hold for a
    /// moment, such as a keychain index's) calls this before it exits, so no provider thread
    /// is still inside a C library while the process tears it down.
    pub fn shutdown(&self) {
        self.stop();
    }

    fn stop(&self) {
        // Stop the providers first so no event arrives after the worker is gone.
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let _ = self.inner.tx.send(Msg::Shutdown);
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = worker {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every slot the hub knows and its state (the counterpart of `TKSmartCardSlotManager`).
#[derive(Clone)]
pub struct SlotManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for SlotManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotManager")
            .field("slots", &self.slot_names())
            .finish()
    }
}

impl SlotManager {
    /// The names of the slots present now.
    pub fn slot_names(&self) -> Vec<String> {
        self.inner.read().slots.keys().cloned().collect()
    }

    /// Every slot with its state.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.inner
            .read()
            .slots
            .iter()
            .map(|(name, e)| slot_info(name, e))
            .collect()
    }

    /// The slot with this name.
    pub fn slot(&self, name: &str) -> Option<SlotInfo> {
        self.inner
            .read()
            .slots
            .get(name)
            .map(|e| slot_info(name, e))
    }
}

fn slot_info(name: &str, e: &SlotEntry) -> SlotInfo {
    SlotInfo {
        name: name.to_owned(),
        kind: e.slot.kind(),
        state: e.state,
        atr: e.atr.clone(),
        tokens: e.tokens.clone(),
    }
}

/// Tracks the tokens present (the counterpart of `TKTokenWatcher`).
///
/// Every event is delivered exactly once, in the order it happened, from the hub's thread: a
/// token's removal is never reported before its insertion. Handlers must not block; hand long
/// work to another thread.
#[derive(Clone)]
pub struct TokenWatcher {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenWatcher")
            .field("token_ids", &self.token_ids())
            .finish()
    }
}

impl TokenWatcher {
    /// The IDs of the tokens present now (`tokenIDs`).
    pub fn token_ids(&self) -> Vec<TokenId> {
        self.inner.read().tokens.keys().cloned().collect()
    }

    /// Sets the handler called for every token inserted from now on, and first for every token
    /// already present (`setInsertionHandler`). Replaces any earlier handler.
    pub fn set_insertion_handler(&self, handler: impl Fn(&TokenId) + Send + Sync + 'static) {
        let _ = self
            .inner
            .tx
            .send(Msg::SetInsertionHandler(Arc::new(handler)));
    }

    /// Adds a handler called once when the token `id` is removed
    /// (`addRemovalHandler(_:forTokenID:)`). If the token is not present, it is called at once.
    pub fn add_removal_handler(
        &self,
        id: &TokenId,
        handler: impl FnOnce(&TokenId) + Send + 'static,
    ) {
        let _ = self
            .inner
            .tx
            .send(Msg::AddRemovalHandler(id.clone(), Box::new(handler)));
    }

    /// Where the token `id` is, while it is present (`tokenInfo(forTokenID:)`).
    pub fn token_info(&self, id: &TokenId) -> Option<WatcherTokenInfo> {
        self.inner.read().tokens.get(id).map(|h| WatcherTokenInfo {
            token_id: id.clone(),
            slot_name: h.slot_name.to_string(),
            driver_name: h.driver_name.to_owned(),
        })
    }

    /// A stream of every event from now on, starting with an `Inserted` for each token already
    /// present. The stream ends when the hub is dropped. The keychain index and `tokenctl watch`
    /// read this.
    pub fn subscribe(&self) -> Receiver<WatchEvent> {
        let (tx, rx) = channel();
        let _ = self.inner.tx.send(Msg::Subscribe(tx));
        rx
    }

    /// Waits up to `timeout` for the next event of a subscription; a small helper for tests
    /// and command-line tools.
    ///
    /// # Errors
    /// `CommunicationError` on timeout or when the hub is gone.
    pub fn next_event(rx: &Receiver<WatchEvent>, timeout: Duration) -> Result<WatchEvent> {
        rx.recv_timeout(timeout)
            .map_err(|_| Error::communication("no token event within the time allowed"))
    }
}

struct Worker {
    inner: Arc<Inner>,
    drivers: Vec<Arc<dyn TokenDriver>>,
    insertion: Option<InsertionHandler>,
    removal: HashMap<TokenId, Vec<RemovalHandler>>,
    subscribers: Vec<Sender<WatchEvent>>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::SlotAdded(slot) => {
                    let name = slot.name().to_owned();
                    if self.inner.read().slots.contains_key(&name) {
                        self.drop_tokens_of(&name);
                    }
                    self.inner.write().slots.insert(
                        name.clone(),
                        SlotEntry {
                            probed: None,
                            state: slot.state(),
                            atr: slot.atr(),
                            slot,
                            tokens: Vec::new(),
                        },
                    );
                    self.probe_slot(&name);
                }
                Msg::SlotChanged(name) => {
                    let seen = self.inner.read().slots.get(&name).map(|e| {
                        let g = e.slot.generation();
                        g.is_some() && g == e.probed
                    });
                    if seen == Some(false) {
                        self.drop_tokens_of(&name);
                        self.probe_slot(&name);
                    }
                }
                Msg::SlotRemoved(name) => {
                    self.drop_tokens_of(&name);
                    self.inner.write().slots.remove(&name);
                }
                Msg::ItemsChanged(id) => {
                    if self.inner.read().tokens.contains_key(&id) {
                        self.publish(WatchEvent::ItemsChanged(id));
                    }
                }
                Msg::SetInsertionHandler(h) => {
                    for id in self.inner.read().tokens.keys() {
                        h(id);
                    }
                    self.insertion = Some(h);
                }
                Msg::AddRemovalHandler(id, h) => {
                    if self.inner.read().tokens.contains_key(&id) {
                        self.removal.entry(id).or_default().push(h);
                    } else {
                        h(&id);
                    }
                }
                Msg::Subscribe(tx) => {
                    let present: Vec<TokenId> = self.inner.read().tokens.keys().cloned().collect();
                    let alive = present
                        .into_iter()
                        .all(|id| tx.send(WatchEvent::Inserted(id)).is_ok());
                    if alive {
                        self.subscribers.push(tx);
                    }
                }
                Msg::Barrier(tx) => {
                    let _ = tx.send(());
                }
                Msg::Shutdown => break,
            }
        }
    }

    fn publish(&mut self, event: WatchEvent) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    fn drop_tokens_of(&mut self, slot: &str) {
        let removed: Vec<TokenHandle> = {
            let mut st = self.inner.write();
            let ids = match st.slots.get_mut(slot) {
                Some(e) => std::mem::take(&mut e.tokens),
                None => Vec::new(),
            };
            ids.iter().filter_map(|id| st.tokens.remove(id)).collect()
        };
        for handle in removed {
            handle.present.store(false, Ordering::Release);
            let id = handle.id().clone();
            tracing::debug!(token = %id, slot, "token removed");
            self.publish(WatchEvent::Removed(id.clone()));
            for h in self.removal.remove(&id).unwrap_or_default() {
                h(&id);
            }
        }
    }

    fn set_state(&self, slot: &str, state: SlotState, atr: Option<Vec<u8>>) {
        if let Some(e) = self.inner.write().slots.get_mut(slot) {
            e.state = state;
            e.atr = atr;
        }
    }

    fn probe_slot(&mut self, name: &str) {
        let Some(slot) = self.inner.read().slots.get(name).map(|e| e.slot.clone()) else {
            return;
        };
        let generation = slot.generation();
        if let Some(e) = self.inner.write().slots.get_mut(name) {
            e.probed = generation;
        }
        let state = slot.state();
        let atr = slot.atr();
        if state != SlotState::ValidCard {
            self.set_state(name, state, atr);
            return;
        }
        self.set_state(name, SlotState::Probing, atr.clone());
        let device = match block_on(slot.connect()) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(slot = name, error = %e, "slot did not connect");
                let after =
                    if slot.kind() == SlotKind::SmartCard && slot.state() == SlotState::ValidCard {
                        SlotState::MuteCard
                    } else {
                        slot.state()
                    };
                self.set_state(name, after, atr);
                return;
            }
        };
        let kind = slot.kind();
        let probe = Probe {
            slot_name: name.to_owned(),
            device,
            notifier: ItemsNotifier {
                tx: Some(self.inner.tx.clone()),
            },
        };
        let mut claimed: Vec<(Arc<dyn Token>, &'static str, &'static str)> = Vec::new();
        for driver in &self.drivers {
            if !driver.slot_kinds().contains(&kind) {
                continue;
            }
            if kind == SlotKind::SmartCard {
                if let Some(a) = &atr {
                    if !driver.matches_atr(a) {
                        continue;
                    }
                }
            }
            match block_on(driver.probe(&probe)) {
                Ok(Claim::NotMine) => {}
                Ok(Claim::Token(t)) => claimed.push((t, driver.id(), driver.name())),
                Ok(Claim::Exclusive(t)) => {
                    claimed.push((t, driver.id(), driver.name()));
                    break;
                }
                Err(e) => {
                    tracing::warn!(slot = name, driver = driver.id(), error = %e, "probe failed");
                }
            }
        }
        let slot_name: Arc<str> = Arc::from(name);
        let mut inserted = Vec::new();
        {
            let mut st = self.inner.write();
            for (token, driver, driver_name) in claimed {
                let id = token.id().clone();
                if st.tokens.contains_key(&id) {
                    tracing::warn!(token = %id, slot = name, "a token with this ID is already present; ignoring the second");
                    continue;
                }
                st.tokens.insert(
                    id.clone(),
                    TokenHandle {
                        token,
                        slot_name: slot_name.clone(),
                        driver,
                        driver_name,
                        present: Arc::new(AtomicBool::new(true)),
                        notifier: ItemsNotifier {
                            tx: Some(self.inner.tx.clone()),
                        },
                    },
                );
                inserted.push(id);
            }
            if let Some(e) = st.slots.get_mut(name) {
                e.tokens = inserted.clone();
                e.state = SlotState::ValidCard;
            }
        }
        for id in inserted {
            tracing::debug!(token = %id, slot = name, "token inserted");
            if let Some(h) = &self.insertion {
                h(&id);
            }
            self.publish(WatchEvent::Inserted(id));
        }
    }
}
