//! The hello driver against its simulator: token-core's conformance suite, discovery through
//! inventory, and signatures checked with ed25519-dalek.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hello_driver::{HelloCard, HelloDriver};
use token_core::testkit::conformance::{Outcome, Suite};
use token_core::testkit::TestSlots;
use token_core::{
    block_on, registered_drivers, ErrorCode, Hub, Item, Pin, PinKind, SignatureAlgorithm, TokenId,
};

fn card() -> Box<HelloCard> {
    Box::new(HelloCard::new(0xC0FFEE, [42; 32], "1234"))
}

#[test]
fn passes_the_conformance_suite() {
    let report = Suite::card(Arc::new(HelloDriver), || card() as Box<_>)
        .user_pin("1234")
        .run();
    println!("{report}");
    report.assert_passed();
    // Every check applies to this driver: none may be skipped.
    assert!(
        report.checks.iter().all(|c| c.outcome == Outcome::Passed),
        "{report}"
    );
}

#[test]
fn is_registered_through_inventory_and_found_by_the_hub() {
    assert!(registered_drivers().iter().any(|r| r.id == "hello"));
    let slots = TestSlots::new();
    slots.add_reader("Reader A");
    // No driver is named: the hub takes the registered ones.
    let hub = Hub::builder().provider(slots.provider()).start().unwrap();
    assert!(hub.token_ids().is_empty());
    slots.insert_card("Reader A", card());
    hub.settle();
    let id = TokenId::parse("hello:00c0ffee").unwrap();
    assert_eq!(hub.token_ids(), vec![id.clone()]);
    let info = hub.watcher().token_info(&id).unwrap();
    assert_eq!(info.slot_name, "Reader A");
    let slot = hub.slot_manager().slot("Reader A").unwrap();
    assert_eq!(slot.state, token_core::SlotState::ValidCard);
    assert_eq!(slot.tokens, vec![id]);
}

#[test]
fn signatures_verify_and_long_messages_are_chained() {
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(HelloDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    let memory_card = slots.insert_card("R", card());
    hub.settle();
    let token = hub
        .token(&TokenId::parse("hello:00c0ffee").unwrap())
        .unwrap();
    let Some(Item::Key(key)) = token.items().into_iter().next() else {
        panic!("no key item")
    };
    let public: [u8; 32] = key
        .public_key
        .as_ref()
        .unwrap()
        .raw
        .clone()
        .try_into()
        .unwrap();
    let verifying = VerifyingKey::from_bytes(&public).unwrap();

    // 1000 bytes do not fit one short APDU: SmartCard chains them (CLA 10) by itself.
    let message = vec![0xA5u8; 1000];
    let before = memory_card.exchanges();
    let sig = block_on(async {
        let mut s = token.open_session().await?;
        s.verify_pin(PinKind::User, &Pin::from("1234")).await?;
        s.sign(&key.object_id, SignatureAlgorithm::Ed25519, &message)
            .await
    })
    .unwrap();
    let signature = Signature::from_slice(&sig).unwrap();
    verifying.verify(&message, &signature).unwrap();
    // SELECT+VERIFY, then SELECT + 4 chained blocks (255*3 + 235).
    assert!(memory_card.exchanges() - before >= 6);
}

#[test]
fn wrong_pin_counts_down_and_blocks_without_retries() {
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(HelloDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("R", card());
    hub.settle();
    let token = hub
        .token(&TokenId::parse("hello:00c0ffee").unwrap())
        .unwrap();
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        for left in [2u8, 1] {
            let e = s
                .verify_pin(PinKind::User, &Pin::from("0000"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
            assert_eq!(e.retries_left(), Some(left));
        }
        // The last try is announced as such.
        let asked = Arc::new(std::sync::Mutex::new(None));
        let seen = asked.clone();
        s.set_pin_callback(Arc::new(move |req: &token_core::PinRequest| {
            *seen.lock().unwrap() = Some((req.retries_left, req.is_last_try()));
            None
        }));
        let e = s
            .sign(
                &token_core::ObjectId::new(b"sign"),
                SignatureAlgorithm::Ed25519,
                b"x",
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::CanceledByUser);
        assert_eq!(*asked.lock().unwrap(), Some((Some(1), true)));
        let e = s
            .verify_pin(PinKind::User, &Pin::from("0000"))
            .await
            .unwrap_err();
        assert!(e.is_blocked(), "{e}");
        let e = s
            .verify_pin(PinKind::User, &Pin::from("1234"))
            .await
            .unwrap_err();
        assert!(e.is_blocked(), "the right PIN cannot unblock: {e}");
    });
}

#[test]
fn a_reset_by_another_program_voids_the_sessions_pin() {
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(HelloDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    let memory_card = slots.insert_card("R", card());
    hub.settle();
    let token = hub
        .token(&TokenId::parse("hello:00c0ffee").unwrap())
        .unwrap();
    let key = token_core::ObjectId::new(b"sign");
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from("1234"))
            .await
            .unwrap();
        s.sign(&key, SignatureAlgorithm::Ed25519, b"before")
            .await
            .unwrap();
        memory_card.reset_by_another_program();
        // The lost PIN is reported, not hidden behind a card error.
        let e = s
            .sign(&key, SignatureAlgorithm::Ed25519, b"after")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded, "{e}");
        s.verify_pin(PinKind::User, &Pin::from("1234"))
            .await
            .unwrap();
        s.sign(&key, SignatureAlgorithm::Ed25519, b"after")
            .await
            .unwrap();
    });
}
