//! The slot provider: one persistent slot per token file in the store, and the registration
//! manager (the counterpart of `TKSmartCardTokenRegistrationManager`).

use core::any::Any;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use token_core::{
    async_trait, Device, PersistentConfig, Pin, ProviderGuard, Result, Slot, SlotEvents, SlotKind,
    SlotProvider, SlotState, TokenId,
};

use crate::store::{self, CreateOptions, StoredToken};

/// The ID the provider registers under; reach it with `hub.provider("hsm-soft")`.
pub const PROVIDER_ID: &str = "hsm-soft";

/// How often a running provider looks at the store directory for tokens that other
/// processes created or deleted (one `stat` of the directory; a rescan only when it changed).
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A registered soft token's slot: always holding its token while the file is registered.
struct SoftSlot {
    name: String,
    config: PersistentConfig,
}

#[async_trait]
impl Slot for SoftSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SlotKind {
        SlotKind::Persistent
    }

    fn state(&self) -> SlotState {
        SlotState::ValidCard
    }

    async fn connect(&self) -> Result<Device> {
        Ok(Device::Persistent(self.config.clone()))
    }
}

/// Reports a persistent slot for every token file in a store directory, and creates and
/// deletes tokens so that the hub sees them appear and vanish at once.
///
/// Tokens that another process creates or deletes in the same store (another program, or
/// `tokenctl soft create`) are picked up too: while the provider runs, a thread of its own
/// looks at the directory every [`STORE_POLL_INTERVAL`] and rescans when it changed, so they
/// appear and vanish within that interval; [`SoftTokenProvider::rescan`] does it at once.
///
/// The registered instance (ID `hsm-soft`) uses [`store::default_store`]; reach it from a
/// running hub:
///
/// ```
/// # fn main() -> token_core::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let provider = std::sync::Arc::new(driver_hsm_soft::SoftTokenProvider::new(dir.path()));
/// # let hub = token_core::Hub::builder().registered(false)
/// #     .driver(0, std::sync::Arc::new(driver_hsm_soft::SoftTokenDriver))
/// #     .provider(provider).start()?;
/// use driver_hsm_soft::{CreateOptions, KdfParams, SoftTokenProvider};
///
/// let provider = hub.provider("hsm-soft").expect("linked");
/// let manager = provider
///     .as_any()
///     .downcast_ref::<SoftTokenProvider>()
///     .expect("the soft token provider");
/// let options = CreateOptions::new("work", "123456".into(), "12345678".into())
///     .kdf(KdfParams::insecure_fast());
/// let id = manager.create_token(&options)?;
/// hub.settle();
/// assert!(hub.token_ids().contains(&id));
/// manager.delete_token(&id)?;
/// hub.settle();
/// assert!(!hub.token_ids().contains(&id));
/// # Ok(()) }
/// ```
pub struct SoftTokenProvider {
    inner: Arc<Inner>,
}

/// The provider's state, shared with its store-watching thread.
struct Inner {
    store: PathBuf,
    events: Mutex<Option<SlotEvents>>,
    /// The instances reported to the hub.
    reported: Mutex<BTreeSet<String>>,
}

