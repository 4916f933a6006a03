//! The PIV commands, host side, over one exclusive [`CardSession`] (SP 800-73-4 Part 2 §3;
//! YubiKey extensions). Each function sends one command (or one exchange, for mutual
//! authentication) and reads its answer through token-core's TLV codec.

use token_core::{
    CardSession, Error, ErrorCode, Pin, PublicKey, Result, StatusWord, Tag, Tlv, TlvBuilder,
};
use zeroize::Zeroizing;

use crate::mgmt::{ct_eq, ManagementKey};
use crate::objects::parse_public_key;
use crate::padding::random;
use crate::types::{
    ins, keyref, tag, tag_bytes, AlgorithmId, PinPolicy, SlotId, TouchPolicy, PIV_AID,
};

/// Le for commands whose answer may be long: as much as the card has (token-core asks 256 at a
/// time through 61xx when extended length is off).
const LE_ALL: usize = 65_536;

/// SELECTs the PIV application; `Ok(false)` when the card does not have it.
pub(crate) async fn select(s: &CardSession) -> Result<bool> {
    Ok(s.select_application(&PIV_AID).await?.is_some())
}

/// True for the status words with which a card says "I do not have this extension".
fn unsupported(e: &Error) -> bool {
    matches!(
        e.status_word(),
        Some(
            StatusWord::INS_NOT_SUPPORTED
                | StatusWord::CLA_NOT_SUPPORTED
                | StatusWord::FUNCTION_NOT_SUPPORTED
                | StatusWord::INCORRECT_P1P2
                | StatusWord::WRONG_P1P2
                | StatusWord::CONDITIONS_NOT_SATISFIED
        )
    )
}

/// GET DATA of one object (`00 CB 3F FF 5C tag`): its content inside the `53` wrapper (for the
/// discovery object, the whole `7E` template), or `None` when the card has no such object.
pub(crate) async fn get_data(s: &CardSession, object: u32) -> Result<Option<Vec<u8>>> {
    let mut b = TlvBuilder::new();
    b.put(Tag::new(tag::TAG_LIST), &tag_bytes(object));
    let answer = match s
        .send_ins(ins::GET_DATA, 0x3F, 0xFF, &b.finish(), Some(LE_ALL))
        .await
    {
        Ok(a) => a,
        Err(e) if e.code() == ErrorCode::ObjectNotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if object == crate::types::objects::DISCOVERY {
        Tlv::parse_exact(&answer)?;
        return Ok(Some(answer));
    }
    let wrapper = Tlv::parse(&answer)?.0;
    if wrapper.tag.value() != tag::DATA {
        return Err(Error::corrupted("GET DATA: answer is not a 53 data object"));
    }
    Ok(Some(wrapper.value.to_vec()))
}

/// PUT DATA of one object (`00 DB 3F FF 5C tag 53 content`); needs the management key. An
/// empty `content` deletes the object on YubiKeys.
pub(crate) async fn put_data(s: &CardSession, object: u32, content: &[u8]) -> Result<()> {
    let mut b = TlvBuilder::new();
    b.put(Tag::new(tag::TAG_LIST), &tag_bytes(object));
    b.put(Tag::new(tag::DATA), content);
    s.send_ins(ins::PUT_DATA, 0x3F, 0xFF, &b.finish(), None)
        .await
        .map(|_| ())
}

/// A PIN padded with FF to 8 bytes (SP 800-73-4 Part 2 §2.4.3).
pub(crate) fn pad_pin(pin: &Pin) -> Result<Zeroizing<Vec<u8>>> {
    if pin.is_empty() || pin.len() > 8 {
        return Err(Error::bad_parameter("a PIV PIN or PUK is 1 to 8 bytes"));
    }
    let mut out = Zeroizing::new(pin.expose().to_vec());
    out.resize(8, 0xFF);
    Ok(out)
}

/// The verification state a card reports to an empty VERIFY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinState {
    /// 9000: verified now.
    Verified,
    /// 63Cx: not verified, x tries left (`None` when the card does not count aloud).
    NotVerified(Option<u8>),
    /// 6983: blocked.
    Blocked,
}

