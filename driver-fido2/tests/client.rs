//! The CTAP2 client and `Fido2Session` operations against the simulator: PIN management,
//! several assertions, credential management, large blobs in several fragments (over HID and
//! over NFC APDUs), configuration, reset, selection, and the mapping of CTAP errors.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use driver_fido2::apdu::ApduCtapChannel;
use driver_fido2::cbor::{self, Value};
use driver_fido2::client::{GetAssertionRequest, MakeCredentialRequest, RelyingParty, User};
use driver_fido2::session::Fido2Session;
use driver_fido2::sim::{Authenticator, SimConfig, SimTransport};
use token_core::testkit::MemoryCard;
use token_core::{
    block_on, ChannelCaps, CtapChannel, ErrorCode, Pin, PinRequest, SmartCard, Underlying,
};
use transport_hid::sim::PresencePolicy;
use transport_hid::CtapHidChannel;

const PIN: &str = "123456";

fn authenticator(pin: Option<&str>) -> Authenticator {
    Authenticator::new(SimConfig {
        pin: pin.map(str::to_owned),
        reset_window: None,
        ..SimConfig::default()
    })
    .unwrap()
}

fn session(auth: &Authenticator, pin: &'static str) -> Fido2Session {
    let mut s = common::hid_session(auth);
    s.set_key_collector(Arc::new(move |_: &PinRequest| Some(Pin::from(pin))));
    s
}

fn nfc_session(auth: &Authenticator, caps: ChannelCaps) -> Fido2Session {
    let card = SmartCard::new(Arc::new(
        MemoryCard::new(Box::new(auth.card())).with_caps(caps),
    ));
    let channel: Arc<dyn CtapChannel> = Arc::new(ApduCtapChannel::new(card));
    let mut s = block_on(Fido2Session::connect(channel)).unwrap();
    s.set_key_collector(Arc::new(|_: &PinRequest| Some(Pin::from(PIN))));
    s
}

fn make(s: &mut Fido2Session, rp: &str, user: &str) -> Vec<u8> {
    let made = common::make_resident(s, rp, user);
    assert_eq!(made.fmt, "packed");
    assert!(made.public_key().unwrap().public_key.is_some());
    made.credential_id().unwrap().to_vec()
}

#[test]
fn set_pin_then_change_pin_with_a_wrong_and_the_right_current_pin() {
    let auth = authenticator(None);
    let mut s = session(&auth, PIN);
    assert!(!s.info().pin_is_set());
    block_on(s.set_pin(&Pin::from(PIN))).unwrap();
    assert!(s.info().pin_is_set());
    assert!(auth.pin_is_set());
    let e = block_on(s.change_pin(&Pin::from("654321"), &Pin::from("24682468"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(7));
    assert_eq!(e.underlying(), &Underlying::Ctap(0x31));
    block_on(s.change_pin(&Pin::from(PIN), &Pin::from("24682468"))).unwrap();
    assert_eq!(block_on(s.pin_retries()).unwrap().retries, 8);
    // The old PIN no longer gives a token.
    let e = block_on(s.add_permissions(
        driver_fido2::ctap::Permissions::GET_ASSERTION,
        Some("x.example"),
    ))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    let e = block_on(s.set_pin(&Pin::from("123"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter);
}

#[test]
fn three_wrong_pins_in_a_row_block_until_a_power_cycle() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, "000000");
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            block_on(s.add_permissions(
                driver_fido2::ctap::Permissions::GET_ASSERTION,
                Some("a.example"),
            ))
            .unwrap_err(),
        );
    }
    let e = block_on(s.add_permissions(
        driver_fido2::ctap::Permissions::GET_ASSERTION,
        Some("a.example"),
    ))
    .unwrap_err();
    assert!(last.unwrap().code() == ErrorCode::AuthenticationFailed);
    assert_eq!(e.underlying(), &Underlying::Ctap(0x34));
    assert!(e.is_blocked());
}

#[test]
fn several_credentials_give_several_assertions_through_get_next_assertion() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, PIN);
    make(&mut s, "example.com", "alice");
    make(&mut s, "example.com", "bob");
    let assertions = block_on(s.get_assertions(&GetAssertionRequest {
        rp_id: "example.com".into(),
        client_data_hash: vec![2; 32],
        ..Default::default()
    }))
    .unwrap();
    let users: Vec<Option<String>> = assertions
        .iter()
        .map(|a| a.user.as_ref().and_then(|u| u.name.clone()))
        .collect();
    assert_eq!(users.len(), 2);
    assert_eq!(assertions[0].number_of_credentials, Some(2));
    assert!(users.contains(&Some("alice".into())) && users.contains(&Some("bob".into())));
    let e = block_on(s.get_assertion(&GetAssertionRequest {
        rp_id: "nobody.example".into(),
        client_data_hash: vec![2; 32],
        ..Default::default()
    }))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound);
    assert_eq!(e.underlying(), &Underlying::Ctap(0x2E));
}