impl core::fmt::Debug for SoftTokenProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftTokenProvider")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl SoftTokenProvider {
    /// A provider over the store directory `store` (which need not exist yet).
    pub fn new(store: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.into(),
                events: Mutex::new(None),
                reported: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// A provider over [`store::default_store`].
    ///
    /// # Errors
    /// As [`store::default_store`].
    pub fn with_default_store() -> Result<Self> {
        Ok(Self::new(store::default_store()?))
    }

    /// The store directory.
    pub fn store(&self) -> &Path {
        &self.inner.store
    }

    /// Creates a token and, if the provider runs, reports its slot: the hub inserts it at once.
    ///
    /// # Errors
    /// As [`store::create_with`].
    pub fn create_token(&self, options: &CreateOptions) -> Result<TokenId> {
        let id = store::create_with(&self.inner.store, options)?;
        self.inner.report_added(&id)?;
        Ok(id)
    }

    /// Creates a token with default options (see [`CreateOptions::new`]).
    ///
    /// # Errors
    /// As [`store::create_with`].
    pub fn create(&self, label: &str, pin: &Pin, puk: &Pin) -> Result<TokenId> {
        self.create_token(&CreateOptions::new(label, pin.clone(), puk.clone()))
    }

    /// Removes the token's slot (the hub removes the token at once; open sessions then fail with
    /// `TokenNotFound`) and deletes its file, keys included.
    ///
    /// # Errors
    /// As [`store::delete`].
    pub fn delete_token(&self, id: &TokenId) -> Result<()> {
        let inner = &self.inner;
        let removed = inner.report_removed(id.instance());
        let result = store::delete(&inner.store, id);
        if result.is_err() && removed {
            // The file is still there (or never was): report the slot again if it exists.
            if store::token_path(&inner.store, id).is_ok_and(|p| p.exists()) {
                inner.report_added(id)?;
            }
        }
        result
    }

    /// Every token file in the store, with its public contents.
    ///
    /// # Errors
    /// As [`store::list`].
    pub fn list(&self) -> Result<Vec<StoredToken>> {
        store::list(&self.inner.store)
    }

    /// Reads the store directory again and reports tokens that other processes created or
    /// deleted since the last look, at once (the provider's own thread does the same within
    /// [`STORE_POLL_INTERVAL`]).
    ///
    /// # Errors
    /// `CommunicationError` when the directory cannot be read.
    pub fn rescan(&self) -> Result<()> {
        self.inner.rescan()
    }
}

impl Inner {
    fn rescan(&self) -> Result<()> {
        let found: BTreeSet<String> = store::token_files(&self.store)?
            .into_iter()
            .map(|(id, _)| id.instance().to_owned())
            .collect();
        let known = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for gone in known.difference(&found) {
            self.report_removed(gone);
        }
        for new in found.difference(&known) {
            self.report_added(&store::token_id_of_instance(new)?)?;
        }
        Ok(())
    }

    fn events(&self) -> Option<SlotEvents> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn report_added(&self, id: &TokenId) -> Result<()> {
        let Some(events) = self.events() else {
            return Ok(());
        };
        let config = store::persistent_config(&self.store, id)?;
        let newly = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(config.instance.clone());
        if newly {
            events.slot_added(Arc::new(SoftSlot {
                name: slot_name(&config.instance),
                config,
            }));
        }
        Ok(())
    }

    fn report_removed(&self, instance: &str) -> bool {
        let was = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance);
        if let (true, Some(events)) = (was, self.events()) {
            events.slot_removed(&slot_name(instance));
        }
        was
    }
}

fn slot_name(instance: &str) -> String {
    format!("{}:{instance}", store::DRIVER_ID)
}

impl SlotProvider for SoftTokenProvider {
    fn id(&self) -> &'static str {
        PROVIDER_ID
    }

    /// Reports every token file of the store before returning, so registered tokens are present
    /// from the hub's start.
    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
        let inner = &self.inner;
        *inner.events.lock().unwrap_or_else(PoisonError::into_inner) = Some(events);
        let seen = directory_stamp(&inner.store);
        inner.rescan()?;
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = Arc::clone(inner);
        std::thread::Builder::new()
            .name("tokenkit-soft-store".into())
            .spawn(move || watch_store(&watched, seen, &stopped))
            .map_err(|e| {
                token_core::Error::communication("cannot start the store watcher").with_source(e)
            })?;
        Ok(Box::new(StopOnDrop { _stop: stop }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Stops the store watcher when the hub stops the provider (the sender's drop wakes it).
struct StopOnDrop {
    _stop: mpsc::Sender<()>,
}

impl ProviderGuard for StopOnDrop {}

/// What changes when a file in the directory is created, renamed or deleted.
type Stamp = Option<(SystemTime, u64)>;

fn directory_stamp(dir: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.modified().ok()?, meta.ino()))
}

/// Rescans the store whenever its directory changed, until the provider stops.
fn watch_store(inner: &Inner, mut seen: Stamp, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(STORE_POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = directory_stamp(&inner.store);
        if now == seen {
            continue;
        }
        // Stamp first: a change during the rescan is seen at the next look.
        seen = now;
        if let Err(e) = inner.rescan() {
            tracing::debug!(error = %e, "rescanning the soft token store failed");
        }
    }
}
