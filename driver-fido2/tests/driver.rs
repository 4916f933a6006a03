//! The FIDO2 driver as a tokenkit token, against the simulator: over CTAPHID and over
//! NFC/CCID APDUs, alone and beside another application on one card; credentials as key
//! items after unlocking; signatures that verify.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use driver_fido2::client::AuthenticatorData;
use driver_fido2::driver::{Fido2Driver, Fido2Token, Fido2TokenSession};
use driver_fido2::sim::{Authenticator, SimConfig, SimTransport};
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use token_core::testkit::{self, conformance::Suite, NoCard};
use token_core::{
    block_on, CardSimulator, Claim, CtapChannel, Device, ErrorCode, HashAlg, Item, ItemsNotifier,
    KeyItem, MultiApplicationCard, Pin, PinKind, Probe, SignatureAlgorithm, Token, TokenDriver,
    TokenSession,
};

const PIN: &str = "123456";

fn authenticator(transport: SimTransport) -> Authenticator {
    Authenticator::new(SimConfig {
        pin: Some(PIN.into()),
        transport,
        ..SimConfig::default()
    })
    .unwrap()
}

fn probe_hid(auth: &Authenticator, slot: &str) -> Arc<dyn Token> {
    let channel: Arc<dyn CtapChannel> = Arc::new(common::hid_channel(auth));
    let probe = Probe {
        slot_name: slot.into(),
        device: Device::Ctap(channel),
        notifier: ItemsNotifier::detached(),
    };
    match block_on(Fido2Driver.probe(&probe)).unwrap() {
        Claim::Token(t) => t,
        other => panic!("expected a token, got {other:?}"),
    }
}

/// Makes a discoverable credential through the token's own Fido2Session.
fn make_credential(token: &Arc<dyn Token>, rp: &str, user: &str) -> Vec<u8> {
    let fido = token
        .as_any()
        .unwrap()
        .downcast_ref::<Fido2Token>()
        .unwrap();
    let mut s = fido.fido2_session();
    s.set_key_collector(Arc::new(|_: &token_core::PinRequest| Some(Pin::from(PIN))));
    common::make_resident(&mut s, rp, user)
        .credential_id()
        .unwrap()
        .to_vec()
}

fn keys(token: &Arc<dyn Token>) -> Vec<KeyItem> {
    token
        .items()
        .into_iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some(k),
            _ => None,
        })
        .collect()
}

fn verify(key: &KeyItem, auth_data: &[u8], client_data_hash: &[u8], der: &[u8]) -> bool {
    let pk =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key.as_ref().unwrap().raw).unwrap();
    let Ok(sig) = p256::ecdsa::Signature::from_der(der) else {
        return false;
    };
    let mut message = auth_data.to_vec();
    message.extend_from_slice(client_data_hash);
    pk.verify(&message, &sig).is_ok()
}

#[test]
fn hid_token_has_a_stable_id_from_the_aaguid_and_the_slot() {
    let auth = authenticator(SimTransport::Usb);
    let a = probe_hid(&auth, "Sim HID 1");
    let b = probe_hid(&auth, "Sim HID 1");
    let c = probe_hid(&auth, "Sim HID 2");
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), c.id());
    assert_eq!(a.id().driver(), "fido2");
    let aaguid = a
        .as_any()
        .unwrap()
        .downcast_ref::<Fido2Token>()
        .unwrap()
        .info_ctap()
        .aaguid;
    let hex: String = aaguid.iter().map(|b| format!("{b:02x}")).collect();
    assert!(a.id().instance().starts_with(&hex), "{}", a.id());
}

