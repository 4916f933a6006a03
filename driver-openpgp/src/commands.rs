//! The card's commands and data objects (OpenPGP card 3.4 §7.2, §4.4), over a
//! [`CardSession`]. Everything read from the card is checked; a short or malformed answer is
//! `CorruptedData`, never a panic.

use token_core::{
    CardSession, Command, Error, ErrorCode, Ins, KeyType, PublicKey, Result, StatusWord, Tag, Tlv,
    TlvBuilder,
};
use zeroize::Zeroizing;

use crate::types::{tag, Algorithm, KeyRef, AID_PREFIX};

/// Le for "all there is": SmartCard fetches the rest with GET RESPONSE.
const LE: Option<usize> = Some(Command::LE_MAX_SHORT);

/// The answer to SELECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The OpenPGP application is selected.
    Yes,
    /// The application is there but terminated (6285): only ACTIVATE FILE works.
    Terminated,
    /// No OpenPGP application.
    No,
}

/// SELECT the OpenPGP application by its six-byte prefix (§7.2.1).
pub(crate) async fn select(s: &CardSession) -> Result<Selected> {
    Ok(
        match s.select_application(&AID_PREFIX).await?.map(|r| r.sw) {
            Some(StatusWord::SUCCESS) => Selected::Yes,
            Some(sw) if sw == StatusWord::from_bytes(0x62, 0x85) => Selected::Terminated,
            _ => Selected::No,
        },
    )
}

/// SELECTs and fails unless the application answers normally.
pub(crate) async fn select_or_fail(s: &CardSession) -> Result<()> {
    match select(s).await? {
        Selected::Yes => Ok(()),
        Selected::Terminated => Err(Error::token_not_found(
            "the OpenPGP application is terminated (factory reset half done)",
        )),
        Selected::No => Err(Error::token_not_found("the OpenPGP application is gone")),
    }
}

/// GET DATA (§7.2.6) of a data object.
pub(crate) async fn get_data(s: &CardSession, t: u16) -> Result<Vec<u8>> {
    let [p1, p2] = t.to_be_bytes();
    s.send_ins(Ins::GET_DATA, p1, p2, &[], LE).await
}

/// PUT DATA (§7.2.8) of a simple data object.
pub(crate) async fn put_data(s: &CardSession, t: u16, value: &[u8]) -> Result<()> {
    let [p1, p2] = t.to_be_bytes();
    s.send_ins(Ins::PUT_DATA, p1, p2, value, None)
        .await
        .map(drop)
}

/// The value of a constructed data object as GET DATA gives it: cards answer with the outer
/// tag (most) or without it (some); both are accepted.
fn unwrap_outer(data: &[u8], outer: u16) -> &[u8] {
    match Tlv::parse_exact(data) {
        Ok(t) if t.tag == tag(outer) => t.value,
        _ => data,
    }
}

/// The application related data (6E) the driver uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppData {
    /// The full AID (4F).
    pub aid: Vec<u8>,
    /// The algorithm of each slot, `None` for one the driver does not know (RSA).
    pub algorithms: [Option<Algorithm>; 3],
    /// PW status bytes (C4).
    pub pw_status: PwStatus,
    /// Key information (DE): which slots hold a key; `None` when the card does not say.
    pub key_present: Option<[bool; 3]>,
    /// The extended capabilities (C0), empty when the card gives none.
    pub extended_caps: Vec<u8>,
}

impl AppData {
    /// The manufacturer ID (AID bytes 9-10).
    pub fn manufacturer(&self) -> Result<u16> {
        match self.aid.get(8..10) {
            Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
            _ => Err(Error::corrupted("OpenPGP AID shorter than 16 bytes")),
        }
    }

