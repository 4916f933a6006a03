//! What a driver author implements: [`TokenDriver`] (probe a slot, build tokens), [`Token`]
//! (one application on one device, with its items), [`SessionDelegate`] (the operations).

use core::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::model::{
    CertificateItem, DecryptAlgorithm, Item, KeyItem, KeyType, KeyUsage, ObjectId, Operation, Pin,
    PinKind, PinStatus, SignatureAlgorithm, TokenId,
};
use crate::slot::{Device, SlotKind};

/// A token driver: recognises one kind of token application and builds [`Token`]s for it
/// (the counterpart of `TKTokenDriver` / `TKSmartCardTokenDriver`).
///
/// Register it with [`crate::register_driver!`]; the hub probes every registered driver, in
/// priority order, on every slot of a kind the driver handles.
#[async_trait]
pub trait TokenDriver: Send + Sync + 'static {
    /// The driver's ID, the prefix of its token IDs (`piv`, `openpgp`, `fido2`, `soft`).
    fn id(&self) -> &'static str;

    /// A human name (`PIV (SP 800-73-4)`).
    fn name(&self) -> &'static str;

    /// The slot kinds this driver probes. Smart cards by default.
    fn slot_kinds(&self) -> &'static [SlotKind] {
        &[SlotKind::SmartCard]
    }

    /// A cheap first filter on a card's ATR before any APDU is sent. True by default: most
    /// applications are found by SELECT, not by ATR.
    fn matches_atr(&self, _atr: &[u8]) -> bool {
        true
    }

    /// Looks at the device and, if this driver's application is there, builds its token.
    ///
    /// A smart-card driver typically SELECTs its AID inside
    /// [`crate::SmartCard::begin_session`], reads what it needs to name the token (a serial, a
    /// GUID) and its items, and returns [`Claim::Token`]. It answers [`Claim::NotMine`] when its
    /// application is absent. Probing must leave the card usable by other drivers.
    ///
    /// # Errors
    /// An error means the probe itself failed (the card went mute, say): the hub logs it and
    /// goes on with the next driver.
    async fn probe(&self, probe: &Probe) -> Result<Claim>;
}

/// What a driver is given to probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The slot's name.
    pub slot_name: String,
    /// What the slot holds.
    pub device: Device,
    /// For telling the hub (and so the keychain index) that a token's items changed by a
    /// path other than [`crate::TokenSession`] (a driver-specific management API, say).
    pub notifier: crate::hub::ItemsNotifier,
}

/// A driver's answer to a probe.
#[non_exhaustive]
pub enum Claim {
    /// The driver's application is not there.
    NotMine,
    /// A token for the driver's application. Other drivers still probe the device, so a card
    /// with PIV, OpenPGP and FIDO2 on it yields one token per application.
    Token(Arc<dyn Token>),
    /// A token, and no lower-priority driver may probe this device (a vendor driver that
    /// supersedes a generic one).
    Exclusive(Arc<dyn Token>),
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotMine => f.write_str("NotMine"),
            Self::Token(t) => write!(f, "Token({})", t.id()),
            Self::Exclusive(t) => write!(f, "Exclusive({})", t.id()),
        }
    }
}

/// Descriptive facts about a token, for listing (the counterpart of
/// `TKTokenWatcher.TokenInfo` plus the token's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenInfo {
    /// A human label (the cardholder name, the soft token's label).
    pub label: String,
    /// The manufacturer, where known.
    pub manufacturer: Option<String>,
    /// The model or application version, where known.
    pub model: Option<String>,
    /// The device serial number, where known.
    pub serial: Option<String>,
}

/// One token: one application on one device, with its items (the counterpart of `TKToken`).
#[async_trait]
pub trait Token: Send + Sync + 'static {
    /// The token's ID, `driver:instance`, the same every time the same token is inserted.
    fn id(&self) -> &TokenId;

    /// Descriptive facts for listing.
    fn info(&self) -> TokenInfo;

    /// The items the token holds now (the token's keychain contents). Cheap: drivers read
    /// their items when the token is built and keep this list current when a session creates or
    /// deletes one.
    fn items(&self) -> Vec<Item>;

    /// Opens a session: a fresh authentication state on this token.
    ///
    /// # Errors
    /// `TokenNotFound` when the token is gone.
    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>>;

    /// The driver's own token type, for driver-specific extensions reached through
    /// [`crate::TokenHandle::token`]. `None` by default.
    fn as_any(&self) -> Option<&dyn core::any::Any> {
        None
    }
}

/// Parameters of on-token key generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The type of key to generate.
    pub key_type: KeyType,
    /// The label to give it.
    pub label: String,
    /// Where the token has fixed places for keys (a PIV slot like `9c`), which one; `None`
    /// lets the driver choose.
    pub slot: Option<String>,
    /// The usages wanted; `None` for the type's usual ones.
    pub usage: Option<KeyUsage>,
}

