//! The PIV driver against its simulator, in memory through token-core's test kit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use driver_piv::sim::{PivCard, SimKey};
use driver_piv::{
    resolve_key_name, AlgorithmId, ManagementKey, PinPolicy, PivDriver, PivManagement, SlotId,
    TouchPolicy,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::Digest;
use token_core::testkit::conformance::{Outcome, Suite};
use token_core::testkit::{MemoryCard, TestSlots};
use token_core::{
    block_on, registered_drivers, CardSimulator, Constraint, ErrorCode, HashAlg, Item, KeySpec,
    KeyType, ObjectId, Pin, PinKind, PinRequest, SignatureAlgorithm, TokenId, TokenWatcher,
    WatchEvent,
};

fn serial_id() -> TokenId {
    TokenId::parse(&format!("piv:{SERIAL}")).unwrap()
}

#[test]
fn passes_the_conformance_suite() {
    let report = Suite::card(Arc::new(PivDriver), || Box::new(basic_card()))
        .user_pin("123456")
        .min_items(2)
        .run();
    println!("{report}");
    report.assert_passed();
    assert!(
        report.checks.iter().all(|c| c.outcome == Outcome::Passed),
        "{report}"
    );
}

#[test]
fn registered_through_inventory() {
    let r = registered_drivers();
    let piv = r.iter().find(|r| r.id == "piv").expect("piv is registered");
    assert_eq!(piv.priority, 0);
    assert_eq!((piv.create)().id(), "piv");
}

#[test]
fn token_id_from_serial_or_guid_and_stable_across_reinsertion() {
    let (hub, slots, mem) = hub_with(basic_card());
    assert_eq!(hub.token_ids(), vec![serial_id()]);
    let info = only_token(&hub).info();
    assert_eq!(info.manufacturer.as_deref(), Some("Yubico"));
    assert_eq!(info.serial.as_deref(), Some("12345678"));
    slots.remove_card("Reader 0");
    hub.settle();
    assert!(hub.token_ids().is_empty());
    slots.insert("Reader 0", mem.reinserted());
    hub.settle();
    assert_eq!(hub.token_ids(), vec![serial_id()]);

    let guid = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE,
        0xFF,
    ];
    let (hub, _slots, _mem) = hub_with(full_card(Some(guid)));
    assert_eq!(
        hub.token_ids(),
        vec![TokenId::parse("piv:00112233445566778899aabbccddeeff").unwrap()]
    );
    // An all-zero GUID names nothing: the serial does.
    let (hub, _slots, _mem) = hub_with(full_card(Some([0; 16])));
    assert_eq!(hub.token_ids(), vec![serial_id()]);
}

#[test]
fn items_list_keys_and_certificates_including_a_compressed_one() {
    let (hub, _slots, _mem) = hub_with(full_card(None));
    let items = only_token(&hub).items();
    let keys: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some(k),
            _ => None,
        })
        .collect();
    let certs: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 3, "{items:#?}");
    assert_eq!(certs.len(), 3, "{items:#?}");
    let key = |slot: SlotId| {
        keys.iter()
            .find(|k| k.object_id == slot.object_id())
            .unwrap()
    };
    let k9a = key(SlotId::AUTHENTICATION);
    assert_eq!(k9a.key_type, KeyType::EcP256);
    assert_eq!(k9a.constraint, Constraint::Pin);
    assert_eq!(k9a.label, "PIV Authentication");
    assert!(k9a.suitable_for_login);
    assert_eq!(k9a.public_key.as_ref().unwrap().raw, p256_point(&P256_9A));
    let k9c = key(SlotId::SIGNATURE);
    assert_eq!(k9c.key_type, KeyType::EcP384);
    assert_eq!(k9c.constraint, Constraint::PinAlways);
    assert_eq!(k9c.public_key.as_ref().unwrap().raw, p384_point(&P384_9C));
    let k9d = key(SlotId::KEY_MANAGEMENT);
    assert!(k9d.usage.contains(token_core::KeyUsage::DERIVE));
    // The gzip'd 9C certificate comes back as DER.
    let c9c = certs
        .iter()
        .find(|c| c.object_id == SlotId::SIGNATURE.object_id())
        .unwrap();
    assert_eq!(c9c.label, "PIV test 9C");
    assert_eq!(
        c9c.der,
        certificate("PIV test 9C", &p384_point(&P384_9C), &P256_CA, "Test CA")
    );
    // Keys by the names PIV tools use, or by label.
    assert_eq!(
        resolve_key_name("9c", &items),
        Some(SlotId::SIGNATURE.object_id())
    );
    assert_eq!(
        resolve_key_name("Key Management", &items),
        Some(SlotId::KEY_MANAGEMENT.object_id())
    );
    assert_eq!(resolve_key_name("9e", &items), None);
}