    /// The serial number (AID bytes 11-14).
    pub fn serial(&self) -> Result<[u8; 4]> {
        self.aid
            .get(10..14)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::corrupted("OpenPGP AID shorter than 16 bytes"))
    }

    /// Extended capabilities byte 1, bit 1: the card has the KDF-DO (F9).
    pub fn has_kdf(&self) -> bool {
        self.extended_caps.first().is_some_and(|b| b & 0x01 != 0)
    }

    /// Extended capabilities byte 1, bit 2: PSO:DECIPHER / ENCIPHER with AES (D5).
    pub fn has_aes(&self) -> bool {
        self.extended_caps.first().is_some_and(|b| b & 0x02 != 0)
    }

    /// The specification version (AID bytes 7-8).
    pub fn version(&self) -> Option<(u8, u8)> {
        match self.aid.get(6..8) {
            Some(&[a, b]) => Some((a, b)),
            _ => None,
        }
    }
}

/// Reads 6E (§4.4.3.1).
pub(crate) async fn application_data(s: &CardSession) -> Result<AppData> {
    let raw = get_data(s, 0x6E).await?;
    parse_application_data(&raw)
}

/// Parses 6E.
pub(crate) fn parse_application_data(raw: &[u8]) -> Result<AppData> {
    let inner = unwrap_outer(raw, 0x6E);
    let aid = Tlv::find(inner, Tag::new(0x4F))?
        .ok_or_else(|| Error::corrupted("application related data without an AID"))?
        .value
        .to_vec();
    if aid.len() != 16 || !aid.starts_with(&AID_PREFIX) {
        return Err(Error::corrupted(
            "OpenPGP AID is not 16 bytes starting D2 76 00 01 24 01",
        ));
    }
    // The discretionary data objects sit in 73; a few old cards put them at the top level.
    let discretionary = match Tlv::find(inner, Tag::new(0x73))? {
        Some(t) => t.value,
        None => inner,
    };
    let find = |t: u32| -> Result<Option<&[u8]>> {
        Ok(Tlv::find(discretionary, Tag::new(t))?.map(|t| t.value))
    };
    let mut algorithms = [None; 3];
    for k in KeyRef::ALL {
        algorithms[k.index()] =
            find(u32::from(k.attributes_tag()))?.and_then(Algorithm::from_attributes);
    }
    let pw_status = PwStatus::parse(
        find(0xC4)?.ok_or_else(|| Error::corrupted("application related data without C4"))?,
    )?;
    let key_present = find(0xDE)?.map(|de| {
        let mut present = [false; 3];
        for pair in de.chunks_exact(2) {
            if let &[r @ 1..=3, status] = pair {
                present[usize::from(r - 1)] = status != 0;
            }
        }
        present
    });
    let extended_caps = find(0xC0)?.map(<[u8]>::to_vec).unwrap_or_default();
    Ok(AppData {
        aid,
        algorithms,
        pw_status,
        key_present,
        extended_caps,
    })
}

/// The PW status bytes (C4, §4.4.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PwStatus {
    /// PW1 stays valid for several PSO:CDS (byte 1 = 01).
    pub pw1_multi: bool,
    /// Tries left for PW1.
    pub pw1_tries: u8,
    /// Tries left for the resetting code (0 when none is set).
    pub rc_tries: u8,
    /// Tries left for PW3.
    pub pw3_tries: u8,
}

impl PwStatus {
    pub(crate) fn parse(c4: &[u8]) -> Result<PwStatus> {
        match c4 {
            [multi, _, _, _, pw1, rc, pw3, ..] => Ok(PwStatus {
                pw1_multi: *multi != 0,
                pw1_tries: *pw1,
                rc_tries: *rc,
                pw3_tries: *pw3,
            }),
            _ => Err(Error::corrupted(
                "PW status bytes (C4) shorter than 7 bytes",
            )),
        }
    }
}

/// Reads C4.
pub(crate) async fn pw_status(s: &CardSession) -> Result<PwStatus> {
    let raw = get_data(s, 0xC4).await?;
    PwStatus::parse(unwrap_outer(&raw, 0xC4))
}

