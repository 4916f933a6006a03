//! PC/SC readers as slots: [`PcscProvider`], its slots, and the thread that watches readers and
//! cards with one `SCardGetStatusChange` loop.

use core::any::Any;
use core::fmt;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pcsc::{Context, ReaderState, Scope, State};
use token_core::{
    async_trait, Device, Error, ProviderGuard, Result, Slot, SlotEvents, SlotKind, SlotProvider,
    SlotState, SmartCard,
};

use crate::card::PcscCard;
use crate::error::from_pcsc;

/// How long the guard waits for the monitor to see one `SCardCancel` before sending another.
/// `SCardCancel` only interrupts a call already waiting, so one sent just before the thread
/// enters `SCardGetStatusChange` would be lost.
const CANCEL_RETRY: Duration = Duration::from_millis(20);

/// How many cancels the guard sends before it leaves the thread behind rather than hang.
const CANCEL_TRIES: u32 = 250;

/// The PC/SC slot provider: every reader pcscd knows is a slot named as PC/SC names it, with
/// CryptoTokenKit's states (empty, mute card, valid card; missing once detached) and the ATR
/// of its card.
///
/// Reader attach and detach (pcscd's `\\?PnP?\Notification` reader) and card insertion and
/// removal come from one event-driven `SCardGetStatusChange` loop with an infinite timeout, on
/// a thread of its own; dropping the guard [`SlotProvider::start`] returned cancels it with
/// `SCardCancel`. Registered with the hub as `pcsc`.
///
/// ```no_run
/// use std::sync::Arc;
/// use token_core::Hub;
/// use transport_pcsc::PcscProvider;
///
/// let hub = Hub::builder()
///     .registered(false)
///     .provider(Arc::new(PcscProvider::new()?))
///     .start()?;
/// for slot in hub.slot_manager().slots() {
///     println!("{}: {}", slot.name, slot.state);
/// }
/// # Ok::<(), token_core::Error>(())
/// ```
pub struct PcscProvider {
    _private: (),
}

impl fmt::Debug for PcscProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PcscProvider")
    }
}

impl PcscProvider {
    /// The provider's ID, `pcsc`.
    pub const ID: &'static str = "pcsc";

    /// A provider, after checking that the PC/SC service answers.
    ///
    /// # Errors
    /// `CommunicationError` with `SCARD_E_NO_SERVICE` underneath when pcscd is not running (it
    /// returns at once; it does not wait for one).
    pub fn new() -> Result<Self> {
        let context =
            Context::establish(Scope::User).map_err(|e| from_pcsc(e, "reach the PC/SC service"))?;
        drop(context);
        Ok(Self { _private: () })
    }
}

impl SlotProvider for PcscProvider {
    fn id(&self) -> &'static str {
        Self::ID
    }

    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
        // The monitor's own context: pcsclite serializes the calls on one context, and this
        // one will sit in SCardGetStatusChange.
        let context =
            Context::establish(Scope::User).map_err(|e| from_pcsc(e, "reach the PC/SC service"))?;
        let mut monitor = Monitor::new(context.clone(), events);
        // The readers present now are reported before `start` returns, so the hub probes them
        // before it is handed to the program.
        monitor.scan()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel::<()>();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tokenkit-pcsc-monitor".into())
            .spawn(move || {
                monitor.run(&thread_stop);
                drop(done_tx);
            })
            .map_err(|e| {
                Error::communication("cannot start the PC/SC monitor thread").with_source(e)
            })?;
        Ok(Box::new(MonitorGuard {
            context,
            stop,
            done,
            thread: Some(thread),
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Stops the monitor thread when dropped.
struct MonitorGuard {
    context: Context,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ProviderGuard for MonitorGuard {}

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for _ in 0..CANCEL_TRIES {
            if let Err(e) = self.context.cancel() {
                tracing::debug!(error = %e, "SCardCancel failed");
            }
            match self.done.recv_timeout(CANCEL_RETRY) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                    return;
                }
            }
        }
        tracing::warn!("the PC/SC monitor did not stop; leaving it behind");
    }
}

/// What a reader holds, as the monitor last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    state: SlotState,
    atr: Option<Vec<u8>>,
    /// PC/SC's event counter (the upper 16 bits of `dwEventState`): one more for every card
    /// insertion and removal.
    events: u32,
}

