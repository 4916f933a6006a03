//! Real FIDO HID devices through `hidapi` (its hidraw backend, linking only libudev), and the
//! `hid` slot provider that reports them.
//!
//! The provider enumerates when it starts and, with the `hotplug` feature, again after every
//! USB arrival or departure nusb reports (`hotplug.rs`); `reconcile` turns the last
//! enumeration and the new one into slots added and slots removed.

use std::any::Any;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use token_core::{
    async_trait, unblock, Device, Error, ProviderGuard, Result, Slot, SlotEvents, SlotKind,
    SlotProvider, SlotProviderRegistration, SlotState,
};

use crate::client::{CtapHidChannel, HidDevice};
use crate::codec::{Report, REPORT_LEN};

/// The FIDO Alliance's HID usage page (CTAP 2.1 §11.2.8.1).
pub const FIDO_USAGE_PAGE: u16 = 0xF1D0;
/// The CTAPHID usage on that page.
pub const FIDO_USAGE_CTAPHID: u16 = 0x01;

/// How long one read holds the device: a CANCEL written from another thread waits at most this.
const READ_SLICE: Duration = Duration::from_millis(50);

/// What enumeration tells about one FIDO HID device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HidDeviceInfo {
    /// The OS path (`/dev/hidrawN`).
    pub path: CString,
    /// USB vendor ID.
    pub vendor_id: u16,
    /// USB product ID.
    pub product_id: u16,
    /// The product string, where the device gives one.
    pub product: Option<String>,
    /// The serial number string, where the device gives one.
    pub serial: Option<String>,
}

fn hid_error(context: &'static str, e: hidapi::HidError) -> Error {
    Error::communication(format!("{context}: {e}"))
}

/// Lists the FIDO HID devices present now (usage page 0xF1D0, usage 1).
///
/// # Errors
/// `CommunicationError` when hidapi cannot start (no udev, say).
pub fn enumerate() -> Result<Vec<HidDeviceInfo>> {
    let api = hidapi::HidApi::new().map_err(|e| hid_error("starting hidapi", e))?;
    let mut out: Vec<HidDeviceInfo> = Vec::new();
    for d in api.device_list() {
        if d.usage_page() != FIDO_USAGE_PAGE || d.usage() != FIDO_USAGE_CTAPHID {
            continue;
        }
        if out.iter().any(|o| o.path.as_c_str() == d.path()) {
            continue;
        }
        out.push(HidDeviceInfo {
            path: d.path().to_owned(),
            vendor_id: d.vendor_id(),
            product_id: d.product_id(),
            product: d.product_string().map(str::to_owned),
            serial: d.serial_number().map(str::to_owned),
        });
    }
    Ok(out)
}

/// A real FIDO HID device opened through hidapi: a [`HidDevice`].
pub struct HidapiDevice {
    device: Mutex<hidapi::HidDevice>,
    path: CString,
}

impl HidapiDevice {
    /// Opens the device at `path` (from [`enumerate`]).
    ///
    /// # Errors
    /// `TokenNotFound` when it is gone, `CommunicationError` when it cannot be opened
    /// (permissions, say).
    pub fn open(path: &CStr) -> Result<Self> {
        let api = hidapi::HidApi::new().map_err(|e| hid_error("starting hidapi", e))?;
        let device = api.open_path(path).map_err(|e| {
            if path_gone(path) {
                Error::token_not_found("the FIDO HID device is gone")
            } else {
                hid_error("opening the FIDO HID device", e)
            }
        })?;
        Ok(Self {
            device: Mutex::new(device),
            path: path.to_owned(),
        })
    }

    /// An I/O error means the device was unplugged when its node is gone.
    fn io_error(&self, context: &'static str, e: hidapi::HidError) -> Error {
        if path_gone(&self.path) {
            Error::token_not_found("the FIDO HID device was unplugged")
        } else {
            hid_error(context, e)
        }
    }
}

fn path_gone(path: &CStr) -> bool {
    path.to_str().is_ok_and(|p| !Path::new(p).exists())
}

