//! RSA 1024 to 4096 in the PIV simulator and through the driver: IMPORT KEY with the CRT
//! elements, GENERATE, GET METADATA, GENERAL AUTHENTICATE with host-made padding (PKCS#1 v1.5
//! and PSS signatures, PKCS#1 v1.5 decryption), command chaining for 4096-bit blocks, and the
//! state file. Every signature and decryption is checked with the `rsa` crate against keys
//! openssl made (`tests/keys/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use driver_piv::sim::PivCard;
use driver_piv::TouchPolicy;
use driver_piv::{AlgorithmId, ManagementKey, PinPolicy, PivManagement, SlotId};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::BoxedUint;
use sha2::Digest;
use token_core::{
    block_on, Command, DecryptAlgorithm, ErrorCode, HashAlg, Item, KeyType, Pin, PinKind,
    SignatureAlgorithm, Tag, Tlv, TlvBuilder,
};

/// Sends `data` for (INS, P1, P2) as a chain of short APDUs of at most 255 bytes (CLA 10 on
/// all but the last), as SP 800-73-4 Part 2 §3 hosts do.
fn send_chained(card: &mut PivCard, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let chunks: Vec<&[u8]> = data.chunks(255).collect();
    for chunk in &chunks[..chunks.len() - 1] {
        let apdu = Command::new(0x10, ins, p1, p2)
            .with_data(chunk)
            .encode_short()
            .unwrap();
        let (_, sw) = send_all(card, &apdu);
        assert_eq!(sw, 0x9000, "a chained block is taken");
    }
    let mut apdu = Command::new(0x00, ins, p1, p2)
        .with_data(chunks[chunks.len() - 1])
        .encode_short()
        .unwrap();
    apdu.push(0x00);
    send_all(card, &apdu)
}

/// SELECTs PIV and authenticates with the factory management key (AES-192 on a 5.7 card).
fn select_and_authenticate(card: &mut PivCard) {
    select(card);
    let key = ManagementKey::default_for(AlgorithmId::AES192).unwrap();
    assert_eq!(mgmt_auth_exchange(card, &key, &[0x5A; 16]).1, 0x9000);
}

/// The GENERAL AUTHENTICATE template of a private-key operation: 7C { 82 empty, 81 block }.
fn private_op_template(block: &[u8]) -> Vec<u8> {
    let mut t = TlvBuilder::new();
    t.constructed(Tag::new(0x7C), |b| {
        b.put(Tag::new(0x82), &[]);
        b.put(Tag::new(0x81), block);
    });
    t.finish()
}

/// The result in a GENERAL AUTHENTICATE answer: the value of 7C { 82 }.
fn private_op_result(answer: &[u8]) -> &[u8] {
    Tlv::find_path(answer, &[Tag::new(0x7C), Tag::new(0x82)])
        .unwrap()
        .unwrap()
        .value
}

