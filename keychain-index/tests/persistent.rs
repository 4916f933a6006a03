//! Persistent references: resolved by hint or by name, `ObjectNotFound` while the token is
//! away, resolved again after it is back; arbitrary bytes never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{card, hub, insert, remove, token};
use keychain_index::{KeychainIndex, Query};
use proptest::prelude::*;
use token_core::{ErrorCode, ItemClass};

#[test]
fn references_fail_while_the_token_is_away_and_resolve_when_it_is_back() {
    let index = KeychainIndex::new();
    let t = token("piv:0123456789");
    index.insert_token(t.clone(), card(1, "Alice"));
    index.insert_token(token("piv:other"), card(2, "Bob"));

    let items: Vec<_> = [Query::keys(), Query::certificates(), Query::identities()]
        .iter()
        .flat_map(|q| index.query(&q.clone().token(t.clone())))
        .collect();
    assert_eq!(items.len(), 3 + 3 + 2);
    let refs: Vec<Vec<u8>> = items.iter().map(|i| i.persistent_ref()).collect();
    for (item, r) in items.iter().zip(&refs) {
        let back = index.resolve(r).unwrap();
        assert_eq!(&back, item);
        assert_eq!(back.class(), item.class());
        assert_eq!(back.label(), item.label());
    }

    index.remove_token(&t);
    for r in &refs {
        assert_eq!(
            index.resolve(r).unwrap_err().code(),
            ErrorCode::ObjectNotFound
        );
    }

    // Re-inserted (a new generation, maybe another slot): the hint is stale, the name is not.
    index.insert_token(token("piv:third"), card(3, "Carol"));
    index.insert_token(t.clone(), card(1, "Alice"));
    for (item, r) in items.iter().zip(&refs) {
        let back = index.resolve(r).unwrap();
        assert_eq!(&back, item);
        // A fresh reference resolves by its hint again.
        assert_eq!(index.resolve(&back.persistent_ref()).unwrap(), back);
    }
}

#[test]
fn references_survive_their_neighbours_changing() {
    // Tokens share 64-slot chunks whose hint flags are packed together: removing or adding a
    // neighbour moves a token's flags, and a reference's remembered position goes stale while
    // its slot and generation stay valid. It must still name its own item, and an item
    // deleted since must not be found through flags that now belong to another item.
    let index = KeychainIndex::new();
    index.insert_token(token("piv:a"), card(1, "Alice"));
    let bob = card(2, "Bob");
    index.insert_token(token("piv:b"), bob.clone());
    let items = index.query(&Query::new().token(token("piv:b"))).to_vec();
    let refs: Vec<Vec<u8>> = items.iter().map(|i| i.persistent_ref()).collect();
    let is_bobs_9a_key =
        |i: &token_core::Item| i.class() == ItemClass::Key && i.object_id().as_bytes() == b"9a";

    // Alice goes and a smaller token takes her slot: Bob's flags move forward.
    index.remove_token(&token("piv:a"));
    index.insert_token(token("piv:c"), card(3, "Carol")[..2].to_vec());
    for (item, r) in items.iter().zip(&refs) {
        let back = index.resolve(r).unwrap();
        assert_eq!(&back, item);
        assert_eq!((back.label(), back.class()), (item.label(), item.class()));
    }

    // Bob's 9A key is deleted in place (same generation).
    let without: Vec<_> = bob.into_iter().filter(|i| !is_bobs_9a_key(i)).collect();
    index.insert_token(token("piv:b"), without);
    for (item, r) in items.iter().zip(&refs) {
        let gone = item.class() == ItemClass::Key && item.object_id().as_bytes() == b"9a"
            || item.class() == ItemClass::Identity && item.label() == "Bob";
        match index.resolve(r) {
            Ok(back) => {
                assert!(
                    !gone,
                    "the deleted {:?} {} resolved",
                    item.class(),
                    item.label()
                );
                assert_eq!(&back, item);
            }
            Err(e) => {
                assert!(gone, "{:?} {}: {e}", item.class(), item.label());
                assert_eq!(e.code(), ErrorCode::ObjectNotFound);
            }
        }
    }
}

#[test]
fn another_process_resolves_by_name() {
    // Another index stands for another process: same tokens, other positions.
    let mine = KeychainIndex::new();
    mine.insert_token(token("piv:1"), card(1, "Alice"));
    let theirs = KeychainIndex::new();
    theirs.insert_token(token("piv:0"), card(0, "Zed"));
    theirs.insert_token(token("piv:1"), card(1, "Alice"));

    for item in mine.query(&Query::new()) {
        let r = item.persistent_ref();
        assert_eq!(theirs.resolve(&r).unwrap(), item);
    }
    let only_theirs = theirs.first(&Query::keys().token(token("piv:0"))).unwrap();
    assert_eq!(
        mine.resolve(&only_theirs.persistent_ref())
            .unwrap_err()
            .code(),
        ErrorCode::ObjectNotFound
    );
}

