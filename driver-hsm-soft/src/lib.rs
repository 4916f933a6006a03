//! # driver-hsm-soft
//!
//! tokenkit's persistent software token: the counterpart of CryptoTokenKit's persistent (HSM)
//! tokens. Each token is one file in a store directory, holding P-256 and Ed25519 keys and
//! certificates behind a PIN with a retry counter and an unblocking code (PUK). Tokens are
//! always available: the [`SoftTokenProvider`] (slot provider `hsm-soft`) reports one
//! persistent slot per token file when the hub starts, and creating or deleting a token
//! through it makes the hub report the insertion or removal at once. The [`SoftTokenDriver`]
//! (driver `soft`) serves those slots; token IDs are `soft:<uuid>`.
//!
//! Linking this crate registers both with every hub. The registered provider uses
//! [`default_store`]: `$TOKENKIT_HOME`, else `$XDG_DATA_HOME/tokenkit`, else
//! `~/.local/share/tokenkit`.
//!
//! ```
//! # fn main() -> token_core::Result<()> {
//! use driver_hsm_soft::{CreateOptions, KdfParams, SoftToken};
//! use token_core::{block_on, HashAlg, KeySpec, KeyType, PinKind, SignatureAlgorithm};
//!
//! let store = tempfile::tempdir().unwrap();
//! // Cheap PIN hashing keeps the example fast; real tokens keep the default (Argon2id, 19 MiB).
//! let options = CreateOptions::new("example", "123456".into(), "12345678".into())
//!     .kdf(KdfParams::insecure_fast());
//! let id = driver_hsm_soft::create_with(store.path(), &options)?;
//!
//! let token = SoftToken::open(&driver_hsm_soft::token_path(store.path(), &id)?)?;
//! let mut session = token.session()?;
//! let signature = block_on(async {
//!     session.verify_pin(PinKind::User, &"123456".into()).await?;
//!     let spec = KeySpec { key_type: KeyType::EcP256, label: "signing".into(), slot: None, usage: None };
//!     let key = session.generate_key(&spec).await?;
//!     session
//!         .sign(&key.object_id, SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256), b"hello")
//!         .await
//! })?;
//! assert_eq!(signature[0], 0x30); // DER ECDSA-Sig-Value
//! // Without the PIN the public parts are listed, as a card's are.
//! let file = driver_hsm_soft::TokenFile::read(token.path())?;
//! assert_eq!(file.items().len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Storage
//!
//! A random data key seals every private key (XChaCha20-Poly1305, associated data binding the
//! token UUID, the record ID and its public part). The data key is stored wrapped twice: under a
//! key derived from the PIN and under one derived from the PUK (Argon2id, parameters in the
//! file, see [`KdfParams`]). Public parts stay readable without the PIN and are covered by a
//! SHA-256 checksum: a truncated, damaged or newer-version file gives `CorruptedData` and is
//! never rewritten. The records (labels, public keys, certificates) are also covered by a
//! contents seal that only the data key can make (format 2): a record changed, swapped or
//! removed by anything without the PIN gives `CorruptedData` at the next login, the file left
//! as it is. Without the PIN such a change can be seen only as far as a card's could: listing
//! works before login, as with a card. Version 1 files (no seal) still open and are sealed at
//! their first login. Writes are atomic (temporary file, fsync, rename, fsync of the directory),
//! files are mode 0600, and a `flock` on the store directory serializes read-modify-write
//! between processes. The PIN counter is decremented on disk before a PIN is checked and reset
//! after it proved right, so killing the process mid-check never gives a try back.
//!
//! ## Where next
//!
//! - [`SoftTokenProvider`]: create and delete tokens with a hub running.
//! - [`P256TokenKey`] / [`Ed25519TokenKey`]: any token's key as a RustCrypto `AsyncSigner`.
//! - [`self_signed_certificate`]: give a key an X.509 certificate, making an identity.
//! - `benches/sign.rs`: signature rates against the bare crypto crates and SoftHSMv2.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod crypto;
mod format;
mod keys;
mod provider;
mod signer;
mod store;
mod token;

pub use crypto::KdfParams;
pub use format::FORMAT_VERSION;
pub use keys::{sha256, spki_der, spki_pem};
pub use provider::{SoftTokenProvider, PROVIDER_ID, STORE_POLL_INTERVAL};
pub use signer::{Ed25519TokenKey, P256TokenKey, SharedSession};
pub use store::{
    create, create_with, default_store, delete, list, persistent_config, token_path, CreateOptions,
    StoredToken, TokenFile, DRIVER_ID, FILE_EXTENSION, INSECURE_KDF_ENV, MAX_PIN_LEN, MIN_PIN_LEN,
};
pub use token::{SoftToken, SoftTokenDriver};
/// Moved to token-core, where every driver's tokens can use them; re-exported here so code
/// written against this crate keeps building.
pub use token_core::{self_signed_certificate, self_signed_certificate_der};

token_core::register_driver!(token_core::DriverRegistration::new(DRIVER_ID, 0, || {
    std::sync::Arc::new(SoftTokenDriver)
}));

token_core::register_slot_provider!(token_core::SlotProviderRegistration::new(
    PROVIDER_ID,
    || Ok(std::sync::Arc::new(SoftTokenProvider::with_default_store()?))
));