#[test]
fn credential_management_lists_updates_and_deletes() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, PIN);
    let alice = make(&mut s, "example.com", "alice");
    make(&mut s, "example.org", "bob");
    let metadata = block_on(s.credential_metadata()).unwrap();
    assert_eq!(metadata.existing, 2);
    let mut rps: Vec<String> = block_on(s.enumerate_rps())
        .unwrap()
        .into_iter()
        .map(|r| r.rp.id)
        .collect();
    rps.sort();
    assert_eq!(rps, ["example.com", "example.org"]);
    let creds = block_on(s.enumerate_credentials("example.com")).unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].credential_id, alice);
    let renamed = User {
        id: b"alice".to_vec(),
        name: Some("alice@work".into()),
        display_name: Some("Alice W.".into()),
    };
    block_on(s.update_user_information(&alice, &renamed, Some("example.com"))).unwrap();
    let creds = block_on(s.enumerate_credentials("example.com")).unwrap();
    assert_eq!(creds[0].user.name.as_deref(), Some("alice@work"));
    block_on(s.delete_credential(&alice, Some("example.com"))).unwrap();
    assert_eq!(auth.credential_count(), 1);
    assert!(block_on(s.enumerate_credentials("example.com"))
        .unwrap()
        .is_empty());
}

fn blob_array(len: usize) -> Vec<u8> {
    let entry = Value::Bytes((0..len).map(|i| (i * 7) as u8).collect());
    cbor::encode(&Value::Array(vec![entry]))
}

#[test]
fn large_blob_array_round_trips_in_several_fragments_over_hid() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, PIN);
    assert_eq!(block_on(s.read_large_blob_array()).unwrap(), vec![0x80]);
    let array = blob_array(3000);
    block_on(s.write_large_blob_array(&array)).unwrap();
    let writes = auth
        .log()
        .into_iter()
        .filter(|l| l.command == 0x0C && l.status == 0)
        .count();
    assert!(
        writes >= 3,
        "3016 bytes in fragments of at most 1136: {writes}"
    );
    assert_eq!(block_on(s.read_large_blob_array()).unwrap(), array);
    let too_big = blob_array(5000);
    assert_eq!(
        block_on(s.write_large_blob_array(&too_big))
            .unwrap_err()
            .code(),
        ErrorCode::BadParameter
    );
}

#[test]
fn large_blob_array_round_trips_over_nfc_with_chaining_and_with_extended_length() {
    for caps in [
        ChannelCaps::default(),
        ChannelCaps {
            extended_length: true,
            max_command: 65_544,
            max_response: 65_538,
        },
    ] {
        let auth = Authenticator::new(SimConfig {
            pin: Some(PIN.into()),
            transport: SimTransport::Nfc,
            ..SimConfig::default()
        })
        .unwrap();
        let mut s = nfc_session(&auth, caps);
        let array = blob_array(2000);
        block_on(s.write_large_blob_array(&array)).unwrap();
        assert_eq!(
            block_on(s.read_large_blob_array()).unwrap(),
            array,
            "{caps:?}"
        );
    }
}

#[test]
fn configuration_toggles_always_uv_and_sets_the_minimum_pin_length() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, PIN);
    let before = s.info().option("alwaysUv");
    block_on(s.toggle_always_uv()).unwrap();
    assert_ne!(s.info().option("alwaysUv"), before);
    block_on(s.set_min_pin_length(Some(8), &[], false)).unwrap();
    assert_eq!(s.info().min_pin_length, Some(8));
}

#[test]
fn reset_erases_credentials_and_the_pin() {
    let auth = authenticator(Some(PIN));
    let mut s = session(&auth, PIN);
    make(&mut s, "example.com", "alice");
    block_on(s.reset()).unwrap();
    assert_eq!(auth.credential_count(), 0);
    assert!(!s.info().pin_is_set());
    assert!(s.auth_token().is_none());
    block_on(s.selection()).unwrap();
}

#[test]
fn without_a_pin_assertions_need_no_token_and_credential_management_refuses() {
    let auth = authenticator(None);
    let mut s = session(&auth, PIN);
    make(&mut s, "example.com", "alice");
    block_on(s.get_assertion(&GetAssertionRequest {
        rp_id: "example.com".into(),
        client_data_hash: vec![2; 32],
        ..Default::default()
    }))
    .unwrap();
    assert!(s.auth_token().is_none());
    assert!(block_on(s.credential_metadata()).is_err());
}

#[test]
fn a_canceled_touch_is_canceled_by_user() {
    let auth = authenticator(None);
    let (device, control) = common::hid_device(&auth);
    let channel = CtapHidChannel::open(device).unwrap();
    let canceller = channel.clone();
    let mut s = block_on(Fido2Session::connect(Arc::new(channel))).unwrap();
    control.set_presence(PresencePolicy::WaitForPress);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceller.cancel().unwrap();
    });
    let request = MakeCredentialRequest {
        client_data_hash: vec![1; 32],
        rp: RelyingParty {
            id: "example.com".into(),
            name: None,
        },
        user: User {
            id: vec![1],
            name: None,
            display_name: None,
        },
        ..Default::default()
    };
    let e = block_on(s.make_credential(&request)).unwrap_err();
    t.join().unwrap();
    assert_eq!(e.code(), ErrorCode::CanceledByUser);
    assert_eq!(e.underlying(), &Underlying::Ctap(0x2D));
}