impl HidDevice for HidapiDevice {
    fn write(&self, report: &Report) -> Result<()> {
        // Report ID 0 in front: FIDO devices use unnumbered reports.
        let mut buf = [0u8; REPORT_LEN + 1];
        buf[1..].copy_from_slice(report);
        let dev = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        match dev.write(&buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(Error::communication("short write to the FIDO HID device")),
            Err(e) => Err(self.io_error("writing to the FIDO HID device", e)),
        }
    }

    fn read(&self, timeout: Duration) -> Result<Option<Report>> {
        // Read in short slices so that a CANCEL from another thread can take the device
        // between them (hidapi's device is not Sync).
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(READ_SLICE);
            let ms = i32::try_from(slice.as_millis()).unwrap_or(i32::MAX);
            let mut buf = [0u8; REPORT_LEN];
            let n = {
                let dev = self.device.lock().unwrap_or_else(PoisonError::into_inner);
                dev.read_timeout(&mut buf, ms)
                    .map_err(|e| self.io_error("reading from the FIDO HID device", e))?
            };
            if n > 0 {
                // A short report is padded with zeros, as the spec's reports are.
                return Ok(Some(buf));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}

/// One enumerated device as the provider tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) info: HidDeviceInfo,
    /// The kernel's name for the HID device behind the node (`0003:1050:0407.0012`): its last
    /// number is new for every attachment, so a node reused by another device (or the same
    /// one plugged in again) between two enumerations is told apart. `None` where sysfs does
    /// not say.
    pub(crate) instance: Option<String>,
}

impl Seen {
    fn of(info: HidDeviceInfo) -> Self {
        let instance = hid_instance(&info.path);
        Self { info, instance }
    }