#[test]
fn a_deleted_item_and_a_lost_identity_are_not_found() {
    let index = KeychainIndex::new();
    let t = token("soft:x");
    let items = card(5, "Dora");
    index.insert_token(t.clone(), items.clone());
    let identity = index.first(&Query::identities().label("Dora")).unwrap();
    let id_ref = identity.persistent_ref();
    let cert_ref = identity.certificate_ref().unwrap().persistent_ref();
    let key_ref = identity.key_ref().unwrap().persistent_ref();

    // The key goes: the certificate stays, the identity is gone.
    let without_key: Vec<_> = items
        .into_iter()
        .filter(|i| !(i.class() == ItemClass::Key && i.object_id().as_bytes() == b"9a"))
        .collect();
    index.insert_token(t.clone(), without_key);
    assert_eq!(
        index.resolve(&key_ref).unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    assert_eq!(
        index.resolve(&id_ref).unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    assert_eq!(index.resolve(&cert_ref).unwrap().label(), "Dora");
}

#[test]
fn references_through_the_hub_across_removal_and_reinsertion() {
    let (hub, slots) = hub();
    let id = insert(&slots, "p-card", card(7, "Eve"));
    hub.settle();
    let index = KeychainIndex::attach(&hub).unwrap();
    let key = index.first(&Query::keys().token(id.clone())).unwrap();
    let r = key.persistent_ref();
    assert_eq!(index.resolve(&r).unwrap(), key);

    remove(&slots, "p-card");
    index.sync().unwrap();
    assert_eq!(
        index.resolve(&r).unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );

    // The same token (same token ID) is inserted again.
    slots.register_persistent(common::config("p-card"));
    index.sync().unwrap();
    let back = index.resolve(&r).unwrap();
    assert_eq!(back, key);
    assert!(back.open_session_blocking(&hub).is_ok());
}

#[test]
fn malformed_references() {
    let index = KeychainIndex::new();
    index.insert_token(token("piv:1"), card(1, "Alice"));
    let good = index.first(&Query::keys()).unwrap().persistent_ref();

    let code = |b: &[u8]| index.resolve(b).unwrap_err().code();
    assert_eq!(code(&[]), ErrorCode::BadParameter);
    assert_eq!(code(b"not a reference"), ErrorCode::BadParameter);
    assert_eq!(code(&good[..good.len() - 1]), ErrorCode::CorruptedData);
    let mut flipped = good.clone();
    flipped[8] ^= 0x20;
    assert_eq!(code(&flipped), ErrorCode::CorruptedData);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Arbitrary bytes are refused with BadParameter or CorruptedData, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let index = populated();
        match index.resolve(&bytes) {
            Ok(item) => prop_assert!(false, "resolved garbage to {item:?}"),
            Err(e) => prop_assert!(
                matches!(e.code(), ErrorCode::BadParameter | ErrorCode::CorruptedData),
                "{e}"
            ),
        }
    }

    /// Bytes that start like a reference (version 1) and go on arbitrarily.
    #[test]
    fn arbitrary_version_1_bytes_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        class in 0u8..4,
    ) {
        let index = populated();
        let mut bytes = vec![1, class];
        bytes.extend_from_slice(&tail);
        prop_assert!(index.resolve(&bytes).is_err());
    }

    /// A damaged valid reference is refused or still names its own item, never another.
    #[test]
    fn damaged_references_never_name_another_item(
        which in 0usize..12,
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        cut in any::<bool>(),
    ) {
        let index = populated();
        let items = index.query(&Query::new().token(token("piv:1"))).to_vec();
        let item = &items[which % items.len()];
        let mut r = item.persistent_ref();
        let i = at.index(r.len());
        if cut {
            r.truncate(i);
        } else {
            r[i] ^= mask;
        }
        match index.resolve(&r) {
            Ok(found) => prop_assert_eq!(&found, item),
            Err(e) => prop_assert!(matches!(
                e.code(),
                ErrorCode::BadParameter | ErrorCode::CorruptedData | ErrorCode::ObjectNotFound
            )),
        }
    }
}

fn populated() -> KeychainIndex {
    use std::sync::OnceLock;
    static INDEX: OnceLock<KeychainIndex> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let index = KeychainIndex::new();
            index.insert_token(token("piv:1"), card(1, "Alice"));
            index.insert_token(token("piv:2"), card(2, "Bob"));
            index
        })
        .clone()
}