impl Status {
    fn of(reader: &ReaderState) -> Self {
        let seen = reader.event_state();
        let state = slot_state(seen);
        let atr = (matches!(state, SlotState::ValidCard | SlotState::MuteCard)
            && !reader.atr().is_empty())
        .then(|| reader.atr().to_vec());
        Self {
            state,
            atr,
            events: reader.event_count(),
        }
    }
}

/// CryptoTokenKit's state for a PC/SC reader state.
fn slot_state(seen: State) -> SlotState {
    if seen.intersects(State::UNKNOWN | State::IGNORE) {
        SlotState::Missing
    } else if seen.contains(State::MUTE) {
        SlotState::MuteCard
    } else if seen.contains(State::PRESENT) {
        SlotState::ValidCard
    } else {
        SlotState::Empty
    }
}

struct Shared {
    status: Status,
    /// Bumped for every change reported that PC/SC's counter does not show (a mute card
    /// turning valid), so the hub never takes a real change for one it has seen.
    changes: u32,
}

/// One PC/SC reader.
struct PcscSlot {
    name: String,
    reader: CString,
    shared: Mutex<Shared>,
}

impl PcscSlot {
    fn new(reader: &CStr, status: Status) -> Self {
        Self {
            name: reader.to_string_lossy().into_owned(),
            reader: reader.to_owned(),
            shared: Mutex::new(Shared { status, changes: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new status; true when what the slot holds changed.
    fn update(&self, status: Status) -> bool {
        let mut shared = self.lock();
        let old = &shared.status;
        let changed =
            old.events != status.events || old.state != status.state || old.atr != status.atr;
        if changed && old.events == status.events {
            shared.changes = shared.changes.wrapping_add(1);
        }
        shared.status = status;
        changed
    }
}

#[async_trait]
impl Slot for PcscSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SlotKind {
        SlotKind::SmartCard
    }

    fn state(&self) -> SlotState {
        self.lock().status.state
    }

    fn atr(&self) -> Option<Vec<u8>> {
        self.lock().status.atr.clone()
    }

    /// PC/SC's event counter for the reader in the upper 32 bits; the lower 32 count changes
    /// the counter does not show.
    fn generation(&self) -> Option<u64> {
        let shared = self.lock();
        Some(u64::from(shared.status.events) << 32 | u64::from(shared.changes))
    }

    async fn connect(&self) -> Result<Device> {
        match self.state() {
            SlotState::Missing => return Err(Error::token_not_found("the reader is gone")),
            SlotState::Empty => return Err(Error::token_not_found("no card is in the reader")),
            _ => {}
        }
        let card = PcscCard::connect_reader(self.reader.clone()).await?;
        Ok(Device::SmartCard(SmartCard::new(Arc::new(card))))
    }
}

/// The status-change loop's state: the reader states handed to `SCardGetStatusChange` (the
/// PnP pseudo-reader first) and the slot of each reader.
struct Monitor {
    context: Context,
    events: SlotEvents,
    states: Vec<ReaderState>,
    slots: Vec<Arc<PcscSlot>>,
}

impl Monitor {
    fn new(context: Context, events: SlotEvents) -> Self {
        Self {
            context,
            events,
            states: vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)],
            slots: Vec::new(),
        }
    }

    fn list_readers(&self) -> Result<Vec<CString>> {
        match self.context.list_readers_owned() {
            Ok(names) => Ok(names),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => Err(from_pcsc(e, "list the readers")),
        }
    }

    /// Brings the reader list up to date: reports new readers with their state, and readers
    /// gone.
    fn scan(&mut self) -> Result<()> {
        let names = self.list_readers()?;
        let listed: HashSet<&CStr> = names.iter().map(CString::as_c_str).collect();
        let gone: Vec<CString> = self
            .slots
            .iter()
            .filter(|s| !listed.contains(s.reader.as_c_str()))
            .map(|s| s.reader.clone())
            .collect();
        for reader in gone {
            self.remove(&reader);
        }
        let mut new: Vec<ReaderState> = names
            .iter()
            .filter(|n| {
                !self
                    .slots
                    .iter()
                    .any(|s| s.reader.as_c_str() == n.as_c_str())
            })
            .map(|n| ReaderState::new(n.clone(), State::UNAWARE))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // UNAWARE states answer at once with what each reader holds.
        match self.context.get_status_change(Duration::ZERO, &mut new) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            // A reader left between the listing and now: the next PnP event rescans.
            Err(pcsc::Error::UnknownReader) => return Ok(()),
            Err(e) => return Err(from_pcsc(e, "read the readers' states")),
        }
        for mut state in new {
            state.sync_current_state();
            let status = Status::of(&state);
            if status.state == SlotState::Missing {
                continue;
            }
            let slot = Arc::new(PcscSlot::new(state.name(), status));
            tracing::debug!(reader = %slot.name, state = %slot.state(), "reader attached");
            self.slots.push(slot.clone());
            self.states.push(state);
            self.events.slot_added(slot);
        }
        Ok(())
    }