#[test]
fn unlocking_lists_the_discoverable_credentials_as_keys_and_signing_verifies() {
    let auth = authenticator(SimTransport::Usb);
    let token = probe_hid(&auth, "Sim HID");
    make_credential(&token, "example.com", "alice");
    make_credential(&token, "example.org", "bob");
    assert!(keys(&token).is_empty(), "nothing listed before the PIN");

    let mut s = block_on(testkit::open_session(&token)).unwrap();
    block_on(s.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    let mut listed = keys(&token);
    listed.sort_by(|a, b| a.label.cmp(&b.label));
    let labels: Vec<&str> = listed.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["example.com alice", "example.org bob"]);
    let key = listed[0].clone();
    assert_eq!(
        key.key_id,
        key.public_key.as_ref().unwrap().key_id().to_vec()
    );

    // The whole assertion: its signature verifies over authData ‖ clientDataHash.
    let hash = Sha256::digest(b"document").to_vec();
    // After the unlock the session holds a credential-management token; an assertion needs
    // a getAssertion one, so the Fido2-specific API gets a key collector of its own.
    let fido = fido_session(&mut s);
    fido.fido2()
        .set_key_collector(Arc::new(|_: &token_core::PinRequest| Some(Pin::from(PIN))));
    let assertion = block_on(fido.assertion(&key.object_id, &hash)).unwrap();
    assert!(verify(
        &key,
        &assertion.auth_data,
        &hash,
        &assertion.signature
    ));
    let parsed = AuthenticatorData::parse(&assertion.auth_data).unwrap();
    assert_eq!(
        parsed.rp_id_hash.to_vec(),
        Sha256::digest(b"example.com").to_vec()
    );

    // TokenSession::sign returns the signature alone; the next counter value rebuilds its
    // authenticator data.
    let signature = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        &hash,
    ))
    .unwrap();
    let mut next = assertion.auth_data.clone();
    next[33..37].copy_from_slice(&(parsed.sign_count + 1).to_be_bytes());
    assert!(verify(&key, &next, &hash, &signature));
    assert!(!verify(&key, &assertion.auth_data, &hash, &signature));
}

fn fido_session(s: &mut TokenSession) -> &mut Fido2TokenSession {
    s.delegate_mut()
        .as_any_mut()
        .unwrap()
        .downcast_mut::<Fido2TokenSession>()
        .unwrap()
}

#[test]
fn signing_asks_the_pin_callback_once_and_a_wrong_pin_is_reported_with_tries_left() {
    let auth = authenticator(SimTransport::Usb);
    let token = probe_hid(&auth, "Sim HID");
    make_credential(&token, "example.com", "alice");
    let mut unlock = block_on(testkit::open_session(&token)).unwrap();
    block_on(unlock.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    let key = keys(&token).remove(0);

    let mut s = block_on(testkit::open_session(&token)).unwrap();
    let alg = SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256);
    let e = block_on(s.sign(&key.object_id, alg, b"data")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);

    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    s.set_pin_callback(Arc::new(move |r: &token_core::PinRequest| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(r.retries_left, Some(8));
        Some(Pin::from("000000"))
    }));
    let e = block_on(s.sign(&key.object_id, alg, b"data")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(7));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    s.set_pin_callback(Arc::new(|_: &token_core::PinRequest| Some(Pin::from(PIN))));
    let signature = block_on(s.sign(&key.object_id, alg, b"data")).unwrap();
    assert!(p256::ecdsa::Signature::from_der(&signature).is_ok());
    assert_eq!(auth.pin_retries(), 8);
}

