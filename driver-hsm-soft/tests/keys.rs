//! Keys and certificates: generation, import, signatures, ECDH, export, deletion, identities,
//! and the RustCrypto signer types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Fixture;
use driver_hsm_soft::{Ed25519TokenKey, P256TokenKey, TokenFile};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::EncodePrivateKey;
use signature::{AsyncSigner, Keypair};
use token_core::{
    block_on, CertificateInfo, Constraint, ErrorCode, HashAlg, Item, KeyImport, KeyType, KeyUsage,
    Operation, SignatureAlgorithm, Token,
};
use zeroize::Zeroizing;

fn p256_verifier(item: &token_core::KeyItem) -> p256::ecdsa::VerifyingKey {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&item.public_key.as_ref().unwrap().raw).unwrap()
}

fn ed_verifier(item: &token_core::KeyItem) -> ed25519_dalek::VerifyingKey {
    let raw: [u8; 32] = item
        .public_key
        .as_ref()
        .unwrap()
        .raw
        .clone()
        .try_into()
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&raw).unwrap()
}

#[test]
fn generated_keys_are_listed_with_pin_constraint_and_usage() {
    let f = Fixture::new();
    let token = f.token();
    let mut s = token.session().unwrap();
    block_on(s.verify_pin(token_core::PinKind::User, &common::PIN.into())).unwrap();
    let p = common::generate(&mut s, KeyType::EcP256, "ecc");
    let e = common::generate(&mut s, KeyType::Ed25519, "ed");
    assert_eq!(p.usage, KeyUsage::SIGN | KeyUsage::DERIVE);
    assert_eq!(e.usage, KeyUsage::SIGN);
    assert_eq!(p.constraint, Constraint::Pin);
    assert_eq!(p.public_key.as_ref().unwrap().raw.len(), 65);
    assert_eq!(e.public_key.as_ref().unwrap().raw.len(), 32);
    // The token's list follows the session at once, and so does the file (no PIN needed).
    let items = token.items();
    assert_eq!(items, vec![Item::Key(p.clone()), Item::Key(e.clone())]);
    assert_eq!(TokenFile::read(&f.path).unwrap().items(), items);
    assert!(s.supports(Operation::KeyExchange, &p.object_id));
    assert!(!s.supports(Operation::KeyExchange, &e.object_id));
    assert!(s.supports(Operation::Sign(SignatureAlgorithm::Ed25519), &e.object_id));
    assert!(!s.supports(Operation::Sign(SignatureAlgorithm::Ed25519), &p.object_id));
}

#[test]
fn ecdsa_signatures_verify_with_p256() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    let vk = p256_verifier(&key);
    let msg = b"tokenkit message";
    let der = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        msg,
    ))
    .unwrap();
    let sig = p256::ecdsa::DerSignature::from_bytes(&der).unwrap();
    vk.verify(msg, &sig).unwrap();

    let digest = driver_hsm_soft::sha256(msg);
    let der = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        &digest,
    ))
    .unwrap();
    let sig = p256::ecdsa::DerSignature::from_bytes(&der).unwrap();
    vk.verify(msg, &sig).unwrap();
    vk.verify_prehash(&digest, &sig).unwrap();

    let e = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        &[0; 31],
    ))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter);
    let e = block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, msg)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter);
}

#[test]
fn ed25519_signatures_verify_with_dalek() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::Ed25519, "k");
    let sig = block_on(s.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"m")).unwrap();
    assert_eq!(sig.len(), 64);
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    ed_verifier(&key).verify_strict(b"m", &sig).unwrap();
}

#[test]
fn ecdh_gives_the_x_coordinate_the_peer_computes() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    let peer = p256::SecretKey::from_slice(&[0x42; 32]).unwrap();
    let peer_point = peer.public_key().to_sec1_bytes();
    let ours = block_on(s.key_exchange(&key.object_id, &peer_point)).unwrap();
    let token_pub = p256::PublicKey::from_sec1_bytes(&key.public_key.unwrap().raw).unwrap();
    let theirs = peer.diffie_hellman(&token_pub);
    assert_eq!(ours.as_slice(), theirs.raw_secret_bytes().as_slice());
    assert_eq!(ours.len(), 32);
    let e = block_on(s.key_exchange(&key.object_id, &[4; 65])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadParameter);
}

