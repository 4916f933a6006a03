//! The driver, its token and its session.

use std::sync::{Arc, Mutex, MutexGuard};

use sha2::Digest;
use token_core::{
    async_trait, CardSession, CertificateInfo, CertificateItem, Claim, Constraint,
    DecryptAlgorithm, Device, Error, ErrorCode, HashAlg, Item, ItemsNotifier, KeyImport, KeyItem,
    KeySpec, KeyType, ObjectId, Operation, Pin, PinKind, PinStatus, Probe, PublicKey, Result,
    SessionDelegate, SignatureAlgorithm, SmartCard, Token, TokenDriver, TokenId, TokenInfo,
};
use zeroize::Zeroizing;

use crate::commands::{self as cmd, AppData, Selected};
use crate::kdf::{Kdf, PinRef};
use crate::pkcs8;
use crate::rsa_der;
use crate::types::{Algorithm, KeyRef};

/// The OpenPGP card driver (ID `openpgp`). Registered with the hub through inventory.
///
/// A card's token is `openpgp:<manufacturer><serial>` in lower-case hex, from the AID: the
/// same at every insertion. Its items are the keys in the three slots (`sig`, `dec`, `aut`)
/// and the cardholder certificates.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenPgpDriver;

/// What a probe (or a refresh after key changes) learns from the card.
struct CardItems {
    keys: [Option<(Algorithm, KeyItem)>; 3],
    certs: Vec<CertificateItem>,
    pw1_multi: bool,
    /// The extended capabilities announce the KDF-DO (F9).
    kdf: bool,
    /// The extended capabilities announce PSO:DECIPHER / ENCIPHER with AES.
    aes: bool,
}

impl CardItems {
    fn items(&self) -> Vec<Item> {
        let keys = self
            .keys
            .iter()
            .flatten()
            .map(|(_, k)| Item::Key(k.clone()));
        keys.chain(self.certs.iter().cloned().map(Item::Certificate))
            .collect()
    }
}

fn key_item(slot: KeyRef, public: PublicKey, pw1_multi: bool, label: Option<&str>) -> KeyItem {
    let constraint = if slot == KeyRef::Sig && !pw1_multi {
        Constraint::PinAlways
    } else {
        Constraint::Pin
    };
    let usage = slot.usage(public.key_type);
    let label = label.filter(|l| !l.is_empty()).unwrap_or(slot.label());
    let mut item = KeyItem::new(ObjectId::new(slot.name()), label, public, usage, constraint);
    item.suitable_for_login = slot == KeyRef::Aut;
    item
}

async fn read_items(s: &CardSession, app: &AppData) -> Result<CardItems> {
    let mut keys: [Option<(Algorithm, KeyItem)>; 3] = [None, None, None];
    for slot in KeyRef::ALL {
        let i = slot.index();
        let Some(alg) = app.algorithms[i] else {
            tracing::debug!(%slot, "OpenPGP slot with an algorithm the driver does not know");
            continue;
        };
        if app.key_present.is_some_and(|p| !p[i]) {
            continue;
        }
        if let Some(public) = cmd::read_public_key(s, slot, alg).await? {
            keys[i] = Some((alg, key_item(slot, public, app.pw_status.pw1_multi, None)));
        }
    }
    let mut certs = Vec::new();
    for (slot, der) in cmd::certificates(s).await? {
        match CertificateInfo::parse(&der) {
            Ok(_) => certs.push(CertificateItem {
                object_id: ObjectId::new(slot.name()),
                label: format!("{} certificate", slot_title(slot)),
                der,
            }),
            Err(e) => tracing::warn!(%slot, %e, "unreadable cardholder certificate skipped"),
        }
    }
    Ok(CardItems {
        keys,
        certs,
        pw1_multi: app.pw_status.pw1_multi,
        kdf: app.has_kdf(),
        aes: app.has_aes(),
    })
}

fn slot_title(slot: KeyRef) -> &'static str {
    match slot {
        KeyRef::Sig => "Signature",
        KeyRef::Dec => "Decryption",
        KeyRef::Aut => "Authentication",
    }
}

