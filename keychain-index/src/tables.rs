//! The global tables: the slot table of token shards, and hash indexes from token ID, key ID,
//! label and names to item positions.
//!
//! The index keeps two copies of these tables (see `index.rs`): the writer plans a change on
//! the copy no reader uses, records it as a list of [`Edit`]s, publishes that copy, then
//! replays the same edits on the other. Shards are shared by both copies (`Arc`).
//!
//! Postings name a position as (generation, slot, index). Removing a token only empties its
//! slot: its postings are dead from then on (their generation no longer matches the slot's),
//! every reader skips them, and they are swept out in bulk once they outnumber half the live
//! ones. So a 10,000-item token leaves in microseconds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use token_core::{Error, Item, ItemClass, Result, TokenId};

use crate::hash::{token_hash, Hasher64};
use crate::item_ref::ItemRef;
use crate::persistent::{self, RefParts};
use crate::shard::{hint_flags, Kind, Record, Shard, HINT_CERT, HINT_IDENTITY, HINT_KEY, NONE};

/// Sweep dead postings once they exceed half the live ones plus this.
const SWEEP_SLACK: usize = 1 << 14;

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = Hasher64::new(self.0);
        h.bytes(bytes);
        self.0 = h.finish();
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Ids = BuildHasherDefault<IdHasher>;

/// One value or several, for a multimap without an allocation in the common case.
#[derive(Clone, Debug)]
pub(crate) enum Multi<T> {
    One(T),
    /// A key and its certificate share a key ID: two without an allocation.
    Two([T; 2]),
    Many(Vec<T>),
}

impl<T: Copy + PartialEq> Multi<T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Two(two) => two,
            Self::Many(v) => v,
        }
    }

    fn push(&mut self, t: T) {
        match self {
            Self::One(x) => *self = Self::Two([*x, t]),
            Self::Two([x, y]) => *self = Self::Many(vec![*x, *y, t]),
            Self::Many(v) => v.push(t),
        }
    }

    /// Keeps the values for which `keep` holds; false when none is left.
    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> bool {
        let kept: Vec<T> = match self {
            Self::One(x) => return keep(x),
            Self::Two(two) => two.iter().copied().filter(|t| keep(t)).collect(),
            Self::Many(v) => {
                v.retain(|t| keep(t));
                std::mem::take(v)
            }
        };
        match kept.as_slice() {
            [] => return false,
            [one] => *self = Self::One(*one),
            [a, b] => *self = Self::Two([*a, *b]),
            _ => *self = Self::Many(kept),
        }
        true
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Many(v) => v.capacity() * std::mem::size_of::<T>(),
            _ => 0,
        }
    }
}

const CHUNK_BITS: u32 = 6;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A present token in the slot table.
#[derive(Clone, Debug)]
pub(crate) struct Cell {
    pub(crate) gen: u64,
    pub(crate) shard: Arc<Shard>,
    /// Where its hint flags start in the chunk's array, and how many.
    base: u32,
    len: u32,
}

/// 64 slots of the slot table, immutable once built: the tokens' shards and generations, and
/// their items' hint flags packed in one array. An [`ItemRef`] holds its chunk (64 chunks
/// hold 4,096 tokens, so chunks stay in cache), which keeps its shard alive; resolving a
/// persistent reference reads only the chunk.
#[derive(Debug)]
pub(crate) struct Chunk {
    cells: [Option<Cell>; CHUNK],
    hints: Box<[u8]>,
}

impl Chunk {
    fn empty() -> Self {
        Self {
            cells: std::array::from_fn(|_| None),
            hints: Box::default(),
        }
    }

