//! YubiKey attestation (INS F9) in the simulator and through `PivManagement`: the attestation
//! certificate of slot F9, certificates for generated keys signed by it and naming the right
//! key, slot, policies, firmware and serial; imported keys and empty slots refused; the
//! attestation key kept by the state file and by a reset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_piv::sim::{PivCard, SimKey};
use driver_piv::{AlgorithmId, PinPolicy, PivManagement, SlotId, TouchPolicy};
use p256::ecdsa::signature::Verifier;
use token_core::{block_on, CertificateInfo, ErrorCode, Item, SubjectPublicKeyInfo, Tag, Tlv};

/// 1.3.6.1.4.1.41482.3.<n>, written out from the OID's arcs (41482 = 0x82 0xC4 0x0A in
/// base 128).
fn yubico_oid(n: u8) -> Vec<u8> {
    vec![0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0xC4, 0x0A, 0x03, n]
}

/// A certificate's TBSCertificate (raw DER), signature algorithm OID and signature bytes.
fn split(cert: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let c = Tlv::parse_exact(cert).unwrap();
    let mut it = c.children();
    let tbs = it.next().unwrap().unwrap();
    let alg = it.next().unwrap().unwrap();
    let oid = Tlv::find(alg.value, Tag::new(0x06)).unwrap().unwrap();
    let bits = it.next().unwrap().unwrap();
    assert_eq!(bits.tag, Tag::new(0x03));
    assert_eq!(bits.value[0], 0, "no unused bits");
    (
        tbs.raw().to_vec(),
        oid.value.to_vec(),
        bits.value[1..].to_vec(),
    )
}

/// The extensions of a certificate, as (OID, critical, value).
fn extensions(cert: &[u8]) -> Vec<(Vec<u8>, bool, Vec<u8>)> {
    let (tbs, _, _) = split(cert);
    let tbs = Tlv::parse_exact(&tbs).unwrap();
    let exts = tbs
        .children()
        .map(Result::unwrap)
        .find(|t| t.tag == Tag::new(0xA3))
        .expect("a v3 certificate with extensions");
    let list = Tlv::parse_exact(exts.value).unwrap();
    list.children()
        .map(Result::unwrap)
        .map(|ext| {
            let mut fields = ext.children().map(Result::unwrap);
            let oid = fields.next().unwrap();
            let mut next = fields.next().unwrap();
            let mut critical = false;
            if next.tag == Tag::new(0x01) {
                critical = next.value == [0xFF];
                next = fields.next().unwrap();
            }
            assert_eq!(next.tag, Tag::new(0x04));
            (oid.value.to_vec(), critical, next.value.to_vec())
        })
        .collect()
}

fn extension(cert: &[u8], oid: &[u8]) -> Vec<u8> {
    extensions(cert)
        .into_iter()
        .find(|(o, _, _)| o == oid)
        .unwrap_or_else(|| panic!("no extension {oid:02x?}"))
        .2
}

/// Checks `cert`'s ECDSA P-256 SHA-256 signature with the P-256 key of `issuer`'s SPKI.
fn verify_signed_by(cert: &[u8], issuer: &[u8]) {
    let (tbs, oid, sig) = split(cert);
    assert_eq!(
        oid,
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02],
        "ecdsa-with-SHA256"
    );
    let ca = CertificateInfo::parse(issuer).unwrap();
    let spki = ca.subject_public_key_info().unwrap();
    assert_eq!(spki.algorithm_oid, SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.public_key).unwrap();
    let sig = p256::ecdsa::DerSignature::from_bytes(&sig).unwrap();
    vk.verify(&tbs, &sig).expect("signed by the issuer's key");
}

#[test]
fn the_attestation_certificate_is_a_self_signed_ca() {
    let card = PivCard::new(SERIAL + 50);
    let f9 = card.attestation_certificate().expect("a new card has one");
    let info = CertificateInfo::parse(&f9).unwrap();
    assert_eq!(info.subject(), info.issuer());
    assert!(info
        .subject_common_name()
        .unwrap()
        .starts_with("Yubico PIV Attestation"));
    verify_signed_by(&f9, &f9);
    // basicConstraints (2.5.29.19) cA TRUE, critical: openssl takes it as a trust anchor.
    let bc = extensions(&f9)
        .into_iter()
        .find(|(o, _, _)| o == &[0x55, 0x1D, 0x13])
        .unwrap();
    assert!(bc.1);
    assert_eq!(bc.2, [0x30, 0x03, 0x01, 0x01, 0xFF]);
    // Another card has another attestation key.
    let other = PivCard::new(SERIAL + 50).attestation_certificate().unwrap();
    assert_ne!(
        CertificateInfo::parse(&other)
            .unwrap()
            .subject_public_key_info_der(),
        info.subject_public_key_info_der()
    );
}

