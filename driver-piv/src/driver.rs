//! The driver, its token and its session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use token_core::{
    async_trait, CardSession, CertificateInfo, CertificateItem, Claim, DecryptAlgorithm, Device,
    Error, ErrorCode, HashAlg, Item, KeyItem, KeySpec, KeyType, KeyUsage, ObjectId, Operation, Pin,
    PinKind, PinStatus, Probe, PublicKey, Result, SessionDelegate, SignatureAlgorithm, SmartCard,
    Token, TokenDriver, TokenId, TokenInfo,
};
use zeroize::Zeroizing;

use crate::commands::{self, Metadata, PinState};
use crate::mgmt::ManagementKey;
use crate::objects::{
    certificate_container, check_ecdsa_der, parse_certificate_container, public_key_from_spki,
    rsa_modulus, Chuid,
};
use crate::padding;
use crate::types::{keyref, objects, AlgorithmId, PinPolicy, SlotId, TouchPolicy};

/// The driver for PIV cards (NIST SP 800-73-4), YubiKeys' PIV application included.
/// Registered with the hub through inventory as `piv`, priority 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct PivDriver;

/// A key the card holds in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub(crate) public: PublicKey,
    pub(crate) pin_policy: PinPolicy,
}

/// A certificate the card holds for a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertEntry {
    pub(crate) der: Vec<u8>,
    pub(crate) compressed: bool,
}

/// What one slot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotEntry {
    pub(crate) key: Option<KeyEntry>,
    pub(crate) cert: Option<CertEntry>,
}

/// What the token and all its sessions share: the card, the item list, the management key.
pub(crate) struct Shared {
    pub(crate) id: TokenId,
    pub(crate) card: SmartCard,
    pub(crate) version: Option<[u8; 3]>,
    pub(crate) serial: Option<u32>,
    pub(crate) guid: Option<[u8; 16]>,
    slots: Mutex<BTreeMap<SlotId, SlotEntry>>,
    management_key: Mutex<Option<ManagementKey>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<SlotId, SlotEntry>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn slot(&self, slot: SlotId) -> Option<SlotEntry> {
        self.slots().get(&slot).cloned()
    }

    pub(crate) fn update_slot(&self, slot: SlotId, f: impl FnOnce(&mut SlotEntry)) {
        let mut slots = self.slots();
        let entry = slots.entry(slot).or_default();
        f(entry);
        if entry.key.is_none() && entry.cert.is_none() {
            slots.remove(&slot);
        }
    }

    pub(crate) fn replace_slots(&self, new: BTreeMap<SlotId, SlotEntry>) {
        *self.slots() = new;
    }

