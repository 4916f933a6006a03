//! The contents of PIV data objects: certificate containers (with gzip'd certificates), the
//! CHUID, the CCC, the discovery object and the key history object (SP 800-73-4 Part 1
//! Appendix A), and public key templates.

use token_core::{Error, KeyType, PublicKey, Result, Tag, Tlv, TlvBuilder, TlvIter};

use crate::types::{tag, AlgorithmId, PIV_AID};

/// The largest certificate a compressed container may inflate to. PIV containers hold at most
/// a few KiB; this bounds what a hostile card can make us allocate.
pub const MAX_CERTIFICATE: usize = 64 * 1024;

fn t(v: u32) -> Result<Tag> {
    Tag::try_from(v)
}

/// A certificate read from its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateObject {
    /// The DER certificate (inflated if it was stored compressed).
    pub der: Vec<u8>,
    /// True when the card held it gzip-compressed (CertInfo bit 0x01).
    pub compressed: bool,
}

/// Reads the value of a certificate data object: `70 cert, 71 CertInfo, [FE EDC]`
/// (SP 800-73-4 Part 1 Table 10/15). A CertInfo with bit 0x01 set means the certificate is
/// gzip-compressed (zlib is accepted too, as OpenSC does).
///
/// # Errors
/// `CorruptedData` for a malformed container, a bad compressed stream, or one that inflates
/// past [`MAX_CERTIFICATE`].
pub fn parse_certificate_container(content: &[u8]) -> Result<CertificateObject> {
    let mut cert = None;
    let mut info = 0u8;
    for tlv in TlvIter::new(content).skip_padding() {
        let tlv = tlv?;
        match tlv.tag.value() {
            tag::CERTIFICATE => cert = Some(tlv.value),
            tag::CERT_INFO => info = tlv.value.first().copied().unwrap_or(0),
            _ => {}
        }
    }
    let cert = cert.ok_or_else(|| Error::corrupted("certificate object without tag 70"))?;
    if cert.is_empty() {
        return Err(Error::corrupted("empty certificate in its container"));
    }
    if info & 0x01 != 0 {
        return Ok(CertificateObject {
            der: inflate(cert, MAX_CERTIFICATE)?,
            compressed: true,
        });
    }
    Ok(CertificateObject {
        der: cert.to_vec(),
        compressed: false,
    })
}

/// Builds the value of a certificate data object, compressing with gzip if asked.
pub fn certificate_container(der: &[u8], compress: bool) -> Vec<u8> {
    let mut b = TlvBuilder::new();
    if compress {
        b.put(Tag::new(tag::CERTIFICATE), &gzip(der));
        b.put(Tag::new(tag::CERT_INFO), &[0x01]);
    } else {
        b.put(Tag::new(tag::CERTIFICATE), der);
        b.put(Tag::new(tag::CERT_INFO), &[0x00]);
    }
    b.put(Tag::new(tag::ERROR_DETECTION), &[]);
    b.finish()
}

/// Inflates a gzip member (RFC 1952) or a zlib stream (RFC 1950), checking its CRC and size,
/// to at most `limit` bytes.
///
/// # Errors
/// `CorruptedData` for anything malformed or too large.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let bad = |what| Error::corrupted(what);
    match data {
        [0x1F, 0x8B, ..] => {
            let body = gzip_body(data)?;
            let out = miniz_oxide::inflate::decompress_to_vec_with_limit(body, limit)
                .map_err(|_| bad("certificate: bad or oversized gzip stream"))?;
            let trailer = data
                .len()
                .checked_sub(8)
                .and_then(|at| data.get(at..))
                .ok_or_else(|| bad("certificate: gzip trailer missing"))?;
            let (crc, size) = trailer.split_at(4);
            let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("gzip trailer"))?);
            let size = u32::from_le_bytes(size.try_into().map_err(|_| bad("gzip trailer"))?);
            if crc != crc32(&out) || size != (out.len() as u32) {
                return Err(bad("certificate: gzip CRC or size mismatch"));
            }
            Ok(out)
        }
        [cmf, flg, ..] if cmf & 0x0F == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 => {
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, limit)
                .map_err(|_| bad("certificate: bad or oversized zlib stream"))
        }
        _ => Err(bad("certificate: compressed, but neither gzip nor zlib")),
    }
}

