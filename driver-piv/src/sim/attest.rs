//! YubiKey PIV attestation in the simulator: the attestation key in slot F9 with its
//! self-signed certificate (object `5FFF01`), and the certificates ATTEST (INS F9) issues for
//! keys generated on the card.
//!
//! A real YubiKey's F9 certificate is issued by Yubico's CA; the simulator's is its own trust
//! anchor (`CN=Yubico PIV Attestation (tokenkit simulator)`, basicConstraints cA), so
//! `openssl verify -CAfile f9.pem` is what checks an attestation here. The attestation
//! certificates carry Yubico's extensions (developers.yubico.com, "PIV attestation"):
//! `1.3.6.1.4.1.41482.3.3` firmware version (3 bytes), `.3.7` serial number (a DER INTEGER),
//! `.3.8` PIN and touch policy (2 bytes), `.3.9` form factor (1 byte).

use p256::ecdsa::signature::Signer;
use token_core::{Error, PublicKey, Result, Tag, TlvBuilder};

use super::SimKey;
use crate::objects::der_uint;
use crate::types::{PinPolicy, TouchPolicy};

/// The attestation key's reference.
pub(crate) const ATTESTATION_SLOT: u8 = 0xF9;

/// The attestation certificate's subject (and every attestation's issuer).
const CA_NAME: &str = "Yubico PIV Attestation (tokenkit simulator)";

/// 1.2.840.10045.4.3.2, ecdsa-with-SHA256.
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
/// 2.5.4.3, commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.19, basicConstraints.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
/// 2.5.29.15, keyUsage.
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
/// 1.3.6.1.4.1.41482.3, Yubico's PIV attestation arc.
const OID_YUBICO_PIV: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0xC4, 0x0A, 0x03];
/// The form factor extension's byte: 00, undefined (a simulator has no shape).
const FORM_FACTOR: u8 = 0x00;

/// The OID `1.3.6.1.4.1.41482.3.<n>`.
pub(crate) fn yubico_oid(n: u8) -> Vec<u8> {
    let mut oid = OID_YUBICO_PIV.to_vec();
    oid.push(n);
    oid
}

fn name(b: &mut TlvBuilder, common_name: &str) {
    b.constructed(Tag::new(0x30), |b| {
        b.constructed(Tag::new(0x31), |b| {
            b.constructed(Tag::new(0x30), |b| {
                b.put(Tag::new(0x06), OID_CN);
                b.put(Tag::new(0x0C), common_name.as_bytes());
            });
        });
    });
}

fn extension(b: &mut TlvBuilder, oid: &[u8], critical: bool, value: &[u8]) {
    b.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x06), oid);
        if critical {
            b.put(Tag::new(0x01), &[0xFF]);
        }
        b.put(Tag::new(0x04), value);
    });
}

fn random_serial() -> Result<Vec<u8>> {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s).map_err(|_| Error::communication("the system random source failed"))?;
    // Positive, and 16 bytes long (RFC 5280 §4.1.2.2).
    s[0] = (s[0] & 0x7F) | 0x40;
    Ok(s.to_vec())
}

/// Signs `tbs` with the P-256 attestation key and wraps it into a certificate.
fn sign(ca: &SimKey, tbs: &[u8]) -> Result<Vec<u8>> {
    let sk = p256::ecdsa::SigningKey::from_slice(ca.secret())
        .map_err(|_| Error::corrupted("simulator attestation key"))?;
    let sig: p256::ecdsa::DerSignature = sk.sign(tbs);
    let mut bits = vec![0u8];
    bits.extend_from_slice(sig.as_bytes());
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.put_raw(tbs);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), OID_ECDSA_SHA256);
        });
        b.put(Tag::new(0x03), &bits);
    });
    Ok(b.finish())
}

/// The common part of both certificates' TBSCertificate.
fn tbs(subject: &str, spki: &[u8], extensions: impl FnOnce(&mut TlvBuilder)) -> Result<Vec<u8>> {
    let serial = random_serial()?;
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.constructed(Tag::new(0xA0), |b| {
            b.put(Tag::new(0x02), &[0x02]);
        });
        b.put(Tag::new(0x02), &serial);
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x06), OID_ECDSA_SHA256);
        });
        name(b, CA_NAME);
        // YubiKey attestations have no meaningful expiry: 99991231235959Z (RFC 5280
        // §4.1.2.5).
        b.constructed(Tag::new(0x30), |b| {
            b.put(Tag::new(0x17), b"240101000000Z");
            b.put(Tag::new(0x18), b"99991231235959Z");
        });
        name(b, subject);
        b.put_raw(spki);
        b.constructed(Tag::new(0xA3), |b| {
            b.constructed(Tag::new(0x30), extensions);
        });
    });
    Ok(b.finish())
}

/// A fresh attestation key (P-256) and its self-signed certificate.
pub(crate) fn new_attestation_key() -> Result<(SimKey, Vec<u8>)> {
    let key = SimKey::generate(crate::types::AlgorithmId::ECC_P256)?;
    let spki = key.public_key()?.to_spki_der();
    let tbs = tbs(CA_NAME, &spki, |b| {
        // cA, and keyCertSign (bit 5) with digitalSignature (bit 0).
        extension(
            b,
            OID_BASIC_CONSTRAINTS,
            true,
            &[0x30, 0x03, 0x01, 0x01, 0xFF],
        );
        extension(b, OID_KEY_USAGE, true, &[0x03, 0x02, 0x02, 0x84]);
    })?;
    let cert = sign(&key, &tbs)?;
    Ok((key, cert))
}

/// What an attestation says about the attested key.
pub(crate) struct Attested<'a> {
    pub(crate) slot: u8,
    pub(crate) public: &'a PublicKey,
    pub(crate) pin_policy: PinPolicy,
    pub(crate) touch_policy: TouchPolicy,
    pub(crate) version: [u8; 3],
    pub(crate) serial: u32,
}

/// The attestation certificate for a key, issued by the attestation key `ca`:
/// `CN=YubiKey PIV Attestation <slot>` with Yubico's extensions.
pub(crate) fn attest(ca: &SimKey, what: &Attested<'_>) -> Result<Vec<u8>> {
    let subject = format!("YubiKey PIV Attestation {:02x}", what.slot);
    let mut serial = TlvBuilder::new();
    serial.put(Tag::new(0x02), &der_uint(&what.serial.to_be_bytes()));
    let serial = serial.finish();
    let tbs = tbs(&subject, &what.public.to_spki_der(), |b| {
        extension(b, &yubico_oid(3), false, &what.version);
        extension(b, &yubico_oid(7), false, &serial);
        extension(
            b,
            &yubico_oid(8),
            false,
            &[what.pin_policy.byte(), what.touch_policy.byte()],
        );
        extension(b, &yubico_oid(9), false, &[FORM_FACTOR]);
    })?;
    sign(ca, &tbs)
}
