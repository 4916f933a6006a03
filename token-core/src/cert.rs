//! A minimal X.509 reader (RFC 5280 §4.1) on the BER-TLV codec, and a PEM decoder.
//!
//! Tokens hold certificates; the keychain needs their names, serial and public key, not a
//! full path validator. [`CertificateInfo::parse`] checks the outer structure and extracts
//! those fields as raw DER; [`SubjectPublicKeyInfo`] reads and writes the public key structure
//! that ties a certificate to the key on the token.
//!
//! ```
//! use token_core::SubjectPublicKeyInfo;
//!
//! let point = [0x04; 65];
//! let der = SubjectPublicKeyInfo::encode(
//!     SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY,
//!     Some(&[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
//!     &point,
//! );
//! let spki = SubjectPublicKeyInfo::parse(&der).unwrap();
//! assert_eq!(spki.public_key, point);
//! ```

use crate::error::{Error, Result};
use crate::tlv::{Tag, Tlv, TlvBuilder, TlvIter};

const SEQUENCE: Tag = Tag::new(0x30);
const SET: Tag = Tag::new(0x31);
const INTEGER: Tag = Tag::new(0x02);
const BIT_STRING: Tag = Tag::new(0x03);
const OID: Tag = Tag::new(0x06);
const UTF8_STRING: Tag = Tag::new(0x0C);
const PRINTABLE_STRING: Tag = Tag::new(0x13);
const TELETEX_STRING: Tag = Tag::new(0x14);
const IA5_STRING: Tag = Tag::new(0x16);
const UTC_TIME: Tag = Tag::new(0x17);
const GENERALIZED_TIME: Tag = Tag::new(0x18);
const UNIVERSAL_STRING: Tag = Tag::new(0x1C);
const BMP_STRING: Tag = Tag::new(0x1E);
/// `[0] EXPLICIT Version` in TBSCertificate.
const VERSION: Tag = Tag::new(0xA0);
/// 2.5.4.3, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

fn next<'a>(it: &mut TlvIter<'a>, tag: Tag, what: &'static str) -> Result<Tlv<'a>> {
    match it.next() {
        Some(Ok(t)) if t.tag == tag => Ok(t),
        Some(Err(e)) => Err(e),
        _ => Err(Error::corrupted(what)),
    }
}

fn end(it: &mut TlvIter<'_>, what: &'static str) -> Result<()> {
    match it.next() {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) => Err(Error::corrupted(what)),
    }
}

/// What a token's keychain needs from an X.509 certificate, each as raw DER or text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    serial: Vec<u8>,
    issuer: Vec<u8>,
    subject: Vec<u8>,
    not_before: String,
    not_after: String,
    spki: Vec<u8>,
}

impl CertificateInfo {
    /// Reads a DER certificate.
    ///
    /// # Errors
    /// `CorruptedData` if it is not `SEQUENCE { TBSCertificate, AlgorithmIdentifier, BIT
    /// STRING }` with nothing after it, or the TBSCertificate lacks a field up to the subject
    /// public key info, or a field has the wrong type.
    pub fn parse(der: &[u8]) -> Result<CertificateInfo> {
        let cert = Tlv::parse_exact(der)?;
        if cert.tag != SEQUENCE {
            return Err(Error::corrupted("certificate: not a SEQUENCE"));
        }
        let mut it = cert.children();
        let tbs = next(&mut it, SEQUENCE, "certificate: no TBSCertificate")?;
        next(&mut it, SEQUENCE, "certificate: no signature algorithm")?;
        next(&mut it, BIT_STRING, "certificate: no signature")?;
        end(&mut it, "certificate: data after the signature")?;

        let mut it = tbs.children();
        let mut serial = match it.next() {
            Some(Ok(t)) => t,
            Some(Err(e)) => return Err(e),
            None => return Err(Error::corrupted("certificate: empty TBSCertificate")),
        };
        if serial.tag == VERSION {
            serial = next(&mut it, INTEGER, "certificate: no serial number")?;
        }
        if serial.tag != INTEGER || serial.value.is_empty() {
            return Err(Error::corrupted("certificate: no serial number"));
        }
        next(
            &mut it,
            SEQUENCE,
            "certificate: no signature algorithm in TBS",
        )?;
        let issuer = next(&mut it, SEQUENCE, "certificate: no issuer")?;
        check_name(issuer)?;
        let validity = next(&mut it, SEQUENCE, "certificate: no validity")?;
        let subject = next(&mut it, SEQUENCE, "certificate: no subject")?;
        check_name(subject)?;
        let spki = next(&mut it, SEQUENCE, "certificate: no subject public key info")?;
        SubjectPublicKeyInfo::parse(spki.raw())?;

        let mut times = validity.children();
        let not_before = time(times.next())?;
        let not_after = time(times.next())?;
        end(&mut times, "certificate: data after the validity times")?;

        Ok(CertificateInfo {
            serial: serial.value.to_vec(),
            issuer: issuer.raw().to_vec(),
            subject: subject.raw().to_vec(),
            not_before,
            not_after,
            spki: spki.raw().to_vec(),
        })
    }

