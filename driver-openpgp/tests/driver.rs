//! The OpenPGP driver against its simulator through the real stack (hub, TokenSession,
//! SmartCard): conformance, items, signatures checked with p256 / ed25519-dalek / rsa, ECDH,
//! RSA decryption, key generation and import (RSA in every import format), PINs (with the
//! KDF-DO on too), the signature counter, factory reset, AES with the key in D5.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use driver_openpgp::sim::OpenPgpCard;
use driver_openpgp::{Algorithm, KeyRef, OpenPgpDriver, OpenPgpSession};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::Digest;
use token_core::testkit::conformance::{Outcome, Suite};
use token_core::{
    block_on, registered_drivers, CardSimulator, Constraint, DecryptAlgorithm, ErrorCode, HashAlg,
    Item, KeyImport, KeySpec, KeyType, KeyUsage, ObjectId, Operation, Pin, PinKind,
    SignatureAlgorithm, SubjectPublicKeyInfo, TokenHandle, TokenId, TokenSession,
};
use zeroize::Zeroizing;

fn sig() -> ObjectId {
    ObjectId::new("sig")
}
fn dec() -> ObjectId {
    ObjectId::new("dec")
}
fn aut() -> ObjectId {
    ObjectId::new("aut")
}

fn openpgp(s: &mut TokenSession) -> &mut OpenPgpSession {
    s.delegate_mut()
        .as_any_mut()
        .unwrap()
        .downcast_mut::<OpenPgpSession>()
        .unwrap()
}

/// ECDSA with the signature key over a SHA-256 `digest` made on the host.
async fn sign_digest(s: &mut TokenSession, digest: &[u8]) -> token_core::Result<Vec<u8>> {
    s.sign(
        &sig(),
        SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        digest,
    )
    .await
}

/// A key to generate without a label, in `slot` (or where the type goes).
fn unlabelled_spec(key_type: KeyType, slot: Option<&str>) -> KeySpec {
    KeySpec {
        key_type,
        label: String::new(),
        slot: slot.map(Into::into),
        usage: None,
    }
}

/// A PKCS#8 key to import without a label, into `slot` (or where the type goes).
fn unlabelled_import(pkcs8: Vec<u8>, slot: Option<&str>) -> KeyImport {
    KeyImport {
        pkcs8: Zeroizing::new(pkcs8),
        label: String::new(),
        slot: slot.map(Into::into),
    }
}

fn public(token: &TokenHandle, object: &ObjectId) -> Vec<u8> {
    token
        .items()
        .into_iter()
        .find_map(|i| match i {
            Item::Key(k) if &k.object_id == object => k.public_key.map(|p| p.raw),
            _ => None,
        })
        .unwrap()
}

#[test]
fn passes_the_conformance_suite() {
    let report = Suite::card(Arc::new(OpenPgpDriver), || Box::new(card_with_keys()))
        .user_pin(PW1)
        .run();
    println!("{report}");
    report.assert_passed();
    assert!(
        report.checks.iter().all(|c| c.outcome == Outcome::Passed),
        "{report}"
    );
}

#[test]
fn is_registered_and_names_the_token_from_the_aid() {
    assert!(registered_drivers().iter().any(|r| r.id == "openpgp"));
    let (slots, hub, memory, token) = hub_with(card_with_keys());
    let info = token.info();
    assert_eq!(info.label, "Alice Liddell");
    assert_eq!(info.serial.as_deref(), Some("00C0FFEE"));
    assert_eq!(info.model.as_deref(), Some("OpenPGP card 3.4"));
    assert_eq!(info.manufacturer.as_deref(), Some("test card"));
    // Out and in again: the same ID.
    slots.remove_card("R");
    hub.settle();
    assert!(hub.token_ids().is_empty());
    slots.insert("R", memory.reinserted());
    hub.settle();
    assert_eq!(hub.token_ids(), vec![TokenId::parse(TOKEN).unwrap()]);
}

#[test]
fn items_are_the_three_keys_and_the_certificate() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let items = token.items();
    let keys: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 3);
    let by = |o: &ObjectId| keys.iter().find(|k| &k.object_id == o).unwrap().clone();
    let s = by(&sig());
    assert_eq!(s.label, "Signature key");
    assert_eq!(s.key_type, KeyType::EcP256);
    assert_eq!(s.usage, KeyUsage::SIGN);
    assert_eq!(s.constraint, Constraint::PinAlways);
    assert_eq!(s.public_key.as_ref().unwrap().raw, p256_point(&SIG_P256));
    assert_eq!(s.key_id, s.public_key.as_ref().unwrap().key_id().to_vec());
    let d = by(&dec());
    assert_eq!(d.label, "Decryption key");
    assert_eq!(d.usage, KeyUsage::DERIVE);
    assert_eq!(d.constraint, Constraint::Pin);
    let a = by(&aut());
    assert_eq!(a.label, "Authentication key");
    assert_eq!(a.key_type, KeyType::Ed25519);
    assert!(a.suitable_for_login);
    let certs: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].object_id, sig());
    assert_eq!(certs[0].der, self_signed_p256("Alice", &SIG_P256));
}