    /// The same attachment of the same device (the node path is compared by the caller). An
    /// instance sysfs did not give on either side is taken to match: a device is not dropped
    /// and probed again because one read of sysfs failed.
    fn same_device(&self, other: &Self) -> bool {
        self.info.vendor_id == other.info.vendor_id
            && self.info.product_id == other.info.product_id
            && self.info.serial == other.info.serial
            && match (&self.instance, &other.instance) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// `/sys/class/hidraw/hidrawN/device` links to the HID device, named `BUS:VID:PID.INSTANCE`.
fn hid_instance(path: &CStr) -> Option<String> {
    let node = Path::new(path.to_str().ok()?).file_name()?;
    let link = std::fs::read_link(Path::new("/sys/class/hidraw").join(node).join("device")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// A slot's name: the product and the node, `YubiKey OTP+FIDO+CCID (/dev/hidraw3)`.
pub(crate) fn slot_name(info: &HidDeviceInfo) -> String {
    let product = info.product.as_deref().unwrap_or("FIDO device");
    format!("{product} ({})", info.path.to_string_lossy())
}

/// What to report after an enumeration: slots removed (reported first) and slots added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Names of the reported slots whose device is gone.
    pub(crate) removed: Vec<String>,
    /// New slots, named by [`slot_name`].
    pub(crate) added: Vec<(String, Seen)>,
}

impl Plan {
    /// Nothing to report.
    pub(crate) fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// The difference between the slots reported (`present`: name and device) and a new
/// enumeration (`found`). A device still at the same node, the same attachment by
/// [`Seen::same_device`], keeps its slot and its name, even if its product string reads
/// differently now; a device whose node is gone, or taken by another device, is removed; every
/// other device found is added. `found` may list a node twice; the first wins.
pub(crate) fn reconcile<'a>(
    present: impl IntoIterator<Item = (&'a str, &'a Seen)>,
    found: &[Seen],
) -> Plan {
    let present: Vec<(&str, &Seen)> = present.into_iter().collect();
    let mut unique: Vec<&Seen> = Vec::with_capacity(found.len());
    for f in found {
        if !unique.iter().any(|u| u.info.path == f.info.path) {
            unique.push(f);
        }
    }
    let kept =
        |seen: &Seen, other: &Seen| seen.info.path == other.info.path && seen.same_device(other);
    let mut plan = Plan::default();
    for (name, seen) in &present {
        if !unique.iter().any(|f| kept(seen, f)) {
            plan.removed.push((*name).to_owned());
        }
    }
    for f in unique {
        if !present.iter().any(|(_, seen)| kept(seen, f)) {
            plan.added.push((slot_name(&f.info), f.clone()));
        }
    }
    plan
}

/// One FIDO HID device as a slot.
struct HidSlot {
    name: String,
    seen: Seen,
    /// Set when the provider reports the slot removed.
    gone: AtomicBool,
}

#[async_trait]
impl Slot for HidSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SlotKind {
        SlotKind::Hid
    }

    fn state(&self) -> SlotState {
        if self.gone.load(Ordering::Acquire) || path_gone(&self.seen.info.path) {
            SlotState::Missing
        } else {
            SlotState::ValidCard
        }
    }

    async fn connect(&self) -> Result<Device> {
        if self.gone.load(Ordering::Acquire) {
            return Err(Error::token_not_found("the FIDO HID device was unplugged"));
        }
        let path = self.seen.info.path.clone();
        let channel = unblock(move || {
            let device = HidapiDevice::open(&path)?;
            CtapHidChannel::open(device)
        })
        .await?;
        Ok(Device::Ctap(Arc::new(channel)))
    }
}

/// The slots the provider has reported, and the events it reports changes through.
pub(crate) struct Tracker {
    events: SlotEvents,
    slots: Vec<Arc<HidSlot>>,
}

impl Tracker {
    fn new(events: SlotEvents) -> Self {
        Self {
            events,
            slots: Vec::new(),
        }
    }

    /// Reports what changed since the last enumeration: removals first, then additions.
    fn apply(&mut self, found: &[Seen]) {
        let plan = reconcile(self.slots.iter().map(|s| (s.name.as_str(), &s.seen)), found);
        if plan.is_empty() {
            return;
        }
        for name in &plan.removed {
            if let Some(i) = self.slots.iter().position(|s| &s.name == name) {
                let slot = self.slots.remove(i);
                slot.gone.store(true, Ordering::Release);
                tracing::debug!(target: "tokenkit::hid", slot = %name, "FIDO HID device left");
                self.events.slot_removed(name);
            }
        }
        for (name, seen) in plan.added {
            tracing::debug!(target: "tokenkit::hid", slot = %name, "FIDO HID device found");
            let slot = Arc::new(HidSlot {
                name,
                seen,
                gone: AtomicBool::new(false),
            });
            self.slots.push(slot.clone());
            self.events.slot_added(slot);
        }
    }

    /// Enumerates and reports the difference. Where hidapi cannot enumerate, nothing changes.
    fn rescan(&mut self) {
        match enumerate() {
            Ok(devices) => {
                tracing::trace!(target: "tokenkit::hid", found = devices.len(), "enumerated");
                let found: Vec<Seen> = devices.into_iter().map(Seen::of).collect();
                self.apply(&found);
            }
            Err(e) => tracing::debug!(target: "tokenkit::hid", "no HID enumeration: {e:?}"),
        }
    }
}

/// Whether the `hid` provider follows devices as they come and go
/// ([`HidSlotProvider::hotplug`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HotplugState {
    /// Not running: never started, or the hub that started it is gone (its watch thread, if it
    /// had one, has ended).
    Stopped,
    /// Running with a hot-plug watch: devices plugged in or out are reported as they come and
    /// go.
    Watching,
    /// Running without one (feature `hotplug` off, or nusb's watch could not start: no netlink
    /// socket for udev's events, as in some containers): devices present at start only.
    StartOnly,
}

impl HotplugState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Watching,
            2 => Self::StartOnly,
            _ => Self::Stopped,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Stopped => 0,
            Self::Watching => 1,
            Self::StartOnly => 2,
        }
    }
}

/// Sets the state back to [`HotplugState::Stopped`] when a provider without a watch stops.
struct StartOnlyGuard(Arc<AtomicU8>);

