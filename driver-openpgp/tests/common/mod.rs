//! Helpers shared by the integration tests: cards, certificates, PKCS#8 keys, a hub.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use driver_openpgp::sim::OpenPgpCard;
use driver_openpgp::{Algorithm, KeyRef, OpenPgpDriver};
use p256::ecdsa::signature::Signer;
use token_core::testkit::{MemoryCard, TestSlots};
use token_core::{CardSimulator, Hub, SubjectPublicKeyInfo, Tag, TlvBuilder, TokenHandle, TokenId};

pub const SERIAL: u32 = 0x00C0_FFEE;
pub const TOKEN: &str = "openpgp:fffe00c0ffee";
pub const SIG_P256: [u8; 32] = [0x11; 32];
pub const DEC_P256: [u8; 32] = [0x22; 32];
pub const AUT_ED25519: [u8; 32] = [0x33; 32];
pub const RESETTING_CODE: &str = "resetcode";
pub const PW1: &str = "123456";
pub const PW3: &str = "12345678";

/// The card of most tests: ECDSA P-256 signature key, ECDH P-256 decryption key, Ed25519
/// authentication key, a certificate for the authentication slot's neighbour (SIG), a
/// resetting code, a cardholder name.
pub fn card_with_keys() -> OpenPgpCard {
    let mut card = OpenPgpCard::new(SERIAL);
    card.put_key(KeyRef::Sig, Algorithm::EcdsaP256, &SIG_P256)
        .unwrap();
    card.put_key(KeyRef::Dec, Algorithm::EcdhP256, &DEC_P256)
        .unwrap();
    card.put_key(KeyRef::Aut, Algorithm::Ed25519, &AUT_ED25519)
        .unwrap();
    card.set_certificate(KeyRef::Sig, &self_signed_p256("Alice", &SIG_P256))
        .unwrap();
    card.set_resetting_code(RESETTING_CODE.as_bytes()).unwrap();
    card.set_name("Liddell<<Alice").unwrap();
    card
}

/// A hub with only the OpenPGP driver, watching `slots`.
pub fn openpgp_hub(slots: &TestSlots) -> Hub {
    Hub::builder()
        .registered(false)
        .driver(0, Arc::new(OpenPgpDriver))
        .provider(slots.provider())
        .start()
        .unwrap()
}

/// The token of the card [`SERIAL`] ([`TOKEN`]) in `hub`.
pub fn the_token(hub: &Hub) -> TokenHandle {
    hub.token(&TokenId::parse(TOKEN).unwrap()).unwrap()
}

/// A hub with only the OpenPGP driver and `sim` (answering as card [`SERIAL`]) in reader "R".
pub fn hub_with_sim(sim: Box<dyn CardSimulator>) -> (TestSlots, Hub, MemoryCard, TokenHandle) {
    let slots = TestSlots::new();
    let hub = openpgp_hub(&slots);
    let memory = slots.insert_card("R", sim);
    hub.settle();
    let token = the_token(&hub);
    (slots, hub, memory, token)
}

/// A hub with only the OpenPGP driver and `card` in reader "R".
pub fn hub_with(card: OpenPgpCard) -> (TestSlots, Hub, MemoryCard, TokenHandle) {
    hub_with_sim(Box::new(card))
}

/// The iterated and salted S2K of RFC 4880 §3.7.1.3 with SHA-256, written out plainly.
pub fn s2k_sha256(salt: &[u8], pin: &[u8], count: usize) -> Vec<u8> {
    use sha2::Digest;
    let unit: Vec<u8> = salt.iter().chain(pin).copied().collect();
    let stream: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(count.max(unit.len()))
        .collect();
    sha2::Sha256::digest(&stream).to_vec()
}

pub fn p256_point(scalar: &[u8]) -> Vec<u8> {
    let sk = p256::ecdsa::SigningKey::from_slice(scalar).unwrap();
    sk.verifying_key().to_sec1_point(false).as_bytes().to_vec()
}

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

const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];

/// A self-signed X.509 certificate for the P-256 key `scalar`.
pub fn self_signed_p256(cn: &str, scalar: &[u8]) -> Vec<u8> {
    let curve = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    let spki = SubjectPublicKeyInfo::encode(
        SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY,
        Some(&curve),
        &p256_point(scalar),
    );
    let mut tbs = TlvBuilder::new();
    tbs.constructed(Tag::new(0x30), |b| {
        b.constructed(Tag::new(0xA0), |b| {
            b.put(Tag::new(0x02), &[0x02]);
        });
        b.put(Tag::new(0x02), &[0x01]);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), OID_ECDSA_SHA256);
        });
        name(b, cn);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x17), b"250101000000Z");
            b.put(Tag::new(0x17), b"351231235959Z");
        });
        name(b, cn);
        b.put_raw(&spki);
    });
    let tbs = tbs.finish();
    let sk = p256::ecdsa::SigningKey::from_slice(scalar).unwrap();
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