    pub(crate) fn set_management_key(&self, key: Option<ManagementKey>) {
        *self
            .management_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The management key to use: the one set through [`crate::PivManagement`], else the
    /// factory default with the algorithm the card reports for 9B (3DES when it does not say).
    pub(crate) async fn management_key(&self, s: &CardSession) -> Result<ManagementKey> {
        let set = self
            .management_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(k) = set {
            return Ok(k);
        }
        let alg = match commands::metadata(s, keyref::MANAGEMENT).await? {
            Some(m) if m.algorithm.is_symmetric() => m.algorithm,
            _ => AlgorithmId::TDES,
        };
        // AES-128 and AES-256 keys have no factory value: the card's key was changed.
        ManagementKey::default_for(alg).map_err(|_| {
            Error::authentication_failed(None).context(
                "the card's management key is not the factory one: set it with PivManagement",
            )
        })
    }

    pub(crate) fn key_item(slot: SlotId, key: &KeyEntry) -> KeyItem {
        let mut item = KeyItem::new(
            slot.object_id(),
            slot.label(),
            key.public.clone(),
            slot.usage_for(key.public.key_type),
            key.pin_policy.constraint(slot),
        );
        item.suitable_for_login = slot == SlotId::AUTHENTICATION;
        item
    }

    pub(crate) fn cert_item(slot: SlotId, cert: &CertEntry) -> CertificateItem {
        let label = CertificateInfo::parse(&cert.der)
            .ok()
            .and_then(|c| c.subject_common_name())
            .unwrap_or_else(|| format!("Certificate for {}", slot.label()));
        CertificateItem {
            object_id: slot.object_id(),
            label,
            der: cert.der.clone(),
        }
    }

    fn items(&self) -> Vec<Item> {
        let slots = self.slots();
        let mut items = Vec::new();
        for (&slot, entry) in slots.iter() {
            if let Some(k) = &entry.key {
                items.push(Item::Key(Self::key_item(slot, k)));
            }
            if let Some(c) = &entry.cert {
                items.push(Item::Certificate(Self::cert_item(slot, c)));
            }
        }
        items
    }

    /// Opens an exclusive session on the card with the PIV application selected.
    ///
    /// When another program reset the card since our last use, the transport reports it once
    /// (and counts it in [`SmartCard::reset_count`]) and is usable again: the session is then
    /// begun once more and the application selected anew. Sessions compare the reset count
    /// with the one their PIN was verified at, so a PIN the reset voided is not presented
    /// again behind the user's back.
    pub(crate) async fn begin(&self) -> Result<CardSession> {
        let before = self.card.reset_count();
        match self.begin_once().await {
            Err(e) if self.card.reset_count() != before => {
                tracing::debug!(error = %e, "PIV: the card was reset by another program; again");
                self.begin_once().await
            }
            other => other,
        }
    }

    async fn begin_once(&self) -> Result<CardSession> {
        let s = self.card.begin_session().await?;
        if !commands::select(&s).await? {
            return Err(Error::token_not_found(
                "the PIV application is no longer on the card",
            ));
        }
        Ok(s)
    }

    /// Authenticates with the management key inside `s`.
    pub(crate) async fn authenticate(&self, s: &CardSession) -> Result<()> {
        let key = self.management_key(s).await?;
        commands::authenticate_management(s, &key).await
    }

    /// Generates a key in `slot` (management key authentication first) and records it.
    pub(crate) async fn generate(
        &self,
        slot: SlotId,
        alg: AlgorithmId,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
    ) -> Result<KeyItem> {
        if alg.key_type().is_none() {
            return Err(Error::bad_parameter("not an asymmetric key algorithm"));
        }
        let s = self.begin().await?;
        self.authenticate(&s).await?;
        let public = commands::generate(&s, slot, alg, pin_policy, touch_policy).await?;
        let policy = match commands::metadata(&s, slot.byte()).await? {
            Some(Metadata {
                policy: Some((p, _)),
                ..
            }) => p,
            _ => pin_policy,
        };
        drop(s);
        let key = KeyEntry {
            public,
            pin_policy: policy,
        };
        self.update_slot(slot, |e| e.key = Some(key.clone()));
        Ok(Self::key_item(slot, &key))
    }

    /// Stores a certificate for `slot` (management key authentication first) and records it.
    pub(crate) async fn import_certificate(
        &self,
        slot: SlotId,
        der: &[u8],
        compress: bool,
    ) -> Result<CertificateItem> {
        let info = CertificateInfo::parse(der)?;
        let public = public_key_from_spki(&info.subject_public_key_info()?)?;
        let s = self.begin().await?;
        self.authenticate(&s).await?;
        commands::put_data(
            &s,
            slot.certificate_tag(),
            &certificate_container(der, compress),
        )
        .await?;
        drop(s);
        let cert = CertEntry {
            der: der.to_vec(),
            compressed: compress,
        };
        self.update_slot(slot, |e| {
            e.cert = Some(cert.clone());
            // A key known only from an older certificate is now known from this one.
            if e.key.is_none()
                || e.key
                    .as_ref()
                    .is_some_and(|k| k.public.key_type != public.key_type)
            {
                e.key = Some(KeyEntry {
                    public: public.clone(),
                    pin_policy: slot.default_pin_policy(),
                });
            }
        });
        Ok(Self::cert_item(slot, &cert))
    }
}

/// Reads every slot: its certificate and, on YubiKeys, its metadata.
pub(crate) async fn read_slots(
    s: &CardSession,
    metadata_supported: bool,
) -> Result<BTreeMap<SlotId, SlotEntry>> {
    let mut slots = BTreeMap::new();
    for slot in SlotId::all() {
        let cert = match commands::get_data(s, slot.certificate_tag()).await? {
            None => None,
            Some(content) if content.is_empty() => None,
            Some(content) => match parse_certificate_container(&content)
                .and_then(|c| CertificateInfo::parse(&c.der).map(|info| (c, info)))
            {
                Ok((c, info)) => Some((c, info)),
                Err(e) => {
                    // One unreadable object does not hide the rest of the card.
                    tracing::warn!(%slot, error = %e, "PIV: skipping an unreadable certificate");
                    None
                }
            },
        };
        let meta = if metadata_supported {
            commands::metadata(s, slot.byte()).await?
        } else {
            None
        };
        let mut entry = SlotEntry::default();
        if let Some(m) = meta {
            if let Some(public) = m.public_key {
                let policy = m.policy.map_or(PinPolicy::Default, |(p, _)| p);
                entry.key = Some(KeyEntry {
                    public,
                    pin_policy: policy,
                });
            }
        }
        if let Some((c, info)) = cert {
            if entry.key.is_none() {
                match info
                    .subject_public_key_info()
                    .and_then(|spki| public_key_from_spki(&spki))
                {
                    Ok(public) => {
                        entry.key = Some(KeyEntry {
                            public,
                            pin_policy: PinPolicy::Default,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(%slot, error = %e, "PIV: certificate key not usable");
                    }
                }
            }
            entry.cert = Some(CertEntry {
                der: c.der,
                compressed: c.compressed,
            });
        }
        if entry.key.is_some() || entry.cert.is_some() {
            slots.insert(slot, entry);
        }
    }
    Ok(slots)
}

#[async_trait]
impl TokenDriver for PivDriver {
    fn id(&self) -> &'static str {
        "piv"
    }

    fn name(&self) -> &'static str {
        "PIV (NIST SP 800-73-4)"
    }

    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        let Device::SmartCard(card) = &probe.device else {
            return Ok(Claim::NotMine);
        };
        let mut card = card.clone();
        // PIV cards chain long commands whatever their ATR says (SP 800-73-4 Part 2 §3).
        card.set_use_command_chaining(true);
        let s = card.begin_session().await?;
        if !commands::select(&s).await? {
            return Ok(Claim::NotMine);
        }
        let version = commands::version(&s).await?;
        let serial = if version.is_some() {
            commands::serial(&s).await?
        } else {
            None
        };
        let chuid = match commands::get_data(&s, objects::CHUID).await? {
            Some(c) => Chuid::parse(&c).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "PIV: unreadable CHUID");
                Chuid::default()
            }),
            None => Chuid::default(),
        };
        // The other SP 800-73-4 discovery objects: read so that a card which cannot answer
        // them is noticed now, not in the middle of an operation; their content does not name
        // the token.
        for object in [objects::CCC, objects::DISCOVERY, objects::KEY_HISTORY] {
            match commands::get_data(&s, object).await {
                Ok(_) => {}
                // The card went away, or the channel broke: the probe cannot go on.
                Err(e)
                    if matches!(
                        e.code(),
                        ErrorCode::TokenNotFound | ErrorCode::CommunicationError
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => tracing::debug!(object, error = %e, "PIV: optional object unreadable"),
            }
        }
        // GET METADATA exists from YubiKey firmware 5.3 on.
        let metadata_supported = version.is_some_and(|v| (v[0], v[1]) >= (5, 3));
        let slots = read_slots(&s, metadata_supported).await?;
        drop(s);

        let guid = chuid.usable_guid();
        let instance = if let Some(g) = guid {
            hex(&g)
        } else if let Some(sn) = serial {
            sn.to_string()
        } else if let Some(f) = chuid.fasc_n.as_ref().filter(|f| f.iter().any(|&b| b != 0)) {
            format!("fascn-{}", hex(f))
        } else {
            return Err(Error::corrupted(
                "PIV card with neither a CHUID GUID nor a serial number: no stable token ID",
            ));
        };
        let id = TokenId::new(self.id(), &instance)?;
        let shared = Arc::new(Shared {
            id,
            card,
            version,
            serial,
            guid,
            slots: Mutex::new(slots),
            management_key: Mutex::new(None),
        });
        crate::manage::register(&shared);
        Ok(Claim::Token(Arc::new(PivToken { shared })))
    }
}

