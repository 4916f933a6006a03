//! The driver, the token and its sessions.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use token_core::{
    async_trait, unblock, CertificateInfo, CertificateItem, Claim, Constraint, Device, Error, Item,
    ItemsNotifier, KeyImport, KeyItem, KeySpec, KeyType, KeyUsage, ObjectId, Operation, Pin,
    PinKind, PinStatus, Probe, PublicKey, Result, SessionDelegate, SignatureAlgorithm, SlotKind,
    Token, TokenDriver, TokenId, TokenInfo, TokenSession,
};
use zeroize::Zeroizing;

use crate::crypto::{self, Secret, Wrapper};
use crate::format::{
    key_public_part, public_len, CertRecord, KeyRecord, PinSlot, RecordId, StoreData, MAX_CERT,
};
use crate::keys::{self, LoadedKey, NewKey};
use crate::store::{self, check_label, check_pin_format, DRIVER_ID};

/// The soft token driver (ID `soft`): makes a [`SoftToken`] of every persistent slot whose
/// configuration names this driver and a token file.
///
/// It is registered with the hub by linking this crate; tests hand it to
/// [`token_core::HubBuilder::driver`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SoftTokenDriver;

#[async_trait]
impl TokenDriver for SoftTokenDriver {
    fn id(&self) -> &'static str {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        "tokenkit soft token"
    }

    fn slot_kinds(&self) -> &'static [SlotKind] {
        &[SlotKind::Persistent]
    }

    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        let Device::Persistent(config) = &probe.device else {
            return Ok(Claim::NotMine);
        };
        if config.driver != DRIVER_ID {
            return Ok(Claim::NotMine);
        }
        let path = PathBuf::from(OsStr::from_bytes(&config.data));
        let instance = config.instance.clone();
        let notifier = probe.notifier.clone();
        let token = unblock(move || SoftToken::open_with(&path, Some(notifier))).await?;
        if token.id().instance() != instance {
            return Err(Error::corrupted(
                "the token file's UUID differs from its registration",
            ));
        }
        Ok(Claim::Token(Arc::new(token)))
    }
}

/// What a token and its sessions share: the file, the last state read from it, and the items.
struct Shared {
    id: TokenId,
    path: PathBuf,
    state: RwLock<Arc<StoreData>>,
    items: RwLock<Vec<Item>>,
    /// Bumped whenever keys change, so sessions drop cached keys.
    generation: AtomicU64,
    /// Tells the hub about changes another process made to the file.
    notifier: Option<ItemsNotifier>,
}

impl Shared {
    fn snapshot(&self) -> Arc<StoreData> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps `data` as the current state; refreshes the items when they changed, and says
    /// whether they did.
    fn install(&self, data: StoreData) -> bool {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let changed =
            state.keys != data.keys || state.certs != data.certs || state.label != data.label;
        if changed {
            *self.items.write().unwrap_or_else(PoisonError::into_inner) = store::items_of(&data);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        *state = Arc::new(data);
        changed
    }

    /// Reads the file again: another process may have changed it, and then the hub (and the
    /// keychain index) is told.
    fn reload(&self) -> Result<Arc<StoreData>> {
        if self.install(store::load(&self.path)?) {
            if let Some(n) = &self.notifier {
                n.items_changed(&self.id);
            }
        }
        Ok(self.snapshot())
    }

    /// Read-modify-write of the file under the store lock, then keeps the result. (The
    /// `TokenSession` that asked tells the hub about item changes.)
    fn update<T>(&self, f: impl FnOnce(&mut StoreData) -> Result<T>) -> Result<T> {
        let (out, data) = store::update(&self.path, f)?;
        self.install(data);
        Ok(out)
    }

    /// [`Shared::update`] for a change of the records: checks the contents seal with the data
    /// key, then seals the new contents.
    fn update_sealed<T>(
        &self,
        data_key: &[u8; 32],
        f: impl FnOnce(&mut StoreData) -> Result<T>,
    ) -> Result<T> {
        let (out, data) = store::update_sealed(&self.path, data_key, f)?;
        self.install(data);
        Ok(out)
    }
}

/// A soft token: one store file. Made by [`SoftTokenDriver`] through the hub, or opened
/// directly with [`SoftToken::open`] by code that has no hub (tests, benchmarks, tools).
pub struct SoftToken {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for SoftToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftToken")
            .field("id", &self.shared.id)
            .field("path", &self.shared.path)
            .finish()
    }
}

