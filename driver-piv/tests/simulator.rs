//! The PIV simulator at the APDU level: SP 800-73-4 and YubiKey behaviour a PIV tool relies on,
//! its state file, and "never panics on any APDU".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_piv::sim::{PivCard, SimKey, YUBIKEY_ATR};
use driver_piv::{AlgorithmId, ManagementKey, SlotId};
use proptest::prelude::*;
use token_core::{Atr, CardSimulator, Command, Tag, Tlv};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn sendh(card: &mut PivCard, apdu: &str) -> (Vec<u8>, u16) {
    send(card, &hex(apdu))
}

/// Mutual authentication with `key` through raw APDUs (SP 800-73-4 Part 2 Appendix A.1);
/// when the card takes it, its answer to the host's challenge is checked.
fn mgmt_auth(card: &mut PivCard, key: &ManagementKey) -> u16 {
    let challenge = vec![0x5Au8; key.block_len()];
    let (t, sw) = mgmt_auth_exchange(card, key, &challenge);
    if sw == 0x9000 {
        let r = Tlv::find_path(&t, &[Tag::new(0x7C), Tag::new(0x82)])
            .unwrap()
            .unwrap();
        assert_eq!(r.value, &*key.encrypt(&challenge).unwrap());
    }
    sw
}

#[test]
fn atr_is_a_yubikey_5_nfc_announcing_chaining_and_extended_length() {
    let card = PivCard::new(1);
    assert_eq!(card.atr(), YUBIKEY_ATR);
    let atr = Atr::parse(&card.atr()).unwrap();
    assert!(atr.supports_command_chaining());
}

#[test]
fn select_full_and_truncated_aid_answers_the_apt() {
    let mut card = PivCard::new(1);
    // Before SELECT the PIV commands are not there.
    assert_eq!(sendh(&mut card, "00 FD 00 00").1, 0x6D00);
    for aid in [
        "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00",
        "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00",
        "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00",
        "00 A4 04 00 05 A0 00 00 03 08",
    ] {
        let (apt, sw) = sendh(&mut card, aid);
        assert_eq!(sw, 0x9000, "{aid}");
        let t = Tlv::parse_exact(&apt).unwrap();
        assert_eq!(t.tag.value(), 0x61);
        assert_eq!(
            t.child(Tag::new(0x4F)).unwrap().unwrap().value,
            hex("00 00 10 00 01 00")
        );
        let rid = Tlv::find_path(t.value, &[Tag::new(0x79), Tag::new(0x4F)])
            .unwrap()
            .unwrap();
        assert_eq!(rid.value, hex("A0 00 00 03 08"));
        assert!(t.child(Tag::new(0x50)).unwrap().is_some());
        let algs: Vec<u8> = t
            .child(Tag::new(0xAC))
            .unwrap()
            .unwrap()
            .children()
            .filter_map(|c| c.ok())
            .filter(|c| c.tag.value() == 0x80)
            .map(|c| c.value[0])
            .collect();
        assert!(algs.contains(&0x11) && algs.contains(&0x14) && algs.contains(&0x03));
    }
    // Too short, or another application.
    assert_eq!(sendh(&mut card, "00 A4 04 00 04 A0 00 00 03").1, 0x6A82);
    assert_eq!(
        sendh(&mut card, "00 A4 04 00 06 D2 76 00 01 24 01").1,
        0x6A82
    );
    assert_eq!(sendh(&mut card, "00 FD 00 00").1, 0x6D00);
}