#[test]
fn a_factory_fresh_card_has_no_items() {
    let (_slots, _hub, _memory, token) = hub_with(OpenPgpCard::new(SERIAL));
    assert!(token.items().is_empty());
}

#[test]
fn ecdsa_p256_signatures_verify_and_pw1_holds_for_one_signature() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&p256_point(&SIG_P256)).unwrap();
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let msg = b"signed on an OpenPGP card";
        let der = s
            .sign(
                &sig(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
                msg,
            )
            .await
            .unwrap();
        let signature = p256::ecdsa::DerSignature::from_bytes(&der).unwrap();
        vk.verify_prehash(&sha2::Sha256::digest(msg), &signature)
            .unwrap();
        // C4 byte 1 = 00: a second signature needs the PIN again.
        let e = sign_digest(&mut s, &[0x5A; 32]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let der = sign_digest(&mut s, &[0x5A; 32]).await.unwrap();
        let signature = p256::ecdsa::DerSignature::from_bytes(&der).unwrap();
        vk.verify_prehash(&[0x5A; 32], &signature).unwrap();
        // A digest of the wrong length is refused before the card sees it.
        let e = sign_digest(&mut s, &[1; 20]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
        assert_eq!(openpgp(&mut s).signature_counter().await.unwrap(), 2);
    });
}

#[test]
fn several_signatures_per_pin_when_c4_says_so() {
    let mut card = card_with_keys();
    card.set_pw1_valid_for_several_signatures(true).unwrap();
    let (_slots, _hub, _memory, token) = hub_with(card);
    let Some(Item::Key(k)) = token.items().into_iter().find(|i| i.object_id() == &sig()) else {
        panic!("no signature key")
    };
    assert_eq!(k.constraint, Constraint::Pin);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        for _ in 0..3 {
            sign_digest(&mut s, &[7; 32]).await.unwrap();
        }
        assert_eq!(openpgp(&mut s).signature_counter().await.unwrap(), 3);
    });
}

#[test]
fn ed25519_authentication_signatures_verify() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public(&token, &aut()).try_into().unwrap())
        .unwrap();
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let e = s
            .sign(&aut(), SignatureAlgorithm::Ed25519, b"x")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        // The authentication key (PW1 82) signs as often as asked.
        for msg in [&b"one"[..], &[0xAB; 600][..]] {
            let raw = s
                .sign(&aut(), SignatureAlgorithm::Ed25519, msg)
                .await
                .unwrap();
            let signature = ed25519_dalek::Signature::from_slice(&raw).unwrap();
            use ed25519_dalek::Verifier;
            vk.verify(msg, &signature).unwrap();
        }
        // The signature counter counts PSO:CDS only.
        assert_eq!(openpgp(&mut s).signature_counter().await.unwrap(), 0);
        let e = s
            .sign(
                &aut(),
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &[0; 32],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    });
}

#[test]
fn ecdh_p256_agrees_with_a_host_key() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let host = p256::SecretKey::from_slice(&[0x55; 32]).unwrap();
    let card_public = p256::PublicKey::from_sec1_bytes(&p256_point(&DEC_P256)).unwrap();
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_public.as_affine());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let e = s
            .key_exchange(&dec(), &p256_point(&[0x55; 32]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let shared = s
            .key_exchange(&dec(), &p256_point(&[0x55; 32]))
            .await
            .unwrap();
        assert_eq!(shared.as_slice(), expected.raw_secret_bytes().as_slice());
        let e = s.key_exchange(&dec(), &[4; 10]).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
        let e = s
            .key_exchange(&sig(), &p256_point(&[0x55; 32]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    });
}

#[test]
fn ecdh_x25519_agrees_with_a_host_key() {
    let mut card = OpenPgpCard::new(SERIAL);
    card.put_key(KeyRef::Dec, Algorithm::X25519, &[0x66; 32])
        .unwrap();
    let (_slots, _hub, _memory, token) = hub_with(card);
    let card_public: [u8; 32] = public(&token, &dec()).try_into().unwrap();
    let host_secret = [0x77u8; 32];
    let host_public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(host_secret).to_bytes();
    let expected = curve25519_dalek::MontgomeryPoint(card_public)
        .mul_clamped(host_secret)
        .to_bytes();
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let shared = s.key_exchange(&dec(), &host_public).await.unwrap();
        assert_eq!(shared.as_slice(), &expected);
    });
}