fn manufacturer_name(id: u16) -> Option<&'static str> {
    // OpenPGP card 3.4 §4.2.1 and the registry kept by its editor.
    Some(match id {
        0x0001 => "PPC Card Systems",
        0x0005 => "ZeitControl",
        0x0006 => "Yubico",
        0x000F => "Nitrokey",
        0xF1D0 => "CanoKeys",
        0xFF00..=0xFFFE => "test card",
        _ => return None,
    })
}

#[async_trait]
impl TokenDriver for OpenPgpDriver {
    fn id(&self) -> &'static str {
        "openpgp"
    }

    fn name(&self) -> &'static str {
        "OpenPGP card 3.4"
    }

    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        let Device::SmartCard(card) = &probe.device else {
            return Ok(Claim::NotMine);
        };
        let session = card.begin_session().await?;
        match cmd::select(&session).await? {
            Selected::Yes => {}
            Selected::Terminated => {
                tracing::info!(slot = %probe.slot_name, "OpenPGP application terminated");
                return Ok(Claim::NotMine);
            }
            Selected::No => return Ok(Claim::NotMine),
        }
        let app = cmd::application_data(&session).await?;
        let manufacturer = app.manufacturer()?;
        let serial = app.serial()?;
        let instance: String = manufacturer
            .to_be_bytes()
            .iter()
            .chain(serial.iter())
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = TokenId::new(self.id(), &instance)?;
        let items = read_items(&session, &app).await?;
        let name = match cmd::cardholder_name(&session).await {
            Ok(n) => n,
            Err(e) if e.status_word().is_some() || e.code() == ErrorCode::CorruptedData => None,
            Err(e) => return Err(e),
        };
        drop(session);
        let serial_hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
        let info = TokenInfo {
            label: name.unwrap_or_else(|| format!("OpenPGP card {serial_hex}")),
            manufacturer: Some(
                manufacturer_name(manufacturer)
                    .map_or_else(|| format!("manufacturer {manufacturer:04X}"), String::from),
            ),
            model: app
                .version()
                .map(|(major, minor)| format!("OpenPGP card {major}.{minor}")),
            serial: Some(serial_hex),
        };
        Ok(Claim::Token(Arc::new(OpenPgpToken {
            shared: Arc::new(Shared {
                id,
                card: card.clone(),
                info,
                items: Mutex::new(items),
                notifier: probe.notifier.clone(),
            }),
        })))
    }
}

struct Shared {
    id: TokenId,
    card: SmartCard,
    info: TokenInfo,
    items: Mutex<CardItems>,
    notifier: ItemsNotifier,
}

impl Shared {
    fn items(&self) -> MutexGuard<'_, CardItems> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, object: &ObjectId) -> Result<(KeyRef, Algorithm, KeyItem)> {
        let slot = slot_of(object)?;
        self.items().keys[slot.index()]
            .as_ref()
            .map(|(alg, item)| (slot, *alg, item.clone()))
            .ok_or_else(|| Error::object_not_found(format!("no key in the {slot} slot")))
    }

    /// Reads the items again after a change made through a session.
    async fn refresh(&self, s: &CardSession) -> Result<()> {
        let app = cmd::application_data(s).await?;
        let fresh = read_items(s, &app).await?;
        *self.items() = fresh;
        Ok(())
    }
}

fn slot_of(object: &ObjectId) -> Result<KeyRef> {
    core::str::from_utf8(object.as_bytes())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::object_not_found("OpenPGP objects are sig, dec and aut"))
}

/// One OpenPGP card application as a token. Reached through
/// [`token_core::TokenHandle::token`] and `as_any` for [`OpenPgpToken::card`].
pub struct OpenPgpToken {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for OpenPgpToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenPgpToken")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl OpenPgpToken {
    /// The card the token lives on.
    pub fn card(&self) -> &SmartCard {
        &self.shared.card
    }
}

#[async_trait]
impl Token for OpenPgpToken {
    fn id(&self) -> &TokenId {
        &self.shared.id
    }

    fn info(&self) -> TokenInfo {
        self.shared.info.clone()
    }