#[test]
fn yubikey_version_serial_and_metadata() {
    let mut card = PivCard::new_with_keys(
        0x0102_0304,
        [(SlotId::AUTHENTICATION, SimKey::p256(&P256_9A).unwrap())],
    );
    select(&mut card);
    assert_eq!(sendh(&mut card, "00 FD 00 00"), (vec![5, 7, 1], 0x9000));
    assert_eq!(sendh(&mut card, "00 F8 00 00"), (vec![1, 2, 3, 4], 0x9000));
    // PIN: algorithm FF, default, 3 of 3 tries.
    assert_eq!(
        sendh(&mut card, "00 F7 00 80"),
        (hex("01 01 FF 05 01 01 06 02 03 03"), 0x9000)
    );
    // Management key: AES-192, no touch, default.
    assert_eq!(
        sendh(&mut card, "00 F7 00 9B"),
        (hex("01 01 0A 02 02 00 01 05 01 01"), 0x9000)
    );
    // 9A: P-256, PIN once, touch never, imported, the public point.
    let (m, sw) = sendh(&mut card, "00 F7 00 9A");
    assert_eq!(sw, 0x9000);
    assert_eq!(&m[..11], &hex("01 01 11 02 02 02 01 03 01 02 04")[..]);
    let point = Tlv::find_path(&m, &[Tag::new(0x04)]).unwrap().unwrap();
    assert_eq!(point.value[2..], p256_point(&P256_9A)[..]);
    // An empty slot.
    assert_eq!(sendh(&mut card, "00 F7 00 9C").1, 0x6A88);
}

#[test]
fn get_and_put_data_with_the_management_key() {
    let mut card = PivCard::new(1);
    select(&mut card);
    // The discovery object is its own 7E template.
    let (d, sw) = sendh(&mut card, "00 CB 3F FF 03 5C 01 7E 00");
    assert_eq!(sw, 0x9000);
    assert_eq!(d[0], 0x7E);
    assert_eq!(
        sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 02 00").1,
        0x6A82
    );
    // PUT DATA needs the management key.
    let put = hex("00 DB 3F FF 0B 5C 03 5F C1 02 53 04 34 02 AB CD");
    assert_eq!(send(&mut card, &put).1, 0x6982);
    assert_eq!(
        mgmt_auth(
            &mut card,
            &ManagementKey::default_for(AlgorithmId::AES192).unwrap()
        ),
        0x9000
    );
    assert_eq!(send(&mut card, &put).1, 0x9000);
    // Case 3 GET DATA without Le still answers (absent Le = 256).
    assert_eq!(
        sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 02"),
        (hex("53 04 34 02 AB CD"), 0x9000)
    );
    // An object too large for the card.
    let mut big = hex("5C 03 5F C1 05 53 82 0C 00");
    big.extend(vec![0u8; 0x0C00]);
    let apdu = Command::new(0, 0xDB, 0x3F, 0xFF)
        .with_data(&big)
        .encode_extended()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x6A84);
    // An empty 53 deletes.
    assert_eq!(
        sendh(&mut card, "00 DB 3F FF 07 5C 03 5F C1 02 53 00").1,
        0x9000
    );
    assert_eq!(
        sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 02 00").1,
        0x6A82
    );
    // Printed information needs the PIN to read.
    assert_eq!(
        sendh(&mut card, "00 DB 3F FF 09 5C 03 5F C1 09 53 02 01 02").1,
        0x9000
    );
    assert_eq!(
        sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 09 00").1,
        0x6982
    );
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF").1,
        0x9000
    );
    assert_eq!(
        sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 09 00").1,
        0x9000
    );
}

