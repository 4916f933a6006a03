//! Queries by class, token ID, label, key ID, subject and issuer, usage, with a limit; and
//! identities derived by matching a certificate's public key with a key on the same token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{card, cert, der, key, token};
use keychain_index::{KeychainIndex, Query};
use token_core::{CertificateInfo, Item, ItemClass, KeyUsage, ObjectId, TokenId};

fn two_cards() -> (KeychainIndex, TokenId, TokenId) {
    let index = KeychainIndex::new();
    let a = token("piv:aaaa");
    let b = token("piv:bbbb");
    index.insert_tokens([(a.clone(), card(1, "Alice")), (b.clone(), card(100, "Bob"))]);
    (index, a, b)
}

fn labels(items: &keychain_index::Matches) -> BTreeSet<String> {
    items.iter().map(|i| i.label().to_owned()).collect()
}

#[test]
fn by_class_and_token() {
    let (index, a, b) = two_cards();
    assert_eq!(index.len(), 12);
    assert_eq!(index.query(&Query::new()).len(), 12);
    assert_eq!(index.query(&Query::keys()).len(), 6);
    assert_eq!(index.query(&Query::certificates()).len(), 6);
    // The CA certificate has no key on the card: two identities per card.
    assert_eq!(index.query(&Query::identities()).len(), 4);

    let keys = index.query(&Query::keys().token(a.clone()));
    assert_eq!(keys.len(), 3);
    assert!(keys
        .iter()
        .all(|k| k.token_id() == &a && k.class() == ItemClass::Key));
    assert_eq!(
        labels(&keys),
        ["Digital Signature", "Key Management", "PIV Authentication"]
            .map(String::from)
            .into()
    );
    let b_certs = index.query(&Query::certificates().token(b.clone()));
    assert_eq!(
        labels(&b_certs),
        ["Bob", "Bob (signing)", "Example Issuing CA"]
            .map(String::from)
            .into()
    );
    assert!(index
        .query(&Query::new().token(token("piv:none")))
        .is_empty());
}

#[test]
fn by_label_and_limit() {
    let (index, a, _) = two_cards();
    let auth = index.query(&Query::keys().label("PIV Authentication"));
    assert_eq!(auth.len(), 2);
    let one = index.query(&Query::keys().label("PIV Authentication").limit(1));
    assert_eq!(one.len(), 1);
    assert!(index.query(&Query::new().limit(0)).is_empty());
    assert_eq!(index.query(&Query::new().limit(5)).len(), 5);
    assert_eq!(
        index
            .query(&Query::keys().label("PIV Authentication").token(a.clone()))
            .first()
            .unwrap()
            .token_id(),
        &a
    );
    assert!(index
        .query(&Query::keys().label("no such label"))
        .is_empty());
    // A certificate's label is found with class certificate and with no class.
    assert_eq!(index.query(&Query::new().label("Alice")).len(), 1);
    assert_eq!(index.query(&Query::identities().label("Alice")).len(), 1);
    assert!(index.query(&Query::keys().label("Alice")).is_empty());
}

#[test]
fn by_key_id_finds_the_key_its_certificate_and_their_identity() {
    let (index, a, _) = two_cards();
    let k = key("9a", "PIV Authentication", 1, KeyUsage::SIGN);
    let all = index.query(&Query::new().key_id(&k.key_id));
    assert_eq!(all.len(), 2);
    let classes: BTreeSet<_> = all.iter().map(|i| i.class()).collect();
    assert_eq!(classes, [ItemClass::Key, ItemClass::Certificate].into());
    assert!(all
        .iter()
        .all(|i| i.token_id() == &a && i.key_id() == &k.key_id[..]));

    let keys = index.query(&Query::keys().key_id(&k.key_id));
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.first().unwrap().object_id(), &ObjectId::new("9a"));
    let ids = index.query(&Query::identities().key_id(&k.key_id));
    assert_eq!(ids.len(), 1);
    assert_eq!(ids.first().unwrap().key().unwrap(), &k);
    assert_eq!(ids.first().unwrap().certificate().unwrap().label, "Alice");

    // A key ID shorter or longer than SHA-1's, and one nobody has.
    assert!(index
        .query(&Query::new().key_id(&k.key_id[..19]))
        .is_empty());
    let mut long = k.key_id.clone();
    long.push(0);
    assert!(index.query(&Query::new().key_id(&long)).is_empty());
    assert!(index.query(&Query::new().key_id([0u8; 20])).is_empty());
}

