//! The hub and watcher: one token per application on a multi-application card, priority and
//! exclusive claims, event order, slot states, removal handlers.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_core::testkit::TestSlots;
use token_core::{
    async_trait, CardSimulator, Claim, Device, Error, ErrorCode, Hub, Item, ObjectId, PinKind,
    PinStatus, Probe, Result, SessionDelegate, SignatureAlgorithm, SlotState, Token, TokenDriver,
    TokenId, TokenInfo, TokenWatcher, WatchEvent,
};

/// A card carrying the applications whose AIDs it is given; SELECT of any other is 6A82.
struct MultiAppCard {
    aids: Vec<Vec<u8>>,
}

impl CardSimulator for MultiAppCard {
    fn atr(&self) -> Vec<u8> {
        vec![0x3B, 0x80, 0x80, 0x01, 0x01]
    }
    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let Ok(cmd) = token_core::Command::decode(command) else {
            return vec![0x67, 0x00];
        };
        if cmd.ins.0 == 0xA4
            && self
                .aids
                .iter()
                .any(|a| a.as_slice() == cmd.data.as_slice())
        {
            vec![0x90, 0x00]
        } else if cmd.ins.0 == 0xA4 {
            vec![0x6A, 0x82]
        } else {
            vec![0x6D, 0x00]
        }
    }
}

/// A driver that claims cards carrying its AID; the token ID is `<id>:<slot name>`.
struct AidDriver {
    id: &'static str,
    aid: Vec<u8>,
    exclusive: bool,
    probes: Arc<Mutex<Vec<&'static str>>>,
}

struct PlainToken {
    id: TokenId,
}

struct NoSession;

#[async_trait]
impl SessionDelegate for NoSession {
    fn supports(&self, _: token_core::Operation, _: &ObjectId) -> bool {
        false
    }
    async fn pin_status(&mut self, _: PinKind) -> Result<PinStatus> {
        Err(Error::not_implemented("no PIN"))
    }
    async fn verify_pin(&mut self, _: PinKind, _: &token_core::Pin) -> Result<()> {
        Err(Error::not_implemented("no PIN"))
    }
    async fn sign(&mut self, _: &ObjectId, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>> {
        Err(Error::object_not_found("no keys"))
    }
}

#[async_trait]
impl Token for PlainToken {
    fn id(&self) -> &TokenId {
        &self.id
    }
    fn info(&self) -> TokenInfo {
        TokenInfo::default()
    }
    fn items(&self) -> Vec<Item> {
        Vec::new()
    }
    async fn open_session(&self) -> Result<Box<dyn SessionDelegate>> {
        Ok(Box::new(NoSession))
    }
}

#[async_trait]
impl TokenDriver for AidDriver {
    fn id(&self) -> &'static str {
        self.id
    }
    fn name(&self) -> &'static str {
        self.id
    }
    async fn probe(&self, probe: &Probe) -> Result<Claim> {
        self.probes.lock().unwrap().push(self.id);
        let Device::SmartCard(card) = &probe.device else {
            return Ok(Claim::NotMine);
        };
        match card.send_ins(0xA4, 0x04, 0x00, &self.aid, None).await {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::ObjectNotFound => return Ok(Claim::NotMine),
            Err(e) => return Err(e),
        }
        let token = Arc::new(PlainToken {
            id: TokenId::new(self.id, &probe.slot_name.replace(' ', "_"))?,
        });
        Ok(if self.exclusive {
            Claim::Exclusive(token)
        } else {
            Claim::Token(token)
        })
    }
}

fn driver(
    id: &'static str,
    aid: &[u8],
    exclusive: bool,
    probes: &Arc<Mutex<Vec<&'static str>>>,
) -> Arc<AidDriver> {
    Arc::new(AidDriver {
        id,
        aid: aid.to_vec(),
        exclusive,
        probes: probes.clone(),
    })
}

fn card(aids: &[&[u8]]) -> Box<MultiAppCard> {
    Box::new(MultiAppCard {
        aids: aids.iter().map(|a| a.to_vec()).collect(),
    })
}

const PIV: &[u8] = &[0xA0, 0x00, 0x00, 0x03, 0x08];
const PGP: &[u8] = &[0xD2, 0x76, 0x00, 0x01, 0x24, 0x01];
const FIDO: &[u8] = &[0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];

#[test]
fn one_card_with_three_applications_gives_three_tokens_usable_at_once() {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, driver("piv", PIV, false, &probes))
        .driver(0, driver("openpgp", PGP, false, &probes))
        .driver(0, driver("fido2", FIDO, false, &probes))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("Key 0", card(&[PIV, PGP, FIDO]));
    hub.settle();
    let ids: Vec<String> = hub.token_ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["fido2:Key_0", "openpgp:Key_0", "piv:Key_0"]);
    // Sessions on all three at the same time.
    let sessions: Vec<_> = hub
        .tokens()
        .iter()
        .map(|t| token_core::block_on(t.open_session()).unwrap())
        .collect();
    assert_eq!(sessions.len(), 3);
    assert_eq!(hub.slot_manager().slot("Key 0").unwrap().tokens.len(), 3);
}

#[test]
fn drivers_probe_in_priority_order_and_an_exclusive_claim_stops_the_rest() {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(-5, driver("generic", PIV, false, &probes))
        .driver(10, driver("vendor", PIV, true, &probes))
        .driver(0, driver("other", PGP, false, &probes))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("R", card(&[PIV, PGP]));
    hub.settle();
    assert_eq!(*probes.lock().unwrap(), ["vendor"]);
    let ids: Vec<String> = hub.token_ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["vendor:R"]);
}