/// The deflate stream inside a gzip member: after the header and its optional fields.
fn gzip_body(data: &[u8]) -> Result<&[u8]> {
    let bad = |what| Error::corrupted(what);
    let header = data.get(..10).ok_or_else(|| bad("gzip header cut short"))?;
    let (&method, &flags) = (
        header.get(2).ok_or_else(|| bad("gzip header"))?,
        header.get(3).ok_or_else(|| bad("gzip header"))?,
    );
    if method != 8 {
        return Err(bad("gzip: not deflate"));
    }
    let mut at = 10usize;
    if flags & 0x04 != 0 {
        // FEXTRA: two-byte length, then the field.
        let len = data
            .get(at..at + 2)
            .ok_or_else(|| bad("gzip extra field cut short"))?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [0x08u8, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            let rest = data.get(at..).ok_or_else(|| bad("gzip header cut short"))?;
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("gzip name or comment not terminated"))?;
            at += end + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2; // FHCRC
    }
    data.get(at..)
        .filter(|b| b.len() >= 8)
        .ok_or_else(|| bad("gzip member cut short"))
}

/// Compresses `data` as one gzip member (RFC 1952) with no optional header fields.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xFF];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 9));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (ISO 3309, the polynomial gzip uses), bitwise: certificates are small.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The fields of a CHUID the driver uses (SP 800-73-4 Part 1 Table 9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chuid {
    /// The FASC-N (tag 30), 25 bytes.
    pub fasc_n: Option<Vec<u8>>,
    /// The card's GUID (tag 34), 16 bytes.
    pub guid: Option<[u8; 16]>,
    /// The expiration date (tag 35), `YYYYMMDD`.
    pub expiration: Option<String>,
}

impl Chuid {
    /// Reads the value of a CHUID data object.
    ///
    /// # Errors
    /// `CorruptedData` when it is not a sequence of BER-TLV objects or the GUID is not 16
    /// bytes.
    pub fn parse(content: &[u8]) -> Result<Chuid> {
        let mut chuid = Chuid::default();
        for tlv in TlvIter::new(content).skip_padding() {
            let tlv = tlv?;
            match tlv.tag.value() {
                tag::CHUID_FASCN => chuid.fasc_n = Some(tlv.value.to_vec()),
                tag::CHUID_GUID => {
                    let guid: [u8; 16] = tlv
                        .value
                        .try_into()
                        .map_err(|_| Error::corrupted("CHUID: GUID is not 16 bytes"))?;
                    chuid.guid = Some(guid);
                }
                tag::CHUID_EXPIRATION => {
                    chuid.expiration = Some(String::from_utf8_lossy(tlv.value).into_owned());
                }
                _ => {}
            }
        }
        Ok(chuid)
    }

    /// The GUID when it is present and not all zero (a zero GUID names nothing).
    pub fn usable_guid(&self) -> Option<[u8; 16]> {
        self.guid.filter(|g| g.iter().any(|&b| b != 0))
    }

    /// Builds a CHUID value with this GUID: the FASC-N YubiKey tools write (agency code 9999,
    /// "no FASC-N"), the GUID, an expiry, an empty signature and error detection code.
    pub fn build(guid: [u8; 16], expiration: &str) -> Vec<u8> {
        // FASC-N of all-9s agency/system/credential in BCD with parity, as yubico-piv-tool
        // writes it for cards without a real FASC-N.
        const FASC_N: [u8; 25] = [
            0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58,
            0x21, 0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
        ];
        let mut b = TlvBuilder::new();
        b.put(Tag::new(tag::CHUID_FASCN), &FASC_N);
        b.put(Tag::new(tag::CHUID_GUID), &guid);
        b.put(Tag::new(tag::CHUID_EXPIRATION), expiration.as_bytes());
        b.put(Tag::new(tag::CHUID_SIGNATURE), &[]);
        b.put(Tag::new(tag::ERROR_DETECTION), &[]);
        b.finish()
    }
}

