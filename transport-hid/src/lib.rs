//! # transport-hid
//!
//! CTAPHID for tokenkit: the framing FIDO authenticators speak over USB HID (CTAP 2.1 §11.2),
//! as a [`token_core::CtapChannel`] that drivers (driver-fido2) use without knowing about
//! reports, channels or keep-alives.
//!
//! - The **codec** ([`fragment`], [`Reassembler`], [`InitPacket`], [`ContPacket`]) turns
//!   messages of up to 7609 bytes into 64-byte reports and back, checking every framing rule;
//!   it is total (arbitrary reports give an error, never a panic). Commands, error codes,
//!   capability flags and keep-alive statuses are named newtypes ([`Cmd`], [`HidErrorCode`],
//!   [`Capabilities`], [`KeepaliveStatus`]).
//! - The **client** ([`CtapHidChannel`]) runs over any [`HidDevice`] (anything that writes
//!   and reads one report): INIT with a random nonce on the broadcast channel, then
//!   transactions with keep-alives reported to an observer, CANCEL from another thread,
//!   PING / WINK / LOCK, and errors mapped onto tokenkit's codes (CTAPHID error codes kept as
//!   [`token_core::Underlying::CtapHid`]). Every wait is bounded ([`HidOptions`]).
//! - The **simulator** ([`sim::SimHidDevice`]) is a [`HidDevice`] whose reports reach the
//!   authenticator side of CTAPHID, with the CTAP2 logic behind a [`sim::CtapHandler`] and
//!   fault injection ([`sim::Fault`]) for tests.
//! - **UDP** ([`UdpHidDevice`], [`UdpBridge`]): one report per datagram on loopback, the link
//!   software authenticator simulators offer, in both directions.
//! - **Real devices** (feature `hidapi`, on by default): [`HidapiDevice`] over hidapi's hidraw
//!   backend, [`enumerate`] for usage page 0xF1D0, and the `hid` slot provider
//!   ([`HidSlotProvider`]) that reports each device as a [`token_core::SlotKind::Hid`] slot
//!   yielding [`token_core::Device::Ctap`]. Devices are found when the hub starts and, with
//!   the feature `hotplug` (on by default), as they are plugged in and out: nusb's USB watch
//!   (pure Rust on Linux, udev's netlink events) on the provider's own thread makes it
//!   enumerate again, debounced, and report the slots added and removed; a device keeps its
//!   slot name while it stays at its node. Where the watch cannot start (no netlink socket for
//!   udev's events, as in some containers) the provider logs it once at debug level and
//!   keeps the devices found at start; [`HidSlotProvider::hotplug`] says which it is doing.
//!   The reconciliation and the debounced watch loop are tested without hardware; real
//!   hot-plug is not tested by the workspace's tests (the build machines have no USB).
//!
//! ```
//! use token_core::{block_on, CtapChannel};
//! use transport_hid::sim::{EchoHandler, SimHidDevice};
//! use transport_hid::{Capabilities, CtapHidChannel};
//!
//! let (device, _control) = SimHidDevice::new(EchoHandler::default());
//! let channel = CtapHidChannel::open(device)?;
//! assert!(Capabilities(channel.capabilities()).contains(Capabilities::CBOR));
//! block_on(channel.ping(b"hello"))?;
//! // CBOR (0x90) through the trait drivers use; the echo handler answers the request itself.
//! assert_eq!(block_on(channel.transact(0x90, &[0x04]))?, vec![0x04]);
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Next: `sim` for testing a CTAP handler over real framing; driver-fido2 for CTAP2 itself.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod client;
mod codec;
#[cfg(feature = "hidapi")]
mod hidraw;
#[cfg(feature = "hotplug")]
mod hotplug;
pub mod sim;
mod udp;

#[cfg(feature = "hidapi")]
pub use hidraw::{
    enumerate, HidDeviceInfo, HidSlotProvider, HidapiDevice, HotplugState, FIDO_USAGE_CTAPHID,
    FIDO_USAGE_PAGE,
};

pub use client::{CtapHidChannel, DeviceInfo, HidDevice, HidOptions};
pub use codec::{
    fragment, Capabilities, Cid, Cmd, ContPacket, FrameError, HidErrorCode, InitPacket,
    KeepaliveStatus, Message, Packet, Reassembler, Report, Step, CONT_DATA_LEN, INIT_DATA_LEN,
    MAX_PAYLOAD, MAX_SEQ, REPORT_LEN,
};
pub use udp::{UdpBridge, UdpHidDevice};
