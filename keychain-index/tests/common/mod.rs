//! Fixtures for the keychain index tests: items with real certificates, and a tiny persistent
//! token driver whose sessions generate, import and delete items, so the tests run the real
//! hub, watcher and session path (`token_core::testkit::TestSlots` provides the slots).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod der;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use token_core::testkit::TestSlots;
use token_core::{
    async_trait, CertificateItem, Claim, Constraint, Device, Error, Hub, Item, KeyItem, KeySpec,
    KeyType, KeyUsage, ObjectId, Operation, PersistentConfig, Pin, PinKind, PinStatus, Probe,
    PublicKey, Result, SessionDelegate, SignatureAlgorithm, SlotKind, Token, TokenDriver, TokenId,
    TokenInfo,
};

/// A P-256 key whose public key is derived from `seed`.
pub fn key(oid: &str, label: &str, seed: u64, usage: KeyUsage) -> KeyItem {
    let public = PublicKey {
        key_type: KeyType::EcP256,
        raw: der::ec_point(seed),
    };
    KeyItem::new(
        ObjectId::new(oid.as_bytes()),
        label,
        public,
        usage,
        Constraint::Pin,
    )
}

/// A certificate for the public key of `seed`, subject `O=Example, CN=<subject_cn>`, issued
/// by `CN=<issuer_cn>`; labelled with its subject's common name.
pub fn cert(
    oid: &str,
    seed: u64,
    subject_cn: &str,
    issuer_cn: &str,
    serial: u8,
) -> CertificateItem {
    let der = der::certificate(
        &[0x01, serial],
        &der::name(issuer_cn, None),
        &der::name(subject_cn, Some("Example")),
        &der::spki_p256(&der::ec_point(seed)),
    );
    CertificateItem {
        object_id: ObjectId::new(oid.as_bytes()),
        label: subject_cn.to_owned(),
        der,
    }
}

/// A PIV-like card: an authentication key with its certificate (an identity), a signature key
/// with its certificate, a key-management key without one, and a CA certificate without a key.
pub fn card(seed: u64, holder: &str) -> Vec<Item> {
    vec![
        Item::Key(key("9a", "PIV Authentication", seed, KeyUsage::SIGN)),
        Item::Certificate(cert("9a", seed, holder, "Example Issuing CA", 1)),
        Item::Key(key("9c", "Digital Signature", seed + 1, KeyUsage::SIGN)),
        Item::Certificate(cert(
            "9c",
            seed + 1,
            &format!("{holder} (signing)"),
            "Example Issuing CA",
            2,
        )),
        Item::Key(key(
            "9d",
            "Key Management",
            seed + 2,
            KeyUsage::DECRYPT | KeyUsage::DERIVE,
        )),
        Item::Certificate(cert(
            "ca",
            999_999,
            "Example Issuing CA",
            "Example Root CA",
            3,
        )),
    ]
}

pub fn token(s: &str) -> TokenId {
    TokenId::parse(s).unwrap()
}

// --- A persistent test token -------------------------------------------------------------

type Store = Arc<Mutex<Vec<Item>>>;

fn stores() -> &'static Mutex<HashMap<String, Store>> {
    static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// The item store of the test token `mem:<instance>` (shared by every test in the binary, so
/// each test uses its own instance names).
pub fn store(instance: &str) -> Store {
    stores()
        .lock()
        .unwrap()
        .entry(instance.to_owned())
        .or_default()
        .clone()
}

/// Serves `mem:<instance>` tokens registered as persistent slots.
pub struct MemDriver;

struct MemToken {
    id: TokenId,
    items: Store,
}

struct MemSession {
    items: Store,
}

static GENERATED: AtomicU64 = AtomicU64::new(1_000_000);

