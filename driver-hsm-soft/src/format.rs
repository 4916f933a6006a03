//! The store file format, version 2 (version 1, which had no contents seal, is still read).
//!
//! ```text
//! offset  size  field
//! 0       8     magic 89 'T' 'K' 'S' 'O' 'F' 'T' 0A
//! 8       2     format version, big-endian (1)
//! 10      4     body length n, big-endian (at most MAX_BODY)
//! 14      n     body: BER-TLV data objects, in this order
//!                 80  token UUID (16)
//!                 81  label (UTF-8)
//!                 A2  KDF { 80 algorithm (01 = Argon2id v1.3), 81 memory KiB (4), 82 passes (4),
//!                           83 lanes (4) }
//!                 A3  user PIN { 80 salt (16), 81 wrapped data key (72), 82 tries left (1),
//!                                83 tries allowed (1) }
//!                 A4  PUK, as A3
//!                 A5* key { 80 ID (8), 81 label, 82 type (01 P-256, 02 Ed25519), 83 usage (1),
//!                           84 public key, 85 sealed private key (72) }
//!                 A6* certificate { 80 ID (8), 81 label, 82 DER, [83 key ID (8)] }
//!                 87  contents seal (72): SHA-256 of the contents (UUID, label, every key
//!                     and certificate record; not the PIN slots, whose counters change
//!                     without the PIN), sealed under the data key. Version 2; mandatory there.
//! 14+n    32    SHA-256 of bytes 0 .. 14+n
//! ```
//!
//! The checksum makes truncation and bit flips `CorruptedData` before anything is read; the
//! AEAD tags (see `crypto.rs`) make tampering with a key record fail when the key is used; the
//! contents seal makes any other change to the records (a swapped certificate, a renamed or
//! deleted record) `CorruptedData` at the next login, since only the data key can make it.
//! Every length comes from the input and is checked against what is left of it, and every
//! field has a cap, so a hostile file cannot make the reader allocate more than it holds.

use sha2::{Digest, Sha256};
use token_core::{Error, KeyType, KeyUsage, Result, Tag, Tlv, TlvBuilder, TlvIter};

use crate::crypto::{KdfParams, SEALED_LEN};

/// The first eight bytes of every store file (PNG-style: a high byte, then a newline, so text
/// mode transfers and 7-bit channels damage it visibly).
pub(crate) const MAGIC: [u8; 8] = *b"\x89TKSOFT\n";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 2;
const HEADER_LEN: usize = 14;
const CHECKSUM_LEN: usize = 32;
/// The largest body accepted: far above any real token (a certificate is a few KiB).
pub(crate) const MAX_BODY: usize = 8 << 20;
/// The largest file accepted.
pub(crate) const MAX_FILE: usize = HEADER_LEN + MAX_BODY + CHECKSUM_LEN;
/// Longest label, in bytes.
pub(crate) const MAX_LABEL: usize = 255;
/// Largest certificate, in bytes.
pub(crate) const MAX_CERT: usize = 64 << 10;
/// Most keys plus certificates one token holds.
pub(crate) const MAX_RECORDS: usize = 1024;

const T_UUID: Tag = Tag::new(0x80);
const T_LABEL: Tag = Tag::new(0x81);
const T_KDF: Tag = Tag::new(0xA2);
const T_USER: Tag = Tag::new(0xA3);
const T_PUK: Tag = Tag::new(0xA4);
const T_KEY: Tag = Tag::new(0xA5);
const T_CERT: Tag = Tag::new(0xA6);
const T_SEAL: Tag = Tag::new(0x87);

// Inside a record: context tags 80.. numbered per record type.
const F0: Tag = Tag::new(0x80);
const F1: Tag = Tag::new(0x81);
const F2: Tag = Tag::new(0x82);
const F3: Tag = Tag::new(0x83);
const F4: Tag = Tag::new(0x84);
const F5: Tag = Tag::new(0x85);

const KDF_ARGON2ID_13: u8 = 1;

/// A record's ID inside the token: the object ID the keychain sees.
pub(crate) type RecordId = [u8; 8];

