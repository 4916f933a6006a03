//! One token's items as the index keeps them: immutable once built, replaced whole (behind an
//! `Arc`) when the token's items change.
//!
//! Positions are stable for a shard's generation: an update appends new items and leaves a
//! tombstone where one went, so a persistent reference's position hint stays right for every
//! item that did not change. When tombstones outnumber items the shard is rebuilt compact under
//! a new generation, and old hints fall back to the lookup by name.

use std::collections::HashMap;
use std::ops::Range;

use token_core::{
    CertificateInfo, CertificateItem, Item, KeyItem, KeyType, KeyUsage, ObjectId, PublicKey,
    SubjectPublicKeyInfo, TokenId,
};

use crate::hash::name_hash;

/// "No partner": a key without a certificate, a certificate without a key.
pub(crate) const NONE: u32 = u32::MAX;

/// What a position holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Key = 0,
    Cert = 1,
    /// A tombstone: the item was deleted or changed after this generation began.
    Dead = 2,
}

/// The hot part of an item, 16 bytes: what a persistent reference's hint is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// [`name_hash`] of (token ID, object ID).
    pub(crate) name_hash: u64,
    /// For a certificate, the position of the key with its public key (making an identity);
    /// for a key, the position of the first such certificate.
    pub(crate) partner: u32,
    pub(crate) kind: Kind,
    pub(crate) usage: KeyUsage,
}

/// The 1-byte form of an entry that a persistent reference's hint is checked against, kept
/// in the slot table's chunks so that all of them (1 MB for a million items) stay in cache:
/// whether the position holds a live key, a live certificate, a certificate with a key (an
/// identity).
pub(crate) fn hint_flags(e: &Entry) -> u8 {
    match e.kind {
        Kind::Key => HINT_KEY,
        Kind::Cert if e.partner != NONE => HINT_CERT | HINT_IDENTITY,
        Kind::Cert => HINT_CERT,
        Kind::Dead => 0,
    }
}

/// Hint word flags.
pub(crate) const HINT_KEY: u8 = 1;
pub(crate) const HINT_CERT: u8 = 2;
pub(crate) const HINT_IDENTITY: u8 = 4;

/// What the keychain needs from a certificate, kept as positions in its DER where possible.
#[derive(Clone, Debug)]
pub(crate) struct CertMeta {
    serial: Range<u32>,
    issuer: Range<u32>,
    subject: Range<u32>,
    pub(crate) subject_cn: Option<Box<str>>,
    pub(crate) issuer_cn: Option<Box<str>>,
    /// SHA-1 of the public key in its raw form ([`PublicKey::key_id`]), as a key on the same
    /// token would have.
    pub(crate) key_id: Option<[u8; 20]>,
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn locate(hay: &[u8], needle: &[u8], from: usize) -> Option<Range<u32>> {
    let tail = hay.get(from..)?;
    let at = if needle.is_empty() {
        0
    } else {
        tail.windows(needle.len()).position(|w| w == needle)?
    };
    let start = u32::try_from(from + at).ok()?;
    let end = u32::try_from(from + at + needle.len()).ok()?;
    Some(start..end)
}

/// The key type an SPKI names, where we know it. [`PublicKey::key_id`] hashes only the raw
/// key, so an unknown algorithm still gets a key ID.
fn spki_key_type(spki: &SubjectPublicKeyInfo<'_>) -> KeyType {
    const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    match spki.algorithm_oid {
        SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY if spki.parameters == Some(P384) => KeyType::EcP384,
        SubjectPublicKeyInfo::OID_EC_PUBLIC_KEY => KeyType::EcP256,
        SubjectPublicKeyInfo::OID_ED25519 => KeyType::Ed25519,
        SubjectPublicKeyInfo::OID_X25519 => KeyType::X25519,
        // RSA: the SPKI's key is the PKCS#1 RSAPublicKey, the raw form; size is not needed.
        _ => KeyType::Rsa(0),
    }
}

impl CertMeta {
    /// Reads a certificate; `None` if it does not parse (it is still listed, without names).
    pub(crate) fn parse(der: &[u8]) -> Option<Self> {
        let info = CertificateInfo::parse(der).ok()?;
        // Each field is a slice of the DER, in this order (RFC 5280 §4.1).
        let serial = locate(der, info.serial(), 0)?;
        let issuer = locate(der, info.issuer(), serial.end as usize)?;
        let subject = locate(der, info.subject(), issuer.end as usize)?;
        let key_id = info.subject_public_key_info().ok().map(|spki| {
            PublicKey {
                key_type: spki_key_type(&spki),
                raw: spki.public_key.to_vec(),
            }
            .key_id()
        });
        Some(Self {
            serial,
            issuer,
            subject,
            subject_cn: info.subject_common_name().map(Into::into),
            issuer_cn: info.issuer_common_name().map(Into::into),
            key_id,
        })
    }