/// A PIV application on a card.
struct PivToken {
    shared: Arc<Shared>,
}

#[async_trait]
impl Token for PivToken {
    fn id(&self) -> &TokenId {
        &self.shared.id
    }

    fn info(&self) -> TokenInfo {
        let sh = &self.shared;
        let serial = sh
            .serial
            .map(|s| s.to_string())
            .or_else(|| sh.guid.map(|g| hex(&g)));
        match sh.version {
            Some([a, b, c]) => TokenInfo {
                label: match sh.serial {
                    Some(s) => format!("YubiKey PIV #{s}"),
                    None => "YubiKey PIV".into(),
                },
                manufacturer: Some("Yubico".into()),
                model: Some(format!("YubiKey {a}.{b}.{c} PIV")),
                serial,
            },
            None => TokenInfo {
                label: format!("PIV card {}", sh.id.instance()),
                manufacturer: None,
                model: Some("PIV (SP 800-73-4)".into()),
                serial,
            },
        }
    }

    fn items(&self) -> Vec<Item> {
        self.shared.items()
    }

    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(PivSession {
            shared: self.shared.clone(),
            pin: None,
            pin_always_ready: false,
            verified_at_reset: 0,
        }))
    }
}

/// One session's authentication state.
///
/// The card's verified state is shared by every program using the card, so the session keeps
/// its own: the PIN it verified (zeroized on drop, to VERIFY again inside the transaction of
/// each operation when the card forgot it, and right before each use of a PIN-always key), and
/// whether that PIN may still serve one PIN-always signature.
struct PivSession {
    shared: Arc<Shared>,
    pin: Option<Zeroizing<Vec<u8>>>,
    /// A PIN was supplied since the last PIN-always operation (PKCS#11's context-specific
    /// login): the next such operation may use it, once.
    pin_always_ready: bool,
    /// The card's reset count when the PIN was verified: a reset (by any program) voids the
    /// PIN, and the session reports it rather than presenting the PIN again behind the user's
    /// back.
    verified_at_reset: u64,
}