    fn items(&self) -> Vec<Item> {
        self.shared.items().items()
    }

    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(OpenPgpSession {
            shared: self.shared.clone(),
            pw1_sign: None,
            pw1_other: None,
            pw3: None,
        }))
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

/// One session on an OpenPGP card. It keeps its own record of the PINs it verified (PW1 for
/// signing, PW1 for the other keys, PW3), each voided when the card is reset by anyone; the
/// card's own state is shared by every program and never trusted on its own.
///
/// Reached through [`token_core::TokenSession::delegate_mut`] and `as_any_mut` for the
/// OpenPGP-specific operations ([`OpenPgpSession::factory_reset`] and friends).
pub struct OpenPgpSession {
    shared: Arc<Shared>,
    /// Reset count at VERIFY 81 (PSO:CDS).
    pw1_sign: Option<u64>,
    /// Reset count at VERIFY 82 (PSO:DECIPHER, INTERNAL AUTHENTICATE).
    pw1_other: Option<u64>,
    /// Reset count at VERIFY 83 (admin).
    pw3: Option<u64>,
}

impl core::fmt::Debug for OpenPgpSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenPgpSession")
            .field("token", &self.shared.id)
            .finish_non_exhaustive()
    }
}

fn stands(flag: Option<u64>, card: &SmartCard) -> bool {
    flag == Some(card.reset_count())
}

impl OpenPgpSession {
    fn now(&self) -> Option<u64> {
        Some(self.shared.card.reset_count())
    }

    async fn open(&self) -> Result<CardSession> {
        let s = self.shared.card.begin_session().await?;
        cmd::select_or_fail(&s).await?;
        Ok(s)
    }

    fn admin_verified(&self) -> Result<()> {
        if stands(self.pw3, &self.shared.card) {
            Ok(())
        } else {
            Err(Error::authentication_needed_for(
                PinKind::Admin,
                "this needs the admin PIN (PW3)",
            ))
        }
    }

