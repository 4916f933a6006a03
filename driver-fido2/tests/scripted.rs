//! The AuthToken rules of `Fido2Session` against a scripted authenticator: a small in-test
//! CTAP2 device that issues real pinUvAuthTokens (PIN protocol 1 or 2), keeps one token with
//! its permissions and RP ID, refuses operations the token does not allow with
//! PIN_AUTH_INVALID, and can be told to refuse the next operations whatever the token.
//! Every request is recorded. The same rules run against the full simulator in
//! `tests/simulator.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use driver_fido2::cbor::{self, Value};
use driver_fido2::client::{GetAssertionRequest, CTAPHID_CBOR};
use driver_fido2::ctap::{self, Permissions};
use driver_fido2::pin_protocol::{pin_hash, CoseKey, KeyAgreementKey, PinUvAuthProtocol};
use driver_fido2::session::Fido2Session;
use token_core::{async_trait, block_on, CtapChannel, ErrorCode, Pin, PinRequest, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Logged {
    command: u8,
    sub: Option<u8>,
    permissions: Option<u8>,
    rp_id: Option<String>,
    status: u8,
}

struct State {
    ctap21: bool,
    preview: bool,
    pin: String,
    retries: u8,
    key: KeyAgreementKey,
    token: Option<(Vec<u8>, u8, Option<String>)>,
    refuse: VecDeque<u8>,
    log: Vec<Logged>,
}

#[derive(Clone)]
struct Scripted(Arc<Mutex<State>>);

impl Scripted {
    fn new(ctap21: bool) -> Self {
        Self(Arc::new(Mutex::new(State {
            ctap21,
            preview: false,
            pin: "1234".into(),
            retries: 8,
            key: KeyAgreementKey::generate().unwrap(),
            token: None,
            refuse: VecDeque::new(),
            log: Vec::new(),
        })))
    }
    fn log(&self) -> Vec<Logged> {
        self.0.lock().unwrap().log.clone()
    }
    fn token_requests(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.command == ctap::CMD_CLIENT_PIN && matches!(l.sub, Some(5) | Some(9)))
            .collect()
    }
    fn refuse_next(&self, n: usize) {
        let mut s = self.0.lock().unwrap();
        for _ in 0..n {
            s.refuse.push_back(0x33);
        }
    }
}

fn m(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (cbor::int(k), v))
            .collect(),
    )
}

fn answer(status: u8, body: Option<Value>) -> Vec<u8> {
    let mut out = vec![status];
    if let Some(b) = body {
        out.extend(cbor::encode(&b));
    }
    out
}

impl State {
    fn protocol(&self) -> PinUvAuthProtocol {
        if self.ctap21 {
            PinUvAuthProtocol::Two
        } else {
            PinUvAuthProtocol::One
        }
    }

    fn handle(&mut self, req: &[u8]) -> Vec<u8> {
        let command = req[0];
        let params = if req.len() > 1 {
            cbor::decode(&req[1..]).unwrap()
        } else {
            Value::Map(vec![])
        };
        let p = cbor::as_map(&params).unwrap().to_vec();
        let mut entry = Logged {
            command,
            sub: None,
            permissions: None,
            rp_id: None,
            status: 0,
        };
        let (status, body) = self.dispatch(command, &p, &mut entry);
        entry.status = status;
        self.log.push(entry);
        answer(status, body)
    }