#[test]
fn long_answers_use_61xx_and_chaining_and_extended_length_work() {
    let cert = self_signed_p256(&"x".repeat(600), &P256_9A);
    assert!(cert.len() > 600);
    let mut card = PivCard::new(1).with_certificate(SlotId::AUTHENTICATION, &cert, false);
    select(&mut card);
    // Short Le: 256 bytes and 61xx.
    let (first, sw) = sendh(&mut card, "00 CB 3F FF 05 5C 03 5F C1 05 00");
    assert_eq!(first.len(), 256);
    assert_eq!(sw >> 8, 0x61);
    let (all, sw) = send_all(&mut card, &hex("00 CB 3F FF 05 5C 03 5F C1 05 00"));
    assert_eq!(sw, 0x9000);
    let t = Tlv::parse_exact(&all).unwrap();
    assert_eq!(t.tag.value(), 0x53);
    // Extended Le: all at once.
    let (all2, sw) = sendh(&mut card, "00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00");
    assert_eq!((sw, &all2), (0x9000, &all));
    // A chained PUT DATA (CLA 10 on every block but the last).
    assert_eq!(
        mgmt_auth(
            &mut card,
            &ManagementKey::default_for(AlgorithmId::AES192).unwrap()
        ),
        0x9000
    );
    let mut body = hex("5C 03 5F C1 0A");
    let content = driver_piv::certificate_container(&cert, false);
    body.extend(hex("53 82"));
    body.extend((content.len() as u16).to_be_bytes());
    body.extend(&content);
    let chunks: Vec<&[u8]> = body.chunks(255).collect();
    for (i, c) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
        let apdu = Command::new(cla, 0xDB, 0x3F, 0xFF)
            .with_data(c)
            .encode_short()
            .unwrap();
        assert_eq!(send(&mut card, &apdu).1, 0x9000);
    }
    assert_eq!(card.object(0x5FC10A), Some(&content[..]));
}

#[test]
fn pin_counters_blocking_unblock_and_reset() {
    let mut card =
        PivCard::new_with_keys(7, [(SlotId::SIGNATURE, SimKey::p256(&P256_9A).unwrap())]);
    select(&mut card);
    let wrong = "00 20 00 80 08 39 39 39 39 39 39 FF FF";
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x63C3);
    assert_eq!(sendh(&mut card, wrong).1, 0x63C2);
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x63C2);
    // Not 8 bytes: refused without spending a try.
    assert_eq!(
        sendh(&mut card, "00 20 00 80 06 31 32 33 34 35 36").1,
        0x6A80
    );
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF").1,
        0x9000
    );
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x9000);
    // P1 FF forgets.
    assert_eq!(sendh(&mut card, "00 20 FF 80").1, 0x9000);
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x63C3);
    // The global PIN is not there.
    assert_eq!(sendh(&mut card, "00 20 00 00").1, 0x6A88);
    // RESET is refused while the PIN and PUK work.
    assert_eq!(sendh(&mut card, "00 FB 00 00").1, 0x6985);
    for sw in [0x63C2, 0x63C1, 0x63C0] {
        assert_eq!(sendh(&mut card, wrong).1, sw);
    }
    assert_eq!(sendh(&mut card, wrong).1, 0x6983);
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x6983);
    // Block the PUK too, through RESET RETRY COUNTER.
    let bad_puk = "00 2C 00 80 10 30 30 30 30 30 30 30 30 31 31 31 31 31 31 FF FF";
    for sw in [0x63C2, 0x63C1, 0x63C0, 0x6983] {
        assert_eq!(sendh(&mut card, bad_puk).1, sw);
    }
    assert_eq!(card.pin_tries_left(), 0);
    assert_eq!(card.puk_tries_left(), 0);
    assert_eq!(sendh(&mut card, "00 FB 00 00").1, 0x9000);
    assert!(
        card.public_key(SlotId::SIGNATURE).is_none(),
        "RESET wipes the keys"
    );
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF").1,
        0x9000
    );
    // Change PIN: new PIN too short is refused.
    assert_eq!(
        sendh(
            &mut card,
            "00 24 00 80 10 31 32 33 34 35 36 FF FF 31 32 33 FF FF FF FF FF"
        )
        .1,
        0x6A80
    );
    // SET PIN RETRIES needs the management key and the PIN, then sets defaults.
    assert_eq!(sendh(&mut card, "00 FA 05 06").1, 0x6982);
    assert_eq!(
        mgmt_auth(
            &mut card,
            &ManagementKey::default_for(AlgorithmId::AES192).unwrap()
        ),
        0x9000
    );
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF").1,
        0x9000
    );
    assert_eq!(sendh(&mut card, "00 FA 05 06").1, 0x9000);
    assert_eq!(sendh(&mut card, "00 20 00 80").1, 0x63C5);
    assert_eq!(card.puk_tries_left(), 6);
}