/// One PIN (user PIN or PUK): what wraps the data key, and its retry counter.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PinSlot {
    pub salt: [u8; 16],
    pub wrapped: [u8; SEALED_LEN],
    pub tries_left: u8,
    pub max_tries: u8,
}

/// A private key and its public parts.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub id: RecordId,
    pub label: String,
    pub key_type: KeyType,
    pub usage: KeyUsage,
    /// As `PublicKey::raw`: `04||X||Y` for P-256, 32 bytes for Ed25519.
    pub public: Vec<u8>,
    /// The private key (32 bytes: scalar or seed) sealed under the data key.
    pub sealed: [u8; SEALED_LEN],
}

/// A certificate, optionally tied to a key record.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CertRecord {
    pub id: RecordId,
    pub label: String,
    pub der: Vec<u8>,
    pub key: Option<RecordId>,
}

/// A whole store file, decoded.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoreData {
    pub uuid: [u8; 16],
    pub label: String,
    pub kdf: KdfParams,
    pub user: PinSlot,
    pub puk: PinSlot,
    pub keys: Vec<KeyRecord>,
    pub certs: Vec<CertRecord>,
    /// The contents seal (format 2); `None` only in a version 1 file, until the next login
    /// seals it.
    pub seal: Option<[u8; SEALED_LEN]>,
}

impl StoreData {
    /// True when `id` names no record of either class.
    pub fn id_free(&self, id: &RecordId) -> bool {
        !self.keys.iter().any(|k| &k.id == id) && !self.certs.iter().any(|c| &c.id == id)
    }

    pub fn key(&self, id: &[u8]) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.id.as_slice() == id)
    }
}

fn key_type_code(t: KeyType) -> Result<u8> {
    match t {
        KeyType::EcP256 => Ok(1),
        KeyType::Ed25519 => Ok(2),
        _ => Err(Error::bad_parameter(
            "the soft token holds P-256 and Ed25519 keys only",
        )),
    }
}

fn key_type_from(code: u8) -> Result<KeyType> {
    match code {
        1 => Ok(KeyType::EcP256),
        2 => Ok(KeyType::Ed25519),
        _ => Err(Error::corrupted("store: unknown key type")),
    }
}

/// The public length a key type must have.
pub(crate) fn public_len(t: KeyType) -> usize {
    match t {
        KeyType::EcP256 => 65,
        _ => 32,
    }
}

/// The public fields of a key record (80..84), as encoded in the file. The AEAD binds them.
pub(crate) fn key_public_part(k: &KeyRecord) -> Result<Vec<u8>> {
    let mut b = TlvBuilder::new();
    b.put(F0, &k.id)
        .put(F1, k.label.as_bytes())
        .put(F2, &[key_type_code(k.key_type)?])
        .put(F3, &[k.usage.bits()])
        .put(F4, &k.public);
    Ok(b.finish())
}

fn put_pin(b: &mut TlvBuilder, tag: Tag, p: &PinSlot) {
    b.constructed(tag, |b| {
        b.put(F0, &p.salt)
            .put(F1, &p.wrapped)
            .put(F2, &[p.tries_left])
            .put(F3, &[p.max_tries]);
    });
}