/// Builds a Card Capability Container value (SP 800-73-4 Part 1 Table 8) with this card
/// identifier (21 bytes: GSC-RID `A0 00 00 01 16`, manufacturer `FF`, type `02`, 14 bytes ID).
pub fn build_ccc(card_id: &[u8; 14]) -> Vec<u8> {
    let mut id = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    id.extend_from_slice(card_id);
    let mut b = TlvBuilder::new();
    b.put(Tag::new(0xF0), &id);
    b.put(Tag::new(0xF1), &[0x21]);
    b.put(Tag::new(0xF2), &[0x21]);
    b.put(Tag::new(0xF3), &[]);
    b.put(Tag::new(0xF4), &[0x00]);
    b.put(Tag::new(0xF5), &[0x10]);
    b.put(Tag::new(0xF6), &[]);
    b.put(Tag::new(0xF7), &[]);
    b.put(Tag::new(0xFA), &[]);
    b.put(Tag::new(0xFB), &[]);
    b.put(Tag::new(0xFC), &[]);
    b.put(Tag::new(0xFD), &[]);
    b.put(Tag::new(tag::ERROR_DETECTION), &[]);
    b.finish()
}

/// The discovery object (SP 800-73-4 Part 1 §3.3.2, Table 18), whole: `7E { 4F AID, 5F2F
/// PIN usage policy }`. `40 00`: the PIV PIN only, no global PIN.
pub fn build_discovery() -> Vec<u8> {
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x7E), |b| {
        b.put(Tag::new(0x4F), &PIV_AID);
        b.put(Tag::new(0x5F2F), &[0x40, 0x00]);
    });
    b.finish()
}

/// What the discovery object says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The PIN usage policy's first byte (bit 0x40: PIV PIN; 0x20: global PIN).
    pub pin_usage_policy: u8,
}

impl Discovery {
    /// Reads a discovery object (the 7E template, or its value).
    ///
    /// # Errors
    /// `CorruptedData` when it is not BER-TLV.
    pub fn parse(bytes: &[u8]) -> Result<Discovery> {
        let inner = match Tlv::find(bytes, Tag::new(0x7E))? {
            Some(t) => t.value,
            None => bytes,
        };
        let policy = Tlv::find(inner, t(0x5F2F)?)?
            .and_then(|t| t.value.first().copied())
            .unwrap_or(0);
        Ok(Discovery {
            pin_usage_policy: policy,
        })
    }
}

/// The key history object (SP 800-73-4 Part 1 Table 19).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Retired keys with their private key on the card (tag C1).
    pub on_card: u8,
    /// Retired keys whose certificates are only off the card (tag C2).
    pub off_card: u8,
    /// Where the off-card certificates are (tag F3).
    pub url: Option<String>,
}

impl KeyHistory {
    /// Reads the value of a key history object.
    ///
    /// # Errors
    /// `CorruptedData` when it is not BER-TLV.
    pub fn parse(content: &[u8]) -> Result<KeyHistory> {
        let mut h = KeyHistory::default();
        for tlv in TlvIter::new(content).skip_padding() {
            let tlv = tlv?;
            match tlv.tag.value() {
                0xC1 => h.on_card = tlv.value.first().copied().unwrap_or(0),
                0xC2 => h.off_card = tlv.value.first().copied().unwrap_or(0),
                0xF3 => h.url = Some(String::from_utf8_lossy(tlv.value).into_owned()),
                _ => {}
            }
        }
        Ok(h)
    }

    /// Builds the value.
    pub fn build(&self) -> Vec<u8> {
        let mut b = TlvBuilder::new();
        b.put(Tag::new(0xC1), &[self.on_card]);
        b.put(Tag::new(0xC2), &[self.off_card]);
        if let Some(url) = &self.url {
            b.put(Tag::new(0xF3), url.as_bytes());
        }
        b.put(Tag::new(tag::ERROR_DETECTION), &[]);
        b.finish()
    }
}

/// Strips leading zero bytes of an unsigned big-endian integer (keeping one for zero).
pub(crate) fn strip_zeros(mut v: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = v {
        if rest.is_empty() {
            break;
        }
        v = rest;
    }
    v
}

/// A DER INTEGER's content for an unsigned big-endian number.
pub(crate) fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = strip_zeros(v);
    let mut out = Vec::with_capacity(v.len() + 1);
    if v.first().is_some_and(|&b| b & 0x80 != 0) || v.is_empty() {
        out.push(0);
    }
    out.extend_from_slice(v);
    out
}

/// The DER `RSAPublicKey` (PKCS#1) of a modulus and exponent.
pub fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &der_uint(n));
        b.put(Tag::new(0x02), &der_uint(e));
    });
    b.finish()
}