/// VERIFY with no data (SP 800-73-4 Part 2 §3.2.1): asks the state without spending a try.
pub(crate) async fn pin_state(s: &CardSession, reference: u8) -> Result<PinState> {
    match s.send_ins(ins::VERIFY, 0x00, reference, &[], None).await {
        Ok(_) => Ok(PinState::Verified),
        Err(e) if e.is_blocked() => Ok(PinState::Blocked),
        Err(e) if e.code() == ErrorCode::AuthenticationFailed => {
            Ok(PinState::NotVerified(e.retries_left()))
        }
        // Some cards answer 6982 instead of 63Cx.
        Err(e) if e.code() == ErrorCode::AuthenticationNeeded => Ok(PinState::NotVerified(None)),
        Err(e) => Err(e),
    }
}

/// VERIFY with an 8-byte padded PIN. Sent once: a wrong PIN is never retried.
pub(crate) async fn verify(s: &CardSession, reference: u8, padded: &[u8]) -> Result<()> {
    s.send_ins(ins::VERIFY, 0x00, reference, padded, None)
        .await
        .map(|_| ())
}

/// VERIFY P1=FF: the card forgets the PIN (SP 800-73-4 Part 2 §3.2.1).
pub(crate) async fn reset_pin_state(s: &CardSession) -> Result<()> {
    match s.send_ins(ins::VERIFY, 0xFF, keyref::PIN, &[], None).await {
        Ok(_) => Ok(()),
        // Older cards lack it; forgetting on our side is what matters.
        Err(e) if unsupported(&e) || e.code() == ErrorCode::BadParameter => Ok(()),
        Err(e) => Err(e),
    }
}

/// CHANGE REFERENCE DATA (PIN 80 or PUK 81): old and new, each padded to 8 bytes.
pub(crate) async fn change_reference(
    s: &CardSession,
    reference: u8,
    old: &Pin,
    new: &Pin,
) -> Result<()> {
    let mut data = pad_pin(old)?;
    data.extend_from_slice(&pad_pin(new)?);
    s.send_ins(ins::CHANGE_REFERENCE_DATA, 0x00, reference, &data, None)
        .await
        .map(|_| ())
}

/// RESET RETRY COUNTER of the PIN with the PUK.
pub(crate) async fn reset_retry_counter(s: &CardSession, puk: &Pin, new: &Pin) -> Result<()> {
    let mut data = pad_pin(puk)?;
    data.extend_from_slice(&pad_pin(new)?);
    s.send_ins(ins::RESET_RETRY_COUNTER, 0x00, keyref::PIN, &data, None)
        .await
        .map(|_| ())
}

/// GENERAL AUTHENTICATE with a template `7C { entries }`; returns the template the card
/// answered (its value).
async fn general_authenticate(
    s: &CardSession,
    alg: AlgorithmId,
    key: u8,
    entries: &[(u32, &[u8])],
) -> Result<Vec<u8>> {
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(tag::DYNAMIC_AUTH), |b| {
        for (t, v) in entries {
            if let Ok(t) = Tag::try_from(*t) {
                b.put(t, v);
            }
        }
    });
    let data = Zeroizing::new(b.finish());
    let answer = s
        .send_ins(ins::GENERAL_AUTHENTICATE, alg.0, key, &data, Some(LE_ALL))
        .await?;
    if answer.is_empty() {
        return Ok(Vec::new());
    }
    let template = Tlv::parse_exact(&answer)?;
    if template.tag.value() != tag::DYNAMIC_AUTH {
        return Err(Error::corrupted(
            "GENERAL AUTHENTICATE: answer is not a 7C template",
        ));
    }
    Ok(template.value.to_vec())
}

fn element(template: &[u8], t: u32, what: &'static str) -> Result<Vec<u8>> {
    let tag = Tag::try_from(t)?;
    Tlv::find(template, tag)?
        .map(|e| e.value.to_vec())
        .ok_or_else(|| Error::corrupted(what))
}