    /// This chunk with cell `i` set to `shard` (or emptied). The other cells' hint flags are
    /// copied from this chunk; the new shard's are computed from its entries.
    fn with(&self, i: usize, shard: Option<Arc<Shard>>) -> Self {
        let mut cells: [Option<Cell>; CHUNK] = std::array::from_fn(|_| None);
        let mut hints: Vec<u8> = Vec::with_capacity(self.hints.len() + 128);
        for (j, (old, new)) in self.cells.iter().zip(cells.iter_mut()).enumerate() {
            let base = u32::try_from(hints.len()).unwrap_or(u32::MAX);
            let cell = if j == i {
                shard.clone().map(|s| {
                    hints.extend(s.entries.iter().map(hint_flags));
                    (s.gen, s)
                })
            } else {
                old.as_ref().map(|c| {
                    let words = self
                        .hints
                        .get(c.base as usize..(c.base + c.len) as usize)
                        .unwrap_or_default();
                    hints.extend_from_slice(words);
                    (c.gen, c.shard.clone())
                })
            };
            *new = cell.map(|(gen, shard)| Cell {
                gen,
                shard,
                base,
                len: u32::try_from(hints.len()).unwrap_or(u32::MAX) - base,
            });
        }
        Self {
            cells,
            hints: hints.into_boxed_slice(),
        }
    }

    /// The token in cell `i`.
    #[inline]
    pub(crate) fn cell(&self, i: u32) -> Option<&Cell> {
        self.cells.get(i as usize & (CHUNK - 1))?.as_ref()
    }

    /// Where the hint flags of item `idx` of slot `i` are in this chunk (for persistent
    /// references), or [`persistent::NO_POS`] when the slot is empty.
    pub(crate) fn position(&self, i: u32, idx: u32) -> u32 {
        self.cell(i)
            .and_then(|cell| cell.base.checked_add(idx))
            .unwrap_or(persistent::NO_POS)
    }

    /// The hint flags of position `idx` of `cell`.
    #[inline]
    fn hint(&self, cell: &Cell, idx: u32) -> Option<u8> {
        if idx >= cell.len {
            return None;
        }
        self.hints.get((cell.base + idx) as usize).copied()
    }

    /// The hint flags of every position of `cell`.
    pub(crate) fn flags(&self, cell: &Cell) -> &[u8] {
        self.hints
            .get(cell.base as usize..(cell.base + cell.len) as usize)
            .unwrap_or_default()
    }

    fn bytes(&self) -> usize {
        use std::mem::size_of;
        2 * size_of::<usize>() + size_of::<Self>() + self.hints.len()
    }
}

/// Where a posting points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) gen: u64,
    pub(crate) slot: u32,
    /// The position, with bit 31 set for a certificate.
    idx_kind: u32,
}

const CERT_BIT: u32 = 1 << 31;

impl Loc {
    fn new(gen: u64, slot: u32, idx: u32, kind: Kind) -> Self {
        let bit = if kind == Kind::Cert { CERT_BIT } else { 0 };
        Self {
            gen,
            slot,
            idx_kind: (idx & !CERT_BIT) | bit,
        }
    }

    pub(crate) fn idx(&self) -> u32 {
        self.idx_kind & !CERT_BIT
    }

    pub(crate) fn kind(&self) -> Kind {
        if self.idx_kind & CERT_BIT != 0 {
            Kind::Cert
        } else {
            Kind::Key
        }
    }
}

/// A key ID as a table key: its hash, and up to 20 bytes of it inline so a lookup compares
/// without reading the item (longer IDs are checked against the item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyIdKey {
    hash: u64,
    id: [u8; 20],
    len: u8,
}

impl Hash for KeyIdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl KeyIdKey {
    /// True when the key ID is longer than the bytes kept inline.
    pub(crate) fn truncated(&self) -> bool {
        usize::from(self.len) > self.id.len()
    }
}