    /// The serial number: the INTEGER's value bytes, big-endian two's complement as encoded.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The issuer Name, as DER (tag 30 included).
    pub fn issuer(&self) -> &[u8] {
        &self.issuer
    }

    /// The subject Name, as DER (tag 30 included).
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// The start of the validity period, as written (UTCTime `YYMMDDHHMMSSZ` or
    /// GeneralizedTime `YYYYMMDDHHMMSSZ`).
    pub fn not_before(&self) -> &str {
        &self.not_before
    }

    /// The end of the validity period, as written.
    pub fn not_after(&self) -> &str {
        &self.not_after
    }

    /// The SubjectPublicKeyInfo, as DER.
    pub fn subject_public_key_info_der(&self) -> &[u8] {
        &self.spki
    }

    /// The SubjectPublicKeyInfo, read.
    ///
    /// # Errors
    /// None in practice: it was checked by [`CertificateInfo::parse`].
    pub fn subject_public_key_info(&self) -> Result<SubjectPublicKeyInfo<'_>> {
        SubjectPublicKeyInfo::parse(&self.spki)
    }

    /// The subject's common name (2.5.4.3), the first if there are several.
    pub fn subject_common_name(&self) -> Option<String> {
        common_name(&self.subject)
    }

    /// The issuer's common name (2.5.4.3), the first if there are several.
    pub fn issuer_common_name(&self) -> Option<String> {
        common_name(&self.issuer)
    }
}

fn time(item: Option<Result<Tlv<'_>>>) -> Result<String> {
    let t = item.ok_or_else(|| Error::corrupted("certificate: validity time missing"))??;
    if t.tag != UTC_TIME && t.tag != GENERALIZED_TIME {
        return Err(Error::corrupted(
            "certificate: validity time of the wrong type",
        ));
    }
    if !t.value.iter().all(u8::is_ascii_graphic) {
        return Err(Error::corrupted("certificate: validity time not ASCII"));
    }
    String::from_utf8(t.value.to_vec())
        .map_err(|_| Error::corrupted("certificate: validity time not ASCII"))
}

/// The attributes of a Name: `SEQUENCE OF SET OF SEQUENCE { OID, value }` (RFC 5280 §4.1.2.4).
fn attributes<'a>(name: Tlv<'a>) -> impl Iterator<Item = Result<(&'a [u8], Tlv<'a>)>> {
    name.children()
        .flat_map(|rdn| -> Vec<Result<(&'a [u8], Tlv<'a>)>> {
            let rdn = match rdn {
                Ok(r) if r.tag == SET => r,
                Ok(_) => return vec![Err(Error::corrupted("Name: RDN is not a SET"))],
                Err(e) => return vec![Err(e)],
            };
            rdn.children()
                .map(|atv| {
                    let atv = atv?;
                    if atv.tag != SEQUENCE {
                        return Err(Error::corrupted("Name: attribute is not a SEQUENCE"));
                    }
                    let mut it = atv.children();
                    let oid = next(&mut it, OID, "Name: attribute without a type")?;
                    let value = match it.next() {
                        Some(v) => v?,
                        None => return Err(Error::corrupted("Name: attribute without a value")),
                    };
                    end(&mut it, "Name: attribute with extra fields")?;
                    Ok((oid.value, value))
                })
                .collect()
        })
}

