//! [`KeychainIndex`]: the handle, the writer, and the thread that follows a hub.

use core::fmt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError, Weak,
};
use std::time::Duration;

use token_core::{Error, Hub, Item, Result, TokenId, WatchEvent};

use crate::hash::random_seed;
use crate::item_ref::{Attributes, ItemRef, Matches};
use crate::persistent;
use crate::query::{run, Query};
use crate::tables::{Edit, Tables, WriterState};

struct Shared {
    /// Two copies of the tables. Readers take the active one; the writer changes the other,
    /// makes it active, then replays the change on the first.
    copies: [RwLock<Tables>; 2],
    active: AtomicUsize,
    /// Serialises writers; readers never take it.
    writer: Mutex<WriterState>,
    /// The hub followed, once attached.
    hub: Mutex<Option<Weak<Hub>>>,
    /// The last published sequence number, for [`KeychainIndex::wait_for_change`].
    published: Mutex<u64>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The keychain view of every present token's items: the counterpart of the keychain that
/// CryptoTokenKit fills from tokens (see the crate documentation).
///
/// Cheap to clone: clones share one index. Reads (queries, [`KeychainIndex::resolve`]) never
/// wait for a writer; writes are serialised and each becomes visible at once and whole.
#[derive(Clone)]
pub struct KeychainIndex {
    shared: Arc<Shared>,
}

impl Default for KeychainIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for KeychainIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.shared.read();
        f.debug_struct("KeychainIndex")
            .field("tokens", &t.tokens)
            .field("items", &t.items)
            .field("seq", &t.seq)
            .finish()
    }
}

/// Memory the index uses, from the sizes of its structures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUsage {
    /// Items (keys and certificates) present.
    pub items: usize,
    /// Tokens present.
    pub tokens: usize,
    /// Bytes of the index's own structures: both copies of the tables (slot table, token,
    /// key ID and attribute indexes, with postings not yet swept), and what the shards add to
    /// the items (entries, hint flags, name tables, class lists, parsed certificate fields).
    pub index_bytes: usize,
    /// Bytes of the items as the tokens reported them: the item structs and what they own
    /// (labels, object IDs, public keys, certificate DER).
    pub item_bytes: usize,
    /// Postings in the key ID and attribute indexes, dead ones included.
    pub postings: usize,
    /// Postings of removed tokens not yet swept.
    pub dead_postings: usize,
}

impl MemoryUsage {
    /// Index bytes per item.
    pub fn index_bytes_per_item(&self) -> f64 {
        self.index_bytes as f64 / self.items.max(1) as f64
    }

    /// Index and item bytes per item.
    pub fn total_bytes_per_item(&self) -> f64 {
        (self.index_bytes + self.item_bytes) as f64 / self.items.max(1) as f64
    }
}

impl KeychainIndex {
    /// An empty index, fed through [`KeychainIndex::insert_token`] and
    /// [`KeychainIndex::remove_token`].
    pub fn new() -> Self {
        let seed = random_seed();
        Self {
            shared: Arc::new(Shared {
                copies: [
                    RwLock::new(Tables::new(seed)),
                    RwLock::new(Tables::new(seed)),
                ],
                active: AtomicUsize::new(0),
                // Generations start at a random point, so a reference made by another process
                // rarely passes even the first check of its position hint.
                writer: Mutex::new(WriterState::new(seed.rotate_left(32) >> 8)),
                hub: Mutex::new(None),
                published: Mutex::new(0),
                changed: Condvar::new(),
            }),
        }
    }

    /// An index that follows `hub`: every token present now is copied in before this returns,
    /// and one thread named `keychain-index` applies the hub's watcher events from then on:
    /// a token's items are copied in when it is inserted, read again when they change (key
    /// generation, import, deletion through a session), and dropped when it is removed.
    ///
    /// The thread ends when the hub is dropped, or at its next event once every clone of the
    /// index is dropped. Events only say *which* token changed; the thread reads the hub's
    /// present state for it, so a burst of events is applied as one change.
    ///
    /// # Errors
    /// `CommunicationError` if the thread cannot be started.
    pub fn attach(hub: &Arc<Hub>) -> Result<Self> {
        let index = Self::new();
        let events = hub.watcher().subscribe();
        *lock(&index.shared.hub) = Some(Arc::downgrade(hub));
        // The subscription opens with an `Inserted` for every present token; loading them
        // here as well makes the index complete on return.
        let present: BTreeSet<TokenId> = hub.token_ids().into_iter().collect();
        index.refresh(hub, present);
        let shared = Arc::downgrade(&index.shared);
        let hub = Arc::downgrade(hub);
        std::thread::Builder::new()
            .name("keychain-index".into())
            .spawn(move || follow(&events, &hub, &shared))
            .map_err(|e| {
                Error::communication("cannot start the keychain index thread").with_source(e)
            })?;
        Ok(index)
    }