    /// The card's KDF-DO when the card has one and it is on (read before every PIN command:
    /// another program may have set it up since).
    async fn kdf(&self, s: &CardSession) -> Result<Option<Kdf>> {
        if !self.shared.items().kdf {
            return Ok(None);
        }
        match cmd::get_data(s, 0xF9).await {
            Ok(f9) => Kdf::parse(&f9),
            Err(e) if e.status_word().is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Forgets every PIN of this session.
    fn forget(&mut self) {
        self.pw1_sign = None;
        self.pw1_other = None;
        self.pw3 = None;
    }

    /// The digital signature counter (7A/93): how many PSO:CDS the signature key made.
    ///
    /// # Errors
    /// Transport errors, `CorruptedData`.
    pub async fn signature_counter(&mut self) -> Result<u32> {
        let s = self.open().await?;
        cmd::signature_counter(&s).await
    }

    /// PSO:ENCIPHER with the card's AES key (DO D5): AES-CBC (zero IV, no padding) of
    /// `plaintext`, a whole number of 16-byte blocks, after the user PIN. Only on cards whose
    /// extended capabilities announce PSO:DEC/ENC with AES.
    ///
    /// # Errors
    /// `NotImplemented` when the card does not announce it; `BadParameter` for a length that
    /// is not a multiple of 16; `AuthenticationNeeded` without the user PIN; the card's
    /// refusal (6A88 when it has no AES key).
    pub async fn aes_encipher(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.aes_ready(plaintext)?;
        let s = self.open().await?;
        cmd::aes_encipher(&s, plaintext)
            .await
            .inspect_err(|e| self.on_error(KeyRef::Dec, e))
    }

    /// PSO:DECIPHER with the card's AES key (DO D5): the inverse of
    /// [`OpenPgpSession::aes_encipher`].
    ///
    /// # Errors
    /// As [`OpenPgpSession::aes_encipher`].
    pub async fn aes_decipher(&mut self, cryptogram: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.aes_ready(cryptogram)?;
        let s = self.open().await?;
        cmd::aes_decipher(&s, cryptogram)
            .await
            .inspect_err(|e| self.on_error(KeyRef::Dec, e))
    }

    fn aes_ready(&self, data: &[u8]) -> Result<()> {
        if !self.shared.items().aes {
            return Err(Error::not_implemented(
                "the card does not announce PSO:DECIPHER/ENCIPHER with AES",
            ));
        }
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(Error::bad_parameter(
                "AES data is a whole number of 16-byte blocks",
            ));
        }
        if !stands(self.pw1_other, &self.shared.card) {
            return Err(Error::authentication_needed("AES needs the user PIN"));
        }
        Ok(())
    }

    /// Sets the user PIN after the admin PIN (RESET RETRY COUNTER P1 02), which also resets its
    /// counter.
    ///
    /// # Errors
    /// `AuthenticationNeeded` without a verified admin PIN; `BadParameter` for a PIN the card
    /// refuses.
    pub async fn reset_user_pin_as_admin(&mut self, new: &Pin) -> Result<()> {
        self.admin_verified()?;
        let s = self.open().await?;
        let kdf = self.kdf(&s).await?;
        cmd::reset_retry_counter(&s, None, &derive(&kdf, PinRef::Pw1, new)).await
    }

    /// Sets the resetting code (PUT DATA D3; an empty code removes it).
    ///
    /// # Errors
    /// `AuthenticationNeeded` without a verified admin PIN.
    pub async fn set_resetting_code(&mut self, code: &Pin) -> Result<()> {
        self.admin_verified()?;
        let s = self.open().await?;
        let value = if code.is_empty() {
            Zeroizing::new(Vec::new())
        } else {
            derive(&self.kdf(&s).await?, PinRef::Rc, code)
        };
        let [p1, p2] = 0x00D3u16.to_be_bytes();
        let c = token_core::Command::new(s.card().cla(), token_core::Ins::PUT_DATA, p1, p2)
            .with_data_vec(value)
            .sensitive();
        s.send(&c).await?.into_result().map(drop)
    }

    /// **Dangerous**: erases every key, certificate and PIN (TERMINATE DF + ACTIVATE FILE). The
    /// card allows it when the admin PIN was verified (this session must have verified it) or
    /// is blocked. The PINs go back to 123456 / 12345678. This never tries PINs to block PW3.
    ///
    /// # Errors
    /// `AuthenticationNeeded` when the admin PIN is neither verified here nor blocked.
    pub async fn factory_reset(&mut self) -> Result<()> {
        let s = self.open().await?;
        if !stands(self.pw3, &self.shared.card) && cmd::pw_status(&s).await?.pw3_tries != 0 {
            return Err(Error::authentication_needed_for(
                PinKind::Admin,
                "a factory reset needs the admin PIN verified, or blocked",
            ));
        }
        cmd::factory_reset(&s).await?;
        self.forget();
        self.shared.refresh(&s).await?;
        drop(s);
        self.shared.notifier.items_changed(&self.shared.id);
        Ok(())
    }

    /// Makes sure the slot's algorithm attributes are `alg`, changing them when needed, and
    /// gives the attributes the slot has then. RSA attributes of the right size are kept as
    /// the card has them (exponent size, import format); a change to RSA keeps the card's
    /// exponent size and import format when it had RSA of another size.
    async fn set_algorithm(
        &self,
        s: &CardSession,
        slot: KeyRef,
        alg: Algorithm,
    ) -> Result<Algorithm> {
        let app = cmd::application_data(s).await?;
        let current = app.algorithms[slot.index()];
        let wanted = match (current, alg) {
            (Some(c @ Algorithm::Rsa { bits: have, .. }), Algorithm::Rsa { bits, .. })
                if have == bits =>
            {
                return Ok(c)
            }
            (
                Some(Algorithm::Rsa {
                    exponent_bits,
                    format,
                    ..
                }),
                Algorithm::Rsa { bits, .. },
            ) => Algorithm::Rsa {
                bits,
                exponent_bits,
                format,
            },
            (Some(c), a) if c == a => return Ok(c),
            (_, a) => a,
        };
        cmd::put_data(s, slot.attributes_tag(), &wanted.attributes()).await?;
        Ok(wanted)
    }

    fn choose_slot(requested: Option<&str>, key_type: KeyType) -> Result<KeyRef> {
        match requested {
            Some(s) => s.parse(),
            None if key_type == KeyType::X25519 => Ok(KeyRef::Dec),
            None => Ok(KeyRef::Sig),
        }
    }

    /// Runs a private-key operation; a 6982 from the card voids the flag it relied on.
    fn on_error(&mut self, slot: KeyRef, e: &Error) {
        if e.code() == ErrorCode::AuthenticationNeeded {
            match slot {
                KeyRef::Sig => self.pw1_sign = None,
                _ => self.pw1_other = None,
            }
        }
    }
}

/// Writes the key's v4 fingerprint and generation time (now) to the card, as GnuPG does
/// after generating or importing; a card that refuses keeps its key, so this only logs.
async fn write_fingerprint(s: &CardSession, slot: KeyRef, alg: Algorithm, public: &[u8]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let fp = crate::fingerprint::fingerprint_v4(alg, public, now);
    let written = match cmd::put_data(s, slot.fingerprint_tag(), &fp).await {
        Ok(()) => cmd::put_data(s, slot.time_tag(), &now.to_be_bytes()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(%slot, %e, "the card did not take the key's fingerprint");
    }
}

/// The input the card signs for a key and algorithm: the digest for ECDSA (hashed on the
/// host for the message variants), the message for EdDSA.
fn signing_input(alg: Algorithm, algorithm: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>> {
    if !algorithm.fits(alg.key_type()) {
        return Err(Error::bad_parameter(
            "the key cannot make this kind of signature",
        ));
    }
    let hash = |h: HashAlg, m: &[u8]| -> Vec<u8> {
        match h {
            HashAlg::Sha1 => sha1::Sha1::digest(m).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(m).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(m).to_vec(),
            _ => sha2::Sha512::digest(m).to_vec(),
        }
    };
    if alg.is_rsa() {
        // The card pads (PKCS#1 v1.5, type 1) what it gets: the DigestInfo.
        let (h, digest) = match algorithm {
            SignatureAlgorithm::RsaPkcs1v15Message(h) => (h, hash(h, data)),
            SignatureAlgorithm::RsaPkcs1v15Digest(h) if data.len() == h.output_len() => {
                (h, data.to_vec())
            }
            SignatureAlgorithm::RsaPkcs1v15Digest(_) => {
                return Err(Error::bad_parameter(
                    "digest length does not match the hash",
                ))
            }
            _ => {
                return Err(Error::not_implemented(
                    "OpenPGP cards make PKCS#1 v1.5 RSA signatures only",
                ))
            }
        };
        let prefix = rsa_der::digest_info_prefix(h).ok_or_else(|| {
            Error::not_implemented("RSA signatures with SHA-256, SHA-384 or SHA-512 only")
        })?;
        let mut input = prefix.to_vec();
        input.extend_from_slice(&digest);
        return Ok(input);
    }
    Ok(match algorithm {
        SignatureAlgorithm::EcdsaMessage(h) => hash(h, data),
        SignatureAlgorithm::EcdsaDigest(h) => {
            if data.len() != h.output_len() {
                return Err(Error::bad_parameter(
                    "digest length does not match the hash",
                ));
            }
            data.to_vec()
        }
        SignatureAlgorithm::Ed25519 => data.to_vec(),
        _ => {
            return Err(Error::bad_parameter(
                "the key cannot make this kind of signature",
            ))
        }
    })
}

/// True for the RSA signature algorithms the card makes: PKCS#1 v1.5 with SHA-256/384/512.
fn rsa_signature_supported(algorithm: SignatureAlgorithm) -> bool {
    matches!(
        algorithm,
        SignatureAlgorithm::RsaPkcs1v15Message(h) | SignatureAlgorithm::RsaPkcs1v15Digest(h)
            if rsa_der::digest_info_prefix(h).is_some()
    )
}

/// The PIN as the card takes it: as typed, or through the KDF-DO.
fn derive(kdf: &Option<Kdf>, which: PinRef, pin: &Pin) -> Zeroizing<Vec<u8>> {
    match kdf {
        Some(k) => k.derive(which, pin.expose()),
        None => Zeroizing::new(pin.expose().to_vec()),
    }
}

/// A big-endian number left-padded with zeros to `len` bytes.
fn padded(v: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let v = rsa_der::strip(v);
    if v.len() > len {
        return Err(Error::bad_parameter(
            "RSA key part longer than the card's attributes allow",
        ));
    }
    let mut out = Zeroizing::new(vec![0u8; len - v.len()]);
    out.extend_from_slice(v);
    Ok(out)
}

#[async_trait]
impl SessionDelegate for OpenPgpSession {
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        let Ok((slot, alg, _)) = self.shared.key(key) else {
            return false;
        };
        match operation {
            Operation::Sign(a) if alg.is_rsa() => slot != KeyRef::Dec && rsa_signature_supported(a),
            Operation::Sign(a) => slot != KeyRef::Dec && alg.signs() && a.fits(alg.key_type()),
            Operation::Decrypt(DecryptAlgorithm::RsaPkcs1v15) => {
                slot == KeyRef::Dec && alg.is_rsa()
            }
            Operation::KeyExchange => slot == KeyRef::Dec && !alg.signs() && !alg.is_rsa(),
            _ => false,
        }
    }

    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        let s = self.open().await?;
        let status = cmd::pw_status(&s).await?;
        let card = &self.shared.card;
        Ok(match kind {
            PinKind::User => PinStatus {
                retries_left: Some(status.pw1_tries),
                verified: stands(self.pw1_other, card) || stands(self.pw1_sign, card),
            },
            PinKind::Admin => PinStatus {
                retries_left: Some(status.pw3_tries),
                verified: stands(self.pw3, card),
            },
            PinKind::Unblock => PinStatus {
                retries_left: Some(status.rc_tries),
                verified: false,
            },
            _ => return Err(Error::not_implemented("no such PIN on an OpenPGP card")),
        })
    }

    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        if pin.is_empty() {
            return Err(Error::bad_parameter("empty PIN"));
        }
        let s = self.open().await?;
        let kdf = self.kdf(&s).await?;
        match kind {
            PinKind::User => {
                self.pw1_sign = None;
                self.pw1_other = None;
                let pin = derive(&kdf, PinRef::Pw1, pin);
                // 82 first: a wrong PIN costs one try there, and 81 is never tried with it.
                cmd::verify(&s, 0x82, &pin).await?;
                self.pw1_other = self.now();
                cmd::verify(&s, 0x81, &pin).await?;
                self.pw1_sign = self.now();
            }
            PinKind::Admin => {
                self.pw3 = None;
                cmd::verify(&s, 0x83, &derive(&kdf, PinRef::Pw3, pin)).await?;
                self.pw3 = self.now();
            }
            _ => {
                return Err(Error::bad_parameter(
                    "the resetting code is not verified alone: use unblock_pin",
                ))
            }
        }
        Ok(())
    }

