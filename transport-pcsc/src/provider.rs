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
use std::time::{Duration, Instant};

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

/// The first pause before the monitor tries to reach the PC/SC service again after losing it.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between two tries to reach the PC/SC service: the pause doubles from
/// [`RECONNECT_FIRST`] up to this.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A service that stayed up this long before it went away counts as a new outage, and the
/// pauses start again from [`RECONNECT_FIRST`]; one that fails sooner keeps them growing, so a
/// service that keeps failing at once is not hammered.
const RECONNECT_HEALTHY: Duration = Duration::from_secs(10);

/// The pauses between tries to reach the PC/SC service again: doubling from `first` up to
/// `max`, started over only after the service has stayed up for `healthy`.
#[derive(Clone, Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    healthy: Duration,
    next: Duration,
    /// Whether the service was ever lost: the first loss is always a new outage.
    lost_before: bool,
}

impl Backoff {
    fn new(first: Duration, max: Duration, healthy: Duration) -> Self {
        Self {
            first,
            max,
            healthy,
            next: first.min(max),
            lost_before: false,
        }
    }

    /// The pause before the next try; the one after is twice as long, up to `max`.
    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = pause.saturating_mul(2).min(self.max);
        pause
    }

    /// The service was lost after serving for `served` since the last time it was reached:
    /// after a long enough run the pauses start again from `first`. True for a new outage (the
    /// first loss, or one after a long enough run), worth a warning; false for a service that
    /// failed again soon after it was reached, which is not warned about again.
    fn lost_after(&mut self, served: Duration) -> bool {
        let new_outage = !self.lost_before || served >= self.healthy;
        self.lost_before = true;
        if served >= self.healthy {
            self.next = self.first.min(self.max);
        }
        new_outage
    }
}