#[test]
fn key_generation_needs_the_admin_pin_and_gives_working_keys() {
    let (_slots, _hub, _memory, token) = hub_with(OpenPgpCard::new(SERIAL));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let spec = KeySpec {
            key_type: KeyType::Ed25519,
            label: "my signing key".into(),
            slot: Some("sig".into()),
            usage: None,
        };
        let e = s.generate_key(&spec).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        let item = s.generate_key(&spec).await.unwrap();
        assert_eq!(item.key_type, KeyType::Ed25519);
        assert_eq!(item.label, "my signing key");
        // The wrong type for a slot is refused before the card is asked.
        let bad = KeySpec {
            key_type: KeyType::X25519,
            slot: Some("aut".into()),
            ..spec.clone()
        };
        assert_eq!(
            s.generate_key(&bad).await.unwrap_err().code(),
            ErrorCode::BadParameter
        );
        let x = s
            .generate_key(&unlabelled_spec(KeyType::X25519, Some("dec")))
            .await
            .unwrap();
        assert_eq!(x.usage, KeyUsage::DERIVE);
        let p384 = s
            .generate_key(&unlabelled_spec(KeyType::EcP384, Some("aut")))
            .await
            .unwrap();
        assert_eq!(p384.label, "Authentication key");
        // The items follow, and the new keys work.
        assert_eq!(token.items().len(), 3);
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let raw = s
            .sign(&sig(), SignatureAlgorithm::Ed25519, b"fresh")
            .await
            .unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(
            &item.public_key.unwrap().raw.try_into().unwrap(),
        )
        .unwrap();
        use ed25519_dalek::Verifier;
        vk.verify(
            b"fresh",
            &ed25519_dalek::Signature::from_slice(&raw).unwrap(),
        )
        .unwrap();
        let der = s
            .sign(
                &aut(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha384),
                b"m",
            )
            .await
            .unwrap();
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&p384.public_key.unwrap().raw).unwrap();
        vk.verify_prehash(
            &sha2::Sha384::digest(b"m"),
            &p384::ecdsa::DerSignature::from_bytes(&der).unwrap(),
        )
        .unwrap();
    });
}

#[test]
fn key_import_with_the_extended_header_list() {
    let (_slots, _hub, _memory, token) = hub_with(OpenPgpCard::new(SERIAL));
    let scalar = [0x42u8; 32];
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let import = KeyImport {
            pkcs8: Zeroizing::new(pkcs8_p256(&scalar)),
            label: "imported".into(),
            slot: Some("sig".into()),
        };
        assert_eq!(
            s.import_key(&import).await.unwrap_err().code(),
            ErrorCode::AuthenticationNeeded
        );
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        let item = s.import_key(&import).await.unwrap();
        assert_eq!(item.public_key.unwrap().raw, p256_point(&scalar));
        let ed = s
            .import_key(&unlabelled_import(
                pkcs8_curve25519(SubjectPublicKeyInfo::OID_ED25519, &[0x24; 32]),
                Some("aut"),
            ))
            .await
            .unwrap();
        let expected = ed25519_dalek::SigningKey::from_bytes(&[0x24; 32]).verifying_key();
        assert_eq!(ed.public_key.unwrap().raw, expected.to_bytes().to_vec());
        let x = s
            .import_key(&unlabelled_import(
                pkcs8_curve25519(SubjectPublicKeyInfo::OID_X25519, &[0x25; 32]),
                None,
            ))
            .await
            .unwrap();
        assert_eq!(x.object_id, dec());
        let garbage = unlabelled_import(vec![0x30, 0x03, 0x02, 0x01, 0x00], None);
        assert_eq!(
            s.import_key(&garbage).await.unwrap_err().code(),
            ErrorCode::CorruptedData
        );
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let der = sign_digest(&mut s, &[9; 32]).await.unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&p256_point(&scalar)).unwrap();
        vk.verify_prehash(
            &[9; 32],
            &p256::ecdsa::DerSignature::from_bytes(&der).unwrap(),
        )
        .unwrap();
    });
    assert_eq!(token.items().len(), 3);
}

#[test]
fn pins_count_block_change_and_unblock() {
    let (_slots, _hub, memory, token) = hub_with(card_with_keys());
    let tries = |_: &token_core::testkit::MemoryCard| {
        block_on(async {
            let mut s = token.open_session().await.unwrap();
            (
                s.pin_status(PinKind::User).await.unwrap().retries_left,
                s.pin_status(PinKind::Unblock).await.unwrap().retries_left,
                s.pin_status(PinKind::Admin).await.unwrap().retries_left,
            )
        })
    };
    assert_eq!(tries(&memory), (Some(3), Some(3), Some(3)));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        for left in [2u8, 1, 0] {
            let e = s
                .verify_pin(PinKind::User, &Pin::from("000000"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
            assert_eq!(e.retries_left(), Some(left));
        }
        let e = s
            .verify_pin(PinKind::User, &Pin::from(PW1))
            .await
            .unwrap_err();
        assert!(e.is_blocked(), "{e}");
        // A wrong resetting code costs one of its tries.
        let e = s
            .unblock_pin(&Pin::from("wrongcode"), &Pin::from("654321"))
            .await
            .unwrap_err();
        assert_eq!(e.retries_left(), Some(2));
        s.unblock_pin(&Pin::from(RESETTING_CODE), &Pin::from("654321"))
            .await
            .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("654321"))
            .await
            .unwrap();
        // Change the user PIN; a wrong old PIN counts.
        let e = s
            .change_pin(PinKind::User, &Pin::from("111111"), &Pin::from("222222"))
            .await
            .unwrap_err();
        assert_eq!(e.retries_left(), Some(2));
        s.change_pin(PinKind::User, &Pin::from("654321"), &Pin::from("222222"))
            .await
            .unwrap();
        // Admin PIN: change it, then reset the user PIN with it (no resetting code).
        s.change_pin(PinKind::Admin, &Pin::from(PW3), &Pin::from("87654321"))
            .await
            .unwrap();
        assert_eq!(
            s.unblock_pin(&Pin::from(""), &Pin::from("333333"))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AuthenticationNeeded
        );
        s.verify_pin(PinKind::Admin, &Pin::from("87654321"))
            .await
            .unwrap();
        s.unblock_pin(&Pin::from(""), &Pin::from("333333"))
            .await
            .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("333333"))
            .await
            .unwrap();
    });
    assert_eq!(tries(&memory), (Some(3), Some(3), Some(3)));
}

