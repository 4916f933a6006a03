//! The driver against a card that answers garbage: corrupted lengths, TLV and status words
//! give errors (CorruptedData or CommunicationError when only the data is mangled), never a
//! panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_piv::{PivDriver, PivManagement, SlotId};
use proptest::prelude::*;
use token_core::testkit::{self, GarbageCard};
use token_core::{
    block_on, DecryptAlgorithm, Error, ErrorCode, HashAlg, KeySpec, KeyType, Pin, PinKind,
    SignatureAlgorithm,
};

/// The fuller test card with an RSA 1024 key in slot 82 besides. Each test has its own GUID:
/// `PivManagement::for_token` finds tokens by ID, and the tests run at once.
fn card(guid: Option<[u8; 16]>) -> driver_piv::sim::PivCard {
    full_card(guid).with_key(SlotId::retired(1).unwrap(), sim_rsa(&rsa_key(1024)))
}

/// Probes and, if a token comes out, exercises it; returns every error seen.
fn exercise(sim: GarbageCard) -> Vec<Error> {
    let mut errors = Vec::new();
    let token = match testkit::probe_card(&PivDriver, Box::new(sim)) {
        Ok(Some(t)) => t,
        Ok(None) => return errors,
        Err(e) => {
            errors.push(e);
            return errors;
        }
    };
    let _ = token.info();
    // A caller finds keys through the token's items: mangled data may leave a slot out (its
    // certificate or metadata did not parse), and then it has no key to use.
    let listed: Vec<token_core::ObjectId> = token
        .items()
        .into_iter()
        .filter_map(|i| match i {
            token_core::Item::Key(k) => Some(k.object_id),
            _ => None,
        })
        .collect();
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
        note(s.verify_pin(PinKind::User, &Pin::from("123456")).await);
        for (slot, alg, data) in [
            (
                SlotId::AUTHENTICATION,
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                vec![1u8; 32],
            ),
            (
                SlotId::SIGNATURE,
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha384),
                vec![2u8; 100],
            ),
        ] {
            if listed.contains(&slot.object_id()) {
                note(s.sign(&slot.object_id(), alg, &data).await.map(|_| ()));
            }
        }
        if listed.contains(&SlotId::KEY_MANAGEMENT.object_id()) {
            note(
                s.key_exchange(
                    &SlotId::KEY_MANAGEMENT.object_id(),
                    &p256_point(&[0x55; 32]),
                )
                .await
                .map(|_| ()),
            );
        }
        let generated = s
            .generate_key(&KeySpec {
                key_type: KeyType::EcP256,
                label: "g".into(),
                slot: Some("9e".into()),
                usage: None,
            })
            .await;
        let generated = generated.is_ok() || {
            note(generated.map(|_| ()));
            false
        };
        // YubiKey attestation of the generated key, and the F9 certificate.
        match PivManagement::for_token(token.id()) {
            Ok(m) => {
                if generated {
                    note(m.attest(SlotId::CARD_AUTHENTICATION).await.map(|_| ()));
                }
                note(m.attestation_certificate().await.map(|_| ()));
            }
            Err(e) => note(Err(e)),
        }
        // RSA: PKCS#1 v1.5 and PSS signatures, PKCS#1 v1.5 decryption, where listed.
        if listed.contains(&SlotId::retired(1).unwrap().object_id()) {
            let rsa = SlotId::retired(1).unwrap().object_id();
            let ciphertext = rsa_key(1024)
                .to_public_key()
                .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, b"secret")
                .unwrap();
            note(
                s.decrypt(&rsa, DecryptAlgorithm::RsaPkcs1v15, &ciphertext)
                    .await
                    .map(|_| ()),
            );
            note(
                s.sign(
                    &rsa,
                    SignatureAlgorithm::RsaPssMessage(HashAlg::Sha256),
                    b"m",
                )
                .await
                .map(|_| ()),
            );
        }
        note(
            s.change_pin(PinKind::User, &Pin::from("123456"), &Pin::from("123456"))
                .await,
        );
    });
    errors
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Mangled data under a good status word: the driver reports CorruptedData or
    /// CommunicationError (or, for an operation whose own checks fail, the error that check
    /// gives), and never panics.
    #[test]
    fn mangled_data_gives_corrupted_data_or_communication_error(seed in 1u64.., every in 1u64..6) {
        let sim = GarbageCard::new(Box::new(card(Some([5; 16]))), seed, every).data_only();
        for e in exercise(sim) {
            prop_assert!(
                matches!(
                    e.code(),
                    ErrorCode::CorruptedData
                        | ErrorCode::CommunicationError
                        | ErrorCode::AuthenticationFailed
                ),
                "unexpected {e:?}"
            );
        }
    }

    /// Anything goes, status words included: errors of any kind, never a panic.
    #[test]
    fn any_garbage_never_panics(seed in 1u64.., every in 1u64..4) {
        let sim = GarbageCard::new(Box::new(card(None)), seed, every);
        let _ = exercise(sim);
    }
}

#[test]
fn a_clean_card_gives_no_errors_through_the_same_path() {
    // every = u64::MAX: practically never mangles; the path itself is sound.
    let sim = GarbageCard::new(Box::new(card(Some([6; 16]))), 42, u64::MAX).data_only();
    let errors = exercise(sim);
    assert!(errors.is_empty(), "{errors:?}");
}
