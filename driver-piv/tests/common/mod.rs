//! Helpers shared by the integration tests: certificates made with p256/p384, cards.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use driver_piv::sim::{PivCard, SimKey};
use driver_piv::{ManagementKey, PivDriver, SlotId};
use p256::ecdsa::signature::Signer;
use token_core::testkit::{MemoryCard, TestSlots};
use token_core::{
    CardSimulator, Command, Hub, SubjectPublicKeyInfo, Tag, Tlv, TlvBuilder, TokenHandle,
};

pub const SERIAL: u32 = 12_345_678;
pub const P256_9A: [u8; 32] = [0x11; 32];
pub const P384_9C: [u8; 48] = [0x22; 48];
pub const P256_9D: [u8; 32] = [0x33; 32];
pub const P256_CA: [u8; 32] = [0x44; 32];

/// SELECT of the PIV application by its short AID (A0 00 00 03 08).
pub const SELECT_PIV: [u8; 10] = [0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08];

const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];

fn name(b: &mut TlvBuilder, cn: &str) {
    b.constructed(Tag::new(0x30), |b| {
        b.constructed(Tag::new(0x31), |b| {
            b.constructed(Tag::new(0x30), |b| {
                b.put(Tag::new(0x06), &[0x55, 0x04, 0x03]);
                b.put(Tag::new(0x0C), cn.as_bytes());
            });
        });
    });
}

/// An RSA test key of `bits` bits (1024, 2048, 3072, 4096), made once with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:<bits>` and kept in
/// `tests/keys/rsa<bits>.pem` (PKCS#8): fixed keys spare the tests RSA key generation.
pub fn rsa_key(bits: usize) -> rsa::PrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    let path = format!("{}/tests/keys/rsa{bits}.pem", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read_to_string(&path).unwrap();
    rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap()
}

/// A big-endian integer without its leading zero bytes.
pub fn trimmed(v: &[u8]) -> Vec<u8> {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v[first..].to_vec()
}

/// The RSA key's primes p and q, big-endian.
pub fn rsa_primes(key: &rsa::PrivateKey) -> (Vec<u8>, Vec<u8>) {
    use rsa::traits::PrivateKeyParts;
    let primes = key.primes();
    (
        trimmed(&primes[0].as_ref().to_be_bytes()),
        trimmed(&primes[1].as_ref().to_be_bytes()),
    )
}

/// The simulator's key for an RSA test key.
pub fn sim_rsa(key: &rsa::PrivateKey) -> SimKey {
    let (p, q) = rsa_primes(key);
    SimKey::rsa(&p, &q).unwrap()
}

/// The DER `RSAPublicKey` of a key, as the `rsa` crate (`pkcs1`) encodes it.
pub fn rsa_public_der(key: &rsa::PrivateKey) -> Vec<u8> {
    use rsa::pkcs1::EncodeRsaPublicKey;
    key.to_public_key()
        .to_pkcs1_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// The raw public point of a P-256 scalar.
pub fn p256_point(scalar: &[u8]) -> Vec<u8> {
    let sk = p256::ecdsa::SigningKey::from_slice(scalar).unwrap();
    sk.verifying_key().to_sec1_point(false).as_bytes().to_vec()
}

/// The raw public point of a P-384 scalar.
pub fn p384_point(scalar: &[u8]) -> Vec<u8> {
    let sk = p384::ecdsa::SigningKey::from_slice(scalar).unwrap();
    sk.verifying_key().to_sec1_point(false).as_bytes().to_vec()
}

/// An X.509 v3 certificate for an EC public point (P-256 when 65 bytes, P-384 when 97),
/// signed with ECDSA P-256 SHA-256 by `issuer_scalar` (the subject's own scalar makes it
/// self-signed).
pub fn certificate(cn: &str, point: &[u8], issuer_scalar: &[u8], issuer_cn: &str) -> Vec<u8> {
    let curve: &[u8] = if point.len() == 65 {
        &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
    } else {
        &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22]
    };
    let spki =
        SubjectPublicKeyInfo::encode(SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY, Some(curve), point);
    let mut tbs = TlvBuilder::new();
    tbs.constructed(Tag::new(0x30), |b| {
        b.constructed(Tag::new(0xA0), |b| {
            b.put(Tag::new(0x02), &[0x02]);
        });
        b.put(Tag::new(0x02), &[0x01, 0x23, 0x45]);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), OID_ECDSA_SHA256);
        });
        name(b, issuer_cn);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x17), b"250101000000Z");
            b.put(Tag::new(0x17), b"351231235959Z");
        });
        name(b, cn);
        b.put_raw(&spki);
    });
    let tbs = tbs.finish();
    let sk = p256::ecdsa::SigningKey::from_slice(issuer_scalar).unwrap();
    let sig: p256::ecdsa::DerSignature = sk.sign(&tbs);
    let mut bits = vec![0u8];
    bits.extend_from_slice(sig.as_bytes());
    let mut cert = TlvBuilder::new();
    cert.constructed(Tag::new(0x30), |b| {
        b.put_raw(&tbs);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), OID_ECDSA_SHA256);
        });
        b.put(Tag::new(0x03), &bits);
    });
    cert.finish()
}