/// A private key to import.
#[derive(Clone)]
pub struct KeyImport {
    /// The key as PKCS#8 `PrivateKeyInfo` DER. Zeroized on drop.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The label to give it.
    pub label: String,
    /// Where the token has fixed places for keys, which one.
    pub slot: Option<String>,
}

impl fmt::Debug for KeyImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyImport")
            .field("pkcs8", &"***")
            .field("label", &self.label)
            .field("slot", &self.slot)
            .finish()
    }
}

/// What a driver implements for one session (the counterpart of `TKTokenSessionDelegate`).
///
/// Users never call this directly: [`crate::TokenSession`] wraps it and adds the PIN logic
/// every driver shares (asking the caller's [`crate::PinCallback`] once when an operation
/// answers `AuthenticationNeeded`, never retrying a wrong PIN). A delegate reports
/// `AuthenticationNeeded` when an operation needs a PIN that this session has not verified;
/// it never prompts by itself.
///
/// Every method but `supports`, `pin_status`, `verify_pin` and `sign` has a default that
/// answers `NotImplemented`.
#[async_trait]
pub trait SessionDelegate: Send {
    /// True when the token can do `operation` with the key `key` (`supportsOperation:usingKey:`).
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool;

    /// The state of a PIN: tries left, verified or not.
    ///
    /// # Errors
    /// `NotImplemented` if the token has no such PIN.
    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus>;

    /// Verifies a PIN once. A wrong PIN is `AuthenticationFailed` with the tries left.
    ///
    /// # Errors
    /// `AuthenticationFailed` (wrong or blocked), `TokenNotFound`, `CommunicationError`.
    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()>;

    /// Forgets the session's verified PINs.
    ///
    /// # Errors
    /// Transport errors.
    async fn logout(&mut self) -> Result<()> {
        Ok(())
    }

    /// Signs `data` with the key `key` (`signData:usingKey:algorithm:`).
    ///
    /// # Errors
    /// `AuthenticationNeeded` when a PIN is needed first; `ObjectNotFound` for an unknown key;
    /// `BadParameter` for an algorithm the key cannot do.
    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>>;

    /// Decrypts `data` with the key `key`.
    ///
    /// # Errors
    /// As [`SessionDelegate::sign`].
    async fn decrypt(
        &mut self,
        _key: &ObjectId,
        _algorithm: DecryptAlgorithm,
        _data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(Error::not_implemented("decryption"))
    }

    /// Agrees a shared secret with the peer's public key (raw, as [`crate::PublicKey::raw`]).
    ///
    /// # Errors
    /// As [`SessionDelegate::sign`].
    async fn key_exchange(&mut self, _key: &ObjectId, _peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Err(Error::not_implemented("key exchange"))
    }

    /// Changes a PIN, knowing the current one.
    ///
    /// # Errors
    /// `AuthenticationFailed` with tries left when `old` is wrong.
    async fn change_pin(&mut self, _kind: PinKind, _old: &Pin, _new: &Pin) -> Result<()> {
        Err(Error::not_implemented("PIN change"))
    }

    /// Resets the user PIN with the unblocking code (PUK, resetting code), which also resets
    /// its retry counter.
    ///
    /// # Errors
    /// `AuthenticationFailed` with tries left when `puk` is wrong.
    async fn unblock_pin(&mut self, _puk: &Pin, _new: &Pin) -> Result<()> {
        Err(Error::not_implemented("PIN unblock"))
    }

    /// Generates a key pair on the token.
    ///
    /// # Errors
    /// `AuthenticationNeeded`, `BadParameter` for an unsupported type or slot.
    async fn generate_key(&mut self, _spec: &KeySpec) -> Result<KeyItem> {
        Err(Error::not_implemented("key generation"))
    }

    /// Imports a private key.
    ///
    /// # Errors
    /// `AuthenticationNeeded`, `BadParameter`, `CorruptedData` for a malformed key.
    async fn import_key(&mut self, _key: &KeyImport) -> Result<KeyItem> {
        Err(Error::not_implemented("key import"))
    }

    /// Stores a certificate (DER), with its label and, where the token pairs them, the key it
    /// belongs to.
    ///
    /// # Errors
    /// `AuthenticationNeeded`, `BadParameter`, `CorruptedData` for a malformed certificate.
    async fn import_certificate(
        &mut self,
        _label: &str,
        _der: &[u8],
        _key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        Err(Error::not_implemented("certificate import"))
    }

    /// Deletes an item.
    ///
    /// # Errors
    /// `ObjectNotFound`, `AuthenticationNeeded`.
    async fn delete_item(&mut self, _object: &ObjectId) -> Result<()> {
        Err(Error::not_implemented("item deletion"))
    }

    /// The driver's own session type, for driver-specific operations reached through
    /// [`crate::TokenSession::delegate_mut`]. `None` by default.
    fn as_any_mut(&mut self) -> Option<&mut dyn core::any::Any> {
        None
    }
}