    fn remove(&mut self, reader: &CStr) {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.reader.as_c_str() == reader)
        {
            let slot = self.slots.remove(i);
            let events = slot.lock().status.events;
            slot.update(Status {
                state: SlotState::Missing,
                atr: None,
                events,
            });
            tracing::debug!(reader = %slot.name, "reader detached");
            self.events.slot_removed(&slot.name);
        }
        self.states.retain(|s| s.name() != reader);
    }

    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            match self.context.get_status_change(None, &mut self.states) {
                Ok(()) => {
                    if let Err(e) = self.handle_changes() {
                        tracing::warn!(error = %e, "PC/SC monitor failed; readers are no longer watched");
                        break;
                    }
                }
                Err(pcsc::Error::Cancelled | pcsc::Error::Timeout) => {}
                // A reader left between two calls: its state is no longer known by name.
                Err(pcsc::Error::UnknownReader) => {
                    if let Err(e) = self.scan() {
                        tracing::warn!(error = %e, "PC/SC monitor failed; readers are no longer watched");
                        break;
                    }
                }
                Err(e) => {
                    if !stop.load(Ordering::Acquire) {
                        tracing::warn!(error = %from_pcsc(e, "wait for reader events"), "PC/SC monitor stopped; its readers are gone");
                        self.remove_all();
                    }
                    break;
                }
            }
        }
    }

    fn remove_all(&mut self) {
        let readers: Vec<CString> = self.slots.iter().map(|s| s.reader.clone()).collect();
        for reader in readers {
            self.remove(&reader);
        }
    }

    fn handle_changes(&mut self) -> Result<()> {
        let mut gone = Vec::new();
        let mut readers_changed = false;
        for (i, state) in self.states.iter_mut().enumerate() {
            if !state.event_state().contains(State::CHANGED) {
                continue;
            }
            state.sync_current_state();
            if i == 0 {
                readers_changed = true;
                continue;
            }
            let status = Status::of(state);
            let Some(slot) = self
                .slots
                .iter()
                .find(|s| s.reader.as_c_str() == state.name())
            else {
                continue;
            };
            if status.state == SlotState::Missing {
                gone.push(slot.reader.clone());
            } else if slot.update(status) {
                tracing::debug!(reader = %slot.name, state = %slot.state(), "slot changed");
                self.events.slot_changed(&slot.name);
            }
        }
        for reader in gone {
            self.remove(&reader);
        }
        if readers_changed {
            self.scan()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_states_map_to_cryptotokenkit_states() {
        assert_eq!(slot_state(State::EMPTY), SlotState::Empty);
        assert_eq!(slot_state(State::PRESENT), SlotState::ValidCard);
        assert_eq!(
            slot_state(State::PRESENT | State::INUSE | State::UNPOWERED),
            SlotState::ValidCard
        );
        assert_eq!(
            slot_state(State::PRESENT | State::MUTE),
            SlotState::MuteCard
        );
        assert_eq!(slot_state(State::UNKNOWN), SlotState::Missing);
        assert_eq!(
            slot_state(State::IGNORE | State::UNAVAILABLE),
            SlotState::Missing
        );
    }

    fn status(state: SlotState, events: u32) -> Status {
        Status {
            state,
            atr: (state == SlotState::ValidCard).then(|| vec![0x3B, 0x00]),
            events,
        }
    }

    #[test]
    fn the_generation_follows_the_pcsc_counter_and_unseen_changes() {
        let slot = PcscSlot::new(c"Reader 0", status(SlotState::Empty, 4));
        let g0 = slot.generation();
        assert_eq!(g0, Some(4 << 32));
        // Nothing changed: same generation, nothing to report.
        assert!(!slot.update(status(SlotState::Empty, 4)));
        assert_eq!(slot.generation(), g0);
        // A removal and an insertion seen at once: one change, counter +2.
        assert!(slot.update(status(SlotState::ValidCard, 6)));
        assert_eq!(slot.generation(), Some(6 << 32));
        // A state change the counter does not show still changes the generation.
        assert!(slot.update(status(SlotState::MuteCard, 6)));
        assert_eq!(slot.generation(), Some(6 << 32 | 1));
    }
}
