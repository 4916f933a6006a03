//! The simulator's state file: a magic, a format version, then BER-TLV (token-core's codec).
//!
//! ```text
//! "tokenkit-piv-sim" 01
//! C0 serial(4)  C1 version(3)
//! E2 { 80 value(8) 81 max 82 left 83 default }      PIN
//! E3 { ... }                                        PUK
//! E4 { 80 alg 81 key 82 touch 83 default }          management key
//! E5 { 80 slot 81 alg 82 secret 83 pin 84 touch 85 generated }   one per key
//! E6 { 80 tag(4) 81 content }                       one per data object
//! ```
//!
//! A key's secret is [`SimKey::secret`]: the scalar, seed or secret of ECC, Ed25519 and X25519
//! keys, `01 p 02 q` for RSA keys. The attestation key is the key of slot F9, its certificate
//! the object `5FFF01`.
//!
//! Version 1 is the only one shipped; a later version must keep reading it.

use std::collections::BTreeMap;

use token_core::{Error, Result, Tag, Tlv, TlvBuilder, TlvIter};
use zeroize::Zeroizing;

use super::{KeySlot, Persistent, Secret, SimKey};
use crate::mgmt::ManagementKey;
use crate::types::{AlgorithmId, PinPolicy, TouchPolicy};

const MAGIC: &[u8] = b"tokenkit-piv-sim";
const FORMAT: u8 = 1;

fn secret(b: &mut TlvBuilder, t: u32, s: &Secret) {
    b.constructed(Tag::new(t), |b| {
        b.put(Tag::new(0x80), &*s.value);
        b.put(Tag::new(0x81), &[s.max]);
        b.put(Tag::new(0x82), &[s.left]);
        b.put(Tag::new(0x83), &[u8::from(s.is_default)]);
    });
}

/// The state as bytes (secrets included: the file is the card).
pub(crate) fn encode(st: &Persistent) -> Vec<u8> {
    let mut b = TlvBuilder::new();
    b.put(Tag::new(0xC0), &st.serial.to_be_bytes());
    b.put(Tag::new(0xC1), &st.version);
    secret(&mut b, 0xE2, &st.pin);
    secret(&mut b, 0xE3, &st.puk);
    b.constructed(Tag::new(0xE4), |b| {
        b.put(Tag::new(0x80), &[st.management.algorithm().0]);
        b.put(Tag::new(0x81), st.management.expose());
        b.put(Tag::new(0x82), &[u8::from(st.management_touch)]);
        b.put(Tag::new(0x83), &[u8::from(st.management_default)]);
    });
    for (slot, k) in &st.keys {
        b.constructed(Tag::new(0xE5), |b| {
            b.put(Tag::new(0x80), &[*slot]);
            b.put(Tag::new(0x81), &[k.key.algorithm().0]);
            b.put(Tag::new(0x82), k.key.secret());
            b.put(Tag::new(0x83), &[k.pin_policy.byte()]);
            b.put(Tag::new(0x84), &[k.touch_policy.byte()]);
            b.put(Tag::new(0x85), &[u8::from(k.generated)]);
        });
    }
    for (tag, content) in &st.objects {
        b.constructed(Tag::new(0xE6), |b| {
            b.put(Tag::new(0x80), &tag.to_be_bytes());
            b.put(Tag::new(0x81), content);
        });
    }
    let mut out = MAGIC.to_vec();
    out.push(FORMAT);
    out.extend_from_slice(&b.finish());
    out
}

fn bad(what: &'static str) -> Error {
    Error::corrupted(what)
}

/// The fields of a constructed entry, by their one-byte tag 80..8F.
fn fields<'a>(t: &Tlv<'a>) -> Result<[Option<&'a [u8]>; 16]> {
    let mut f = [None; 16];
    for item in t.children() {
        let item = item?;
        let i = item
            .tag
            .value()
            .checked_sub(0x80)
            .filter(|&i| i < 16)
            .ok_or_else(|| bad("simulator state: unknown field"))?;
        if let Some(slot) = f.get_mut(i as usize) {
            *slot = Some(item.value);
        }
    }
    Ok(f)
}

fn byte(v: Option<&[u8]>) -> Result<u8> {
    match v {
        Some([b]) => Ok(*b),
        _ => Err(bad("simulator state: field is not one byte")),
    }
}

fn read_secret(t: &Tlv<'_>) -> Result<Secret> {
    let f = fields(t)?;
    let value: [u8; 8] = f[0]
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad("simulator state: PIN is not 8 bytes"))?;
    Ok(Secret {
        value: Zeroizing::new(value),
        max: byte(f[1])?,
        left: byte(f[2])?,
        is_default: byte(f[3])? != 0,
    })
}

/// Reads a state written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Persistent> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a tokenkit PIV simulator state file"))?;
    let (&format, body) = body
        .split_first()
        .ok_or_else(|| bad("simulator state: no format version"))?;
    if format != FORMAT {
        return Err(bad("simulator state: unknown format version"));
    }
    let (mut serial, mut version, mut pin, mut puk, mut mgmt) = (None, None, None, None, None);
    let mut keys = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for t in TlvIter::new(body) {
        let t = t?;
        match t.tag.value() {
            0xC0 => {
                serial = Some(u32::from_be_bytes(
                    t.value
                        .try_into()
                        .map_err(|_| bad("simulator state: serial"))?,
                ))
            }
            0xC1 => {
                version = Some(
                    <[u8; 3]>::try_from(t.value).map_err(|_| bad("simulator state: version"))?,
                )
            }
            0xE2 => pin = Some(read_secret(&t)?),
            0xE3 => puk = Some(read_secret(&t)?),
            0xE4 => {
                let f = fields(&t)?;
                let key = ManagementKey::new(
                    AlgorithmId(byte(f[0])?),
                    f[1].ok_or_else(|| bad("simulator state: management key"))?,
                )?;
                mgmt = Some((key, byte(f[2])? != 0, byte(f[3])? != 0));
            }
            0xE5 => {
                let f = fields(&t)?;
                let slot = byte(f[0])?;
                let key = SimKey::from_secret(
                    AlgorithmId(byte(f[1])?),
                    f[2].ok_or_else(|| bad("simulator state: key"))?,
                )
                .map_err(|_| bad("simulator state: invalid key"))?;
                keys.insert(
                    slot,
                    KeySlot {
                        key,
                        pin_policy: PinPolicy::from_byte(byte(f[3])?)
                            .ok_or_else(|| bad("simulator state: PIN policy"))?,
                        touch_policy: TouchPolicy::from_byte(byte(f[4])?)
                            .ok_or_else(|| bad("simulator state: touch policy"))?,
                        generated: byte(f[5])? != 0,
                    },
                );
            }
            0xE6 => {
                let f = fields(&t)?;
                let tag = u32::from_be_bytes(
                    f[0].and_then(|v| v.try_into().ok())
                        .ok_or_else(|| bad("simulator state: object tag"))?,
                );
                objects.insert(tag, f[1].unwrap_or(&[]).to_vec());
            }
            _ => return Err(bad("simulator state: unknown entry")),
        }
    }
    let (management, management_touch, management_default) =
        mgmt.ok_or_else(|| bad("simulator state: no management key"))?;
    Ok(Persistent {
        serial: serial.ok_or_else(|| bad("simulator state: no serial"))?,
        version: version.ok_or_else(|| bad("simulator state: no version"))?,
        pin: pin.ok_or_else(|| bad("simulator state: no PIN"))?,
        puk: puk.ok_or_else(|| bad("simulator state: no PUK"))?,
        management,
        management_touch,
        management_default,
        keys,
        objects,
    })
}