/// A private key operation: `7C { 82 00, 81 input }` → `7C { 82 output }` (signature, RSA
/// decryption).
pub(crate) async fn private_operation(
    s: &CardSession,
    alg: AlgorithmId,
    slot: SlotId,
    input: &[u8],
) -> Result<Vec<u8>> {
    let t = general_authenticate(
        s,
        alg,
        slot.byte(),
        &[(tag::RESPONSE, &[]), (tag::CHALLENGE, input)],
    )
    .await?;
    element(&t, tag::RESPONSE, "GENERAL AUTHENTICATE: no response (82)")
}

/// Key agreement: `7C { 82 00, 85 peer }` → `7C { 82 shared secret }`.
pub(crate) async fn key_agreement(
    s: &CardSession,
    alg: AlgorithmId,
    slot: SlotId,
    peer: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let t = Zeroizing::new(
        general_authenticate(
            s,
            alg,
            slot.byte(),
            &[(tag::RESPONSE, &[]), (tag::EXPONENTIATION, peer)],
        )
        .await?,
    );
    element(
        &t,
        tag::RESPONSE,
        "GENERAL AUTHENTICATE: no shared secret (82)",
    )
    .map(Zeroizing::new)
}

/// Mutual authentication with the card management key (SP 800-73-4 Part 2 Appendix A.1, the
/// witness-challenge exchange YubiKeys use): the card sends a witness encrypted under the key,
/// we return it decrypted with our own challenge, the card returns our challenge encrypted.
///
/// # Errors
/// `AuthenticationFailed` when the card refuses the key or its answer does not prove it knows
/// the key; `BadParameter` when the card uses another algorithm.
pub(crate) async fn authenticate_management(s: &CardSession, key: &ManagementKey) -> Result<()> {
    let refused = |e: Error| {
        if matches!(
            e.code(),
            ErrorCode::AuthenticationNeeded | ErrorCode::AuthenticationFailed
        ) || e.status_word() == Some(StatusWord::INCORRECT_DATA)
        {
            Error::authentication_failed(None)
                .context("the card refused the management key")
                .with_underlying(e.underlying().clone())
        } else {
            e
        }
    };
    let alg = key.algorithm();
    let t = general_authenticate(s, alg, keyref::MANAGEMENT, &[(tag::WITNESS, &[])])
        .await
        .map_err(refused)?;
    let witness = element(&t, tag::WITNESS, "management key: no witness (80)")?;
    if witness.len() != key.block_len() {
        return Err(Error::corrupted(
            "management key: the card's witness is not one block of this algorithm",
        ));
    }
    let decrypted = key.decrypt(&witness)?;
    let mut challenge = Zeroizing::new(vec![0u8; key.block_len()]);
    random(&mut challenge)?;
    let t = general_authenticate(
        s,
        alg,
        keyref::MANAGEMENT,
        &[(tag::WITNESS, &decrypted), (tag::CHALLENGE, &challenge)],
    )
    .await
    .map_err(refused)?;
    let response = element(&t, tag::RESPONSE, "management key: no response (82)")?;
    let expected = key.encrypt(&challenge)?;
    if !ct_eq(&response, &expected) {
        return Err(Error::authentication_failed(None)
            .context("the card did not prove it holds the management key"));
    }
    Ok(())
}

/// GENERATE ASYMMETRIC KEY PAIR (`AC { 80 alg, [AA pin], [AB touch] }`); returns the new
/// public key from the `7F49` template.
pub(crate) async fn generate(
    s: &CardSession,
    slot: SlotId,
    alg: AlgorithmId,
    pin_policy: PinPolicy,
    touch_policy: TouchPolicy,
) -> Result<PublicKey> {
    let mut b = TlvBuilder::new();
    b.constructed(Tag::new(tag::KEY_TEMPLATE), |b| {
        b.put(Tag::new(tag::ALGORITHM), &[alg.0]);
        if pin_policy != PinPolicy::Default {
            b.put(Tag::new(tag::PIN_POLICY), &[pin_policy.byte()]);
        }
        if touch_policy != TouchPolicy::Default {
            b.put(Tag::new(tag::TOUCH_POLICY), &[touch_policy.byte()]);
        }
    });
    let answer = s
        .send_ins(
            ins::GENERATE_ASYMMETRIC_KEY_PAIR,
            0x00,
            slot.byte(),
            &b.finish(),
            Some(LE_ALL),
        )
        .await?;
    let template = Tlv::find(&answer, Tag::new(tag::PUBLIC_KEY_TEMPLATE))?
        .ok_or_else(|| Error::corrupted("GENERATE: no 7F49 public key template"))?;
    parse_public_key(alg, template.value)
}