#[test]
fn odd_key_id_lengths_are_indexed_exactly() {
    let index = KeychainIndex::new();
    let mut short = key("1", "short", 1, KeyUsage::SIGN);
    short.key_id = vec![1, 2, 3];
    let mut long = key("2", "long", 2, KeyUsage::SIGN);
    long.key_id = (0..40).collect();
    let mut long2 = key("3", "long twin", 3, KeyUsage::SIGN);
    long2.key_id = (0..39).chain([99]).collect();
    index.insert_token(
        token("x:1"),
        vec![
            Item::Key(short.clone()),
            Item::Key(long.clone()),
            Item::Key(long2.clone()),
        ],
    );
    assert_eq!(
        index
            .query(&Query::new().key_id([1, 2, 3]))
            .first()
            .unwrap()
            .label(),
        "short"
    );
    assert_eq!(
        index
            .query(&Query::new().key_id(&long.key_id))
            .first()
            .unwrap()
            .label(),
        "long"
    );
    assert_eq!(
        index
            .query(&Query::new().key_id(&long2.key_id))
            .first()
            .unwrap()
            .label(),
        "long twin"
    );
    assert_eq!(index.query(&Query::new().key_id(&long.key_id)).len(), 1);
}

#[test]
fn by_subject_and_issuer() {
    let (index, a, _) = two_cards();
    let alice = cert("9a", 1, "Alice", "Example Issuing CA", 1);
    let info = CertificateInfo::parse(&alice.der).unwrap();

    let by_subject = index.query(&Query::certificates().subject(info.subject()));
    assert_eq!(by_subject.len(), 1);
    assert_eq!(by_subject.first().unwrap().token_id(), &a);
    assert_eq!(by_subject.first().unwrap().subject(), Some(info.subject()));
    assert_eq!(by_subject.first().unwrap().issuer(), Some(info.issuer()));
    assert_eq!(
        by_subject.first().unwrap().serial_number(),
        Some(info.serial())
    );

    // Four certificates were issued by the issuing CA (two per card).
    let issued = index.query(&Query::certificates().issuer(info.issuer()));
    assert_eq!(issued.len(), 4);
    assert_eq!(
        index
            .query(&Query::new().issuer_common_name("Example Issuing CA"))
            .len(),
        4
    );
    assert_eq!(
        index
            .query(&Query::identities().issuer_common_name("Example Issuing CA"))
            .len(),
        4
    );
    // The CA certificate (on both cards) by its subject's common name.
    let ca = index.query(&Query::new().subject_common_name("Example Issuing CA"));
    assert_eq!(ca.len(), 2);
    assert!(ca
        .iter()
        .all(|c| c.issuer_common_name() == Some("Example Root CA")));
    assert!(ca.iter().all(|c| c.identity_ref().is_none()));

    // Combined conditions; keys have no subject.
    assert_eq!(
        index
            .query(
                &Query::new()
                    .subject_common_name("Alice")
                    .issuer(info.issuer())
            )
            .len(),
        1
    );
    assert!(index
        .query(&Query::keys().subject(info.subject()))
        .is_empty());
    assert!(index
        .query(&Query::new().subject(der::name("Nobody", None)))
        .is_empty());
}

#[test]
fn by_usage() {
    let (index, a, _) = two_cards();
    assert_eq!(index.query(&Query::keys().usage(KeyUsage::SIGN)).len(), 4);
    assert_eq!(
        index.query(&Query::keys().usage(KeyUsage::DECRYPT)).len(),
        2
    );
    assert_eq!(
        index
            .query(&Query::keys().usage(KeyUsage::DECRYPT | KeyUsage::DERIVE))
            .len(),
        2
    );
    assert!(index
        .query(&Query::keys().usage(KeyUsage::SIGN | KeyUsage::DECRYPT))
        .is_empty());
    // Identities take their key's usage; certificates have none.
    assert_eq!(
        index
            .query(&Query::identities().usage(KeyUsage::SIGN).token(a))
            .len(),
        2
    );
    assert!(index
        .query(&Query::certificates().usage(KeyUsage::SIGN))
        .is_empty());
}