#[test]
fn the_session_pin_is_void_after_a_card_reset() {
    let (_slots, _hub, memory, token) = hub_with(card_with_keys());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        s.sign(&aut(), SignatureAlgorithm::Ed25519, b"a")
            .await
            .unwrap();
        memory.reset_by_another_program();
        let e = s
            .sign(&aut(), SignatureAlgorithm::Ed25519, b"a")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
    });
}

#[test]
fn factory_reset_needs_the_admin_pin_and_clears_the_card() {
    let (_slots, hub, _memory, token) = hub_with(card_with_keys());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        s.change_pin(PinKind::User, &Pin::from(PW1), &Pin::from("999999"))
            .await
            .unwrap();
        let e = openpgp(&mut s).factory_reset().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        openpgp(&mut s).factory_reset().await.unwrap();
        // Everything is gone; the PINs are the factory ones.
        assert!(token.items().is_empty());
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
    });
    hub.settle();
    assert_eq!(hub.token_ids(), vec![TokenId::parse(TOKEN).unwrap()]);
}

#[test]
fn certificates_can_be_stored_with_the_admin_pin() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let cert = self_signed_p256("Bob", &[0x12; 32]);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        let item = s
            .import_certificate("Bob", &cert, Some(&aut()))
            .await
            .unwrap();
        assert_eq!(item.object_id, aut());
    });
    assert_eq!(
        token
            .items()
            .iter()
            .filter(|i| matches!(i, Item::Certificate(_)))
            .count(),
        2
    );
}

#[test]
fn a_new_probe_reads_every_certificate_through_select_data() {
    let mut card = card_with_keys();
    card.set_certificate(KeyRef::Dec, &self_signed_p256("Dec", &[0x13; 32]))
        .unwrap();
    card.set_certificate(KeyRef::Aut, &self_signed_p256("Aut", &[0x14; 32]))
        .unwrap();
    let (_slots, _hub, _memory, token) = hub_with(card);
    let mut certs: Vec<_> = token
        .items()
        .into_iter()
        .filter_map(|i| match i {
            Item::Certificate(c) => Some((c.object_id, c.label)),
            _ => None,
        })
        .collect();
    certs.sort();
    assert_eq!(
        certs,
        vec![
            (aut(), "Authentication certificate".to_string()),
            (dec(), "Decryption certificate".to_string()),
            (sig(), "Signature certificate".to_string()),
        ]
    );
}

#[test]
fn hub_finds_the_card_among_others() {
    let slots = token_core::testkit::TestSlots::new();
    let hub = openpgp_hub(&slots);
    slots.insert_card("A", Box::new(token_core::testkit::NoCard::default()));
    slots.insert_card("B", Box::new(card_with_keys()));
    hub.settle();
    assert_eq!(hub.token_ids(), vec![TokenId::parse(TOKEN).unwrap()]);
}

#[test]
fn long_certificates_travel_by_chaining_or_extended_length() {
    let cert = self_signed_p256(&"x".repeat(600), &[0x12; 32]);
    assert!(cert.len() > 1200, "{}", cert.len());
    for extended in [false, true] {
        let slots = token_core::testkit::TestSlots::new();
        let hub = openpgp_hub(&slots);
        let memory = token_core::testkit::MemoryCard::new(Box::new(card_with_keys()));
        let memory = if extended {
            memory.with_caps(token_core::ChannelCaps {
                extended_length: true,
                max_command: 4096,
                max_response: 4096,
            })
        } else {
            memory
        };
        slots.insert("R", memory.clone());
        hub.settle();
        let token = the_token(&hub);
        let before = memory.exchanges();
        block_on(async {
            let mut s = token.open_session().await.unwrap();
            s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
            s.import_certificate("long", &cert, Some(&dec()))
                .await
                .unwrap();
        });
        let used = memory.exchanges() - before;
        // SELECT, GET DATA F9 (the KDF-DO, before any PIN), VERIFY, SELECT, SELECT DATA, the
        // PUT DATA (one APDU extended, six chained blocks otherwise), SELECT DATA 0 to leave
        // the first occurrence selected.
        if extended {
            assert_eq!(used, 7, "extended");
        } else {
            assert!(used >= 10, "chained: {used}");
        }
        // A new probe reads it back (GET RESPONSE or one extended answer).
        slots.remove_card("R");
        hub.settle();
        slots.insert("R", memory.reinserted());
        hub.settle();
        let token = hub.token(&TokenId::parse(TOKEN).unwrap()).unwrap();
        assert!(token
            .items()
            .iter()
            .any(|i| matches!(i, Item::Certificate(c) if c.der == cert && c.object_id == dec())));
    }
}

