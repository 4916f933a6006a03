//! Item references and owned attributes.

use core::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use token_core::{
    block_on, CertificateItem, Hub, ItemClass, KeyItem, KeyType, KeyUsage, ObjectId, Result,
    TokenId, TokenSession,
};

use crate::persistent;
use crate::shard::{CertMeta, Record, Shard, NONE};
use crate::tables::Chunk;

/// A reference to one item in the index: a key, a certificate or an identity of a token
/// (the counterpart of a `SecKey` / `SecCertificate` / `SecIdentity` reference).
///
/// Cheap to clone (one `Arc`, shared with the other tokens of its part of the index). It reads
/// the item as the index had it when the reference was made, even after the token is removed; [`ItemRef::open_session`] tells whether the token is
/// still there, and [`crate::KeychainIndex::resolve`] of its [`ItemRef::persistent_ref`]
/// whether the item still is. Two references are equal when they name the same item (token
/// ID, class, object ID).
#[derive(Clone)]
pub struct ItemRef {
    chunk: Arc<Chunk>,
    slot: u32,
    idx: u32,
    class: ItemClass,
}

impl ItemRef {
    pub(crate) fn new(chunk: Arc<Chunk>, slot: u32, idx: u32, class: ItemClass) -> Self {
        Self {
            chunk,
            slot,
            idx,
            class,
        }
    }

    fn with(&self, idx: u32, class: ItemClass) -> Self {
        Self::new(self.chunk.clone(), self.slot, idx, class)
    }

    /// The token's shard. References are made only for slots their chunk holds, and chunks
    /// never change.
    fn shard(&self) -> &Shard {
        match self.chunk.cell(self.slot) {
            Some(cell) => &cell.shard,
            None => unreachable!("an item reference's chunk holds its token"),
        }
    }

    fn record(&self) -> Option<&Record> {
        self.shard().record(self.idx)
    }

    fn partner(&self) -> u32 {
        self.shard().entry(self.idx).map_or(NONE, |e| e.partner)
    }

    fn cert_parts(&self) -> Option<(&CertificateItem, &CertMeta)> {
        match self.record()?.cert()? {
            (c, Some(m)) => Some((c, m)),
            _ => None,
        }
    }

    /// The token the item is on (`kSecAttrTokenID`).
    pub fn token_id(&self) -> &TokenId {
        &self.shard().token_id
    }

    /// Key, certificate or identity.
    pub fn class(&self) -> ItemClass {
        self.class
    }

    /// The item's identifier inside its token; for an identity, its certificate's.
    pub fn object_id(&self) -> &ObjectId {
        // Positions come from the shard itself, so the record is always there.
        self.record().map_or(&*NO_ID, Record::object_id)
    }

    /// The label (`kSecAttrLabel`); for an identity, its certificate's.
    pub fn label(&self) -> &str {
        self.record().map_or("", Record::label)
    }

    /// The key ID (`kSecAttrApplicationLabel`): SHA-1 of the public key, for a key, a
    /// certificate (of its public key) and an identity. Empty when unknown.
    pub fn key_id(&self) -> &[u8] {
        self.record().map_or(&[], Record::key_id)
    }

    /// The key, for a key or an identity.
    pub fn key(&self) -> Option<&KeyItem> {
        match self.class {
            ItemClass::Key => self.record()?.key(),
            ItemClass::Identity => self.shard().record(self.partner())?.key(),
            _ => None,
        }
    }

    /// The certificate, for a certificate or an identity.
    pub fn certificate(&self) -> Option<&CertificateItem> {
        match self.class {
            ItemClass::Certificate | ItemClass::Identity => Some(self.record()?.cert()?.0),
            _ => None,
        }
    }

    /// What the key may do (`kSecAttrCanSign` / `CanDecrypt` / `CanDerive`); none for a
    /// certificate.
    pub fn usage(&self) -> KeyUsage {
        self.key().map_or(KeyUsage::NONE, |k| k.usage)
    }

    /// The key type, for a key or an identity.
    pub fn key_type(&self) -> Option<KeyType> {
        self.key().map(|k| k.key_type)
    }

    /// The certificate's subject Name, DER (`kSecAttrSubject`).
    pub fn subject(&self) -> Option<&[u8]> {
        self.certificate()?;
        self.cert_parts().map(|(c, m)| m.subject(&c.der))
    }