#[async_trait]
impl TokenDriver for MemDriver {
    fn id(&self) -> &'static str {
        "mem"
    }
    fn name(&self) -> &'static str {
        "in-memory test token"
    }
    fn slot_kinds(&self) -> &'static [SlotKind] {
        &[SlotKind::Persistent]
    }
    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        match &probe.device {
            Device::Persistent(cfg) if cfg.driver == "mem" => {
                Ok(Claim::Token(Arc::new(MemToken {
                    id: TokenId::new("mem", &cfg.instance)?,
                    items: store(&cfg.instance),
                })))
            }
            _ => Ok(Claim::NotMine),
        }
    }
}

#[async_trait]
impl Token for MemToken {
    fn id(&self) -> &TokenId {
        &self.id
    }
    fn info(&self) -> TokenInfo {
        TokenInfo::default()
    }
    fn items(&self) -> Vec<Item> {
        self.items.lock().unwrap().clone()
    }
    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(MemSession {
            items: self.items.clone(),
        }))
    }
}

#[async_trait]
impl SessionDelegate for MemSession {
    fn supports(&self, _: Operation, _: &ObjectId) -> bool {
        true
    }
    async fn pin_status(&mut self, _: PinKind) -> Result<PinStatus> {
        Ok(PinStatus {
            retries_left: Some(3),
            verified: true,
        })
    }
    async fn verify_pin(&mut self, _: PinKind, _: &Pin) -> Result<()> {
        Ok(())
    }
    async fn sign(&mut self, key: &ObjectId, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>> {
        let items = self.items.lock().unwrap();
        if items
            .iter()
            .any(|i| matches!(i, Item::Key(k) if &k.object_id == key))
        {
            Ok(vec![0x30; 8])
        } else {
            Err(Error::object_not_found("no such key"))
        }
    }
    async fn generate_key(&mut self, spec: &KeySpec) -> Result<KeyItem> {
        let n = GENERATED.fetch_add(1, Ordering::Relaxed);
        let k = key(
            &format!("gen-{n}"),
            &spec.label,
            n,
            spec.usage.unwrap_or(KeyUsage::SIGN),
        );
        self.items.lock().unwrap().push(Item::Key(k.clone()));
        Ok(k)
    }
    async fn import_certificate(
        &mut self,
        label: &str,
        der: &[u8],
        _key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        let n = GENERATED.fetch_add(1, Ordering::Relaxed);
        let c = CertificateItem {
            object_id: ObjectId::new(format!("cert-{n}")),
            label: label.to_owned(),
            der: der.to_vec(),
        };
        self.items
            .lock()
            .unwrap()
            .push(Item::Certificate(c.clone()));
        Ok(c)
    }
    async fn delete_item(&mut self, object: &ObjectId) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let before = items.len();
        items.retain(|i| i.object_id() != object);
        if items.len() == before {
            return Err(Error::object_not_found("no such item"));
        }
        Ok(())
    }
}

/// A hub with the test driver and scriptable slots.
pub fn hub() -> (Arc<Hub>, TestSlots) {
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, Arc::new(MemDriver))
        .provider(slots.provider())
        .start()
        .unwrap();
    (Arc::new(hub), slots)
}

/// Puts `items` in the store of `mem:<instance>` and registers it (the token is inserted).
pub fn insert(slots: &TestSlots, instance: &str, items: Vec<Item>) -> TokenId {
    *store(instance).lock().unwrap() = items;
    slots.register_persistent(config(instance));
    token(&format!("mem:{instance}"))
}

/// Unregisters `mem:<instance>` (the token is removed; its store is kept for re-insertion).
pub fn remove(slots: &TestSlots, instance: &str) {
    slots.unregister_persistent("mem", instance);
}

pub fn config(instance: &str) -> PersistentConfig {
    PersistentConfig {
        driver: "mem".into(),
        instance: instance.into(),
        data: Vec::new(),
    }
}

/// A key spec for [`token_core::TokenSession::generate_key`].
pub fn spec(label: &str) -> KeySpec {
    KeySpec {
        key_type: KeyType::EcP256,
        label: label.into(),
        slot: None,
        usage: Some(KeyUsage::SIGN),
    }
}
