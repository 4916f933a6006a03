//! FIDO2 authenticators as tokenkit tokens: [`Fido2Driver`], its token and its session.
//!
//! The driver claims CTAPHID slots ([`Device::Ctap`]) and smart cards whose FIDO applet
//! (SELECT of the FIDO AID) answers getInfo: `FIDO_2_0` applets, and `U2F_V2` applets that
//! speak CTAP2 too (NFC and CCID; on a multi-application card the FIDO2 token sits beside the
//! PIV and OpenPGP ones).
//!
//! Discoverable credentials become key items once the user unlocks the token (verifies the
//! PIN: credential management needs it), labelled `<RP ID> <user name>`, with the credential
//! ID as object ID and the public key that enumerateCredentials reports. Signing with such a
//! key is a getAssertion with the credential alone in the allow list and the data as the
//! client data hash; the signature returned covers `authData ‖ clientDataHash`, so a verifier
//! needs the authenticator data too: [`Fido2TokenSession::assertion`] returns the whole
//! assertion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use token_core::{
    async_trait, Claim, Constraint, Device, Error, HashAlg, Item, ItemsNotifier, KeyItem, KeyType,
    KeyUsage, ObjectId, Operation, Pin, PinKind, PinStatus, Probe, PublicKey, Result,
    SessionDelegate, SignatureAlgorithm, SlotKind, Token, TokenDriver, TokenId, TokenInfo,
};

use crate::apdu::{select_fido, ApduCtapChannel};
use crate::client::{Assertion, Ctap2, GetAssertionRequest, User};
use crate::session::Fido2Session;

/// The CTAPHID INIT capability flag of devices that take CTAP2 CBOR messages.
const CAPABILITY_CBOR: u8 = 0x04;

/// The FIDO2 driver, registered with the hub as `fido2`, priority 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fido2Driver;

token_core::register_driver!(token_core::DriverRegistration::new("fido2", 0, || {
    Arc::new(Fido2Driver)
}));

/// One discoverable credential the token knows of.
#[derive(Clone, Debug, PartialEq)]
struct Credential {
    rp_id: String,
    user: User,
    public_key: Option<PublicKey>,
}

struct Shared {
    id: TokenId,
    client: Ctap2,
    notifier: ItemsNotifier,
    credentials: Mutex<BTreeMap<Vec<u8>, Credential>>,
}