/// What YubiKey GET METADATA (F7) reports about a key reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The algorithm (FF for a PIN or PUK).
    pub algorithm: AlgorithmId,
    /// PIN and touch policy, for keys.
    pub policy: Option<(PinPolicy, TouchPolicy)>,
    /// True when the key was generated on the card, false when imported.
    pub generated: Option<bool>,
    /// The public key, for asymmetric keys.
    pub public_key: Option<PublicKey>,
    /// Whether a PIN, PUK or management key still has its factory value.
    pub is_default: Option<bool>,
    /// For a PIN or PUK: (tries in all, tries left).
    pub retries: Option<(u8, u8)>,
}

/// YubiKey GET METADATA (`00 F7 00 ref`). `None` when the card lacks the command or the slot
/// is empty.
pub(crate) async fn metadata(s: &CardSession, reference: u8) -> Result<Option<Metadata>> {
    let answer = match s
        .send_ins(ins::GET_METADATA, 0x00, reference, &[], Some(LE_ALL))
        .await
    {
        Ok(a) => a,
        Err(e) if unsupported(&e) || e.code() == ErrorCode::ObjectNotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let one = |t: u32| -> Result<Option<Vec<u8>>> {
        Ok(Tlv::find(&answer, Tag::try_from(t)?)?.map(|v| v.value.to_vec()))
    };
    let algorithm = match one(0x01)?.as_deref() {
        Some([a]) => AlgorithmId(*a),
        _ => return Err(Error::corrupted("GET METADATA: no algorithm (01)")),
    };
    let policy = match one(0x02)?.as_deref() {
        Some([p, t]) => Some((
            PinPolicy::from_byte(*p).ok_or_else(|| Error::corrupted("GET METADATA: PIN policy"))?,
            TouchPolicy::from_byte(*t)
                .ok_or_else(|| Error::corrupted("GET METADATA: touch policy"))?,
        )),
        None => None,
        Some(_) => return Err(Error::corrupted("GET METADATA: policy is not 2 bytes")),
    };
    let generated = match one(0x03)?.as_deref() {
        Some([1]) => Some(true),
        Some([2]) => Some(false),
        None => None,
        Some(_) => return Err(Error::corrupted("GET METADATA: origin")),
    };
    let public_key = match one(0x04)? {
        Some(v) if algorithm.key_type().is_some() => Some(parse_public_key(algorithm, &v)?),
        _ => None,
    };
    let is_default = one(0x05)?.and_then(|v| v.first().map(|&b| b == 1));
    let retries = match one(0x06)?.as_deref() {
        Some([total, left]) => Some((*total, *left)),
        None => None,
        Some(_) => return Err(Error::corrupted("GET METADATA: retries is not 2 bytes")),
    };
    Ok(Some(Metadata {
        algorithm,
        policy,
        generated,
        public_key,
        is_default,
        retries,
    }))
}

/// YubiKey GET SERIAL (`00 F8 00 00`): the 4-byte serial, or `None` on other cards.
pub(crate) async fn serial(s: &CardSession) -> Result<Option<u32>> {
    match s
        .send_ins(ins::GET_SERIAL, 0x00, 0x00, &[], Some(256))
        .await
    {
        Ok(v) => match <[u8; 4]>::try_from(v.as_slice()) {
            Ok(b) => Ok(Some(u32::from_be_bytes(b))),
            Err(_) => Err(Error::corrupted("GET SERIAL: not 4 bytes")),
        },
        Err(e) if unsupported(&e) || e.code() == ErrorCode::ObjectNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// YubiKey GET VERSION (`00 FD 00 00`): major, minor, patch, or `None` on other cards.
pub(crate) async fn version(s: &CardSession) -> Result<Option<[u8; 3]>> {
    match s
        .send_ins(ins::GET_VERSION, 0x00, 0x00, &[], Some(256))
        .await
    {
        Ok(v) => <[u8; 3]>::try_from(v.as_slice())
            .map(Some)
            .map_err(|_| Error::corrupted("GET VERSION: not 3 bytes")),
        Err(e) if unsupported(&e) || e.code() == ErrorCode::ObjectNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// YubiKey ATTEST (`00 F9 slot 00`): the attestation certificate (DER) the card issues for
/// the key in `slot` with its attestation key (F9).
///
/// # Errors
/// `NotImplemented` on cards without ATTEST; `BadParameter` (6A80 or 6985 underneath) for a
/// key that was imported, not generated on the card; `ObjectNotFound` for an empty slot;
/// `CorruptedData` when the answer is not a DER SEQUENCE.
pub(crate) async fn attest(s: &CardSession, slot: SlotId) -> Result<Vec<u8>> {
    let der = match s
        .send_ins(ins::ATTEST, slot.byte(), 0x00, &[], Some(LE_ALL))
        .await
    {
        Ok(d) => d,
        // 6A80 from YubiKeys for an imported key (some firmware answers 6985).
        Err(e)
            if matches!(
                e.status_word(),
                Some(StatusWord::INCORRECT_DATA | StatusWord::CONDITIONS_NOT_SATISFIED)
            ) =>
        {
            return Err(Error::bad_parameter(
                "the card attests only keys generated on it; this one was imported",
            )
            .with_underlying(e.underlying().clone()))
        }
        Err(e) if e.status_word() == Some(StatusWord::INS_NOT_SUPPORTED) => {
            return Err(Error::not_implemented("this card has no YubiKey ATTEST")
                .with_underlying(e.underlying().clone()))
        }
        Err(e) => return Err(e),
    };
    let cert = Tlv::parse_exact(&der)
        .map_err(|_| Error::corrupted("ATTEST: the answer is not one DER object"))?;
    if cert.tag.value() != 0x30 {
        return Err(Error::corrupted("ATTEST: the answer is not a certificate"));
    }
    Ok(der)
}

/// YubiKey SET MANAGEMENT KEY (`00 FF FF FF|FE alg 9B len key`); needs the current key.
pub(crate) async fn set_management_key(
    s: &CardSession,
    new: &ManagementKey,
    require_touch: bool,
) -> Result<()> {
    let key = new.expose();
    let mut data = Zeroizing::new(Vec::with_capacity(3 + key.len()));
    data.extend_from_slice(&[new.algorithm().0, keyref::MANAGEMENT, key.len() as u8]);
    data.extend_from_slice(key);
    let p2 = if require_touch { 0xFE } else { 0xFF };
    s.send_ins(ins::SET_MANAGEMENT_KEY, 0xFF, p2, &data, None)
        .await
        .map(|_| ())
}

/// YubiKey SET PIN RETRIES (`00 FA pin puk`); needs the management key and the PIN, and puts
/// the PIN and PUK back to their defaults.
pub(crate) async fn set_pin_retries(s: &CardSession, pin_tries: u8, puk_tries: u8) -> Result<()> {
    s.send_ins(ins::SET_PIN_RETRIES, pin_tries, puk_tries, &[], None)
        .await
        .map(|_| ())
}

/// YubiKey RESET (`00 FB 00 00`): wipes the PIV application; the card accepts it only once
/// the PIN and the PUK are both blocked.
pub(crate) async fn reset(s: &CardSession) -> Result<()> {
    s.send_ins(ins::RESET, 0x00, 0x00, &[], None)
        .await
        .map(|_| ())
}