#[test]
fn deleting_a_key_deletes_the_credential() {
    let auth = authenticator(SimTransport::Usb);
    let token = probe_hid(&auth, "Sim HID");
    make_credential(&token, "example.com", "alice");
    make_credential(&token, "example.org", "bob");
    let mut s = block_on(testkit::open_session(&token)).unwrap();
    block_on(s.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    let key = keys(&token)
        .into_iter()
        .find(|k| k.label.starts_with("example.org"))
        .unwrap();
    s.set_pin_callback(Arc::new(|_: &token_core::PinRequest| Some(Pin::from(PIN))));
    block_on(s.delete_item(&key.object_id)).unwrap();
    assert_eq!(auth.credential_count(), 1);
    assert_eq!(keys(&token).len(), 1);
    let e = block_on(s.delete_item(&key.object_id)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound);
}

#[test]
fn nfc_card_gives_a_token_that_signs() {
    let auth = authenticator(SimTransport::Nfc);
    let token = testkit::probe_card(&Fido2Driver, Box::new(auth.card()))
        .unwrap()
        .expect("the FIDO applet is found");
    make_credential(&token, "example.com", "carol");
    let mut s = block_on(testkit::open_session(&token)).unwrap();
    block_on(s.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    let key = keys(&token).remove(0);
    let hash = [3u8; 32];
    let e = block_on(fido_session(&mut s).assertion(&key.object_id, &hash)).unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::AuthenticationNeeded,
        "the unlock token is cm only"
    );
    // verify_pin obtains the token the refused operation needed.
    block_on(s.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    let assertion = block_on(fido_session(&mut s).assertion(&key.object_id, &hash)).unwrap();
    assert!(verify(
        &key,
        &assertion.auth_data,
        &hash,
        &assertion.signature
    ));
}

#[test]
fn a_card_without_the_fido_applet_is_not_claimed() {
    assert!(
        testkit::probe_card(&Fido2Driver, Box::new(NoCard::default()))
            .unwrap()
            .is_none()
    );
}

/// Another application on the same card, which answers everything with its own marker.
struct OtherApp;

impl CardSimulator for OtherApp {
    fn atr(&self) -> Vec<u8> {
        vec![0x3B, 0x00]
    }
    fn process(&mut self, _: &[u8]) -> Vec<u8> {
        vec![0xEE, 0x90, 0x00]
    }
}

#[test]
fn multi_application_card_gives_a_fido2_token_beside_the_other_application() {
    let auth = authenticator(SimTransport::Nfc);
    let card = MultiApplicationCard::new(driver_fido2::sim::FIDO_ATR.to_vec())
        .with(&[0xA0, 0x00, 0x00, 0x03, 0x08], Box::new(OtherApp))
        .with(&driver_fido2::ctap::FIDO_AID, Box::new(auth.card()));
    let memory = Arc::new(testkit::MemoryCard::new(Box::new(card)));
    let smart_card = token_core::SmartCard::new(memory.clone());
    let probe = Probe {
        slot_name: "Multi".into(),
        device: Device::SmartCard(smart_card.clone()),
        notifier: ItemsNotifier::detached(),
    };
    let Claim::Token(token) = block_on(Fido2Driver.probe(&probe)).unwrap() else {
        panic!("no FIDO2 token on the multi-application card");
    };
    // Another driver selects its application in between; the FIDO2 token still works.
    let other = block_on(smart_card.send_ins(
        token_core::Ins::SELECT,
        0x04,
        0x00,
        &[0xA0, 0x00, 0x00, 0x03, 0x08],
        None,
    ))
    .unwrap();
    assert_eq!(other, vec![0xEE]);
    make_credential(&token, "example.com", "dave");
    assert_eq!(auth.credential_count(), 1);
}

#[test]
fn conformance_suite_over_nfc() {
    let auth = authenticator(SimTransport::Nfc);
    Suite::card(Arc::new(Fido2Driver), move || Box::new(auth.card()))
        .min_items(0)
        .run()
        .assert_passed();
}

#[test]
fn a_card_answering_garbage_gives_errors_never_a_panic() {
    for seed in 0..40 {
        let auth = authenticator(SimTransport::Nfc);
        let garbage = testkit::GarbageCard::new(Box::new(auth.card()), seed, 2);
        if let Ok(Some(token)) = testkit::probe_card(&Fido2Driver, Box::new(garbage)) {
            let mut s = block_on(testkit::open_session(&token)).unwrap();
            let _ = block_on(s.verify_pin(PinKind::User, &Pin::from(PIN)));
            let _ = token.items();
        }
    }
}

/// The simulator's applet, answering SELECT with `U2F_V2` as keys that speak U2F and CTAP2 do;
/// with `u2f_only`, it refuses CTAP2 messages (6D00) as a U2F-only key does.
struct U2fSelect {
    inner: Box<dyn CardSimulator>,
    u2f_only: bool,
}

impl CardSimulator for U2fSelect {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        match apdu {
            [0x00, 0xA4, 0x04, ..] => {
                self.inner.process(apdu);
                let mut out = b"U2F_V2".to_vec();
                out.extend([0x90, 0x00]);
                out
            }
            [_, 0x10, ..] if self.u2f_only => vec![0x6D, 0x00],
            _ => self.inner.process(apdu),
        }
    }
}

#[test]
fn a_u2f_v2_applet_is_claimed_only_when_it_answers_get_info() {
    for u2f_only in [false, true] {
        let auth = authenticator(SimTransport::Nfc);
        let card = U2fSelect {
            inner: Box::new(auth.card()),
            u2f_only,
        };
        let token = testkit::probe_card(&Fido2Driver, Box::new(card)).unwrap();
        assert_eq!(token.is_some(), !u2f_only, "u2f_only = {u2f_only}");
    }
}

#[test]
fn the_driver_is_registered_and_a_hub_finds_the_nfc_token() {
    assert!(token_core::registered_drivers()
        .iter()
        .any(|r| r.id == "fido2"));
    let auth = authenticator(SimTransport::Nfc);
    let slots = testkit::TestSlots::new();
    slots.add_reader("NFC Reader");
    let hub = token_core::Hub::builder()
        .provider(slots.provider())
        .start()
        .unwrap();
    let events = hub.watcher().subscribe();
    slots.insert_card("NFC Reader", Box::new(auth.card()));
    hub.settle();
    let ids = hub.token_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0].driver(), "fido2");
    let handle = hub.token(&ids[0]).unwrap();
    make_credential(handle.token(), "example.com", "erin");
    assert!(handle.items().is_empty(), "nothing listed before the PIN");
    let mut session = block_on(handle.open_session()).unwrap();
    block_on(session.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    assert_eq!(handle.items().len(), 1);
    // Unlocking told the hub (and so the keychain index) that the items changed.
    hub.settle();
    let mut changed = false;
    while let Ok(event) =
        token_core::TokenWatcher::next_event(&events, std::time::Duration::from_millis(200))
    {
        changed |= event == token_core::WatchEvent::ItemsChanged(ids[0].clone());
    }
    assert!(changed, "no ItemsChanged event after unlocking");
    slots.remove_card("NFC Reader");
    hub.settle();
    assert!(hub.token_ids().is_empty());
}