#[test]
fn attest_generated_keys_through_the_driver() {
    let serial = SERIAL + 51;
    let card = PivCard::new_with_keys(
        serial,
        [(SlotId::SIGNATURE, SimKey::p256(&P256_9D).unwrap())],
    );
    let (hub, _slots, _mem) = hub_with(card);
    let token = only_token(&hub);
    let mgmt = PivManagement::for_token(token.id()).unwrap();
    let f9 = block_on(mgmt.attestation_certificate()).unwrap().unwrap();

    for (slot, alg, pin, touch) in [
        (
            SlotId::AUTHENTICATION,
            AlgorithmId::ECC_P256,
            PinPolicy::Always,
            TouchPolicy::Cached,
        ),
        (
            SlotId::KEY_MANAGEMENT,
            AlgorithmId::RSA1024,
            PinPolicy::Never,
            TouchPolicy::Always,
        ),
        (
            SlotId::retired(3).unwrap(),
            AlgorithmId::ED25519,
            PinPolicy::Default,
            TouchPolicy::Default,
        ),
    ] {
        let key = block_on(mgmt.generate(slot, alg, pin, touch)).unwrap();
        let cert = block_on(mgmt.attest(slot)).unwrap();
        let info = CertificateInfo::parse(&cert).unwrap();
        // Issued by F9, signed with its key.
        assert_eq!(
            info.issuer(),
            CertificateInfo::parse(&f9).unwrap().subject()
        );
        verify_signed_by(&cert, &f9);
        // For this key.
        assert_eq!(
            info.subject_public_key_info_der(),
            key.public_key.as_ref().unwrap().to_spki_der(),
            "{slot}"
        );
        assert_eq!(
            info.subject_common_name().unwrap(),
            format!("YubiKey PIV Attestation {slot}")
        );
        // Yubico's extensions: firmware 5.7.1, the serial as a DER INTEGER, the policies (the
        // slot's defaults resolved: 82 is PIN once, touch never).
        assert_eq!(extension(&cert, &yubico_oid(3)), [5, 7, 1]);
        let sn = extension(&cert, &yubico_oid(7));
        let int = Tlv::parse_exact(&sn).unwrap();
        assert_eq!(int.tag, Tag::new(0x02));
        assert_eq!(
            int.value.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)),
            u64::from(serial)
        );
        let policy = match (pin, touch) {
            (PinPolicy::Default, TouchPolicy::Default) => [2, 1],
            (p, t) => [p.byte(), t.byte()],
        };
        assert_eq!(extension(&cert, &yubico_oid(8)), policy, "{slot}");
    }

    // The imported key in 9C is not attested; an empty slot has nothing to attest.
    let e = block_on(mgmt.attest(SlotId::SIGNATURE)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter, "{e}");
    let e = block_on(mgmt.attest(SlotId::CARD_AUTHENTICATION)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound, "{e}");
    // The attestation key is no slot of the token's.
    assert!(token.items().iter().all(|i| match i {
        Item::Key(k) => SlotId::from_object_id(&k.object_id).is_some(),
        _ => true,
    }));
}

#[test]
fn the_attestation_key_survives_the_state_file_and_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.state");
    let first = PivCard::with_state_file(&path)
        .unwrap()
        .attestation_certificate()
        .unwrap();
    let mut card = PivCard::with_state_file(&path).unwrap();
    assert_eq!(card.attestation_certificate().unwrap(), first);
    // Block the PIN and PUK, then RESET (FB).
    select(&mut card);
    let wrong = [
        0x00, 0x20, 0x00, 0x80, 0x08, 0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0xFF, 0xFF,
    ];
    let wrong_puk = [
        0x00, 0x2C, 0x00, 0x80, 0x10, 0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0x31, 0x32,
        0x33, 0x34, 0x35, 0x36, 0xFF, 0xFF,
    ];
    for _ in 0..3 {
        send(&mut card, &wrong);
        send(&mut card, &wrong_puk);
    }
    assert_eq!(send(&mut card, &[0x00, 0xFB, 0x00, 0x00]).1, 0x9000);
    assert_eq!(card.attestation_certificate().unwrap(), first);
    drop(card);
    let card = PivCard::with_state_file(&path).unwrap();
    assert_eq!(card.attestation_certificate().unwrap(), first);
}