#[test]
fn imported_pkcs8_keys_der_and_pem_sign_as_the_original() {
    let f = Fixture::new();
    let mut s = f.login();
    let p = p256::SecretKey::from_slice(&[0x17; 32]).unwrap();
    let p_der = Zeroizing::new(p.to_pkcs8_der().unwrap().as_bytes().to_vec());
    let p_pem = p.to_pkcs8_pem(Default::default()).unwrap();
    let e = ed25519_dalek::SigningKey::from_bytes(&[0x29; 32]);
    let e_pem = e.to_pkcs8_pem(Default::default()).unwrap();
    let sec1 = p.to_sec1_pem(Default::default()).unwrap();

    let cases: Vec<(Vec<u8>, Vec<u8>, KeyType)> = vec![
        (
            p_der.to_vec(),
            p.public_key().to_sec1_bytes().to_vec(),
            KeyType::EcP256,
        ),
        (
            p_pem.as_bytes().to_vec(),
            p.public_key().to_sec1_bytes().to_vec(),
            KeyType::EcP256,
        ),
        (
            sec1.as_bytes().to_vec(),
            p.public_key().to_sec1_bytes().to_vec(),
            KeyType::EcP256,
        ),
        (
            e.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            e.verifying_key().to_bytes().to_vec(),
            KeyType::Ed25519,
        ),
        (
            e_pem.as_bytes().to_vec(),
            e.verifying_key().to_bytes().to_vec(),
            KeyType::Ed25519,
        ),
    ];
    for (i, (pkcs8, public, key_type)) in cases.into_iter().enumerate() {
        let item = block_on(s.import_key(&KeyImport {
            pkcs8: Zeroizing::new(pkcs8),
            label: format!("imported {i}"),
            slot: None,
        }))
        .unwrap();
        assert_eq!(item.key_type, key_type, "{i}");
        assert_eq!(item.public_key.as_ref().unwrap().raw, public, "{i}");
        let alg = if key_type == KeyType::EcP256 {
            SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256)
        } else {
            SignatureAlgorithm::Ed25519
        };
        block_on(s.sign(&item.object_id, alg, b"x")).unwrap();
    }
    let e = block_on(s.import_key(&KeyImport {
        pkcs8: Zeroizing::new(b"not a key".to_vec()),
        label: "bad".into(),
        slot: None,
    }))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptedData);
}

#[test]
fn public_keys_export_as_spki() {
    let f = Fixture::new();
    let mut s = f.login();
    for t in [KeyType::EcP256, KeyType::Ed25519] {
        let key = common::generate(&mut s, t, "k");
        let pk = key.public_key.unwrap();
        let der = driver_hsm_soft::spki_der(&pk).unwrap();
        let spki = token_core::SubjectPublicKeyInfo::parse(&der).unwrap();
        assert_eq!(spki.public_key, pk.raw.as_slice());
        let pem = driver_hsm_soft::spki_pem(&pk).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(token_core::pem_to_der(&pem, "PUBLIC KEY").unwrap(), der);
        if t == KeyType::EcP256 {
            use p256::pkcs8::DecodePublicKey;
            assert_eq!(
                p256::PublicKey::from_public_key_der(&der)
                    .unwrap()
                    .to_sec1_bytes()
                    .to_vec(),
                pk.raw
            );
        }
    }
}

#[test]
fn deleting_keys_and_certificates_updates_the_items() {
    let f = Fixture::new();
    let token = f.token();
    let mut s = token.session().unwrap();
    block_on(s.verify_pin(token_core::PinKind::User, &common::PIN.into())).unwrap();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    let cert = block_on(driver_hsm_soft::self_signed_certificate(&mut s, &key, "me")).unwrap();
    assert_eq!(token.items().len(), 2);
    block_on(s.delete_item(&key.object_id)).unwrap();
    assert_eq!(token.items(), vec![Item::Certificate(cert.clone())]);
    let e = block_on(s.sign(
        &key.object_id,
        SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        b"x",
    ))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound);
    let e = block_on(s.delete_item(&key.object_id)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound);
    block_on(s.delete_item(&cert.object_id)).unwrap();
    assert!(token.items().is_empty());
    // Deleting needs the PIN.
    let key = common::generate(&mut s, KeyType::Ed25519, "k2");
    let mut other = token.session().unwrap();
    let e = block_on(other.delete_item(&key.object_id)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
}

#[test]
fn a_key_deleted_by_another_session_stops_signing_here() {
    let f = Fixture::new();
    let token = f.token();
    let mut a = token.session().unwrap();
    let mut b = token.session().unwrap();
    block_on(a.verify_pin(token_core::PinKind::User, &common::PIN.into())).unwrap();
    block_on(b.verify_pin(token_core::PinKind::User, &common::PIN.into())).unwrap();
    let key = common::generate(&mut a, KeyType::Ed25519, "k");
    block_on(a.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"x")).unwrap();
    block_on(b.delete_item(&key.object_id)).unwrap();
    let e = block_on(a.sign(&key.object_id, SignatureAlgorithm::Ed25519, b"x")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound);
}