/// The cardholder name (65/5B), as "Given Surname" from "Surname<<Given".
pub(crate) async fn cardholder_name(s: &CardSession) -> Result<Option<String>> {
    let raw = get_data(s, 0x65).await?;
    let inner = unwrap_outer(&raw, 0x65);
    let Some(name) = Tlv::find(inner, Tag::new(0x5B))? else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(name.value);
    let name = match name.split_once("<<") {
        Some((surname, given)) => {
            format!("{} {}", given.replace('<', " "), surname.replace('<', " "))
        }
        None => name.replace('<', " "),
    };
    let name = name.trim().to_string();
    Ok((!name.is_empty()).then_some(name))
}

/// The signature counter (7A/93).
pub(crate) async fn signature_counter(s: &CardSession) -> Result<u32> {
    let raw = get_data(s, 0x7A).await?;
    let inner = unwrap_outer(&raw, 0x7A);
    let counter = Tlv::find(inner, Tag::new(0x93))?
        .ok_or_else(|| Error::corrupted("security support template without a counter"))?;
    if counter.value.len() > 4 {
        return Err(Error::corrupted("signature counter longer than 4 bytes"));
    }
    Ok(counter
        .value
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// The public key of a slot's key from a 7F49 template (the answer to GENERATE): 86 the
/// point for ECC keys, 81 the modulus and 82 the exponent for RSA keys (whose modulus must
/// have the size the algorithm attributes say).
pub(crate) fn parse_public_key(answer: &[u8], algorithm: Algorithm) -> Result<PublicKey> {
    let key_type = algorithm.key_type();
    if let Algorithm::Rsa { bits, .. } = algorithm {
        let part = |t: u32| -> Result<&[u8]> {
            Ok(Tlv::find_path(answer, &[tag(0x7F49), Tag::new(t)])?
                .ok_or_else(|| Error::corrupted("RSA public key template without 81 or 82"))?
                .value)
        };
        let (n, e) = (part(0x81)?, part(0x82)?);
        if crate::rsa_der::bit_len(n) != usize::from(bits) {
            return Err(Error::corrupted(
                "RSA modulus of another size than the algorithm attributes say",
            ));
        }
        let e_bits = crate::rsa_der::bit_len(e);
        if !(2..=32).contains(&e_bits) || e.last().is_none_or(|b| b & 1 == 0) {
            return Err(Error::corrupted(
                "RSA public exponent is not an odd 32-bit number",
            ));
        }
        return Ok(PublicKey {
            key_type,
            raw: crate::rsa_der::public_der(n, e),
        });
    }
    let point = Tlv::find_path(answer, &[tag(0x7F49), Tag::new(0x86)])?
        .ok_or_else(|| Error::corrupted("public key template without 86"))?
        .value;
    let raw = match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            let len = if key_type == KeyType::EcP256 { 65 } else { 97 };
            if point.len() != len || point.first() != Some(&0x04) {
                return Err(Error::corrupted(
                    "EC public key is not an uncompressed point",
                ));
            }
            point.to_vec()
        }
        _ => {
            // Curve25519 keys: 32 native bytes, or with the 40 prefix of OpenPGP's encoding.
            let p = match point {
                [0x40, rest @ ..] if rest.len() == 32 => rest,
                p => p,
            };
            if p.len() != 32 {
                return Err(Error::corrupted("Curve25519 public key is not 32 bytes"));
            }
            p.to_vec()
        }
    };
    Ok(PublicKey { key_type, raw })
}

/// GENERATE ASYMMETRIC KEY PAIR (§7.2.14): P1 80 generates, 81 reads the public key.
pub(crate) async fn generate(s: &CardSession, slot: KeyRef, read_only: bool) -> Result<Vec<u8>> {
    let p1 = if read_only { 0x81 } else { 0x80 };
    s.send_ins(
        Ins::GENERATE_ASYMMETRIC_KEY_PAIR,
        p1,
        0x00,
        &[slot.crt(), 0x00],
        LE,
    )
    .await
}