/// A self-signed certificate for the P-256 key `scalar`.
pub fn self_signed_p256(cn: &str, scalar: &[u8]) -> Vec<u8> {
    certificate(cn, &p256_point(scalar), scalar, cn)
}

/// The conformance card: a P-256 key with a self-signed certificate in 9A.
pub fn basic_card() -> PivCard {
    basic_card_sn(SERIAL)
}

/// The basic card with another serial (tests that reach a token by ID through
/// `PivManagement` use their own, since tests run in parallel in one process).
pub fn basic_card_sn(serial: u32) -> PivCard {
    PivCard::new_with_keys(
        serial,
        [(SlotId::AUTHENTICATION, SimKey::p256(&P256_9A).unwrap())],
    )
    .with_certificate(
        SlotId::AUTHENTICATION,
        &self_signed_p256("PIV test 9A", &P256_9A),
        false,
    )
}

/// A fuller card: P-256 in 9A (self-signed certificate), P-384 in 9C (CA-issued, gzip'd
/// certificate), P-256 in 9D (certificate), a CHUID with `guid` if given.
pub fn full_card(guid: Option<[u8; 16]>) -> PivCard {
    let card = PivCard::new_with_keys(
        SERIAL,
        [
            (SlotId::AUTHENTICATION, SimKey::p256(&P256_9A).unwrap()),
            (SlotId::SIGNATURE, SimKey::p384(&P384_9C).unwrap()),
            (SlotId::KEY_MANAGEMENT, SimKey::p256(&P256_9D).unwrap()),
        ],
    )
    .with_certificate(
        SlotId::AUTHENTICATION,
        &self_signed_p256("PIV test 9A", &P256_9A),
        false,
    )
    .with_certificate(
        SlotId::SIGNATURE,
        &certificate("PIV test 9C", &p384_point(&P384_9C), &P256_CA, "Test CA"),
        true,
    )
    .with_certificate(
        SlotId::KEY_MANAGEMENT,
        &certificate("PIV test 9D", &p256_point(&P256_9D), &P256_CA, "Test CA"),
        false,
    );
    match guid {
        Some(g) => card.with_chuid(g),
        None => card,
    }
}

/// A hub with only the PIV driver, watching `slots`.
pub fn piv_hub(slots: &TestSlots) -> Hub {
    Hub::builder()
        .registered(false)
        .driver(0, Arc::new(PivDriver))
        .provider(slots.provider())
        .start()
        .unwrap()
}

/// A hub with only the PIV driver and `card` in reader "Reader 0", settled.
pub fn hub_with(card: PivCard) -> (Hub, TestSlots, MemoryCard) {
    let slots = TestSlots::new();
    let hub = piv_hub(&slots);
    let mem = slots.insert_card("Reader 0", Box::new(card));
    hub.settle();
    (hub, slots, mem)
}

/// The hub's one token.
pub fn only_token(hub: &Hub) -> TokenHandle {
    let ids = hub.token_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    hub.token(&ids[0]).unwrap()
}

/// Sends `apdu` and splits the answer into data and SW.
pub fn send(card: &mut PivCard, apdu: &[u8]) -> (Vec<u8>, u16) {
    let r = card.process(apdu);
    let (data, sw) = r.split_at(r.len() - 2);
    (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

/// Sends and follows 61xx with GET RESPONSE, as a host would.
pub fn send_all(card: &mut PivCard, apdu: &[u8]) -> (Vec<u8>, u16) {
    let (mut data, mut sw) = send(card, apdu);
    while sw >> 8 == 0x61 {
        let (more, next) = send(card, &[0x00, 0xC0, 0x00, 0x00, 0x00]);
        data.extend_from_slice(&more);
        sw = next;
    }
    (data, sw)
}

/// SELECTs the PIV application; asserts the card takes it.
pub fn select(card: &mut PivCard) {
    assert_eq!(send(card, &SELECT_PIV).1, 0x9000);
}

/// Mutual authentication with `key` through raw APDUs (SP 800-73-4 Part 2 Appendix A.1): asks
/// for the witness (asserting the card gives one), then answers it with the host's
/// `challenge`. Returns the card's answer to that (data and SW), unchecked.
pub fn mgmt_auth_exchange(
    card: &mut PivCard,
    key: &ManagementKey,
    challenge: &[u8],
) -> (Vec<u8>, u16) {
    let alg = key.algorithm().0;
    let (t, sw) = send(card, &[0x00, 0x87, alg, 0x9B, 0x04, 0x7C, 0x02, 0x80, 0x00]);
    assert_eq!(sw, 0x9000);
    let witness = Tlv::find_path(&t, &[Tag::new(0x7C), Tag::new(0x80)])
        .unwrap()
        .unwrap()
        .value
        .to_vec();
    let plain = key.decrypt(&witness).unwrap();
    let n = key.block_len();
    let mut data = vec![0x7C, (4 + 2 * n) as u8, 0x80, n as u8];
    data.extend_from_slice(&plain);
    data.extend_from_slice(&[0x81, n as u8]);
    data.extend_from_slice(challenge);
    let apdu = Command::new(0, 0x87, alg, 0x9B)
        .with_data(&data)
        .encode_short()
        .unwrap();
    send(card, &apdu)
}