/// Encodes a store: header, body, checksum.
pub(crate) fn encode(d: &StoreData) -> Result<Vec<u8>> {
    let mut b = TlvBuilder::new();
    b.put(T_UUID, &d.uuid).put(T_LABEL, d.label.as_bytes());
    b.constructed(T_KDF, |b| {
        b.put(F0, &[KDF_ARGON2ID_13])
            .put(F1, &d.kdf.m_cost_kib.to_be_bytes())
            .put(F2, &d.kdf.t_cost.to_be_bytes())
            .put(F3, &d.kdf.p_cost.to_be_bytes());
    });
    put_pin(&mut b, T_USER, &d.user);
    put_pin(&mut b, T_PUK, &d.puk);
    put_records(&mut b, d)?;
    if let Some(seal) = &d.seal {
        b.put(T_SEAL, seal);
    }
    let body = b.finish();
    if body.len() > MAX_BODY {
        return Err(Error::bad_parameter(
            "the token's contents exceed the store's size limit",
        ));
    }
    let body_len = u32::try_from(body.len())
        .map_err(|_| Error::bad_parameter("the token's contents exceed the store's size limit"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    // A version 1 file read without its PIN stays version 1 until a login seals it.
    let version: u16 = if d.seal.is_some() { FORMAT_VERSION } else { 1 };
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&body);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Writes the key and certificate records.
fn put_records(b: &mut TlvBuilder, d: &StoreData) -> Result<()> {
    for k in &d.keys {
        let mut inner = key_public_part(k)?;
        let mut sealed = TlvBuilder::new();
        sealed.put(F5, &k.sealed);
        inner.extend_from_slice(sealed.as_bytes());
        b.put(T_KEY, &inner);
    }
    for c in &d.certs {
        b.constructed(T_CERT, |b| {
            b.put(F0, &c.id).put(F1, c.label.as_bytes()).put(F2, &c.der);
            if let Some(k) = &c.key {
                b.put(F3, k);
            }
        });
    }
    Ok(())
}

/// What the contents seal covers: the UUID, the label and every record, in file order. The
/// PIN slots are left out: their counters change without the PIN, and a swapped wrapped key
/// cannot be opened anyway (it is bound to the UUID).
pub(crate) fn seal_input(d: &StoreData) -> Result<Vec<u8>> {
    let mut b = TlvBuilder::new();
    b.put(T_UUID, &d.uuid).put(T_LABEL, d.label.as_bytes());
    put_records(&mut b, d)?;
    let mut out = b"tokenkit soft token v2: contents".to_vec();
    out.extend_from_slice(&Sha256::digest(b.as_bytes()));
    Ok(out)
}

/// Checks the header and checksum; returns the format version and the body.
pub(crate) fn unwrap_body(file: &[u8]) -> Result<(u16, &[u8])> {
    let magic = file
        .get(..MAGIC.len())
        .ok_or_else(|| Error::corrupted("store: file too short for its header"))?;
    if magic != MAGIC {
        return Err(Error::corrupted("store: not a tokenkit soft token file"));
    }
    let version = file
        .get(8..10)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .ok_or_else(|| Error::corrupted("store: file too short for its header"))?;
    if version == 0 {
        return Err(Error::corrupted("store: format version 0 does not exist"));
    }
    if version > FORMAT_VERSION {
        return Err(Error::corrupted(format!(
            "store: written in format version {version} by a newer tokenkit; this build reads \
             up to version {FORMAT_VERSION}"
        )));
    }
    let len = file
        .get(10..HEADER_LEN)
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        .ok_or_else(|| Error::corrupted("store: file too short for its header"))?;
    let len = usize::try_from(len).map_err(|_| Error::corrupted("store: body too large"))?;
    if len > MAX_BODY {
        return Err(Error::corrupted(
            "store: body length beyond the format's limit",
        ));
    }
    if file.len() != HEADER_LEN + len + CHECKSUM_LEN {
        return Err(Error::corrupted(
            "store: file length does not match its header (truncated or extended)",
        ));
    }
    let (signed, sum) = file.split_at(HEADER_LEN + len);
    if Sha256::digest(signed).as_slice() != sum {
        return Err(Error::corrupted(
            "store: checksum mismatch (the file was damaged)",
        ));
    }
    let body = signed.get(HEADER_LEN..).unwrap_or(&[]);
    Ok((version, body))
}

/// Reads the next object of a sequence, which must carry `tag`.
fn expect<'a>(it: &mut TlvIter<'a>, tag: Tag, what: &'static str) -> Result<Tlv<'a>> {
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

fn fixed<const N: usize>(t: Tlv<'_>, what: &'static str) -> Result<[u8; N]> {
    t.value.try_into().map_err(|_| Error::corrupted(what))
}

fn byte(t: Tlv<'_>, what: &'static str) -> Result<u8> {
    Ok(fixed::<1>(t, what)?[0])
}

fn u32_of(t: Tlv<'_>, what: &'static str) -> Result<u32> {
    Ok(u32::from_be_bytes(fixed::<4>(t, what)?))
}

fn label(t: Tlv<'_>) -> Result<String> {
    if t.value.len() > MAX_LABEL {
        return Err(Error::corrupted("store: label too long"));
    }
    String::from_utf8(t.value.to_vec()).map_err(|_| Error::corrupted("store: label is not UTF-8"))
}

fn pin_slot(t: Tlv<'_>) -> Result<PinSlot> {
    const BAD: &str = "store: malformed PIN record";
    let mut it = t.children();
    let salt = fixed(expect(&mut it, F0, BAD)?, BAD)?;
    let wrapped = fixed(expect(&mut it, F1, BAD)?, BAD)?;
    let tries_left = byte(expect(&mut it, F2, BAD)?, BAD)?;
    let max_tries = byte(expect(&mut it, F3, BAD)?, BAD)?;
    end(&mut it, BAD)?;
    if max_tries == 0 || tries_left > max_tries {
        return Err(Error::corrupted("store: PIN retry counter out of range"));
    }
    Ok(PinSlot {
        salt,
        wrapped,
        tries_left,
        max_tries,
    })
}

fn key_record(t: Tlv<'_>) -> Result<KeyRecord> {
    const BAD: &str = "store: malformed key record";
    let mut it = t.children();
    let id = fixed(expect(&mut it, F0, BAD)?, BAD)?;
    let label = label(expect(&mut it, F1, BAD)?)?;
    let key_type = key_type_from(byte(expect(&mut it, F2, BAD)?, BAD)?)?;
    let usage = KeyUsage::from_bits(byte(expect(&mut it, F3, BAD)?, BAD)?);
    let public = expect(&mut it, F4, BAD)?.value;
    let sealed = fixed(expect(&mut it, F5, BAD)?, BAD)?;
    end(&mut it, BAD)?;
    if public.len() != public_len(key_type) {
        return Err(Error::corrupted("store: public key of the wrong length"));
    }
    if usage.is_empty() || !key_type.possible_usage().contains(usage) {
        return Err(Error::corrupted("store: key usage impossible for its type"));
    }
    Ok(KeyRecord {
        id,
        label,
        key_type,
        usage,
        public: public.to_vec(),
        sealed,
    })
}

fn cert_record(t: Tlv<'_>) -> Result<CertRecord> {
    const BAD: &str = "store: malformed certificate record";
    let mut it = t.children();
    let id = fixed(expect(&mut it, F0, BAD)?, BAD)?;
    let label = label(expect(&mut it, F1, BAD)?)?;
    let der = expect(&mut it, F2, BAD)?.value;
    if der.len() > MAX_CERT {
        return Err(Error::corrupted("store: certificate too large"));
    }
    let key = match it.next() {
        None => None,
        Some(Ok(k)) if k.tag == F3 => Some(fixed(k, BAD)?),
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) => return Err(Error::corrupted(BAD)),
    };
    end(&mut it, BAD)?;
    Ok(CertRecord {
        id,
        label,
        der: der.to_vec(),
        key,
    })
}

/// Decodes a whole store file.
///
/// # Errors
/// `CorruptedData` for anything but a well-formed file of a version this build reads.
pub(crate) fn decode(file: &[u8]) -> Result<StoreData> {
    let (version, body) = unwrap_body(file)?;
    const BAD: &str = "store: malformed header fields";
    let mut it = TlvIter::new(body);
    let uuid = fixed(expect(&mut it, T_UUID, BAD)?, BAD)?;
    let label = label(expect(&mut it, T_LABEL, BAD)?)?;
    let kdf = {
        let t = expect(&mut it, T_KDF, BAD)?;
        let mut k = t.children();
        const KBAD: &str = "store: malformed KDF parameters";
        if byte(expect(&mut k, F0, KBAD)?, KBAD)? != KDF_ARGON2ID_13 {
            return Err(Error::corrupted("store: unknown key derivation function"));
        }
        let m = u32_of(expect(&mut k, F1, KBAD)?, KBAD)?;
        let t = u32_of(expect(&mut k, F2, KBAD)?, KBAD)?;
        let p = u32_of(expect(&mut k, F3, KBAD)?, KBAD)?;
        end(&mut k, KBAD)?;
        KdfParams::checked(m, t, p)
            .map_err(|_| Error::corrupted("store: KDF parameters out of range"))?
    };
    let user = pin_slot(expect(&mut it, T_USER, BAD)?)?;
    let puk = pin_slot(expect(&mut it, T_PUK, BAD)?)?;
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    let mut ids: Vec<RecordId> = Vec::new();
    let mut seal = None;
    for item in it {
        let t = item?;
        if seal.is_some() {
            return Err(Error::corrupted("store: data after the contents seal"));
        }
        if t.tag == T_SEAL {
            seal = Some(fixed(t, "store: malformed contents seal")?);
            continue;
        }
        if keys.len() + certs.len() >= MAX_RECORDS {
            return Err(Error::corrupted("store: too many records"));
        }
        let id = if t.tag == T_KEY {
            let k = key_record(t)?;
            let id = k.id;
            keys.push(k);
            id
        } else if t.tag == T_CERT {
            let c = cert_record(t)?;
            let id = c.id;
            certs.push(c);
            id
        } else {
            return Err(Error::corrupted("store: unknown record"));
        };
        if ids.contains(&id) {
            return Err(Error::corrupted("store: two records share an ID"));
        }
        ids.push(id);
    }
    if version >= 2 && seal.is_none() {
        return Err(Error::corrupted("store: the contents seal is missing"));
    }
    Ok(StoreData {
        uuid,
        label,
        kdf,
        user,
        puk,
        keys,
        certs,
        seal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoreData {
        let slot = |n| PinSlot {
            salt: [n; 16],
            wrapped: [n; SEALED_LEN],
            tries_left: 2,
            max_tries: 3,
        };
        StoreData {
            uuid: [7; 16],
            label: "work".into(),
            kdf: KdfParams::insecure_fast(),
            user: slot(1),
            puk: slot(2),
            keys: vec![KeyRecord {
                id: [1; 8],
                label: "sign".into(),
                key_type: KeyType::EcP256,
                usage: KeyUsage::SIGN | KeyUsage::DERIVE,
                public: vec![4; 65],
                sealed: [9; SEALED_LEN],
            }],
            certs: vec![CertRecord {
                id: [2; 8],
                label: "cert".into(),
                der: vec![0x30, 0],
                key: Some([1; 8]),
            }],
            seal: Some([5; SEALED_LEN]),
        }
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let bytes = encode(&d).unwrap();
        assert!(decode(&bytes).unwrap() == d);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_corrupted_data() {
        let bytes = encode(&sample()).unwrap();
        for n in 0..bytes.len() {
            let e = decode(&bytes[..n]).err().unwrap();
            assert_eq!(e.code(), token_core::ErrorCode::CorruptedData, "{n}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let e = decode(&b).err().unwrap();
                assert_eq!(e.code(), token_core::ErrorCode::CorruptedData, "{i}/{bit}");
            }
        }
    }

    #[test]
    fn version_2_needs_its_seal_and_an_unsealed_store_stays_version_1() {
        let mut unsealed = sample();
        unsealed.seal = None;
        let bytes = encode(&unsealed).unwrap();
        assert_eq!(u16::from_be_bytes([bytes[8], bytes[9]]), 1);
        assert!(decode(&bytes).unwrap() == unsealed);
        // The same body claiming version 2 (checksum redone) is refused: the seal is missing.
        let mut v2 = bytes.clone();
        v2[9] = 2;
        let n = v2.len() - 32;
        let sum = Sha256::digest(&v2[..n]);
        v2[n..].copy_from_slice(&sum);
        let e = decode(&v2).err().unwrap();
        assert!(e.context_str().contains("seal"), "{e}");
        assert_eq!(
            u16::from_be_bytes([encode(&sample()).unwrap()[8], encode(&sample()).unwrap()[9]]),
            2
        );
    }

    #[test]
    fn newer_versions_are_refused() {
        let mut bytes = encode(&sample()).unwrap();
        let newer = (FORMAT_VERSION + 1).to_be_bytes();
        bytes[8] = newer[0];
        bytes[9] = newer[1];
        let e = decode(&bytes).err().unwrap();
        assert!(e.context_str().contains("newer"), "{e}");
    }
}