#[test]
fn identities_pair_only_within_a_token() {
    let index = KeychainIndex::new();
    let k = key("k", "the key", 7, KeyUsage::SIGN);
    let c = cert("c", 7, "Grace", "CA", 1);
    // The key on one token, its certificate on another: no identity.
    index.insert_tokens([
        (token("soft:1"), vec![Item::Key(k.clone())]),
        (token("soft:2"), vec![Item::Certificate(c.clone())]),
    ]);
    assert!(index.query(&Query::identities()).is_empty());
    let lone = index.first(&Query::certificates()).unwrap();
    assert!(lone.key_ref().is_none());
    assert!(lone.identity_ref().is_none());

    // Together on one token they form one.
    index.insert_token(
        token("soft:2"),
        vec![Item::Certificate(c), Item::Key(k.clone())],
    );
    let id = index.first(&Query::identities()).unwrap();
    assert_eq!(id.token_id(), &token("soft:2"));
    assert_eq!(id.key_ref().unwrap().object_id(), &k.object_id);
    assert_eq!(
        id.certificate_ref().unwrap().class(),
        ItemClass::Certificate
    );
    let key_ref = id.key_ref().unwrap();
    assert_eq!(key_ref.identity_ref().unwrap(), id);
    assert_eq!(key_ref.certificate_ref().unwrap().label(), "Grace");

    let attrs = id.attributes();
    assert_eq!(attrs.class, ItemClass::Identity);
    assert_eq!(attrs.label, "Grace");
    assert_eq!(attrs.key_id, k.key_id);
    assert_eq!(attrs.usage, KeyUsage::SIGN);
    assert_eq!(attrs.key_object_id, Some(k.object_id.clone()));
    assert_eq!(attrs.subject_common_name.as_deref(), Some("Grace"));
    assert_eq!(index.query_attributes(&Query::identities()), vec![attrs]);
}

#[test]
fn replacing_a_tokens_items_updates_every_index() {
    let index = KeychainIndex::new();
    let t = token("piv:cccc");
    index.insert_token(t.clone(), card(200, "Heidi"));
    let auth = index
        .first(&Query::keys().label("PIV Authentication"))
        .unwrap();
    let auth_ref = auth.persistent_ref();

    // Rename one key, drop a certificate, add a key.
    let mut items = card(200, "Heidi");
    if let Item::Key(k) = &mut items[2] {
        k.label = "Renamed".into();
    }
    items.remove(5);
    items.push(Item::Key(key("82", "Retired 1", 300, KeyUsage::DECRYPT)));
    let seq = index.seq();
    assert!(index.insert_token(t.clone(), items.clone()) > seq);
    // The same list again changes nothing.
    let seq = index.seq();
    assert_eq!(index.insert_token(t.clone(), items), seq);

    assert!(index
        .query(&Query::keys().label("Digital Signature"))
        .is_empty());
    assert_eq!(index.query(&Query::keys().label("Renamed")).len(), 1);
    assert!(index
        .query(&Query::new().subject_common_name("Example Issuing CA"))
        .is_empty());
    assert_eq!(index.query(&Query::keys().label("Retired 1")).len(), 1);
    assert_eq!(index.query(&Query::keys().token(t.clone())).len(), 4);
    assert_eq!(index.len(), 6);
    // The unchanged key kept its place: its reference still resolves.
    assert_eq!(index.resolve(&auth_ref).unwrap(), auth);

    // Many rounds of changes: tombstones are compacted away and queries stay exact.
    for round in 0..30u64 {
        let items: Vec<Item> = (0..5)
            .map(|i| {
                Item::Key(key(
                    &format!("r{round}-{i}"),
                    &format!("round {round}"),
                    round * 10 + i,
                    KeyUsage::SIGN,
                ))
            })
            .collect();
        index.insert_token(t.clone(), items);
        assert_eq!(index.query(&Query::new().token(t.clone())).len(), 5);
        assert_eq!(
            index
                .query(&Query::keys().label(format!("round {round}")))
                .len(),
            5
        );
        if round > 0 {
            assert!(index
                .query(&Query::keys().label(format!("round {}", round - 1)))
                .is_empty());
        }
    }
    assert_eq!(index.len(), 5);
}

#[test]
fn items_of_a_malformed_certificate_are_still_listed() {
    let index = KeychainIndex::new();
    let bad = token_core::CertificateItem {
        object_id: ObjectId::new("bad"),
        label: "garbage".into(),
        der: vec![0x30, 0x03, 0x01, 0x02],
    };
    index.insert_token(token("x:bad"), vec![Item::Certificate(bad)]);
    let c = index.first(&Query::certificates()).unwrap();
    assert_eq!(c.label(), "garbage");
    assert_eq!(c.subject(), None);
    assert!(c.key_id().is_empty());
    assert!(index.query(&Query::identities()).is_empty());
}