#[test]
fn a_blocked_admin_pin_allows_the_factory_reset() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        for left in [2u8, 1, 0] {
            let e = s
                .verify_pin(PinKind::Admin, &Pin::from("00000000"))
                .await
                .unwrap_err();
            assert_eq!(e.retries_left(), Some(left));
        }
        assert_eq!(
            s.pin_status(PinKind::Admin).await.unwrap().retries_left,
            Some(0)
        );
        openpgp(&mut s).factory_reset().await.unwrap();
        assert_eq!(
            s.pin_status(PinKind::Admin).await.unwrap().retries_left,
            Some(3)
        );
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
    });
    assert!(token.items().is_empty());
}

#[test]
fn a_new_signature_key_restarts_the_signature_counter() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        sign_digest(&mut s, &[1; 32]).await.unwrap();
        assert_eq!(openpgp(&mut s).signature_counter().await.unwrap(), 1);
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        s.generate_key(&unlabelled_spec(KeyType::EcP256, None))
            .await
            .unwrap();
        assert_eq!(openpgp(&mut s).signature_counter().await.unwrap(), 0);
    });
}

/// An admin operation without PW3 makes TokenSession ask its callback for the admin PIN (the
/// driver's AuthenticationNeeded names it), once, and the operation then goes through.
#[test]
fn an_admin_operation_asks_the_callback_for_the_admin_pin() {
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.set_pin_callback(Arc::new(move |req: &token_core::PinRequest| {
            seen.lock().unwrap().push((req.kind, req.retries_left));
            Some(Pin::from(PW3))
        }));
        s.generate_key(&unlabelled_spec(KeyType::EcP256, Some("aut")))
            .await
            .unwrap();
        assert_eq!(
            s.pin_status(PinKind::User).await.unwrap().retries_left,
            Some(3)
        );
    });
    assert_eq!(*asked.lock().unwrap(), vec![(PinKind::Admin, Some(3))]);
}

fn rsa_card() -> OpenPgpCard {
    let mut card = OpenPgpCard::new(SERIAL);
    card.put_key(KeyRef::Sig, Algorithm::rsa(2048), &rsa_pkcs1(RSA2048_PK8))
        .unwrap();
    card.put_key(KeyRef::Dec, Algorithm::rsa(4096), &rsa_pkcs1(RSA4096_PK8))
        .unwrap();
    card.put_key(KeyRef::Aut, Algorithm::rsa(3072), &rsa_pkcs1(RSA3072_PK8))
        .unwrap();
    card
}

#[test]
fn passes_the_conformance_suite_with_rsa_keys() {
    let report = Suite::card(Arc::new(OpenPgpDriver), || Box::new(rsa_card()))
        .user_pin(PW1)
        .run();
    println!("{report}");
    report.assert_passed();
}

