//! The simulator's persistent state (what a real key keeps in flash), its file format, and
//! the credential IDs.
//!
//! # Credential IDs
//!
//! Every credential's private key is derived from the device's 32-byte master secret, so
//! non-discoverable credentials need no storage at all (as on many real keys):
//!
//! ```text
//! id   = 01 ‖ flags ‖ nonce(32) ‖ tag(16)                       (50 bytes)
//! flags: bit 7 = discoverable, bit 6 = hmac-secret, bits 0-1 = credProtect level
//! tag  = HMAC-SHA-256(master, "tokenkit-sim-cred" ‖ 01 ‖ flags ‖ nonce ‖ rpIdHash)[..16]
//! key  = HMAC-SHA-256(master, "tokenkit-sim-key" ‖ nonce ‖ rpIdHash)   (a P-256 scalar)
//! ```
//!
//! The hmac-secret extension's CredRandomWithUV and CredRandomWithoutUV are derived the same
//! way: `HMAC-SHA-256(master, "tokenkit-sim-hmac" ‖ 01 or 00 ‖ id)`.
//!
//! An ID is only accepted for the RP it was made for (the tag covers the RP ID hash), and a
//! discoverable credential's ID only while its entry (user, RP name, large-blob key) is in the
//! table, so deleting a discoverable credential really ends it. A reset makes a new master
//! secret, which invalidates every ID ever issued.
//!
//! # State file
//!
//! One CBOR map, written atomically (a temporary file, then a rename) after every command
//! that changed it:
//!
//! ```text
//! { 1: "tokenkit-fido2-sim", 2: 1 (format), 3: master, 4: pinHash (absent: no PIN),
//!   5: PIN length in code points, 6: pinRetries, 7: minPINLength, 8: forcePINChange,
//!   9: alwaysUv, 10: signCount, 11: serialized large-blob array, 12: [credential, ...],
//!   13: next credential serial }
//! credential = { 1: id, 2: rpId, 3: rpName?, 4: userId, 5: userName?, 6: displayName?,
//!                7: credProtect, 8: largeBlobKey?, 9: serial }
//! ```
//!
//! The file holds the master secret and the PIN's hash: it *is* the authenticator.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use token_core::{Error, Result};
use zeroize::Zeroizing;

use crate::cbor::{self, Value};

/// PIN retries of a fresh authenticator (and after a correct PIN).
pub(crate) const MAX_PIN_RETRIES: u8 = 8;
/// The default minimum PIN length, in code points.
pub(crate) const DEFAULT_MIN_PIN_LENGTH: u8 = 4;
/// Credential ID length.
pub(crate) const CRED_ID_LEN: usize = 50;
const CRED_ID_VERSION: u8 = 1;
const MAGIC: &str = "tokenkit-fido2-sim";
const FORMAT: u64 = 1;

/// A discoverable credential's table entry.
#[derive(Clone)]
pub(crate) struct Resident {
    pub id: Vec<u8>,
    pub rp_id: String,
    pub rp_name: Option<String>,
    pub user_id: Vec<u8>,
    pub user_name: Option<String>,
    pub display_name: Option<String>,
    pub cred_protect: u8,
    pub large_blob_key: Option<Zeroizing<[u8; 32]>>,
    /// Creation order (newest has the largest).
    pub serial: u64,
}

/// The PIN as stored: its hash and its length.
#[derive(Clone)]
pub(crate) struct StoredPin {
    pub hash: Zeroizing<[u8; 16]>,
    pub code_points: u8,
}

/// Everything that survives a power cycle.
#[derive(Clone)]
pub(crate) struct Persistent {
    pub master: Zeroizing<[u8; 32]>,
    pub pin: Option<StoredPin>,
    pub pin_retries: u8,
    pub min_pin_length: u8,
    pub force_pin_change: bool,
    pub always_uv: bool,
    pub sign_count: u32,
    pub large_blob: Vec<u8>,
    pub residents: Vec<Resident>,
    pub next_serial: u64,
}

/// The serialized large-blob array of a fresh authenticator: an empty CBOR array and the
/// first 16 bytes of its SHA-256.
pub(crate) fn initial_large_blob() -> Vec<u8> {
    let mut v = vec![0x80];
    v.extend_from_slice(&Sha256::digest([0x80u8])[..16]);
    v
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| Error::communication("the system random source failed"))?;
    Ok(b)
}