fn check_name(name: Tlv<'_>) -> Result<()> {
    attributes(name).try_for_each(|a| a.map(|_| ()))
}

fn common_name(name_der: &[u8]) -> Option<String> {
    let name = Tlv::parse_exact(name_der).ok()?;
    attributes(name)
        .filter_map(|a| a.ok())
        .find(|(oid, _)| *oid == OID_COMMON_NAME)
        .and_then(|(_, value)| directory_string(value))
}

/// Decodes the string types a DirectoryString (RFC 5280 §4.1.2.4) is found in.
fn directory_string(v: Tlv<'_>) -> Option<String> {
    match v.tag {
        UTF8_STRING => String::from_utf8(v.value.to_vec()).ok(),
        PRINTABLE_STRING | IA5_STRING => v
            .value
            .is_ascii()
            .then(|| v.value.iter().map(|&b| char::from(b)).collect()),
        // Read as Latin-1, as most software does.
        TELETEX_STRING => Some(v.value.iter().map(|&b| char::from(b)).collect()),
        BMP_STRING => {
            let units = v.value.chunks_exact(2);
            if !units.remainder().is_empty() {
                return None;
            }
            let units = units.map(|c| c.iter().fold(0u16, |a, &b| (a << 8) | u16::from(b)));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        UNIVERSAL_STRING => {
            let units = v.value.chunks_exact(4);
            if !units.remainder().is_empty() {
                return None;
            }
            units
                .map(|c| char::from_u32(c.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b))))
                .collect()
        }
        _ => None,
    }
}

/// A SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), borrowed from its DER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectPublicKeyInfo<'a> {
    /// The algorithm OID's content bytes (no tag or length): [`Self::OID_EC_PUBLIC_KEY`], ...
    pub algorithm_oid: &'a [u8],
    /// The raw DER of the algorithm parameters element, if any (for EC keys, the curve OID
    /// with its tag `06`; for RSA, `05 00`).
    pub parameters: Option<&'a [u8]>,
    /// The subjectPublicKey BIT STRING's content without its unused-bits byte (for EC keys,
    /// the uncompressed point; for RSA, the DER of RSAPublicKey).
    pub public_key: &'a [u8],
}

impl<'a> SubjectPublicKeyInfo<'a> {
    /// 1.2.840.10045.2.1, id-ecPublicKey (RFC 5480).
    pub const OID_EC_PUBLIC_KEY: &'static [u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    /// 1.2.840.113549.1.1.1, rsaEncryption (RFC 8017).
    pub const OID_RSA_ENCRYPTION: &'static [u8] =
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    /// 1.3.101.112, Ed25519 (RFC 8410).
    pub const OID_ED25519: &'static [u8] = &[0x2B, 0x65, 0x70];
    /// 1.3.101.110, X25519 (RFC 8410).
    pub const OID_X25519: &'static [u8] = &[0x2B, 0x65, 0x6E];
    /// 1.2.840.10045.3.1.7, the P-256 curve (content bytes; the parameters element is this
    /// with `06 08` in front).
    pub const OID_P256: &'static [u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    /// 1.3.132.0.34, the P-384 curve.
    pub const OID_P384: &'static [u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];