    fn slice<'a>(der: &'a [u8], r: &Range<u32>) -> &'a [u8] {
        der.get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    }

    /// The subject Name, DER.
    pub(crate) fn subject<'a>(&self, der: &'a [u8]) -> &'a [u8] {
        Self::slice(der, &self.subject)
    }

    /// The issuer Name, DER.
    pub(crate) fn issuer<'a>(&self, der: &'a [u8]) -> &'a [u8] {
        Self::slice(der, &self.issuer)
    }

    /// The serial number's value bytes.
    pub(crate) fn serial<'a>(&self, der: &'a [u8]) -> &'a [u8] {
        Self::slice(der, &self.serial)
    }
}

/// One position of a shard.
#[derive(Clone, Debug)]
pub(crate) enum Record {
    Key(KeyItem),
    Cert(CertificateItem, Option<Box<CertMeta>>),
    /// A tombstone, keeping the object ID it had.
    Dead(ObjectId),
}

impl Record {
    /// `None` for item kinds this index does not know (the enum is non-exhaustive).
    fn new(item: Item) -> Option<Self> {
        match item {
            Item::Key(k) => Some(Self::Key(k)),
            Item::Certificate(c) => {
                let meta = CertMeta::parse(&c.der).map(Box::new);
                Some(Self::Cert(c, meta))
            }
            _ => None,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Key(_) => Kind::Key,
            Self::Cert(..) => Kind::Cert,
            Self::Dead(_) => Kind::Dead,
        }
    }

    pub(crate) fn object_id(&self) -> &ObjectId {
        match self {
            Self::Key(k) => &k.object_id,
            Self::Cert(c, _) => &c.object_id,
            Self::Dead(o) => o,
        }
    }

    pub(crate) fn label(&self) -> &str {
        match self {
            Self::Key(k) => &k.label,
            Self::Cert(c, _) => &c.label,
            Self::Dead(_) => "",
        }
    }

    /// A key's key ID, or the key ID of a certificate's public key.
    pub(crate) fn key_id(&self) -> &[u8] {
        match self {
            Self::Key(k) => &k.key_id,
            Self::Cert(_, Some(m)) => m.key_id.as_ref().map_or(&[], |k| &k[..]),
            _ => &[],
        }
    }

    pub(crate) fn key(&self) -> Option<&KeyItem> {
        match self {
            Self::Key(k) => Some(k),
            _ => None,
        }
    }

    pub(crate) fn cert(&self) -> Option<(&CertificateItem, Option<&CertMeta>)> {
        match self {
            Self::Cert(c, m) => Some((c, m.as_deref())),
            _ => None,
        }
    }

    fn usage(&self) -> KeyUsage {
        match self {
            Self::Key(k) => k.usage,
            _ => KeyUsage::NONE,
        }
    }

    fn is_item(&self, item: &Item) -> bool {
        match (self, item) {
            (Self::Key(a), Item::Key(b)) => a == b,
            (Self::Cert(a, _), Item::Certificate(b)) => a == b,
            _ => false,
        }
    }

    /// The same item read again: keep its parsed certificate fields.
    fn kept(&self, item: Item) -> Option<Self> {
        match (self, item) {
            (_, Item::Key(k)) => Some(Self::Key(k)),
            (Self::Cert(_, meta), Item::Certificate(c)) => Some(Self::Cert(c, meta.clone())),
            (_, other) => Self::new(other),
        }
    }

    /// Heap bytes owned by the item itself (labels, DER, public keys, object IDs).
    pub(crate) fn payload_bytes(&self) -> usize {
        let oid = 2 * std::mem::size_of::<usize>() + self.object_id().as_bytes().len();
        oid + match self {
            Self::Key(k) => {
                k.label.capacity()
                    + k.key_id.capacity()
                    + k.public_key.as_ref().map_or(0, |p| p.raw.capacity())
            }
            Self::Cert(c, _) => c.label.capacity() + c.der.capacity(),
            Self::Dead(_) => 0,
        }
    }

