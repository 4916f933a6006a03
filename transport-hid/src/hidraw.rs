//! Real FIDO HID devices through `hidapi` (its hidraw backend, linking only libudev), and the
//! `hid` slot provider that reports them.
//!
//! Devices are found once, when the provider starts: there is no hot-plug yet, so a device
//! plugged in later is seen only by the next hub.

use std::any::Any;
use std::ffi::{CStr, CString};
use std::path::Path;
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

/// One FIDO HID device as a slot.
struct HidSlot {
    name: String,
    info: HidDeviceInfo,
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
        if path_gone(&self.info.path) {
            SlotState::Missing
        } else {
            SlotState::ValidCard
        }
    }

    async fn connect(&self) -> Result<Device> {
        let path = self.info.path.clone();
        let channel = unblock(move || {
            let device = HidapiDevice::open(&path)?;
            CtapHidChannel::open(device)
        })
        .await?;
        Ok(Device::Ctap(Arc::new(channel)))
    }
}

/// The `hid` slot provider: every FIDO HID device present when the hub starts, as a
/// [`SlotKind::Hid`] slot yielding [`Device::Ctap`]. Where hidapi cannot start or finds
/// nothing (no USB, no udev), it reports no slots and never fails the hub.
#[derive(Debug, Default)]
pub struct HidSlotProvider;

impl SlotProvider for HidSlotProvider {
    fn id(&self) -> &'static str {
        "hid"
    }

    fn start(&self, events: SlotEvents) -> Result<Box<dyn ProviderGuard>> {
        let devices = match enumerate() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(target: "tokenkit::hid", "no HID enumeration: {e:?}");
                Vec::new()
            }
        };
        for info in devices {
            let product = info.product.clone().unwrap_or_else(|| "FIDO device".into());
            let name = format!("{product} ({})", info.path.to_string_lossy());
            events.slot_added(Arc::new(HidSlot { name, info }));
        }
        Ok(Box::new(()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

token_core::register_slot_provider!(SlotProviderRegistration::new("hid", || Ok(Arc::new(
    HidSlotProvider
))));

#[cfg(test)]
mod tests {
    use super::*;

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
            .provider(Arc::new(HidSlotProvider))
            .start()
            .unwrap_or_else(|e| panic!("hub: {e:?}"));
        hub.settle();
        assert!(hub.provider("hid").is_some());
        // No USB on a build machine; where there is, every slot is a HID slot.
        for slot in hub.slot_manager().slots() {
            assert_eq!(slot.kind, SlotKind::Hid, "{slot:?}");
        }
    }

    #[test]
    fn opening_a_missing_path_is_token_not_found() {
        let path = CString::new("/dev/hidraw-does-not-exist").unwrap_or_default();
        let e = HidapiDevice::open(&path).map(drop).unwrap_err();
        assert_eq!(e.code(), token_core::ErrorCode::TokenNotFound);
    }
}