    /// The number of changes applied so far; it grows by one with every change that
    /// altered the index.
    pub fn seq(&self) -> u64 {
        self.shared.read().seq
    }

    /// Waits until [`KeychainIndex::seq`] is past `seq` or `timeout` has passed, and returns
    /// it: how a caller learns that the watcher thread applied a change (a token inserted, a
    /// key generated) without polling.
    pub fn wait_for_change(&self, seq: u64, timeout: Duration) -> u64 {
        let published = lock(&self.shared.published);
        let (published, _) = self
            .shared
            .changed
            .wait_timeout_while(published, timeout, |now| *now <= seq)
            .unwrap_or_else(PoisonError::into_inner);
        *published
    }

    /// Brings the index up to date with the hub it follows, and returns [`KeychainIndex::seq`]:
    /// after this returns, every change the hub knew of when it was called (a key a session
    /// just generated, a token just removed) is in the index.
    ///
    /// It waits for the hub to handle every event reported so far, then reads the items of
    /// every present token and applies what differs, without waiting for the watcher thread.
    /// That costs a read of every token's item list; [`KeychainIndex::sync_token`] reads only
    /// one. An index that follows no hub is always up to date.
    ///
    /// # Errors
    /// `CommunicationError` if the hub it followed is gone.
    pub fn sync(&self) -> Result<u64> {
        let Some(hub) = self.hub()? else {
            return Ok(self.seq());
        };
        hub.settle();
        let mut ids: BTreeSet<TokenId> = hub.token_ids().into_iter().collect();
        ids.extend(self.token_ids());
        Ok(self.refresh(&hub, ids))
    }

    /// [`KeychainIndex::sync`] for one token: reads its items from the hub (or drops it if the
    /// hub no longer has it).
    ///
    /// # Errors
    /// `CommunicationError` if the hub it followed is gone.
    pub fn sync_token(&self, id: &TokenId) -> Result<u64> {
        let Some(hub) = self.hub()? else {
            return Ok(self.seq());
        };
        hub.settle();
        Ok(self.refresh(&hub, BTreeSet::from([id.clone()])))
    }

    fn hub(&self) -> Result<Option<Arc<Hub>>> {
        match &*lock(&self.shared.hub) {
            None => Ok(None),
            Some(weak) => weak
                .upgrade()
                .map(Some)
                .ok_or_else(|| Error::communication("the hub this index followed is gone")),
        }
    }

    /// Reads the hub's present state of `ids` into the index, as one change.
    fn refresh(&self, hub: &Hub, ids: BTreeSet<TokenId>) -> u64 {
        self.shared.write(|t, w, log| {
            let mut changed = false;
            for id in ids {
                // Read under the writer lock, so the last read is the last applied.
                changed |= match hub.token(&id) {
                    Ok(handle) if handle.is_present() => t.put_token(w, log, id, handle.items()),
                    _ => t.drop_token(w, log, id.as_str()),
                };
            }
            changed
        })
    }

    /// Copies a token's items in, tagged with its token ID, replacing what the index had for
    /// it; returns [`KeychainIndex::seq`]. Items that did not change keep their place, so
    /// persistent references to them resolve by their hint.
    pub fn insert_token(&self, id: TokenId, items: Vec<Item>) -> u64 {
        self.shared
            .write(|t, w, log| t.put_token(w, log, id, items))
    }

    /// [`KeychainIndex::insert_token`] for many tokens, visible together.
    pub fn insert_tokens(&self, tokens: impl IntoIterator<Item = (TokenId, Vec<Item>)>) -> u64 {
        self.shared.write(|t, w, log| {
            tokens.into_iter().fold(false, |changed, (id, items)| {
                t.put_token(w, log, id, items) | changed
            })
        })
    }

    /// Drops every item of a token; returns [`KeychainIndex::seq`]. Persistent references to
    /// them resolve to `ObjectNotFound` from now on, until the token is inserted again.
    pub fn remove_token(&self, id: &TokenId) -> u64 {
        self.shared
            .write(|t, w, log| t.drop_token(w, log, id.as_str()))
    }

    /// The tokens whose items are in the index.
    pub fn token_ids(&self) -> Vec<TokenId> {
        let t = self.shared.read();
        t.slots()
            .map(|(_, _, c)| c.shard.token_id.clone())
            .collect()
    }

    /// True when the token's items are in the index.
    pub fn contains_token(&self, id: &TokenId) -> bool {
        self.shared.read().slot_of(id.as_str()).is_some()
    }

    /// The number of items (keys and certificates).
    pub fn len(&self) -> usize {
        self.shared.read().items
    }