/// The raw RSA public operation with the `rsa` crate: `block^e mod n`, modulus-sized.
fn public_op(key: &rsa::PrivateKey, block: &[u8]) -> Vec<u8> {
    let m = BoxedUint::from_be_slice(block, key.n_bits_precision()).unwrap();
    let c = rsa::hazmat::rsa_encrypt(key, &m).unwrap();
    let bytes = trimmed(&c.to_be_bytes());
    let mut out = vec![0u8; key.size() - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

/// The IMPORT KEY data of an RSA key: 01 p, 02 q, 03 dP, 04 dQ, 05 qInv, each half the
/// modulus long, as yubico-piv-tool sends them.
fn import_data(key: &rsa::PrivateKey, policies: &[u8]) -> Vec<u8> {
    let half = key.size() / 2;
    let fixed = |v: &[u8]| {
        let v = trimmed(v);
        let mut out = vec![0u8; half - v.len()];
        out.extend_from_slice(&v);
        out
    };
    let (p, q) = rsa_primes(key);
    let dp = key.dp().unwrap().to_be_bytes();
    let dq = key.dq().unwrap().to_be_bytes();
    let qinv = key.crt_coefficient().unwrap().to_be_bytes();
    let mut b = TlvBuilder::new();
    for (tag, v) in [
        (0x01, &p[..]),
        (0x02, &q[..]),
        (0x03, &dp[..]),
        (0x04, &dq[..]),
        (0x05, &qinv[..]),
    ] {
        b.put(Tag::new(tag), &fixed(v));
    }
    let mut data = b.finish();
    data.extend_from_slice(policies);
    data
}

#[test]
fn import_key_with_crt_elements_then_metadata_and_the_raw_operation_for_every_size() {
    for (bits, alg) in [(1024, 0x06u8), (2048, 0x07), (3072, 0x05), (4096, 0x16)] {
        let key = rsa_key(bits);
        let mut card = PivCard::new(1);
        select_and_authenticate(&mut card);
        // PIN policy never (AA 01), touch never (AB 01), so no VERIFY is needed below.
        let data = import_data(&key, &[0xAA, 0x01, 0x01, 0xAB, 0x01, 0x01]);
        // 4096: the CRT elements exceed one short APDU, so the command is chained.
        let (_, sw) = send_chained(&mut card, 0xFE, alg, 0x9A, &data);
        assert_eq!(sw, 0x9000, "RSA {bits} imported");

        // GET METADATA: the algorithm, the policies, "imported" and the public key.
        let (m, sw) = send_all(&mut card, &[0x00, 0xF7, 0x00, 0x9A, 0x00]);
        assert_eq!(sw, 0x9000);
        assert_eq!(Tlv::find(&m, Tag::new(0x01)).unwrap().unwrap().value, [alg]);
        assert_eq!(
            Tlv::find(&m, Tag::new(0x02)).unwrap().unwrap().value,
            [0x01, 0x01]
        );
        assert_eq!(
            Tlv::find(&m, Tag::new(0x03)).unwrap().unwrap().value,
            [0x02]
        );
        let public = Tlv::find(&m, Tag::new(0x04)).unwrap().unwrap().value;
        assert_eq!(
            Tlv::find(public, Tag::new(0x81)).unwrap().unwrap().value,
            &trimmed(&key.n().as_ref().to_be_bytes())[..]
        );
        assert_eq!(
            Tlv::find(public, Tag::new(0x82)).unwrap().unwrap().value,
            [0x01, 0x00, 0x01]
        );

        // GENERAL AUTHENTICATE 7C { 82 empty, 81 block } gives block^d: the public operation
        // takes it back.
        let k = bits / 8;
        let mut block = vec![0u8; k];
        block[0] = 0x00;
        block[1] = 0x01;
        for (i, b) in block.iter_mut().enumerate().skip(2) {
            *b = (i % 251) as u8;
        }
        let (answer, sw) = send_chained(&mut card, 0x87, alg, 0x9A, &private_op_template(&block));
        assert_eq!(sw, 0x9000, "RSA {bits} private operation");
        let out = private_op_result(&answer);
        assert_eq!(out.len(), k);
        assert_eq!(public_op(&key, out), block, "RSA {bits}: (m^d)^e = m");

        // A block of the wrong length, and one not below the modulus, are refused.
        for bad in [&block[1..], &vec![0xFF; k][..]] {
            assert_eq!(
                send_chained(&mut card, 0x87, alg, 0x9A, &private_op_template(bad)).1,
                0x6A80
            );
        }
    }
}

#[test]
fn import_key_refuses_wrong_crt_values_sizes_and_algorithms() {
    let key = rsa_key(2048);
    let mut card = PivCard::new(1);
    select_and_authenticate(&mut card);
    let good = import_data(&key, &[]);
    // dP off by one bit in its last byte.
    let mut bad_dp = good.clone();
    let at = 2 * (3 + 128) + 3 + 127;
    bad_dp[at] ^= 0x01;
    assert_eq!(send_chained(&mut card, 0xFE, 0x07, 0x9A, &bad_dp).1, 0x6A80);
    // p and q swapped: dP, dQ and qInv no longer belong to them.
    let mut swapped = good[131..262].to_vec();
    swapped[0] = 0x01;
    let mut first = good[..131].to_vec();
    first[0] = 0x02;
    let mut reordered = swapped;
    reordered.extend_from_slice(&first);
    reordered.extend_from_slice(&good[262..]);
    assert_eq!(
        send_chained(&mut card, 0xFE, 0x07, 0x9A, &reordered).1,
        0x6A80
    );
    // A 2048-bit key announced as RSA 3072, and as RSA 1024.
    assert_eq!(send_chained(&mut card, 0xFE, 0x05, 0x9A, &good).1, 0x6A80);
    assert_eq!(send_chained(&mut card, 0xFE, 0x06, 0x9A, &good).1, 0x6A80);
    // Without qInv.
    assert_eq!(
        send_chained(&mut card, 0xFE, 0x07, 0x9A, &good[..good.len() - 131]).1,
        0x6A80
    );
    // Nothing was stored.
    assert_eq!(
        send_all(&mut card, &[0x00, 0xF7, 0x00, 0x9A, 0x00]).1,
        0x6A88
    );
    // The right data is taken.
    assert_eq!(send_chained(&mut card, 0xFE, 0x07, 0x9A, &good).1, 0x9000);
}

#[test]
fn generate_rsa_2048_answers_modulus_and_exponent_and_signs_with_the_pin() {
    let mut card = PivCard::new(1);
    select_and_authenticate(&mut card);
    let (t, sw) = send_all(
        &mut card,
        &[
            0x00, 0x47, 0x00, 0x9A, 0x05, 0xAC, 0x03, 0x80, 0x01, 0x07, 0x00,
        ],
    );
    assert_eq!(sw, 0x9000);
    let template = Tlv::find(&t, Tag::new(0x7F49)).unwrap().unwrap();
    let n = Tlv::find(template.value, Tag::new(0x81))
        .unwrap()
        .unwrap()
        .value;
    let e = Tlv::find(template.value, Tag::new(0x82))
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(n.len(), 256);
    assert!(n[0] & 0x80 != 0, "a full 2048-bit modulus");
    assert_eq!(e, [0x01, 0x00, 0x01]);
    let public = rsa::PublicKey::new(
        BoxedUint::from_be_slice_vartime(n),
        BoxedUint::from_be_slice_vartime(e),
    )
    .unwrap();

    // 9A's default PIN policy is once: no signature before VERIFY.
    let digest = sha2::Sha256::digest(b"generated on the card");
    let mut em = vec![0x00, 0x01];
    em.resize(256 - 52, 0xFF);
    em.push(0x00);
    em.extend_from_slice(&[
        0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ]);
    em.extend_from_slice(&digest);
    let ga = private_op_template(&em);
    assert_eq!(send_chained(&mut card, 0x87, 0x07, 0x9A, &ga).1, 0x6982);
    let verify = [
        0x00, 0x20, 0x00, 0x80, 0x08, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0xFF, 0xFF,
    ];
    assert_eq!(send_all(&mut card, &verify).1, 0x9000);
    // Sent as one extended APDU this time.
    let apdu = Command::new(0, 0x87, 0x07, 0x9A)
        .with_data(&ga)
        .with_le(65_536)
        .encode_extended()
        .unwrap();
    let (answer, sw) = send_all(&mut card, &apdu);
    assert_eq!(sw, 0x9000);
    let sig = private_op_result(&answer);
    public
        .verify(rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(), &digest, sig)
        .unwrap();
    // GET METADATA says generated (01).
    let (m, _) = send_all(&mut card, &[0x00, 0xF7, 0x00, 0x9A, 0x00]);
    assert_eq!(
        Tlv::find(&m, Tag::new(0x03)).unwrap().unwrap().value,
        [0x01]
    );
}

#[test]
fn rsa_keys_survive_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.state");
    let key = rsa_key(3072);
    let n = trimmed(&key.n().as_ref().to_be_bytes());
    {
        let mut card = PivCard::with_state_file(&path).unwrap();
        select_and_authenticate(&mut card);
        let data = import_data(&key, &[0xAA, 0x01, 0x01]);
        assert_eq!(send_chained(&mut card, 0xFE, 0x05, 0x9D, &data).1, 0x9000);
    }
    let mut card = PivCard::with_state_file(&path).unwrap();
    let public = card.public_key(SlotId::KEY_MANAGEMENT).unwrap();
    assert_eq!(public.key_type, KeyType::Rsa(3072));
    assert_eq!(public.raw, rsa_public_der(&key));
    // The reloaded key still makes the private operation.
    select(&mut card);
    let mut block = vec![0x42u8; 384];
    block[0] = 0;
    let (answer, sw) = send_chained(&mut card, 0x87, 0x05, 0x9D, &private_op_template(&block));
    assert_eq!(sw, 0x9000);
    let out = private_op_result(&answer);
    assert_eq!(public_op(&key, out), block);
    assert_eq!(n.len(), 384);
    // Debug output shows no part of a prime, in either of the forms bytes print in.
    let (p, _) = rsa_primes(&key);
    let shown = format!("{card:?} {:?}", sim_rsa(&key));
    let hex: String = p[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&format!("{:?}", &p[..8])), "{shown}");
    assert!(!shown.to_ascii_lowercase().contains(&hex), "{shown}");
}

