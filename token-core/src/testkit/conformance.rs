//! The conformance suite a driver author runs against their own simulator.
//!
//! It runs a real [`Hub`] with the driver under test and a [`TestSlots`] provider, and checks
//! what every driver owes its users:
//!
//! 1. a card without the driver's application yields no token (and no panic);
//! 2. the driver's card yields a token whose ID starts with the driver's ID;
//! 3. items are listed, object IDs are unique, key IDs are SHA-1 of the public key, certificates
//!    parse;
//! 4. the token ID is the same after the card is pulled and put back, and the watcher reports
//!    every insertion and removal exactly once, removal never before insertion;
//! 5. session rules: a PIN-protected key answers `AuthenticationNeeded` without a PIN; a wrong
//!    PIN from the callback gives `AuthenticationFailed` with one try fewer, the callback asked
//!    once and never again; the right PIN signs and restores the counter; a second session does
//!    not inherit the first one's PIN;
//! 6. a card pulled in the middle of an operation gives `TokenNotFound` or
//!    `CommunicationError` within a second, and the token is gone from the hub.
//!
//! ```
//! use std::sync::Arc;
//! use token_core::testkit::{conformance::Suite, NoCard};
//! use token_core::{async_trait, Claim, Probe, Result, TokenDriver};
//!
//! /// A driver that never finds its application.
//! struct Blind;
//!
//! #[async_trait]
//! impl TokenDriver for Blind {
//!     fn id(&self) -> &'static str { "blind" }
//!     fn name(&self) -> &'static str { "blind" }
//!     async fn probe(&self, _: &Probe) -> Result<Claim> { Ok(Claim::NotMine) }
//! }
//!
//! let report = Suite::card(Arc::new(Blind), || Box::new(NoCard::default())).run();
//! // It fails the "probe finds the application" check; a real driver calls
//! // `report.assert_passed()` in a #[test].
//! assert!(!report.passed());
//! println!("{report}");
//! ```

use core::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{MemoryCard, NoCard, TestSlots};
use crate::cert::CertificateInfo;
use crate::driver::TokenDriver;
use crate::error::ErrorCode;
use crate::exec::block_on;
use crate::hub::{Hub, TokenWatcher, WatchEvent};
use crate::model::{
    Constraint, HashAlg, Item, KeyItem, KeyType, KeyUsage, Pin, PinKind, SignatureAlgorithm,
    TokenId,
};
use crate::sim::CardSimulator;
use crate::slot::PersistentConfig;

const READER: &str = "Conformance Reader 0";

type MakeCard = Box<dyn Fn() -> Box<dyn CardSimulator>>;

enum Fixture {
    Card(MakeCard),
    Persistent(PersistentConfig),
}

/// The suite's configuration: the driver, how to make its token, and the PINs.
pub struct Suite {
    driver: Arc<dyn TokenDriver>,
    fixture: Fixture,
    user_pin: Option<Pin>,
    wrong_pin: Option<Pin>,
    min_items: usize,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("driver", &self.driver.id())
            .finish_non_exhaustive()
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Passed, failed, or could not apply to this driver.
    pub outcome: Outcome,
    /// What was seen.
    pub detail: String,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The driver did what it owes.
    Passed,
    /// It did not.
    Failed,
    /// The check does not apply (no PIN-protected signing key, say). Never counted as passed.
    NotApplicable,
}