#[test]
fn ecdsa_p256_and_p384_signatures_verify_against_the_certificate_keys() {
    let (hub, _slots, _mem) = hub_with(full_card(None));
    let token = only_token(&hub);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        // P-256, message and digest forms.
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&p256_point(&P256_9A)).unwrap();
        let msg = b"signed by slot 9a";
        let sig = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
                msg,
            )
            .await
            .unwrap();
        let sig = p256::ecdsa::DerSignature::from_bytes(&sig).unwrap();
        vk.verify_prehash(&sha2::Sha256::digest(msg), &sig).unwrap();
        // A SHA-384 digest is truncated to the P-256 field (FIPS 186-4 §6.4).
        let digest = sha2::Sha384::digest(msg);
        let sig = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha384),
                &digest,
            )
            .await
            .unwrap();
        let sig = p256::ecdsa::DerSignature::from_bytes(&sig).unwrap();
        vk.verify_prehash(&digest[..32], &sig).unwrap();
        // P-384 in 9C (PIN-always: the verified PIN serves this one signature).
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&p384_point(&P384_9C)).unwrap();
        let sig = s
            .sign(
                &SlotId::SIGNATURE.object_id(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha384),
                msg,
            )
            .await
            .unwrap();
        let sig = p384::ecdsa::DerSignature::from_bytes(&sig).unwrap();
        vk.verify_prehash(&sha2::Sha384::digest(msg), &sig).unwrap();
        // Wrong algorithm for the key, digest of the wrong length: refused before the card.
        let e = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::Ed25519,
                msg,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
        let e = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &[1; 20],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
        let e = s
            .sign(
                &ObjectId::new([0x9E]),
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &[1; 32],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ObjectNotFound);
    });
}

#[test]
fn ecdh_agrees_with_a_host_key() {
    let (hub, _slots, _mem) = hub_with(full_card(None));
    let token = only_token(&hub);
    let host = p256::SecretKey::from_slice(&[0x55; 32]).unwrap();
    let host_point = p256_point(&[0x55; 32]);
    let card_public = p256::PublicKey::from_sec1_bytes(&p256_point(&P256_9D)).unwrap();
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_public.as_affine());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let e = s
            .key_exchange(&SlotId::KEY_MANAGEMENT.object_id(), &host_point)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let shared = s
            .key_exchange(&SlotId::KEY_MANAGEMENT.object_id(), &host_point)
            .await
            .unwrap();
        assert_eq!(&shared[..], expected.raw_secret_bytes().as_slice());
        let e = s
            .key_exchange(&SlotId::KEY_MANAGEMENT.object_id(), &host_point[..33])
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    });
}

#[test]
fn management_key_3des_and_aes192_and_a_wrong_key_is_refused() {
    for alg in [AlgorithmId::TDES, AlgorithmId::AES192, AlgorithmId::AES256] {
        let key = if alg == AlgorithmId::AES256 {
            ManagementKey::new(alg, &[0x5A; 32]).unwrap()
        } else {
            ManagementKey::default_for(alg).unwrap()
        };
        let (hub, _slots, _mem) =
            hub_with(basic_card_sn(100 + u32::from(alg.0)).with_management_key(key.clone()));
        let token = only_token(&hub);
        let m = PivManagement::for_token(token.id()).unwrap();
        if alg != AlgorithmId::AES256 {
            // The default key, with the algorithm GET METADATA reports.
            block_on(m.authenticate()).unwrap();
        }
        m.set_management_key(Some(key.clone()));
        block_on(m.authenticate()).unwrap();
        let wrong = ManagementKey::new(alg, &vec![0x77; key.expose().len()]).unwrap();
        m.set_management_key(Some(wrong));
        let e = block_on(m.authenticate()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed, "{alg}: {e}");
        // A key of another algorithm is refused too.
        let other = if alg == AlgorithmId::TDES {
            AlgorithmId::AES192
        } else {
            AlgorithmId::TDES
        };
        m.set_management_key(Some(ManagementKey::default_for(other).unwrap()));
        assert!(block_on(m.authenticate()).is_err());
        // And a session's generate reports the refusal.
        let e = block_on(async {
            let mut s = token.open_session().await?;
            s.generate_key(&KeySpec {
                key_type: KeyType::EcP256,
                label: "x".into(),
                slot: Some("9e".into()),
                usage: None,
            })
            .await
        })
        .unwrap_err();
        assert!(
            matches!(
                e.code(),
                ErrorCode::AuthenticationFailed | ErrorCode::BadParameter
            ),
            "{e}"
        );
    }
}

