//! Self-signed X.509 v3 certificates (RFC 5280) for a token key, signed through the token's
//! session (any driver's), so a token can hold identities (a key with its certificate).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::model::{CertificateItem, HashAlg, KeyItem, KeyType, KeyUsage, SignatureAlgorithm};
use crate::session::TokenSession;
use crate::tlv::{Tag, TlvBuilder};

const SEQUENCE: Tag = Tag::new(0x30);
const SET: Tag = Tag::new(0x31);
const INTEGER: Tag = Tag::new(0x02);
const BIT_STRING: Tag = Tag::new(0x03);
const OCTET_STRING: Tag = Tag::new(0x04);
const OID: Tag = Tag::new(0x06);
const BOOLEAN: Tag = Tag::new(0x01);
const UTF8_STRING: Tag = Tag::new(0x0C);
const UTC_TIME: Tag = Tag::new(0x17);
const GENERALIZED_TIME: Tag = Tag::new(0x18);
const VERSION: Tag = Tag::new(0xA0);
const EXTENSIONS: Tag = Tag::new(0xA3);

/// 1.2.840.10045.4.3.2, ecdsa-with-SHA256 (RFC 5758 §3.2).
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
/// 1.2.840.10045.4.3.3, ecdsa-with-SHA384 (RFC 5758 §3.2).
const OID_ECDSA_SHA384: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03];
/// 1.3.101.112, Ed25519 (RFC 8410 §3).
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
/// 2.5.4.3, id-at-commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.14, subjectKeyIdentifier.
const OID_SKI: &[u8] = &[0x55, 0x1D, 0x0E];
/// 2.5.29.15, keyUsage.
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
/// 2.5.29.19, basicConstraints.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];

/// How long the certificate is valid from now.
const VALIDITY_YEARS: i64 = 10;

/// Makes a self-signed certificate for `key` with subject and issuer `CN=<common_name>`, a
/// random serial, valid from now for 10 years, signed with the key through `session` (so the
/// session needs the PIN, or a PIN callback), and stores it on the token next to the key.
///
/// P-256 keys sign with ECDSA over SHA-256, P-384 keys over SHA-384, Ed25519 keys with
/// Ed25519. The certificate says
/// `keyUsage` digitalSignature and keyCertSign (plus keyAgreement for P-256 keys that may
/// derive), `basicConstraints` cA, and a subject key identifier equal to the key ID. Being its
/// own issuer, it is a trust anchor of its own: `openssl verify -CAfile c.pem c.pem` accepts
/// it.
///
/// # Errors
/// `BadParameter` for a key without a public key or of another type, or an empty or too long
/// common name; the session's errors from signing and storing.
pub async fn self_signed_certificate(
    session: &mut TokenSession,
    key: &KeyItem,
    common_name: &str,
) -> Result<CertificateItem> {
    let der = self_signed_certificate_der(session, key, common_name).await?;
    session
        .import_certificate(common_name, &der, Some(&key.object_id))
        .await
}

/// Builds and signs the certificate [`self_signed_certificate`] describes without storing it.
///
/// # Errors
/// As [`self_signed_certificate`].
pub async fn self_signed_certificate_der(
    session: &mut TokenSession,
    key: &KeyItem,
    common_name: &str,
) -> Result<Vec<u8>> {
    if common_name.is_empty() || common_name.chars().count() > 64 {
        // RFC 5280 ub-common-name: 64.
        return Err(Error::bad_parameter("a common name has 1 to 64 characters"));
    }
    let public = key
        .public_key
        .as_ref()
        .ok_or_else(|| Error::bad_parameter("the key's public half is unknown"))?;
    let (algorithm_oid, signature_algorithm) = match key.key_type {
        KeyType::EcP256 => (
            OID_ECDSA_SHA256,
            SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        ),
        KeyType::EcP384 => (
            OID_ECDSA_SHA384,
            SignatureAlgorithm::EcdsaMessage(HashAlg::Sha384),
        ),
        KeyType::Ed25519 => (OID_ED25519, SignatureAlgorithm::Ed25519),
        _ => {
            return Err(Error::bad_parameter(
                "self-signed certificates for P-256, P-384 and Ed25519 keys",
            ))
        }
    };
    let spki = public.to_spki_der();
    let now = unix_now();
    let tbs = tbs_certificate(
        &serial()?,
        algorithm_oid,
        common_name,
        now,
        add_years(now, VALIDITY_YEARS),
        &spki,
        &key.key_id,
        key.usage,
    );
    let signature = session
        .sign(&key.object_id, signature_algorithm, &tbs)
        .await?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&signature);
    let mut b = TlvBuilder::new();
    b.constructed(SEQUENCE, |b| {
        b.put_raw(&tbs);
        algorithm_identifier(b, algorithm_oid);
        b.put(BIT_STRING, &bits);
    });
    Ok(b.finish())
}

