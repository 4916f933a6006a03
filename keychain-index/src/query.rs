//! Queries: what to look for, and how the tables answer.

use std::ops::ControlFlow;
use std::sync::Arc;

use token_core::{ItemClass, KeyUsage, TokenId};

use crate::shard::{Kind, Shard, HINT_CERT, HINT_IDENTITY, HINT_KEY, NONE};
use crate::tables::{record_key_id, Attr, Cell, Chunk, Tables};

/// What to look for, as a keychain search dictionary says it (`kSecClass`,
/// `kSecAttrTokenID`, `kSecAttrLabel`, `kSecAttrApplicationLabel`, ...). Every condition given
/// must hold.
///
/// Without a class, a query finds keys and certificates (what tokens hold); identities are
/// derived and are found by asking for [`ItemClass::Identity`].
///
/// ```
/// use keychain_index::Query;
/// use token_core::{KeyUsage, TokenId};
///
/// let q = Query::keys()
///     .token(TokenId::parse("piv:0123456789")?)
///     .usage(KeyUsage::SIGN)
///     .limit(1);
/// # Ok::<(), token_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub(crate) class: Option<ItemClass>,
    pub(crate) token: Option<TokenId>,
    pub(crate) label: Option<String>,
    pub(crate) key_id: Option<Vec<u8>>,
    pub(crate) subject: Option<Vec<u8>>,
    pub(crate) issuer: Option<Vec<u8>>,
    pub(crate) subject_cn: Option<String>,
    pub(crate) issuer_cn: Option<String>,
    pub(crate) usage: KeyUsage,
    pub(crate) limit: Option<usize>,
}

impl Query {
    /// Every key and certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys (`kSecClassKey`).
    pub fn keys() -> Self {
        Self::new().class(ItemClass::Key)
    }

    /// Certificates (`kSecClassCertificate`).
    pub fn certificates() -> Self {
        Self::new().class(ItemClass::Certificate)
    }

    /// Identities (`kSecClassIdentity`): certificates whose public key is that of a key on the
    /// same token.
    pub fn identities() -> Self {
        Self::new().class(ItemClass::Identity)
    }

    /// Only items of this class.
    #[must_use]
    pub fn class(mut self, class: ItemClass) -> Self {
        self.class = Some(class);
        self
    }

    /// Only items of this token (`kSecAttrTokenID`).
    #[must_use]
    pub fn token(mut self, token: TokenId) -> Self {
        self.token = Some(token);
        self
    }

    /// Only items with exactly this label (`kSecAttrLabel`). An identity's label is its
    /// certificate's.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Only items with this key ID (`kSecAttrApplicationLabel`: SHA-1 of the public key): the
    /// key, the certificates of its public key, and their identity.
    #[must_use]
    pub fn key_id(mut self, key_id: impl AsRef<[u8]>) -> Self {
        self.key_id = Some(key_id.as_ref().to_vec());
        self
    }

    /// Only certificates (and identities) with this subject Name, DER (`kSecAttrSubject`).
    #[must_use]
    pub fn subject(mut self, name_der: impl AsRef<[u8]>) -> Self {
        self.subject = Some(name_der.as_ref().to_vec());
        self
    }

    /// Only certificates (and identities) with this issuer Name, DER (`kSecAttrIssuer`).
    #[must_use]
    pub fn issuer(mut self, name_der: impl AsRef<[u8]>) -> Self {
        self.issuer = Some(name_der.as_ref().to_vec());
        self
    }

    /// Only certificates (and identities) whose subject's common name is exactly this.
    #[must_use]
    pub fn subject_common_name(mut self, cn: impl Into<String>) -> Self {
        self.subject_cn = Some(cn.into());
        self
    }

    /// Only certificates (and identities) whose issuer's common name is exactly this.
    #[must_use]
    pub fn issuer_common_name(mut self, cn: impl Into<String>) -> Self {
        self.issuer_cn = Some(cn.into());
        self
    }