#[test]
fn change_the_management_key_then_use_it() {
    let (hub, _slots, _mem) = hub_with(basic_card_sn(201));
    let token = only_token(&hub);
    let m = PivManagement::for_token(token.id()).unwrap();
    let new = ManagementKey::new(AlgorithmId::AES128, &[0x42; 16]).unwrap();
    block_on(m.change_management_key(new.clone(), false)).unwrap();
    block_on(m.authenticate()).unwrap();
    let meta = block_on(m.metadata(0x9B)).unwrap().unwrap();
    assert_eq!(meta.algorithm, AlgorithmId::AES128);
    assert_eq!(meta.is_default, Some(false));
    m.set_management_key(None);
    assert_eq!(
        block_on(m.authenticate()).unwrap_err().code(),
        ErrorCode::AuthenticationFailed
    );
}

#[test]
fn generate_and_import_a_certificate_update_the_items() {
    let (hub, _slots, _mem) = hub_with(basic_card_sn(202));
    let events = hub.watcher().subscribe();
    let token = only_token(&hub);
    let id = token.id().clone();
    let before = token.items().len();
    let key = block_on(async {
        let mut s = token.open_session().await.unwrap();
        let key = s
            .generate_key(&KeySpec {
                key_type: KeyType::EcP256,
                label: "generated".into(),
                slot: Some("9e".into()),
                usage: None,
            })
            .await
            .unwrap();
        let point = key.public_key.clone().unwrap().raw;
        let cert = certificate("generated 9E", &point, &P256_CA, "Test CA");
        let item = s
            .import_certificate("ignored", &cert, Some(&key.object_id))
            .await
            .unwrap();
        assert_eq!(item.der, cert);
        assert_eq!(item.object_id, SlotId::CARD_AUTHENTICATION.object_id());
        // 9E needs no PIN.
        let sig = s
            .sign(
                &key.object_id,
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &[7; 32],
            )
            .await
            .unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        vk.verify_prehash(
            &[7; 32],
            &p256::ecdsa::DerSignature::from_bytes(&sig).unwrap(),
        )
        .unwrap();
        key
    });
    assert_eq!(key.constraint, Constraint::Always);
    assert_eq!(token.items().len(), before + 2);
    let mut changes = 0;
    while let Ok(ev) = TokenWatcher::next_event(&events, Duration::from_millis(300)) {
        if ev == WatchEvent::ItemsChanged(id.clone()) {
            changes += 1;
        }
    }
    assert_eq!(changes, 2, "one ItemsChanged per generate and import");

    // Generated Ed25519 and X25519 keys (YubiKey 5.7) sign and agree.
    let m = PivManagement::for_token(&id).unwrap();
    let ed = block_on(m.generate(
        SlotId::retired(1).unwrap(),
        AlgorithmId::ED25519,
        PinPolicy::Never,
        TouchPolicy::Never,
    ))
    .unwrap();
    assert_eq!(ed.constraint, Constraint::Always);
    let x = block_on(m.generate(
        SlotId::retired(2).unwrap(),
        AlgorithmId::X25519,
        PinPolicy::Default,
        TouchPolicy::Default,
    ))
    .unwrap();
    assert_eq!(x.constraint, Constraint::Pin);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let sig = s
            .sign(&ed.object_id, SignatureAlgorithm::Ed25519, b"hello")
            .await
            .unwrap();
        let vk = ed25519_verifying(&ed.public_key.clone().unwrap().raw);
        use p256::ecdsa::signature::Verifier;
        vk.verify(
            b"hello",
            &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let peer = curve25519_dalek::MontgomeryPoint::mul_base_clamped([9; 32]).to_bytes();
        let shared = s.key_exchange(&x.object_id, &peer).await.unwrap();
        let card_pub: [u8; 32] = x.public_key.clone().unwrap().raw.try_into().unwrap();
        let expected = curve25519_dalek::MontgomeryPoint(card_pub)
            .mul_clamped([9; 32])
            .to_bytes();
        assert_eq!(&shared[..], &expected);
    });
    // A compressed certificate written through the management API reads back.
    let cert = certificate("compressed", &p256_point(&P256_9D), &P256_CA, "Test CA");
    block_on(m.import_certificate(SlotId::KEY_MANAGEMENT, &cert, true)).unwrap();
    block_on(m.refresh()).unwrap();
    assert!(token.items().iter().any(
        |i| matches!(i, Item::Certificate(c) if c.der == cert && c.object_id == SlotId::KEY_MANAGEMENT.object_id())
    ));
}