impl PivSession {
    fn key(&self, object: &ObjectId) -> Result<(SlotId, KeyEntry)> {
        let slot = SlotId::from_object_id(object)
            .ok_or_else(|| Error::object_not_found("not a PIV key slot"))?;
        let key = self
            .shared
            .slot(slot)
            .and_then(|e| e.key)
            .ok_or_else(|| Error::object_not_found("no key in this PIV slot"))?;
        Ok((slot, key))
    }

    /// Opens the card session for a private key operation, with the PIN the key's policy asks
    /// for presented inside it.
    async fn begin_for(&mut self, slot: SlotId, key: &KeyEntry) -> Result<CardSession> {
        let constraint = key.pin_policy.constraint(slot);
        if self.pin.is_some() && self.shared.card.reset_count() != self.verified_at_reset {
            self.pin = None;
            self.pin_always_ready = false;
            return Err(Error::authentication_needed(
                "the card was reset since the PIN was verified; the PIN is needed again",
            ));
        }
        match constraint {
            token_core::Constraint::Pin if self.pin.is_none() => {
                return Err(Error::authentication_needed("this key needs the PIN"))
            }
            token_core::Constraint::PinAlways if self.pin.is_none() || !self.pin_always_ready => {
                return Err(Error::authentication_needed(
                    "this key needs the PIN before every use",
                ))
            }
            _ => {}
        }
        let s = self.shared.begin().await?;
        // A reset found while beginning (another program's, reported by the transport just
        // now) voids the PIN as well.
        if self.pin.is_some() && self.shared.card.reset_count() != self.verified_at_reset {
            drop(s);
            self.pin = None;
            self.pin_always_ready = false;
            return Err(Error::authentication_needed(
                "the card was reset since the PIN was verified; the PIN is needed again",
            ));
        }
        if constraint == token_core::Constraint::PinAlways {
            self.pin_always_ready = false;
            self.present_pin(&s).await?;
        } else if constraint == token_core::Constraint::Pin
            && commands::pin_state(&s, keyref::PIN).await? != PinState::Verified
        {
            self.present_pin(&s).await?;
        }
        Ok(s)
    }

