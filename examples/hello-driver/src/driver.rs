//! The driver, its token and its session.

use std::sync::Arc;

use token_core::{
    async_trait, Claim, Constraint, Device, Error, ErrorCode, Item, KeyItem, KeyType, KeyUsage,
    ObjectId, Operation, Pin, PinKind, PinStatus, Probe, PublicKey, Result, SessionDelegate,
    SignatureAlgorithm, SmartCard, Token, TokenDriver, TokenId, TokenInfo,
};

use crate::AID;

const INS_GET_DATA: u8 = 0xCA;
const INS_VERIFY: u8 = 0x20;
const INS_SIGN: u8 = 0x2A;
const KEY_OBJECT: &[u8] = b"sign";

/// The driver for "hello" cards. Registered with the hub through inventory at priority 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct HelloDriver;

/// SELECTs the hello application; `Ok(false)` when the card does not have it.
async fn select(card: &token_core::CardSession) -> Result<bool> {
    Ok(card.select_application(&AID).await?.is_some())
}

#[async_trait]
impl TokenDriver for HelloDriver {
    fn id(&self) -> &'static str {
        "hello"
    }

    fn name(&self) -> &'static str {
        "tokenkit hello card (example)"
    }

    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        let Device::SmartCard(card) = &probe.device else {
            return Ok(Claim::NotMine);
        };
        // One exclusive session for the whole probe: no other program's APDUs in between.
        let session = card.begin_session().await?;
        if !select(&session).await? {
            return Ok(Claim::NotMine);
        }
        let serial = session
            .send_ins(INS_GET_DATA, 0x00, 0x01, &[], Some(256))
            .await?;
        let public = session
            .send_ins(INS_GET_DATA, 0x00, 0x02, &[], Some(256))
            .await?;
        drop(session);
        if serial.len() != 4 {
            return Err(Error::corrupted("serial number is not 4 bytes"));
        }
        if public.len() != 32 {
            return Err(Error::corrupted("Ed25519 public key is not 32 bytes"));
        }
        let serial_hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let id = TokenId::new(self.id(), &serial_hex)?;
        let mut key = KeyItem::new(
            ObjectId::new(KEY_OBJECT),
            "Hello signing key",
            PublicKey {
                key_type: KeyType::Ed25519,
                raw: public,
            },
            KeyUsage::SIGN,
            Constraint::Pin,
        );
        key.suitable_for_login = true;
        Ok(Claim::Token(Arc::new(HelloToken {
            id,
            serial: serial_hex,
            card: card.clone(),
            key,
        })))
    }
}

struct HelloToken {
    id: TokenId,
    serial: String,
    card: SmartCard,
    key: KeyItem,
}

#[async_trait]
impl Token for HelloToken {
    fn id(&self) -> &TokenId {
        &self.id
    }

    fn info(&self) -> TokenInfo {
        TokenInfo {
            label: format!("Hello card {}", self.serial),
            manufacturer: Some("tokenkit example".into()),
            model: Some("hello v1".into()),
            serial: Some(self.serial.clone()),
        }
    }

    fn items(&self) -> Vec<Item> {
        vec![Item::Key(self.key.clone())]
    }

    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(HelloSession {
            card: self.card.clone(),
            verified_at: None,
        }))
    }
}

/// One session's state: whether *this* session verified the PIN. The card's own verified
/// state is shared by every program using the card, so the driver keeps its own record and
/// never lets one session ride on another's PIN; a card reset (by anyone) voids it.
struct HelloSession {
    card: SmartCard,
    /// The card's reset count when this session verified its PIN; `None` until it has.
    verified_at: Option<u64>,
}

impl HelloSession {
    /// True while this session's PIN still stands: verified here, and the card not reset
    /// (by any program) since.
    fn verified(&self) -> bool {
        self.verified_at == Some(self.card.reset_count())
    }

    fn check_key(key: &ObjectId) -> Result<()> {
        if key.as_bytes() == KEY_OBJECT {
            Ok(())
        } else {
            Err(Error::object_not_found("the hello card has one key"))
        }
    }
}

#[async_trait]
impl SessionDelegate for HelloSession {
    fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        key.as_bytes() == KEY_OBJECT
            && matches!(operation, Operation::Sign(SignatureAlgorithm::Ed25519))
    }

    async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        if kind != PinKind::User {
            return Err(Error::not_implemented("the hello card has only a user PIN"));
        }
        let card = self.card.begin_session().await?;
        select(&card).await?;
        // An empty VERIFY asks the state without spending a try (SP 800-73-4 style).
        match card.send_ins(INS_VERIFY, 0x00, 0x80, &[], None).await {
            Ok(_) => Ok(PinStatus {
                retries_left: None,
                verified: self.verified(),
            }),
            Err(e) if e.code() == ErrorCode::AuthenticationFailed => Ok(PinStatus {
                retries_left: e.retries_left(),
                verified: false,
            }),
            Err(e) => Err(e),
        }
    }

    async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        if kind != PinKind::User {
            return Err(Error::not_implemented("the hello card has only a user PIN"));
        }
        if pin.is_empty() {
            return Err(Error::bad_parameter("empty PIN"));
        }
        let card = self.card.begin_session().await?;
        select(&card).await?;
        let r = card
            .send_ins(INS_VERIFY, 0x00, 0x80, pin.expose(), None)
            .await;
        self.verified_at = r.is_ok().then(|| self.card.reset_count());
        r.map(|_| ())
    }

    async fn logout(&mut self) -> Result<()> {
        self.verified_at = None;
        Ok(())
    }

    async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        Self::check_key(key)?;
        if algorithm != SignatureAlgorithm::Ed25519 {
            return Err(Error::bad_parameter("the hello key signs Ed25519 only"));
        }
        if !self.verified() {
            return Err(Error::authentication_needed("sign needs the PIN"));
        }
        let card = self.card.begin_session().await?;
        select(&card).await?;
        let sig = card.send_ins(INS_SIGN, 0x9E, 0x9A, data, Some(256)).await?;
        if sig.len() != 64 {
            return Err(Error::corrupted("Ed25519 signature is not 64 bytes"));
        }
        Ok(sig)
    }
}
