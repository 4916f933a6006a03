//! One card carrying PIV and OpenPGP behind one ATR (what `tokenctl sim multi` serves): the
//! registered drivers make one token per application, and both sign in sessions open at the
//! same time. In memory, through token-core's test kit; the same card goes into pcscd with
//! `tokenctl sim multi`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use token_core::testkit::TestSlots;
use token_core::{block_on, HashAlg, Hub, Item, KeyUsage, Pin, PinKind, SignatureAlgorithm};

#[test]
fn piv_and_openpgp_on_one_card_are_two_tokens_usable_together() {
    let piv = driver_piv::sim::PivCard::new_with_keys(
        31_337,
        [(
            driver_piv::SlotId::AUTHENTICATION,
            driver_piv::sim::SimKey::p256(&[0x21; 32]).unwrap(),
        )],
    );
    let atr = token_core::CardSimulator::atr(&piv);
    let mut pgp = driver_openpgp::sim::OpenPgpCard::new(7);
    pgp.generate_keys().unwrap();
    let card = token_core::MultiApplicationCard::new(atr)
        .with(&driver_piv::PIV_AID, Box::new(piv))
        .with(&driver_openpgp::AID_PREFIX, Box::new(pgp));

    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(driver_piv::PivDriver))
        .driver(0, Arc::new(driver_openpgp::OpenPgpDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("Security Key", Box::new(card));
    hub.settle();
    let mut ids: Vec<String> = hub.token_ids().iter().map(ToString::to_string).collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids[0].starts_with("openpgp:") && ids[1].starts_with("piv:"),
        "{ids:?}"
    );

    let tokens = hub.tokens();
    let mut sessions = Vec::new();
    for t in &tokens {
        let mut s = block_on(t.open_session()).unwrap();
        block_on(s.verify_pin(PinKind::User, &Pin::from("123456"))).unwrap();
        // OpenPGP's signature PIN serves one signature (PW1 status byte 00): the callback
        // gives it again when the card asks.
        s.set_pin_callback(Arc::new(|_: &token_core::PinRequest| {
            Some(Pin::from("123456"))
        }));
        let key = t.items().into_iter().find_map(|i| match i {
            Item::Key(k)
                if k.usage.contains(KeyUsage::SIGN)
                    && k.key_type == token_core::KeyType::EcP256 =>
            {
                Some(k)
            }
            _ => None,
        });
        sessions.push((s, key));
    }
    // Interleave the two applications' operations: each driver re-selects its own AID.
    for round in 0..3u8 {
        for (s, key) in &mut sessions {
            let Some(key) = key else { continue };
            let digest = [round; 32];
            let sig = block_on(s.sign(
                &key.object_id,
                SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
                &digest,
            ))
            .unwrap();
            let vk =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key.as_ref().unwrap().raw)
                    .unwrap();
            let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            vk.verify_prehash(&digest, &sig).unwrap();
        }
    }
    assert!(
        sessions.iter().filter(|(_, k)| k.is_some()).count() >= 1,
        "at least the PIV key is P-256"
    );
}

/// token-core's self-signed certificate works for any driver's key: a P-384 key generated on
/// the PIV simulator gets a certificate that openssl verifies, stored in the key's slot.
#[test]
fn a_piv_p384_key_gets_a_self_signed_certificate_openssl_accepts() {
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(driver_piv::PivDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("R", Box::new(driver_piv::sim::PivCard::new(4_040_404)));
    hub.settle();
    let token = hub.tokens().into_iter().next().unwrap();
    let der = block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.set_pin_callback(Arc::new(|_: &token_core::PinRequest| {
            Some(Pin::from("123456"))
        }));
        let key = s
            .generate_key(&token_core::KeySpec {
                key_type: token_core::KeyType::EcP384,
                label: "p384".into(),
                slot: Some("9d".into()),
                usage: None,
            })
            .await
            .unwrap();
        let cert = token_core::self_signed_certificate(&mut s, &key, "PIV P-384")
            .await
            .unwrap();
        cert.der
    });
    let dir = std::env::temp_dir().join(format!("tk-p384-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("c.pem");
    std::fs::write(&pem, token_core::der_to_pem("CERTIFICATE", &der)).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&pem)
        .arg(&pem)
        .output()
        .expect("openssl must be installed (cargo xtask test installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate is now an item of the token, next to its key.
    let items = token.items();
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::Certificate(c) if c.der == der)));
}