    /// The certificate's issuer Name, DER (`kSecAttrIssuer`).
    pub fn issuer(&self) -> Option<&[u8]> {
        self.certificate()?;
        self.cert_parts().map(|(c, m)| m.issuer(&c.der))
    }

    /// The certificate's serial number, the INTEGER's value bytes (`kSecAttrSerialNumber`).
    pub fn serial_number(&self) -> Option<&[u8]> {
        self.certificate()?;
        self.cert_parts().map(|(c, m)| m.serial(&c.der))
    }

    /// The common name of the certificate's subject.
    pub fn subject_common_name(&self) -> Option<&str> {
        self.certificate()?;
        self.cert_parts()?.1.subject_cn.as_deref()
    }

    /// The common name of the certificate's issuer.
    pub fn issuer_common_name(&self) -> Option<&str> {
        self.certificate()?;
        self.cert_parts()?.1.issuer_cn.as_deref()
    }

    /// The key of an identity, the key of a certificate's public key on the same token, or a
    /// key itself.
    pub fn key_ref(&self) -> Option<ItemRef> {
        match self.class {
            ItemClass::Key => Some(self.clone()),
            ItemClass::Certificate | ItemClass::Identity => {
                let p = self.partner();
                (p != NONE).then(|| self.with(p, ItemClass::Key))
            }
            _ => None,
        }
    }

    /// The certificate of an identity, a certificate itself, or for a key the first
    /// certificate of its public key on the same token.
    pub fn certificate_ref(&self) -> Option<ItemRef> {
        match self.class {
            ItemClass::Certificate => Some(self.clone()),
            ItemClass::Identity => Some(self.with(self.idx, ItemClass::Certificate)),
            ItemClass::Key => {
                let p = self.partner();
                (p != NONE).then(|| self.with(p, ItemClass::Certificate))
            }
            _ => None,
        }
    }

    /// The identity this key or certificate is part of, if any.
    pub fn identity_ref(&self) -> Option<ItemRef> {
        match self.class {
            ItemClass::Identity => Some(self.clone()),
            ItemClass::Certificate => {
                (self.partner() != NONE).then(|| self.with(self.idx, ItemClass::Identity))
            }
            ItemClass::Key => {
                let cert = self.certificate_ref()?;
                Some(self.with(cert.idx, ItemClass::Identity))
            }
            _ => None,
        }
    }

    /// A persistent reference (`kSecReturnPersistentRef`): opaque bytes that this or another
    /// process resolves with [`crate::KeychainIndex::resolve`] while the token is present,
    /// and again after it is re-inserted.
    pub fn persistent_ref(&self) -> Vec<u8> {
        persistent::encode(
            self.class,
            self.token_id().as_str(),
            self.object_id().as_bytes(),
            self.slot,
            self.idx,
            self.shard().gen,
            self.chunk.position(self.slot, self.idx),
        )
    }

    /// Every attribute, owned.
    pub fn attributes(&self) -> Attributes {
        Attributes {
            token_id: self.token_id().clone(),
            class: self.class,
            object_id: self.object_id().clone(),
            label: self.label().to_owned(),
            key_id: self.key_id().to_vec(),
            key_type: self.key_type(),
            usage: self.usage(),
            subject: self.subject().map(<[u8]>::to_vec),
            issuer: self.issuer().map(<[u8]>::to_vec),
            serial_number: self.serial_number().map(<[u8]>::to_vec),
            subject_common_name: self.subject_common_name().map(str::to_owned),
            issuer_common_name: self.issuer_common_name().map(str::to_owned),
            key_object_id: self.key_ref().map(|k| k.object_id().clone()),
        }
    }

    /// Opens a session on the item's token, to use the key (sign, decrypt, key exchange).
    ///
    /// # Errors
    /// `TokenNotFound` when the token is no longer present.
    pub async fn open_session(&self, hub: &Hub) -> Result<TokenSession> {
        hub.token(self.token_id())?.open_session().await
    }

    /// [`ItemRef::open_session`], blocking the calling thread.
    ///
    /// # Errors
    /// `TokenNotFound` when the token is no longer present.
    pub fn open_session_blocking(&self, hub: &Hub) -> Result<TokenSession> {
        block_on(self.open_session(hub))
    }
}

static NO_ID: LazyLock<ObjectId> = LazyLock::new(|| ObjectId::new([]));