fn ed25519_verifying(raw: &[u8]) -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::VerifyingKey::from_bytes(&raw.try_into().unwrap()).unwrap()
}

#[test]
fn pin_verify_change_unblock_and_blocking_with_exact_counts() {
    let (hub, _slots, mem) = hub_with(basic_card());
    let token = only_token(&hub);
    let tries = |mem: &MemoryCard| {
        mem.with_simulator(|_| ());
        block_on(async {
            let mut s = token.open_session().await.unwrap();
            s.pin_status(PinKind::User).await.unwrap().retries_left
        })
    };
    assert_eq!(tries(&mem), Some(3));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let e = s
            .verify_pin(PinKind::User, &Pin::from("000000"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.retries_left()),
            (ErrorCode::AuthenticationFailed, Some(2))
        );
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let st = s.pin_status(PinKind::User).await.unwrap();
        assert_eq!(
            st,
            token_core::PinStatus {
                retries_left: Some(3),
                verified: true
            }
        );
        // Change: a wrong old PIN costs a try.
        let e = s
            .change_pin(PinKind::User, &Pin::from("999999"), &Pin::from("654321"))
            .await
            .unwrap_err();
        assert_eq!(e.retries_left(), Some(2));
        s.change_pin(PinKind::User, &Pin::from("123456"), &Pin::from("654321"))
            .await
            .unwrap();
        assert_eq!(
            s.pin_status(PinKind::User).await.unwrap().retries_left,
            Some(3)
        );
        // The session still signs: it keeps the new PIN.
        s.sign(
            &SlotId::AUTHENTICATION.object_id(),
            SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
            &[1; 32],
        )
        .await
        .unwrap();
        // Block it: 3, 2, 1, then blocked.
        for left in [2u8, 1, 0] {
            let e = s
                .verify_pin(PinKind::User, &Pin::from("111111"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
            assert_eq!(e.retries_left(), Some(left));
        }
        let e = s
            .verify_pin(PinKind::User, &Pin::from("654321"))
            .await
            .unwrap_err();
        assert!(e.is_blocked(), "{e}");
        assert_eq!(
            s.pin_status(PinKind::User).await.unwrap().retries_left,
            Some(0)
        );
        // Unblock with the PUK: a wrong PUK costs a PUK try.
        let e = s
            .unblock_pin(&Pin::from("00000000"), &Pin::from("112233"))
            .await
            .unwrap_err();
        assert_eq!(e.retries_left(), Some(2));
        assert_eq!(
            s.pin_status(PinKind::Unblock).await.unwrap().retries_left,
            Some(2)
        );
        s.unblock_pin(&Pin::from("12345678"), &Pin::from("112233"))
            .await
            .unwrap();
        assert_eq!(
            s.pin_status(PinKind::User).await.unwrap().retries_left,
            Some(3)
        );
        assert_eq!(
            s.pin_status(PinKind::Unblock).await.unwrap().retries_left,
            Some(3)
        );
        s.verify_pin(PinKind::User, &Pin::from("112233"))
            .await
            .unwrap();
        // Change the PUK.
        s.change_pin(
            PinKind::Unblock,
            &Pin::from("12345678"),
            &Pin::from("87654321"),
        )
        .await
        .unwrap();
        // Too long to be a PIV PIN: refused before the card.
        let e = s
            .verify_pin(PinKind::User, &Pin::from("123456789"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    });
    assert_eq!(mem.with_simulator(|_| 0), 0);
}

#[test]
fn pin_always_on_9c_needs_a_pin_before_every_signature() {
    let (hub, _slots, _mem) = hub_with(full_card(None));
    let token = only_token(&hub);
    let key = SlotId::SIGNATURE.object_id();
    let alg = SignatureAlgorithm::EcdsaDigest(HashAlg::Sha384);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let e = s.sign(&key, alg, &[3; 48]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        s.sign(&key, alg, &[3; 48]).await.unwrap();
        // The PIN served one signature; 9A (PIN once) still works without asking.
        let e = s.sign(&key, alg, &[3; 48]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.sign(
            &SlotId::AUTHENTICATION.object_id(),
            SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
            &[3; 32],
        )
        .await
        .unwrap();
        // With a callback, it is asked once per signature.
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        s.set_pin_callback(Arc::new(move |r: &PinRequest| {
            assert_eq!(r.kind, PinKind::User);
            counter.fetch_add(1, Ordering::SeqCst);
            Some(Pin::from("123456"))
        }));
        for n in 1..=3 {
            s.sign(&key, alg, &[3; 48]).await.unwrap();
            assert_eq!(asked.load(Ordering::SeqCst), n);
        }
    });
}

#[test]
fn sessions_do_not_share_the_pin_and_logout_forgets_it() {
    let (hub, _slots, _mem) = hub_with(basic_card());
    let token = only_token(&hub);
    let key = SlotId::AUTHENTICATION.object_id();
    let alg = SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256);
    block_on(async {
        let mut a = token.open_session().await.unwrap();
        let mut b = token.open_session().await.unwrap();
        a.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        a.sign(&key, alg, &[1; 32]).await.unwrap();
        // The card is verified, but b did not verify.
        assert_eq!(
            b.sign(&key, alg, &[1; 32]).await.unwrap_err().code(),
            ErrorCode::AuthenticationNeeded
        );
        // b's logout resets the card's state; a still signs, presenting its PIN again.
        b.logout().await.unwrap();
        a.sign(&key, alg, &[1; 32]).await.unwrap();
        a.logout().await.unwrap();
        assert_eq!(
            a.sign(&key, alg, &[1; 32]).await.unwrap_err().code(),
            ErrorCode::AuthenticationNeeded
        );
    });
}

#[test]
fn a_card_without_the_extensions_is_read_from_certificates() {
    // A firmware without GET METADATA (below 5.3): keys come from the certificates' SPKI.
    let (hub, _slots, _mem) = hub_with(full_card(Some([7; 16])).with_version([4, 3, 5]));
    let token = only_token(&hub);
    let keys = token
        .items()
        .into_iter()
        .filter(|i| matches!(i, Item::Key(_)))
        .count();
    assert_eq!(keys, 3);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        // The tries come from an empty VERIFY.
        assert_eq!(
            s.pin_status(PinKind::User).await.unwrap().retries_left,
            Some(3)
        );
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        s.sign(
            &SlotId::AUTHENTICATION.object_id(),
            SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
            &[1; 32],
        )
        .await
        .unwrap();
    });
}