#[test]
fn self_signed_certificates_make_identities() {
    let f = Fixture::new();
    let mut s = f.login();
    for t in [KeyType::EcP256, KeyType::Ed25519] {
        let key = common::generate(&mut s, t, "id key");
        let cert = block_on(driver_hsm_soft::self_signed_certificate(
            &mut s, &key, "Alice",
        ))
        .unwrap();
        assert_eq!(cert.label, "Alice");
        let info = CertificateInfo::parse(&cert.der).unwrap();
        assert_eq!(info.subject_common_name().as_deref(), Some("Alice"));
        assert_eq!(info.issuer(), info.subject());
        let spki = info.subject_public_key_info().unwrap();
        assert_eq!(
            spki.public_key,
            key.public_key.as_ref().unwrap().raw.as_slice()
        );
        assert_eq!(info.serial().len(), 16);
        // Ten years: the years differ by 10 whatever the encoding.
        let year = |t: &str| -> u32 {
            if t.len() == 13 {
                2000 + t[..2].parse::<u32>().unwrap()
            } else {
                t[..4].parse().unwrap()
            }
        };
        assert_eq!(year(info.not_after()) - year(info.not_before()), 10);
        // The signature verifies over the TBSCertificate.
        let outer = token_core::Tlv::parse_exact(&cert.der).unwrap();
        let mut parts = outer.children();
        let tbs = parts.next().unwrap().unwrap();
        let _alg = parts.next().unwrap().unwrap();
        let bits = parts.next().unwrap().unwrap();
        let sig = &bits.value[1..];
        match t {
            KeyType::EcP256 => {
                let sig = p256::ecdsa::DerSignature::from_bytes(sig).unwrap();
                p256_verifier(&key).verify(tbs.raw(), &sig).unwrap();
            }
            _ => {
                let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
                ed_verifier(&key).verify_strict(tbs.raw(), &sig).unwrap();
            }
        }
    }
}

#[test]
fn certificates_import_as_der_or_pem_and_bad_ones_are_refused() {
    let f = Fixture::new();
    let mut s = f.login();
    let key = common::generate(&mut s, KeyType::EcP256, "k");
    let der = block_on(driver_hsm_soft::self_signed_certificate_der(
        &mut s, &key, "Bob",
    ))
    .unwrap();
    let from_der = block_on(s.import_certificate("", &der, None)).unwrap();
    assert_eq!(from_der.label, "Bob");
    let pem = token_core::der_to_pem("CERTIFICATE", &der);
    let from_pem = block_on(s.import_certificate("pem", pem.as_bytes(), None)).unwrap();
    assert_eq!(from_pem.der, der);
    let e = block_on(s.import_certificate("x", &der[..der.len() - 1], None)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptedData);
}

#[test]
fn token_keys_are_async_signers_and_keypairs() {
    let f = Fixture::new();
    let mut s = f.login();
    let p = common::generate(&mut s, KeyType::EcP256, "p");
    let e = common::generate(&mut s, KeyType::Ed25519, "e");
    let shared = P256TokenKey::share(s);
    let pk = P256TokenKey::new(shared.clone(), &p).unwrap();
    let ek = Ed25519TokenKey::new(shared, &e).unwrap();
    assert!(P256TokenKey::new(pk.session().clone(), &e).is_err());

    // Generic code written against the traits.
    async fn sign_with<K, S>(key: &K, msg: &[u8]) -> S
    where
        K: AsyncSigner<S> + Keypair,
    {
        key.sign_async(msg).await.unwrap()
    }
    block_on(async {
        let der: p256::ecdsa::DerSignature = sign_with(&pk, b"hello").await;
        pk.verifying_key().verify(b"hello", &der).unwrap();
        let fixed: p256::ecdsa::Signature = sign_with(&pk, b"hello").await;
        pk.verifying_key().verify(b"hello", &fixed).unwrap();
        assert_eq!(pk.verifying_key(), p256_verifier(&p));

        use signature::hazmat::AsyncPrehashSigner;
        let digest = driver_hsm_soft::sha256(b"hello");
        let sig = AsyncPrehashSigner::<p256::ecdsa::Signature>::sign_prehash_async(&pk, &digest)
            .await
            .unwrap();
        pk.verifying_key().verify(b"hello", &sig).unwrap();

        let sig: ed25519_dalek::Signature = sign_with(&ek, b"hello").await;
        ek.verifying_key().verify_strict(b"hello", &sig).unwrap();
    });
}

#[test]
fn token_key_errors_keep_the_token_error() {
    let f = Fixture::new();
    let mut s = f.login();
    let p = common::generate(&mut s, KeyType::EcP256, "p");
    block_on(s.logout()).unwrap();
    let key = P256TokenKey::new(P256TokenKey::share(s), &p).unwrap();
    let e = block_on(AsyncSigner::<p256::ecdsa::DerSignature>::sign_async(
        &key, b"x",
    ))
    .unwrap_err();
    let source = std::error::Error::source(&e).unwrap();
    let te = source.downcast_ref::<token_core::Error>().unwrap();
    assert_eq!(te.code(), ErrorCode::AuthenticationNeeded);
}
