//! The driver against a card that answers garbage: corrupted lengths, TLV and status words
//! give errors, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_openpgp::OpenPgpDriver;
use proptest::prelude::*;
use token_core::testkit::{self, GarbageCard};
use token_core::{
    block_on, Error, ErrorCode, HashAlg, KeySpec, KeyType, ObjectId, Pin, PinKind,
    SignatureAlgorithm,
};

/// Probes and, if a token comes out, exercises it; returns every error seen.
fn exercise(sim: GarbageCard) -> Vec<Error> {
    let mut errors = Vec::new();
    let token = match testkit::probe_card(&OpenPgpDriver, Box::new(sim)) {
        Ok(Some(t)) => t,
        Ok(None) => return errors,
        Err(e) => {
            errors.push(e);
            return errors;
        }
    };
    let _ = token.items();
    let _ = token.info();
    block_on(async {
        let mut s = match testkit::open_session(&token).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        let mut note = |r: token_core::Result<()>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        note(s.pin_status(PinKind::User).await.map(|_| ()));
        note(s.verify_pin(PinKind::User, &Pin::from(PW1)).await);
        note(
            s.sign(
                &ObjectId::new("sig"),
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &[1; 32],
            )
            .await
            .map(|_| ()),
        );
        note(
            s.sign(&ObjectId::new("aut"), SignatureAlgorithm::Ed25519, b"m")
                .await
                .map(|_| ()),
        );
        note(
            s.key_exchange(&ObjectId::new("dec"), &p256_point(&[0x55; 32]))
                .await
                .map(|_| ()),
        );
        note(s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await);
        note(
            s.generate_key(&KeySpec {
                key_type: KeyType::Ed25519,
                label: "g".into(),
                slot: Some("aut".into()),
                usage: None,
            })
            .await
            .map(|_| ()),
        );
        note(
            s.change_pin(PinKind::User, &Pin::from(PW1), &Pin::from(PW1))
                .await,
        );
    });
    errors
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Mangled data under a good status word: errors that say the data was bad (or what the
    /// driver's own checks make of misread data objects), never a panic.
    #[test]
    fn mangled_data_gives_clean_errors(seed in 1u64.., every in 1u64..6) {
        let sim = GarbageCard::new(Box::new(card_with_keys()), seed, every).data_only();
        for e in exercise(sim) {
            prop_assert!(
                matches!(
                    e.code(),
                    ErrorCode::CorruptedData
                        | ErrorCode::CommunicationError
                        | ErrorCode::AuthenticationFailed
                        | ErrorCode::ObjectNotFound
                        | ErrorCode::BadParameter
                        | ErrorCode::AuthenticationNeeded
                ),
                "unexpected {e:?}"
            );
        }
    }

    /// Anything goes, status words included: errors of any kind, never a panic.
    #[test]
    fn any_garbage_never_panics(seed in 1u64.., every in 1u64..4) {
        let sim = GarbageCard::new(Box::new(card_with_keys()), seed, every);
        let _ = exercise(sim);
    }
}

#[test]
fn a_clean_card_gives_no_errors_through_the_same_path() {
    let sim = GarbageCard::new(Box::new(card_with_keys()), 42, u64::MAX).data_only();
    let errors = exercise(sim);
    assert!(errors.is_empty(), "{errors:?}");
}
