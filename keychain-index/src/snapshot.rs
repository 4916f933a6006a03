//! A snapshot of the whole index: the slot table of token shards and the global tries. Readers
//! hold one (`Arc`) for as long as they like; the single writer builds the next from a clone
//! that shares everything it does not change, and publishes it with one pointer swap.
//!
//! Postings in the global tries name a position as (slot, generation, index). Removing a token
//! only empties its slot: its postings are dead from that moment (their generation no longer
//! matches the slot's) and every reader skips them; they are swept out in bulk later, when
//! they outnumber half the live ones. So a 10,000-item token leaves in microseconds.

use std::ops::ControlFlow;
use std::sync::Arc;

use token_core::{Error, Item, ItemClass, Result, TokenId};

use crate::hash::{fmix64, token_hash, Hasher64};
use crate::item_ref::ItemRef;
use crate::persistent::RefParts;
use crate::shard::{Entry, Kind, Record, Shard, NONE};
use crate::trie::{key_of, Posting, Trie};

const CHUNK_BITS: u32 = 6;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Sweep dead postings once they exceed half the live ones plus this.
const SWEEP_SLACK: usize = 1 << 14;

/// A present token: where its shard is and the hot half of it.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) gen: u64,
    pub(crate) entries: Arc<[Entry]>,
    pub(crate) shard: Arc<Shard>,
}

/// The slot table, in chunks of 64 so that a change copies one chunk and the chunk list.
#[derive(Clone, Default)]
pub(crate) struct Slots {
    chunks: Vec<Arc<Vec<Option<Slot>>>>,
}

impl Slots {
    #[inline]
    pub(crate) fn get(&self, i: u32) -> Option<&Slot> {
        self.chunks
            .get((i >> CHUNK_BITS) as usize)?
            .get(i as usize & (CHUNK - 1))?
            .as_ref()
    }

    fn set(&mut self, i: u32, value: Option<Slot>) {
        let c = (i >> CHUNK_BITS) as usize;
        while self.chunks.len() <= c {
            self.chunks.push(Arc::new(vec![None; CHUNK]));
        }
        if let Some(chunk) = self.chunks.get_mut(c) {
            if let Some(cell) = Arc::make_mut(chunk).get_mut(i as usize & (CHUNK - 1)) {
                *cell = value;
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.chunks.capacity() * size_of::<usize>()
            + self.chunks.len() * (4 * size_of::<usize>() + CHUNK * size_of::<Option<Slot>>())
    }
}

/// Where a posting points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) gen: u64,
    pub(crate) slot: u32,
    pub(crate) idx: u32,
}

impl Loc {
    fn tie(&self) -> u64 {
        fmix64(self.gen ^ (u64::from(self.slot) << 32 | u64::from(self.idx)).rotate_left(17))
    }
}

/// token ID → slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenPosting {
    hash: u64,
    slot: u32,
}

impl Posting for TokenPosting {
    fn key(&self) -> u128 {
        key_of(self.hash, u64::from(self.slot))
    }
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// key ID → item, with the key ID inline so a lookup needs no other memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyIdPosting {
    hash: u64,
    pub(crate) loc: Loc,
    id: [u8; 20],
    len: u8,
    pub(crate) kind: Kind,
}

impl KeyIdPosting {
    /// True when this posting's key ID is `id` (longer IDs are checked against the record).
    fn is(&self, id: &[u8], record: impl FnOnce() -> Option<Vec<u8>>) -> bool {
        if usize::from(self.len) != id.len().min(usize::from(u8::MAX)) {
            return false;
        }
        match id.split_at_checked(20) {
            Some((head, rest)) if !rest.is_empty() => {
                head == self.id && record().as_deref() == Some(id)
            }
            _ => self.id.get(..id.len()) == Some(id),
        }
    }
}

impl Posting for KeyIdPosting {
    fn key(&self) -> u128 {
        key_of(self.hash, self.loc.tie())
    }
    fn same(&self, other: &Self) -> bool {
        self.loc == other.loc && self.hash == other.hash
    }
}

/// label / subject / issuer / common name → item; the value is checked against the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttrPosting {
    hash: u64,
    pub(crate) loc: Loc,
    pub(crate) kind: Kind,
}

impl Posting for AttrPosting {
    fn key(&self) -> u128 {
        key_of(self.hash, self.loc.tie())
    }
    fn same(&self, other: &Self) -> bool {
        self.loc == other.loc && self.hash == other.hash
    }
}

/// The attributes with a global index, as the seeds of their hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Attr {
    KeyId = 1,
    Label = 2,
    Subject = 3,
    Issuer = 4,
    SubjectCn = 5,
    IssuerCn = 6,
}

/// The writer's own state, next to the published snapshot.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Free slots, lowest last.
    free: Vec<u32>,
    next_slot: u32,
    next_gen: u64,
    /// Postings whose shard is gone or was rebuilt, not yet swept.
    pub(crate) dead: usize,
}

impl WriterState {
    pub(crate) fn new(first_gen: u64) -> Self {
        Self {
            next_gen: first_gen,
            ..Self::default()
        }
    }

