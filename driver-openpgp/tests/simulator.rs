//! The simulator on its own, APDU by APDU (OpenPGP card 3.4 examples): ECC and RSA keys, the
//! KDF-DO, AES, its state file, RSA fingerprints against GnuPG's, and arbitrary APDUs (never
//! a panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_openpgp::sim::OpenPgpCard;
use driver_openpgp::{Algorithm, KeyRef};
use proptest::prelude::*;
use sha2::Digest;
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

/// Sends a command (extended length when `data` needs it) and collects the whole answer,
/// following 61xx with GET RESPONSE.
fn send_long(card: &mut OpenPgpCard, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let cmd = token_core::Command::new(0x00, token_core::Ins(ins), p1, p2)
        .with_data(data)
        .with_le(256);
    let extended = data.len() > 255;
    let (mut out, mut sw) = send_raw(card, &cmd.encode(extended).unwrap());
    while sw >> 8 == 0x61 {
        let (more, next) = send(card, "00 C0 00 00 00");
        out.extend_from_slice(&more);
        sw = next;
    }
    (out, sw)
}

/// The DigestInfo prefix of SHA-256 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: &str = "3031300d060960864801650304020105000420";

fn rsa_public_from_template(t: &[u8]) -> rsa::PublicKey {
    let part = |tag: u32| {
        Tlv::find_path(t, &[Tag::new(0x7F49), Tag::new(tag)])
            .unwrap()
            .unwrap()
            .value
            .to_vec()
    };
    rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&part(0x81)),
        rsa::BoxedUint::from_be_slice_vartime(&part(0x82)),
    )
    .unwrap()
}

#[test]
fn rsa_2048_generation_signature_and_decipher_by_apdu() {
    let mut card = selected(OpenPgpCard::new(5));
    send(&mut card, "00 20 00 83 08 3132333435363738");
    assert_eq!(send(&mut card, "00 DA 00 C1 06 010800002000").1, 0x9000);
    assert_eq!(send(&mut card, "00 CA 00 C1 00").0, hex("010800002000"));
    // 1024 bits, or an import format that does not exist, are refused.
    assert_eq!(send(&mut card, "00 DA 00 C1 06 010400002000").1, 0x6A80);
    assert_eq!(send(&mut card, "00 DA 00 C1 06 010800002007").1, 0x6A80);
    let (t, sw) = send_long(&mut card, 0x47, 0x80, 0x00, &[0xB6, 0x00]);
    assert_eq!(sw, 0x9000);
    let modulus = Tlv::find_path(&t, &[Tag::new(0x7F49), Tag::new(0x81)])
        .unwrap()
        .unwrap()
        .value
        .to_vec();
    assert_eq!(modulus.len(), 256);
    assert!(modulus[0] & 0x80 != 0);
    let public = rsa_public_from_template(&t);
    assert_eq!(send_long(&mut card, 0x47, 0x81, 0x00, &[0xB6, 0x00]).0, t);

    // PSO:CDS takes the DigestInfo and pads it (PKCS#1 v1.5).
    send(&mut card, "00 20 00 81 06 313233343536");
    let digest = sha2::Sha256::digest(b"abc");
    let mut digest_info = hex(SHA256_DIGEST_INFO);
    digest_info.extend_from_slice(&digest);
    let (signature, sw) = send_long(&mut card, 0x2A, 0x9E, 0x9A, &digest_info);
    assert_eq!(sw, 0x9000);
    assert_eq!(signature.len(), 256);
    public
        .verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &digest,
            &signature,
        )
        .unwrap();
    assert_eq!(card.signature_count(), 1);
    // More than 40% of the modulus is not a DigestInfo.
    send(&mut card, "00 20 00 81 06 313233343536");
    assert_eq!(send_long(&mut card, 0x2A, 0x9E, 0x9A, &[1; 103]).1, 0x6700);

    // PSO:DECIPHER with a fixture key: 00, then the cryptogram, answered by the plaintext.
    card.put_key(KeyRef::Dec, Algorithm::rsa(2048), &rsa_pkcs1(RSA2048_PK8))
        .unwrap();
    send(&mut card, "00 20 00 82 06 313233343536");
    let cryptogram = rsa_encrypt(&rsa_public_der(RSA2048_PK8), b"session key");
    let mut data = vec![0x00];
    data.extend_from_slice(&cryptogram);
    let (plain, sw) = send_long(&mut card, 0x2A, 0x80, 0x86, &data);
    assert_eq!((plain.as_slice(), sw), (&b"session key"[..], 0x9000));
    // Another padding indicator than 00 (or none) is not RSA.
    data[0] = 0x01;
    assert_eq!(send_long(&mut card, 0x2A, 0x80, 0x86, &data).1, 0x6A80);
    assert_eq!(
        send_long(&mut card, 0x2A, 0x80, 0x86, &cryptogram).1,
        0x6A80
    );
}