#[test]
fn management_key_one_way_and_mutual_and_set() {
    let tdes = ManagementKey::default_for(AlgorithmId::TDES).unwrap();
    let mut card = PivCard::new(1).with_management_key(tdes.clone());
    select(&mut card);
    // One-way (external authenticate): 7C 02 81 00, then 7C 0A 82 08 <E(K, challenge)>.
    let (t, sw) = sendh(&mut card, "00 87 03 9B 04 7C 02 81 00");
    assert_eq!(sw, 0x9000);
    let c = Tlv::find_path(&t, &[Tag::new(0x7C), Tag::new(0x81)])
        .unwrap()
        .unwrap()
        .value
        .to_vec();
    let mut data = hex("7C 0A 82 08");
    data.extend_from_slice(&tdes.encrypt(&c).unwrap());
    let apdu = Command::new(0, 0x87, 0x03, 0x9B)
        .with_data(&data)
        .encode_short()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x9000);
    // The wrong algorithm, the wrong key.
    assert_eq!(sendh(&mut card, "00 87 0A 9B 04 7C 02 80 00").1, 0x6A80);
    let wrong = ManagementKey::new(AlgorithmId::TDES, &[9; 24]).unwrap();
    assert_eq!(mgmt_auth(&mut card, &wrong), 0x6982);
    assert_eq!(sendh(&mut card, "00 47 00 9A 05 AC 03 80 01 11").1, 0x6982);
    assert_eq!(mgmt_auth(&mut card, &tdes), 0x9000);
    // SET MANAGEMENT KEY to AES-256.
    let mut set = hex("0C 9B 20");
    set.extend([0x33; 32]);
    let apdu = Command::new(0, 0xFF, 0xFF, 0xFF)
        .with_data(&set)
        .encode_short()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x9000);
    let aes = ManagementKey::new(AlgorithmId::AES256, &[0x33; 32]).unwrap();
    assert_eq!(mgmt_auth(&mut card, &aes), 0x9000);
}

#[test]
fn generate_sign_and_agree_through_apdus() {
    let mut card = PivCard::new(1);
    select(&mut card);
    assert_eq!(
        mgmt_auth(
            &mut card,
            &ManagementKey::default_for(AlgorithmId::AES192).unwrap()
        ),
        0x9000
    );
    // Not an asymmetric algorithm (3DES), and a bad slot.
    assert_eq!(sendh(&mut card, "00 47 00 9A 05 AC 03 80 01 03").1, 0x6A80);
    assert_eq!(sendh(&mut card, "00 47 00 9B 05 AC 03 80 01 11").1, 0x6A86);
    let (t, sw) = sendh(&mut card, "00 47 00 9A 0B AC 09 80 01 14 AA 01 01 AB 01 01");
    assert_eq!(sw, 0x9000);
    let point = Tlv::find_path(&t, &[Tag::new(0x7F49), Tag::new(0x86)])
        .unwrap()
        .unwrap();
    assert_eq!(point.value.len(), 97);
    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point.value).unwrap();
    // PIN policy never: signs without a PIN.
    let digest = [0xAB; 48];
    let mut data = hex("7C 34 82 00 81 30");
    data.extend_from_slice(&digest);
    let apdu = Command::new(0, 0x87, 0x14, 0x9A)
        .with_data(&data)
        .encode_short()
        .unwrap();
    let (t, sw) = send(&mut card, &apdu);
    assert_eq!(sw, 0x9000);
    let sig = Tlv::find_path(&t, &[Tag::new(0x7C), Tag::new(0x82)])
        .unwrap()
        .unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(
        &digest,
        &p384::ecdsa::DerSignature::from_bytes(sig.value).unwrap(),
    )
    .unwrap();
    // The wrong algorithm for the key.
    let apdu = Command::new(0, 0x87, 0x11, 0x9A)
        .with_data(&data)
        .encode_short()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x6A80);
    // IMPORT KEY of a P-256 scalar into 9D (PIN once by default): ECDH needs the PIN.
    let mut imp = hex("06 20");
    imp.extend_from_slice(&P256_9D);
    let apdu = Command::new(0, 0xFE, 0x11, 0x9D)
        .with_data(&imp)
        .encode_short()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x9000);
    let peer = p256_point(&[0x55; 32]);
    let mut data = hex("7C 45 82 00 85 41");
    data.extend_from_slice(&peer);
    let apdu = Command::new(0, 0x87, 0x11, 0x9D)
        .with_data(&data)
        .encode_short()
        .unwrap();
    assert_eq!(send(&mut card, &apdu).1, 0x6982);
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF").1,
        0x9000
    );
    let (t, sw) = send(&mut card, &apdu);
    assert_eq!(sw, 0x9000);
    let secret = Tlv::find_path(&t, &[Tag::new(0x7C), Tag::new(0x82)])
        .unwrap()
        .unwrap();
    let host = p256::SecretKey::from_slice(&[0x55; 32]).unwrap();
    let card_pub = p256::PublicKey::from_sec1_bytes(&p256_point(&P256_9D)).unwrap();
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_pub.as_affine());
    assert_eq!(secret.value, expected.raw_secret_bytes().as_slice());
    // ATTEST: the generated key in 9A is attested (a DER certificate), the imported one in
    // 9D is not (6A80, as on a YubiKey), an empty slot has nothing to attest (6A88).
    let (cert, sw) = send_all(&mut card, &hex("00 F9 9A 00 00"));
    assert_eq!(sw, 0x9000);
    assert_eq!(Tlv::parse_exact(&cert).unwrap().tag, Tag::new(0x30));
    assert_eq!(sendh(&mut card, "00 F9 9D 00").1, 0x6A80);
    assert_eq!(sendh(&mut card, "00 F9 9E 00").1, 0x6A88);
}