#[test]
fn import_key_through_the_simulator_is_listed_with_its_policy() {
    let card = PivCard::new_with_keys(
        SERIAL,
        [(SlotId::retired(5).unwrap(), SimKey::ed25519([3; 32]))],
    );
    let (hub, _slots, _mem) = hub_with(card);
    let token = only_token(&hub);
    let items = token.items();
    let Some(Item::Key(k)) = items.first() else {
        panic!("{items:?}")
    };
    assert_eq!(k.key_type, KeyType::Ed25519);
    assert_eq!(k.object_id, ObjectId::new([0x86]));
    assert_eq!(resolve_key_name("86", &items), Some(k.object_id.clone()));
    assert_eq!(
        resolve_key_name("retired5", &items),
        Some(k.object_id.clone())
    );
}

#[test]
fn a_foreign_card_is_not_claimed() {
    let slots = TestSlots::new();
    let hub = piv_hub(&slots);
    slots.insert_card("R", Box::new(token_core::testkit::NoCard::default()));
    hub.settle();
    assert!(hub.token_ids().is_empty());
    let mut card = basic_card();
    // The simulator refuses other AIDs.
    let r = card.process(&[
        0x00, 0xA4, 0x04, 0x00, 0x06, 0xD2, 0x76, 0x00, 0x01, 0x24, 0x01,
    ]);
    assert_eq!(r, [0x6A, 0x82]);
}

#[test]
fn a_card_reset_by_another_program_voids_the_sessions_pin_and_says_so() {
    let (hub, _slots, mem) = hub_with(basic_card());
    let token = only_token(&hub);
    let key = SlotId::AUTHENTICATION.object_id();
    let alg = SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        s.sign(&key, alg, &[1; 32]).await.unwrap();
        mem.reset_by_another_program();
        // Reported, not hidden by presenting the remembered PIN again.
        let e = s.sign(&key, alg, &[1; 32]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded, "{e}");
        assert!(e.to_string().contains("reset"), "{e}");
        // With a PIN callback, the user is asked once and the signature goes through.
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a = asked.clone();
        s.set_pin_callback(Arc::new(move |_: &PinRequest| {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(Pin::from("123456"))
        }));
        s.sign(&key, alg, &[1; 32]).await.unwrap();
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
}