    /// VERIFY with the PIN this session verified before. Once: if the card refuses it (the
    /// PIN was changed elsewhere), the session forgets it and reports the refusal.
    async fn present_pin(&mut self, s: &CardSession) -> Result<()> {
        let Some(pin) = self.pin.clone() else {
            return Err(Error::authentication_needed("this key needs the PIN"));
        };
        if let Err(e) = commands::verify(s, keyref::PIN, &pin).await {
            self.pin = None;
            self.pin_always_ready = false;
            return Err(e);
        }
        Ok(())
    }

    async fn sign_inner(
        &mut self,
        slot: SlotId,
        key: &KeyEntry,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let key_type = key.public.key_type;
        let alg = AlgorithmId::for_key_type(key_type)?;
        // Prepare the card's input before the PIN is spent on a request we would refuse.
        let input = match (algorithm, key_type) {
            (SignatureAlgorithm::EcdsaMessage(h) | SignatureAlgorithm::EcdsaDigest(h), _) => {
                let prehashed = matches!(algorithm, SignatureAlgorithm::EcdsaDigest(_));
                let field = if key_type == KeyType::EcP256 { 32 } else { 48 };
                padding::ecdsa_input(&padding::digest(h, data, prehashed)?, field)
            }
            (SignatureAlgorithm::Ed25519, KeyType::Ed25519) => data.to_vec(),
            (
                SignatureAlgorithm::RsaPkcs1v15Message(h)
                | SignatureAlgorithm::RsaPkcs1v15Digest(h),
                KeyType::Rsa(_),
            ) => {
                let prehashed = matches!(algorithm, SignatureAlgorithm::RsaPkcs1v15Digest(_));
                let k = rsa_modulus(&key.public.raw)?.len();
                padding::pkcs1v15_sign_pad(h, &padding::digest(h, data, prehashed)?, k)?
            }
            (
                SignatureAlgorithm::RsaPssMessage(h) | SignatureAlgorithm::RsaPssDigest(h),
                KeyType::Rsa(_),
            ) => {
                let prehashed = matches!(algorithm, SignatureAlgorithm::RsaPssDigest(_));
                let n = rsa_modulus(&key.public.raw)?;
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                let mut salt = Zeroizing::new(vec![0u8; h.output_len()]);
                padding::random(&mut salt)?;
                padding::pss_encode(
                    h,
                    &padding::digest(h, data, prehashed)?,
                    &salt,
                    bits,
                    n.len(),
                )?
            }
            _ => return Err(Error::bad_parameter("this key cannot make that signature")),
        };
        let s = self.begin_for(slot, key).await?;
        let sig = commands::private_operation(&s, alg, slot, &input).await?;
        drop(s);
        match key_type {
            KeyType::EcP256 | KeyType::EcP384 => check_ecdsa_der(&sig)?,
            KeyType::Ed25519 if sig.len() != 64 => {
                return Err(Error::corrupted("Ed25519 signature is not 64 bytes"))
            }
            KeyType::Rsa(_) if sig.len() != input.len() => {
                return Err(Error::corrupted("RSA signature of the wrong length"))
            }
            _ => {}
        }
        Ok(sig)
    }
}

fn supported_signature(algorithm: SignatureAlgorithm) -> bool {
    match algorithm {
        SignatureAlgorithm::EcdsaMessage(h)
        | SignatureAlgorithm::EcdsaDigest(h)
        | SignatureAlgorithm::RsaPkcs1v15Message(h)
        | SignatureAlgorithm::RsaPkcs1v15Digest(h)
        | SignatureAlgorithm::RsaPssMessage(h)
        | SignatureAlgorithm::RsaPssDigest(h) => matches!(
            h,
            HashAlg::Sha1 | HashAlg::Sha256 | HashAlg::Sha384 | HashAlg::Sha512
        ),
        SignatureAlgorithm::Ed25519 => true,
        _ => false,
    }
}