#[test]
fn rsa_keys_are_listed_and_their_signatures_verify() {
    let (_slots, _hub, _memory, token) = hub_with(rsa_card());
    assert_eq!(public(&token, &sig()), rsa_public_der(RSA2048_PK8));
    assert_eq!(public(&token, &aut()), rsa_public_der(RSA3072_PK8));
    assert_eq!(public(&token, &dec()), rsa_public_der(RSA4096_PK8));
    let usages: Vec<_> = token
        .items()
        .into_iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some((k.object_id.clone(), k.key_type, k.usage)),
            _ => None,
        })
        .collect();
    assert!(usages.contains(&(sig(), KeyType::Rsa(2048), KeyUsage::SIGN)));
    assert!(usages.contains(&(aut(), KeyType::Rsa(3072), KeyUsage::SIGN)));
    assert!(usages.contains(&(dec(), KeyType::Rsa(4096), KeyUsage::DECRYPT)));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        let pkcs = SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha256);
        assert!(s.supports(Operation::Sign(pkcs), &sig()));
        assert!(!s.supports(
            Operation::Sign(SignatureAlgorithm::RsaPssMessage(HashAlg::Sha256)),
            &sig()
        ));
        assert!(!s.supports(
            Operation::Sign(SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256)),
            &sig()
        ));
        assert!(!s.supports(Operation::Sign(pkcs), &dec()));
        assert!(s.supports(Operation::Decrypt(DecryptAlgorithm::RsaPkcs1v15), &dec()));
        assert!(!s.supports(Operation::KeyExchange, &dec()));
        assert_eq!(
            s.sign(&sig(), pkcs, b"m").await.unwrap_err().code(),
            ErrorCode::AuthenticationNeeded
        );
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        // PSO:COMPUTE DIGITAL SIGNATURE over the DigestInfo the driver builds.
        let signature = s.sign(&sig(), pkcs, b"an RSA message").await.unwrap();
        assert_eq!(signature.len(), 256);
        rsa_verify(
            &rsa_public_der(RSA2048_PK8),
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(b"an RSA message"),
            &signature,
        );
        // A digest the caller made; SHA-384.
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let digest = sha2::Sha384::digest(b"digest first");
        let signature = s
            .sign(
                &sig(),
                SignatureAlgorithm::RsaPkcs1v15Digest(HashAlg::Sha384),
                &digest,
            )
            .await
            .unwrap();
        rsa_verify(
            &rsa_public_der(RSA2048_PK8),
            rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            &digest,
            &signature,
        );
        // INTERNAL AUTHENTICATE with the 3072-bit key, SHA-512.
        let signature = s
            .sign(
                &aut(),
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha512),
                b"ssh login",
            )
            .await
            .unwrap();
        assert_eq!(signature.len(), 384);
        rsa_verify(
            &rsa_public_der(RSA3072_PK8),
            rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            &sha2::Sha512::digest(b"ssh login"),
            &signature,
        );
        // A wrong digest length, PSS and SHA-1 are refused before the card is asked.
        assert_eq!(
            s.sign(
                &aut(),
                SignatureAlgorithm::RsaPkcs1v15Digest(HashAlg::Sha256),
                &[0; 31]
            )
            .await
            .unwrap_err()
            .code(),
            ErrorCode::BadParameter
        );
        assert_eq!(
            s.sign(
                &aut(),
                SignatureAlgorithm::RsaPssMessage(HashAlg::Sha256),
                b"m"
            )
            .await
            .unwrap_err()
            .code(),
            ErrorCode::NotImplemented
        );
        assert_eq!(
            s.sign(
                &aut(),
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha1),
                b"m"
            )
            .await
            .unwrap_err()
            .code(),
            ErrorCode::NotImplemented
        );
    });
}

#[test]
fn rsa_4096_decipher_round_trips_through_extended_or_chained_apdus() {
    let (_slots, _hub, _memory, token) = hub_with(rsa_card());
    let public = rsa_public_der(RSA4096_PK8);
    let secret = b"a 32-byte session key for AES!!!";
    let cryptogram = rsa_encrypt(&public, secret);
    assert_eq!(cryptogram.len(), 512);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        assert_eq!(
            s.decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &cryptogram)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AuthenticationNeeded
        );
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let plain = s
            .decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &cryptogram)
            .await
            .unwrap();
        assert_eq!(plain.as_slice(), secret);
        // Another message, another random padding: still right.
        let again = rsa_encrypt(&public, b"x");
        let plain = s
            .decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &again)
            .await
            .unwrap();
        assert_eq!(plain.as_slice(), b"x");
        // A cryptogram that is not one for this key fails on the card (bad padding).
        let mut broken = cryptogram.clone();
        broken[100] ^= 1;
        let e = s
            .decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &broken)
            .await
            .unwrap_err();
        assert_eq!(e.status_word().map(|w| w.to_bytes()), Some([0x6A, 0x80]));
        // OAEP is not something the card does; the signing keys do not decrypt.
        assert_eq!(
            s.decrypt(
                &dec(),
                DecryptAlgorithm::RsaOaep(HashAlg::Sha256),
                &cryptogram
            )
            .await
            .unwrap_err()
            .code(),
            ErrorCode::NotImplemented
        );
        assert_eq!(
            s.decrypt(&sig(), DecryptAlgorithm::RsaPkcs1v15, &cryptogram)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::BadParameter
        );
        assert_eq!(
            s.decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &[1; 513])
                .await
                .unwrap_err()
                .code(),
            ErrorCode::BadParameter
        );
    });
}

#[test]
fn rsa_key_generation_and_fingerprint_through_the_driver() {
    let (_slots, _hub, memory, token) = hub_with(OpenPgpCard::new(SERIAL));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        let spec = KeySpec {
            key_type: KeyType::Rsa(2048),
            label: "rsa signer".into(),
            slot: Some("sig".into()),
            usage: None,
        };
        let item = s.generate_key(&spec).await.unwrap();
        assert_eq!(item.key_type, KeyType::Rsa(2048));
        let public = item.public_key.unwrap().raw;
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let signature = s
            .sign(
                &sig(),
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha256),
                b"generated on the card",
            )
            .await
            .unwrap();
        rsa_verify(
            &public,
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(b"generated on the card"),
            &signature,
        );
        // RSA of a size the card does not take is refused before the card is asked.
        let odd = KeySpec {
            key_type: KeyType::Rsa(1024),
            ..spec.clone()
        };
        assert_eq!(
            s.generate_key(&odd).await.unwrap_err().code(),
            ErrorCode::BadParameter
        );
    });
    // The card's attributes now say RSA 2048 (01 0800 0020 00, as GnuPG writes them).
    memory.with_simulator(|card| {
        card.process(&[
            0x00, 0xA4, 0x04, 0x00, 0x06, 0xD2, 0x76, 0x00, 0x01, 0x24, 0x01,
        ]);
        assert_eq!(
            card.process(&[0x00, 0xCA, 0x00, 0xC1, 0x00]),
            [0x01, 0x08, 0x00, 0x00, 0x20, 0x00, 0x90, 0x00]
        );
    });
    assert_eq!(
        token
            .items()
            .iter()
            .filter(|i| matches!(i, Item::Key(k) if k.key_type == KeyType::Rsa(2048)))
            .count(),
        1
    );
}