/// The modulus of a DER `RSAPublicKey`, without its sign byte.
///
/// # Errors
/// `CorruptedData` when it is not `SEQUENCE { INTEGER, INTEGER }`.
pub fn rsa_modulus(der: &[u8]) -> Result<Vec<u8>> {
    let seq = Tlv::parse_exact(der)?;
    let mut it = seq.children();
    match (it.next(), it.next()) {
        (Some(Ok(n)), Some(Ok(e))) if n.tag.value() == 0x02 && e.tag.value() == 0x02 => {
            Ok(strip_zeros(n.value).to_vec())
        }
        _ => Err(Error::corrupted("RSAPublicKey is not two INTEGERs")),
    }
}

/// The size in bytes of a public key's raw form for a fixed-size key type.
fn raw_len(key_type: KeyType) -> Option<usize> {
    match key_type {
        KeyType::EcP256 => Some(65),
        KeyType::EcP384 => Some(97),
        KeyType::Ed25519 | KeyType::X25519 => Some(32),
        _ => None,
    }
}

/// Reads a public key template's content (`86 point` or `81 n, 82 e`), as GENERATE
/// (inside 7F49) and YubiKey GET METADATA (tag 04) return it.
///
/// # Errors
/// `CorruptedData` when the elements are missing or the wrong size for `alg`.
pub fn parse_public_key(alg: AlgorithmId, content: &[u8]) -> Result<PublicKey> {
    let key_type = alg
        .key_type()
        .ok_or_else(|| Error::corrupted("public key of a non-asymmetric algorithm"))?;
    if let Some(len) = raw_len(key_type) {
        let point = Tlv::find(content, Tag::new(tag::EC_POINT))?
            .ok_or_else(|| Error::corrupted("public key template without tag 86"))?;
        if point.value.len() != len || (len > 32 && point.value.first() != Some(&0x04)) {
            return Err(Error::corrupted("public key of the wrong size or form"));
        }
        return Ok(PublicKey {
            key_type,
            raw: point.value.to_vec(),
        });
    }
    let n = Tlv::find(content, Tag::new(tag::RSA_MODULUS))?
        .ok_or_else(|| Error::corrupted("RSA public key without modulus"))?;
    let e = Tlv::find(content, Tag::new(tag::RSA_EXPONENT))?
        .ok_or_else(|| Error::corrupted("RSA public key without exponent"))?;
    let bits = key_type.size_bits() as usize;
    if strip_zeros(n.value).len() != bits / 8 || e.value.is_empty() || e.value.len() > 8 {
        return Err(Error::corrupted("RSA public key of the wrong size"));
    }
    Ok(PublicKey {
        key_type,
        raw: rsa_public_key_der(n.value, e.value),
    })
}

/// Builds a public key template's content for `key` (`86 point` or `81 n, 82 e`).
///
/// # Errors
/// `CorruptedData` for an RSA key whose DER does not read.
pub fn public_key_template(key: &PublicKey) -> Result<Vec<u8>> {
    let mut b = TlvBuilder::new();
    if let KeyType::Rsa(_) = key.key_type {
        let seq = Tlv::parse_exact(&key.raw)?;
        let mut it = seq.children();
        match (it.next(), it.next()) {
            (Some(Ok(n)), Some(Ok(e))) => {
                b.put(Tag::new(tag::RSA_MODULUS), strip_zeros(n.value));
                b.put(Tag::new(tag::RSA_EXPONENT), strip_zeros(e.value));
            }
            _ => return Err(Error::corrupted("RSAPublicKey is not two INTEGERs")),
        }
    } else {
        b.put(Tag::new(tag::EC_POINT), &key.raw);
    }
    Ok(b.finish())
}