impl Shared {
    fn credentials(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Credential>> {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token ID of an authenticator: `fido2:<AAGUID>-<slot>`, the AAGUID in hex (it names the
/// model) and the first 4 bytes of SHA-256 of the slot's name in hex. CTAP has no serial
/// number, so this is stable while the authenticator stays in the same slot (the same reader,
/// the same HID path); two authenticators of one model in two slots get two IDs.
pub fn token_id_for(aaguid: &[u8; 16], slot_name: &str) -> Result<TokenId> {
    let slot = Sha256::digest(slot_name.as_bytes());
    TokenId::new("fido2", &format!("{}-{}", hex(aaguid), hex(&slot[..4])))
}

#[async_trait]
impl TokenDriver for Fido2Driver {
    fn id(&self) -> &'static str {
        "fido2"
    }

    fn name(&self) -> &'static str {
        "FIDO2 (CTAP 2.1)"
    }

    fn slot_kinds(&self) -> &'static [SlotKind] {
        &[SlotKind::SmartCard, SlotKind::Hid]
    }

    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        let client = match &probe.device {
            // A CTAP1/U2F-only device does not carry CTAPHID CBOR messages.
            Device::Ctap(channel) if channel.capabilities() & CAPABILITY_CBOR == 0 => {
                return Ok(Claim::NotMine)
            }
            Device::Ctap(channel) => Ctap2::new(channel.clone()).await?,
            Device::SmartCard(card) => {
                let session = card.begin_session().await?;
                let Some(applet) = select_fido(&session).await? else {
                    return Ok(Claim::NotMine);
                };
                drop(session);
                let channel = Arc::new(ApduCtapChannel::new(card.clone()));
                match Ctap2::new(channel).await {
                    Ok(client) => client,
                    // Authenticators that also speak U2F answer SELECT with `U2F_V2` (CTAP
                    // 2.1 §11.3.3); getInfo tells whether CTAP2 is there too. A U2F-only
                    // applet refuses it.
                    Err(e) if !applet.is_ctap2() => {
                        tracing::debug!(error = %e, "FIDO: U2F-only applet, no CTAP2");
                        return Ok(Claim::NotMine);
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => return Ok(Claim::NotMine),
        };
        let id = token_id_for(&client.info().aaguid, &probe.slot_name)?;
        Ok(Claim::Token(Arc::new(Fido2Token {
            shared: Arc::new(Shared {
                id,
                client,
                notifier: probe.notifier.clone(),
                credentials: Mutex::new(BTreeMap::new()),
            }),
        })))
    }
}

/// A FIDO2 authenticator as a token.
pub struct Fido2Token {
    shared: Arc<Shared>,
}

impl Fido2Token {
    /// getInfo, as read at probe.
    pub fn info_ctap(&self) -> &crate::client::Info {
        self.shared.client.info()
    }

    /// A [`Fido2Session`] on this authenticator, for the whole CTAP2 API (make credentials,
    /// large blobs, configuration) with the automatic AuthToken logic.
    pub fn fido2_session(&self) -> Fido2Session {
        let mut s = Fido2Session::new(self.shared.client.clone());
        s.set_token_id(self.shared.id.clone());
        s
    }
}

fn key_item(id: &[u8], c: &Credential) -> Option<KeyItem> {
    let pk = c.public_key.clone()?;
    let label = match &c.user.name {
        Some(name) => format!("{} {}", c.rp_id, name),
        None => c.rp_id.clone(),
    };
    Some(KeyItem::new(
        ObjectId::new(id),
        label,
        pk,
        KeyUsage::SIGN,
        Constraint::Touch,
    ))
}

#[async_trait]
impl Token for Fido2Token {
    fn id(&self) -> &TokenId {
        &self.shared.id
    }

    fn info(&self) -> TokenInfo {
        let info = self.shared.client.info();
        TokenInfo {
            label: "FIDO2 authenticator".into(),
            manufacturer: None,
            model: Some(format!(
                "{} (AAGUID {})",
                info.versions.join(" "),
                hex(&info.aaguid)
            )),
            serial: None,
        }
    }

    fn items(&self) -> Vec<Item> {
        self.shared
            .credentials()
            .iter()
            .filter_map(|(id, c)| key_item(id, c).map(Item::Key))
            .collect()
    }

    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(Fido2TokenSession {
            session: self.fido2_session(),
            shared: self.shared.clone(),
        }))
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

/// A session on a FIDO2 token: the tokenkit operations, and through
/// [`Fido2TokenSession::fido2`] the whole [`Fido2Session`]. Reach it with
/// `token_session.delegate_mut().as_any_mut()` and `downcast_mut::<Fido2TokenSession>()`.
pub struct Fido2TokenSession {
    session: Fido2Session,
    shared: Arc<Shared>,
}

impl Fido2TokenSession {
    /// The CTAP2 session with the automatic AuthToken logic.
    pub fn fido2(&mut self) -> &mut Fido2Session {
        &mut self.session
    }

    /// Reads the discoverable credentials again (credential management; needs the PIN) and
    /// updates the token's items.
    ///
    /// # Errors
    /// `AuthenticationNeeded` when no token allows it and no key collector is set.
    pub async fn refresh_credentials(&mut self) -> Result<()> {
        let mut found = BTreeMap::new();
        for rp in self.session.enumerate_rps().await? {
            for c in self.session.enumerate_credentials(&rp.rp.id).await? {
                found.insert(
                    c.credential_id.clone(),
                    Credential {
                        rp_id: rp.rp.id.clone(),
                        user: c.user.clone(),
                        public_key: c.public_key.as_ref().and_then(|k| k.public_key.clone()),
                    },
                );
            }
        }
        *self.shared.credentials() = found;
        self.shared.notifier.items_changed(&self.shared.id);
        Ok(())
    }

    fn credential(&self, key: &ObjectId) -> Result<Credential> {
        self.shared
            .credentials()
            .get(key.as_bytes())
            .cloned()
            .ok_or_else(|| Error::object_not_found("no such credential on the authenticator"))
    }

    /// The whole assertion of the credential `key` over `client_data_hash` (32 bytes): the
    /// authenticator data and signature a verifier needs (the signature covers
    /// `auth_data ‖ client_data_hash`).
    ///
    /// # Errors
    /// `ObjectNotFound` for an unknown key; `AuthenticationNeeded` when a new token is needed
    /// and no key collector is set; CTAP and transport errors.
    pub async fn assertion(
        &mut self,
        key: &ObjectId,
        client_data_hash: &[u8],
    ) -> Result<Assertion> {
        if client_data_hash.len() != 32 {
            return Err(Error::bad_parameter("the client data hash is 32 bytes"));
        }
        let c = self.credential(key)?;
        let request = GetAssertionRequest {
            rp_id: c.rp_id,
            client_data_hash: client_data_hash.to_vec(),
            allow_list: vec![key.as_bytes().to_vec()],
            extensions: None,
            user_presence: None,
        };
        self.session.get_assertion(&request).await
    }
}

fn client_data_hash(
    key_type: KeyType,
    algorithm: SignatureAlgorithm,
    data: &[u8],
) -> Option<Vec<u8>> {
    match (key_type, algorithm) {
        (KeyType::EcP256, SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256)) => {
            (data.len() == 32).then(|| data.to_vec())
        }
        (KeyType::EcP256, SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256))
        | (KeyType::Ed25519, SignatureAlgorithm::Ed25519) => Some(Sha256::digest(data).to_vec()),
        _ => None,
    }
}

#[async_trait]
impl SessionDelegate for Fido2TokenSession {
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        let Ok(c) = self.credential(key) else {
            return false;
        };
        let Some(pk) = c.public_key else {
            return false;
        };
        match operation {
            Operation::Sign(alg) => matches!(
                (pk.key_type, alg),
                (
                    KeyType::EcP256,
                    SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256)
                ) | (
                    KeyType::EcP256,
                    SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256)
                ) | (KeyType::Ed25519, SignatureAlgorithm::Ed25519)
            ),
            _ => false,
        }
    }

    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        if kind != PinKind::User {
            return Err(Error::not_implemented("a FIDO2 authenticator has one PIN"));
        }
        let r = self.session.pin_retries().await?;
        Ok(PinStatus {
            retries_left: Some(r.retries),
            verified: self.session.auth_token().is_some(),
        })
    }

    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        if kind != PinKind::User {
            return Err(Error::not_implemented("a FIDO2 authenticator has one PIN"));
        }
        // A PIN given for a waiting operation gets that operation's token; a PIN given to
        // unlock gets a credential-management token and lists the credentials.
        let unlocking = !self.session.is_waiting_for_pin();
        self.session.verify_pin(pin).await?;
        if unlocking {
            // Failing to list is not a wrong PIN.
            if let Err(e) = self.refresh_credentials().await {
                tracing::debug!(error = %e, "FIDO2: listing credentials after unlock failed");
            }
        }
        Ok(())
    }

    async fn logout(&mut self) -> Result<()> {
        self.session.clear_auth_token();
        Ok(())
    }

    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let c = self.credential(key)?;
        let key_type = c
            .public_key
            .as_ref()
            .map(|k| k.key_type)
            .ok_or_else(|| Error::bad_parameter("the credential's key type is unknown"))?;
        let hash = client_data_hash(key_type, algorithm, data).ok_or_else(|| {
            Error::bad_parameter("FIDO2 credentials sign with ES256 (SHA-256) or Ed25519 only")
        })?;
        Ok(self.assertion(key, &hash).await?.signature)
    }

    async fn change_pin(&mut self, kind: PinKind, old: &Pin, new: &Pin) -> Result<()> {
        if kind != PinKind::User {
            return Err(Error::not_implemented("a FIDO2 authenticator has one PIN"));
        }
        self.session.change_pin(old, new).await
    }

    async fn delete_item(&mut self, object: &ObjectId) -> Result<()> {
        let c = self.credential(object)?;
        self.session
            .delete_credential(object.as_bytes(), Some(&c.rp_id))
            .await?;
        self.shared.credentials().remove(object.as_bytes());
        Ok(())
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn core::any::Any> {
        Some(self)
    }
}