#[test]
fn rsa_import_in_each_import_format() {
    use driver_openpgp::RsaImportFormat as F;
    for format in [
        F::Standard,
        F::StandardWithModulus,
        F::Crt,
        F::CrtWithModulus,
    ] {
        let mut card = OpenPgpCard::new(SERIAL);
        let attrs = Algorithm::Rsa {
            bits: 2048,
            exponent_bits: 0x11,
            format,
        };
        card.set_algorithm(KeyRef::Sig, attrs).unwrap();
        let (_slots, _hub, _memory, token) = hub_with(card);
        block_on(async {
            let mut s = token.open_session().await.unwrap();
            s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
            let item = s
                .import_key(&KeyImport {
                    pkcs8: Zeroizing::new(RSA2048_PK8.to_vec()),
                    label: "imported rsa".into(),
                    slot: Some("sig".into()),
                })
                .await
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(item.public_key.unwrap().raw, rsa_public_der(RSA2048_PK8));
            s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
            let signature = s
                .sign(
                    &sig(),
                    SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha256),
                    b"imported",
                )
                .await
                .unwrap();
            rsa_verify(
                &rsa_public_der(RSA2048_PK8),
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(b"imported"),
                &signature,
            );
        });
    }
}

#[test]
fn rsa_4096_import_with_crt_and_modulus_travels_in_pieces() {
    let mut card = OpenPgpCard::new(SERIAL);
    card.set_algorithm(
        KeyRef::Dec,
        Algorithm::Rsa {
            bits: 4096,
            exponent_bits: 0x20,
            format: driver_openpgp::RsaImportFormat::CrtWithModulus,
        },
    )
    .unwrap();
    let (_slots, _hub, _memory, token) = hub_with(card);
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        let item = s
            .import_key(&unlabelled_import(RSA4096_PK8.to_vec(), None))
            .await
            .unwrap();
        // An RSA key without a slot goes to sig; this one was asked for dec's attributes.
        assert_eq!(item.object_id, sig());
        let item = s
            .import_key(&unlabelled_import(RSA4096_PK8.to_vec(), Some("dec")))
            .await
            .unwrap();
        assert_eq!(item.usage, KeyUsage::DECRYPT);
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let cryptogram = rsa_encrypt(&rsa_public_der(RSA4096_PK8), b"four thousand");
        let plain = s
            .decrypt(&dec(), DecryptAlgorithm::RsaPkcs1v15, &cryptogram)
            .await
            .unwrap();
        assert_eq!(plain.as_slice(), b"four thousand");
    });
}

/// PUT DATA F9 as GnuPG's `kdf-setup` sends it (KDF_ITERSALTED_S2K, SHA-256, a count, the
/// three salts, the initial hashes of 123456 and 12345678), sent to the card after VERIFY
/// PW3 with the plain factory PIN.
fn kdf_card(count: u32) -> OpenPgpCard {
    let mut card = card_with_keys();
    card.power_on();
    let mut send = |apdu: &[u8]| {
        let r = card.process(apdu);
        assert_eq!(r[r.len() - 2..], [0x90, 0x00], "{apdu:02x?}");
    };
    send(&[
        0x00, 0xA4, 0x04, 0x00, 0x06, 0xD2, 0x76, 0x00, 0x01, 0x24, 0x01,
    ]);
    let mut verify = vec![0x00, 0x20, 0x00, 0x83, 0x08];
    verify.extend_from_slice(PW3.as_bytes());
    send(&verify);
    let mut f9 = vec![0x81, 0x01, 0x03, 0x82, 0x01, 0x08, 0x83, 0x04];
    f9.extend_from_slice(&count.to_be_bytes());
    for (t, salt) in [(0x84u8, [1u8; 8]), (0x85, [2; 8]), (0x86, [3; 8])] {
        f9.extend_from_slice(&[t, 0x08]);
        f9.extend_from_slice(&salt);
    }
    f9.extend_from_slice(&[0x87, 0x20]);
    f9.extend_from_slice(&s2k_sha256(&[1; 8], PW1.as_bytes(), count as usize));
    f9.extend_from_slice(&[0x88, 0x20]);
    f9.extend_from_slice(&s2k_sha256(&[3; 8], PW3.as_bytes(), count as usize));
    let mut put = vec![0x00, 0xDA, 0x00, 0xF9, f9.len() as u8];
    put.extend_from_slice(&f9);
    send(&put);
    card
}