    async fn logout(&mut self) -> Result<()> {
        self.forget();
        Ok(())
    }

    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let (slot, alg, _) = self.shared.key(key)?;
        if slot == KeyRef::Dec || !(alg.signs() || alg.is_rsa()) {
            return Err(Error::bad_parameter("the decryption key does not sign"));
        }
        let input = signing_input(alg, algorithm, data)?;
        let card = self.shared.card.clone();
        let flag = if slot == KeyRef::Sig {
            self.pw1_sign
        } else {
            self.pw1_other
        };
        if !stands(flag, &card) {
            return Err(Error::authentication_needed("signing needs the user PIN"));
        }
        let s = self.open().await?;
        let r = if slot == KeyRef::Sig {
            cmd::compute_signature(&s, &input).await
        } else {
            cmd::internal_authenticate(&s, &input).await
        };
        drop(s);
        if slot == KeyRef::Sig && !self.shared.items().pw1_multi {
            // PW1 81 holds for one signature (C4 byte 1 = 00).
            self.pw1_sign = None;
        }
        let raw = r.inspect_err(|e| self.on_error(slot, e))?;
        match alg {
            Algorithm::EcdsaP256 => cmd::ecdsa_raw_to_der(&raw, 32),
            Algorithm::EcdsaP384 => cmd::ecdsa_raw_to_der(&raw, 48),
            Algorithm::Rsa { bits, .. } => {
                // As long as the modulus (a card may leave out leading zero bytes).
                padded(&raw, usize::from(bits) / 8)
                    .map(|s| s.to_vec())
                    .map_err(|_| Error::corrupted("RSA signature longer than the modulus"))
            }
            _ if raw.len() == 64 => Ok(raw),
            _ => Err(Error::corrupted("EdDSA signature is not 64 bytes")),
        }
    }

    async fn key_exchange(&mut self, key: &ObjectId, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (slot, alg, _) = self.shared.key(key)?;
        if slot != KeyRef::Dec || alg.signs() || alg.is_rsa() {
            return Err(Error::bad_parameter(
                "only an ECDH decryption key agrees keys",
            ));
        }
        let (peer_len, out_len) = match alg {
            Algorithm::EcdhP256 => (65, 32),
            Algorithm::EcdhP384 => (97, 48),
            _ => (32, 32),
        };
        if peer.len() != peer_len {
            return Err(Error::bad_parameter("peer public key of the wrong length"));
        }
        if !stands(self.pw1_other, &self.shared.card) {
            return Err(Error::authentication_needed(
                "key agreement needs the user PIN",
            ));
        }
        let s = self.open().await?;
        let secret = cmd::ecdh(&s, peer)
            .await
            .inspect_err(|e| self.on_error(slot, e))?;
        if secret.len() != out_len {
            return Err(Error::corrupted("shared secret of the wrong length"));
        }
        Ok(secret)
    }

    async fn decrypt(
        &mut self,
        key: &ObjectId,
        algorithm: DecryptAlgorithm,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (slot, alg, _) = self.shared.key(key)?;
        let Algorithm::Rsa { bits, .. } = alg else {
            return Err(Error::bad_parameter("only an RSA decryption key decrypts"));
        };
        if slot != KeyRef::Dec {
            return Err(Error::bad_parameter("only the decryption key decrypts"));
        }
        if algorithm != DecryptAlgorithm::RsaPkcs1v15 {
            return Err(Error::not_implemented(
                "OpenPGP cards remove PKCS#1 v1.5 padding themselves: no OAEP, no raw RSA",
            ));
        }
        let cryptogram = padded(data, usize::from(bits) / 8)
            .map_err(|_| Error::bad_parameter("cryptogram longer than the modulus"))?;
        if !stands(self.pw1_other, &self.shared.card) {
            return Err(Error::authentication_needed(
                "decryption needs the user PIN",
            ));
        }
        let s = self.open().await?;
        cmd::rsa_decipher(&s, &cryptogram)
            .await
            .inspect_err(|e| self.on_error(slot, e))
    }

    async fn change_pin(&mut self, kind: PinKind, old: &Pin, new: &Pin) -> Result<()> {
        let (p2, which) = match kind {
            PinKind::User => (0x81, PinRef::Pw1),
            PinKind::Admin => (0x83, PinRef::Pw3),
            _ => {
                return Err(Error::not_implemented(
                    "the resetting code is set with the admin PIN (set_resetting_code)",
                ))
            }
        };
        if old.is_empty() || new.is_empty() {
            return Err(Error::bad_parameter("empty PIN"));
        }
        let s = self.open().await?;
        let kdf = self.kdf(&s).await?;
        let (old, new) = (derive(&kdf, which, old), derive(&kdf, which, new));
        cmd::change_reference(&s, p2, &old, &new).await
    }

    async fn unblock_pin(&mut self, puk: &Pin, new: &Pin) -> Result<()> {
        let s = self.open().await?;
        let kdf = self.kdf(&s).await?;
        let new = derive(&kdf, PinRef::Pw1, new);
        if puk.is_empty() {
            // No resetting code given: the admin path (P1 02), after PW3.
            self.admin_verified()?;
            return cmd::reset_retry_counter(&s, None, &new).await;
        }
        let code = derive(&kdf, PinRef::Rc, puk);
        cmd::reset_retry_counter(&s, Some(&code), &new).await
    }

    async fn generate_key(&mut self, spec: &KeySpec) -> Result<KeyItem> {
        let slot = Self::choose_slot(spec.slot.as_deref(), spec.key_type)?;
        let alg = Algorithm::for_slot(slot, spec.key_type)?;
        self.admin_verified()?;
        let s = self.open().await?;
        let alg = self.set_algorithm(&s, slot, alg).await?;
        let answer = cmd::generate(&s, slot, false).await?;
        let public = cmd::parse_public_key(&answer, alg)?;
        write_fingerprint(&s, slot, alg, &public.raw).await;
        self.shared.refresh(&s).await?;
        let mut items = self.shared.items();
        let item = key_item(slot, public, items.pw1_multi, Some(&spec.label));
        items.keys[slot.index()] = Some((alg, item.clone()));
        Ok(item)
    }

    async fn import_key(&mut self, key: &KeyImport) -> Result<KeyItem> {
        let parsed = pkcs8::parse(&key.pkcs8)?;
        let slot = Self::choose_slot(key.slot.as_deref(), parsed.key_type)?;
        let alg = Algorithm::for_slot(slot, parsed.key_type)?;
        self.admin_verified()?;
        let s = self.open().await?;
        let alg = self.set_algorithm(&s, slot, alg).await?;
        let mut held = Vec::new();
        let parts = match (&parsed.rsa, alg) {
            (
                Some(rsa),
                Algorithm::Rsa {
                    bits,
                    exponent_bits,
                    format,
                },
            ) => {
                let half = usize::from(bits) / 16;
                held.push((
                    0x91,
                    padded(&rsa.e, usize::from(exponent_bits).div_ceil(8))?,
                ));
                held.push((0x92, padded(&rsa.p, half)?));
                held.push((0x93, padded(&rsa.q, half)?));
                if format.has_crt() {
                    held.push((0x94, padded(&rsa.qinv, half)?));
                    held.push((0x95, padded(&rsa.dp, half)?));
                    held.push((0x96, padded(&rsa.dq, half)?));
                }
                if format.has_modulus() {
                    held.push((0x97, padded(&rsa.n, usize::from(bits) / 8)?));
                }
                held.iter().map(|(t, v)| (*t, &v[..])).collect()
            }
            _ => {
                let mut parts: cmd::ImportParts<'_> = vec![(0x92, &parsed.private[..])];
                if let Some(p) = &parsed.public {
                    parts.push((0x99, p));
                }
                parts
            }
        };
        cmd::import_key(&s, slot, &parts).await?;
        let public = cmd::read_public_key(&s, slot, alg)
            .await?
            .ok_or_else(|| Error::corrupted("the card lost the imported key"))?;
        if let Some(rsa) = &parsed.rsa {
            if rsa_der::public_parts(&public.raw).map(|(n, _)| n) != Some(rsa_der::strip(&rsa.n)) {
                return Err(Error::corrupted(
                    "the card holds another RSA key than the one imported",
                ));
            }
        }
        write_fingerprint(&s, slot, alg, &public.raw).await;
        self.shared.refresh(&s).await?;
        let mut items = self.shared.items();
        let item = key_item(slot, public, items.pw1_multi, Some(&key.label));
        items.keys[slot.index()] = Some((alg, item.clone()));
        Ok(item)
    }

    async fn import_certificate(
        &mut self,
        label: &str,
        der: &[u8],
        key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        CertificateInfo::parse(der)?;
        let slot = key.map(slot_of).transpose()?.unwrap_or(KeyRef::Aut);
        self.admin_verified()?;
        let s = self.open().await?;
        cmd::put_certificate(&s, slot, der).await?;
        let item = CertificateItem {
            object_id: ObjectId::new(slot.name()),
            label: if label.is_empty() {
                format!("{} certificate", slot_title(slot))
            } else {
                label.to_string()
            },
            der: der.to_vec(),
        };
        let mut items = self.shared.items();
        items.certs.retain(|c| c.object_id != item.object_id);
        items.certs.push(item.clone());
        Ok(item)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn core::any::Any> {
        Some(self)
    }
}