/// A token ID as a table key: its hash, and the ID itself inline when it fits, so finding a
/// token compares within the table (no other memory read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenKey {
    hash: u64,
    /// The length, or `u8::MAX` for an ID longer than `bytes` (then checked against the
    /// shard's).
    len: u8,
    bytes: [u8; 47],
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl TokenKey {
    pub(crate) fn new(token: &str) -> Self {
        let mut bytes = [0u8; 47];
        let b = token.as_bytes();
        let n = b.len().min(bytes.len());
        bytes[..n].copy_from_slice(&b[..n]);
        let len = if b.len() <= bytes.len() {
            u8::try_from(b.len()).unwrap_or(u8::MAX)
        } else {
            u8::MAX
        };
        Self {
            hash: token_hash(token),
            len,
            bytes,
        }
    }

    fn exact(&self) -> bool {
        self.len != u8::MAX
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

/// An item's postings: by key ID, and by attribute hash.
type Postings = (Vec<(KeyIdKey, Loc)>, Vec<(u64, Loc)>);

/// One step of a change, applied identically to both copies of the tables.
#[derive(Debug)]
pub(crate) enum Edit {
    Chunk(u32, Arc<Chunk>),
    TokenIn(TokenKey, u32),
    TokenOut(TokenKey, u32),
    KeyIdsIn(Vec<(KeyIdKey, Loc)>),
    KeyIdsOut(Vec<(KeyIdKey, Loc)>),
    AttrsIn(Vec<(u64, Loc)>),
    AttrsOut(Vec<(u64, Loc)>),
    Counts { tokens: usize, items: usize },
    Sweep,
    Seq(u64),
}

/// The writer's own state, shared by both copies.
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

/// One copy of the tables.
#[derive(Default)]
pub(crate) struct Tables {
    /// Changes applied.
    pub(crate) seq: u64,
    seed: u64,
    chunks: Vec<Arc<Chunk>>,
    by_token: HashMap<TokenKey, Multi<u32>, Ids>,
    key_ids: HashMap<KeyIdKey, Multi<Loc>, Ids>,
    attrs: HashMap<u64, Multi<Loc>, Ids>,
    pub(crate) tokens: usize,
    pub(crate) items: usize,
    /// Postings in `key_ids` and `attrs`, dead ones included.
    postings: usize,
}

impl Tables {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// The hash under which `value` of `attr` is posted.
    #[inline]
    pub(crate) fn attr_hash(&self, attr: Attr, value: &[u8]) -> u64 {
        let mut h = Hasher64::new(self.seed ^ (attr as u64));
        h.bytes(value);
        h.finish()
    }

    /// The table key of a key ID.
    pub(crate) fn key_id_key(&self, id: &[u8]) -> KeyIdKey {
        let mut inline = [0u8; 20];
        let n = id.len().min(inline.len());
        inline[..n].copy_from_slice(&id[..n]);
        KeyIdKey {
            hash: self.attr_hash(Attr::KeyId, id),
            id: inline,
            len: u8::try_from(id.len()).unwrap_or(u8::MAX),
        }
    }

    /// The chunk holding slot `i`, and the token in it.
    #[inline]
    pub(crate) fn slot(&self, i: u32) -> Option<(&Arc<Chunk>, &Cell)> {
        let chunk = self.chunks.get((i >> CHUNK_BITS) as usize)?;
        Some((chunk, chunk.cell(i)?))
    }

    /// Every present token: its slot, chunk and cell, in slot order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (u32, &Arc<Chunk>, &Cell)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.cells.iter().enumerate().filter_map(move |(i, cell)| {
                let slot = u32::try_from((c << CHUNK_BITS) | i).ok()?;
                Some((slot, chunk, cell.as_ref()?))
            })
        })
    }

    /// The slot of a present token.
    pub(crate) fn slot_of(&self, token: &str) -> Option<u32> {
        let key = TokenKey::new(token);
        let slots = self.by_token.get(&key)?.as_slice();
        if key.exact() {
            return slots.first().copied();
        }
        slots.iter().copied().find(|&s| {
            self.slot(s)
                .is_some_and(|(_, c)| c.shard.token_id.as_str() == token)
        })
    }

    /// The shard a posting points into, if the posting is still live.
    #[inline]
    pub(crate) fn live(&self, loc: Loc) -> Option<(&Arc<Chunk>, &Cell)> {
        self.slot(loc.slot).filter(|(_, c)| c.gen == loc.gen)
    }

    /// The postings of a key ID (live and dead).
    pub(crate) fn key_id_postings(&self, key: &KeyIdKey) -> &[Loc] {
        self.key_ids.get(key).map_or(&[], Multi::as_slice)
    }

    /// The postings of an attribute hash (live and dead; other values with the same hash too).
    pub(crate) fn attr_postings(&self, hash: u64) -> &[Loc] {
        self.attrs.get(&hash).map_or(&[], Multi::as_slice)
    }

    fn postings_of(&self, shard: &Shard, positions: impl Iterator<Item = u32>) -> Postings {
        let (mut keys, mut attrs) = (Vec::new(), Vec::new());
        for idx in positions {
            let Some(record) = shard.record(idx) else {
                continue;
            };
            let loc = Loc::new(shard.gen, shard.slot, idx, record.kind());
            if !record.label().is_empty() {
                attrs.push((self.attr_hash(Attr::Label, record.label().as_bytes()), loc));
            }
            if let Some((cert, Some(meta))) = record.cert() {
                attrs.push((self.attr_hash(Attr::Subject, meta.subject(&cert.der)), loc));
                attrs.push((self.attr_hash(Attr::Issuer, meta.issuer(&cert.der)), loc));
                if let Some(cn) = &meta.subject_cn {
                    attrs.push((self.attr_hash(Attr::SubjectCn, cn.as_bytes()), loc));
                }
                if let Some(cn) = &meta.issuer_cn {
                    attrs.push((self.attr_hash(Attr::IssuerCn, cn.as_bytes()), loc));
                }
            }
            let id = record.key_id();
            if !id.is_empty() {
                keys.push((self.key_id_key(id), loc));
            }
        }
        (keys, attrs)
    }

    /// Plans, applies here and records a fresh shard in its slot.
    fn install(&mut self, log: &mut Vec<Edit>, mut shard: Shard) {
        let count = u32::try_from(shard.records.len()).unwrap_or(NONE);
        let (keys, attrs) = self.postings_of(&shard, 0..count);
        shard.postings += keys.len() + attrs.len();
        self.record(log, Edit::KeyIdsIn(keys));
        self.record(log, Edit::AttrsIn(attrs));
        self.set_slot(log, shard);
    }

    fn set_slot(&mut self, log: &mut Vec<Edit>, shard: Shard) {
        let slot = shard.slot;
        self.set_cell(log, slot, Some(Arc::new(shard)));
    }

    fn set_cell(&mut self, log: &mut Vec<Edit>, slot: u32, shard: Option<Arc<Shard>>) {
        let c = slot >> CHUNK_BITS;
        let cell = (slot as usize) & (CHUNK - 1);
        let chunk = match self.chunks.get(c as usize) {
            Some(old) => old.with(cell, shard),
            None => Chunk::empty().with(cell, shard),
        };
        self.record(log, Edit::Chunk(c, Arc::new(chunk)));
    }

    fn record(&mut self, log: &mut Vec<Edit>, edit: Edit) {
        self.apply(&edit);
        log.push(edit);
    }

    /// Sets a token's items: inserts it, or updates it in place. Applies the change here and
    /// appends it to `log`; false if nothing changed.
    pub(crate) fn put_token(
        &mut self,
        w: &mut WriterState,
        log: &mut Vec<Edit>,
        id: TokenId,
        items: Vec<Item>,
    ) -> bool {
        let Some(slot) = self.slot_of(id.as_str()) else {
            let slot = w.slot();
            let shard = Shard::build(id.clone(), slot, w.gen(), items);
            let counts = Edit::Counts {
                tokens: self.tokens + 1,
                items: self.items + shard.live(),
            };
            self.record(log, Edit::TokenIn(TokenKey::new(id.as_str()), slot));
            self.install(log, shard);
            self.record(log, counts);
            return true;
        };
        let Some(old) = self.slot(slot).map(|(_, c)| c.shard.clone()) else {
            return false;
        };
        let update = Shard::update(&old, items);
        if update.removed.is_empty() && update.added.is_empty() {
            return false;
        }
        let mut shard = update.shard;
        let counts = Edit::Counts {
            tokens: self.tokens,
            items: self.items - old.live() + shard.live(),
        };
        if shard.dead() > shard.live().max(8) {
            // Too many tombstones: rebuild compact under a new generation; every posting of
            // the old one is dead.
            w.dead += old.postings;
            self.install(log, shard.compacted(w.gen()));
        } else {
            let (gone_keys, gone_attrs) = self.postings_of(&old, update.removed.iter().copied());
            let (keys, attrs) = self.postings_of(&shard, update.added.iter().copied());
            shard.postings =
                old.postings - gone_keys.len() - gone_attrs.len() + keys.len() + attrs.len();
            self.record(log, Edit::KeyIdsOut(gone_keys));
            self.record(log, Edit::AttrsOut(gone_attrs));
            self.record(log, Edit::KeyIdsIn(keys));
            self.record(log, Edit::AttrsIn(attrs));
            self.set_slot(log, shard);
        }
        self.record(log, counts);
        true
    }

    /// Removes a token and so all its items: applies it here and appends it to `log`. False if
    /// it was not there.
    pub(crate) fn drop_token(
        &mut self,
        w: &mut WriterState,
        log: &mut Vec<Edit>,
        id: &str,
    ) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        let live = match self.slot(slot) {
            Some((_, c)) => {
                w.dead += c.shard.postings;
                c.shard.live()
            }
            None => 0,
        };
        let counts = Edit::Counts {
            tokens: self.tokens - 1,
            items: self.items - live,
        };
        self.record(log, Edit::TokenOut(TokenKey::new(id), slot));
        self.set_cell(log, slot, None);
        self.record(log, counts);
        w.release(slot);
        true
    }

    /// Appends a sweep of dead postings to `log` when they are many.
    pub(crate) fn maybe_sweep(&mut self, w: &mut WriterState, log: &mut Vec<Edit>) {
        let live = self.postings.saturating_sub(w.dead);
        if w.dead > live / 2 + SWEEP_SLACK {
            self.record(log, Edit::Sweep);
            w.dead = 0;
        }
    }

    /// Applies one edit.
    pub(crate) fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::Chunk(i, chunk) => {
                let i = *i as usize;
                while self.chunks.len() <= i {
                    self.chunks.push(Arc::new(Chunk::empty()));
                }
                if let Some(c) = self.chunks.get_mut(i) {
                    c.clone_from(chunk);
                }
            }
            Edit::TokenIn(h, slot) => add(&mut self.by_token, *h, *slot),
            Edit::TokenOut(h, slot) => {
                remove(&mut self.by_token, *h, |s| s == slot);
            }
            Edit::KeyIdsIn(postings) => {
                self.postings += postings.len();
                for &(k, loc) in postings {
                    add(&mut self.key_ids, k, loc);
                }
            }
            Edit::KeyIdsOut(postings) => {
                for (k, loc) in postings {
                    self.postings -= remove(&mut self.key_ids, *k, |l| l == loc);
                }
            }
            Edit::AttrsIn(postings) => {
                self.postings += postings.len();
                for &(h, loc) in postings {
                    add(&mut self.attrs, h, loc);
                }
            }
            Edit::AttrsOut(postings) => {
                for (h, loc) in postings {
                    self.postings -= remove(&mut self.attrs, *h, |l| l == loc);
                }
            }
            Edit::Counts { tokens, items } => {
                self.tokens = *tokens;
                self.items = *items;
            }
            Edit::Sweep => {
                let chunks = &self.chunks;
                let alive = |l: &Loc| {
                    chunks
                        .get((l.slot >> CHUNK_BITS) as usize)
                        .and_then(|c| c.cell(l.slot))
                        .is_some_and(|c| c.gen == l.gen)
                };
                let mut kept = 0;
                self.key_ids.retain(|_, m| {
                    let any = m.retain(alive);
                    kept += m.as_slice().len();
                    any
                });
                self.attrs.retain(|_, m| {
                    let any = m.retain(alive);
                    kept += m.as_slice().len();
                    any
                });
                self.key_ids.shrink_to_fit();
                self.attrs.shrink_to_fit();
                self.postings = kept;
            }
            Edit::Seq(seq) => self.seq = *seq,
        }
    }

    /// Resolves a persistent reference by its position hint: its slot's chunk, and one byte
    /// of hint flags in it.
    #[inline]
    pub(crate) fn resolve_hint(&self, r: &RefParts<'_>) -> Option<ItemRef> {
        let chunk = self.chunks.get((r.slot >> CHUNK_BITS) as usize)?;
        // Read the flags where the reference says they were before (and independently of)
        // reading the slot: the two loads then miss the cache in parallel. `black_box` keeps
        // the compiler from moving this load after the slot's checks.
        let guess = std::hint::black_box(chunk.hints.get(r.pos as usize).copied());
        let cell = chunk.cell(r.slot)?;
        if cell.gen != r.gen || r.idx >= cell.len {
            return None;
        }
        let word = match guess {
            Some(word) if cell.base.checked_add(r.idx) == Some(r.pos) => word,
            _ => chunk.hint(cell, r.idx)?,
        };
        let class = match r.class {
            ItemClass::Key if word & HINT_KEY != 0 => ItemClass::Key,
            ItemClass::Certificate if word & HINT_CERT != 0 => ItemClass::Certificate,
            ItemClass::Identity if word & HINT_IDENTITY != 0 => ItemClass::Identity,
            _ => return None,
        };
        Some(ItemRef::new(chunk.clone(), r.slot, r.idx, class))
    }

    /// Resolves a persistent reference by name: token, then object ID in the token's table.
    pub(crate) fn resolve_name(&self, r: &RefParts<'_>) -> Result<ItemRef> {
        let not_found = || Error::object_not_found("no such item in the keychain index");
        let token = r.token_str()?;
        let Some((slot, (chunk, cell))) =
            self.slot_of(token).and_then(|s| Some((s, self.slot(s)?)))
        else {
            TokenId::parse(token)
                .map_err(|_| Error::bad_parameter("persistent reference: malformed token ID"))?;
            return Err(not_found());
        };
        let kind = match r.class {
            ItemClass::Key => Kind::Key,
            _ => Kind::Cert,
        };
        let shard = &cell.shard;
        let idx = shard
            .find(kind, r.object, r.name_hash())
            .ok_or_else(not_found)?;
        if r.class == ItemClass::Identity && shard.entry(idx).is_none_or(|e| e.partner == NONE) {
            return Err(not_found());
        }
        Ok(ItemRef::new(chunk.clone(), slot, idx, r.class))
    }

    /// Bytes of this copy's tables, and of the shards (index structures, item payload).
    pub(crate) fn bytes(&self) -> (usize, usize, usize) {
        fn map<K, V>(m: &HashMap<K, V, Ids>) -> usize {
            // hashbrown: one control byte per bucket, buckets = capacity * 8 / 7.
            m.capacity() * 8 / 7 * (std::mem::size_of::<(K, V)>() + 1)
        }
        let tables = std::mem::size_of::<Self>()
            + self.chunks.capacity() * std::mem::size_of::<usize>()
            + map(&self.by_token)
            + map(&self.key_ids)
            + map(&self.attrs)
            + self.by_token.values().map(Multi::heap_bytes).sum::<usize>()
            + self.key_ids.values().map(Multi::heap_bytes).sum::<usize>()
            + self.attrs.values().map(Multi::heap_bytes).sum::<usize>();
        let (mut shards, mut payload) = (0, 0);
        for chunk in &self.chunks {
            shards += chunk.bytes();
        }
        for (_, _, c) in self.slots() {
            shards += c.shard.index_bytes();
            payload += c.shard.payload_bytes();
        }
        (tables, shards, payload)
    }

    /// Postings in the key ID and attribute tables, dead ones included.
    pub(crate) fn postings(&self) -> usize {
        self.postings
    }
}

fn add<K: Hash + Eq, T: Copy + PartialEq>(map: &mut HashMap<K, Multi<T>, Ids>, k: K, t: T) {
    map.entry(k)
        .and_modify(|m| m.push(t))
        .or_insert(Multi::One(t));
}

/// Removes the values matching `is` under `k`; returns how many went.
fn remove<K: Hash + Eq, T: Copy + PartialEq>(
    map: &mut HashMap<K, Multi<T>, Ids>,
    k: K,
    mut is: impl FnMut(&T) -> bool,
) -> usize {
    let Some(m) = map.get_mut(&k) else {
        return 0;
    };
    let before = m.as_slice().len();
    let any = m.retain(|t| !is(t));
    let after = if any { m.as_slice().len() } else { 0 };
    if !any {
        map.remove(&k);
    }
    before - after
}

/// For a truncated key ID posting: the key ID of the record it points at.
pub(crate) fn record_key_id<'a>(shard: &'a Shard, loc: &Loc) -> &'a [u8] {
    shard.record(loc.idx()).map_or(&[], Record::key_id)
}