impl ProviderGuard for StartOnlyGuard {}

impl Drop for StartOnlyGuard {
    fn drop(&mut self) {
        self.0
            .store(HotplugState::Stopped.as_u8(), Ordering::Release);
    }
}

/// The `hid` slot provider: every FIDO HID device (usage page 0xF1D0) as a [`SlotKind::Hid`]
/// slot yielding [`Device::Ctap`], named after its product and node
/// (`YubiKey OTP+FIDO+CCID (/dev/hidraw3)`).
///
/// It enumerates when the hub starts. With the `hotplug` feature (on by default) it also
/// follows USB arrivals and departures through nusb's watch (udev's netlink events; nusb wakes
/// it from its own epoll thread) on a thread of its own, and enumerates again 300 ms after the
/// first event of a burst and 2 s after the last (hidraw nodes appear a little after their USB
/// device): devices found are added as slots, devices gone are removed (their tokens go, and
/// their sessions fail with `TokenNotFound`); a device still at its node keeps its slot and
/// name. Dropping the hub stops the thread and waits for it. Where the watch cannot start (no
/// netlink socket for udev's events, as in some sandboxes) it says so once at debug level and
/// runs on with the devices found at start; where hidapi cannot enumerate (no udev) it finds
/// nothing and says so at debug level. It never fails the hub, and
/// [`HidSlotProvider::hotplug`] tells which way it runs. Real hot-plug is not exercised by the
/// workspace's tests (the build machines have no USB); the reconciliation and the debounced
/// watch loop are.
#[derive(Debug, Default)]
pub struct HidSlotProvider {
    hotplug: Arc<AtomicU8>,
}

impl HidSlotProvider {
    /// A provider, not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it is running, and with a hot-plug watch or without.
    pub fn hotplug(&self) -> HotplugState {
        HotplugState::from_u8(self.hotplug.load(Ordering::Acquire))
    }

    fn set(&self, state: HotplugState) {
        self.hotplug.store(state.as_u8(), Ordering::Release);
    }

    /// Reports the devices present now, then follows `watch` (a stream of USB events) on a
    /// thread of its own; without a watch, or without the thread, it runs on with what it found.
    #[cfg(feature = "hotplug")]
    fn start_with<S>(&self, events: SlotEvents, watch: Option<S>) -> Box<dyn ProviderGuard>
    where
        S: futures_core::Stream + Unpin + Send + 'static,
        S::Item: std::fmt::Debug,
    {
        let mut tracker = Tracker::new(events);
        tracker.rescan();
        let Some(watch) = watch else {
            return self.without_watch();
        };
        self.set(HotplugState::Watching);
        let state = self.hotplug.clone();
        match crate::hotplug::spawn(
            watch,
            crate::hotplug::Delays::DEFAULT,
            move || tracker.rescan(),
            move || state.store(HotplugState::Stopped.as_u8(), Ordering::Release),
        ) {
            Ok(guard) => Box::new(guard),
            Err(e) => {
                tracing::debug!(
                    target: "tokenkit::hid",
                    error = %e,
                    "no USB hot-plug thread; FIDO HID devices are found when the hub starts only"
                );
                self.without_watch()
            }
        }
    }

    fn without_watch(&self) -> Box<dyn ProviderGuard> {
        self.set(HotplugState::StartOnly);
        Box::new(StartOnlyGuard(self.hotplug.clone()))
    }
}

