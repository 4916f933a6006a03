//! The soft token through a running hub: present from start-up, inserted and removed at once
//! when created and deleted through the provider, item changes reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use driver_hsm_soft::{SoftTokenDriver, SoftTokenProvider};
use token_core::{
    block_on, ErrorCode, Hub, KeyType, PinKind, SignatureAlgorithm, SlotKind, SlotState,
    TokenWatcher, WatchEvent,
};

const WAIT: Duration = Duration::from_secs(5);

fn hub_over(store: &std::path::Path) -> Hub {
    Hub::builder()
        .registered(false)
        .driver(0, Arc::new(SoftTokenDriver))
        .provider(Arc::new(SoftTokenProvider::new(store)))
        .start()
        .unwrap()
}

#[test]
fn tokens_are_present_from_start_and_follow_registration_at_once() {
    let f = common::Fixture::new();
    let hub = hub_over(f.dir.path());
    // Present as soon as start() returns: the provider reports its slots synchronously.
    assert_eq!(hub.token_ids(), vec![f.id.clone()]);
    let slot = &hub.slot_manager().slots()[0];
    assert_eq!(
        (slot.kind, slot.state),
        (SlotKind::Persistent, SlotState::ValidCard)
    );
    let handle = hub.token(&f.id).unwrap();
    assert_eq!(handle.driver_id(), "soft");
    assert_eq!(handle.info().label, "test token");

    let events = hub.watcher().subscribe();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Inserted(f.id.clone())
    );

    let provider = hub.provider("hsm-soft").unwrap();
    let manager = provider
        .as_any()
        .downcast_ref::<SoftTokenProvider>()
        .unwrap();
    let id = manager.create_token(&common::options("second")).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Inserted(id.clone())
    );
    assert_eq!(manager.list().unwrap().len(), 2);

    // Items created through a hub session reach the watchers (and so the keychain index).
    let mut s = block_on(hub.open_session(&id)).unwrap();
    block_on(s.verify_pin(PinKind::User, &common::PIN.into())).unwrap();
    let key = common::generate(&mut s, KeyType::Ed25519, "k");
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::ItemsChanged(id.clone())
    );
    assert_eq!(hub.token(&id).unwrap().items().len(), 1);
    block_on(driver_hsm_soft::self_signed_certificate(&mut s, &key, "me")).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::ItemsChanged(id.clone())
    );

    manager.delete_token(&id).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Removed(id.clone())
    );
    let e = block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"x")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
    assert_eq!(hub.token(&id).unwrap_err().code(), ErrorCode::TokenNotFound);
    assert_eq!(
        manager.delete_token(&id).unwrap_err().code(),
        ErrorCode::TokenNotFound
    );
    assert_eq!(hub.token_ids(), vec![f.id.clone()]);
}

#[test]
fn rescan_picks_up_what_other_processes_did() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_over(dir.path());
    assert!(hub.token_ids().is_empty());
    let events = hub.watcher().subscribe();
    let manager_arc = hub.provider("hsm-soft").unwrap();
    let manager = manager_arc
        .as_any()
        .downcast_ref::<SoftTokenProvider>()
        .unwrap();

    // The plain functions, as another process (tokenctl) would call them.
    let id = driver_hsm_soft::create_with(dir.path(), &common::options("elsewhere")).unwrap();
    manager.rescan().unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Inserted(id.clone())
    );
    driver_hsm_soft::delete(dir.path(), &id).unwrap();
    manager.rescan().unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Removed(id)
    );
}

#[test]
fn tokens_other_processes_create_and_delete_come_and_go_without_a_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_over(dir.path());
    let events = hub.watcher().subscribe();

    // Another process's work, seen only through the store directory.
    let id = driver_hsm_soft::create_with(dir.path(), &common::options("other")).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Inserted(id.clone())
    );
    driver_hsm_soft::delete(dir.path(), &id).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Removed(id)
    );
}

#[test]
fn the_registered_provider_is_reachable_by_its_id_type() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_over(dir.path());
    let p = hub.provider(driver_hsm_soft::PROVIDER_ID).unwrap();
    let manager = p.as_any().downcast_ref::<SoftTokenProvider>().unwrap();
    assert_eq!(manager.store(), dir.path());
}

#[test]
fn changes_made_elsewhere_reach_the_hub_with_the_next_session() {
    let f = common::Fixture::new();
    let hub = hub_over(f.dir.path());
    let events = hub.watcher().subscribe();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::Inserted(f.id.clone())
    );
    // Another process (here: the token opened without the hub) adds a key.
    common::generate(&mut f.login(), KeyType::EcP256, "elsewhere");
    assert!(hub.token(&f.id).unwrap().items().is_empty());
    let _session = block_on(hub.open_session(&f.id)).unwrap();
    assert_eq!(
        TokenWatcher::next_event(&events, WAIT).unwrap(),
        WatchEvent::ItemsChanged(f.id.clone())
    );
    assert_eq!(hub.token(&f.id).unwrap().items().len(), 1);
    // The driver's own token type is reachable for extensions.
    let handle = hub.token(&f.id).unwrap();
    let soft = handle
        .token()
        .as_any()
        .unwrap()
        .downcast_ref::<driver_hsm_soft::SoftToken>();
    assert_eq!(soft.unwrap().path(), f.path);
}