#[test]
fn watcher_events_come_once_in_order_and_handlers_follow_seed_001() {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let slots = TestSlots::new();
    slots.add_reader("R");
    let hub = Hub::builder()
        .registered(false)
        .driver(0, driver("piv", PIV, false, &probes))
        .provider(slots.provider())
        .start()
        .unwrap();
    let watcher = hub.watcher();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    // The pattern of seed 001: register the removal handler from the insertion handler.
    let w = watcher.clone();
    let l = log.clone();
    watcher.set_insertion_handler(move |id| {
        l.lock().unwrap().push(format!("+{id}"));
        let l2 = l.clone();
        w.add_removal_handler(id, move |id| l2.lock().unwrap().push(format!("-{id}")));
    });
    let events = watcher.subscribe();
    for _ in 0..3 {
        slots.insert_card("R", card(&[PIV]));
        hub.settle();
        slots.remove_card("R");
        hub.settle();
    }
    hub.settle();
    assert_eq!(
        *log.lock().unwrap(),
        ["+piv:R", "-piv:R", "+piv:R", "-piv:R", "+piv:R", "-piv:R"]
    );
    let mut seen = Vec::new();
    while let Ok(e) = TokenWatcher::next_event(&events, Duration::from_millis(100)) {
        seen.push(e);
    }
    let id = TokenId::parse("piv:R").unwrap();
    let expected: Vec<_> = (0..3)
        .flat_map(|_| {
            [
                WatchEvent::Inserted(id.clone()),
                WatchEvent::Removed(id.clone()),
            ]
        })
        .collect();
    assert_eq!(seen, expected);

    // A removal handler for a token that is not present runs at once, exactly once.
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    watcher.add_removal_handler(&id, move |_| *c.lock().unwrap() += 1);
    hub.settle();
    assert_eq!(*count.lock().unwrap(), 1);
}

#[test]
fn an_insertion_handler_set_late_hears_of_tokens_already_present() {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let slots = TestSlots::new();
    slots.insert_card("R", card(&[PIV]));
    let hub = Hub::builder()
        .registered(false)
        .driver(0, driver("piv", PIV, false, &probes))
        .provider(slots.provider())
        .start()
        .unwrap();
    // Present from start-up: start() waited for the first probe.
    assert_eq!(hub.token_ids().len(), 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    hub.watcher()
        .set_insertion_handler(move |id| s.lock().unwrap().push(id.to_string()));
    hub.settle();
    assert_eq!(*seen.lock().unwrap(), ["piv:R"]);
}

#[test]
fn slot_states_follow_cryptotokenkit() {
    let slots = TestSlots::new();
    slots.add_reader("R");
    let hub = Hub::builder()
        .registered(false)
        .provider(slots.provider())
        .start()
        .unwrap();
    let sm = hub.slot_manager();
    assert_eq!(sm.slot("R").unwrap().state, SlotState::Empty);
    slots.insert_mute_card("R");
    hub.settle();
    assert_eq!(sm.slot("R").unwrap().state, SlotState::MuteCard);
    slots.insert_card("R", card(&[]));
    hub.settle();
    let info = sm.slot("R").unwrap();
    assert_eq!(info.state, SlotState::ValidCard);
    assert_eq!(
        info.atr.as_deref(),
        Some(&[0x3B, 0x80, 0x80, 0x01, 0x01][..])
    );
    slots.remove_reader("R");
    hub.settle();
    assert!(sm.slot("R").is_none());
    assert!(sm.slot_names().is_empty());
}

#[test]
fn sessions_on_a_removed_token_fail_with_token_not_found() {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let slots = TestSlots::new();
    let hub = Hub::builder()
        .registered(false)
        .driver(0, driver("piv", PIV, false, &probes))
        .provider(slots.provider())
        .start()
        .unwrap();
    slots.insert_card("R", card(&[PIV]));
    hub.settle();
    let handle = hub.token(&TokenId::parse("piv:R").unwrap()).unwrap();
    let mut session = token_core::block_on(handle.open_session()).unwrap();
    slots.remove_card("R");
    hub.settle();
    assert!(!handle.is_present());
    let e =
        token_core::block_on(session.sign(&ObjectId::new(b"k"), SignatureAlgorithm::Ed25519, b""))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
    let e = token_core::block_on(handle.open_session()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TokenNotFound);
    assert_eq!(
        hub.token(&TokenId::parse("piv:R").unwrap())
            .unwrap_err()
            .code(),
        ErrorCode::TokenNotFound
    );
}

/// A provider with no slots whose guard records when it is dropped (its threads would end).
struct WatchedProvider {
    stopped: Arc<std::sync::atomic::AtomicUsize>,
}

struct CountOnDrop(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl token_core::ProviderGuard for CountOnDrop {}

impl token_core::SlotProvider for WatchedProvider {
    fn id(&self) -> &'static str {
        "watched"
    }
    fn start(&self, _events: token_core::SlotEvents) -> Result<Box<dyn token_core::ProviderGuard>> {
        Ok(Box::new(CountOnDrop(self.stopped.clone())))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn shutdown_stops_the_providers_now_even_while_the_hub_is_shared() {
    let stopped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slots = TestSlots::new();
    slots.add_reader("Reader 0");
    let hub = Arc::new(
        Hub::builder()
            .registered(false)
            .provider(Arc::new(WatchedProvider {
                stopped: stopped.clone(),
            }))
            .provider(slots.provider())
            .start()
            .unwrap(),
    );
    // Someone else (a keychain index's thread, say) still holds the hub.
    let other = hub.clone();
    assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 0);
    hub.shutdown();
    assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Twice is harmless, and so is the last drop afterwards.
    hub.shutdown();
    drop(hub);
    drop(other);
    assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 1);
}