impl SlotProvider for HidSlotProvider {
    fn id(&self) -> &'static str {
        "hid"
    }

    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
        // The watch first, so that a device arriving during the first enumeration is not missed.
        #[cfg(feature = "hotplug")]
        {
            Ok(self.start_with(events, crate::hotplug::watch()))
        }
        #[cfg(not(feature = "hotplug"))]
        {
            Tracker::new(events).rescan();
            Ok(self.without_watch())
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

token_core::register_slot_provider!(SlotProviderRegistration::new("hid", || Ok(Arc::new(
    HidSlotProvider::new()
))));

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // There is no USB here: enumeration finds nothing (or fails), and the provider still starts.
    #[test]
    fn enumeration_never_panics() {
        match enumerate() {
            Ok(devices) => {
                for d in devices {
                    assert!(!d.path.as_bytes().is_empty());
                }
            }
            Err(e) => assert_eq!(e.code(), token_core::ErrorCode::CommunicationError),
        }
    }

    #[test]
    fn the_provider_is_registered() {
        assert!(token_core::registered_slot_providers()
            .iter()
            .any(|r| r.id == "hid"));
    }

    #[test]
    fn a_hub_starts_with_the_provider() {
        let hub = token_core::Hub::builder()
            .registered(false)
            .provider(Arc::new(HidSlotProvider::new()))
            .start()
            .unwrap_or_else(|e| panic!("hub: {e:?}"));
        hub.settle();
        assert!(hub.provider("hid").is_some());
        // No USB on a build machine; where there is, every slot is a HID slot.
        for slot in hub.slot_manager().slots() {
            assert_eq!(slot.kind, SlotKind::Hid, "{slot:?}");
        }
    }

    fn dev(node: u8, vendor_id: u16, serial: Option<&str>, instance: Option<u32>) -> Seen {
        Seen {
            info: HidDeviceInfo {
                path: CString::new(format!("/dev/hidraw{node}")).unwrap_or_default(),
                vendor_id,
                product_id: 0x0407,
                product: Some(format!("Key {vendor_id:04x}")),
                serial: serial.map(str::to_owned),
            },
            instance: instance.map(|i| format!("0003:{vendor_id:04X}:0407.{i:04X}")),
        }
    }

    /// The reported set after a plan, as the tracker keeps it.
    fn applied(present: &[(String, Seen)], plan: &Plan) -> Vec<(String, Seen)> {
        let mut out: Vec<(String, Seen)> = present
            .iter()
            .filter(|(n, _)| !plan.removed.contains(n))
            .cloned()
            .collect();
        out.extend(plan.added.iter().cloned());
        out
    }

    fn view(present: &[(String, Seen)]) -> impl Iterator<Item = (&str, &Seen)> {
        present.iter().map(|(n, s)| (n.as_str(), s))
    }

    #[test]
    fn a_first_enumeration_adds_everything_once() {
        let a = dev(0, 0x1050, Some("1"), Some(1));
        let b = dev(3, 0x20a0, None, None);
        let plan = reconcile(view(&[]), &[a.clone(), b.clone(), a.clone()]);
        assert!(plan.removed.is_empty());
        assert_eq!(
            plan.added,
            vec![
                ("Key 1050 (/dev/hidraw0)".to_owned(), a),
                ("Key 20a0 (/dev/hidraw3)".to_owned(), b),
            ]
        );
        assert!(reconcile(view(&[]), &[]).is_empty());
    }

    #[test]
    fn arrivals_departures_and_a_reused_node() {
        let a = dev(0, 0x1050, Some("1"), Some(1));
        let b = dev(1, 0x20a0, None, Some(2));
        let present = applied(&[], &reconcile(view(&[]), &[a.clone(), b.clone()]));
        // Nothing changed: nothing to report.
        assert!(reconcile(view(&present), &[b.clone(), a.clone()]).is_empty());
        // `b` left, `c` came.
        let c = dev(2, 0x1050, Some("2"), Some(3));
        let plan = reconcile(view(&present), &[a.clone(), c.clone()]);
        assert_eq!(plan.removed, vec!["Key 20a0 (/dev/hidraw1)".to_owned()]);
        assert_eq!(plan.added, vec![("Key 1050 (/dev/hidraw2)".to_owned(), c)]);
        // `a` was unplugged and plugged in again between two enumerations, at the same node:
        // a new attachment (new kernel instance) is a new slot, even under the same name.
        let a2 = dev(0, 0x1050, Some("1"), Some(9));
        let plan = reconcile(view(&present), &[a2.clone(), b.clone()]);
        assert_eq!(plan.removed, vec!["Key 1050 (/dev/hidraw0)".to_owned()]);
        assert_eq!(plan.added, vec![("Key 1050 (/dev/hidraw0)".to_owned(), a2)]);
        // Another device took `b`'s node.
        let other = dev(1, 0x096e, None, None);
        let plan = reconcile(view(&present), &[a.clone(), other.clone()]);
        assert_eq!(plan.removed, vec!["Key 20a0 (/dev/hidraw1)".to_owned()]);
        assert_eq!(
            plan.added,
            vec![("Key 096e (/dev/hidraw1)".to_owned(), other)]
        );
    }

    #[test]
    fn a_device_at_its_node_keeps_its_name() {
        let a = dev(0, 0x1050, Some("1"), Some(1));
        let present = vec![("the name it was given".to_owned(), a.clone())];
        let mut renamed = a.clone();
        renamed.info.product = Some("a product string read differently".into());
        assert!(reconcile(view(&present), &[renamed]).is_empty());
        // Nor does a failed read of its sysfs instance make it a new device.
        let mut unread = a;
        unread.instance = None;
        assert!(reconcile(view(&present), &[unread]).is_empty());
    }

    fn arb_seen() -> impl Strategy<Value = Seen> {
        (
            0u8..5,
            prop_oneof![Just(0x1050u16), Just(0x20a0)],
            prop_oneof![Just(None), Just(Some("s1")), Just(Some("s2"))],
            proptest::option::of(0u32..3),
        )
            .prop_map(|(node, vid, serial, instance)| dev(node, vid, serial, instance))
    }

    proptest! {
        #[test]
        fn reconciliation_brings_the_slots_to_the_enumeration(
            first in proptest::collection::vec(arb_seen(), 0..6),
            second in proptest::collection::vec(arb_seen(), 0..6),
        ) {
            let present = applied(&[], &reconcile(view(&[]), &first));
            let plan = reconcile(view(&present), &second);
            // Only reported slots are removed, each once.
            for (i, name) in plan.removed.iter().enumerate() {
                prop_assert!(present.iter().any(|(n, _)| n == name));
                prop_assert!(!plan.removed[..i].contains(name));
            }
            let after = applied(&present, &plan);
            // One slot per node found, holding the device found there first.
            let mut nodes: Vec<&CString> = Vec::new();
            for s in &second {
                if !nodes.contains(&&s.info.path) {
                    nodes.push(&s.info.path);
                    let first_there = s;
                    let slots: Vec<&(String, Seen)> =
                        after.iter().filter(|(_, x)| x.info.path == s.info.path).collect();
                    prop_assert_eq!(slots.len(), 1);
                    prop_assert!(slots[0].1.same_device(first_there));
                }
            }
            prop_assert_eq!(after.len(), nodes.len());
            // Names are unique, and a slot kept keeps its name and is not reported again.
            for (i, (name, _)) in after.iter().enumerate() {
                prop_assert!(after[..i].iter().all(|(n, _)| n != name));
            }
            for (name, seen) in &present {
                if !plan.removed.contains(name) {
                    prop_assert!(after.iter().any(|(n, s)| n == name && s == seen));
                    prop_assert!(!plan.added.iter().any(|(_, s)| s.info.path == seen.info.path));
                }
            }
            // Applied, the plan leaves nothing to do.
            prop_assert!(reconcile(view(&after), &second).is_empty());
        }
    }

    /// A provider whose tracker the test feeds enumerations by hand, through a real hub.
    #[derive(Default)]
    struct Scripted(Arc<Mutex<Option<Tracker>>>);

    impl SlotProvider for Scripted {
        fn id(&self) -> &'static str {
            "scripted-hid"
        }
        fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Tracker::new(events));
            Ok(Box::new(()))
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn the_tracker_adds_and_removes_slots_in_a_hub() {
        let provider = Arc::new(Scripted::default());
        let tracker = provider.0.clone();
        let hub = token_core::Hub::builder()
            .registered(false)
            .provider(provider)
            .start()
            .unwrap_or_else(|e| panic!("hub: {e:?}"));
        let feed = |found: &[Seen]| {
            tracker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .unwrap_or_else(|| panic!("not started"))
                .apply(found);
            hub.settle();
            let mut names: Vec<String> = hub
                .slot_manager()
                .slots()
                .into_iter()
                .map(|s| s.name)
                .collect();
            names.sort();
            names
        };
        let a = dev(0, 0x1050, Some("1"), Some(1));
        let b = dev(1, 0x20a0, None, Some(2));
        assert_eq!(
            feed(&[a.clone(), b.clone()]),
            ["Key 1050 (/dev/hidraw0)", "Key 20a0 (/dev/hidraw1)"]
        );
        assert_eq!(feed(std::slice::from_ref(&b)), ["Key 20a0 (/dev/hidraw1)"]);
        assert_eq!(
            feed(&[b.clone(), a.clone()]),
            ["Key 1050 (/dev/hidraw0)", "Key 20a0 (/dev/hidraw1)"]
        );
        assert_eq!(feed(&[]), Vec::<String>::new());
    }

    #[test]
    fn a_removed_slot_is_missing_and_cannot_connect() {
        let slot = HidSlot {
            name: "k".into(),
            seen: dev(0, 0x1050, None, None),
            gone: AtomicBool::new(true),
        };
        assert_eq!(slot.state(), SlotState::Missing);
        let e = token_core::block_on(slot.connect()).map(drop).unwrap_err();
        assert_eq!(e.code(), token_core::ErrorCode::TokenNotFound);
    }

    // No USB here: the watch either starts (a netlink socket needs no USB) and waits, or cannot
    // start and the provider runs on without it. Either way the hub's drop stops it, and with
    // a watch, `Stopped` is set by the watch thread itself as it ends.
    #[test]
    fn the_provider_starts_and_stops_cleanly_without_usb() {
        for _ in 0..3 {
            let provider = Arc::new(HidSlotProvider::new());
            assert_eq!(provider.hotplug(), HotplugState::Stopped);
            let hub = token_core::Hub::builder()
                .registered(false)
                .provider(provider.clone())
                .start()
                .unwrap_or_else(|e| panic!("hub: {e:?}"));
            let running = provider.hotplug();
            if cfg!(feature = "hotplug") {
                assert!(
                    matches!(running, HotplugState::Watching | HotplugState::StartOnly),
                    "{running:?}"
                );
            } else {
                assert_eq!(running, HotplugState::StartOnly);
            }
            eprintln!("hid provider: {running:?}");
            drop(hub);
            assert_eq!(provider.hotplug(), HotplugState::Stopped);
        }
    }

    /// The `hid` provider started as where nusb's watch cannot start.
    #[cfg(feature = "hotplug")]
    #[derive(Default)]
    struct NoWatch(HidSlotProvider);

    #[cfg(feature = "hotplug")]
    impl SlotProvider for NoWatch {
        fn id(&self) -> &'static str {
            "hid"
        }
        fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
            Ok(self
                .0
                .start_with(events, None::<nusb::hotplug::HotplugWatch>))
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[cfg(feature = "hotplug")]
    #[test]
    fn without_a_watch_the_provider_runs_on_what_it_found_at_start() {
        let provider = Arc::new(NoWatch::default());
        let hub = token_core::Hub::builder()
            .registered(false)
            .provider(provider.clone())
            .start()
            .unwrap_or_else(|e| panic!("hub: {e:?}"));
        assert_eq!(provider.0.hotplug(), HotplugState::StartOnly);
        for slot in hub.slot_manager().slots() {
            assert_eq!(slot.kind, SlotKind::Hid, "{slot:?}");
        }
        drop(hub);
        assert_eq!(provider.0.hotplug(), HotplugState::Stopped);
    }

    #[test]
    fn opening_a_missing_path_is_token_not_found() {
        let path = CString::new("/dev/hidraw-does-not-exist").unwrap_or_default();
        let e = HidapiDevice::open(&path).map(drop).unwrap_err();
        assert_eq!(e.code(), token_core::ErrorCode::TokenNotFound);
    }
}
