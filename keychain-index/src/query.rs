//! Queries: what to look for, and how a snapshot answers.

use std::ops::ControlFlow;
use std::sync::Arc;

use token_core::{ItemClass, KeyUsage, TokenId};

use crate::shard::{Kind, Shard, NONE};
use crate::tables::{record_key_id, Attr, Tables};

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

/// Answers `q` from `snap`, calling `emit` with each match until it breaks or the limit is
/// reached.
pub(crate) fn run<F>(snap: &Tables, q: &Query, mut emit: F)
where
    F: FnMut(&Arc<Shard>, u32, ItemClass),
{
    let limit = q.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return;
    }
    let mut n = 0;
    let mut out = |shard: &Arc<Shard>, idx: u32, class: ItemClass| {
        emit(shard, idx, class);
        n += 1;
        if n >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };

    if let Some(token) = &q.token {
        let Some(slot) = snap.slot_of(token.as_str()).and_then(|s| snap.slot(s)) else {
            return;
        };
        let proven = Proven {
            token: true,
            key_id: false,
        };
        let _ = scan(q, &slot.shard, proven, &mut out);
    } else if let Some(id) = &q.key_id {
        let key = snap.key_id_key(id);
        let simple = !q.has_other_conditions();
        let proven = Proven {
            token: true,
            key_id: !key.truncated(),
        };
        for loc in snap.key_id_postings(&key) {
            let Some(shard) = snap.live(*loc) else {
                continue;
            };
            let Some(class) = classes(loc.kind(), q.class) else {
                continue;
            };
            if key.truncated() && record_key_id(shard, loc) != id.as_slice() {
                continue;
            }
            if class == ItemClass::Identity
                && shard.entry(loc.idx()).is_none_or(|e| e.partner == NONE)
            {
                continue;
            }
            if (simple || check(q, shard, loc.idx(), class, proven))
                && out(shard, loc.idx(), class).is_break()
            {
                return;
            }
        }
    } else if let Some((attr, value)) = q.attr_probe() {
        let proven = Proven {
            token: true,
            key_id: false,
        };
        for loc in snap.attr_postings(snap.attr_hash(attr, value)) {
            let Some(shard) = snap.live(*loc) else {
                continue;
            };
            let Some(class) = classes(loc.kind(), q.class) else {
                continue;
            };
            if class == ItemClass::Identity
                && shard.entry(loc.idx()).is_none_or(|e| e.partner == NONE)
            {
                continue;
            }
            if check(q, shard, loc.idx(), class, proven) && out(shard, loc.idx(), class).is_break()
            {
                return;
            }
        }
    } else {
        let proven = Proven {
            token: true,
            key_id: false,
        };
        for slot in snap.slots() {
            if scan(q, &slot.shard, proven, &mut out).is_break() {
                return;
            }
        }
    }
}

/// Runs `q` over one token's items, in position order (keys, then certificates).
fn scan<F>(q: &Query, shard: &Arc<Shard>, proven: Proven, out: &mut F) -> ControlFlow<()>
where
    F: FnMut(&Arc<Shard>, u32, ItemClass) -> ControlFlow<()>,
{
    let lists: [(&[u32], ItemClass); 2] = match q.class {
        None => [
            (&shard.keys, ItemClass::Key),
            (&shard.certs, ItemClass::Certificate),
        ],
        Some(ItemClass::Key) => [(&shard.keys, ItemClass::Key), (&[], ItemClass::Key)],
        Some(ItemClass::Certificate) => [
            (&shard.certs, ItemClass::Certificate),
            (&[], ItemClass::Certificate),
        ],
        Some(ItemClass::Identity) => [
            (&shard.identities, ItemClass::Identity),
            (&[], ItemClass::Identity),
        ],
        Some(_) => return ControlFlow::Continue(()),
    };
    let simple = q.key_id.is_none() && !q.has_other_conditions();
    for (list, class) in lists {
        for &idx in list {
            if simple || check(q, shard, idx, class, proven) {
                out(shard, idx, class)?;
            }
        }
    }
    ControlFlow::Continue(())
}
