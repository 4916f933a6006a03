//! The index follows the hub: tokens' items come in on insertion and go on removal (seed 001),
//! and items created or deleted through a session are in or out at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{card, hub, insert, remove, spec};
use keychain_index::{KeychainIndex, Query};
use token_core::{block_on, ErrorCode, ItemClass, KeyUsage};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn items_follow_insertion_and_removal() {
    let (hub, slots) = hub();
    let present = insert(&slots, "w-present", card(10, "Alice"));
    hub.settle();

    // A token present before attaching is in the index when attach returns.
    let index = KeychainIndex::attach(&hub).unwrap();
    assert!(index.contains_token(&present));
    assert_eq!(index.query(&Query::new().token(present.clone())).len(), 6);

    // Insertion: wait for the watcher thread, without sync.
    let seq = index.seq();
    let later = insert(&slots, "w-later", card(20, "Bob"));
    let mut now = seq;
    while !index.contains_token(&later) {
        let next = index.wait_for_change(now, WAIT);
        assert!(next > now, "the watcher never applied the insertion");
        now = next;
    }
    let keys = index.query(&Query::keys().token(later.clone()));
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.token_id() == &later));

    // Removal: all of the token's items go, the other token's stay.
    let before = index.seq();
    remove(&slots, "w-later");
    index.sync().unwrap();
    assert!(index.seq() > before);
    assert!(!index.contains_token(&later));
    assert!(index.query(&Query::new().token(later.clone())).is_empty());
    assert_eq!(index.len(), 6);
    assert_eq!(index.token_ids(), vec![present.clone()]);

    remove(&slots, "w-present");
    index.sync().unwrap();
    assert!(index.is_empty());
}

#[test]
fn a_generated_key_is_in_the_index_at_once_and_a_deleted_one_is_gone() {
    let (hub, slots) = hub();
    let id = insert(&slots, "w-gen", card(30, "Carol"));
    hub.settle();
    let index = KeychainIndex::attach(&hub).unwrap();
    assert_eq!(index.count(&Query::keys().token(id.clone())), 3);

    // Generate through a session opened from an item reference; the ItemsChanged event
    // alone (no sync) brings it in.
    let auth = index
        .first(&Query::keys().token(id.clone()).label("PIV Authentication"))
        .unwrap();
    let seq = index.seq();
    let mut session = auth.open_session_blocking(&hub).unwrap();
    let generated = block_on(session.generate_key(&spec("fresh key"))).unwrap();
    let applied = index.wait_for_change(seq, WAIT);
    assert!(applied > seq, "ItemsChanged was not applied");
    let found = index.query(&Query::keys().label("fresh key")).to_vec();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].object_id(), &generated.object_id);
    assert_eq!(found[0].key_id(), &generated.key_id[..]);
    assert_eq!(index.query(&Query::new().key_id(&generated.key_id)), found);
    assert_eq!(index.count(&Query::keys().token(id.clone())), 4);

    // A persistent reference made before the change still resolves by its hint.
    let pref = auth.persistent_ref();
    assert_eq!(index.resolve(&pref).unwrap(), auth);

    // Deletion, then sync (the other way to wait): gone from queries and references.
    let fresh_ref = found[0].persistent_ref();
    block_on(session.delete_item(&generated.object_id)).unwrap();
    index.sync().unwrap();
    assert!(index.query(&Query::keys().label("fresh key")).is_empty());
    assert_eq!(
        index.resolve(&fresh_ref).unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    assert_eq!(index.resolve(&pref).unwrap(), auth);

    // Generate and sync at once: a caller that just generated a key sees it.
    let k = block_on(session.generate_key(&spec("second"))).unwrap();
    index.sync_token(&id).unwrap();
    assert_eq!(
        index
            .first(&Query::keys().key_id(&k.key_id))
            .unwrap()
            .label(),
        "second"
    );
}

#[test]
fn an_imported_certificate_for_a_token_key_makes_an_identity() {
    let (hub, slots) = hub();
    // Only a key, no certificate yet.
    let k = common::key("9e", "Card Authentication", 40, KeyUsage::SIGN);
    let id = insert(&slots, "w-import", vec![token_core::Item::Key(k.clone())]);
    hub.settle();
    let index = KeychainIndex::attach(&hub).unwrap();
    assert!(index.query(&Query::identities()).is_empty());

    let c = common::cert("import", 40, "Dave", "Example Issuing CA", 9);
    let mut session = block_on(hub.open_session(&id)).unwrap();
    block_on(session.import_certificate("Dave", &c.der, Some(&k.object_id))).unwrap();
    index.sync().unwrap();

    let ids = index.query(&Query::identities().token(id.clone())).to_vec();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].class(), ItemClass::Identity);
    assert_eq!(ids[0].key().unwrap().object_id, k.object_id);
    assert_eq!(ids[0].subject_common_name(), Some("Dave"));
}

#[test]
fn open_session_fails_once_the_token_is_gone() {
    let (hub, slots) = hub();
    let id = insert(&slots, "w-gone", card(50, "Erin"));
    hub.settle();
    let index = KeychainIndex::attach(&hub).unwrap();
    let item = index.first(&Query::keys().token(id)).unwrap();
    assert!(item.open_session_blocking(&hub).is_ok());
    remove(&slots, "w-gone");
    index.sync().unwrap();
    assert_eq!(
        item.open_session_blocking(&hub).unwrap_err().code(),
        ErrorCode::TokenNotFound
    );
    // The reference still reads the item as it was.
    assert_eq!(item.label(), "PIV Authentication");
}

#[test]
fn the_watcher_thread_ends_with_the_hub() {
    let (hub, slots) = hub();
    insert(&slots, "w-end", card(60, "Frank"));
    hub.settle();
    let index = KeychainIndex::attach(&hub).unwrap();
    let weak = std::sync::Arc::downgrade(&hub);
    drop(hub);
    // The watcher thread may hold the hub for a moment while it applies the opening burst.
    let deadline = std::time::Instant::now() + WAIT;
    while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        index.sync().unwrap_err().code(),
        ErrorCode::CommunicationError
    );
    // The index keeps what it had.
    assert_eq!(index.len(), 6);
}