/// The PC/SC slot provider: every reader pcscd knows is a slot named as PC/SC names it, with
/// CryptoTokenKit's states (empty, mute card, valid card; missing once detached) and the ATR
/// of its card.
///
/// Reader attach and detach (pcscd's `\\?PnP?\Notification` reader) and card insertion and
/// removal come from one event-driven `SCardGetStatusChange` loop with an infinite timeout, on
/// a thread of its own; dropping the guard [`SlotProvider::start`] returned cancels it with
/// `SCardCancel`. Registered with the hub as `pcsc`.
///
/// When the PC/SC service goes away (pcscd stopped or restarted, socket-activated pcscd
/// exiting), every reader is reported gone, so the hub removes their tokens and their sessions
/// fail with `TokenNotFound` or `CommunicationError`; the monitor then tries to reach the
/// service again, pausing 0.1 s at first and doubling up to 5 s between tries, and reports the
/// readers and cards again once it answers (a card keeps its token ID, which its driver
/// derives from the card).
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
        let current = Arc::new(Mutex::new(context.clone()));
        let mut monitor = Monitor::new(context, current.clone(), events);
        // The readers present now are reported before `start` returns, so the hub probes them
        // before it is handed to the program.
        monitor.scan()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel::<()>();
        let (wake, wake_rx) = mpsc::channel::<()>();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tokenkit-pcsc-monitor".into())
            .spawn(move || {
                monitor.run(&thread_stop, &wake_rx);
                drop(done_tx);
            })
            .map_err(|e| {
                Error::communication("cannot start the PC/SC monitor thread").with_source(e)
            })?;
        Ok(Box::new(MonitorGuard {
            current,
            stop,
            wake,
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
    /// The monitor's current context (a new one each time it reaches the service again), for
    /// `SCardCancel`.
    current: Arc<Mutex<Context>>,
    stop: Arc<AtomicBool>,
    /// Wakes the monitor from a pause between tries to reach the service.
    wake: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ProviderGuard for MonitorGuard {}

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(());
        for _ in 0..CANCEL_TRIES {
            let context = self
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Err(e) = context.cancel() {
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
    /// Shared with the guard, which cancels whatever context the monitor waits on.
    current: Arc<Mutex<Context>>,
    events: SlotEvents,
    states: Vec<ReaderState>,
    slots: Vec<Arc<PcscSlot>>,
}

impl Monitor {
    fn new(context: Context, current: Arc<Mutex<Context>>, events: SlotEvents) -> Self {
        Self {
            context,
            current,
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

    /// Watches until `stop` is set (the guard then also cancels the wait and sends on `wake`).
    ///
    /// Any PC/SC failure other than a cancel or a reader leaving mid-call means the context is
    /// no longer usable, in practice because the service went away (`SCARD_E_NO_SERVICE`,
    /// `SCARD_E_SERVICE_STOPPED`, `SCARD_F_COMM_ERROR` when pcscd exits, socket-activated
    /// pcscd going idle, a package upgrade restarting it): every reader is reported gone, so
    /// its tokens are removed, and the monitor reaches the service again with growing pauses,
    /// reporting its readers and cards as new once it is back.
    fn run(&mut self, stop: &AtomicBool, wake: &mpsc::Receiver<()>) {
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX, RECONNECT_HEALTHY);
        let mut reached = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let failed = match self.context.get_status_change(None, &mut self.states) {
                Ok(()) => self.handle_changes().err(),
                Err(pcsc::Error::Cancelled | pcsc::Error::Timeout) => None,
                // A reader left between two calls: its state is no longer known by name.
                Err(pcsc::Error::UnknownReader) => self.scan().err(),
                Err(e) => Some(from_pcsc(e, "wait for reader events")),
            };
            let Some(error) = failed else { continue };
            if stop.load(Ordering::Acquire) {
                break;
            }
            if backoff.lost_after(reached.elapsed()) {
                tracing::warn!(
                    error = %error,
                    readers = self.slots.len(),
                    "lost the PC/SC service; its readers are reported gone until it is back"
                );
            } else {
                tracing::debug!(
                    error = %error,
                    readers = self.slots.len(),
                    "lost the PC/SC service again soon after reaching it"
                );
            }
            self.remove_all();
            if !self.reach_again(&mut backoff, stop, wake) {
                break;
            }
            reached = Instant::now();
        }
    }

    /// Establishes a new context and reports the readers it shows, pausing as `backoff` says
    /// before each try; false when told to stop first.
    fn reach_again(
        &mut self,
        backoff: &mut Backoff,
        stop: &AtomicBool,
        wake: &mpsc::Receiver<()>,
    ) -> bool {
        let mut tries: u32 = 0;
        loop {
            let pause = backoff.next_pause();
            match wake.recv_timeout(pause) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return false,
            }
            if stop.load(Ordering::Acquire) {
                return false;
            }
            tries = tries.saturating_add(1);
            match self.reconnect() {
                Ok(()) => {
                    tracing::info!(
                        tries,
                        readers = self.slots.len(),
                        "reached the PC/SC service again"
                    );
                    return true;
                }
                Err(e) => {
                    // Once per try, pauses growing to RECONNECT_MAX: debug, not a flood of
                    // warnings while the service is down.
                    tracing::debug!(error = %e, tries, "the PC/SC service is still unreachable");
                    self.remove_all();
                }
            }
        }
    }

    /// A new context in place of the lost one, and the readers it shows reported.
    fn reconnect(&mut self) -> Result<()> {
        let context =
            Context::establish(Scope::User).map_err(|e| from_pcsc(e, "reach the PC/SC service"))?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = context.clone();
        self.context = context;
        self.states.truncate(1);
        if let Some(pnp) = self.states.first_mut() {
            *pnp = ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE);
        }
        self.scan()
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

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn reconnect_pauses_double_up_to_the_cap() {
        let mut backoff = Backoff::new(ms(100), ms(1000), ms(10_000));
        let pauses: Vec<Duration> = (0..7).map(|_| backoff.next_pause()).collect();
        assert_eq!(
            pauses,
            [100, 200, 400, 800, 1000, 1000, 1000].map(ms).to_vec()
        );
    }

    #[test]
    fn reconnect_pauses_never_reach_zero_or_pass_the_cap() {
        // The real constants: no pause is zero (no busy loop), none is longer than the cap,
        // and they never shrink while the service stays away.
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX, RECONNECT_HEALTHY);
        let mut previous = Duration::ZERO;
        for _ in 0..100 {
            let pause = backoff.next_pause();
            assert!(
                pause >= RECONNECT_FIRST && pause <= RECONNECT_MAX,
                "{pause:?}"
            );
            assert!(pause >= previous, "{pause:?} after {previous:?}");
            previous = pause;
        }
        assert_eq!(previous, RECONNECT_MAX);
        // A first pause above the cap is the cap; a huge cap does not overflow.
        assert_eq!(Backoff::new(ms(500), ms(100), ms(0)).next_pause(), ms(100));
        let mut huge = Backoff::new(Duration::MAX / 3 * 2, Duration::MAX, Duration::MAX);
        huge.next_pause();
        assert_eq!(huge.next_pause(), Duration::MAX);
    }

    #[test]
    fn a_service_that_served_long_enough_starts_the_pauses_over() {
        let mut backoff = Backoff::new(ms(100), ms(1000), ms(10_000));
        assert!(backoff.lost_after(ms(60_000)));
        for _ in 0..5 {
            backoff.next_pause();
        }
        // Lost again soon after it was reached: the pauses keep growing, and it is not a new
        // outage to warn about.
        assert!(!backoff.lost_after(ms(9_999)));
        assert_eq!(backoff.next_pause(), ms(1000));
        // Lost after serving a while: a new outage, short pauses again.
        assert!(backoff.lost_after(ms(10_000)));
        assert_eq!(backoff.next_pause(), ms(100));
        assert_eq!(backoff.next_pause(), ms(200));
    }

    #[test]
    fn the_first_loss_is_a_new_outage_however_soon_it_comes() {
        let mut backoff = Backoff::new(ms(100), ms(1000), ms(10_000));
        assert!(backoff.lost_after(ms(1)));
        assert_eq!(backoff.next_pause(), ms(100));
        assert!(!backoff.lost_after(ms(1)));
        assert_eq!(backoff.next_pause(), ms(200));
    }
}