/// 4D { B6 00, 7F48 { header }, 5F48 { values } } for the RSA fixture key, with the parts
/// `tags` (91 e, 92 p, 93 q, 94 1/q mod p, 95 d mod p-1, 96 d mod q-1, 97 n).
fn rsa_import_apdu(pk8: &[u8], tags: &[u8], modulus: Option<Vec<u8>>) -> Vec<u8> {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let key = rsa_key(pk8);
    let half = key.size() / 2;
    let pad = |v: Box<[u8]>, len: usize| {
        let v: Vec<u8> = v.iter().copied().skip_while(|&b| b == 0).collect();
        let mut out = vec![0u8; len - v.len()];
        out.extend_from_slice(&v);
        out
    };
    let p = key.primes()[0].to_be_bytes();
    let q = key.primes()[1].to_be_bytes();
    let mut header = Vec::new();
    let mut values = Vec::new();
    for &t in tags {
        let v = match t {
            0x91 => pad(key.e().to_be_bytes(), 4),
            0x92 => pad(p.clone(), half),
            0x93 => pad(q.clone(), half),
            0x97 => modulus
                .clone()
                .unwrap_or_else(|| pad(key.n().to_be_bytes(), key.size())),
            _ => unreachable!(),
        };
        header.push(t);
        if v.len() > 0x7F {
            header.extend_from_slice(&[0x82, (v.len() >> 8) as u8, v.len() as u8]);
        } else {
            header.push(v.len() as u8);
        }
        values.extend_from_slice(&v);
    }
    let mut b = token_core::TlvBuilder::new();
    b.constructed(Tag::new(0x4D), |b| {
        b.put(Tag::new(0xB6), &[]);
        b.put(Tag::new(0x7F48), &header);
        b.put(Tag::new(0x5F48), &values);
    });
    b.finish()
}

#[test]
fn rsa_import_with_the_extended_header_list_checks_the_modulus() {
    let mut card = selected(OpenPgpCard::new(6));
    send(&mut card, "00 20 00 83 08 3132333435363738");
    // RSA 2048, import format 01: e, p, q and n.
    assert_eq!(send(&mut card, "00 DA 00 C1 06 010800002001").1, 0x9000);
    let without_n = rsa_import_apdu(RSA2048_PK8, &[0x91, 0x92, 0x93], None);
    assert_eq!(send_long(&mut card, 0xDB, 0x3F, 0xFF, &without_n).1, 0x6A80);
    let other = vec![0xC3; 256];
    let wrong = rsa_import_apdu(RSA2048_PK8, &[0x91, 0x92, 0x93, 0x97], Some(other));
    assert_eq!(send_long(&mut card, 0xDB, 0x3F, 0xFF, &wrong).1, 0x6A80);
    assert_eq!(card.public_key(KeyRef::Sig), None);
    let right = rsa_import_apdu(RSA2048_PK8, &[0x91, 0x92, 0x93, 0x97], None);
    assert_eq!(send_long(&mut card, 0xDB, 0x3F, 0xFF, &right).1, 0x9000);
    assert_eq!(
        card.public_key(KeyRef::Sig),
        Some(rsa_public_der(RSA2048_PK8))
    );
    let (de, _) = send(&mut card, "00 CA 00 DE 00");
    assert_eq!(de, hex("0102 0200 0300"));
    // The imported key signs as the fixture key does.
    send(&mut card, "00 20 00 81 06 313233343536");
    let digest = sha2::Sha256::digest(b"imported");
    let mut digest_info = hex(SHA256_DIGEST_INFO);
    digest_info.extend_from_slice(&digest);
    let (signature, sw) = send_long(&mut card, 0x2A, 0x9E, 0x9A, &digest_info);
    assert_eq!(sw, 0x9000);
    rsa_verify(
        &rsa_public_der(RSA2048_PK8),
        rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        &digest,
        &signature,
    );
}

