//! The simulator on its own, APDU by APDU (OpenPGP card 3.4 examples), its state file, and
//! arbitrary APDUs (never a panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_openpgp::sim::OpenPgpCard;
use driver_openpgp::{Algorithm, KeyRef};
use proptest::prelude::*;
use token_core::{CardSimulator, Tag, Tlv};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Sends an APDU given in hex; returns (data, SW).
fn send(card: &mut OpenPgpCard, apdu: &str) -> (Vec<u8>, u16) {
    send_raw(card, &hex(apdu))
}

fn send_raw(card: &mut OpenPgpCard, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut r = card.process(apdu);
    assert!(r.len() >= 2);
    let sw = r.split_off(r.len() - 2);
    (r, u16::from_be_bytes([sw[0], sw[1]]))
}

fn selected(card: OpenPgpCard) -> OpenPgpCard {
    let mut card = card;
    card.power_on();
    assert_eq!(
        send(&mut card, "00 A4 04 00 06 D2 76 00 01 24 01").1,
        0x9000
    );
    card
}

#[test]
fn select_and_the_aid() {
    let mut card = OpenPgpCard::new(SERIAL);
    card.power_on();
    assert_eq!(
        send(&mut card, "00 CA 00 4F 00").1,
        0x6985,
        "not selected yet"
    );
    assert_eq!(
        send(&mut card, "00 A4 04 00 06 A0 00 00 03 08 00").1,
        0x6A82
    );
    assert_eq!(
        send(&mut card, "00 A4 04 00 06 D2 76 00 01 24 01").1,
        0x9000
    );
    let (aid, sw) = send(&mut card, "00 CA 00 4F 00");
    assert_eq!(sw, 0x9000);
    assert_eq!(aid, hex("D2760001240103 04 FFFE 00C0FFEE 0000"));
    assert_eq!(card.aid().to_vec(), aid);
    // The ATR parses, and is a YubiKey's.
    assert!(token_core::Atr::parse(&card.atr()).is_ok());
}

#[test]
fn application_related_data_has_every_object() {
    let mut card = selected(card_with_keys());
    let (data, sw) = send(&mut card, "00 CA 00 6E 00");
    assert_eq!(sw, 0x9000);
    let t = |v: u32| Tag::new(v);
    let ard = Tlv::parse_exact(&data).unwrap();
    assert_eq!(ard.tag, t(0x6E));
    assert_eq!(ard.child(t(0x4F)).unwrap().unwrap().value, card.aid());
    assert!(ard.child(t(0x5F52)).unwrap().is_some());
    assert_eq!(
        ard.child(t(0x7F66)).unwrap().unwrap().value,
        hex("0202 0800 0202 0800")
    );
    let dd = ard.child(t(0x73)).unwrap().unwrap();
    for tag in [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xCD, 0xDE] {
        assert!(dd.child(t(tag)).unwrap().is_some(), "{tag:X}");
    }
    assert_eq!(
        dd.child(t(0xC1)).unwrap().unwrap().value,
        hex("13 2A8648CE3D030107"),
        "ECDSA P-256"
    );
    assert_eq!(
        dd.child(t(0xC3)).unwrap().unwrap().value,
        hex("16 2B06010401DA470F01"),
        "EdDSA Ed25519"
    );
    assert_eq!(
        dd.child(t(0xC4)).unwrap().unwrap().value,
        hex("00 7F7F7F 03 03 03")
    );
    assert_eq!(
        dd.child(t(0xDE)).unwrap().unwrap().value,
        hex("0102 0202 0302")
    );
    // Cardholder data, the counter, the URL.
    let (ch, _) = send(&mut card, "00 CA 00 65 00");
    let ch = Tlv::parse_exact(&ch).unwrap();
    assert_eq!(ch.child(t(0x5B)).unwrap().unwrap().value, b"Liddell<<Alice");
    let (sst, _) = send(&mut card, "00 CA 00 7A 00");
    assert_eq!(sst, hex("7A 05 93 03 000000"));
    assert_eq!(send(&mut card, "00 CA 5F 50 00"), (vec![], 0x9000));
    assert_eq!(send(&mut card, "00 CA 01 99 00").1, 0x6A88);
}