    /// Only keys (and identities) allowing every usage in `usage` (`kSecAttrCanSign`,
    /// `kSecAttrCanDecrypt`, `kSecAttrCanDerive`).
    #[must_use]
    pub fn usage(mut self, usage: KeyUsage) -> Self {
        self.usage = usage;
        self
    }

    /// At most `n` results (`kSecMatchLimit`).
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// True when conditions other than class, token and key ID are set.
    fn has_other_conditions(&self) -> bool {
        self.label.is_some()
            || self.subject.is_some()
            || self.issuer.is_some()
            || self.subject_cn.is_some()
            || self.issuer_cn.is_some()
            || !self.usage.is_empty()
    }

    /// The most selective attribute with a global index, with its value.
    fn attr_probe(&self) -> Option<(Attr, &[u8])> {
        if let Some(v) = &self.subject {
            return Some((Attr::Subject, v));
        }
        if let Some(v) = &self.issuer {
            return Some((Attr::Issuer, v));
        }
        if let Some(v) = &self.subject_cn {
            return Some((Attr::SubjectCn, v.as_bytes()));
        }
        if let Some(v) = &self.label {
            return Some((Attr::Label, v.as_bytes()));
        }
        if let Some(v) = &self.issuer_cn {
            return Some((Attr::IssuerCn, v.as_bytes()));
        }
        None
    }
}

/// What a query was already proven to match by the way its candidates were found.
#[derive(Clone, Copy)]
struct Proven {
    token: bool,
    key_id: bool,
}

/// The classes under which a stored item of `kind` is reported to a query for `class`.
fn classes(kind: Kind, class: Option<ItemClass>) -> Option<ItemClass> {
    match (kind, class) {
        (Kind::Key, None | Some(ItemClass::Key)) => Some(ItemClass::Key),
        (Kind::Cert, None | Some(ItemClass::Certificate)) => Some(ItemClass::Certificate),
        (Kind::Cert, Some(ItemClass::Identity)) => Some(ItemClass::Identity),
        _ => None,
    }
}

/// True when the item at `idx`, reported as `class`, meets every condition of `q` that was not
/// already proven.
fn check(q: &Query, shard: &Shard, idx: u32, class: ItemClass, proven: Proven) -> bool {
    let Some(record) = shard.record(idx) else {
        return false;
    };
    let key_at = match class {
        ItemClass::Key => idx,
        ItemClass::Identity => shard.entry(idx).map_or(NONE, |e| e.partner),
        _ => NONE,
    };
    let cert = record.cert();
    if !proven.token && q.token.as_ref().is_some_and(|t| *t != shard.token_id) {
        return false;
    }
    if q.label.as_deref().is_some_and(|l| l != record.label()) {
        return false;
    }
    if !proven.key_id && q.key_id.as_deref().is_some_and(|k| k != record.key_id()) {
        return false;
    }
    if !q.usage.is_empty()
        && !shard
            .entry(key_at)
            .is_some_and(|e| e.kind == Kind::Key && e.usage.contains(q.usage))
    {
        return false;
    }
    let names = [&q.subject, &q.issuer];
    let cns = [&q.subject_cn, &q.issuer_cn];
    if names.iter().any(|n| n.is_some()) || cns.iter().any(|n| n.is_some()) {
        let Some((c, Some(meta))) = cert else {
            return false;
        };
        if q.subject
            .as_deref()
            .is_some_and(|s| s != meta.subject(&c.der))
            || q.issuer
                .as_deref()
                .is_some_and(|s| s != meta.issuer(&c.der))
            || q.subject_cn
                .as_deref()
                .is_some_and(|s| Some(s) != meta.subject_cn.as_deref())
            || q.issuer_cn
                .as_deref()
                .is_some_and(|s| Some(s) != meta.issuer_cn.as_deref())
        {
            return false;
        }
    }
    true
}