/// The public key in a slot, or `None` when the slot is empty.
pub(crate) async fn read_public_key(
    s: &CardSession,
    slot: KeyRef,
    algorithm: Algorithm,
) -> Result<Option<PublicKey>> {
    match generate(s, slot, true).await {
        Ok(answer) => parse_public_key(&answer, algorithm).map(Some),
        Err(e) if e.code() == ErrorCode::ObjectNotFound => Ok(None),
        // 6A80/6985 and the like from an empty slot on some cards.
        Err(e) if e.status_word().is_some() && e.code() != ErrorCode::AuthenticationNeeded => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The cardholder certificates, by slot: SELECT DATA occurrence 0 (AUT), 1 (DEC), 2 (SIG),
/// then GET DATA 7F21 (§7.2.5). A card without SELECT DATA gives the first only.
pub(crate) async fn certificates(s: &CardSession) -> Result<Vec<(KeyRef, Vec<u8>)>> {
    let mut out = Vec::new();
    for (occurrence, slot) in [(0u8, KeyRef::Aut), (1, KeyRef::Dec), (2, KeyRef::Sig)] {
        match select_certificate(s, occurrence).await {
            Ok(_) => {}
            Err(e) if e.status_word().is_some() && occurrence == 0 => {
                // No SELECT DATA: the one 7F21 there is.
                let der = get_data(s, 0x7F21).await.unwrap_or_default();
                if !der.is_empty() {
                    out.push((slot, der));
                }
                return Ok(out);
            }
            Err(e) if e.status_word().is_some() => break,
            Err(e) => return Err(e),
        }
        match get_data(s, 0x7F21).await {
            Ok(der) if !der.is_empty() => out.push((slot, der)),
            Ok(_) => {}
            Err(e) if e.status_word().is_some() => {}
            Err(e) => return Err(e),
        }
    }
    // Leave the first occurrence selected for the next program that reads 7F21 plainly.
    select_certificate(s, 0).await.or_else(ignore_status)?;
    Ok(out)
}

/// SELECT DATA of a 7F21 occurrence.
async fn select_certificate(s: &CardSession, occurrence: u8) -> Result<()> {
    s.send_ins(
        Ins::SELECT_DATA,
        occurrence,
        0x04,
        &[0x60, 0x04, 0x5C, 0x02, 0x7F, 0x21],
        None,
    )
    .await
    .map(drop)
}

/// Turns a card's refusal into nothing, keeping transport errors.
fn ignore_status(e: Error) -> Result<()> {
    if e.status_word().is_some() {
        Ok(())
    } else {
        Err(e)
    }
}

/// Stores a cardholder certificate for a slot.
pub(crate) async fn put_certificate(s: &CardSession, slot: KeyRef, der: &[u8]) -> Result<()> {
    let occurrence = match slot {
        KeyRef::Aut => 0,
        KeyRef::Dec => 1,
        KeyRef::Sig => 2,
    };
    select_certificate(s, occurrence).await?;
    let written = put_data(s, 0x7F21, der).await;
    select_certificate(s, 0).await.or_else(ignore_status)?;
    written
}

/// VERIFY (§7.2.2) with `p2` 81, 82 or 83 and the PIN as the card takes it (derived when
/// the KDF-DO says so).
pub(crate) async fn verify(s: &CardSession, p2: u8, pin: &[u8]) -> Result<()> {
    let cmd = Command::new(s.card().cla(), Ins::VERIFY, 0x00, p2)
        .with_data_vec(Zeroizing::new(pin.to_vec()))
        .sensitive();
    s.send(&cmd).await?.into_result().map(drop)
}

/// CHANGE REFERENCE DATA (§7.2.3): old then new in one data field.
pub(crate) async fn change_reference(
    s: &CardSession,
    p2: u8,
    old: &[u8],
    new: &[u8],
) -> Result<()> {
    let mut data = Zeroizing::new(Vec::with_capacity(old.len() + new.len()));
    data.extend_from_slice(old);
    data.extend_from_slice(new);
    let cmd = Command::new(s.card().cla(), Ins::CHANGE_REFERENCE_DATA, 0x00, p2)
        .with_data_vec(data)
        .sensitive();
    s.send(&cmd).await?.into_result().map(drop)
}

/// RESET RETRY COUNTER (§7.2.4): with the resetting code (P1 00) or after PW3 (P1 02).
pub(crate) async fn reset_retry_counter(
    s: &CardSession,
    resetting_code: Option<&[u8]>,
    new: &[u8],
) -> Result<()> {
    let mut data = Zeroizing::new(Vec::new());
    if let Some(rc) = resetting_code {
        data.extend_from_slice(rc);
    }
    data.extend_from_slice(new);
    let p1 = if resetting_code.is_some() { 0x00 } else { 0x02 };
    let cmd = Command::new(s.card().cla(), Ins::RESET_RETRY_COUNTER, p1, 0x81)
        .with_data_vec(data)
        .sensitive();
    s.send(&cmd).await?.into_result().map(drop)
}

/// PSO:COMPUTE DIGITAL SIGNATURE (§7.2.10).
pub(crate) async fn compute_signature(s: &CardSession, input: &[u8]) -> Result<Vec<u8>> {
    s.send_ins(Ins::PERFORM_SECURITY_OPERATION, 0x9E, 0x9A, input, LE)
        .await
}

/// INTERNAL AUTHENTICATE (§7.2.13) with the authentication key.
pub(crate) async fn internal_authenticate(s: &CardSession, input: &[u8]) -> Result<Vec<u8>> {
    s.send_ins(Ins::INTERNAL_AUTHENTICATE, 0x00, 0x00, input, LE)
        .await
}

/// PSO:DECIPHER for ECDH (§7.2.11): A6 { 7F49 { 86 peer point } }, answered by the shared
/// secret.
pub(crate) async fn ecdh(s: &CardSession, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0xA6), |b| {
        b.constructed(tag(0x7F49), |b| {
            b.put(Tag::new(0x86), peer);
        });
    });
    s.send_ins(Ins::PERFORM_SECURITY_OPERATION, 0x80, 0x86, &b.finish(), LE)
        .await
        .map(Zeroizing::new)
}