#[test]
fn pins_count_down_block_and_answer_empty_verify() {
    let mut card = selected(card_with_keys());
    assert_eq!(send(&mut card, "00 20 00 81").1, 0x63C3);
    assert_eq!(send(&mut card, "00 20 00 81 06 313131313131").1, 0x63C2);
    assert_eq!(send(&mut card, "00 20 00 82 06 313131313131").1, 0x63C1);
    assert_eq!(send(&mut card, "00 20 00 82 06 313233343536").1, 0x9000);
    assert_eq!(card.pw1_tries(), 3);
    assert_eq!(send(&mut card, "00 20 00 82").1, 0x9000, "verified");
    assert_eq!(
        send(&mut card, "00 20 FF 82").1,
        0x9000,
        "reset access status"
    );
    assert_eq!(send(&mut card, "00 20 00 82").1, 0x63C3);
    for sw in [0x63C2, 0x63C1, 0x6983, 0x6983] {
        assert_eq!(send(&mut card, "00 20 00 83 08 3030303030303030").1, sw);
    }
    assert_eq!(send(&mut card, "00 20 00 83 08 3132333435363738").1, 0x6983);
    assert_eq!(card.pw3_tries(), 0);
}

#[test]
fn change_and_reset_retry_counter() {
    let mut card = selected(OpenPgpCard::new(1));
    // CHANGE REFERENCE DATA: old || new.
    assert_eq!(
        send(&mut card, "00 24 00 81 0C 313233343536 363534333231").1,
        0x9000
    );
    assert_eq!(send(&mut card, "00 20 00 81 06 363534333231").1, 0x9000);
    // A too-short new PIN costs nothing.
    assert_eq!(
        send(&mut card, "00 24 00 81 08 363534333231 3131").1,
        0x6700
    );
    assert_eq!(card.pw1_tries(), 3);
    // No resetting code: blocked.
    assert_eq!(send(&mut card, "00 2C 00 81 06 313131313131").1, 0x6983);
    // P1 02 needs PW3.
    assert_eq!(send(&mut card, "00 2C 02 81 06 313131313131").1, 0x6982);
    assert_eq!(send(&mut card, "00 20 00 83 08 3132333435363738").1, 0x9000);
    assert_eq!(send(&mut card, "00 2C 02 81 06 313131313131").1, 0x9000);
    assert_eq!(send(&mut card, "00 20 00 81 06 313131313131").1, 0x9000);
    // Set a resetting code (PUT DATA D3) and use it.
    assert_eq!(send(&mut card, "00 DA 00 D3 08 3838383838383838").1, 0x9000);
    assert_eq!(card.rc_tries(), 3);
    assert_eq!(
        send(&mut card, "00 2C 00 81 0E 3838383838383838 323232323232").1,
        0x9000
    );
    assert_eq!(send(&mut card, "00 20 00 81 06 323232323232").1, 0x9000);
}

#[test]
fn generate_sign_and_count() {
    let mut card = selected(OpenPgpCard::new(2));
    assert_eq!(
        send(&mut card, "00 47 81 00 02 B6 00 00").1,
        0x6A88,
        "no key yet"
    );
    assert_eq!(send(&mut card, "00 47 80 00 02 B6 00 00").1, 0x6982);
    send(&mut card, "00 20 00 83 08 3132333435363738");
    // EdDSA for the signature key.
    assert_eq!(
        send(&mut card, "00 DA 00 C1 0A 16 2B06010401DA470F01").1,
        0x9000
    );
    let (t, sw) = send(&mut card, "00 47 80 00 02 B6 00 00");
    assert_eq!(sw, 0x9000);
    let point = Tlv::find_path(&t, &[Tag::new(0x7F49), Tag::new(0x86)])
        .unwrap()
        .unwrap()
        .value
        .to_vec();
    assert_eq!(point.len(), 32);
    assert_eq!(send(&mut card, "00 47 81 00 02 B6 00 00").0, t);
    assert_eq!(send(&mut card, "00 2A 9E 9A 03 616263 00").1, 0x6982);
    send(&mut card, "00 20 00 81 06 313233343536");
    let (sig, sw) = send(&mut card, "00 2A 9E 9A 03 616263 00");
    assert_eq!(sw, 0x9000);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&point.try_into().unwrap()).unwrap();
    use ed25519_dalek::Verifier;
    vk.verify(b"abc", &ed25519_dalek::Signature::from_slice(&sig).unwrap())
        .unwrap();
    // One signature per VERIFY 81.
    assert_eq!(send(&mut card, "00 2A 9E 9A 03 616263 00").1, 0x6982);
    assert_eq!(card.signature_count(), 1);
    // The decryption slot refuses a signing algorithm.
    assert_eq!(
        send(&mut card, "00 DA 00 C2 0A 16 2B06010401DA470F01").1,
        0x6A80
    );
}