/// A CTAPHID device without the CBOR capability (CTAP1/U2F only).
struct U2fOnlyHid;

#[token_core::async_trait]
impl CtapChannel for U2fOnlyHid {
    async fn transact(&self, _cmd: u8, _payload: &[u8]) -> token_core::Result<Vec<u8>> {
        Err(token_core::Error::communication("no CBOR here"))
    }
    fn capabilities(&self) -> u8 {
        0x01
    }
}

#[test]
fn a_hid_device_without_cbor_is_not_claimed() {
    let probe = Probe {
        slot_name: "U2F".into(),
        device: Device::Ctap(Arc::new(U2fOnlyHid)),
        notifier: ItemsNotifier::detached(),
    };
    assert!(matches!(
        block_on(Fido2Driver.probe(&probe)).unwrap(),
        Claim::NotMine
    ));
}

#[test]
fn the_pin_is_changed_through_the_token_session() {
    let auth = authenticator(SimTransport::Usb);
    let token = probe_hid(&auth, "Sim HID");
    let mut s = block_on(testkit::open_session(&token)).unwrap();
    let e = block_on(s.change_pin(PinKind::User, &Pin::from("000000"), &Pin::from("24682468")))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(7));
    block_on(s.change_pin(PinKind::User, &Pin::from(PIN), &Pin::from("24682468"))).unwrap();
    assert_eq!(
        block_on(s.pin_status(PinKind::User)).unwrap().retries_left,
        Some(8)
    );
    block_on(s.verify_pin(PinKind::User, &Pin::from("24682468"))).unwrap();
    let e = block_on(s.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
}