impl Persistent {
    /// A factory-fresh authenticator.
    pub fn fresh() -> Result<Self> {
        Ok(Self {
            master: Zeroizing::new(random()?),
            pin: None,
            pin_retries: MAX_PIN_RETRIES,
            min_pin_length: DEFAULT_MIN_PIN_LENGTH,
            force_pin_change: false,
            always_uv: false,
            sign_count: 0,
            large_blob: initial_large_blob(),
            residents: Vec::new(),
            next_serial: 1,
        })
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let opt_text = |t: &Option<String>| t.as_ref().map(|s| Value::Text(s.clone()));
        let creds = self
            .residents
            .iter()
            .map(|r| {
                let mut m = vec![
                    (cbor::int(1), Value::Bytes(r.id.clone())),
                    (cbor::int(2), Value::Text(r.rp_id.clone())),
                    (cbor::int(4), Value::Bytes(r.user_id.clone())),
                    (cbor::int(7), cbor::int(i64::from(r.cred_protect))),
                    (cbor::int(9), Value::Integer(r.serial.into())),
                ];
                for (k, v) in [
                    (3, opt_text(&r.rp_name)),
                    (5, opt_text(&r.user_name)),
                    (6, opt_text(&r.display_name)),
                    (
                        8,
                        r.large_blob_key.as_ref().map(|k| Value::Bytes(k.to_vec())),
                    ),
                ] {
                    if let Some(v) = v {
                        m.push((cbor::int(k), v));
                    }
                }
                Value::Map(m)
            })
            .collect();
        let mut m = vec![
            (cbor::int(1), Value::Text(MAGIC.into())),
            (cbor::int(2), Value::Integer(FORMAT.into())),
            (cbor::int(3), Value::Bytes(self.master.to_vec())),
            (cbor::int(6), cbor::int(i64::from(self.pin_retries))),
            (cbor::int(7), cbor::int(i64::from(self.min_pin_length))),
            (cbor::int(8), Value::Bool(self.force_pin_change)),
            (cbor::int(9), Value::Bool(self.always_uv)),
            (cbor::int(10), cbor::int(i64::from(self.sign_count))),
            (cbor::int(11), Value::Bytes(self.large_blob.clone())),
            (cbor::int(12), Value::Array(creds)),
            (cbor::int(13), Value::Integer(self.next_serial.into())),
        ];
        if let Some(pin) = &self.pin {
            m.push((cbor::int(4), Value::Bytes(pin.hash.to_vec())));
            m.push((cbor::int(5), cbor::int(i64::from(pin.code_points))));
        }
        let value = Value::Map(m);
        let out = Zeroizing::new(cbor::encode(&value));
        wipe(value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::corrupted(format!("FIDO2 simulator state file: {what}"));
        let value = cbor::decode(bytes).map_err(|_| bad("not CBOR"))?;
        let m = cbor::as_map(&value).map_err(|_| bad("not a map"))?;
        if cbor::text(m, 1) != Some(MAGIC) {
            return Err(bad("not a tokenkit FIDO2 simulator state"));
        }
        if cbor::uint(m, 2) != Some(FORMAT) {
            return Err(bad("unknown format version"));
        }
        let small = |k: i64| -> Result<u8> {
            cbor::uint(m, k)
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(|| bad("missing field"))
        };
        let flag = |k: i64| cbor::boolean(m, k).ok_or_else(|| bad("missing flag"));
        let master: [u8; 32] = cbor::bytes(m, 3)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("master secret"))?;
        let pin = match cbor::bytes(m, 4) {
            Some(h) => Some(StoredPin {
                hash: Zeroizing::new(h.try_into().map_err(|_| bad("PIN hash"))?),
                code_points: small(5)?,
            }),
            None => None,
        };
        let mut residents = Vec::new();
        for c in cbor::array(m, 12).ok_or_else(|| bad("credentials"))? {
            let c = cbor::as_map(c).map_err(|_| bad("credential"))?;
            let text = |k| cbor::text(c, k).map(str::to_owned);
            residents.push(Resident {
                id: cbor::bytes(c, 1)
                    .ok_or_else(|| bad("credential id"))?
                    .to_vec(),
                rp_id: text(2).ok_or_else(|| bad("credential rpId"))?,
                rp_name: text(3),
                user_id: cbor::bytes(c, 4)
                    .ok_or_else(|| bad("credential user id"))?
                    .to_vec(),
                user_name: text(5),
                display_name: text(6),
                cred_protect: cbor::uint(c, 7)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| bad("credProtect"))?,
                large_blob_key: match cbor::bytes(c, 8) {
                    Some(k) => Some(Zeroizing::new(
                        k.try_into().map_err(|_| bad("largeBlobKey"))?,
                    )),
                    None => None,
                },
                serial: cbor::uint(c, 9).ok_or_else(|| bad("credential serial"))?,
            });
        }
        let st = Self {
            master: Zeroizing::new(master),
            pin,
            pin_retries: small(6)?.min(MAX_PIN_RETRIES),
            min_pin_length: small(7)?,
            force_pin_change: flag(8)?,
            always_uv: flag(9)?,
            sign_count: cbor::uint(m, 10)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("signCount"))?,
            large_blob: cbor::bytes(m, 11)
                .ok_or_else(|| bad("large blob"))?
                .to_vec(),
            residents,
            next_serial: cbor::uint(m, 13).ok_or_else(|| bad("serial"))?,
        };
        wipe(value);
        Ok(st)
    }

    /// Writes the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.encode();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Zeroizes the byte strings of a CBOR value that held secrets.