/// PKCS#8 (RFC 5915 inside RFC 5208) of a P-256 scalar, without the optional public key.
pub fn pkcs8_p256(scalar: &[u8]) -> Vec<u8> {
    let mut ec = TlvBuilder::new();
    ec.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &[0x01]);
        b.put(Tag::new(0x04), scalar);
    });
    let ec = ec.finish();
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &[0x00]);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY);
            b.put(Tag::new(0x06), SubjectPublicKeyInfo::OID_P256);
        });
        b.put(Tag::new(0x04), &ec);
    });
    b.finish()
}

/// PKCS#8 (RFC 8410) of an Ed25519 seed or X25519 secret.
pub fn pkcs8_curve25519(oid: &[u8], secret: &[u8; 32]) -> Vec<u8> {
    let mut inner = vec![0x04, 0x20];
    inner.extend_from_slice(secret);
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &[0x00]);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), oid);
        });
        b.put(Tag::new(0x04), &inner);
    });
    b.finish()
}

/// Test RSA keys (PKCS#8 DER), made once with `openssl genpkey -algorithm RSA`; not secret.
pub const RSA2048_PK8: &[u8] = include_bytes!("../fixtures/rsa2048.pk8.der");
/// See [`RSA2048_PK8`].
pub const RSA3072_PK8: &[u8] = include_bytes!("../fixtures/rsa3072.pk8.der");
/// See [`RSA2048_PK8`].
pub const RSA4096_PK8: &[u8] = include_bytes!("../fixtures/rsa4096.pk8.der");

/// A fixture key as the `rsa` crate reads it.
pub fn rsa_key(pk8: &[u8]) -> rsa::PrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::PrivateKey::from_pkcs8_der(pk8).unwrap()
}

/// The PKCS#1 `RSAPrivateKey` DER of a fixture key (what `OpenPgpCard::put_key` takes).
pub fn rsa_pkcs1(pk8: &[u8]) -> Vec<u8> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    rsa_key(pk8).to_pkcs1_der().unwrap().as_bytes().to_vec()
}

/// The PKCS#1 `RSAPublicKey` DER of a fixture key (token-core's `PublicKey::raw` for RSA).
pub fn rsa_public_der(pk8: &[u8]) -> Vec<u8> {
    use rsa::pkcs1::EncodeRsaPublicKey;
    rsa_key(pk8)
        .to_public_key()
        .to_pkcs1_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Verifies an RSA PKCS#1 v1.5 signature over `digest` (the `rsa` crate's verifier, with
/// the hash's DigestInfo in `scheme`); panics when it does not verify.
pub fn rsa_verify(public_der: &[u8], scheme: rsa::Pkcs1v15Sign, digest: &[u8], signature: &[u8]) {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let public = rsa::PublicKey::from_pkcs1_der(public_der).unwrap();
    public.verify(scheme, digest, signature).unwrap();
}

/// PKCS#1 v1.5 encryption to an RSA public key.
pub fn rsa_encrypt(public_der: &[u8], message: &[u8]) -> Vec<u8> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let public = rsa::PublicKey::from_pkcs1_der(public_der).unwrap();
    public
        .encrypt(&mut getrandom::SysRng, rsa::Pkcs1v15Encrypt, message)
        .unwrap()
}

/// AES-CBC with a zero IV (what PSO:ENCIPHER with the key in D5 does), block by block with
/// the `aes` crate: AES-128 for a 16-byte key, AES-256 for a 32-byte one.
pub fn aes_cbc_encrypt(key: &[u8], plain: &[u8]) -> Vec<u8> {
    match key.len() {
        16 => cbc_encrypt::<aes::Aes128>(key, plain),
        32 => cbc_encrypt::<aes::Aes256>(key, plain),
        n => panic!("no AES key of {n} bytes"),
    }
}

fn cbc_encrypt<C: aes::cipher::BlockCipherEncrypt + aes::cipher::KeyInit>(
    key: &[u8],
    plain: &[u8],
) -> Vec<u8> {
    let cipher = C::new_from_slice(key).unwrap();
    let mut previous = [0u8; 16];
    let mut out = Vec::new();
    for block in plain.chunks(16) {
        let mut b = aes::cipher::Block::<C>::default();
        for i in 0..16 {
            b[i] = block[i] ^ previous[i];
        }
        cipher.encrypt_block(&mut b);
        previous.copy_from_slice(&b);
        out.extend_from_slice(&b);
    }
    out
}