#[test]
fn ecdh_with_the_decipher_template() {
    let mut card = card_with_keys();
    card.power_on();
    let mut card = selected(card);
    send(&mut card, "00 20 00 82 06 313233343536");
    let peer = p256_point(&[0x55; 32]);
    let mut data = vec![0xA6, 0x46, 0x7F, 0x49, 0x43, 0x86, 0x41];
    data.extend_from_slice(&peer);
    let mut apdu = vec![0x00, 0x2A, 0x80, 0x86, data.len() as u8];
    apdu.extend_from_slice(&data);
    apdu.push(0);
    let (secret, sw) = send_raw(&mut card, &apdu);
    assert_eq!(sw, 0x9000);
    let host = p256::SecretKey::from_slice(&[0x55; 32]).unwrap();
    let card_pk = p256::PublicKey::from_sec1_bytes(&p256_point(&DEC_P256)).unwrap();
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_pk.as_affine());
    assert_eq!(secret, expected.raw_secret_bytes().to_vec());
}

#[test]
fn long_answers_come_through_get_response_and_chaining_and_extended_length_work() {
    let mut card = OpenPgpCard::new(3);
    let big = self_signed_p256(
        "a certificate with a long name to make it grow",
        &[0x21; 32],
    );
    let mut long = big.clone();
    // Pad to beyond 256 bytes inside a valid DER wrapper is not needed: the card stores bytes.
    long.resize(700, 0xAA);
    card.set_certificate(KeyRef::Aut, &long).unwrap();
    let mut card = selected(card);
    let (first, sw) = send(&mut card, "00 CA 7F 21 00");
    assert_eq!(first.len(), 256);
    assert_eq!(sw, 0x6100);
    let (second, sw) = send(&mut card, "00 C0 00 00 00");
    assert_eq!((second.len(), sw), (256, 0x61BC));
    let (third, sw) = send(&mut card, "00 C0 00 00 BC");
    assert_eq!((third.len(), sw), (188, 0x9000));
    assert_eq!([first, second, third].concat(), long);
    // Extended Le gives it at once.
    let (all, sw) = send(&mut card, "00 CA 7F 21 00 00 00");
    assert_eq!((all, sw), (long.clone(), 0x9000));
    // A chained PUT DATA of a certificate (needs PW3).
    send(&mut card, "00 20 00 83 08 3132333435363738");
    let cert = vec![0x5Au8; 600];
    let chunks: Vec<_> = cert.chunks(255).collect();
    for (i, c) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
        let mut apdu = vec![cla, 0xDA, 0x7F, 0x21, c.len() as u8];
        apdu.extend_from_slice(c);
        assert_eq!(send_raw(&mut card, &apdu).1, 0x9000);
    }
    assert_eq!(send(&mut card, "00 CA 7F 21 00 00 00").0, cert);
    // SELECT DATA / GET NEXT DATA walk the occurrences.
    assert_eq!(
        send(&mut card, "00 A5 01 04 06 60 04 5C 02 7F 21").1,
        0x9000
    );
    assert_eq!(send(&mut card, "00 CA 7F 21 00"), (vec![], 0x9000));
    assert_eq!(send(&mut card, "00 CC 7F 21 00"), (vec![], 0x9000));
    assert_eq!(send(&mut card, "00 CC 7F 21 00").1, 0x6A88);
    assert_eq!(
        send(&mut card, "00 A5 00 04 06 60 04 5C 02 7F 21").1,
        0x9000
    );
    assert_eq!(send(&mut card, "00 CA 7F 21 00 00 00").0, cert);
}