/// Every size, through the driver: the items, PKCS#1 v1.5 and PSS signatures, PKCS#1 v1.5
/// decryption; the 4096-bit key's blocks need command chaining and GET RESPONSE.
#[test]
fn the_driver_signs_and_decrypts_with_rsa_keys_of_every_size() {
    let k1024 = rsa_key(1024);
    let k2048 = rsa_key(2048);
    let k3072 = rsa_key(3072);
    let k4096 = rsa_key(4096);
    let card = PivCard::new_with_keys(
        SERIAL,
        [
            (SlotId::AUTHENTICATION, sim_rsa(&k2048)),
            (SlotId::SIGNATURE, sim_rsa(&k3072)),
            (SlotId::KEY_MANAGEMENT, sim_rsa(&k1024)),
            (SlotId::retired(1).unwrap(), sim_rsa(&k4096)),
        ],
    );
    let (hub, _slots, _mem) = hub_with(card);
    let token = only_token(&hub);
    let items = token.items();
    for (slot, key, bits) in [
        (SlotId::AUTHENTICATION, &k2048, 2048),
        (SlotId::SIGNATURE, &k3072, 3072),
        (SlotId::KEY_MANAGEMENT, &k1024, 1024),
        (SlotId::retired(1).unwrap(), &k4096, 4096),
    ] {
        let k = items
            .iter()
            .find_map(|i| match i {
                Item::Key(k) if k.object_id == slot.object_id() => Some(k),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no key in {slot}: {items:?}"));
        assert_eq!(k.key_type, KeyType::Rsa(bits));
        assert_eq!(k.public_key.as_ref().unwrap().raw, rsa_public_der(key));
    }
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let msg = b"signed with RSA on a PIV card";
        // 9A (RSA 2048): PKCS#1 v1.5 over the message and over a digest, PSS.
        let public = k2048.to_public_key();
        for (alg, data) in [
            (
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha256),
                msg.to_vec(),
            ),
            (
                SignatureAlgorithm::RsaPkcs1v15Digest(HashAlg::Sha256),
                sha2::Sha256::digest(msg).to_vec(),
            ),
        ] {
            let sig = s
                .sign(&SlotId::AUTHENTICATION.object_id(), alg, &data)
                .await
                .unwrap();
            assert_eq!(sig.len(), 256);
            public
                .verify(
                    rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(),
                    &sha2::Sha256::digest(msg),
                    &sig,
                )
                .unwrap();
        }
        let sig = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::RsaPssMessage(HashAlg::Sha384),
                msg,
            )
            .await
            .unwrap();
        public
            .verify(
                rsa::Pss::<rsa::sha2::Sha384>::new(),
                &sha2::Sha384::digest(msg),
                &sig,
            )
            .unwrap();
        // A PSS signature does not pass as PKCS#1 v1.5 (the check can fail).
        assert!(public
            .verify(
                rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha384>(),
                &sha2::Sha384::digest(msg),
                &sig,
            )
            .is_err());

        // 9C (RSA 3072, PIN always): the PIN verified just before serves one signature.
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let sig = s
            .sign(
                &SlotId::SIGNATURE.object_id(),
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha512),
                msg,
            )
            .await
            .unwrap();
        k3072
            .to_public_key()
            .verify(
                rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha512>(),
                &sha2::Sha512::digest(msg),
                &sig,
            )
            .unwrap();
        let e = s
            .sign(
                &SlotId::SIGNATURE.object_id(),
                SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha512),
                msg,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);

        // Decryption with 9D (RSA 1024) and with the retired 4096-bit key, PKCS#1 v1.5 and raw.
        for (slot, key) in [
            (SlotId::KEY_MANAGEMENT, &k1024),
            (SlotId::retired(1).unwrap(), &k4096),
        ] {
            let secret = b"a session key, 32 bytes long...!";
            let ct = key
                .to_public_key()
                .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, secret)
                .unwrap();
            let plain = s
                .decrypt(&slot.object_id(), DecryptAlgorithm::RsaPkcs1v15, &ct)
                .await
                .unwrap();
            assert_eq!(&plain[..], &secret[..], "{slot}");
            let raw = s
                .decrypt(&slot.object_id(), DecryptAlgorithm::RsaRaw, &ct)
                .await
                .unwrap();
            assert_eq!(raw.len(), key.size());
            assert_eq!(public_op(key, &raw), ct, "{slot}: raw^e = ciphertext");
        }
        // A ciphertext longer than the modulus is refused before the card.
        let e = s
            .decrypt(
                &SlotId::KEY_MANAGEMENT.object_id(),
                DecryptAlgorithm::RsaPkcs1v15,
                &[1; 129],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadParameter);
    });
}