    /// Heap bytes of what the index derived from the item.
    pub(crate) fn derived_bytes(&self) -> usize {
        match self {
            Self::Cert(_, Some(m)) => {
                std::mem::size_of::<CertMeta>()
                    + m.subject_cn.as_ref().map_or(0, |s| s.len())
                    + m.issuer_cn.as_ref().map_or(0, |s| s.len())
            }
            _ => 0,
        }
    }
}

fn kind_and_id(item: &Item) -> Option<(Kind, &ObjectId)> {
    match item {
        Item::Key(k) => Some((Kind::Key, &k.object_id)),
        Item::Certificate(c) => Some((Kind::Cert, &c.object_id)),
        _ => None,
    }
}

/// One token's items.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Unique to this build of the shard's positions (kept by updates that only append and
    /// tombstone).
    pub(crate) gen: u64,
    /// Its place in the slot table, for the whole time the token is present.
    pub(crate) slot: u32,
    pub(crate) token_id: TokenId,
    pub(crate) records: Vec<Record>,
    pub(crate) entries: Box<[Entry]>,
    /// Open addressing by name hash: position + 1, 0 for empty. Live positions only.
    table: Box<[u32]>,
    /// Live keys, certificates, and certificates with a key (identities), in position order.
    pub(crate) keys: Box<[u32]>,
    pub(crate) certs: Box<[u32]>,
    pub(crate) identities: Box<[u32]>,
    /// Postings this shard has in the key ID and attribute indexes.
    pub(crate) postings: usize,
}

/// A shard rebuilt from a token's new list of items.
pub(crate) struct Update {
    pub(crate) shard: Shard,
    /// Positions that were live and are now tombstones.
    pub(crate) removed: Vec<u32>,
    /// Positions appended.
    pub(crate) added: Vec<u32>,
}

fn pos(i: usize) -> u32 {
    // A token's items are counted in the thousands; 4 billion would not fit in memory.
    u32::try_from(i).unwrap_or(NONE)
}

impl Shard {
    /// A fresh shard.
    pub(crate) fn build(token_id: TokenId, slot: u32, gen: u64, items: Vec<Item>) -> Self {
        let records = items.into_iter().filter_map(Record::new).collect();
        Self::finish(token_id, slot, gen, records)
    }

    /// The shard for `items`, the token's whole new list: unchanged items keep their
    /// positions, changed or new ones are appended, the others become tombstones.
    pub(crate) fn update(old: &Shard, items: Vec<Item>) -> Update {
        let token = old.token_id.as_str();
        let mut records: Vec<Option<Record>> = vec![None; old.records.len()];
        let mut appended = Vec::new();
        for item in items {
            let Some((kind, oid)) = kind_and_id(&item) else {
                continue;
            };
            let h = name_hash(token.as_bytes(), oid.as_bytes());
            let found = old
                .find(kind, oid.as_bytes(), h)
                .map(|i| i as usize)
                .filter(|&i| records.get(i).is_some_and(Option::is_none));
            match found.and_then(|i| Some((i, old.records.get(i)?))) {
                Some((i, r)) if r.is_item(&item) => {
                    if let Some(slot) = records.get_mut(i) {
                        *slot = r.kept(item);
                    }
                }
                _ => appended.push(item),
            }
        }
        let mut removed = Vec::new();
        let mut records: Vec<Record> = records
            .into_iter()
            .zip(&old.records)
            .enumerate()
            .map(|(i, (new, old))| match new {
                Some(r) => r,
                None => {
                    if old.kind() != Kind::Dead {
                        removed.push(pos(i));
                    }
                    Record::Dead(old.object_id().clone())
                }
            })
            .collect();
        let mut added = Vec::new();
        for item in appended {
            if let Some(r) = Record::new(item) {
                added.push(pos(records.len()));
                records.push(r);
            }
        }
        Update {
            shard: Self::finish(old.token_id.clone(), old.slot, old.gen, records),
            removed,
            added,
        }
    }

    /// This shard without its tombstones, under a new generation.
    pub(crate) fn compacted(self, gen: u64) -> Self {
        let records = self
            .records
            .into_iter()
            .filter(|r| r.kind() != Kind::Dead)
            .collect();
        Self::finish(self.token_id, self.slot, gen, records)
    }