impl SoftToken {
    /// Opens the token file at `path`. Reads only public parts: no PIN is needed.
    ///
    /// # Errors
    /// `TokenNotFound` when the file does not exist; `CorruptedData` when it is damaged or of
    /// a newer format version (the file is left as it is).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, None)
    }

    fn open_with(path: &Path, notifier: Option<ItemsNotifier>) -> Result<Self> {
        let data = store::load(path)?;
        let id = store::token_id(&data.uuid)?;
        let items = store::items_of(&data);
        Ok(Self {
            shared: Arc::new(Shared {
                id,
                path: path.to_owned(),
                state: RwLock::new(Arc::new(data)),
                items: RwLock::new(items),
                generation: AtomicU64::new(0),
                notifier,
            }),
        })
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A session straight on this token, without a hub: the keychain is not told of item
    /// changes made through it.
    ///
    /// # Errors
    /// `TokenNotFound` when the file is gone.
    pub fn session(&self) -> Result<TokenSession> {
        Ok(TokenSession::new(
            self.shared.id.clone(),
            Box::new(self.delegate()?),
        ))
    }

    fn delegate(&self) -> Result<SoftSession> {
        if !self.shared.path.exists() {
            return Err(Error::token_not_found("the soft token's file is gone"));
        }
        Ok(SoftSession {
            shared: self.shared.clone(),
            data_key: None,
            generation: self.shared.generation.load(Ordering::Acquire),
            cache: HashMap::new(),
        })
    }
}

#[async_trait]
impl Token for SoftToken {
    fn id(&self) -> &TokenId {
        &self.shared.id
    }

    fn info(&self) -> TokenInfo {
        let data = self.shared.snapshot();
        TokenInfo {
            label: data.label.clone(),
            manufacturer: Some("tokenkit".into()),
            model: Some(format!(
                "soft token, store format {}",
                crate::format::FORMAT_VERSION
            )),
            serial: Some(store::uuid_string(&data.uuid)),
        }
    }