/// A positive 16-byte serial (RFC 5280 §4.1.2.2: at most 20 octets, positive).
fn serial() -> Result<Vec<u8>> {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s).map_err(|_| Error::communication("the system random source failed"))?;
    s[0] = (s[0] & 0x7F) | 0x40;
    Ok(s.to_vec())
}

fn algorithm_identifier(b: &mut TlvBuilder, oid: &[u8]) {
    // RFC 5758 §3.2 and RFC 8410 §3: no parameters for ECDSA-with-SHA2 and Ed25519.
    b.constructed(SEQUENCE, |b| {
        b.put(OID, oid);
    });
}

fn name(b: &mut TlvBuilder, common_name: &str) {
    b.constructed(SEQUENCE, |b| {
        b.constructed(SET, |b| {
            b.constructed(SEQUENCE, |b| {
                b.put(OID, OID_CN).put(UTF8_STRING, common_name.as_bytes());
            });
        });
    });
}

fn extension(b: &mut TlvBuilder, oid: &[u8], critical: bool, value: &[u8]) {
    b.constructed(SEQUENCE, |b| {
        b.put(OID, oid);
        if critical {
            b.put(BOOLEAN, &[0xFF]);
        }
        b.put(OCTET_STRING, value);
    });
}

#[allow(clippy::too_many_arguments)]
fn tbs_certificate(
    serial: &[u8],
    algorithm_oid: &[u8],
    common_name: &str,
    not_before: i64,
    not_after: i64,
    spki: &[u8],
    key_id: &[u8],
    usage: KeyUsage,
) -> Vec<u8> {
    // keyUsage bits (RFC 5280 §4.2.1.3): digitalSignature 0, keyAgreement 4, keyCertSign 5;
    // DER drops trailing zero bits and counts them in the first byte.
    let key_usage: &[u8] = if usage.contains(KeyUsage::DERIVE) {
        &[0x03, 0x02, 0x02, 0x8C]
    } else {
        &[0x03, 0x02, 0x02, 0x84]
    };
    // basicConstraints { cA TRUE }: the certificate is its own issuer.
    let basic_constraints: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xFF];
    let mut ski = TlvBuilder::new();
    ski.put(OCTET_STRING, key_id);
    let ski = ski.finish();

    let mut b = TlvBuilder::new();
    b.constructed(SEQUENCE, |b| {
        b.constructed(VERSION, |b| {
            b.put(INTEGER, &[2]);
        });
        b.put(INTEGER, serial);
        algorithm_identifier(b, algorithm_oid);
        name(b, common_name);
        b.constructed(SEQUENCE, |b| {
            time(b, not_before);
            time(b, not_after);
        });
        name(b, common_name);
        b.put_raw(spki);
        b.constructed(EXTENSIONS, |b| {
            b.constructed(SEQUENCE, |b| {
                extension(b, OID_BASIC_CONSTRAINTS, true, basic_constraints);
                extension(b, OID_KEY_USAGE, true, key_usage);
                extension(b, OID_SKI, false, &ski);
            });
        });
    });
    b.finish()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The same time of day `years` later; 29 February becomes 28 February in a common year.
fn add_years(t: i64, years: i64) -> i64 {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let y2 = y + years;
    let leap = (y2 % 4 == 0 && y2 % 100 != 0) || y2 % 400 == 0;
    let d2 = if m == 2 && d == 29 && !leap { 28 } else { d };
    days_from_civil(y2, m, d2) * 86_400 + secs
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
fn time(b: &mut TlvBuilder, t: i64) {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    if (1950..2050).contains(&y) {
        let s = format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100);
        b.put(UTC_TIME, s.as_bytes());
    } else {
        let s = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z");
        b.put(GENERALIZED_TIME, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for z in [-1, 0, 1, 10_957, 19_782, 29_220, 47_482] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn ten_years_later() {
        let leap_day = days_from_civil(2024, 2, 29) * 86_400 + 3_600;
        assert_eq!(
            add_years(leap_day, 10),
            days_from_civil(2034, 2, 28) * 86_400 + 3_600
        );
        let mut b = TlvBuilder::new();
        time(&mut b, days_from_civil(2049, 12, 31) * 86_400);
        time(&mut b, days_from_civil(2050, 1, 1) * 86_400 + 86_399);
        assert_eq!(
            b.finish(),
            [
                &[0x17, 13][..],
                b"491231000000Z",
                &[0x18, 15],
                b"20500101235959Z"
            ]
            .concat()
        );
    }
}