#[async_trait]
impl SessionDelegate for PivSession {
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        let Ok((slot, entry)) = self.key(key) else {
            return false;
        };
        let key_type = entry.public.key_type;
        let usage = slot.usage_for(key_type);
        match operation {
            Operation::Sign(alg) => {
                usage.contains(KeyUsage::SIGN) && alg.fits(key_type) && supported_signature(alg)
            }
            Operation::Decrypt(alg) => {
                usage.contains(KeyUsage::DECRYPT)
                    && matches!(key_type, KeyType::Rsa(_))
                    && matches!(
                        alg,
                        DecryptAlgorithm::RsaPkcs1v15 | DecryptAlgorithm::RsaRaw
                    )
            }
            Operation::KeyExchange => usage.contains(KeyUsage::DERIVE),
            Operation::ReadData => true,
            _ => false,
        }
    }

    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        let reference = match kind {
            PinKind::User => keyref::PIN,
            PinKind::Unblock => keyref::PUK,
            _ => return Err(Error::not_implemented("PIV has a PIN and a PUK only")),
        };
        let s = self.shared.begin().await?;
        if self.shared.version.is_some_and(|v| (v[0], v[1]) >= (5, 3)) {
            if let Some(Metadata {
                retries: Some((_, left)),
                ..
            }) = commands::metadata(&s, reference).await?
            {
                return Ok(PinStatus {
                    retries_left: Some(left),
                    verified: kind == PinKind::User && self.pin.is_some(),
                });
            }
        }
        if kind == PinKind::Unblock {
            // SP 800-73-4 has no way to ask the PUK's tries without spending one.
            return Ok(PinStatus {
                retries_left: None,
                verified: false,
            });
        }
        Ok(match commands::pin_state(&s, keyref::PIN).await? {
            PinState::Verified => PinStatus {
                retries_left: None,
                verified: self.pin.is_some(),
            },
            PinState::NotVerified(left) => PinStatus {
                retries_left: left,
                verified: false,
            },
            PinState::Blocked => PinStatus {
                retries_left: Some(0),
                verified: false,
            },
        })
    }

    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        if kind != PinKind::User {
            return Err(Error::not_implemented(
                "PIV verifies the PIN only; the PUK is used with unblock_pin",
            ));
        }
        let padded = commands::pad_pin(pin)?;
        let s = self.shared.begin().await?;
        match commands::verify(&s, keyref::PIN, &padded).await {
            Ok(()) => {
                self.pin = Some(padded);
                self.pin_always_ready = true;
                self.verified_at_reset = self.shared.card.reset_count();
                Ok(())
            }
            Err(e) => {
                self.pin = None;
                self.pin_always_ready = false;
                Err(e)
            }
        }
    }

    async fn logout(&mut self) -> Result<()> {
        self.pin = None;
        self.pin_always_ready = false;
        let s = self.shared.begin().await?;
        commands::reset_pin_state(&s).await
    }

    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let (slot, entry) = self.key(key)?;
        if !algorithm.fits(entry.public.key_type) || !supported_signature(algorithm) {
            return Err(Error::bad_parameter("this key cannot make that signature"));
        }
        self.sign_inner(slot, &entry, algorithm, data).await
    }

    async fn decrypt(
        &mut self,
        key: &ObjectId,
        algorithm: DecryptAlgorithm,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (slot, entry) = self.key(key)?;
        let KeyType::Rsa(_) = entry.public.key_type else {
            return Err(Error::bad_parameter("only RSA keys decrypt"));
        };
        if !matches!(
            algorithm,
            DecryptAlgorithm::RsaPkcs1v15 | DecryptAlgorithm::RsaRaw
        ) {
            return Err(Error::bad_parameter(
                "PIV decrypts with PKCS#1 v1.5 or raw RSA",
            ));
        }
        let k = rsa_modulus(&entry.public.raw)?.len();
        if data.len() > k {
            return Err(Error::bad_parameter("ciphertext longer than the modulus"));
        }
        let mut input = vec![0u8; k - data.len()];
        input.extend_from_slice(data);
        let alg = AlgorithmId::for_key_type(entry.public.key_type)?;
        let s = self.begin_for(slot, &entry).await?;
        let plain = Zeroizing::new(commands::private_operation(&s, alg, slot, &input).await?);
        drop(s);
        if plain.len() > k {
            return Err(Error::corrupted("RSA decryption longer than the modulus"));
        }
        let mut block = Zeroizing::new(vec![0u8; k - plain.len()]);
        block.extend_from_slice(&plain);
        match algorithm {
            DecryptAlgorithm::RsaPkcs1v15 => padding::pkcs1v15_unpad(&block),
            _ => Ok(block),
        }
    }

    async fn key_exchange(&mut self, key: &ObjectId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (slot, entry) = self.key(key)?;
        let key_type = entry.public.key_type;
        let (peer_len, secret_len) = match key_type {
            KeyType::EcP256 => (65, 32),
            KeyType::EcP384 => (97, 48),
            KeyType::X25519 => (32, 32),
            _ => return Err(Error::bad_parameter("this key cannot agree keys")),
        };
        if peer.len() != peer_len || (peer_len > 32 && peer.first() != Some(&0x04)) {
            return Err(Error::bad_parameter(
                "peer key is not a raw public key of the same type",
            ));
        }
        let alg = AlgorithmId::for_key_type(key_type)?;
        let s = self.begin_for(slot, &entry).await?;
        let secret = commands::key_agreement(&s, alg, slot, peer).await?;
        drop(s);
        if secret.len() != secret_len {
            return Err(Error::corrupted("shared secret of the wrong length"));
        }
        Ok(secret)
    }

    async fn change_pin(&mut self, kind: PinKind, old: &Pin, new: &Pin) -> Result<()> {
        let reference = match kind {
            PinKind::User => keyref::PIN,
            PinKind::Unblock => keyref::PUK,
            _ => return Err(Error::not_implemented("PIV has a PIN and a PUK only")),
        };
        let new_padded = commands::pad_pin(new)?;
        let s = self.shared.begin().await?;
        commands::change_reference(&s, reference, old, new).await?;
        if kind == PinKind::User && self.pin.is_some() {
            self.pin = Some(new_padded);
        }
        Ok(())
    }

    async fn unblock_pin(&mut self, puk: &Pin, new: &Pin) -> Result<()> {
        let s = self.shared.begin().await?;
        commands::reset_retry_counter(&s, puk, new).await?;
        // The card's PIN changed: whatever this session verified before is void.
        self.pin = None;
        self.pin_always_ready = false;
        Ok(())
    }

    async fn generate_key(&mut self, spec: &KeySpec) -> Result<KeyItem> {
        let alg = AlgorithmId::for_key_type(spec.key_type)?;
        let slot = match &spec.slot {
            Some(name) => name.parse::<SlotId>()?,
            None => {
                let taken: Vec<SlotId> = self
                    .shared
                    .items()
                    .iter()
                    .filter_map(|i| SlotId::from_object_id(i.object_id()))
                    .collect();
                SlotId::all()
                    .find(|s| !taken.contains(s))
                    .ok_or_else(|| Error::bad_parameter("every PIV slot holds a key already"))?
            }
        };
        if let Some(usage) = spec.usage {
            if !slot.usage_for(spec.key_type).contains(usage) {
                return Err(Error::bad_parameter(
                    "this PIV slot does not give a key of this type those usages",
                ));
            }
        }
        self.shared
            .generate(slot, alg, PinPolicy::Default, TouchPolicy::Default)
            .await
    }

    async fn import_certificate(
        &mut self,
        _label: &str,
        der: &[u8],
        key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        let slot = match key {
            Some(k) => SlotId::from_object_id(k)
                .ok_or_else(|| Error::object_not_found("not a PIV key slot"))?,
            None => {
                let info = CertificateInfo::parse(der)?;
                let public = public_key_from_spki(&info.subject_public_key_info()?)?;
                self.shared
                    .items()
                    .iter()
                    .find_map(|i| match i {
                        Item::Key(k) if k.public_key.as_ref() == Some(&public) => {
                            SlotId::from_object_id(&k.object_id)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::bad_parameter("no key on the card matches this certificate")
                    })?
            }
        };
        self.shared.import_certificate(slot, der, false).await
    }

    async fn delete_item(&mut self, object: &ObjectId) -> Result<()> {
        let slot = SlotId::from_object_id(object)
            .ok_or_else(|| Error::object_not_found("not a PIV key slot"))?;
        if self.shared.slot(slot).and_then(|e| e.cert).is_none() {
            return Err(Error::with_code(
                ErrorCode::NotImplemented,
                "PIV cards delete certificates only; keys are replaced by generating anew",
            ));
        }
        let s = self.shared.begin().await?;
        self.shared.authenticate(&s).await?;
        commands::put_data(&s, slot.certificate_tag(), &[]).await?;
        drop(s);
        self.shared.update_slot(slot, |e| e.cert = None);
        Ok(())
    }
}