/// Answers `q` from `snap`, calling `emit` with each match (its slot's chunk, its slot, its
/// position, its class) until the limit is reached.
pub(crate) fn run<F>(snap: &Tables, q: &Query, mut emit: F)
where
    F: FnMut(&Arc<Chunk>, u32, u32, ItemClass),
{
    let limit = q.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return;
    }
    let mut n = 0;
    let mut out = |chunk: &Arc<Chunk>, slot: u32, idx: u32, class: ItemClass| {
        emit(chunk, slot, idx, class);
        n += 1;
        if n >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let proven = Proven {
        token: true,
        key_id: false,
    };

    if let Some(token) = &q.token {
        let Some(slot) = snap.slot_of(token.as_str()) else {
            return;
        };
        if let Some((chunk, cell)) = snap.slot(slot) {
            let _ = scan(q, chunk, slot, cell, proven, &mut out);
        }
    } else if let Some(id) = &q.key_id {
        let key = snap.key_id_key(id);
        let simple = !q.has_other_conditions();
        let proven = Proven {
            token: true,
            key_id: !key.truncated(),
        };
        for loc in snap.key_id_postings(&key) {
            let Some((chunk, cell)) = snap.live(*loc) else {
                continue;
            };
            let Some(class) = classes(loc.kind(), q.class) else {
                continue;
            };
            let shard = &cell.shard;
            if key.truncated() && record_key_id(shard, loc) != id.as_slice() {
                continue;
            }
            if class == ItemClass::Identity
                && shard.entry(loc.idx()).is_none_or(|e| e.partner == NONE)
            {
                continue;
            }
            if (simple || check(q, shard, loc.idx(), class, proven))
                && out(chunk, loc.slot, loc.idx(), class).is_break()
            {
                return;
            }
        }
    } else if let Some((attr, value)) = q.attr_probe() {
        for loc in snap.attr_postings(snap.attr_hash(attr, value)) {
            let Some((chunk, cell)) = snap.live(*loc) else {
                continue;
            };
            let Some(class) = classes(loc.kind(), q.class) else {
                continue;
            };
            let shard = &cell.shard;
            if class == ItemClass::Identity
                && shard.entry(loc.idx()).is_none_or(|e| e.partner == NONE)
            {
                continue;
            }
            if check(q, shard, loc.idx(), class, proven)
                && out(chunk, loc.slot, loc.idx(), class).is_break()
            {
                return;
            }
        }
    } else {
        for (slot, chunk, cell) in snap.slots() {
            if scan(q, chunk, slot, cell, proven, &mut out).is_break() {
                return;
            }
        }
    }
}

/// Runs `q` over one token's items, in position order (keys, then certificates).
fn scan<F>(
    q: &Query,
    chunk: &Arc<Chunk>,
    slot: u32,
    cell: &Cell,
    proven: Proven,
    out: &mut F,
) -> ControlFlow<()>
where
    F: FnMut(&Arc<Chunk>, u32, u32, ItemClass) -> ControlFlow<()>,
{
    let passes: [(u8, ItemClass); 2] = match q.class {
        None => [
            (HINT_KEY, ItemClass::Key),
            (HINT_CERT, ItemClass::Certificate),
        ],
        Some(ItemClass::Key) => [(HINT_KEY, ItemClass::Key), (0, ItemClass::Key)],
        Some(ItemClass::Certificate) => [
            (HINT_CERT, ItemClass::Certificate),
            (0, ItemClass::Certificate),
        ],
        Some(ItemClass::Identity) => [
            (HINT_IDENTITY, ItemClass::Identity),
            (0, ItemClass::Identity),
        ],
        Some(_) => return ControlFlow::Continue(()),
    };
    let simple = q.key_id.is_none() && !q.has_other_conditions();
    // The chunk's hint flags say which positions hold what; the shard is read only when a
    // condition needs the item itself.
    let flags = chunk.flags(cell);
    for (flag, class) in passes {
        if flag == 0 {
            continue;
        }
        for (idx, _) in flags.iter().enumerate().filter(|(_, f)| **f & flag != 0) {
            let idx = u32::try_from(idx).unwrap_or(NONE);
            if simple || check(q, &cell.shard, idx, class, proven) {
                out(chunk, slot, idx, class)?;
            }
        }
    }
    ControlFlow::Continue(())
}