/// The public key of a certificate's SubjectPublicKeyInfo, as token-core's [`PublicKey`].
///
/// # Errors
/// `CorruptedData` for a key type PIV cards do not hold or a malformed key.
pub fn public_key_from_spki(spki: &token_core::SubjectPublicKeyInfo<'_>) -> Result<PublicKey> {
    use token_core::SubjectPublicKeyInfo as S;
    let curve = spki
        .parameters
        .and_then(|p| Tlv::parse_exact(p).ok())
        .filter(|t| t.tag.value() == 0x06)
        .map(|t| t.value);
    let key_type = match spki.algorithm_oid {
        oid if oid == S::OID_EC_PUBLIC_KEY => match curve {
            Some(c) if c == S::OID_P256 => KeyType::EcP256,
            Some(c) if c == S::OID_P384 => KeyType::EcP384,
            _ => return Err(Error::corrupted("certificate: EC curve not P-256 or P-384")),
        },
        oid if oid == S::OID_ED25519 => KeyType::Ed25519,
        oid if oid == S::OID_X25519 => KeyType::X25519,
        oid if oid == S::OID_RSA_ENCRYPTION => {
            let n = rsa_modulus(spki.public_key)?;
            let bits = u16::try_from(n.len() * 8)
                .map_err(|_| Error::corrupted("certificate: RSA key too large"))?;
            KeyType::Rsa(bits)
        }
        _ => {
            return Err(Error::corrupted(
                "certificate: key type not held by PIV cards",
            ))
        }
    };
    if let Some(len) = raw_len(key_type) {
        if spki.public_key.len() != len {
            return Err(Error::corrupted(
                "certificate: public key of the wrong size",
            ));
        }
    }
    Ok(PublicKey {
        key_type,
        raw: spki.public_key.to_vec(),
    })
}

/// Checks that `sig` is a DER `ECDSA-Sig-Value` (`SEQUENCE { INTEGER r, INTEGER s }`).
///
/// # Errors
/// `CorruptedData` otherwise.
pub fn check_ecdsa_der(sig: &[u8]) -> Result<()> {
    let seq = Tlv::parse_exact(sig)?;
    if seq.tag.value() != 0x30 {
        return Err(Error::corrupted("ECDSA signature is not a SEQUENCE"));
    }
    let mut it = seq.children();
    let ok = matches!(
        (it.next(), it.next(), it.next()),
        (Some(Ok(r)), Some(Ok(s)), None)
            if r.tag.value() == 0x02 && s.tag.value() == 0x02
                && !r.value.is_empty() && !s.value.is_empty()
    );
    if ok {
        Ok(())
    } else {
        Err(Error::corrupted("ECDSA signature is not two INTEGERs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The CRC-32 check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn gzip_round_trip_and_limits() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let z = gzip(&data);
        assert_eq!(inflate(&z, MAX_CERTIFICATE).unwrap(), data);
        assert!(inflate(&z, 100).is_err(), "limit holds");
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 5] ^= 1; // CRC
        assert!(inflate(&bad, MAX_CERTIFICATE).is_err());
        assert!(inflate(&z[..12], MAX_CERTIFICATE).is_err());
        assert!(inflate(&[0x1F, 0x8B], MAX_CERTIFICATE).is_err());
        let container = certificate_container(&data, true);
        let back = parse_certificate_container(&container).unwrap();
        assert!(back.compressed);
        assert_eq!(back.der, data);
        let plain = parse_certificate_container(&certificate_container(&data, false)).unwrap();
        assert!(!plain.compressed);
        assert_eq!(plain.der, data);
    }

    #[test]
    fn chuid_round_trip() {
        let guid = [0x11; 16];
        let chuid = Chuid::parse(&Chuid::build(guid, "20300101")).unwrap();
        assert_eq!(chuid.usable_guid(), Some(guid));
        assert_eq!(chuid.expiration.as_deref(), Some("20300101"));
        assert_eq!(chuid.fasc_n.map(|f| f.len()), Some(25));
        assert_eq!(
            Chuid::parse(&Chuid::build([0; 16], "20300101"))
                .unwrap()
                .usable_guid(),
            None
        );
    }

    #[test]
    fn public_key_templates() {
        let mut n = vec![0xC5u8; 256];
        n[255] = 1;
        let pk = parse_public_key(
            AlgorithmId::RSA2048,
            &public_key_template(&PublicKey {
                key_type: KeyType::Rsa(2048),
                raw: rsa_public_key_der(&n, &[1, 0, 1]),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(rsa_modulus(&pk.raw).unwrap(), n);
        let mut point = vec![0x04];
        point.extend_from_slice(&[7; 64]);
        let t = public_key_template(&PublicKey {
            key_type: KeyType::EcP256,
            raw: point.clone(),
        })
        .unwrap();
        assert_eq!(
            parse_public_key(AlgorithmId::ECC_P256, &t).unwrap().raw,
            point
        );
        assert!(parse_public_key(AlgorithmId::ECC_P384, &t).is_err());
    }
}