    /// True when there is no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items matching `query` (`kSecReturnRef`).
    pub fn query(&self, query: &Query) -> Matches {
        let t = self.shared.read();
        let mut out = Matches::with_capacity(query.limit.unwrap_or(64).min(1024));
        run(&t, query, |chunk, slot, idx, class| {
            out.push(chunk, slot, idx, class)
        });
        out
    }

    /// The first item matching `query`.
    pub fn first(&self, query: &Query) -> Option<ItemRef> {
        self.query(&query.clone().limit(1)).first()
    }

    /// The attributes of the items matching `query` (`kSecReturnAttributes`).
    pub fn query_attributes(&self, query: &Query) -> Vec<Attributes> {
        self.query(query).iter().map(|i| i.attributes()).collect()
    }

    /// How many items match `query`, without making references.
    pub fn count(&self, query: &Query) -> usize {
        let t = self.shared.read();
        let mut n = 0;
        run(&t, query, |_, _, _, _| n += 1);
        n
    }

    /// The item a persistent reference names, if it is in the index now.
    ///
    /// # Errors
    /// `ObjectNotFound` when the item is not in the index (its token was removed, or the item
    /// deleted); `BadParameter` for bytes that are not a persistent reference;
    /// `CorruptedData` for a reference that is truncated or damaged.
    pub fn resolve(&self, persistent_ref: &[u8]) -> Result<ItemRef> {
        let parts = persistent::decode(persistent_ref)?;
        let t = self.shared.read();
        match t.resolve_hint(&parts) {
            Some(item) => Ok(item),
            None => t.resolve_name(&parts),
        }
    }

    /// Memory used, counted from the sizes of the structures.
    pub fn memory(&self) -> MemoryUsage {
        let dead = lock(&self.shared.writer).dead;
        let t = self.shared.read();
        let (tables, shards, item_bytes) = t.bytes();
        MemoryUsage {
            items: t.items,
            tokens: t.tokens,
            // Two copies of the tables; the shards are shared.
            index_bytes: 2 * tables + shards,
            item_bytes,
            postings: t.postings(),
            dead_postings: dead,
        }
    }
}

impl Shared {
    /// The active copy of the tables, read-locked. Never blocks: the writer only ever
    /// write-locks the copy that is not active, and a reader that finds it locked takes the
    /// other, which is then the current one.
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        loop {
            let a = self.active.load(Ordering::Acquire);
            for i in [a, 1 - a] {
                match self.copies.get(i).map(RwLock::try_read) {
                    Some(Ok(t)) => return t,
                    Some(Err(TryLockError::Poisoned(p))) => return p.into_inner(),
                    _ => {}
                }
            }
            std::hint::spin_loop();
        }
    }

    fn write_copy(&self, i: usize) -> std::sync::RwLockWriteGuard<'_, Tables> {
        let copy = if i == 0 {
            &self.copies[0]
        } else {
            &self.copies[1]
        };
        copy.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one change. `f` plans it on the inactive copy, applying each edit there and
    /// logging it, and says whether anything changed; that copy is then made active and the
    /// log replayed on the other. Readers meanwhile read whichever copy is not being written.
    fn write(&self, f: impl FnOnce(&mut Tables, &mut WriterState, &mut Vec<Edit>) -> bool) -> u64 {
        let mut w = lock(&self.writer);
        let active = self.active.load(Ordering::Acquire);
        let next = 1 - active;
        let mut log = Vec::new();
        let seq = {
            let mut t = self.write_copy(next);
            if !f(&mut t, &mut w, &mut log) {
                debug_assert!(log.is_empty());
                return t.seq;
            }
            t.maybe_sweep(&mut w, &mut log);
            let seq = t.seq + 1;
            t.apply(&Edit::Seq(seq));
            seq
        };
        self.active.store(next, Ordering::Release);
        {
            // Waits for the readers that took this copy before the switch.
            let mut t = self.write_copy(active);
            for edit in &log {
                t.apply(edit);
            }
            t.apply(&Edit::Seq(seq));
        }
        drop(log);
        *lock(&self.published) = seq;
        self.changed.notify_all();
        seq
    }
}

/// The watcher thread: coalesces each burst of events into one set of token IDs and reads
/// their present state from the hub.
fn follow(events: &Receiver<WatchEvent>, hub: &Weak<Hub>, shared: &Weak<Shared>) {
    fn token(event: WatchEvent) -> Option<TokenId> {
        match event {
            WatchEvent::Inserted(id) | WatchEvent::ItemsChanged(id) | WatchEvent::Removed(id) => {
                Some(id)
            }
            _ => None,
        }
    }
    while let Ok(first) = events.recv() {
        let mut ids: BTreeSet<TokenId> = token(first).into_iter().collect();
        ids.extend(events.try_iter().filter_map(token));
        let (Some(hub), Some(shared)) = (hub.upgrade(), shared.upgrade()) else {
            return;
        };
        KeychainIndex { shared }.refresh(&hub, ids);
    }
}