    fn dispatch(
        &mut self,
        command: u8,
        p: &[(Value, Value)],
        entry: &mut Logged,
    ) -> (u8, Option<Value>) {
        match command {
            ctap::CMD_GET_INFO => {
                let mut versions = vec![Value::Text("FIDO_2_0".into())];
                let mut options = vec![(Value::Text("clientPin".into()), Value::Bool(true))];
                if self.preview {
                    versions.push(Value::Text("FIDO_2_1_PRE".into()));
                    options.push((
                        Value::Text("credentialMgmtPreview".into()),
                        Value::Bool(true),
                    ));
                }
                if self.ctap21 {
                    versions.push(Value::Text("FIDO_2_1".into()));
                    options.push((Value::Text("pinUvAuthToken".into()), Value::Bool(true)));
                    options.push((Value::Text("credMgmt".into()), Value::Bool(true)));
                    options.push((Value::Text("authnrCfg".into()), Value::Bool(true)));
                }
                let protocols = vec![cbor::int(i64::from(self.protocol().number()))];
                (
                    0,
                    Some(m(vec![
                        (1, Value::Array(versions)),
                        (3, Value::Bytes(vec![0x5A; 16])),
                        (4, Value::Map(options)),
                        (6, Value::Array(protocols)),
                    ])),
                )
            }
            ctap::CMD_CLIENT_PIN => {
                let sub = cbor::uint(p, 2).unwrap() as u8;
                entry.sub = Some(sub);
                entry.permissions = cbor::uint(p, 9).map(|v| v as u8);
                entry.rp_id = cbor::text(p, 0x0A).map(str::to_owned);
                match sub {
                    1 => (0, Some(m(vec![(3, cbor::int(i64::from(self.retries)))]))),
                    2 => (0, Some(m(vec![(1, self.key.public().to_value())]))),
                    5 | 9 => {
                        let protocol = self.protocol();
                        let peer = CoseKey::from_value(cbor::get(p, 3).unwrap()).unwrap();
                        let secret = protocol.decapsulate(&self.key, &peer).unwrap();
                        let hash = protocol
                            .decrypt(&secret, cbor::bytes(p, 6).unwrap())
                            .unwrap();
                        if hash[..] != pin_hash(&self.pin) {
                            self.retries -= 1;
                            return (0x31, None);
                        }
                        self.retries = 8;
                        let mut token = vec![0u8; 32];
                        getrandom::fill(&mut token).unwrap();
                        let perms = if sub == 5 && self.preview {
                            0xFF
                        } else if sub == 5 {
                            0x03
                        } else {
                            entry.permissions.unwrap_or(0)
                        };
                        self.token = Some((token.clone(), perms, entry.rp_id.clone()));
                        let enc = protocol.encrypt(&secret, &token).unwrap();
                        (0, Some(m(vec![(2, Value::Bytes(enc))])))
                    }
                    _ => (0x3E, None),
                }
            }
            _ => {
                if let Some(status) = self.refuse.pop_front() {
                    return (status, None);
                }
                let (needed, rp, param_key, message): (u8, Option<String>, i64, Vec<u8>) =
                    match command {
                        ctap::CMD_GET_ASSERTION => (
                            0x02,
                            cbor::text(p, 1).map(str::to_owned),
                            6,
                            cbor::bytes(p, 2).unwrap().to_vec(),
                        ),
                        ctap::CMD_CREDENTIAL_MANAGEMENT | ctap::CMD_CREDENTIAL_MANAGEMENT_PRE => {
                            let sub = cbor::uint(p, 1).unwrap() as u8;
                            entry.sub = Some(sub);
                            let mut msg = vec![sub];
                            if let Some(v) = cbor::get(p, 2) {
                                msg.extend(cbor::encode(v));
                            }
                            (0x04, None, 4, msg)
                        }
                        ctap::CMD_CONFIG => {
                            let sub = cbor::uint(p, 1).unwrap() as u8;
                            entry.sub = Some(sub);
                            let mut msg = vec![0xFF; 32];
                            msg.extend([0x0D, sub]);
                            (0x20, None, 4, msg)
                        }
                        _ => return (0x01, None),
                    };
                entry.rp_id = rp.clone();
                let Some((token, perms, token_rp)) = self.token.clone() else {
                    return (0x36, None);
                };
                entry.permissions = Some(perms);
                let param = cbor::bytes(p, param_key).unwrap_or(&[]);
                let valid = self.protocol().verify(&token, &message, param);
                let rp_ok = match (&token_rp, command) {
                    // Metadata and RP enumeration need a token without an RP ID.
                    (
                        Some(_),
                        ctap::CMD_CREDENTIAL_MANAGEMENT | ctap::CMD_CREDENTIAL_MANAGEMENT_PRE,
                    ) => false,
                    (Some(t), _) => rp.as_deref().is_none_or(|r| r == t),
                    (None, _) => true,
                };
                if !valid || perms & needed == 0 || !rp_ok {
                    return (0x33, None);
                }
                match command {
                    ctap::CMD_GET_ASSERTION => {
                        // User presence: only lbw survives.
                        if let Some(t) = self.token.as_mut() {
                            t.1 &= 0x10;
                        }
                        let mut auth_data = vec![0u8; 32];
                        auth_data.extend([0x01, 0, 0, 0, 1]);
                        (
                            0,
                            Some(m(vec![
                                (
                                    1,
                                    Value::Map(vec![
                                        (Value::Text("id".into()), Value::Bytes(vec![1, 2, 3])),
                                        (
                                            Value::Text("type".into()),
                                            Value::Text("public-key".into()),
                                        ),
                                    ]),
                                ),
                                (2, Value::Bytes(auth_data)),
                                (3, Value::Bytes(vec![0x30, 0x00])),
                            ])),
                        )
                    }
                    ctap::CMD_CREDENTIAL_MANAGEMENT | ctap::CMD_CREDENTIAL_MANAGEMENT_PRE => {
                        (0, Some(m(vec![(1, cbor::int(0)), (2, cbor::int(25))])))
                    }
                    _ => (0, None),
                }
            }
        }
    }
}

