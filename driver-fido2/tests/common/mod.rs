//! What the integration tests share: the simulator behind real CTAPHID framing.
#![allow(dead_code, clippy::unwrap_used)]

use driver_fido2::sim::Authenticator;
use transport_hid::sim::{SimControl, SimHidDevice};
use transport_hid::CtapHidChannel;

/// A simulated HID device (transport-hid's CTAPHID framing) serving `auth`, and its control.
pub fn hid_device(auth: &Authenticator) -> (SimHidDevice, SimControl) {
    SimHidDevice::new(auth.handler())
}

/// A CTAPHID channel to a new simulated HID device of `auth` (the user touches at once).
pub fn hid_channel(auth: &Authenticator) -> CtapHidChannel<SimHidDevice> {
    CtapHidChannel::open(hid_device(auth).0).unwrap()
}
