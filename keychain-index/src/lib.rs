//! # keychain-index
//!
//! The keychain view of tokens: what CryptoTokenKit does when it "copies the items to the
//! keychain when the token is inserted, and deletes them from the keychain when the token is
//! removed" (`shared/seeds/001`). Every key, certificate and identity of every present token is
//! here, tagged with its [`TokenId`](token_core::TokenId), and can be found by class, token ID,
//! label, key ID, subject or issuer (DER or common name) and usage, and named across processes
//! by a [persistent reference](ItemRef::persistent_ref).
//!
//! - [`KeychainIndex::attach`] follows a [`Hub`](token_core::Hub): insertion, removal, and key
//!   generation, import or deletion through a session are reflected at once;
//!   [`KeychainIndex::sync`] waits until the index has caught up.
//! - [`KeychainIndex::insert_token`] / [`KeychainIndex::remove_token`] feed it directly.
//! - [`KeychainIndex::query`] answers a [`Query`] with [`Matches`] of [`ItemRef`]s; an item
//!   reference gives its attributes and [opens a session](ItemRef::open_session) on its token.
//! - [`KeychainIndex::resolve`] turns a persistent reference back into an item, or
//!   `ObjectNotFound` (the keychain's `errSecItemNotFound`) while its token is absent.
//!
//! ```
//! use keychain_index::{KeychainIndex, Query};
//! use token_core::{
//!     Constraint, ErrorCode, Item, ItemClass, KeyItem, KeyType, KeyUsage, ObjectId, PublicKey,
//!     TokenId,
//! };
//!
//! let index = KeychainIndex::new();
//! let token = TokenId::parse("piv:0123456789")?;
//! let public = PublicKey { key_type: KeyType::EcP256, raw: vec![0x04; 65] };
//! let key = KeyItem::new(
//!     ObjectId::new([0x9a]),
//!     "PIV Authentication",
//!     public,
//!     KeyUsage::SIGN,
//!     Constraint::Pin,
//! );
//! index.insert_token(token.clone(), vec![Item::Key(key)]);
//!
//! // kSecClass: kSecClassKey, kSecAttrTokenID: "piv:0123456789", kSecReturnRef: true
//! let keys = index.query(&Query::keys().token(token.clone()));
//! assert_eq!(keys.len(), 1);
//! let key = keys.first().expect("one key");
//! assert_eq!(key.label(), "PIV Authentication");
//! assert_eq!(key.class(), ItemClass::Key);
//!
//! // kSecReturnPersistentRef: bytes another process can resolve.
//! let reference = key.persistent_ref();
//! assert_eq!(index.resolve(&reference)?, key);
//!
//! // The card is pulled: the reference names nothing until it is back.
//! index.remove_token(&token);
//! assert_eq!(index.resolve(&reference).unwrap_err().code(), ErrorCode::ObjectNotFound);
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Following a hub (here with the test kit's scriptable slots and no driver, so no token
//! appears):
//!
//! ```
//! use std::sync::Arc;
//! use keychain_index::{KeychainIndex, Query};
//! use token_core::{testkit::TestSlots, Hub};
//!
//! let slots = TestSlots::new();
//! let hub = Arc::new(Hub::builder().registered(false).provider(slots.provider()).start()?);
//! let index = KeychainIndex::attach(&hub)?;
//! index.sync()?;
//! assert!(index.query(&Query::identities()).is_empty());
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! ## How it is built
//!
//! Each token's items are a *shard*, built once and shared behind an `Arc`: the items, a
//! 16-byte entry per item, a name table for lookups by object ID, the identity pairing. The
//! global tables (a slot table of shards in chunks of 64, and hash indexes from token ID, key
//! ID, label, subject and issuer to positions) exist in two copies. A writer applies a change
//! to the copy no reader is using, makes it the active one, then replays the same edits on the
//! other once its last readers are gone. Readers take the active copy and never block: the
//! writer only ever locks the other one. A change (a whole token, however many items) is
//! visible at once and whole.
//!
//! Removing a token empties its slot; its postings in the indexes die with it (each names the
//! shard's generation) and are swept in bulk later, so removal costs the same for 10 items or
//! 10,000. A token whose items change (a key generated, a certificate deleted) keeps the
//! positions of the items that did not change.
//!
//! A persistent reference carries the item's name (class, token ID, object ID) and a hint: its
//! slot, position and the shard's generation. Resolving it checks the generation and one byte
//! of flags in the slot's chunk, which stays in cache; a stale hint falls back to the lookup
//! by name. An [`ItemRef`] holds its chunk, which keeps its token's shard alive: it reads the
//! item as it was even after the token is gone.
//!
//! `benches/index.rs` compares all of this with SQLite on a million items.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod hash;
mod index;
mod item_ref;
mod persistent;
mod query;
mod shard;
mod tables;

pub use index::{KeychainIndex, MemoryUsage};
pub use item_ref::{Attributes, ItemRef, Matches};
pub use query::Query;
