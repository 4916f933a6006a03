//! What the integration tests share: the simulator behind real CTAPHID framing, sessions over
//! it, and the discoverable credentials the tests make.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use driver_fido2::client::{MakeCredentialRequest, MakeCredentialResponse, RelyingParty, User};
use driver_fido2::session::Fido2Session;
use driver_fido2::sim::Authenticator;
use token_core::{block_on, CtapChannel};
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

/// A session (no key collector yet) over a new simulated HID device of `auth`.
pub fn hid_session(auth: &Authenticator) -> Fido2Session {
    let channel: Arc<dyn CtapChannel> = Arc::new(hid_channel(auth));
    block_on(Fido2Session::connect(channel)).unwrap()
}

/// The request for a discoverable credential of `user` (also its user ID) at `rp`.
pub fn resident_request(rp: &str, user: &str) -> MakeCredentialRequest {
    MakeCredentialRequest {
        client_data_hash: vec![1; 32],
        rp: RelyingParty {
            id: rp.into(),
            name: None,
        },
        user: User {
            id: user.as_bytes().to_vec(),
            name: Some(user.into()),
            display_name: None,
        },
        resident_key: true,
        ..Default::default()
    }
}

/// Makes the discoverable credential of [`resident_request`] through `s`.
pub fn make_resident(s: &mut Fido2Session, rp: &str, user: &str) -> MakeCredentialResponse {
    block_on(s.make_credential(&resident_request(rp, user))).unwrap()
}