/// PSO:DECIPHER for RSA (§7.2.11): the padding indicator 00 then the cryptogram, answered
/// by the plaintext with the PKCS#1 v1.5 padding removed by the card.
pub(crate) async fn rsa_decipher(s: &CardSession, cryptogram: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut data = Zeroizing::new(Vec::with_capacity(cryptogram.len() + 1));
    data.push(0x00);
    data.extend_from_slice(cryptogram);
    let cmd = Command::new(s.card().cla(), Ins::PERFORM_SECURITY_OPERATION, 0x80, 0x86)
        .with_data_vec(data)
        .with_le(Command::LE_MAX_SHORT);
    s.send(&cmd).await?.into_result().map(Zeroizing::new)
}

/// PSO:ENCIPHER with the AES key (§7.2.12): the plaintext (whole 16-byte blocks), answered
/// by the padding indicator 02 and the cryptogram.
pub(crate) async fn aes_encipher(s: &CardSession, plaintext: &[u8]) -> Result<Vec<u8>> {
    let cmd = Command::new(s.card().cla(), Ins::PERFORM_SECURITY_OPERATION, 0x86, 0x80)
        .with_data_vec(Zeroizing::new(plaintext.to_vec()))
        .with_le(Command::LE_MAX_SHORT)
        .sensitive();
    let answer = s.send(&cmd).await?.into_result()?;
    match answer.split_first() {
        Some((&0x02, cryptogram)) if cryptogram.len() == plaintext.len() => Ok(cryptogram.to_vec()),
        _ => Err(Error::corrupted(
            "PSO:ENCIPHER answer is not 02 and a cryptogram as long as the plaintext",
        )),
    }
}