/// The one test that generates RSA keys through the driver (3072 is the slow one).
#[test]
fn the_driver_generates_rsa_keys_and_uses_them() {
    let card = PivCard::new(SERIAL + 40);
    let (hub, _slots, _mem) = hub_with(card);
    let token = only_token(&hub);
    let mgmt = PivManagement::for_token(token.id()).unwrap();
    for (slot, alg, bits) in [
        (SlotId::AUTHENTICATION, AlgorithmId::RSA2048, 2048u16),
        (SlotId::KEY_MANAGEMENT, AlgorithmId::RSA3072, 3072),
    ] {
        let item = block_on(mgmt.generate(slot, alg, PinPolicy::Once, TouchPolicy::Never)).unwrap();
        assert_eq!(item.key_type, KeyType::Rsa(bits));
        let meta = block_on(mgmt.metadata(slot.byte())).unwrap().unwrap();
        assert_eq!(meta.algorithm, alg);
        assert_eq!(meta.generated, Some(true));
        assert_eq!(meta.public_key.as_ref(), item.public_key.as_ref());
    }
    let items = token.items();
    let public_of = |slot: SlotId| {
        let raw = items
            .iter()
            .find_map(|i| match i {
                Item::Key(k) if k.object_id == slot.object_id() => k.public_key.clone(),
                _ => None,
            })
            .unwrap()
            .raw;
        use rsa::pkcs1::DecodeRsaPublicKey;
        rsa::PublicKey::from_pkcs1_der(&raw).unwrap()
    };
    block_on(async {
        let mut s = token.open_session().await.unwrap();
        s.verify_pin(PinKind::User, &Pin::from("123456"))
            .await
            .unwrap();
        let msg = b"a key the card made";
        let sig = s
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::RsaPssMessage(HashAlg::Sha256),
                msg,
            )
            .await
            .unwrap();
        public_of(SlotId::AUTHENTICATION)
            .verify(
                rsa::Pss::<rsa::sha2::Sha256>::new(),
                &sha2::Sha256::digest(msg),
                &sig,
            )
            .unwrap();
        let ct = public_of(SlotId::KEY_MANAGEMENT)
            .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, b"wrapped")
            .unwrap();
        let plain = s
            .decrypt(
                &SlotId::KEY_MANAGEMENT.object_id(),
                DecryptAlgorithm::RsaPkcs1v15,
                &ct,
            )
            .await
            .unwrap();
        assert_eq!(&plain[..], b"wrapped");
    });
}