fn wipe(value: Value) {
    use zeroize::Zeroize;
    match value {
        Value::Bytes(mut b) => b.zeroize(),
        Value::Map(entries) => {
            for (k, v) in entries {
                wipe(k);
                wipe(v);
            }
        }
        Value::Array(items) => items.into_iter().for_each(wipe),
        _ => {}
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    if let Ok(mut mac) = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// A credential's private key (a P-256 scalar), zeroized on drop.
pub(crate) struct CredKey(Zeroizing<[u8; 32]>);

impl CredKey {
    fn secret(&self) -> Option<p256::SecretKey> {
        p256::SecretKey::from_slice(self.0.as_ref()).ok()
    }

    /// The public key's coordinates.
    pub fn public_xy(&self) -> Option<([u8; 32], [u8; 32])> {
        let point = self.secret()?.public_key().to_sec1_bytes();
        if point.len() != 65 {
            return None;
        }
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&point[1..33]);
        y.copy_from_slice(&point[33..]);
        Some((x, y))
    }

    /// The COSE_Key of the public key: ES256 on P-256.
    pub fn cose_public(&self) -> Option<Value> {
        let (x, y) = self.public_xy()?;
        Some(Value::Map(vec![
            (cbor::int(1), cbor::int(2)),
            (cbor::int(3), cbor::int(-7)),
            (cbor::int(-1), cbor::int(1)),
            (cbor::int(-2), Value::Bytes(x.to_vec())),
            (cbor::int(-3), Value::Bytes(y.to_vec())),
        ]))
    }

    /// An ES256 signature (DER) over `data`.
    pub fn sign(&self, data: &[u8]) -> Option<Vec<u8>> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let sk = p256::ecdsa::SigningKey::from_slice(self.0.as_ref()).ok()?;
        let digest = Sha256::digest(data);
        let sig: p256::ecdsa::DerSignature = sk.sign_prehash(&digest).ok()?;
        Some(sig.as_bytes().to_vec())
    }
}

/// What a valid credential ID says about itself.
pub(crate) struct OpenedId {
    pub discoverable: bool,
    pub hmac_secret: bool,
    pub cred_protect: u8,
    pub key: CredKey,
}

fn derive_key(master: &[u8; 32], nonce: &[u8], rp_id_hash: &[u8; 32]) -> CredKey {
    CredKey(hmac(master, &[b"tokenkit-sim-key", nonce, rp_id_hash]))
}

fn tag(master: &[u8; 32], head: &[u8], nonce: &[u8], rp_id_hash: &[u8; 32]) -> [u8; 16] {
    let full = hmac(master, &[b"tokenkit-sim-cred", head, nonce, rp_id_hash]);
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

/// A new credential ID and its key.
pub(crate) fn new_credential(
    master: &[u8; 32],
    rp_id_hash: &[u8; 32],
    discoverable: bool,
    hmac_secret: bool,
    cred_protect: u8,
) -> Result<(Vec<u8>, CredKey)> {
    loop {
        let nonce: [u8; 32] = random()?;
        let key = derive_key(master, &nonce, rp_id_hash);
        if key.secret().is_none() {
            // Not a valid scalar (probability about 2^-32): pick another nonce.
            continue;
        }
        let flags = (cred_protect & 0x03)
            | if discoverable { 0x80 } else { 0 }
            | if hmac_secret { 0x40 } else { 0 };
        let head = [CRED_ID_VERSION, flags];
        let mut id = head.to_vec();
        id.extend_from_slice(&nonce);
        id.extend_from_slice(&tag(master, &head, &nonce, rp_id_hash));
        return Ok((id, key));
    }
}

/// Checks a credential ID against the master secret and the RP; its key if it is ours.
pub(crate) fn open_credential(
    master: &[u8; 32],
    rp_id_hash: &[u8; 32],
    id: &[u8],
) -> Option<OpenedId> {
    if id.len() != CRED_ID_LEN || id[0] != CRED_ID_VERSION {
        return None;
    }
    let (head, rest) = id.split_at(2);
    let (nonce, t) = rest.split_at(32);
    if !crate::pin_protocol::ct_eq(&tag(master, head, nonce, rp_id_hash), t) {
        return None;
    }
    let key = derive_key(master, nonce, rp_id_hash);
    key.secret()?;
    Some(OpenedId {
        discoverable: head[1] & 0x80 != 0,
        hmac_secret: head[1] & 0x40 != 0,
        cred_protect: (head[1] & 0x03).max(1),
        key,
    })
}

/// The hmac-secret extension's CredRandom of a credential, with or without UV.
pub(crate) fn cred_random(master: &[u8; 32], id: &[u8], uv: bool) -> Zeroizing<[u8; 32]> {
    hmac(master, &[b"tokenkit-sim-hmac", &[u8::from(uv)], id])
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