/// PSO:DECIPHER with the AES key (§7.2.11): the padding indicator 02 then the cryptogram.
pub(crate) async fn aes_decipher(s: &CardSession, cryptogram: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut data = Zeroizing::new(Vec::with_capacity(cryptogram.len() + 1));
    data.push(0x02);
    data.extend_from_slice(cryptogram);
    let cmd = Command::new(s.card().cla(), Ins::PERFORM_SECURITY_OPERATION, 0x80, 0x86)
        .with_data_vec(data)
        .with_le(Command::LE_MAX_SHORT);
    let plain = Zeroizing::new(s.send(&cmd).await?.into_result()?);
    if plain.len() != cryptogram.len() {
        return Err(Error::corrupted(
            "AES plaintext of another length than the cryptogram",
        ));
    }
    Ok(plain)
}

/// The private key parts an import sends, in the extended header list's order: for ECC
/// 92 (the scalar) and 99 (the public key); for RSA 91 e, 92 p, 93 q, then 94 1/q mod p,
/// 95 d mod (p-1), 96 d mod (q-1) and 97 n as the card's import format asks.
pub(crate) type ImportParts<'a> = Vec<(u8, &'a [u8])>;

/// Key import with the extended header list (§4.4.3.12):
/// 4D { CRT, 7F48 { tag len ... }, 5F48 the values concatenated }.
pub(crate) async fn import_key(
    s: &CardSession,
    slot: KeyRef,
    parts: &ImportParts<'_>,
) -> Result<()> {
    let mut header = Vec::new();
    let mut concatenated = Zeroizing::new(Vec::new());
    for (t, value) in parts {
        header.push(*t);
        push_len(&mut header, value.len());
        concatenated.extend_from_slice(value);
    }
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x4D), |b| {
        b.put(Tag::new(u32::from(slot.crt())), &[]);
        b.put(tag(0x7F48), &header);
        b.put(tag(0x5F48), &concatenated);
    });
    let data = Zeroizing::new(b.finish());
    let cmd = Command::new(s.card().cla(), Ins::PUT_DATA_ODD, 0x3F, 0xFF)
        .with_data_vec(data)
        .sensitive();
    s.send(&cmd).await?.into_result().map(drop)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
}

/// TERMINATE DF then ACTIVATE FILE (§7.2.16, §7.2.17): the card goes back to its factory state.
pub(crate) async fn factory_reset(s: &CardSession) -> Result<()> {
    s.send_ins(Ins::TERMINATE_DF, 0x00, 0x00, &[], None).await?;
    s.send_ins(Ins::ACTIVATE_FILE, 0x00, 0x00, &[], None)
        .await?;
    Ok(())
}