    fn slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        })
    }

    fn release(&mut self, slot: u32) {
        // Keep the lowest free slot at the end so the table stays dense.
        let at = self.free.partition_point(|&s| s > slot);
        self.free.insert(at, slot);
    }

    fn gen(&mut self) -> u64 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }
}

/// The whole index at one moment.
#[derive(Clone)]
pub(crate) struct Snapshot {
    /// Write batches applied.
    pub(crate) seq: u64,
    seed: u64,
    pub(crate) slots: Slots,
    by_token: Trie<TokenPosting>,
    pub(crate) key_ids: Trie<KeyIdPosting>,
    pub(crate) attrs: Trie<AttrPosting>,
    pub(crate) tokens: usize,
    pub(crate) items: usize,
}

impl Snapshot {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seq: 0,
            seed,
            slots: Slots::default(),
            by_token: Trie::default(),
            key_ids: Trie::default(),
            attrs: Trie::default(),
            tokens: 0,
            items: 0,
        }
    }

    /// The hash under which `value` of `attr` is posted.
    #[inline]
    pub(crate) fn attr_hash(&self, attr: Attr, value: &[u8]) -> u64 {
        let mut h = Hasher64::new(self.seed ^ (attr as u64));
        h.bytes(value);
        h.finish()
    }

    /// The slot of a present token.
    pub(crate) fn slot_of(&self, token: &str) -> Option<u32> {
        let mut found = None;
        let _ = self
            .by_token
            .for_each_value(
                token_hash(token),
                &mut |p: &TokenPosting| match self.slots.get(p.slot) {
                    Some(s) if s.shard.token_id.as_str() == token => {
                        found = Some(p.slot);
                        ControlFlow::Break(())
                    }
                    _ => ControlFlow::Continue(()),
                },
            );
        found
    }

    /// The shard a posting points into, if the posting is still live.
    #[inline]
    pub(crate) fn live(&self, loc: Loc) -> Option<&Arc<Shard>> {
        self.slots
            .get(loc.slot)
            .filter(|s| s.gen == loc.gen)
            .map(|s| &s.shard)
    }

    fn postings_of(
        &self,
        shard: &Shard,
        positions: impl Iterator<Item = u32>,
    ) -> (Vec<KeyIdPosting>, Vec<AttrPosting>) {
        let (mut keys, mut attrs) = (Vec::new(), Vec::new());
        for idx in positions {
            let Some(record) = shard.record(idx) else {
                continue;
            };
            let loc = Loc {
                gen: shard.gen,
                slot: shard.slot,
                idx,
            };
            let kind = record.kind();
            let mut attr = |a: Attr, value: &[u8]| {
                attrs.push(AttrPosting {
                    hash: self.attr_hash(a, value),
                    loc,
                    kind,
                });
            };
            if !record.label().is_empty() {
                attr(Attr::Label, record.label().as_bytes());
            }
            if let Some((cert, Some(meta))) = record.cert() {
                attr(Attr::Subject, meta.subject(&cert.der));
                attr(Attr::Issuer, meta.issuer(&cert.der));
                if let Some(cn) = &meta.subject_cn {
                    attr(Attr::SubjectCn, cn.as_bytes());
                }
                if let Some(cn) = &meta.issuer_cn {
                    attr(Attr::IssuerCn, cn.as_bytes());
                }
            }
            let id = record.key_id();
            if !id.is_empty() {
                let mut inline = [0u8; 20];
                let n = id.len().min(20);
                inline[..n].copy_from_slice(&id[..n]);
                keys.push(KeyIdPosting {
                    hash: self.attr_hash(Attr::KeyId, id),
                    loc,
                    id: inline,
                    len: u8::try_from(id.len()).unwrap_or(u8::MAX),
                    kind,
                });
            }
        }
        (keys, attrs)
    }

    fn install(&mut self, mut shard: Shard, keys: Vec<KeyIdPosting>, attrs: Vec<AttrPosting>) {
        shard.postings += keys.len() + attrs.len();
        self.key_ids.insert(keys);
        self.attrs.insert(attrs);
        self.items += shard.live();
        let slot = shard.slot;
        let shard = Arc::new(shard);
        self.slots.set(
            slot,
            Some(Slot {
                gen: shard.gen,
                entries: shard.entries.clone(),
                shard,
            }),
        );
    }

    fn install_fresh(&mut self, shard: Shard) {
        let (keys, attrs) = self.postings_of(
            &shard,
            0..u32::try_from(shard.records.len()).unwrap_or(NONE),
        );
        self.install(shard, keys, attrs);
    }

    /// Sets a token's items: inserts it, or updates it in place. False if nothing changed.
    pub(crate) fn put_token(&mut self, w: &mut WriterState, id: TokenId, items: Vec<Item>) -> bool {
        let Some(slot) = self.slot_of(id.as_str()) else {
            let slot = w.slot();
            let shard = Shard::build(id.clone(), slot, w.gen(), items);
            self.by_token.insert(vec![TokenPosting {
                hash: token_hash(id.as_str()),
                slot,
            }]);
            self.tokens += 1;
            self.install_fresh(shard);
            return true;
        };
        let Some(old) = self.slots.get(slot).map(|s| s.shard.clone()) else {
            return false;
        };
        let update = Shard::update(&old, items);
        if update.removed.is_empty() && update.added.is_empty() {
            return false;
        }
        self.items -= old.live();
        let mut shard = update.shard;
        if shard.dead() > shard.live().max(8) {
            // Too many tombstones: rebuild compact under a new generation; every posting of
            // the old one is dead.
            w.dead += old.postings;
            self.install_fresh(shard.compacted(w.gen()));
        } else {
            let (gone_keys, gone_attrs) = self.postings_of(&old, update.removed.iter().copied());
            let (keys, attrs) = self.postings_of(&shard, update.added.iter().copied());
            shard.postings = old.postings - gone_keys.len() - gone_attrs.len();
            self.key_ids.remove(gone_keys);
            self.attrs.remove(gone_attrs);
            self.install(shard, keys, attrs);
        }
        true
    }

    /// Removes a token and so all its items. False if it was not there.
    pub(crate) fn drop_token(&mut self, w: &mut WriterState, id: &str) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        if let Some(old) = self.slots.get(slot).map(|s| s.shard.clone()) {
            w.dead += old.postings;
            self.items -= old.live();
        }
        self.by_token.remove(vec![TokenPosting {
            hash: token_hash(id),
            slot,
        }]);
        self.slots.set(slot, None);
        w.release(slot);
        self.tokens -= 1;
        true
    }

    /// Sweeps dead postings when they are many.
    pub(crate) fn maybe_sweep(&mut self, w: &mut WriterState) {
        let total = self.key_ids.len() + self.attrs.len();
        let live = total.saturating_sub(w.dead);
        if w.dead <= live / 2 + SWEEP_SLACK {
            return;
        }
        let slots = &self.slots;
        let alive = |loc: Loc| slots.get(loc.slot).is_some_and(|s| s.gen == loc.gen);
        self.key_ids.retain(&|p: &KeyIdPosting| alive(p.loc));
        self.attrs.retain(&|p: &AttrPosting| alive(p.loc));
        w.dead = 0;
    }

    /// Resolves a persistent reference by its position hint: one slot lookup, one entry.
    #[inline]
    pub(crate) fn resolve_hint(&self, r: &RefParts<'_>) -> Option<ItemRef> {
        let slot = self.slots.get(r.slot)?;
        if slot.gen != r.gen {
            return None;
        }
        let e = slot.entries.get(r.idx as usize)?;
        if e.name_hash != r.name_hash {
            return None;
        }
        let class = match (r.class, e.kind) {
            (ItemClass::Key, Kind::Key) => ItemClass::Key,
            (ItemClass::Certificate, Kind::Cert) => ItemClass::Certificate,
            (ItemClass::Identity, Kind::Cert) if e.partner != NONE => ItemClass::Identity,
            _ => return None,
        };
        Some(ItemRef::new(slot.shard.clone(), r.idx, class))
    }

    /// Resolves a persistent reference by name: token, then object ID in the token's table.
    pub(crate) fn resolve_name(&self, r: &RefParts<'_>) -> Result<ItemRef> {
        TokenId::parse(r.token)
            .map_err(|_| Error::bad_parameter("persistent reference: malformed token ID"))?;
        let not_found = || Error::object_not_found("no such item in the keychain index");
        let shard = self
            .slot_of(r.token)
            .and_then(|s| self.slots.get(s))
            .map(|s| &s.shard)
            .ok_or_else(not_found)?;
        let kind = match r.class {
            ItemClass::Key => Kind::Key,
            _ => Kind::Cert,
        };
        let idx = shard
            .find(kind, r.object, r.name_hash)
            .ok_or_else(not_found)?;
        if r.class == ItemClass::Identity && shard.entry(idx).is_none_or(|e| e.partner == NONE) {
            return Err(not_found());
        }
        Ok(ItemRef::new(shard.clone(), idx, r.class))
    }

    /// Total size of the index's own structures and of the items, in bytes.
    pub(crate) fn bytes(&self) -> (usize, usize) {
        let mut index = std::mem::size_of::<Self>()
            + self.slots.bytes()
            + self.by_token.bytes()
            + self.key_ids.bytes()
            + self.attrs.bytes();
        let mut payload = 0;
        for s in self.slots.iter() {
            index += s.shard.index_bytes();
            payload += s.shard.payload_bytes();
        }
        (index, payload)
    }

    /// Postings in the global tries (live and dead).
    pub(crate) fn postings(&self) -> usize {
        self.key_ids.len() + self.attrs.len()
    }
}

/// For [`KeyIdPosting::is`]: the key ID of the record a posting points at.
pub(crate) fn record_key_id(shard: &Shard, idx: u32) -> Option<Vec<u8>> {
    shard.record(idx).map(|r: &Record| r.key_id().to_vec())
}

impl KeyIdPosting {
    /// True when this posting is for key ID `id`, looking at the shard only for IDs longer
    /// than the 20 bytes kept inline.
    pub(crate) fn matches(&self, id: &[u8], shard: &Shard) -> bool {
        self.is(id, || record_key_id(shard, self.loc.idx))
    }
}