#[test]
fn import_with_the_extended_header_list() {
    let mut card = selected(OpenPgpCard::new(4));
    send(&mut card, "00 20 00 83 08 3132333435363738");
    // 4D { B8 00, 7F48 { 92 20 }, 5F48 <scalar> } into the decryption slot (ECDH P-256).
    let mut data = hex("4D 2A B8 00 7F48 02 92 20 5F48 20");
    data.extend_from_slice(&[0x31; 32]);
    let mut apdu = vec![0x00, 0xDB, 0x3F, 0xFF, data.len() as u8];
    apdu.extend_from_slice(&data);
    assert_eq!(send_raw(&mut card, &apdu).1, 0x9000);
    assert_eq!(
        card.public_key(KeyRef::Dec).unwrap(),
        p256_point(&[0x31; 32])
    );
    let (de, _) = send(&mut card, "00 CA 00 DE 00");
    assert_eq!(de, hex("0100 0202 0300"));
    // A header list that does not match the data is refused.
    let mut bad = hex("4D 2A B8 00 7F48 02 92 21 5F48 20");
    bad.extend_from_slice(&[0x31; 32]);
    let mut apdu = vec![0x00, 0xDB, 0x3F, 0xFF, bad.len() as u8];
    apdu.extend_from_slice(&bad);
    assert_eq!(send_raw(&mut card, &apdu).1, 0x6A80);
}

#[test]
fn terminate_and_activate_reset_the_card() {
    let mut card = selected(card_with_keys());
    assert_eq!(
        send(&mut card, "00 E6 00 00").1,
        0x6982,
        "PW3 neither verified nor blocked"
    );
    for _ in 0..3 {
        send(&mut card, "00 20 00 83 08 3030303030303030");
    }
    assert_eq!(
        send(&mut card, "00 E6 00 00").1,
        0x9000,
        "allowed with PW3 blocked"
    );
    assert!(card.is_terminated());
    assert_eq!(send(&mut card, "00 CA 00 6E 00").1, 0x6285);
    assert_eq!(
        send(&mut card, "00 A4 04 00 06 D2 76 00 01 24 01").1,
        0x6285
    );
    assert_eq!(send(&mut card, "00 44 00 00").1, 0x9000);
    assert!(!card.is_terminated());
    assert_eq!(card.pw3_tries(), 3);
    assert!(card.public_key(KeyRef::Sig).is_none());
    assert_eq!(send(&mut card, "00 20 00 83 08 3132333435363738").1, 0x9000);
}