/// A raw ECDSA signature r || s (the card's form) as DER `SEQUENCE { INTEGER r, INTEGER s }`.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8], field: usize) -> Result<Vec<u8>> {
    if raw.len() != 2 * field {
        return Err(Error::corrupted("ECDSA signature of the wrong length"));
    }
    let (r, s) = raw.split_at(field);
    let int = |v: &[u8]| {
        let skip = v.iter().take_while(|&&b| b == 0).count();
        let mut out = v.get(skip..).unwrap_or(&[]).to_vec();
        if out.first().is_none_or(|&b| b & 0x80 != 0) {
            out.insert(0, 0);
        }
        out
    };
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(0x30), |b| {
        b.put(Tag::new(0x02), &int(r));
        b.put(Tag::new(0x02), &int(s));
    });
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_ecdsa_signatures_become_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[1] = 0x80; // r = 0080.. : one leading zero dropped, one kept for the sign
        raw[31] = 1;
        raw[63] = 5; // s = 5
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        let seq = Tlv::parse_exact(&der).unwrap();
        let ints: Vec<_> = seq.children().map(|c| c.unwrap().value.to_vec()).collect();
        assert_eq!(ints[0].len(), 32);
        assert_eq!(ints[0][..2], [0x00, 0x80]);
        assert_eq!(ints[1], vec![5]);
        assert!(ecdsa_raw_to_der(&raw[..63], 32).is_err());
    }

    #[test]
    fn algorithm_attributes_round_trip() {
        for alg in [
            Algorithm::EcdsaP256,
            Algorithm::EcdsaP384,
            Algorithm::EcdhP256,
            Algorithm::EcdhP384,
            Algorithm::Ed25519,
            Algorithm::X25519,
        ] {
            assert_eq!(Algorithm::from_attributes(&alg.attributes()), Some(alg));
            let mut with_format = alg.attributes();
            with_format.push(0xFF);
            assert_eq!(Algorithm::from_attributes(&with_format), Some(alg));
        }
        // RSA (OpenPGP card 3.4 §4.4.3.9): 01, modulus bits, exponent bits, import format.
        assert_eq!(
            Algorithm::from_attributes(&[0x01, 0x08, 0x00, 0x00, 0x20, 0x00]),
            Some(Algorithm::rsa(2048))
        );
        let yubikey_4096 = Algorithm::from_attributes(&[0x01, 0x10, 0x00, 0x00, 0x11, 0x03]);
        assert_eq!(
            yubikey_4096,
            Some(Algorithm::Rsa {
                bits: 4096,
                exponent_bits: 17,
                format: crate::RsaImportFormat::CrtWithModulus
            })
        );
        assert_eq!(
            yubikey_4096.map(Algorithm::attributes),
            Some(vec![0x01, 0x10, 0x00, 0x00, 0x11, 0x03])
        );
        // Old cards leave out the import format: standard.
        assert_eq!(
            Algorithm::from_attributes(&[0x01, 0x0C, 0x00, 0x00, 0x20]),
            Some(Algorithm::rsa(3072))
        );
        for unknown in [
            &[0x01, 0x04, 0x00, 0x00, 0x20, 0x00][..], // RSA 1024
            &[0x01, 0x08, 0x00, 0x00, 0x20, 0x04],     // import format 04
            &[0x01, 0x08, 0x00, 0x00, 0x40, 0x00],     // 64-bit exponent
            &[0x01, 0x08, 0x00],
        ] {
            assert_eq!(Algorithm::from_attributes(unknown), None, "{unknown:02x?}");
        }
    }

    #[test]
    fn pw_status_bytes() {
        let s = PwStatus::parse(&[0x01, 0x7F, 0x7F, 0x7F, 0x03, 0x00, 0x02]).unwrap();
        assert!(s.pw1_multi);
        assert_eq!((s.pw1_tries, s.rc_tries, s.pw3_tries), (3, 0, 2));
        assert!(PwStatus::parse(&[0; 6]).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_application_data(&data);
            let _ = PwStatus::parse(&data);
            for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519, Algorithm::EcdhP384, Algorithm::rsa(2048)] {
                let _ = parse_public_key(&data, alg);
            }
            let _ = Algorithm::from_attributes(&data);
            let _ = crate::pkcs8::parse(&data);
            let _ = ecdsa_raw_to_der(&data, 32);
        }

        #[test]
        fn der_signatures_decode_back_to_the_raw_form(raw in proptest::collection::vec(any::<u8>(), 64)) {
            let der = ecdsa_raw_to_der(&raw, 32).unwrap();
            let seq = Tlv::parse_exact(&der).unwrap();
            let mut back = Vec::new();
            for int in seq.children() {
                let v = int.unwrap().value;
                let v = v.strip_prefix(&[0]).filter(|r| r.first().is_some_and(|b| b & 0x80 != 0)).unwrap_or(v);
                prop_assert!(v.len() <= 32);
                back.extend(std::iter::repeat_n(0u8, 32 - v.len()));
                back.extend_from_slice(v);
            }
            prop_assert_eq!(back, raw);
        }
    }
}
