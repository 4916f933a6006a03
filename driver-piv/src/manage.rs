//! Driver-specific operations on a present PIV token: the management key, key generation with
//! YubiKey policies, certificates, data objects; and naming keys the way PIV tools do.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use token_core::{CertificateItem, Error, Item, KeyItem, ObjectId, Pin, Result, TokenId};

use crate::commands::{self, Metadata};
use crate::driver::{read_slots, Shared};
use crate::mgmt::ManagementKey;
use crate::objects::parse_certificate_container;
use crate::types::{keyref, objects, AlgorithmId, PinPolicy, SlotId, TouchPolicy};

/// The live PIV tokens, by ID, so [`PivManagement::for_token`] can reach one. Entries die with
/// their token (the hub drops it when the card goes).
type Live = Mutex<Vec<(TokenId, Weak<Shared>)>>;

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

pub(crate) fn register(shared: &Arc<Shared>) {
    let mut live = live().lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|(_, w)| w.strong_count() > 0);
    live.push((shared.id.clone(), Arc::downgrade(shared)));
}

/// Driver-specific operations on a present PIV token, beyond token-core's
/// [`SessionDelegate`](token_core::SessionDelegate): the card management key (key reference
/// 9B), key generation with PIN and touch policies, certificates (compressed or not), data
/// objects, YubiKey PIN retry counts, attestation and reset.
///
/// Reach it by token ID while the token is present ([`PivManagement::for_token`]).
///
/// **The management key.** Operations that need it (generating keys, writing certificates and
/// data objects, changing the key) use the key set with
/// [`PivManagement::set_management_key`], or else the factory default
/// `010203040506070801020304050607080102030405060708` with the algorithm the card reports for
/// 9B (YubiKey GET METADATA; 3DES when the card does not say). The key is kept in memory for
/// the token's lifetime, zeroized when dropped, and never logged. It applies to every session
/// of the token, [`TokenSession::generate_key`](token_core::TokenSession::generate_key) and
/// [`TokenSession::import_certificate`](token_core::TokenSession::import_certificate)
/// included.
///
/// **Item changes.** Operations here update the token's item list at once, but the hub's
/// watcher only hears of changes made through a [`TokenSession`](token_core::TokenSession):
/// generate and import certificates there (a `KeySpec.slot` of `"9a"`, a certificate's key
/// `ObjectId` of the slot) when the keychain index must see them.
#[derive(Clone)]
pub struct PivManagement {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for PivManagement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PivManagement")
            .field("token", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl PivManagement {
    /// The present PIV token with this ID.
    ///
    /// # Errors
    /// `TokenNotFound` when no PIV token with that ID is present in this process.
    pub fn for_token(id: &TokenId) -> Result<PivManagement> {
        let live = live().lock().unwrap_or_else(PoisonError::into_inner);
        // The newest first: a card re-probed replaces its older token.
        live.iter()
            .rev()
            .filter(|(i, _)| i == id)
            .find_map(|(_, w)| w.upgrade())
            .map(|shared| PivManagement { shared })
            .ok_or_else(|| Error::token_not_found("no PIV token with this ID is present"))
    }

    /// The token's ID.
    pub fn token_id(&self) -> &TokenId {
        &self.shared.id
    }

    /// The YubiKey firmware version, when the card answered GET VERSION.
    pub fn version(&self) -> Option<[u8; 3]> {
        self.shared.version
    }

    /// The YubiKey serial number, when the card answered GET SERIAL.
    pub fn serial(&self) -> Option<u32> {
        self.shared.serial
    }

    /// Sets the management key this token's operations use from now on (`None`: the factory
    /// default). Nothing is sent to the card; [`PivManagement::authenticate`] checks it.
    pub fn set_management_key(&self, key: Option<ManagementKey>) {
        self.shared.set_management_key(key);
    }

    /// Authenticates with the management key, to check it.
    ///
    /// # Errors
    /// `AuthenticationFailed` when the card refuses it.
    pub async fn authenticate(&self) -> Result<()> {
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await
    }

    /// Changes the card's management key (YubiKey SET MANAGEMENT KEY), authenticating with
    /// the current one first, and uses the new one from now on.
    ///
    /// # Errors
    /// `AuthenticationFailed` when the current key is refused; `NotImplemented` on cards
    /// without the YubiKey extension.
    pub async fn change_management_key(
        &self,
        new: ManagementKey,
        require_touch: bool,
    ) -> Result<()> {
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await?;
        commands::set_management_key(&s, &new, require_touch).await?;
        drop(s);
        self.shared.set_management_key(Some(new));
        Ok(())
    }

    /// Generates a key pair in `slot` with these policies (`Default`: the slot's) and returns
    /// its item.
    ///
    /// # Errors
    /// `AuthenticationFailed` for a refused management key; `BadParameter` for an algorithm the
    /// card does not generate.
    pub async fn generate(
        &self,
        slot: SlotId,
        algorithm: AlgorithmId,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<KeyItem> {
        self.shared
            .generate(slot, algorithm, pin_policy, touch_policy)
            .await
    }

    /// Writes `der` as the certificate of `slot`, gzip-compressed if `compress` (CertInfo
    /// 01, as `yubico-piv-tool --compress` does).
    ///
    /// # Errors
    /// `CorruptedData` for a certificate that does not parse; `AuthenticationFailed` for a
    /// refused management key; `BadParameter` (6A84 from the card) when it does not fit.
    pub async fn import_certificate(
        &self,
        slot: SlotId,
        der: &[u8],
        compress: bool,
    ) -> Result<CertificateItem> {
        self.shared.import_certificate(slot, der, compress).await
    }

    /// Deletes the certificate of `slot`.
    ///
    /// # Errors
    /// `AuthenticationFailed` for a refused management key.
    pub async fn delete_certificate(&self, slot: SlotId) -> Result<()> {
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await?;
        commands::put_data(&s, slot.certificate_tag(), &[]).await?;
        drop(s);
        self.shared.update_slot(slot, |e| e.cert = None);
        Ok(())
    }

    /// Reads a data object's content (inside its `53` wrapper), `None` when absent.
    ///
    /// # Errors
    /// `AuthenticationNeeded` for a PIN-protected object read without the PIN.
    pub async fn read_object(&self, tag: u32) -> Result<Option<Vec<u8>>> {
        let s = self.shared.begin().await?;
        commands::get_data(&s, tag).await
    }

    /// Writes a data object's content (an empty one deletes it on YubiKeys).
    ///
    /// # Errors
    /// `AuthenticationFailed` for a refused management key.
    pub async fn write_object(&self, tag: u32, content: &[u8]) -> Result<()> {
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await?;
        commands::put_data(&s, tag, content).await
    }

    /// YubiKey GET METADATA of a key reference (a slot, 80 PIN, 81 PUK, 9B management key);
    /// `None` on cards without it or for an empty slot.
    ///
    /// # Errors
    /// Transport errors; `CorruptedData` for a malformed answer.
    pub async fn metadata(&self, reference: u8) -> Result<Option<Metadata>> {
        let s = self.shared.begin().await?;
        commands::metadata(&s, reference).await
    }

    /// YubiKey ATTEST: a certificate, issued by the card's attestation key (slot F9), saying
    /// that the key in `slot` was generated on this card, with its PIN and touch policy, the
    /// firmware version and the serial number (Yubico's extensions `1.3.6.1.4.1.41482.3.*`).
    /// Returns the DER; check it against [`PivManagement::attestation_certificate`].
    ///
    /// # Errors
    /// `BadParameter` for an imported key (cards attest generated keys only);
    /// `ObjectNotFound` for an empty slot; `NotImplemented` on cards without ATTEST;
    /// `CorruptedData` for an answer that is not a certificate.
    pub async fn attest(&self, slot: SlotId) -> Result<Vec<u8>> {
        let s = self.shared.begin().await?;
        let der = commands::attest(&s, slot).await?;
        token_core::CertificateInfo::parse(&der)?;
        Ok(der)
    }

    /// The attestation certificate of slot F9 (YubiKey object `5FFF01`), DER: the issuer of
    /// [`PivManagement::attest`]'s certificates. `None` when the card has none.
    ///
    /// # Errors
    /// Transport errors; `CorruptedData` for a container or certificate that does not parse.
    pub async fn attestation_certificate(&self) -> Result<Option<Vec<u8>>> {
        let s = self.shared.begin().await?;
        let Some(content) = commands::get_data(&s, objects::YUBIKEY_ATTESTATION).await? else {
            return Ok(None);
        };
        drop(s);
        if content.is_empty() {
            return Ok(None);
        }
        let cert = parse_certificate_container(&content)?;
        token_core::CertificateInfo::parse(&cert.der)?;
        Ok(Some(cert.der))
    }

    /// Sets the PIN and PUK try counts (YubiKey SET PIN RETRIES). The card needs the
    /// management key and the PIN, and puts the PIN and PUK back to their factory values.
    ///
    /// # Errors
    /// `AuthenticationFailed` for a wrong PIN or a refused management key.
    pub async fn set_pin_retries(&self, pin: &Pin, pin_tries: u8, puk_tries: u8) -> Result<()> {
        if pin_tries == 0 || puk_tries == 0 {
            return Err(Error::bad_parameter("try counts start at 1"));
        }
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await?;
        commands::verify(&s, keyref::PIN, &commands::pad_pin(pin)?).await?;
        commands::set_pin_retries(&s, pin_tries, puk_tries).await
    }

    /// Reads the card's slots again (after another program changed them).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn refresh(&self) -> Result<()> {
        let s = self.shared.begin().await?;
        let metadata = self.shared.version.is_some_and(|v| (v[0], v[1]) >= (5, 3));
        let slots = read_slots(&s, metadata).await?;
        drop(s);
        self.shared.replace_slots(slots);
        Ok(())
    }

    /// **Destroys every key, certificate and data object** and puts the PIN, PUK and
    /// management key back to their factory values (YubiKey RESET). The card accepts it only
    /// once the PIN and the PUK are both blocked.
    ///
    /// # Errors
    /// `CommunicationError` with 6985 underneath while the PIN or PUK is not blocked.
    pub async fn factory_reset_destroying_all_keys(&self) -> Result<()> {
        let s = self.shared.begin().await?;
        commands::reset(&s).await?;
        drop(s);
        self.shared.set_management_key(None);
        self.shared.replace_slots(Default::default());
        Ok(())
    }
}

/// Resolves a key's name as a user writes it: a PIV slot as PIV tools write it (`9a`, `9c`,
/// `9d`, `9e`, `82` .. `95`, or `signature`, `retired3`...), else a key item's label among
/// `items`. Returns the key's [`ObjectId`] (the slot byte) when a key item has it.
///
/// ```
/// use driver_piv::{resolve_key_name, SlotId};
/// use token_core::{Constraint, Item, KeyItem, KeyType, KeyUsage, PublicKey};
///
/// let key = KeyItem::new(
///     SlotId::SIGNATURE.object_id(),
///     "Digital Signature",
///     PublicKey { key_type: KeyType::Ed25519, raw: vec![7; 32] },
///     KeyUsage::SIGN,
///     Constraint::PinAlways,
/// );
/// let items = [Item::Key(key)];
/// assert_eq!(resolve_key_name("9c", &items), Some(SlotId::SIGNATURE.object_id()));
/// assert_eq!(resolve_key_name("Digital Signature", &items), Some(SlotId::SIGNATURE.object_id()));
/// assert_eq!(resolve_key_name("9a", &items), None);
/// ```
pub fn resolve_key_name(name: &str, items: &[Item]) -> Option<ObjectId> {
    let keys = || {
        items.iter().filter_map(|i| match i {
            Item::Key(k) => Some(k),
            _ => None,
        })
    };
    if let Ok(slot) = name.parse::<SlotId>() {
        let id = slot.object_id();
        if keys().any(|k| k.object_id == id) {
            return Some(id);
        }
    }
    keys()
        .find(|k| k.label == name)
        .or_else(|| keys().find(|k| k.label.eq_ignore_ascii_case(name)))
        .map(|k| k.object_id.clone())
}