/// Every check's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The checks in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed and at least one passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Failed)
            && self.checks.iter().any(|c| c.outcome == Outcome::Passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .collect()
    }

    /// Panics with the report if any check failed: for use in a `#[test]`.
    ///
    /// # Panics
    /// When [`Report::passed`] is false.
    #[allow(clippy::panic)]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "driver conformance failed:\n{self}");
    }

    fn record(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            outcome,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = match c.outcome {
                Outcome::Passed => "ok  ",
                Outcome::Failed => "FAIL",
                Outcome::NotApplicable => "n/a ",
            };
            writeln!(f, "{mark} {}: {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

fn signature_for(key: &KeyItem) -> Option<(SignatureAlgorithm, Vec<u8>)> {
    Some(match key.key_type {
        KeyType::EcP256 => (
            SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
            vec![0x5A; 32],
        ),
        KeyType::EcP384 => (
            SignatureAlgorithm::EcdsaDigest(HashAlg::Sha384),
            vec![0x5A; 48],
        ),
        KeyType::Ed25519 => (
            SignatureAlgorithm::Ed25519,
            b"tokenkit conformance".to_vec(),
        ),
        KeyType::Rsa(_) => (
            SignatureAlgorithm::RsaPkcs1v15Digest(HashAlg::Sha256),
            vec![0x5A; 32],
        ),
        _ => return None,
    })
}

impl Suite {
    /// A suite for a smart-card driver; `make_card` makes a fresh simulated card holding the
    /// driver's application with at least one item.
    pub fn card(
        driver: Arc<dyn TokenDriver>,
        make_card: impl Fn() -> Box<dyn CardSimulator> + 'static,
    ) -> Self {
        Self {
            driver,
            fixture: Fixture::Card(Box::new(make_card)),
            user_pin: None,
            wrong_pin: None,
            min_items: 1,
        }
    }

    /// A suite for a persistent-token driver, registered with `config`.
    pub fn persistent(driver: Arc<dyn TokenDriver>, config: PersistentConfig) -> Self {
        Self {
            driver,
            fixture: Fixture::Persistent(config),
            user_pin: None,
            wrong_pin: None,
            min_items: 1,
        }
    }

    /// The token's user PIN; without it the session checks are not applicable.
    #[must_use]
    pub fn user_pin(mut self, pin: impl Into<Pin>) -> Self {
        self.user_pin = Some(pin.into());
        self
    }

    /// A PIN the token must refuse (default: the user PIN with its last digit changed).
    #[must_use]
    pub fn wrong_pin(mut self, pin: impl Into<Pin>) -> Self {
        self.wrong_pin = Some(pin.into());
        self
    }

    /// The fewest items the token must list (default 1).
    #[must_use]
    pub fn min_items(mut self, n: usize) -> Self {
        self.min_items = n;
        self
    }

    fn wrong(&self) -> Option<Pin> {
        if let Some(p) = &self.wrong_pin {
            return Some(p.clone());
        }
        let right = self.user_pin.as_ref()?;
        let mut bytes = right.expose().to_vec();
        let last = bytes.last_mut()?;
        *last = if *last == b'0' { b'1' } else { b'0' };
        Some(Pin::new(bytes))
    }

    /// Runs every check and reports.
    pub fn run(&self) -> Report {
        let mut report = Report::default();
        let slots = TestSlots::new();
        let hub = match Hub::builder()
            .registered(false)
            .driver(0, self.driver.clone())
            .provider(slots.provider())
            .start()
        {
            Ok(h) => h,
            Err(e) => {
                report.record("hub starts", Outcome::Failed, e.to_string());
                return report;
            }
        };
        let events = hub.watcher().subscribe();

        if let Fixture::Card(_) = self.fixture {
            slots.insert_card(READER, Box::new(NoCard::default()));
            hub.settle();
            let mine: Vec<_> = hub
                .token_ids()
                .into_iter()
                .filter(|t| t.driver() == self.driver.id())
                .collect();
            report.record(
                "a foreign card gives no token",
                if mine.is_empty() {
                    Outcome::Passed
                } else {
                    Outcome::Failed
                },
                format!("tokens: {mine:?}"),
            );
            slots.remove_card(READER);
            hub.settle();
        }

        // Insert the driver's token.
        let card = self.insert(&slots);
        hub.settle();
        let ids: Vec<TokenId> = hub
            .token_ids()
            .into_iter()
            .filter(|t| t.driver() == self.driver.id())
            .collect();
        let Some(id) = ids.first().cloned() else {
            report.record(
                "probe finds the application",
                Outcome::Failed,
                format!(
                    "no token with the driver ID prefix {:?}; present: {:?}",
                    self.driver.id(),
                    hub.token_ids()
                ),
            );
            return report;
        };
        report.record(
            "probe finds the application",
            Outcome::Passed,
            format!("token {id}"),
        );

        let items = match hub.token(&id) {
            Ok(h) => h.items(),
            Err(e) => {
                report.record("items are listed", Outcome::Failed, e.to_string());
                return report;
            }
        };
        self.check_items(&mut report, &items);

        // Re-insertion.
        let card = self.remove_and_reinsert(&slots, card);
        hub.settle();
        let again: Vec<TokenId> = hub
            .token_ids()
            .into_iter()
            .filter(|t| t.driver() == self.driver.id())
            .collect();
        report.record(
            "token ID stable across re-insertion",
            if again == ids {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
            format!("before {ids:?}, after {again:?}"),
        );
        self.check_events(&mut report, &events, &id);

        self.check_sessions(&mut report, &hub, &id, &items);
        self.check_removal_mid_operation(&mut report, &hub, &slots, card.as_ref(), &id, &items);
        report
    }

    fn insert(&self, slots: &TestSlots) -> Option<MemoryCard> {
        match &self.fixture {
            Fixture::Card(make) => Some(slots.insert_card(READER, make())),
            Fixture::Persistent(cfg) => {
                slots.register_persistent(cfg.clone());
                None
            }
        }
    }

    fn remove_and_reinsert(
        &self,
        slots: &TestSlots,
        card: Option<MemoryCard>,
    ) -> Option<MemoryCard> {
        match &self.fixture {
            Fixture::Card(_) => {
                let pulled = slots.remove_card(READER).or(card)?;
                let back = pulled.reinserted();
                slots.insert(READER, back.clone());
                Some(back)
            }
            Fixture::Persistent(cfg) => {
                slots.unregister_persistent(&cfg.driver, &cfg.instance);
                slots.register_persistent(cfg.clone());
                None
            }
        }
    }

    fn check_items(&self, report: &mut Report, items: &[Item]) {
        let mut problems = Vec::new();
        if items.len() < self.min_items {
            problems.push(format!(
                "{} items, expected at least {}",
                items.len(),
                self.min_items
            ));
        }
        let mut ids: Vec<_> = items
            .iter()
            .map(|i| (i.class(), i.object_id().clone()))
            .collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        if ids.len() != before {
            problems.push("two items of one class share an object ID".into());
        }
        for item in items {
            match item {
                Item::Key(k) => {
                    if let Some(pk) = &k.public_key {
                        if k.key_id != pk.key_id() {
                            problems.push(format!(
                                "key {:?}: key ID is not SHA-1 of the public key",
                                k.label
                            ));
                        }
                        if pk.key_type != k.key_type {
                            problems.push(format!("key {:?}: public key type differs", k.label));
                        }
                    }
                    if k.usage.is_empty() {
                        problems.push(format!("key {:?}: no usage", k.label));
                    }
                }
                Item::Certificate(c) => {
                    if let Err(e) = CertificateInfo::parse(&c.der) {
                        problems.push(format!("certificate {:?} does not parse: {e}", c.label));
                    }
                }
            }
        }
        report.record(
            "items are listed and well formed",
            if problems.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
            if problems.is_empty() {
                format!("{} items", items.len())
            } else {
                problems.join("; ")
            },
        );
    }

    fn check_events(
        &self,
        report: &mut Report,
        events: &std::sync::mpsc::Receiver<WatchEvent>,
        id: &TokenId,
    ) {
        let mut seen = Vec::new();
        while let Ok(ev) = TokenWatcher::next_event(events, Duration::from_millis(200)) {
            match ev {
                WatchEvent::Inserted(t) if &t == id => seen.push('+'),
                WatchEvent::Removed(t) if &t == id => seen.push('-'),
                _ => {}
            }
        }
        let seen: String = seen.into_iter().collect();
        report.record(
            "watcher reports each insertion and removal once, in order",
            if seen == "+-+" {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
            format!("events for {id}: {seen:?} (expected \"+-+\")"),
        );
    }

    fn pin_key<'a>(&self, items: &'a [Item]) -> Option<(&'a KeyItem, SignatureAlgorithm, Vec<u8>)> {
        items.iter().find_map(|i| match i {
            Item::Key(k)
                if k.usage.contains(KeyUsage::SIGN)
                    && matches!(k.constraint, Constraint::Pin | Constraint::PinAlways) =>
            {
                signature_for(k).map(|(a, d)| (k, a, d))
            }
            _ => None,
        })
    }

    fn check_sessions(&self, report: &mut Report, hub: &Hub, id: &TokenId, items: &[Item]) {
        const NAMES: [&str; 4] = [
            "no PIN gives AuthenticationNeeded",
            "a wrong PIN is reported with tries left, asked once, never retried",
            "the right PIN signs and restores the counter",
            "a second session does not inherit the PIN",
        ];
        let (Some(right), Some(wrong)) = (self.user_pin.clone(), self.wrong()) else {
            for n in NAMES {
                report.record(n, Outcome::NotApplicable, "no user PIN given to the suite");
            }
            return;
        };
        let Some((key, alg, data)) = self.pin_key(items) else {
            for n in NAMES {
                report.record(n, Outcome::NotApplicable, "no PIN-protected signing key");
            }
            return;
        };
        let handle = match hub.token(id) {
            Ok(h) => h,
            Err(e) => {
                report.record(NAMES[0], Outcome::Failed, e.to_string());
                return;
            }
        };
        block_on(async {
            let mut s = match handle.open_session().await {
                Ok(s) => s,
                Err(e) => {
                    report.record(NAMES[0], Outcome::Failed, format!("open_session: {e}"));
                    return;
                }
            };
            let r = s.sign(&key.object_id, alg, &data).await;
            report.record(
                NAMES[0],
                match &r {
                    Err(e) if e.code() == ErrorCode::AuthenticationNeeded => Outcome::Passed,
                    _ => Outcome::Failed,
                },
                format!("{:?}", r.as_ref().map(|_| "signature")),
            );

            let before = s
                .pin_status(PinKind::User)
                .await
                .ok()
                .and_then(|p| p.retries_left);
            let asked = Arc::new(AtomicU32::new(0));
            let counter = asked.clone();
            let wrong_cb = wrong.clone();
            s.set_pin_callback(Arc::new(move |_: &crate::PinRequest| {
                counter.fetch_add(1, Ordering::SeqCst);
                Some(wrong_cb.clone())
            }));
            let r = s.sign(&key.object_id, alg, &data).await;
            let after = s
                .pin_status(PinKind::User)
                .await
                .ok()
                .and_then(|p| p.retries_left);
            let ok = matches!(&r, Err(e) if e.code() == ErrorCode::AuthenticationFailed)
                && asked.load(Ordering::SeqCst) == 1
                && match (
                    before,
                    after,
                    r.as_ref().err().and_then(|e| e.retries_left()),
                ) {
                    (Some(b), Some(a), reported) => a + 1 == b && reported.is_none_or(|x| x == a),
                    _ => true,
                };
            report.record(
                NAMES[1],
                if ok { Outcome::Passed } else { Outcome::Failed },
                format!(
                    "result {:?}, callback asked {} time(s), tries {before:?} -> {after:?}",
                    r.as_ref().map(|_| "signature"),
                    asked.load(Ordering::SeqCst)
                ),
            );

            let right_cb = right.clone();
            s.set_pin_callback(Arc::new(move |_: &crate::PinRequest| {
                Some(right_cb.clone())
            }));
            let r = s.sign(&key.object_id, alg, &data).await;
            let restored = s
                .pin_status(PinKind::User)
                .await
                .ok()
                .and_then(|p| p.retries_left);
            // A card that counts tries reports the full count again, or none at all while the
            // PIN stands verified (PIV and OpenPGP answer 9000 to an empty VERIFY then).
            let ok = matches!(&r, Ok(sig) if !sig.is_empty())
                && (before.is_none() || restored.is_none() || restored == before);
            report.record(
                NAMES[2],
                if ok { Outcome::Passed } else { Outcome::Failed },
                format!(
                    "result {:?}, tries now {restored:?}",
                    r.as_ref().map(Vec::len)
                ),
            );

            match handle.open_session().await {
                Ok(mut s2) => {
                    let r = s2.sign(&key.object_id, alg, &data).await;
                    report.record(
                        NAMES[3],
                        match &r {
                            Err(e) if e.code() == ErrorCode::AuthenticationNeeded => {
                                Outcome::Passed
                            }
                            _ => Outcome::Failed,
                        },
                        format!("{:?}", r.as_ref().map(|_| "signature")),
                    );
                }
                Err(e) => report.record(NAMES[3], Outcome::Failed, e.to_string()),
            }
        });
    }

    fn check_removal_mid_operation(
        &self,
        report: &mut Report,
        hub: &Hub,
        slots: &TestSlots,
        card: Option<&MemoryCard>,
        id: &TokenId,
        items: &[Item],
    ) {
        const NAME: &str = "a card pulled mid-operation gives a clean error within a second";
        let Some(card) = card else {
            report.record(
                NAME,
                Outcome::NotApplicable,
                "persistent tokens cannot be pulled",
            );
            return;
        };
        let Some((key, alg, data)) = items.iter().find_map(|i| match i {
            Item::Key(k) if k.usage.contains(KeyUsage::SIGN) => {
                signature_for(k).map(|(a, d)| (k, a, d))
            }
            _ => None,
        }) else {
            report.record(NAME, Outcome::NotApplicable, "no signing key");
            return;
        };
        let Ok(handle) = hub.token(id) else {
            report.record(NAME, Outcome::Failed, "token not present before the test");
            return;
        };
        let right = self.user_pin.clone();
        let started = Instant::now();
        let result = block_on(async {
            let mut s = handle.open_session().await?;
            if let Some(pin) = &right {
                s.verify_pin(PinKind::User, pin).await?;
            }
            card.fail_after(1);
            s.sign(&key.object_id, alg, &data).await
        });
        let elapsed = started.elapsed();
        slots.card_gone(READER);
        hub.settle();
        let gone = hub.token(id).is_err();
        let reopen = block_on(handle.open_session());
        let ok = matches!(&result, Err(e) if matches!(e.code(), ErrorCode::TokenNotFound | ErrorCode::CommunicationError))
            && elapsed < Duration::from_secs(1)
            && gone
            && matches!(&reopen, Err(e) if e.code() == ErrorCode::TokenNotFound);
        report.record(
            NAME,
            if ok { Outcome::Passed } else { Outcome::Failed },
            format!(
                "sign gave {:?} after {elapsed:?}; token gone from hub: {gone}; reopening gave {:?}",
                result.as_ref().map(|_| "signature").map_err(|e| e.code()),
                reopen.as_ref().map(|_| "session").map_err(|e| e.code()),
            ),
        );
    }
}