#[test]
fn state_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.piv");
    let mut card = full_card(Some([9; 16])).persist_to(&path).unwrap();
    let serial = card.serial();
    select(&mut card);
    // A wrong PIN, a generated key: each change is saved at once.
    assert_eq!(
        sendh(&mut card, "00 20 00 80 08 39 39 39 39 39 39 FF FF").1,
        0x63C2
    );
    assert_eq!(
        mgmt_auth(
            &mut card,
            &ManagementKey::default_for(AlgorithmId::AES192).unwrap()
        ),
        0x9000
    );
    assert_eq!(sendh(&mut card, "00 47 00 9E 05 AC 03 80 01 E0").1, 0x9000);
    let generated = card.public_key(SlotId::CARD_AUTHENTICATION).unwrap();
    drop(card);
    let mut back = PivCard::with_state_file(&path).unwrap();
    assert_eq!(back.serial(), serial);
    assert_eq!(back.pin_tries_left(), 2);
    assert_eq!(
        back.public_key(SlotId::CARD_AUTHENTICATION),
        Some(generated)
    );
    assert_eq!(
        back.public_key(SlotId::SIGNATURE).unwrap().raw,
        p384_point(&P384_9C)
    );
    assert!(back.object(0x5FC10A).is_some());
    select(&mut back);
    assert_eq!(sendh(&mut back, "00 20 00 80").1, 0x63C2);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // A new file: a fresh card, saved.
    let other = dir.path().join("new.piv");
    let fresh = PivCard::with_state_file(&other).unwrap();
    assert!(other.exists());
    assert_eq!(
        PivCard::with_state_file(&other).unwrap().serial(),
        fresh.serial()
    );
    // Garbage is refused, not panicked on.
    std::fs::write(&other, b"tokenkit-piv-sim\x01\xC0\x05").unwrap();
    assert!(PivCard::with_state_file(&other).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any bytes, selected or not, give a response with a status word and no panic.
    #[test]
    fn never_panics_on_any_apdu(apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6), select_first in any::<bool>()) {
        let mut card = full_card(Some([1; 16]));
        if select_first {
            select(&mut card);
        }
        for apdu in apdus {
            let r = card.process(&apdu);
            prop_assert!(r.len() >= 2);
        }
    }

    /// Well-formed headers with arbitrary data reach every handler.
    #[test]
    fn never_panics_on_any_piv_command(
        ins in prop::sample::select(vec![0xA4u8, 0xCB, 0xDB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFD, 0xFE, 0xFF, 0xC0]),
        p1 in prop::sample::select(vec![0x00u8, 0x03, 0x0A, 0x11, 0x14, 0xE0, 0xE1, 0x3F, 0xFF, 0x06, 0x07, 0x05, 0x16, 0x9A, 0x82]),
        p2 in prop::sample::select(vec![0x00u8, 0x80, 0x81, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x82, 0xFF, 0xF9]),
        cla in prop::sample::select(vec![0x00u8, 0x10, 0x80]),
        data in proptest::collection::vec(any::<u8>(), 0..260),
        authenticated in any::<bool>(),
    ) {
        // Slot 82 holds an RSA 1024 key, for GENERAL AUTHENTICATE and METADATA with RSA.
        let mut card = full_card(None).with_key(SlotId::retired(1).unwrap(), sim_rsa(&rsa_key(1024)));
        select(&mut card);
        if authenticated {
            mgmt_auth(&mut card, &ManagementKey::default_for(AlgorithmId::AES192).unwrap());
            sendh(&mut card, "00 20 00 80 08 31 32 33 34 35 36 FF FF");
        }
        let cmd = Command::new(cla, ins, p1, p2).with_data(&data);
        let apdu = if data.len() > 255 { cmd.encode_extended() } else { cmd.encode_short() }.unwrap();
        let r = card.process(&apdu);
        prop_assert!(r.len() >= 2);
    }

    /// RSA "primes" from a host (IMPORT KEY) or a state file may be anything: a key of one of
    /// the four sizes or an error, never a panic.
    #[test]
    fn any_rsa_primes_give_a_key_or_an_error(
        p in proptest::collection::vec(any::<u8>(), 0..140),
        q in proptest::collection::vec(any::<u8>(), 0..140),
    ) {
        if let Ok(key) = SimKey::rsa(&p, &q) {
            prop_assert!(matches!(key.algorithm(), AlgorithmId::RSA1024 | AlgorithmId::RSA2048));
            prop_assert!(key.public_key().is_ok());
        }
    }

    /// The state file's key entries and IMPORT KEY data are read by `SimKey::from_secret`:
    /// any bytes, for any algorithm, give a key or an error.
    #[test]
    fn any_key_secret_gives_a_key_or_an_error(
        alg in prop::sample::select(vec![0x06u8, 0x07, 0x05, 0x16, 0x11, 0x14, 0xE0, 0xE1, 0x03, 0x00]),
        secret in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(key) = SimKey::from_secret(AlgorithmId(alg), &secret) {
            prop_assert_eq!(key.algorithm(), AlgorithmId(alg));
            prop_assert!(key.public_key().is_ok());
        }
    }
}

#[test]
fn rsa_secrets_round_trip_and_bad_primes_are_refused() {
    let key = rsa_key(2048);
    let sim = sim_rsa(&key);
    assert_eq!(sim.algorithm(), AlgorithmId::RSA2048);
    let again = SimKey::from_secret(AlgorithmId::RSA2048, sim.secret()).unwrap();
    assert_eq!(again, sim);
    assert_eq!(again.public_key().unwrap().raw, rsa_public_der(&key));
    // The wrong size for the algorithm; p alone; p with an even q.
    assert!(SimKey::from_secret(AlgorithmId::RSA3072, sim.secret()).is_err());
    let (p, q) = rsa_primes(&key);
    let mut only_p = vec![0x01, 0x81, 0x80];
    only_p.extend_from_slice(&p);
    assert!(SimKey::from_secret(AlgorithmId::RSA2048, &only_p).is_err());
    let mut even = q.clone();
    *even.last_mut().unwrap() &= 0xFE;
    assert!(SimKey::rsa(&p, &even).is_err());
    assert!(SimKey::rsa(&p, &q).is_ok());
}