#[test]
fn the_kdf_do_resets_the_pins_to_their_derived_factory_values() {
    let mut card = selected(OpenPgpCard::new(7));
    // Announced in the extended capabilities (byte 1, bit 1), off until set.
    let (c0, _) = send(&mut card, "00 CA 00 C0 00");
    assert_eq!(c0[0] & 0x01, 0x01);
    assert_eq!(send(&mut card, "00 CA 00 F9 00").0, hex("810100"));
    let f9 = hex("810103 820108 830400000400 8408 0102030405060708 8608 1112131415161718");
    let mut put = vec![0x00, 0xDA, 0x00, 0xF9, f9.len() as u8];
    put.extend_from_slice(&f9);
    assert_eq!(send_raw(&mut card, &put).1, 0x6982, "PW3 first");
    send(&mut card, "00 20 00 83 08 3132333435363738");
    assert_eq!(send_raw(&mut card, &put).1, 0x9000);
    assert_eq!(send(&mut card, "00 CA 00 F9 00").0, f9);
    // The factory PINs as typed no longer work; their S2K hashes (salt 84 for PW1, 86 for
    // PW3) do.
    assert_eq!(send(&mut card, "00 20 00 81 06 313233343536").1, 0x63C2);
    let verify = |card: &mut OpenPgpCard, p2: u8, value: &[u8]| {
        let mut apdu = vec![0x00, 0x20, 0x00, p2, value.len() as u8];
        apdu.extend_from_slice(value);
        send_raw(card, &apdu).1
    };
    let pw1 = s2k_sha256(&hex("0102030405060708"), b"123456", 0x400);
    let pw3 = s2k_sha256(&hex("1112131415161718"), b"12345678", 0x400);
    assert_eq!(verify(&mut card, 0x81, &pw1), 0x9000);
    assert_eq!(verify(&mut card, 0x83, &pw3), 0x9000);
    assert_eq!(verify(&mut card, 0x83, b"12345678"), 0x63C2);
    assert_eq!(verify(&mut card, 0x83, &pw3), 0x9000);
    // KDF off again: the plain factory PINs.
    assert_eq!(send(&mut card, "00 DA 00 F9 03 810100").1, 0x9000);
    assert_eq!(send(&mut card, "00 20 00 81 06 313233343536").1, 0x9000);
    // A KDF-DO the card does not know is refused.
    assert_eq!(send(&mut card, "00 DA 00 F9 03 810102").1, 0x6A80);
}

#[test]
fn rsa_keys_and_the_kdf_do_survive_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.state");
    {
        let mut card = OpenPgpCard::with_state_file(&path, 8).unwrap();
        card.put_key(KeyRef::Aut, Algorithm::rsa(3072), &rsa_pkcs1(RSA3072_PK8))
            .unwrap();
        let mut card = selected(card);
        send(&mut card, "00 20 00 83 08 3132333435363738");
        assert_eq!(
            send(
                &mut card,
                "00 DA 00 F9 0F 810103 820108 830400000010 8401AA"
            )
            .1,
            0x9000
        );
    }
    let mut card = selected(OpenPgpCard::with_state_file(&path, 8).unwrap());
    assert_eq!(
        card.public_key(KeyRef::Aut),
        Some(rsa_public_der(RSA3072_PK8))
    );
    assert_eq!(send(&mut card, "00 CA 00 C3 00").0, hex("010C00002000"));
    assert_eq!(
        send(&mut card, "00 CA 00 F9 00").0,
        hex("810103 820108 830400000010 8401AA")
    );
}

#[test]
fn rsa_fingerprints_are_the_ones_gnupg_computes() {
    // A key GnuPG generated, with the fingerprint `gpg --with-colons` showed for it.
    let text = include_str!("fixtures/gpg-rsa2048-public.txt");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .trim()
    };
    let created: u32 = field("created").parse().unwrap();
    let mut der = token_core::TlvBuilder::new();
    let int = |v: Vec<u8>| {
        let mut out = vec![0u8];
        out.extend_from_slice(&v);
        out
    };
    der.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &int(hex(field("n"))));
        b.put(Tag::new(0x02), &hex(field("e")));
    });
    let fp = driver_openpgp::fingerprint_v4(Algorithm::rsa(2048), &der.finish(), created);
    let shown: String = fp.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(shown, field("fpr"));
    // The attributes' exponent size and import format are not part of the key.
    let yubikey = Algorithm::Rsa {
        bits: 2048,
        exponent_bits: 17,
        format: driver_openpgp::RsaImportFormat::CrtWithModulus,
    };
    let mut der = token_core::TlvBuilder::new();
    der.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &int(hex(field("n"))));
        b.put(Tag::new(0x02), &hex(field("e")));
    });
    assert_eq!(
        driver_openpgp::fingerprint_v4(yubikey, &der.finish(), created),
        fp
    );
}