    fn items(&self) -> Vec<Item> {
        self.shared
            .items
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        // Pick up what other processes did since the token was read.
        let shared = self.shared.clone();
        unblock(move || shared.reload()).await?;
        Ok(Box::new(self.delegate()?))
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

/// One session: its own authentication state (the data key, once a PIN opened it) and the
/// private keys it has opened.
struct SoftSession {
    shared: Arc<Shared>,
    data_key: Option<Secret>,
    generation: u64,
    cache: HashMap<RecordId, CachedKey>,
}

/// A private key a session opened, with what the checks before each use need.
struct CachedKey {
    key_type: KeyType,
    usage: KeyUsage,
    key: Arc<LoadedKey>,
}

fn record_id(object: &ObjectId) -> Result<RecordId> {
    object
        .as_bytes()
        .try_into()
        .map_err(|_| Error::object_not_found("no such item on this token"))
}

fn wrapper_of(kind: PinKind) -> Result<Wrapper> {
    match kind {
        PinKind::User => Ok(Wrapper::Pin),
        PinKind::Unblock => Ok(Wrapper::Puk),
        _ => Err(Error::not_implemented(
            "the soft token has a PIN and a PUK only",
        )),
    }
}

fn slot_mut(d: &mut StoreData, which: Wrapper) -> &mut PinSlot {
    match which {
        Wrapper::Pin => &mut d.user,
        Wrapper::Puk => &mut d.puk,
    }
}

/// Checks a PIN or PUK the way a card does: the retry counter is decremented and written to
/// disk first, so killing the process during the check cannot give back the try; it is reset
/// only after the PIN proved right. Returns the data key.
fn check_secret(shared: &Shared, which: Wrapper, pin: &Pin) -> Result<Secret> {
    let (slot, kdf, uuid) = shared.update(|d| {
        let s = slot_mut(d, which);
        if s.tries_left == 0 {
            return Err(Error::authentication_failed(Some(0)));
        }
        s.tries_left -= 1;
        Ok((s.clone(), d.kdf, d.uuid))
    })?;
    let kek = crypto::derive_kek(pin.expose(), &slot.salt, &kdf)?;
    match crypto::open(&kek, &slot.wrapped, &crypto::wrap_ad(&uuid, which)) {
        Some(data_key) => {
            shared.update(|d| {
                let s = slot_mut(d, which);
                s.tries_left = s.max_tries;
                Ok(())
            })?;
            Ok(data_key)
        }
        None => {
            tracing::info!(token = %shared.id, tries_left = slot.tries_left, "wrong PIN");
            Err(Error::authentication_failed(Some(slot.tries_left)))
        }
    }
}

/// Wraps `data_key` under a new secret for `which` and resets its counter.
fn rewrap(shared: &Shared, which: Wrapper, new: &Pin, data_key: &Secret) -> Result<()> {
    let snapshot = shared.snapshot();
    let salt: [u8; 16] = crypto::random()?;
    let kek = crypto::derive_kek(new.expose(), &salt, &snapshot.kdf)?;
    let wrapped = crypto::seal(&kek, data_key, &crypto::wrap_ad(&snapshot.uuid, which))?;
    shared.update(|d| {
        let s = slot_mut(d, which);
        s.salt = salt;
        s.wrapped = wrapped;
        s.tries_left = s.max_tries;
        Ok(())
    })
}

impl SoftSession {
    fn data_key(&self) -> Result<Secret> {
        self.data_key
            .clone()
            .ok_or_else(|| Error::authentication_needed("the soft token's PIN is needed"))
    }

    fn key_record(&self, object: &ObjectId) -> Result<KeyRecord> {
        let id = record_id(object)?;
        self.shared
            .snapshot()
            .key(&id)
            .cloned()
            .ok_or_else(|| Error::object_not_found("no such key on this token"))
    }

    /// The opened private key `object`, from the cache or unsealed now.
    fn loaded(&mut self, object: &ObjectId, usage: KeyUsage) -> Result<(KeyType, Arc<LoadedKey>)> {
        let id = record_id(object)?;
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.cache.clear();
            self.generation = generation;
        }
        if let Some(c) = self.cache.get(&id) {
            if !c.usage.contains(usage) {
                return Err(Error::bad_parameter("the key's usage does not allow this"));
            }
            return Ok((c.key_type, c.key.clone()));
        }
        let record = self.key_record(object)?;
        if !record.usage.contains(usage) {
            return Err(Error::bad_parameter("the key's usage does not allow this"));
        }
        let data_key = self.data_key()?;
        let ad = crypto::key_ad(&self.shared.snapshot().uuid, &key_public_part(&record)?);
        let secret = crypto::open(&data_key, &record.sealed, &ad)
            .ok_or_else(|| Error::corrupted("store: key record does not verify"))?;
        let key = Arc::new(LoadedKey::new(record.key_type, &secret, &record.public)?);
        self.cache.insert(
            record.id,
            CachedKey {
                key_type: record.key_type,
                usage: record.usage,
                key: key.clone(),
            },
        );
        Ok((record.key_type, key))
    }

    /// Seals `key` and stores it as a new record.
    async fn store_key(&mut self, key: NewKey, label: &str, usage: KeyUsage) -> Result<KeyItem> {
        check_label(label)?;
        if usage.is_empty() || !key.key_type.possible_usage().contains(usage) {
            return Err(Error::bad_parameter("usage not possible for this key type"));
        }
        if key.public.len() != public_len(key.key_type) {
            return Err(Error::bad_parameter("public key of the wrong length"));
        }
        let data_key = self.data_key()?;
        let shared = self.shared.clone();
        let label = label.to_owned();
        unblock(move || {
            let uuid = shared.snapshot().uuid;
            let mut record = KeyRecord {
                id: crypto::random()?,
                label,
                key_type: key.key_type,
                usage,
                public: key.public,
                sealed: [0; crypto::SEALED_LEN],
            };
            let ad = crypto::key_ad(&uuid, &key_public_part(&record)?);
            record.sealed = crypto::seal(&data_key, &key.secret, &ad)?;
            let item = KeyItem::new(
                ObjectId::new(record.id),
                record.label.clone(),
                PublicKey {
                    key_type: record.key_type,
                    raw: record.public.clone(),
                },
                usage,
                Constraint::Pin,
            );
            shared.update_sealed(&data_key, move |d| {
                if d.uuid != uuid {
                    return Err(Error::corrupted("the token file was replaced"));
                }
                if !d.id_free(&record.id) {
                    return Err(Error::communication("record ID collision; try again"));
                }
                if d.keys.len() + d.certs.len() >= crate::format::MAX_RECORDS {
                    return Err(Error::bad_parameter("the token is full"));
                }
                d.keys.push(record);
                Ok(())
            })?;
            tracing::info!(token = %shared.id, key = %item.object_id, "key stored");
            Ok(item)
        })
        .await
    }
}

#[async_trait]
impl SessionDelegate for SoftSession {
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        let Ok(id) = record_id(key) else {
            return false;
        };
        let data = self.shared.snapshot();
        let Some(k) = data.key(&id) else {
            return false;
        };
        match operation {
            Operation::Sign(alg) => {
                k.usage.contains(KeyUsage::SIGN)
                    && match (k.key_type, alg) {
                        (KeyType::EcP256, SignatureAlgorithm::EcdsaMessage(h)) => {
                            matches!(
                                h,
                                token_core::HashAlg::Sha256
                                    | token_core::HashAlg::Sha384
                                    | token_core::HashAlg::Sha512
                            )
                        }
                        (KeyType::EcP256, SignatureAlgorithm::EcdsaDigest(_)) => true,
                        (KeyType::Ed25519, SignatureAlgorithm::Ed25519) => true,
                        _ => false,
                    }
            }
            Operation::KeyExchange => {
                k.key_type == KeyType::EcP256 && k.usage.contains(KeyUsage::DERIVE)
            }
            _ => false,
        }
    }

    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        let which = wrapper_of(kind)?;
        let shared = self.shared.clone();
        let data = unblock(move || shared.reload()).await?;
        Ok(match which {
            Wrapper::Pin => PinStatus {
                retries_left: Some(data.user.tries_left),
                verified: self.data_key.is_some(),
            },
            Wrapper::Puk => PinStatus {
                retries_left: Some(data.puk.tries_left),
                verified: false,
            },
        })
    }

    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        let which = wrapper_of(kind)?;
        // A PIN of an impossible length is refused without costing a try, as cards do.
        check_pin_format(pin, "a PIN has 4 to 64 bytes")?;
        let shared = self.shared.clone();
        let pin = pin.clone();
        let data_key = unblock(move || {
            let data_key = check_secret(&shared, which, &pin)?;
            // The records must be as the data key last sealed them; a version 1 file is
            // sealed now (an update with no change seals it).
            shared.update_sealed(&data_key, |_| Ok(()))?;
            Ok::<_, Error>(data_key)
        })
        .await?;
        if which == Wrapper::Pin {
            self.data_key = Some(data_key);
        }
        Ok(())
    }

    async fn logout(&mut self) -> Result<()> {
        self.data_key = None;
        self.cache.clear();
        Ok(())
    }

    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let (key_type, loaded) = self.loaded(key, KeyUsage::SIGN)?;
        if !algorithm.fits(key_type) {
            return Err(Error::bad_parameter(
                "the key cannot make this kind of signature",
            ));
        }
        loaded.sign(algorithm, data)
    }

    async fn key_exchange(&mut self, key: &ObjectId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (_, loaded) = self.loaded(key, KeyUsage::DERIVE)?;
        loaded.key_exchange(peer)
    }

    async fn change_pin(&mut self, kind: PinKind, old: &Pin, new: &Pin) -> Result<()> {
        let which = wrapper_of(kind)?;
        check_pin_format(old, "a PIN has 4 to 64 bytes")?;
        check_pin_format(new, "a new PIN needs 4 to 64 bytes")?;
        let shared = self.shared.clone();
        let (old, new) = (old.clone(), new.clone());
        unblock(move || {
            let data_key = check_secret(&shared, which, &old)?;
            rewrap(&shared, which, &new, &data_key)
        })
        .await
    }

    async fn unblock_pin(&mut self, puk: &Pin, new: &Pin) -> Result<()> {
        check_pin_format(puk, "a PUK has 4 to 64 bytes")?;
        check_pin_format(new, "a new PIN needs 4 to 64 bytes")?;
        let shared = self.shared.clone();
        let (puk, new) = (puk.clone(), new.clone());
        unblock(move || {
            let data_key = check_secret(&shared, Wrapper::Puk, &puk)?;
            rewrap(&shared, Wrapper::Pin, &new, &data_key)
        })
        .await
    }

    async fn generate_key(&mut self, spec: &KeySpec) -> Result<KeyItem> {
        if spec.slot.is_some() {
            return Err(Error::bad_parameter(
                "the soft token has no fixed key slots",
            ));
        }
        if !matches!(spec.key_type, KeyType::EcP256 | KeyType::Ed25519) {
            return Err(Error::bad_parameter(
                "the soft token makes P-256 and Ed25519 keys",
            ));
        }
        self.data_key()?;
        let usage = spec.usage.unwrap_or_else(|| spec.key_type.possible_usage());
        let key = keys::generate(spec.key_type)?;
        self.store_key(key, &spec.label, usage).await
    }

    async fn import_key(&mut self, import: &KeyImport) -> Result<KeyItem> {
        if import.slot.is_some() {
            return Err(Error::bad_parameter(
                "the soft token has no fixed key slots",
            ));
        }
        let key = keys::parse_private(&import.pkcs8)?;
        self.data_key()?;
        let usage = key.key_type.possible_usage();
        self.store_key(key, &import.label, usage).await
    }

    async fn import_certificate(
        &mut self,
        label: &str,
        der: &[u8],
        key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        check_label(label)?;
        let der = if der.trim_ascii_start().starts_with(b"-----BEGIN") {
            let text =
                core::str::from_utf8(der).map_err(|_| Error::corrupted("PEM is not text"))?;
            token_core::pem_to_der(text, "CERTIFICATE")?
        } else {
            der.to_vec()
        };
        if der.len() > MAX_CERT {
            return Err(Error::bad_parameter("certificate larger than 64 KiB"));
        }
        let info = CertificateInfo::parse(&der)?;
        let label = if label.is_empty() {
            info.subject_common_name()
                .filter(|cn| cn.len() <= crate::format::MAX_LABEL)
                .unwrap_or_else(|| "Certificate".into())
        } else {
            label.to_owned()
        };
        let spki_key = info.subject_public_key_info()?.public_key.to_vec();
        let linked = match key {
            Some(k) => Some(self.key_record(k)?.id),
            // Tie it to the key it certifies, when that key is here.
            None => self
                .shared
                .snapshot()
                .keys
                .iter()
                .find(|k| k.public == spki_key)
                .map(|k| k.id),
        };
        let data_key = self.data_key()?;
        let shared = self.shared.clone();
        unblock(move || {
            let record = CertRecord {
                id: crypto::random()?,
                label,
                der,
                key: linked,
            };
            let item = CertificateItem {
                object_id: ObjectId::new(record.id),
                label: record.label.clone(),
                der: record.der.clone(),
            };
            shared.update_sealed(&data_key, move |d| {
                if !d.id_free(&record.id) {
                    return Err(Error::communication("record ID collision; try again"));
                }
                if d.keys.len() + d.certs.len() >= crate::format::MAX_RECORDS {
                    return Err(Error::bad_parameter("the token is full"));
                }
                d.certs.push(record);
                Ok(())
            })?;
            Ok(item)
        })
        .await
    }

    async fn delete_item(&mut self, object: &ObjectId) -> Result<()> {
        let id = record_id(object)?;
        {
            let data = self.shared.snapshot();
            if data.id_free(&id) {
                return Err(Error::object_not_found("no such item on this token"));
            }
        }
        let data_key = self.data_key()?;
        let shared = self.shared.clone();
        unblock(move || {
            shared.update_sealed(&data_key, |d| {
                let before = d.keys.len() + d.certs.len();
                d.keys.retain(|k| k.id != id);
                d.certs.retain(|c| c.id != id);
                for c in &mut d.certs {
                    if c.key == Some(id) {
                        c.key = None;
                    }
                }
                if d.keys.len() + d.certs.len() == before {
                    return Err(Error::object_not_found("no such item on this token"));
                }
                Ok(())
            })
        })
        .await?;
        self.cache.remove(&id);
        Ok(())
    }
}