impl PartialEq for ItemRef {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.token_id() == other.token_id()
            && self.object_id() == other.object_id()
    }
}

impl Eq for ItemRef {}

impl Hash for ItemRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.class.hash(state);
        self.token_id().hash(state);
        self.object_id().hash(state);
    }
}

impl fmt::Debug for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemRef")
            .field("token_id", self.token_id())
            .field("class", &self.class)
            .field("object_id", self.object_id())
            .field("label", &self.label())
            .finish()
    }
}

/// An item's attributes, owned (what a keychain query returns with `kSecReturnAttributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attributes {
    /// The token (`kSecAttrTokenID`).
    pub token_id: TokenId,
    /// Key, certificate or identity.
    pub class: ItemClass,
    /// The item's identifier in its token; for an identity, its certificate's.
    pub object_id: ObjectId,
    /// The label.
    pub label: String,
    /// SHA-1 of the public key; empty when unknown.
    pub key_id: Vec<u8>,
    /// The key type, for keys and identities.
    pub key_type: Option<KeyType>,
    /// The key's usages; none for certificates.
    pub usage: KeyUsage,
    /// The certificate's subject Name, DER.
    pub subject: Option<Vec<u8>>,
    /// The certificate's issuer Name, DER.
    pub issuer: Option<Vec<u8>>,
    /// The certificate's serial number.
    pub serial_number: Option<Vec<u8>>,
    /// The subject's common name.
    pub subject_common_name: Option<String>,
    /// The issuer's common name.
    pub issuer_common_name: Option<String>,
    /// The object ID of the key: the key itself, or an identity's or certificate's matching
    /// key on the same token.
    pub key_object_id: Option<ObjectId>,
}

/// One match: which chunk of [`Matches`], which slot and position, as what.
#[derive(Clone, Copy, Debug)]
struct Hit {
    chunk: u32,
    slot: u32,
    idx: u32,
    class: ItemClass,
}

/// The items a query matched, in order (the array a keychain search returns).
///
/// It holds one reference per token and the matches' positions; an [`ItemRef`] is made when
/// asked for ([`Matches::get`], iteration), so a query returning many items costs no more than
/// their positions.
#[derive(Clone, Default)]
pub struct Matches {
    chunks: Vec<Arc<Chunk>>,
    hits: Vec<Hit>,
}

impl Matches {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            chunks: Vec::new(),
            hits: Vec::with_capacity(n),
        }
    }

    pub(crate) fn push(&mut self, chunk: &Arc<Chunk>, slot: u32, idx: u32, class: ItemClass) {
        // Matches come token by token, so comparing with the last chunk dedups them.
        let same = self.chunks.last().is_some_and(|c| Arc::ptr_eq(c, chunk));
        if !same {
            self.chunks.push(chunk.clone());
        }
        self.hits.push(Hit {
            chunk: u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX),
            slot,
            idx,
            class,
        });
    }

    fn make(&self, hit: &Hit) -> Option<ItemRef> {
        let chunk = self.chunks.get(hit.chunk as usize)?;
        Some(ItemRef::new(chunk.clone(), hit.slot, hit.idx, hit.class))
    }

    /// The number of matches.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// The `i`-th match.
    pub fn get(&self, i: usize) -> Option<ItemRef> {
        self.make(self.hits.get(i)?)
    }

    /// The first match.
    pub fn first(&self) -> Option<ItemRef> {
        self.get(0)
    }

    /// The matches, in order.
    pub fn iter(&self) -> impl Iterator<Item = ItemRef> + '_ {
        self.hits.iter().filter_map(|h| self.make(h))
    }

    /// The matches as a vector of references.
    pub fn to_vec(&self) -> Vec<ItemRef> {
        self.iter().collect()
    }
}

impl IntoIterator for Matches {
    type Item = ItemRef;
    type IntoIter = std::vec::IntoIter<ItemRef>;

    fn into_iter(self) -> Self::IntoIter {
        self.to_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a Matches {
    type Item = ItemRef;
    type IntoIter = Box<dyn Iterator<Item = ItemRef> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl PartialEq for Matches {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Matches {}

impl PartialEq<Vec<ItemRef>> for Matches {
    fn eq(&self, other: &Vec<ItemRef>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter().cloned())
    }
}

impl fmt::Debug for Matches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