    /// Reads a SubjectPublicKeyInfo from exactly `der`.
    ///
    /// # Errors
    /// `CorruptedData` unless `der` is `SEQUENCE { SEQUENCE { OID, [parameters] }, BIT STRING }`
    /// with a whole number of key bytes (unused bits 0).
    pub fn parse(der: &'a [u8]) -> Result<SubjectPublicKeyInfo<'a>> {
        let spki = Tlv::parse_exact(der)?;
        if spki.tag != SEQUENCE {
            return Err(Error::corrupted("SubjectPublicKeyInfo: not a SEQUENCE"));
        }
        let mut it = spki.children();
        let alg = next(&mut it, SEQUENCE, "SubjectPublicKeyInfo: no algorithm")?;
        let key = next(&mut it, BIT_STRING, "SubjectPublicKeyInfo: no public key")?;
        end(&mut it, "SubjectPublicKeyInfo: extra fields")?;

        let mut it = alg.children();
        let oid = next(&mut it, OID, "SubjectPublicKeyInfo: no algorithm OID")?;
        if oid.value.is_empty() {
            return Err(Error::corrupted(
                "SubjectPublicKeyInfo: empty algorithm OID",
            ));
        }
        let parameters = match it.next() {
            None => None,
            Some(p) => Some(p?.raw()),
        };
        end(&mut it, "SubjectPublicKeyInfo: extra algorithm fields")?;

        let public_key = match key.value.split_first() {
            Some((0, bits)) => bits,
            _ => {
                return Err(Error::corrupted(
                    "SubjectPublicKeyInfo: key is not whole bytes",
                ))
            }
        };
        Ok(SubjectPublicKeyInfo {
            algorithm_oid: oid.value,
            parameters,
            public_key,
        })
    }

    /// Writes a SubjectPublicKeyInfo. `algorithm_oid` is the OID's content bytes;
    /// `parameters` the raw DER of the parameters element, written as given.
    pub fn encode(algorithm_oid: &[u8], parameters: Option<&[u8]>, public_key: &[u8]) -> Vec<u8> {
        let mut bits = Vec::with_capacity(public_key.len() + 1);
        bits.push(0);
        bits.extend_from_slice(public_key);
        let mut b = TlvBuilder::new();
        b.constructed(SEQUENCE, |b| {
            b.constructed(SEQUENCE, |b| {
                b.put(OID, algorithm_oid);
                if let Some(p) = parameters {
                    b.put_raw(p);
                }
            });
            b.put(BIT_STRING, &bits);
        });
        b.finish()
    }

    /// Writes this SubjectPublicKeyInfo back as DER.
    pub fn to_der(&self) -> Vec<u8> {
        Self::encode(self.algorithm_oid, self.parameters, self.public_key)
    }
}

/// Decodes the first PEM block labelled `label` (RFC 7468), e.g. `"CERTIFICATE"`, to DER.
///
/// Whitespace inside the base64 text is ignored; anything else outside the base64 alphabet,
/// misplaced padding, or non-zero left-over bits is an error. Explanatory text before the
/// block and after it is allowed.
///
/// # Errors
/// `CorruptedData` if no block with that label is found or its base64 is malformed.
pub fn pem_to_der(text: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let not_found = || Error::corrupted("PEM: no block with that label");
    let start = text.find(&begin).ok_or_else(not_found)? + begin.len();
    let after = text.get(start..).ok_or_else(not_found)?;
    let stop = after.find(&end).ok_or_else(not_found)?;
    let body = after.get(..stop).ok_or_else(not_found)?;
    base64_decode(body)
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Standard base64 (RFC 4648 §4), whitespace ignored, padding optional but exact if present.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let bad = |what| Error::corrupted(what);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut symbols, mut padding) = (0u32, 0u32, 0usize, 0usize);
    for c in text.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(bad("PEM: base64 after padding"));
        }
        let v = base64_value(c).ok_or_else(|| bad("PEM: character outside base64"))?;
        acc = (acc << 6) | v;
        bits += 6;
        symbols += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    let valid_padding = padding == 0 || (padding <= 2 && (symbols + padding) % 4 == 0);
    if symbols % 4 == 1 || !valid_padding {
        return Err(bad("PEM: base64 of the wrong length"));
    }
    if acc != 0 {
        return Err(bad("PEM: base64 with non-zero left-over bits"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    const CERT: &[u8] = include_bytes!("../tests/data/p256-selfsigned.der");
    const CERT_PEM: &str = include_str!("../tests/data/p256-selfsigned.pem");
    const SPKI: &[u8] = include_bytes!("../tests/data/p256-selfsigned.spki.der");

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// Matches `openssl x509 -noout -subject -serial -dates` on the fixture.
    #[test]
    fn self_signed_p256_fixture() {
        let info = CertificateInfo::parse(CERT).unwrap();
        assert_eq!(info.subject_common_name().as_deref(), Some("tokenkit-test"));
        assert_eq!(info.issuer_common_name().as_deref(), Some("tokenkit-test"));
        assert_eq!(
            info.serial(),
            hex("6C C5 43 E0 A3 E6 23 00 D5 CE 5E 00 5C 0B 19 D0 90 8A BE 07")
        );
        assert_eq!(info.not_before(), "261124215805Z");
        assert_eq!(info.not_after(), "361121215805Z");
        assert_eq!(info.issuer(), info.subject());
        assert_eq!(info.subject_public_key_info_der(), SPKI);

        let spki = info.subject_public_key_info().unwrap();
        assert_eq!(spki.algorithm_oid, SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY);
        assert_eq!(
            spki.parameters,
            Some(&hex("06 08 2A 86 48 CE 3D 03 01 07")[..])
        );
        assert_eq!(spki.public_key.len(), 65);
        assert_eq!(spki.public_key[0], 0x04);
        assert_eq!(spki.to_der(), SPKI);
    }

    #[test]
    fn pem_matches_der() {
        assert_eq!(pem_to_der(CERT_PEM, "CERTIFICATE").unwrap(), CERT);
        let with_text = format!("Subject: test\n{CERT_PEM}\ntrailing words\n");
        assert_eq!(pem_to_der(&with_text, "CERTIFICATE").unwrap(), CERT);
        assert!(pem_to_der(CERT_PEM, "PRIVATE KEY").is_err());
        let broken = CERT_PEM.replacen('M', "*", 1);
        assert_eq!(
            pem_to_der(&broken, "CERTIFICATE").unwrap_err().code(),
            ErrorCode::CorruptedData
        );
    }

    #[test]
    fn base64_rules() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9v\r\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        for bad in ["Z", "Zg=", "Zg===", "Zm9v=", "Zg==Zg==", "Zh==", "Zm9v!"] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_in_other_string_types() {
        let mut b = TlvBuilder::new();
        b.constructed(SEQUENCE, |b| {
            b.constructed(SET, |b| {
                b.constructed(SEQUENCE, |b| {
                    b.put(OID, &[0x55, 0x04, 0x06]); // countryName
                    b.put(PRINTABLE_STRING, b"DE");
                });
            });
            b.constructed(SET, |b| {
                b.constructed(SEQUENCE, |b| {
                    b.put(OID, OID_COMMON_NAME);
                    b.put(BMP_STRING, &[0x00, 0x4A, 0x00, 0xFC]);
                });
            });
        });
        let name = b.finish();
        assert_eq!(common_name(&name).as_deref(), Some("Jü"));
        assert!(check_name(Tlv::parse_exact(&name).unwrap()).is_ok());
        // An RDN that is not a SET.
        assert!(check_name(Tlv::parse_exact(&hex("30 02 30 00")).unwrap()).is_err());
    }

    #[test]
    fn truncated_and_garbled_certificates() {
        for n in 0..CERT.len() {
            let e = CertificateInfo::parse(CERT.get(..n).unwrap()).unwrap_err();
            assert_eq!(e.code(), ErrorCode::CorruptedData);
        }
        let mut extra = CERT.to_vec();
        extra.push(0);
        assert!(CertificateInfo::parse(&extra).is_err());
        // An SPKI with unused bits.
        let bad = hex("30 0B 30 05 06 03 2B 65 70 03 02 01 00");
        assert!(SubjectPublicKeyInfo::parse(&bad).is_err());
        let ok = hex("30 0B 30 05 06 03 2B 65 70 03 02 00 AA");
        let spki = SubjectPublicKeyInfo::parse(&ok).unwrap();
        assert_eq!(spki.algorithm_oid, SubjectPublicKeyInfo::OID_ED25519);
        assert_eq!(spki.parameters, None);
        assert_eq!(spki.public_key, [0xAA]);
        assert_eq!(spki.to_der(), ok);
    }
}

/// Encodes `der` as a PEM block labelled `label` (RFC 7468: base64 in 64-column lines).
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 63;
                b64.push(char::from(
                    ALPHABET.get(index as usize).copied().unwrap_or(b'='),
                ));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod pem_tests {
    use super::*;

    #[test]
    fn pem_round_trips_every_length() {
        for n in 0..200usize {
            let der: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let pem = der_to_pem("TEST", &der);
            assert!(pem.lines().all(|l| l.len() <= 64));
            assert_eq!(pem_to_der(&pem, "TEST").unwrap(), der);
        }
    }

    #[test]
    fn pem_matches_rfc4648_vectors() {
        assert!(der_to_pem("X", b"foobar").contains("\nZm9vYmFy\n"));
        assert!(der_to_pem("X", b"fo").contains("\nZm8=\n"));
    }
}