#[test]
fn with_the_kdf_do_on_the_driver_sends_derived_pins() {
    let count = 100_000;
    let (_slots, _hub, memory, token) = hub_with(kdf_card(count));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        // The user PIN as typed: the driver derives it, the card takes it.
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let der = s
            .sign(
                &sig(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
                b"kdf",
            )
            .await
            .unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&p256_point(&SIG_P256)).unwrap();
        vk.verify_prehash(
            &sha2::Sha256::digest(b"kdf"),
            &p256::ecdsa::DerSignature::from_bytes(&der).unwrap(),
        )
        .unwrap();
        // A wrong PIN still costs a try.
        let e = s
            .verify_pin(PinKind::User, &Pin::from("654321"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        // Changed and reset PINs go derived too: the new PIN works through the driver.
        s.change_pin(PinKind::User, &Pin::from(PW1), &Pin::from("24681357"))
            .await
            .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("24681357"))
            .await
            .unwrap();
        openpgp(&mut s)
            .reset_user_pin_as_admin(&Pin::from("13572468"))
            .await
            .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("13572468"))
            .await
            .unwrap();
        openpgp(&mut s)
            .set_resetting_code(&Pin::from("resetting"))
            .await
            .unwrap();
        s.unblock_pin(&Pin::from("resetting"), &Pin::from("11223344"))
            .await
            .unwrap();
        s.verify_pin(PinKind::User, &Pin::from("11223344"))
            .await
            .unwrap();
    });
    // What the card holds is the S2K hash (salt 84 for PW1), never the PIN: VERIFY with the
    // plain PIN fails, with the hash computed here it succeeds.
    memory.with_simulator(|card| {
        let mut verify = |pin: &[u8]| {
            let mut apdu = vec![0x00, 0x20, 0x00, 0x82, pin.len() as u8];
            apdu.extend_from_slice(pin);
            let r = card.process(&apdu);
            u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
        };
        assert_eq!(verify(b"11223344") & 0xFFF0, 0x63C0);
        assert_eq!(
            verify(&s2k_sha256(&[1; 8], b"11223344", count as usize)),
            0x9000
        );
    });
}

#[test]
fn aes_encipher_and_decipher_with_the_key_in_d5() {
    let key = [0x5A; 16];
    let mut card = card_with_keys();
    card.set_aes_key(&key).unwrap();
    let (_slots, _hub, _memory, token) = hub_with(card);
    let plain = *b"sixteen byte blk and another one";
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        assert_eq!(
            openpgp(&mut s)
                .aes_encipher(&plain)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AuthenticationNeeded
        );
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let cryptogram = openpgp(&mut s).aes_encipher(&plain).await.unwrap();
        assert_eq!(cryptogram, aes_cbc_encrypt(&key, &plain));
        let back = openpgp(&mut s).aes_decipher(&cryptogram).await.unwrap();
        assert_eq!(back.as_slice(), plain);
        assert_eq!(
            openpgp(&mut s)
                .aes_encipher(&plain[..15])
                .await
                .unwrap_err()
                .code(),
            ErrorCode::BadParameter
        );
    });
    // A card without a key in D5 refuses (6A88).
    let (_slots, _hub, _memory, token) = hub_with(card_with_keys());
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        let e = openpgp(&mut s).aes_encipher(&plain).await.unwrap_err();
        assert_eq!(e.status_word().map(|w| w.to_bytes()), Some([0x6A, 0x88]));
    });
}

/// The simulator with its extended capabilities' AES bit cleared (C0 byte 1, bit 2), as a
/// card without PSO:DEC/ENC with AES answers.
struct NoAesCard(OpenPgpCard);

impl CardSimulator for NoAesCard {
    fn atr(&self) -> Vec<u8> {
        self.0.atr()
    }
    fn power_on(&mut self) {
        self.0.power_on();
    }
    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let mut answer = self.0.process(command);
        if command.get(1..4) == Some(&[0xCA, 0x00, 0x6E]) {
            // 73 { C0 <caps> ...}: the first byte after C0 0A.
            if let Some(i) = answer.windows(2).position(|w| w == [0xC0, 0x0A]) {
                answer[i + 2] &= !0x02;
            }
        }
        answer
    }
}

#[test]
fn aes_is_not_offered_when_the_card_does_not_announce_it() {
    let mut card = card_with_keys();
    card.set_aes_key(&[1; 16]).unwrap();
    let (_slots, _hub, _memory, token) = hub_with_sim(Box::new(NoAesCard(card)));
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from(PW1)).await.unwrap();
        assert_eq!(
            openpgp(&mut s)
                .aes_encipher(&[0; 16])
                .await
                .unwrap_err()
                .code(),
            ErrorCode::NotImplemented
        );
    });
}