#[test]
fn pso_encipher_and_decipher_with_aes_256() {
    let mut card = selected(OpenPgpCard::new(9));
    let (c0, _) = send(&mut card, "00 CA 00 C0 00");
    assert_eq!(c0[0] & 0x02, 0x02, "PSO:DEC/ENC with AES announced");
    // D5 is written after PW3, and never read.
    let key = [0xA5u8; 32];
    let mut put = vec![0x00, 0xDA, 0x00, 0xD5, 0x20];
    put.extend_from_slice(&key);
    assert_eq!(send_raw(&mut card, &put).1, 0x6982);
    send(&mut card, "00 20 00 83 08 3132333435363738");
    assert_eq!(send_raw(&mut card, &put).1, 0x9000);
    assert_eq!(send(&mut card, "00 CA 00 D5 00").1, 0x6A88);
    assert_eq!(send(&mut card, "00 DA 00 D5 03 010203").1, 0x6700);
    let plain = [0x11u8; 32];
    let mut enc = vec![0x00, 0x2A, 0x86, 0x80, 0x20];
    enc.extend_from_slice(&plain);
    enc.push(0x00);
    assert_eq!(send_raw(&mut card, &enc).1, 0x6982, "PW1 82 first");
    send(&mut card, "00 20 00 82 06 313233343536");
    let (answer, sw) = send_raw(&mut card, &enc);
    assert_eq!(sw, 0x9000);
    assert_eq!(answer[0], 0x02);
    // AES-256-CBC, zero IV, computed here block by block.
    assert_eq!(&answer[1..], aes_cbc_encrypt(&key, &plain).as_slice());
    let mut dec = vec![0x00, 0x2A, 0x80, 0x86, 0x21];
    dec.extend_from_slice(&answer);
    dec.push(0x00);
    assert_eq!(send_raw(&mut card, &dec), (plain.to_vec(), 0x9000));
    // Not a whole number of blocks.
    assert_eq!(send(&mut card, "00 2A 86 80 03 010203 00").1, 0x6700);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// RSA import with random e, p, q (and modulus), and random RSA cryptograms and
    /// DigestInfos: refused or done, never a panic.
    #[test]
    fn rsa_import_decipher_and_sign_with_random_data_never_panic(
        e in proptest::collection::vec(any::<u8>(), 0..5),
        p in proptest::collection::vec(any::<u8>(), 0..129),
        q in proptest::collection::vec(any::<u8>(), 0..129),
        n in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..257)),
        block in proptest::collection::vec(any::<u8>(), 0..258),
    ) {
        let mut card = OpenPgpCard::new(10);
        card.set_algorithm(KeyRef::Sig, Algorithm::Rsa {
            bits: 2048,
            exponent_bits: 0x20,
            format: if n.is_some() {
                driver_openpgp::RsaImportFormat::StandardWithModulus
            } else {
                driver_openpgp::RsaImportFormat::Standard
            },
        }).unwrap();
        card.put_key(KeyRef::Dec, Algorithm::rsa(2048), &rsa_pkcs1(RSA2048_PK8)).unwrap();
        let mut card = selected(card);
        send(&mut card, "00 20 00 83 08 3132333435363738");
        send(&mut card, "00 20 00 82 06 313233343536");
        let mut header = Vec::new();
        let mut values = Vec::new();
        let parts: Vec<(u8, &[u8])> = [(0x91, &e[..]), (0x92, &p[..]), (0x93, &q[..])]
            .into_iter()
            .chain(n.as_deref().map(|n| (0x97, n)))
            .collect();
        for (t, v) in parts {
            header.extend_from_slice(&[t, 0x82, (v.len() >> 8) as u8, v.len() as u8]);
            values.extend_from_slice(v);
        }
        let mut b = token_core::TlvBuilder::new();
        b.constructed(Tag::new(0x4D), |b| {
            b.put(Tag::new(0xB6), &[]);
            b.put(Tag::new(0x7F48), &header);
            b.put(Tag::new(0x5F48), &values);
        });
        let (_, sw) = send_long(&mut card, 0xDB, 0x3F, 0xFF, &b.finish());
        prop_assert!(sw == 0x9000 || sw == 0x6A80, "{sw:04x}");
        let (_, sw) = send_long(&mut card, 0x2A, 0x80, 0x86, &block);
        // 02 first: AES, and this card has no AES key (6A88).
        prop_assert!([0x9000, 0x6A80, 0x6A88, 0x6700].contains(&sw), "{sw:04x}");
        send(&mut card, "00 20 00 81 06 313233343536");
        let (_, sw) = send_long(&mut card, 0x2A, 0x9E, 0x9A, &block);
        prop_assert!([0x9000, 0x6A88, 0x6A80, 0x6700].contains(&sw), "{sw:04x}");
    }
}