#[async_trait]
impl CtapChannel for Scripted {
    async fn transact(&self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>> {
        assert_eq!(cmd, CTAPHID_CBOR);
        Ok(self.0.lock().unwrap().handle(payload))
    }
    fn capabilities(&self) -> u8 {
        0x04
    }
}

struct Collector {
    pin: &'static str,
    asked: AtomicUsize,
    requests: Mutex<Vec<PinRequest>>,
}

impl Collector {
    fn new(pin: &'static str) -> Arc<Self> {
        Arc::new(Self {
            pin,
            asked: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }
    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl token_core::PinCallback for Collector {
    async fn request_pin(&self, request: &PinRequest) -> Option<Pin> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.requests.lock().unwrap().push(request.clone());
        Some(Pin::from(self.pin))
    }
}

fn session(device: &Scripted, pin: &'static str) -> (Fido2Session, Arc<Collector>) {
    let mut s = block_on(Fido2Session::connect(Arc::new(device.clone()))).unwrap();
    let c = Collector::new(pin);
    s.set_key_collector(c.clone());
    (s, c)
}

fn assertion_request(rp: &str) -> GetAssertionRequest {
    GetAssertionRequest {
        rp_id: rp.into(),
        client_data_hash: vec![7; 32],
        ..Default::default()
    }
}

#[test]
fn rule_retry_once_after_pin_auth_invalid_and_no_more() {
    let device = Scripted::new(true);
    let (mut s, collector) = session(&device, "1234");
    block_on(s.add_permissions(Permissions::CREDENTIAL_MANAGEMENT, None)).unwrap();
    // The authenticator refuses the next two operations whatever the token.
    device.refuse_next(2);
    let e = block_on(s.credential_metadata()).unwrap_err();
    assert_eq!(e.underlying(), &token_core::Underlying::Ctap(0x33));
    let metadata_requests = device
        .log()
        .iter()
        .filter(|l| l.command == ctap::CMD_CREDENTIAL_MANAGEMENT)
        .count();
    assert_eq!(
        metadata_requests, 2,
        "tried once, retried once, then gave up"
    );
    // One token for add_permissions, one for the retry.
    assert_eq!(device.token_requests().len(), 2);
    assert_eq!(collector.asked(), 2);
    // One refusal only: the retry succeeds.
    device.refuse_next(1);
    block_on(s.credential_metadata()).unwrap();
}

#[test]
fn rule_new_token_unites_permissions_and_keeps_the_rp_id() {
    let device = Scripted::new(true);
    let (mut s, _) = session(&device, "1234");
    block_on(s.get_assertion(&assertion_request("example.com"))).unwrap();
    assert_eq!(s.auth_token_permissions(), Some(Permissions::GET_ASSERTION));
    assert_eq!(s.auth_token_rp_id(), Some("example.com"));
    // Config needs acfg: the ga token is refused, the new one carries ga|acfg for the RP.
    block_on(s.toggle_always_uv()).unwrap();
    let last = device.token_requests().pop().unwrap();
    assert_eq!(last.permissions, Some(0x02 | 0x20));
    assert_eq!(last.rp_id.as_deref(), Some("example.com"));
    assert_eq!(
        s.auth_token_permissions(),
        Some(Permissions::GET_ASSERTION | Permissions::AUTHENTICATOR_CONFIG)
    );
}

#[test]
fn rule_wrong_pin_is_never_retried() {
    let device = Scripted::new(true);
    let (mut s, collector) = session(&device, "9999");
    let e = block_on(s.get_assertion(&assertion_request("example.com"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(7));
    assert_eq!(collector.asked(), 1);
    assert_eq!(device.token_requests().len(), 1);
    assert!(device
        .log()
        .iter()
        .all(|l| l.command != ctap::CMD_GET_ASSERTION));
    // The collector was told the tries left before the attempt.
    assert_eq!(collector.requests.lock().unwrap()[0].retries_left, Some(8));
}

#[test]
fn rule_ctap20_device_gets_a_pin_token() {
    let device = Scripted::new(false);
    let (mut s, _) = session(&device, "1234");
    block_on(s.get_assertion(&assertion_request("example.com"))).unwrap();
    let requests = device.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].sub, Some(ctap::client_pin::GET_PIN_TOKEN));
    assert_eq!(
        requests[0].permissions, None,
        "getPinToken carries no permissions"
    );
}

#[test]
fn no_key_collector_gives_authentication_needed_and_verify_pin_obtains_that_token() {
    let device = Scripted::new(true);
    let mut s = block_on(Fido2Session::connect(Arc::new(device.clone()))).unwrap();
    let e = block_on(s.get_assertion(&assertion_request("example.org"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationNeeded);
    block_on(s.verify_pin(&Pin::from("1234"))).unwrap();
    let last = device.token_requests().pop().unwrap();
    assert_eq!(last.permissions, Some(0x02));
    assert_eq!(last.rp_id.as_deref(), Some("example.org"));
    block_on(s.get_assertion(&assertion_request("example.org"))).unwrap();
    assert_eq!(device.token_requests().len(), 1);
}

#[test]
fn debug_never_shows_the_token() {
    let device = Scripted::new(true);
    let (mut s, _) = session(&device, "1234");
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    let token = s.auth_token().unwrap().expose().to_vec();
    let shown = format!("{s:?} {:?}", s.auth_token().unwrap());
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&hex));
    assert!(!shown.contains(&format!("{:?}", &token[..4])));
}

#[test]
fn ctap21_pre_device_uses_the_preview_credential_management_command() {
    let device = Scripted::new(false);
    device.0.lock().unwrap().preview = true;
    let (mut s, _) = session(&device, "1234");
    let metadata = block_on(s.credential_metadata()).unwrap();
    assert_eq!(metadata.max_remaining, 25);
    let cm: Vec<u8> = device
        .log()
        .iter()
        .filter(|l| matches!(l.command, 0x0A | 0x41))
        .map(|l| l.command)
        .collect();
    assert_eq!(cm, [0x41]);
    assert_eq!(
        device.token_requests()[0].sub,
        Some(ctap::client_pin::GET_PIN_TOKEN)
    );
}