#[test]
fn the_state_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openpgp.state");
    {
        let mut card = OpenPgpCard::with_state_file(&path, 0x1234_5678).unwrap();
        card.put_key(KeyRef::Aut, Algorithm::Ed25519, &[0x44; 32])
            .unwrap();
        card.set_certificate(KeyRef::Sig, &[1, 2, 3]).unwrap();
        let mut card = selected(card);
        send(&mut card, "00 20 00 81 06 303030303030");
        send(&mut card, "00 20 00 83 08 3132333435363738");
        send(&mut card, "00 DA 00 5B 05 416C696365");
        send(&mut card, "00 DA 00 C4 01 01");
    }
    let mut card = selected(OpenPgpCard::with_state_file(&path, 0).unwrap());
    assert_eq!(card.aid()[10..14], [0x12, 0x34, 0x56, 0x78]);
    assert_eq!(card.pw1_tries(), 2);
    assert_eq!(
        card.public_key(KeyRef::Aut).unwrap(),
        ed25519_dalek::SigningKey::from_bytes(&[0x44; 32])
            .verifying_key()
            .to_bytes()
            .to_vec()
    );
    assert_eq!(send(&mut card, "00 CA 00 5B 00").0, b"Alice");
    assert_eq!(send(&mut card, "00 CA 00 C4 00").0[0], 1);
    assert_eq!(
        send(&mut card, "00 A5 02 04 06 60 04 5C 02 7F 21").1,
        0x9000
    );
    assert_eq!(send(&mut card, "00 CA 7F 21 00").0, vec![1, 2, 3]);
    // No temporary file is left behind, and garbage is refused.
    assert!(!dir.path().join("openpgp.state.tmp").exists());
    std::fs::write(&path, "not a state file").unwrap();
    assert!(OpenPgpCard::with_state_file(&path, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_apdus_never_panic(apdus in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..300), 1..8)) {
        let mut card = selected(card_with_keys());
        send(&mut card, "00 20 00 83 08 3132333435363738");
        send(&mut card, "00 20 00 81 06 313233343536");
        for apdu in apdus {
            let r = card.process(&apdu);
            prop_assert!(r.len() >= 2);
        }
    }

    #[test]
    fn well_formed_headers_with_random_data_never_panic(
        ins in prop::sample::select(vec![0x20u8, 0x24, 0x2C, 0x47, 0x2A, 0x88, 0xA5, 0xCA, 0xCC,
            0xDA, 0xDB, 0xE6, 0x44, 0xC0]),
        p1 in any::<u8>(), p2 in any::<u8>(),
        data in proptest::collection::vec(any::<u8>(), 0..255)) {
        let mut card = selected(card_with_keys());
        send(&mut card, "00 20 00 83 08 3132333435363738");
        send(&mut card, "00 20 00 82 06 313233343536");
        let mut apdu = vec![0x00, ins, p1, p2];
        if !data.is_empty() {
            apdu.push(data.len() as u8);
            apdu.extend_from_slice(&data);
        }
        apdu.push(0);
        let r = card.process(&apdu);
        prop_assert!(r.len() >= 2);
    }
}

#[test]
fn the_driver_writes_fingerprints_and_times_after_generation() {
    use std::sync::Arc;
    use token_core::{block_on, KeySpec, KeyType, Pin, PinKind};
    let (_slots, _hub, memory, token) = hub_with(OpenPgpCard::new(SERIAL));
    let item = block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::Admin, &Pin::from(PW3)).await.unwrap();
        s.generate_key(&KeySpec {
            key_type: KeyType::X25519,
            label: String::new(),
            slot: Some("dec".into()),
            usage: None,
        })
        .await
        .unwrap()
    });
    // Read C5 and CD through the same card.
    let card = token_core::SmartCard::new(Arc::new(memory));
    let ard = block_on(async {
        card.send_ins(0xA4, 0x04, 0x00, &driver_openpgp::AID_PREFIX, None)
            .await
            .unwrap();
        card.send_ins(0xCA, 0x00, 0x6E, &[], Some(256))
            .await
            .unwrap()
    });
    let dd = Tlv::find_path(&ard, &[Tag::new(0x6E), Tag::new(0x73)])
        .unwrap()
        .unwrap();
    let fps = dd.child(Tag::new(0xC5)).unwrap().unwrap().value;
    let times = dd.child(Tag::new(0xCD)).unwrap().unwrap().value;
    let time = u32::from_be_bytes(times[4..8].try_into().unwrap());
    assert!(time > 1_700_000_000);
    let expected =
        driver_openpgp::fingerprint_v4(Algorithm::X25519, &item.public_key.unwrap().raw, time);
    assert_eq!(&fps[20..40], &expected);
    assert_eq!(&fps[..20], &[0; 20]);
}

#[test]
fn a_demonstration_card_has_three_fresh_keys_that_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.state");
    let mut card = OpenPgpCard::with_state_file(&path, 7).unwrap();
    assert!(card.public_key(KeyRef::Sig).is_none());
    card.generate_keys().unwrap();
    let keys: Vec<_> = KeyRef::ALL
        .iter()
        .map(|&k| card.public_key(k).unwrap())
        .collect();
    assert_eq!(keys[0].len(), 65);
    assert_ne!(keys[0], keys[2]);
    let again = OpenPgpCard::with_state_file(&path, 0).unwrap();
    for (i, k) in KeyRef::ALL.iter().enumerate() {
        assert_eq!(again.public_key(*k).unwrap(), keys[i]);
    }
}