    fn finish(token_id: TokenId, slot: u32, gen: u64, records: Vec<Record>) -> Self {
        let token = token_id.as_str();
        let mut entries: Vec<Entry> = records
            .iter()
            .map(|r| Entry {
                name_hash: name_hash(token.as_bytes(), r.object_id().as_bytes()),
                partner: NONE,
                kind: r.kind(),
                usage: r.usage(),
            })
            .collect();

        // An identity is a certificate whose public key is that of a key on the same token.
        let mut key_by_id: HashMap<&[u8], u32> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Record::Key(k) = r {
                if !k.key_id.is_empty() {
                    key_by_id.entry(&k.key_id).or_insert(pos(i));
                }
            }
        }
        let (mut keys, mut certs, mut identities) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            match r {
                Record::Key(_) => keys.push(pos(i)),
                Record::Cert(_, meta) => {
                    certs.push(pos(i));
                    let key = meta
                        .as_ref()
                        .and_then(|m| m.key_id.as_ref())
                        .and_then(|id| key_by_id.get(&id[..]).copied());
                    if let Some(k) = key {
                        if let Some(e) = entries.get_mut(i) {
                            e.partner = k;
                        }
                        if let Some(e) = entries.get_mut(k as usize) {
                            if e.partner == NONE {
                                e.partner = pos(i);
                            }
                        }
                        identities.push(pos(i));
                    }
                }
                Record::Dead(_) => {}
            }
        }

        let live = keys.len() + certs.len();
        let size = (live * 2).next_power_of_two().max(4);
        let mask = size - 1;
        let mut table = vec![0u32; size];
        for &i in keys.iter().chain(&certs) {
            let Some(e) = entries.get(i as usize) else {
                continue;
            };
            let mut at = e.name_hash as usize & mask;
            while table.get(at).is_some_and(|&v| v != 0) {
                at = (at + 1) & mask;
            }
            if let Some(v) = table.get_mut(at) {
                *v = i + 1;
            }
        }

        Self {
            token_id,
            slot,
            gen,
            records,
            entries: entries.into(),
            table: table.into_boxed_slice(),
            keys: keys.into_boxed_slice(),
            certs: certs.into_boxed_slice(),
            identities: identities.into_boxed_slice(),
            postings: 0,
        }
    }

    /// The live position holding the item of `kind` named `oid` (whose name hash is `h`).
    pub(crate) fn find(&self, kind: Kind, oid: &[u8], h: u64) -> Option<u32> {
        let mask = self.table.len().checked_sub(1)?;
        let mut at = h as usize & mask;
        // The table is at most half full, so an empty cell ends every probe.
        loop {
            let i = self.table.get(at).copied()?.checked_sub(1)?;
            let e = self.entries.get(i as usize)?;
            if e.name_hash == h
                && e.kind == kind
                && self
                    .records
                    .get(i as usize)
                    .is_some_and(|r| r.object_id().as_bytes() == oid)
            {
                return Some(i);
            }
            at = (at + 1) & mask;
        }
    }

    /// Live items.
    pub(crate) fn live(&self) -> usize {
        self.keys.len() + self.certs.len()
    }

    /// Tombstones.
    pub(crate) fn dead(&self) -> usize {
        self.records.len() - self.live()
    }

    /// The record at a position.
    pub(crate) fn record(&self, i: u32) -> Option<&Record> {
        self.records.get(i as usize)
    }

    /// The entry at a position.
    pub(crate) fn entry(&self, i: u32) -> Option<&Entry> {
        self.entries.get(i as usize)
    }

    /// Bytes of the index's own structures for this shard (not the items' payload).
    pub(crate) fn index_bytes(&self) -> usize {
        use std::mem::size_of;
        2 * size_of::<usize>()
            + size_of::<Self>()
            + self.token_id.as_str().len()
            + self
                .records
                .iter()
                .map(Record::derived_bytes)
                .sum::<usize>()
            + self.entries.len() * size_of::<Entry>()
            + (self.table.len() + self.keys.len() + self.certs.len() + self.identities.len())
                * size_of::<u32>()
    }

    /// Bytes of the items themselves: their structs as the token reported them, and what
    /// they own.
    pub(crate) fn payload_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self
                .records
                .iter()
                .map(Record::payload_bytes)
                .sum::<usize>()
    }
}
