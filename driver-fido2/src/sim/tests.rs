//! Tests of the simulator, driven from a platform's side written here with the crate's PIN
//! protocol and CBOR codec (not with the simulator's own code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use p256::ecdsa::signature::Verifier;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::cbor::{self, Value};
use crate::pin_protocol::{pad_pin, pin_hash, CoseKey, PinUvAuthProtocol, SharedSecret};

const OK: u8 = 0x00;
const MC: u8 = 0x01;
const GA: u8 = 0x02;
const CM: u8 = 0x04;
const LBW: u8 = 0x10;
const ACFG: u8 = 0x20;

fn int(i: i64) -> Value {
    cbor::int(i)
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn b(bytes: &[u8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

fn map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

fn tmap(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (t(k), v)).collect())
}

type Map = Vec<(Value, Value)>;

/// The test's platform: speaks CTAP2 to the simulator with its own requests.
struct Platform {
    auth: Authenticator,
    protocol: PinUvAuthProtocol,
}

struct Reply {
    status: u8,
    map: Map,
}

impl Reply {
    fn ok(self) -> Map {
        assert_eq!(
            self.status, OK,
            "expected CTAP2_OK, got 0x{:02X}",
            self.status
        );
        self.map
    }
}

fn get(m: &Map, k: i64) -> &Value {
    cbor::get(m, k).unwrap_or_else(|| panic!("no key {k} in {m:?}"))
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.clone(),
        other => panic!("not bytes: {other:?}"),
    }
}

fn map_of(v: &Value) -> Map {
    match v {
        Value::Map(m) => m.clone(),
        other => panic!("not a map: {other:?}"),
    }
}

fn auth_with(config: SimConfig) -> Platform {
    let protocol = if config.ctap21 && config.pin_protocols.first() == Some(&2) {
        PinUvAuthProtocol::Two
    } else {
        PinUvAuthProtocol::One
    };
    Platform {
        auth: Authenticator::new(config).unwrap(),
        protocol,
    }
}

fn fresh() -> Platform {
    auth_with(SimConfig::default())
}

fn with_pin(pin: &str) -> Platform {
    auth_with(SimConfig {
        pin: Some(pin.into()),
        ..SimConfig::default()
    })
}

impl Platform {
    fn call_up(&self, cmd: u8, params: Option<Value>, up: bool) -> Reply {
        let mut req = vec![cmd];
        if let Some(p) = params {
            req.extend_from_slice(&cbor::encode(&p));
        }
        let answer = self.auth.process(&req, up);
        let status = answer[0];
        let map = if answer.len() > 1 {
            map_of(&cbor::decode(&answer[1..]).unwrap())
        } else {
            Vec::new()
        };
        Reply { status, map }
    }

    fn call(&self, cmd: u8, params: Option<Value>) -> Reply {
        self.call_up(cmd, params, true)
    }

    fn info(&self) -> Map {
        self.call(0x04, None).ok()
    }

    fn option(&self, name: &str) -> Option<bool> {
        let info = self.info();
        let opts = map_of(get(&info, 4));
        match cbor::get_text_key(&opts, name) {
            Some(Value::Bool(v)) => Some(*v),
            None => None,
            other => panic!("option {name}: {other:?}"),
        }
    }

    fn shared_secret(&self) -> (CoseKey, SharedSecret) {
        let r = self
            .call(
                0x06,
                Some(map(vec![
                    (1, int(self.protocol.number().into())),
                    (2, int(2)),
                ])),
            )
            .ok();
        let peer = CoseKey::from_value(get(&r, 1)).unwrap();
        self.protocol.encapsulate(&peer).unwrap()
    }

    fn set_pin(&self, pin: &str) -> u8 {
        let (key, secret) = self.shared_secret();
        // Padded by hand: the platform-side pad_pin refuses short PINs itself.
        let mut padded = [0u8; 64];
        padded[..pin.len()].copy_from_slice(pin.as_bytes());
        let enc = self.protocol.encrypt(&secret, &padded).unwrap();
        let param = self.protocol.authenticate(secret.as_bytes(), &enc);
        self.call(
            0x06,
            Some(map(vec![
                (1, int(self.protocol.number().into())),
                (2, int(3)),
                (3, key.to_value()),
                (4, b(&param)),
                (5, b(&enc)),
            ])),
        )
        .status
    }

    fn change_pin(&self, old: &str, new: &str) -> u8 {
        let (key, secret) = self.shared_secret();
        let new_enc = self
            .protocol
            .encrypt(&secret, pad_pin(new).unwrap().as_ref())
            .unwrap();
        let hash_enc = self.protocol.encrypt(&secret, &pin_hash(old)).unwrap();
        let mut msg = new_enc.clone();
        msg.extend_from_slice(&hash_enc);
        let param = self.protocol.authenticate(secret.as_bytes(), &msg);
        self.call(
            0x06,
            Some(map(vec![
                (1, int(self.protocol.number().into())),
                (2, int(4)),
                (3, key.to_value()),
                (4, b(&param)),
                (5, b(&new_enc)),
                (6, b(&hash_enc)),
            ])),
        )
        .status
    }

    /// A pinUvAuthToken: with `permissions` by subcommand 09, else by getPinToken.
    fn token(
        &self,
        pin: &str,
        permissions: Option<u8>,
        rp_id: Option<&str>,
    ) -> Result<Vec<u8>, u8> {
        let (key, secret) = self.shared_secret();
        let hash_enc = self.protocol.encrypt(&secret, &pin_hash(pin)).unwrap();
        let mut p = vec![
            (1, int(self.protocol.number().into())),
            (2, int(if permissions.is_some() { 9 } else { 5 })),
            (3, key.to_value()),
            (6, b(&hash_enc)),
        ];
        if let Some(perms) = permissions {
            p.push((9, int(perms.into())));
        }
        if let Some(rp) = rp_id {
            p.push((10, t(rp)));
        }
        let r = self.call(0x06, Some(map(p)));
        if r.status != OK {
            return Err(r.status);
        }
        let enc = bytes_of(get(&r.map, 2));
        Ok(self.protocol.decrypt(&secret, &enc).unwrap().to_vec())
    }

    fn param(&self, token: &[u8], message: &[u8]) -> Value {
        b(&self.protocol.authenticate(token, message))
    }

    fn mc_request(&self, rp: &str, user: &[u8], rk: bool, token: Option<&[u8]>) -> Value {
        let cdh = Sha256::digest(format!("mc {rp}").as_bytes()).to_vec();
        let mut p = vec![
            (1, b(&cdh)),
            (2, tmap(vec![("id", t(rp)), ("name", t("Example"))])),
            (
                3,
                tmap(vec![
                    ("id", b(user)),
                    ("name", t("alice")),
                    ("displayName", t("Alice A.")),
                ]),
            ),
            (
                4,
                Value::Array(vec![
                    tmap(vec![("alg", int(-8)), ("type", t("public-key"))]),
                    tmap(vec![("alg", int(-7)), ("type", t("public-key"))]),
                ]),
            ),
        ];
        if rk {
            p.push((7, tmap(vec![("rk", Value::Bool(true))])));
        }
        if let Some(tok) = token {
            p.push((8, self.param(tok, &cdh)));
            p.push((9, int(self.protocol.number().into())));
        }
        map(p)
    }

    fn mc(&self, rp: &str, user: &[u8], rk: bool, token: Option<&[u8]>) -> Reply {
        self.call(MC_CMD, Some(self.mc_request(rp, user, rk, token)))
    }

    fn ga(&self, rp: &str, allow: &[&[u8]], token: Option<&[u8]>) -> Reply {
        let cdh = Sha256::digest(format!("ga {rp}").as_bytes()).to_vec();
        let mut p = vec![(1, t(rp)), (2, b(&cdh))];
        if !allow.is_empty() {
            p.push((
                3,
                Value::Array(
                    allow
                        .iter()
                        .map(|id| tmap(vec![("id", b(id)), ("type", t("public-key"))]))
                        .collect(),
                ),
            ));
        }
        if let Some(tok) = token {
            p.push((6, self.param(tok, &cdh)));
            p.push((7, int(self.protocol.number().into())));
        }
        self.call(GA_CMD, Some(map(p)))
    }

    fn cm(&self, token: &[u8], sub: u8, params: Option<Value>) -> Reply {
        let mut msg = vec![sub];
        let mut p = vec![(1, int(sub.into()))];
        if let Some(params) = params {
            msg.extend_from_slice(&cbor::encode(&params));
            p.push((2, params));
        }
        p.push((3, int(self.protocol.number().into())));
        p.push((4, self.param(token, &msg)));
        self.call(0x0A, Some(map(p)))
    }

    fn config(&self, token: Option<&[u8]>, sub: u8, params: Option<Value>) -> Reply {
        let mut msg = vec![0xFF; 32];
        msg.extend_from_slice(&[0x0D, sub]);
        let mut p = vec![(1, int(sub.into()))];
        if let Some(params) = params {
            msg.extend_from_slice(&cbor::encode(&params));
            p.push((2, params));
        }
        if let Some(tok) = token {
            p.push((3, int(self.protocol.number().into())));
            p.push((4, self.param(tok, &msg)));
        }
        self.call(0x0D, Some(map(p)))
    }

    fn blob_set(
        &self,
        token: Option<&[u8]>,
        offset: usize,
        data: &[u8],
        length: Option<usize>,
    ) -> u8 {
        let mut p = vec![(2, b(data)), (3, int(offset as i64))];
        if let Some(l) = length {
            p.push((4, int(l as i64)));
        }
        if let Some(tok) = token {
            let mut msg = vec![0xFF; 32];
            msg.extend_from_slice(&[0x0C, 0x00]);
            msg.extend_from_slice(&(offset as u32).to_le_bytes());
            msg.extend_from_slice(&Sha256::digest(data));
            p.push((5, self.param(tok, &msg)));
            p.push((6, int(self.protocol.number().into())));
        }
        self.call(0x0C, Some(map(p))).status
    }

    fn blob_get(&self, offset: usize, len: usize) -> Vec<u8> {
        let r = self
            .call(
                0x0C,
                Some(map(vec![(1, int(len as i64)), (3, int(offset as i64))])),
            )
            .ok();
        bytes_of(get(&r, 1))
    }
}

const MC_CMD: u8 = 0x01;
const GA_CMD: u8 = 0x02;

/// authData's parts: flags, counter, and (for makeCredential) credential ID and public key.
struct AuthData {
    rp_id_hash: Vec<u8>,
    flags: u8,
    counter: u32,
    cred_id: Vec<u8>,
    public_sec1: Vec<u8>,
}

fn parse_auth_data(ad: &[u8]) -> AuthData {
    let flags = ad[32];
    let counter = u32::from_be_bytes(ad[33..37].try_into().unwrap());
    let (mut cred_id, mut public_sec1) = (Vec::new(), Vec::new());
    if flags & 0x40 != 0 {
        let len = usize::from(u16::from_be_bytes([ad[53], ad[54]]));
        cred_id = ad[55..55 + len].to_vec();
        // The COSE key follows; with ED clear it runs to the end.
        let rest = &ad[55 + len..];
        let cose_len = if flags & 0x80 != 0 {
            // Find the split by decoding prefixes.
            (1..=rest.len())
                .find(|n| cbor::decode(&rest[..*n]).is_ok())
                .unwrap()
        } else {
            rest.len()
        };
        let cose = map_of(&cbor::decode(&rest[..cose_len]).unwrap());
        assert_eq!(cbor::integer(&cose, 1), Some(2), "kty EC2");
        assert_eq!(cbor::integer(&cose, 3), Some(-7), "alg ES256");
        assert_eq!(cbor::integer(&cose, -1), Some(1), "crv P-256");
        public_sec1 = vec![4];
        public_sec1.extend_from_slice(cbor::bytes(&cose, -2).unwrap());
        public_sec1.extend_from_slice(cbor::bytes(&cose, -3).unwrap());
    }
    AuthData {
        rp_id_hash: ad[..32].to_vec(),
        flags,
        counter,
        cred_id,
        public_sec1,
    }
}

fn verify(public_sec1: &[u8], message: &[u8], der: &[u8]) -> bool {
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_sec1).unwrap();
    let Ok(sig) = p256::ecdsa::DerSignature::try_from(der) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

/// makeCredential's outcome: the credential ID and public key, after checking the packed
/// self attestation.
fn registered(p: &Platform, reply: Reply, rp: &str) -> (Vec<u8>, Vec<u8>, AuthData) {
    let m = reply.ok();
    assert_eq!(get(&m, 1), &t("packed"));
    let ad_bytes = bytes_of(get(&m, 2));
    let ad = parse_auth_data(&ad_bytes);
    assert_eq!(ad.rp_id_hash, Sha256::digest(rp.as_bytes()).to_vec());
    let att = map_of(get(&m, 3));
    assert_eq!(cbor::get_text_key(&att, "alg"), Some(&int(-7)));
    let sig = bytes_of(cbor::get_text_key(&att, "sig").unwrap());
    let mut signed = ad_bytes.clone();
    signed.extend_from_slice(&Sha256::digest(format!("mc {rp}").as_bytes()));
    assert!(verify(&ad.public_sec1, &signed, &sig), "self attestation");
    let _ = p;
    (ad.cred_id.clone(), ad.public_sec1.clone(), ad)
}

fn assert_assertion(reply_map: &Map, rp: &str, public_sec1: &[u8]) -> AuthData {
    let ad_bytes = bytes_of(get(reply_map, 2));
    let sig = bytes_of(get(reply_map, 3));
    let mut signed = ad_bytes.clone();
    signed.extend_from_slice(&Sha256::digest(format!("ga {rp}").as_bytes()));
    assert!(verify(public_sec1, &signed, &sig), "assertion signature");
    parse_auth_data(&ad_bytes)
}

// ---- getInfo ------------------------------------------------------------------------------

#[test]
fn get_info_describes_a_ctap21_authenticator() {
    let p = fresh();
    let info = p.info();
    assert_eq!(
        get(&info, 1),
        &Value::Array(vec![t("FIDO_2_0"), t("FIDO_2_1")])
    );
    assert_eq!(bytes_of(get(&info, 3)), DEFAULT_AAGUID.to_vec());
    assert_eq!(get(&info, 6), &Value::Array(vec![int(2), int(1)]));
    assert_eq!(get(&info, 9), &Value::Array(vec![t("usb")]));
    assert_eq!(cbor::uint(&info, 13), Some(4));
    assert_eq!(cbor::uint(&info, 20), Some(50));
    for opt in [
        "rk",
        "up",
        "pinUvAuthToken",
        "credMgmt",
        "largeBlobs",
        "authnrCfg",
        "setMinPINLength",
        "makeCredUvNotRqd",
    ] {
        assert_eq!(p.option(opt), Some(true), "{opt}");
    }
    assert_eq!(p.option("clientPin"), Some(false));
    assert_eq!(p.option("alwaysUv"), Some(false));
    assert_eq!(p.option("bioEnroll"), None);
    assert_eq!(p.set_pin("1234"), OK);
    assert_eq!(p.option("clientPin"), Some(true));
    // The encoding is canonical: re-encoding the decoded answer gives the same bytes.
    let raw = p.auth.process(&[0x04], true);
    assert_eq!(
        cbor::encode(&cbor::decode(&raw[1..]).unwrap()),
        raw[1..].to_vec()
    );
}

#[test]
fn ctap20_mode_has_only_what_ctap20_had() {
    let p = auth_with(SimConfig {
        ctap21: false,
        ..SimConfig::default()
    });
    let info = p.info();
    assert_eq!(get(&info, 1), &Value::Array(vec![t("FIDO_2_0")]));
    assert_eq!(get(&info, 6), &Value::Array(vec![int(1)]));
    assert_eq!(p.option("credMgmt"), None);
    assert_eq!(p.option("pinUvAuthToken"), None);
    for cmd in [0x0A, 0x0B, 0x0C, 0x0D] {
        assert_eq!(
            p.call(cmd, Some(map(vec![(1, int(1))]))).status,
            0x01,
            "cmd {cmd:#x}"
        );
    }
    assert_eq!(p.set_pin("1234"), OK);
    // No permissions subcommand; the getPinToken token works more than once and is not
    // cleared by user presence.
    assert_eq!(
        p.token("1234", Some(MC | GA), Some("example.com")),
        Err(0x02)
    );
    let tok = p.token("1234", None, None).unwrap();
    let (id, public, _) = registered(
        &p,
        p.mc("example.com", b"u1", true, Some(&tok)),
        "example.com",
    );
    let a = p.ga("example.com", &[&id], Some(&tok)).ok();
    let ad = assert_assertion(&a, "example.com", &public);
    assert_eq!(ad.flags & 0x05, 0x05);
    // Protocol 2 is refused.
    let two = Platform {
        auth: p.auth.clone(),
        protocol: PinUvAuthProtocol::Two,
    };
    assert_eq!(
        two.call(0x06, Some(map(vec![(1, int(2)), (2, int(2))])))
            .status,
        0x02
    );
}

// ---- clientPIN ----------------------------------------------------------------------------

#[test]
fn set_and_change_pin_with_both_protocols() {
    for protocol in [PinUvAuthProtocol::One, PinUvAuthProtocol::Two] {
        let mut p = fresh();
        p.protocol = protocol;
        assert_eq!(
            p.token("1234", Some(MC), Some("a.com")),
            Err(0x35),
            "PIN_NOT_SET"
        );
        assert_eq!(p.set_pin("123"), 0x37, "too short");
        assert_eq!(p.set_pin("1234"), OK);
        assert_eq!(p.set_pin("5678"), 0x30, "set twice: NOT_ALLOWED");
        assert!(p.token("1234", Some(MC), Some("a.com")).is_ok());
        assert_eq!(p.change_pin("1234", "abcdef"), OK);
        assert_eq!(p.token("1234", Some(MC), Some("a.com")), Err(0x31));
        assert!(p.token("abcdef", Some(MC), Some("a.com")).is_ok());
        assert_eq!(p.auth.pin_retries(), 8);
    }
}

#[test]
fn wrong_pins_block_after_three_and_for_good_at_zero() {
    let p = with_pin("1234");
    let r = p.call(0x06, Some(map(vec![(2, int(1))]))).ok();
    assert_eq!(cbor::uint(&r, 3), Some(8));
    assert_eq!(cbor::get(&r, 4), Some(&Value::Bool(false)));

    let ka = |p: &Platform| p.call(0x06, Some(map(vec![(1, int(2)), (2, int(2))]))).ok();
    let before = ka(&p);
    assert_eq!(p.token("0000", Some(MC), Some("a.com")), Err(0x31));
    assert_ne!(
        ka(&p),
        before,
        "a wrong PIN regenerates the key-agreement key"
    );
    assert_eq!(p.token("0000", Some(MC), Some("a.com")), Err(0x31));
    assert_eq!(
        p.token("0000", Some(MC), Some("a.com")),
        Err(0x34),
        "third in a row"
    );
    assert_eq!(p.auth.pin_retries(), 5);
    // Blocked until power cycle, even with the right PIN, and no try is spent.
    assert_eq!(p.token("1234", Some(MC), Some("a.com")), Err(0x34));
    assert_eq!(p.auth.pin_retries(), 5);
    let r = p.call(0x06, Some(map(vec![(2, int(1))]))).ok();
    assert_eq!(
        cbor::get(&r, 4),
        Some(&Value::Bool(true)),
        "powerCycleState"
    );
    p.auth.power_cycle();
    // A right PIN restores all eight.
    assert!(p.token("1234", Some(MC), Some("a.com")).is_ok());
    assert_eq!(p.auth.pin_retries(), 8);
    // Eight wrong PINs, with power cycles, block it for good.
    for i in 0..8 {
        if i % 3 == 0 {
            p.auth.power_cycle();
        }
        let s = p.token("9999", Some(MC), Some("a.com")).unwrap_err();
        assert!(
            s == 0x31 || s == 0x34 || (i == 7 && s == 0x32),
            "try {i}: {s:#x}"
        );
    }
    assert_eq!(p.auth.pin_retries(), 0);
    p.auth.power_cycle();
    assert_eq!(p.token("1234", Some(MC), Some("a.com")), Err(0x32));
}

#[test]
fn permissions_whose_option_is_absent_are_unauthorized() {
    let p = with_pin("1234");
    assert_eq!(p.token("1234", Some(0x08), None), Err(0x40), "be");
    assert_eq!(p.token("1234", Some(0x40), None), Err(0x40), "pcmr (2.2)");
    assert_eq!(p.token("1234", Some(0), None), Err(0x02), "no permissions");
    assert!(p
        .token("1234", Some(MC | GA | CM | LBW | ACFG), None)
        .is_ok());
    // Not a try spent on those refused up front.
    assert_eq!(p.auth.pin_retries(), 8);
}

// ---- the pinUvAuthToken lifecycle ---------------------------------------------------------

#[test]
fn user_presence_clears_every_permission_but_lbw() {
    let p = with_pin("1234");
    let tok = p.token("1234", Some(MC | GA | LBW), Some("a.com")).unwrap();
    let (id, _, ad) = registered(&p, p.mc("a.com", b"u1", true, Some(&tok)), "a.com");
    assert_eq!(ad.flags & 0x45, 0x45, "UP, UV, AT");
    assert_eq!(
        p.ga("a.com", &[&id], Some(&tok)).status,
        0x33,
        "ga was cleared"
    );
    // lbw survives.
    let mut array = vec![0x80];
    array.extend_from_slice(&Sha256::digest([0x80])[..16]);
    assert_eq!(p.blob_set(Some(&tok), 0, &array, Some(array.len())), OK);
}

#[test]
fn a_new_token_invalidates_the_old_one() {
    let p = with_pin("1234");
    let first = p.token("1234", Some(MC), Some("a.com")).unwrap();
    let second = p.token("1234", Some(MC), Some("a.com")).unwrap();
    assert_ne!(first, second);
    assert_eq!(p.mc("a.com", b"u", true, Some(&first)).status, 0x33);
    assert_eq!(p.mc("a.com", b"u", true, Some(&second)).status, OK);
}

#[test]
fn tokens_expire_unused_after_the_initial_limit_and_after_ten_minutes() {
    let p = with_pin("1234");
    let tok = p.token("1234", Some(CM), None).unwrap();
    p.auth.advance_clock(Duration::from_secs(31));
    assert_eq!(p.cm(&tok, 1, None).status, 0x33, "unused for 31 s");

    let tok = p.token("1234", Some(CM), None).unwrap();
    p.auth.advance_clock(Duration::from_secs(29));
    assert_eq!(p.cm(&tok, 1, None).status, OK, "used within 30 s");
    p.auth.advance_clock(Duration::from_secs(300));
    assert_eq!(
        p.cm(&tok, 1, None).status,
        OK,
        "in use: good for 10 minutes"
    );
    p.auth.advance_clock(Duration::from_secs(300));
    assert_eq!(
        p.cm(&tok, 1, None).status,
        0x33,
        "past the 10-minute maximum"
    );

    // NFC: 19.8 s.
    let n = auth_with(SimConfig {
        transport: SimTransport::Nfc,
        pin: Some("1234".into()),
        ..SimConfig::default()
    });
    let tok = n.token("1234", Some(CM), None).unwrap();
    n.auth.advance_clock(Duration::from_millis(19_700));
    assert_eq!(n.cm(&tok, 1, None).status, OK);
    let tok = n.token("1234", Some(CM), None).unwrap();
    n.auth.advance_clock(Duration::from_millis(19_900));
    assert_eq!(n.cm(&tok, 1, None).status, 0x33);
    // A power cycle ends any token.
    let tok = n.token("1234", Some(CM), None).unwrap();
    n.auth.power_cycle();
    assert_eq!(n.cm(&tok, 1, None).status, 0x33);
}

#[test]
fn legacy_get_pin_token_is_mc_ga_without_rp_for_one_use() {
    let p = with_pin("1234");
    let tok = p.token("1234", None, None).unwrap();
    assert_eq!(p.cm(&tok, 1, None).status, 0x33, "no cm");
    let tok = p.token("1234", None, None).unwrap();
    let (id, public, _) = registered(&p, p.mc("a.com", b"u", true, Some(&tok)), "a.com");
    assert_eq!(
        p.ga("a.com", &[&id], Some(&tok)).status,
        0x33,
        "one use only"
    );
    let tok = p.token("1234", None, None).unwrap();
    let a = p.ga("a.com", &[&id], Some(&tok)).ok();
    assert_assertion(&a, "a.com", &public);
}

#[test]
fn the_permissions_rp_id_binds_the_token() {
    let p = with_pin("1234");
    let tok = p.token("1234", Some(MC), Some("a.com")).unwrap();
    assert_eq!(p.mc("b.com", b"u", true, Some(&tok)).status, 0x33);
    assert_eq!(p.mc("a.com", b"u", true, Some(&tok)).status, OK);
    // Without an RP ID, the first use binds it: a silent assertion (no user presence, so
    // the ga permission stays) for c.com, then d.com is refused.
    let (c_id, _, _) = registered(&p, p.mc("c.com", b"u", false, None), "c.com");
    let (d_id, _, _) = registered(&p, p.mc("d.com", b"u", false, None), "d.com");
    let tok = p.token("1234", Some(GA), None).unwrap();
    let silent = |rp: &str, id: &[u8]| {
        let cdh = Sha256::digest(format!("ga {rp}").as_bytes()).to_vec();
        map(vec![
            (1, t(rp)),
            (2, b(&cdh)),
            (
                3,
                Value::Array(vec![tmap(vec![("id", b(id)), ("type", t("public-key"))])]),
            ),
            (5, tmap(vec![("up", Value::Bool(false))])),
            (6, p.param(&tok, &cdh)),
            (7, int(2)),
        ])
    };
    let a = p.call(GA_CMD, Some(silent("c.com", &c_id))).ok();
    assert_eq!(
        parse_auth_data(&bytes_of(get(&a, 2))).flags & 0x05,
        0x04,
        "UV, no UP"
    );
    assert_eq!(
        p.call(GA_CMD, Some(silent("d.com", &d_id))).status,
        0x33,
        "bound to c.com"
    );
    assert_eq!(p.call(GA_CMD, Some(silent("c.com", &c_id))).status, OK);
}

#[test]
fn pin_protected_discoverable_credentials_need_a_token() {
    let p = with_pin("1234");
    assert_eq!(
        p.mc("a.com", b"u", true, None).status,
        0x36,
        "PUAT_REQUIRED"
    );
    // makeCredUvNotRqd: a non-discoverable credential without PIN.
    let (id, public, ad) = registered(&p, p.mc("a.com", b"u", false, None), "a.com");
    assert_eq!(ad.flags & 0x05, 0x01, "UP without UV");
    let a = p.ga("a.com", &[&id], None).ok();
    assert_assertion(&a, "a.com", &public);
    assert!(
        cbor::get(&a, 4).is_none(),
        "no user for a non-discoverable credential"
    );
    // The zero-length pinUvAuthParam probe.
    let mut req = p.mc_request("a.com", b"u", false, None);
    if let Value::Map(m) = &mut req {
        m.push((int(8), b(&[])));
        m.push((int(9), int(2)));
    }
    assert_eq!(p.call(MC_CMD, Some(req.clone())).status, 0x33);
    let np = fresh();
    assert_eq!(np.call(MC_CMD, Some(req)).status, 0x35);
}

// ---- makeCredential / getAssertion --------------------------------------------------------

#[test]
fn assertions_verify_and_count_up() {
    let p = fresh();
    let (id, public, ad1) = registered(
        &p,
        p.mc("example.com", b"user-1", false, None),
        "example.com",
    );
    assert_eq!(id.len(), 50);
    let a = p.ga("example.com", &[&id], None).ok();
    assert_eq!(
        get(&a, 1),
        &tmap(vec![("id", b(&id)), ("type", t("public-key"))])
    );
    let ad2 = assert_assertion(&a, "example.com", &public);
    let a = p.ga("example.com", &[&id], None).ok();
    let ad3 = assert_assertion(&a, "example.com", &public);
    assert!(ad1.counter < ad2.counter && ad2.counter < ad3.counter);
    // Not for another RP, and a forged ID is nobody's.
    assert_eq!(p.ga("other.com", &[&id], None).status, 0x2E);
    let mut forged = id.clone();
    forged[10] ^= 1;
    assert_eq!(p.ga("example.com", &[&forged], None).status, 0x2E);
    // Without user presence: UP flag clear; refused presence: OPERATION_DENIED.
    let cdh = Sha256::digest(b"ga example.com").to_vec();
    let silent = map(vec![
        (1, t("example.com")),
        (2, b(&cdh)),
        (
            3,
            Value::Array(vec![tmap(vec![("id", b(&id)), ("type", t("public-key"))])]),
        ),
        (5, tmap(vec![("up", Value::Bool(false))])),
    ]);
    let a = p.call_up(GA_CMD, Some(silent), false).ok();
    assert_eq!(assert_assertion(&a, "example.com", &public).flags & 0x01, 0);
    assert_eq!(
        p.call_up(
            GA_CMD,
            Some(map(vec![(1, t("example.com")), (2, b(&cdh))])),
            false
        )
        .status,
        0x2E
    );
    assert_eq!(
        p.call_up(
            MC_CMD,
            Some(p.mc_request("example.com", b"u", false, None)),
            false
        )
        .status,
        0x27
    );
}

#[test]
fn several_discoverable_credentials_come_newest_first_through_get_next_assertion() {
    let p = fresh();
    let mut publics = Vec::new();
    for user in [b"u1", b"u2", b"u3"] {
        let (id, public, _) = registered(&p, p.mc("rp.com", user, true, None), "rp.com");
        publics.push((id, public, user.to_vec()));
    }
    assert_eq!(p.auth.credential_count(), 3);
    let first = p.ga("rp.com", &[], None).ok();
    assert_eq!(cbor::uint(&first, 5), Some(3));
    let mut seen = vec![first];
    for _ in 0..2 {
        seen.push(p.call(0x08, None).ok());
    }
    assert_eq!(p.call(0x08, None).status, 0x30, "no more");
    for (answer, (id, public, user)) in seen.iter().zip(publics.iter().rev()) {
        assert_eq!(
            bytes_of(cbor::get_text_key(&map_of(get(answer, 1)), "id").unwrap()),
            *id
        );
        assert_assertion(answer, "rp.com", public);
        let u = map_of(get(answer, 4));
        assert_eq!(bytes_of(cbor::get_text_key(&u, "id").unwrap()), *user);
        assert!(
            cbor::get_text_key(&u, "name").is_none(),
            "no PII without UV"
        );
    }
    // Another command in between ends the sequence.
    p.ga("rp.com", &[], None).ok();
    p.info();
    assert_eq!(p.call(0x08, None).status, 0x30);
    // And so does time.
    p.ga("rp.com", &[], None).ok();
    p.auth.advance_clock(Duration::from_secs(31));
    assert_eq!(p.call(0x08, None).status, 0x30);
    // A second credential for the same user replaces the first.
    registered(&p, p.mc("rp.com", b"u1", true, None), "rp.com");
    assert_eq!(p.auth.credential_count(), 3);
}

#[test]
fn exclude_list_and_bad_requests() {
    let p = fresh();
    let (id, _, _) = registered(&p, p.mc("a.com", b"u", false, None), "a.com");
    let mut req = p.mc_request("a.com", b"u2", false, None);
    if let Value::Map(m) = &mut req {
        m.push((
            int(5),
            Value::Array(vec![tmap(vec![("id", b(&id)), ("type", t("public-key"))])]),
        ));
    }
    assert_eq!(p.call(MC_CMD, Some(req)).status, 0x19);
    assert_eq!(p.call(MC_CMD, None).status, 0x14, "no parameters");
    assert_eq!(p.auth.process(&[MC_CMD, 0xFF], true)[0], 0x12, "not CBOR");
    assert_eq!(p.call(MC_CMD, Some(Value::Array(vec![]))).status, 0x11);
    assert_eq!(
        p.call(MC_CMD, Some(map(vec![(1, t("not bytes"))]))).status,
        0x11
    );
    assert_eq!(p.call(0x55, None).status, 0x01, "unknown command");
    assert_eq!(p.auth.process(&[], true), vec![0x03]);
    let ga_rk = map(vec![
        (1, t("a.com")),
        (2, b(&[0; 32])),
        (5, tmap(vec![("rk", Value::Bool(true))])),
    ]);
    assert_eq!(p.call(GA_CMD, Some(ga_rk)).status, 0x2B);
}

// ---- credentialManagement -----------------------------------------------------------------

#[test]
fn credential_management_enumerates_updates_and_deletes() {
    let p = with_pin("1234");
    let mut ids = Vec::new();
    for (rp, user) in [("a.com", b"ua"), ("b.com", b"ub"), ("b.com", b"uc")] {
        let tok = p.token("1234", Some(MC), Some(rp)).unwrap();
        let (id, _, _) = registered(&p, p.mc(rp, user, true, Some(&tok)), rp);
        ids.push(id);
    }
    let tok = p.token("1234", Some(CM), None).unwrap();
    let meta = p.cm(&tok, 1, None).ok();
    assert_eq!(cbor::uint(&meta, 1), Some(3));
    assert_eq!(cbor::uint(&meta, 2), Some(47));
    let rp1 = p.cm(&tok, 2, None).ok();
    assert_eq!(cbor::uint(&rp1, 5), Some(2));
    let rp2 = p.call(0x0A, Some(map(vec![(1, int(3))]))).ok();
    let mut rps: Vec<String> = [rp1, rp2]
        .iter()
        .map(|m| match cbor::get_text_key(&map_of(get(m, 3)), "id") {
            Some(Value::Text(s)) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    rps.sort();
    assert_eq!(rps, ["a.com", "b.com"]);
    assert_eq!(p.call(0x0A, Some(map(vec![(1, int(3))]))).status, 0x30);

    let b_hash = Sha256::digest(b"b.com").to_vec();
    let c1 = p.cm(&tok, 4, Some(map(vec![(1, b(&b_hash))]))).ok();
    assert_eq!(cbor::uint(&c1, 9), Some(2));
    let c2 = p.call(0x0A, Some(map(vec![(1, int(5))]))).ok();
    let listed: Vec<Vec<u8>> = [&c1, &c2]
        .iter()
        .map(|m| bytes_of(cbor::get_text_key(&map_of(get(m, 7)), "id").unwrap()))
        .collect();
    assert!(listed.contains(&ids[1]) && listed.contains(&ids[2]));
    // The public key listed is the one the credential signs with.
    let cose = map_of(get(&c1, 8));
    let mut sec1 = vec![4];
    sec1.extend(cbor::bytes(&cose, -2).unwrap());
    sec1.extend(cbor::bytes(&cose, -3).unwrap());
    let a = p.ga("b.com", &[&listed[0]], None).ok();
    assert_assertion(&a, "b.com", &sec1);
    // That assertion collected user presence: the cm permission is gone (only lbw survives).
    assert_eq!(p.cm(&tok, 1, None).status, 0x33);
    let tok = p.token("1234", Some(CM), None).unwrap();

    // Update the user's names.
    let cred = tmap(vec![("id", b(&ids[0])), ("type", t("public-key"))]);
    let upd = map(vec![
        (2, cred.clone()),
        (3, tmap(vec![("id", b(b"ua")), ("name", t("new name"))])),
    ]);
    assert_eq!(p.cm(&tok, 7, Some(upd)).status, OK);
    let bad_user = map(vec![(2, cred.clone()), (3, tmap(vec![("id", b(b"zz"))]))]);
    assert_eq!(p.cm(&tok, 7, Some(bad_user)).status, 0x02);
    let a_hash = Sha256::digest(b"a.com").to_vec();
    let c = p.cm(&tok, 4, Some(map(vec![(1, b(&a_hash))]))).ok();
    let user = map_of(get(&c, 6));
    assert_eq!(cbor::get_text_key(&user, "name"), Some(&t("new name")));
    assert!(cbor::get_text_key(&user, "displayName").is_none());

    // Delete: the credential is gone for good.
    assert_eq!(p.cm(&tok, 6, Some(map(vec![(2, cred.clone())]))).status, OK);
    assert_eq!(p.auth.credential_count(), 2);
    assert_eq!(p.cm(&tok, 6, Some(map(vec![(2, cred)]))).status, 0x2E);
    assert_eq!(p.ga("a.com", &[&ids[0]], None).status, 0x2E);
    assert_eq!(p.cm(&tok, 4, Some(map(vec![(1, b(&a_hash))]))).status, 0x2E);

    // Without a token, or a forged one.
    assert_eq!(p.call(0x0A, Some(map(vec![(1, int(1))]))).status, 0x36);
    assert_eq!(p.cm(&[7; 32], 1, None).status, 0x33);
    assert_eq!(p.cm(&tok, 0x20, None).status, 0x3E);
}

#[test]
fn a_cm_token_with_an_rp_id_is_refused_for_metadata_and_rp_enumeration() {
    let p = with_pin("1234");
    let tok = p.token("1234", Some(MC), Some("a.com")).unwrap();
    registered(&p, p.mc("a.com", b"u", true, Some(&tok)), "a.com");
    let tok = p.token("1234", Some(MC), Some("b.com")).unwrap();
    let (b_id, _, _) = registered(&p, p.mc("b.com", b"u", true, Some(&tok)), "b.com");
    let tok = p.token("1234", Some(CM), Some("a.com")).unwrap();
    assert_eq!(p.cm(&tok, 1, None).status, 0x33);
    assert_eq!(p.cm(&tok, 2, None).status, 0x33);
    let a_hash = Sha256::digest(b"a.com").to_vec();
    let b_hash = Sha256::digest(b"b.com").to_vec();
    assert_eq!(p.cm(&tok, 4, Some(map(vec![(1, b(&a_hash))]))).status, OK);
    assert_eq!(p.cm(&tok, 4, Some(map(vec![(1, b(&b_hash))]))).status, 0x33);
    let cred = tmap(vec![("id", b(&b_id)), ("type", t("public-key"))]);
    assert_eq!(p.cm(&tok, 6, Some(map(vec![(2, cred)]))).status, 0x33);
    assert_eq!(p.auth.credential_count(), 2);
    // An mc-only token cannot manage credentials.
    let tok = p.token("1234", Some(MC), None).unwrap();
    assert_eq!(p.cm(&tok, 1, None).status, 0x33);
}

// ---- largeBlobs ---------------------------------------------------------------------------

fn blob_array(content: &[u8]) -> Vec<u8> {
    let mut v = content.to_vec();
    v.extend_from_slice(&Sha256::digest(content)[..16]);
    v
}

#[test]
fn large_blobs_start_empty_and_take_fragments() {
    let p = with_pin("1234");
    let initial = p.blob_get(0, 1000);
    assert_eq!(initial, blob_array(&[0x80]));
    // Read in pieces.
    assert_eq!(p.blob_get(3, 4), initial[3..7].to_vec());

    // A 1500-byte array (an array of one byte string) in two fragments.
    let mut content = vec![0x81, 0x59, 0x05, 0xC9];
    content.extend((0..1481).map(|i| i as u8));
    let array = blob_array(&content);
    assert_eq!(array.len(), 1501);
    assert_eq!(
        p.blob_set(None, 0, &array[..1000], Some(array.len())),
        0x36,
        "PUAT_REQUIRED"
    );
    let tok = p.token("1234", Some(LBW), None).unwrap();
    assert_eq!(
        p.blob_set(Some(&tok), 0, &array[..1000], Some(array.len())),
        OK
    );
    assert_eq!(
        p.blob_get(0, 100),
        initial[..17].to_vec(),
        "not committed yet"
    );
    assert_eq!(
        p.blob_set(Some(&tok), 999, &array[1000..], None),
        0x04,
        "INVALID_SEQ"
    );
    assert_eq!(p.blob_set(Some(&tok), 1000, &array[1000..], None), OK);
    let mut back = p.blob_get(0, 1000);
    back.extend(p.blob_get(1000, 1000));
    assert_eq!(back, array);
    assert_eq!(p.auth.large_blob_array(), array);

    // A broken trailer is refused and nothing changes.
    let mut broken = blob_array(&[0x80]);
    broken[16] ^= 1;
    assert_eq!(p.blob_set(Some(&tok), 0, &broken, Some(broken.len())), 0x3D);
    assert_eq!(p.auth.large_blob_array(), array);
    // Too big, too small.
    assert_eq!(p.blob_set(Some(&tok), 0, &[0; 16], Some(5000)), 0x18);
    assert_eq!(p.blob_set(Some(&tok), 0, &[0; 16], Some(16)), 0x02);
    // A token without lbw.
    let tok = p.token("1234", Some(CM), None).unwrap();
    let small = blob_array(&[0x80]);
    assert_eq!(p.blob_set(Some(&tok), 0, &small, Some(small.len())), 0x33);
}

#[test]
fn large_blob_keys_come_with_discoverable_credentials() {
    let p = fresh();
    let mut req = p.mc_request("a.com", b"u", true, None);
    if let Value::Map(m) = &mut req {
        m.push((int(6), tmap(vec![("largeBlobKey", Value::Bool(true))])));
    }
    let r = p.call(MC_CMD, Some(req)).ok();
    let key = bytes_of(get(&r, 5));
    assert_eq!(key.len(), 32);
    let cdh = Sha256::digest(b"ga a.com").to_vec();
    let a = p
        .call(
            GA_CMD,
            Some(map(vec![
                (1, t("a.com")),
                (2, b(&cdh)),
                (4, tmap(vec![("largeBlobKey", Value::Bool(true))])),
            ])),
        )
        .ok();
    assert_eq!(bytes_of(get(&a, 7)), key);
    // Not for a non-discoverable credential.
    let mut req = p.mc_request("a.com", b"u", false, None);
    if let Value::Map(m) = &mut req {
        m.push((int(6), tmap(vec![("largeBlobKey", Value::Bool(true))])));
    }
    assert_eq!(p.call(MC_CMD, Some(req)).status, 0x2C);
}

// ---- authenticatorConfig ------------------------------------------------------------------

#[test]
fn config_toggles_always_uv_and_raises_the_minimum_pin_length() {
    let p = with_pin("1234");
    assert_eq!(p.config(None, 2, None).status, 0x36, "PUAT_REQUIRED");
    assert_eq!(
        p.config(None, 1, None).status,
        0x3E,
        "no enterprise attestation"
    );
    assert_eq!(
        p.config(None, 0xFF, None).status,
        0x3E,
        "no vendor prototype"
    );
    let tok = p.token("1234", Some(ACFG), None).unwrap();
    assert_eq!(p.config(Some(&tok), 2, None).status, OK);
    assert_eq!(p.option("alwaysUv"), Some(true));
    assert_eq!(p.option("makeCredUvNotRqd"), Some(false));
    assert_eq!(p.mc("a.com", b"u", false, None).status, 0x36);
    assert_eq!(p.config(Some(&tok), 2, None).status, OK);
    assert_eq!(p.option("alwaysUv"), Some(false));

    assert_eq!(
        p.config(Some(&tok), 1, None).status,
        0x3E,
        "no enterprise attestation"
    );
    assert_eq!(
        p.config(Some(&tok), 3, Some(map(vec![(1, int(6))]))).status,
        OK
    );
    let info = p.info();
    assert_eq!(cbor::uint(&info, 13), Some(6));
    assert_eq!(
        cbor::get(&info, 12),
        Some(&Value::Bool(true)),
        "4-digit PIN must change"
    );
    assert_eq!(
        p.config(Some(&tok), 3, Some(map(vec![(1, int(5))]))).status,
        0x37,
        "no lowering"
    );
    assert_eq!(p.token("1234", Some(MC), Some("a.com")), Err(0x37));
    assert_eq!(p.change_pin("1234", "12345"), 0x37, "shorter than 6");
    assert_eq!(p.change_pin("1234", "123456"), OK);
    assert_eq!(cbor::get(&p.info(), 12), Some(&Value::Bool(false)));
    let tok = p.token("123456", Some(ACFG), None).unwrap();
    // forceChangePin: a change to the same PIN is refused.
    assert_eq!(
        p.config(Some(&tok), 3, Some(map(vec![(3, Value::Bool(true))])))
            .status,
        OK
    );
    assert_eq!(p.change_pin("123456", "123456"), 0x37);
    assert_eq!(p.change_pin("123456", "654321"), OK);
    // Without a PIN, config needs no token.
    let np = fresh();
    assert_eq!(
        np.config(None, 3, Some(map(vec![(3, Value::Bool(true))])))
            .status,
        0x35
    );
    assert_eq!(np.config(None, 2, None).status, OK);
    assert_eq!(np.option("alwaysUv"), Some(true));
    // Now alwaysUv asks for a token even without a PIN.
    assert_eq!(np.config(None, 2, None).status, 0x36);
}

// ---- reset, selection ---------------------------------------------------------------------

#[test]
fn reset_needs_presence_and_the_window_after_power_up() {
    let p = with_pin("1234");
    registered(&p, p.mc("a.com", b"u", false, None), "a.com");
    let tok = p.token("1234", Some(MC), Some("a.com")).unwrap();
    registered(&p, p.mc("a.com", b"u", true, Some(&tok)), "a.com");
    assert_eq!(p.call_up(0x07, None, false).status, 0x27);
    p.auth.advance_clock(Duration::from_secs(11));
    assert_eq!(p.call(0x07, None).status, 0x30, "after 10 s: NOT_ALLOWED");
    p.auth.power_cycle();
    assert_eq!(p.call(0x07, None).status, OK);
    assert!(!p.auth.pin_is_set());
    assert_eq!(p.auth.credential_count(), 0);
    assert_eq!(p.option("clientPin"), Some(false));
    assert_eq!(p.blob_get(0, 100), blob_array(&[0x80]));

    let any_time = auth_with(SimConfig {
        reset_window: None,
        ..SimConfig::default()
    });
    any_time.auth.advance_clock(Duration::from_secs(3600));
    assert_eq!(any_time.call(0x07, None).status, OK);
}

#[test]
fn reset_ends_every_credential_even_non_discoverable_ones() {
    let p = auth_with(SimConfig {
        reset_window: None,
        ..SimConfig::default()
    });
    let (id, _, _) = registered(&p, p.mc("a.com", b"u", false, None), "a.com");
    assert_eq!(p.call(0x07, None).status, OK);
    assert_eq!(p.ga("a.com", &[&id], None).status, 0x2E);
}

#[test]
fn selection_is_a_touch() {
    let p = fresh();
    assert_eq!(p.call(0x0B, None).status, OK);
    assert_eq!(p.call_up(0x0B, None, false).status, 0x27);
}

// ---- the log ------------------------------------------------------------------------------

#[test]
fn the_log_records_commands_subcommands_permissions_and_rp_ids() {
    let p = with_pin("1234");
    p.auth.clear_log();
    let tok = p.token("1234", Some(MC | GA), Some("a.com")).unwrap();
    p.mc("a.com", b"u", true, Some(&tok));
    let log = p.auth.log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].command, 0x06);
    assert_eq!(log[0].sub_command, Some(2));
    assert_eq!(
        log[1],
        LoggedCommand {
            command: 0x06,
            sub_command: Some(9),
            status: 0,
            permissions: Some(MC | GA),
            rp_id: Some("a.com".into()),
        }
    );
    assert_eq!(log[2].command, 0x01);
    assert_eq!(log[2].rp_id.as_deref(), Some("a.com"));
    assert_eq!(log[2].status, 0);
}

// ---- state file ---------------------------------------------------------------------------

#[test]
fn the_state_file_keeps_pin_credentials_and_blob() {
    let dir = std::env::temp_dir().join(format!("fido2-sim-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.cbor");
    let config = SimConfig {
        state_file: Some(path.clone()),
        ..SimConfig::default()
    };
    let p = auth_with(config.clone());
    assert!(path.exists());
    assert_eq!(p.set_pin("4321"), OK);
    let tok = p.token("4321", Some(MC | LBW), Some("a.com")).unwrap();
    let (id, public, _) = registered(&p, p.mc("a.com", b"u", true, Some(&tok)), "a.com");
    let array = blob_array(&[0x80]);
    assert_eq!(p.blob_set(Some(&tok), 0, &array, Some(array.len())), OK);
    assert_eq!(p.token("0000", Some(MC), Some("a.com")), Err(0x31));
    drop(p);
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"4321"), "no PIN in clear");

    let q = auth_with(SimConfig {
        pin: Some("9999".into()),
        ..config
    });
    assert!(q.auth.pin_is_set());
    assert_eq!(q.auth.pin_retries(), 7);
    assert_eq!(q.auth.credential_count(), 1);
    let tok = q.token("4321", Some(GA), Some("a.com")).unwrap();
    let a = q.ga("a.com", &[], Some(&tok)).ok();
    assert_assertion(&a, "a.com", &public);
    assert_eq!(
        bytes_of(cbor::get_text_key(&map_of(get(&a, 1)), "id").unwrap()),
        id
    );
    std::fs::write(&path, b"garbage").unwrap();
    assert!(Authenticator::new(SimConfig {
        state_file: Some(path.clone()),
        ..SimConfig::default()
    })
    .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = SimConfig {
        pin: Some("S3cretPin".into()),
        ..SimConfig::default()
    };
    assert!(!format!("{config:?}").contains("S3cretPin"));
    let auth = Authenticator::new(config).unwrap();
    assert!(!format!("{auth:?}").contains("S3cretPin"));
    assert!(!format!("{:?}", auth.card()).contains("S3cretPin"));
}

// ---- HID ----------------------------------------------------------------------------------

fn hid_cbor(
    channel: &transport_hid::CtapHidChannel<transport_hid::sim::SimHidDevice>,
    request: &[u8],
) -> Vec<u8> {
    channel
        .transact_blocking(transport_hid::Cmd::CBOR, request, &mut |_| {})
        .unwrap()
}

#[test]
fn over_hid_presence_sends_keepalives_and_cancel_works() {
    use transport_hid::sim::PresencePolicy;
    let p = fresh();
    let (device, control) = hid_device(&p.auth);
    let channel = transport_hid::CtapHidChannel::open(device).unwrap();
    let info = hid_cbor(&channel, &[0x04]);
    assert_eq!(info[0], 0);
    assert_eq!(
        cbor::decode(&info[1..]).unwrap(),
        cbor::decode(&p.auth.process(&[0x04], true)[1..]).unwrap()
    );

    let mut req = vec![MC_CMD];
    req.extend(cbor::encode(&p.mc_request("a.com", b"u", false, None)));
    control.set_presence(PresencePolicy::AfterKeepalives(3));
    let mut statuses = Vec::new();
    let answer = channel
        .transact_blocking(transport_hid::Cmd::CBOR, &req, &mut |s| statuses.push(s))
        .unwrap();
    assert_eq!(answer[0], 0);
    assert!(statuses.len() >= 3, "{statuses:?}");
    assert!(statuses
        .iter()
        .all(|s| *s == transport_hid::KeepaliveStatus::UP_NEEDED));

    control.set_presence(PresencePolicy::WaitForPress);
    let canceler = channel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceler.cancel().unwrap();
    });
    let answer = hid_cbor(&channel, &req);
    t.join().unwrap();
    assert_eq!(answer, vec![0x2D], "KEEPALIVE_CANCEL");
    assert!(control.cancels() >= 1);

    // The default: touched at once.
    let channel = hid_channel(&p.auth);
    assert_eq!(hid_cbor(&channel, &[0x0B]), vec![0]);
}

// ---- NFC ----------------------------------------------------------------------------------

fn select(card: &mut FidoCard) -> Vec<u8> {
    use token_core::CardSimulator;
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, 0x08];
    apdu.extend_from_slice(&crate::ctap::FIDO_AID);
    apdu.push(0x00);
    card.process(&apdu)
}

/// Sends one CTAP request over NFC with short APDUs: chaining in 255-byte pieces, GET
/// RESPONSE for the rest.
fn nfc_ctap(card: &mut FidoCard, request: &[u8], le: u8) -> Vec<u8> {
    use token_core::CardSimulator;
    let chunks: Vec<&[u8]> = request.chunks(255).collect();
    let mut answer = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut apdu = vec![
            if last { 0x80 } else { 0x90 },
            0x10,
            0x80,
            0x00,
            chunk.len() as u8,
        ];
        apdu.extend_from_slice(chunk);
        if last {
            apdu.push(le);
        }
        answer = card.process(&apdu);
        if !last {
            assert_eq!(answer, vec![0x90, 0x00]);
        }
    }
    let mut data = Vec::new();
    loop {
        let (body, sw) = answer.split_at(answer.len() - 2);
        data.extend_from_slice(body);
        match sw {
            [0x90, 0x00] => return data,
            [0x61, n] => answer = card.process(&[0x00, 0xC0, 0x00, 0x00, *n]),
            other => panic!("status word {other:02X?}"),
        }
    }
}

#[test]
fn over_nfc_select_chaining_and_get_response() {
    use token_core::CardSimulator;
    let p = auth_with(SimConfig {
        transport: SimTransport::Nfc,
        ..SimConfig::default()
    });
    let mut card = p.auth.card();
    assert!(!card.atr().is_empty());
    card.power_on();
    // Before SELECT: refused.
    assert_eq!(
        card.process(&[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00]),
        vec![0x69, 0x85]
    );
    assert_eq!(select(&mut card), b"FIDO_2_0\x90\x00".to_vec());
    let info = nfc_ctap(&mut card, &[0x04], 0x20);
    let direct = p.auth.process(&[0x04], true);
    assert_eq!(info[0], 0);
    assert_eq!(
        cbor::decode(&info[1..]).unwrap(),
        cbor::decode(&direct[1..]).unwrap()
    );
    assert!(info.len() > 0x20, "the answer came in several pieces");
    let parsed = map_of(&cbor::decode(&info[1..]).unwrap());
    assert_eq!(get(&parsed, 9), &Value::Array(vec![t("nfc")]));

    // A makeCredential longer than one short APDU, through chaining.
    let mut req = vec![MC_CMD];
    let mut mc = p.mc_request("a.com", &[0x55; 64], true, None);
    if let Value::Map(m) = &mut mc {
        let exclude: Vec<Value> = (0..4u8)
            .map(|i| tmap(vec![("id", b(&[i; 60])), ("type", t("public-key"))]))
            .collect();
        m.push((int(5), Value::Array(exclude)));
    }
    req.extend(cbor::encode(&mc));
    assert!(req.len() > 255);
    let answer = nfc_ctap(&mut card, &req, 0x00);
    let (id, public, _) = registered(
        &p,
        Reply {
            status: answer[0],
            map: map_of(&cbor::decode(&answer[1..]).unwrap()),
        },
        "a.com",
    );
    assert_eq!(id.len(), 50);

    // Extended APDU, whole answer at once.
    let mut ga = vec![GA_CMD];
    let cdh = Sha256::digest(b"ga a.com").to_vec();
    ga.extend(cbor::encode(&map(vec![(1, t("a.com")), (2, b(&cdh))])));
    let mut apdu = vec![0x80, 0x10, 0x00, 0x00, 0x00];
    apdu.extend_from_slice(&(ga.len() as u16).to_be_bytes());
    apdu.extend_from_slice(&ga);
    apdu.extend_from_slice(&[0x00, 0x00]);
    let answer = card.process(&apdu);
    assert_eq!(answer[answer.len() - 2..], [0x90, 0x00]);
    let a = map_of(&cbor::decode(&answer[1..answer.len() - 2]).unwrap());
    assert_assertion(&a, "a.com", &public);

    // The user refuses (no tap): OPERATION_DENIED.
    p.auth.set_nfc_presence(false);
    assert_eq!(nfc_ctap(&mut card, &ga, 0), vec![0x27]);
    p.auth.set_nfc_presence(true);
    // Unknown instruction and class; GET RESPONSE with nothing pending.
    assert_eq!(card.process(&[0x80, 0x55, 0, 0]), vec![0x6D, 0x00]);
    assert_eq!(card.process(&[0x42, 0x10, 0, 0]), vec![0x6E, 0x00]);
    assert_eq!(card.process(&[0x00, 0xC0, 0, 0, 0]), vec![0x69, 0x85]);
    assert_eq!(card.process(&[0x80]), vec![0x67, 0x00]);
    // A wrong AID deselects.
    assert_eq!(
        card.process(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x01]),
        vec![0x6A, 0x82]
    );
}

#[test]
fn the_card_sits_in_a_multi_application_card() {
    use token_core::CardSimulator;
    let p = fresh();
    let mut multi = token_core::MultiApplicationCard::new(FIDO_ATR.to_vec())
        .with(&crate::ctap::FIDO_AID, Box::new(p.auth.card()));
    multi.power_on();
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, 0x08];
    apdu.extend_from_slice(&crate::ctap::FIDO_AID);
    assert_eq!(multi.process(&apdu), b"FIDO_2_0\x90\x00".to_vec());
    let answer = multi.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]);
    assert!(answer.ends_with(&[0x90, 0x00]) || answer[answer.len() - 2] == 0x61);
}

// ---- totality -----------------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(cbor::int),
        proptest::collection::vec(any::<u8>(), 0..70).prop_map(Value::Bytes),
        "[a-z.]{0,12}".prop_map(Value::Text),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((0i64..12, inner.clone()), 0..8)
                .prop_map(|e| Value::Map(e.into_iter().map(|(k, v)| (cbor::int(k), v)).collect())),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..5).prop_map(|e| {
                Value::Map(e.into_iter().map(|(k, v)| (Value::Text(k), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_bytes_get_a_status_over_hid(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let auth = Authenticator::new(SimConfig {
            pin: Some("1234".into()),
            ..SimConfig::default()
        })
        .unwrap();
        struct Touch;
        impl transport_hid::sim::Presence for Touch {
            fn keepalive(&mut self, _: transport_hid::KeepaliveStatus) -> bool { true }
            fn user_presence(&mut self) -> transport_hid::sim::UserPresence {
                transport_hid::sim::UserPresence::Confirmed
            }
        }
        let mut handler = auth.handler();
        let answer =
            transport_hid::sim::CtapHandler::handle_cbor(&mut handler, &bytes, &mut Touch);
        prop_assert!(!answer.is_empty());
        if answer[0] != 0 {
            prop_assert_eq!(answer.len(), 1);
        }
    }

    #[test]
    fn any_command_with_any_parameters_gets_a_status(
        cmd in prop_oneof![
            Just(1u8), Just(2), Just(4), Just(6), Just(7), Just(8),
            Just(0x0A), Just(0x0B), Just(0x0C), Just(0x0D), any::<u8>(),
        ],
        params in arb_value(),
        sub in 0i64..12,
    ) {
        let auth = Authenticator::new(SimConfig {
            pin: Some("1234".into()),
            reset_window: None,
            ..SimConfig::default()
        })
        .unwrap();
        let mut p = match params {
            Value::Map(m) => m,
            other => vec![(cbor::int(3), other)],
        };
        p.push((cbor::int(if cmd == 6 { 2 } else { 1 }), cbor::int(sub)));
        let mut req = vec![cmd];
        req.extend(cbor::encode(&Value::Map(p)));
        let answer = auth.process(&req, true);
        prop_assert!(!answer.is_empty());
        if answer.len() > 1 {
            prop_assert_eq!(answer[0], 0);
            prop_assert!(cbor::decode(&answer[1..]).is_ok());
        }
    }

    #[test]
    fn any_requests_through_ctaphid_framing_get_answers(
        requests in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..4),
    ) {
        // Through the simulated device's own thread: a panic there would end the device and
        // the next transaction would fail.
        let auth = Authenticator::new(SimConfig::default()).unwrap();
        let channel = hid_channel(&auth);
        for request in requests {
            let answer = channel
                .transact_blocking(transport_hid::Cmd::CBOR, &request, &mut |_| {})
                .unwrap();
            prop_assert!(!answer.is_empty());
        }
        prop_assert_eq!(hid_cbor(&channel, &[0x04])[0], 0);
    }

    #[test]
    fn state_files_of_any_content_load_or_are_refused(
        value in arb_value(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = super::store::Persistent::decode(&bytes);
        let _ = super::store::Persistent::decode(&cbor::encode(&value));
    }

    #[test]
    fn any_apdus_get_a_status_word(
        apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
    ) {
        use token_core::CardSimulator;
        let auth = Authenticator::new(SimConfig::default()).unwrap();
        let mut card = auth.card();
        select(&mut card);
        for mut apdu in apdus {
            if apdu.len() > 1 && apdu[0] & 1 == 0 {
                // Often a well-formed NFCCTAP_MSG header.
                apdu[0] = 0x80;
                apdu[1] = 0x10;
            }
            let answer = card.process(&apdu);
            prop_assert!(answer.len() >= 2);
        }
    }
}

#[test]
fn over_hid_nobody_touching_times_out() {
    use transport_hid::sim::{PresencePolicy, SimConfig as HidConfig, SimHidDevice};
    let p = fresh();
    let (device, control) = SimHidDevice::with_config(
        p.auth.handler(),
        HidConfig {
            presence_timeout: Duration::from_millis(300),
            ..HidConfig::default()
        },
    );
    control.set_presence(PresencePolicy::WaitForPress);
    let channel = transport_hid::CtapHidChannel::open(device).unwrap();
    assert_eq!(
        hid_cbor(&channel, &[0x0B]),
        vec![0x2F],
        "USER_ACTION_TIMEOUT"
    );
    // A touch while waiting answers it.
    let presser = control.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        presser.press();
    });
    assert_eq!(hid_cbor(&channel, &[0x0B]), vec![0x00]);
    t.join().unwrap();
    let log = p.auth.log();
    assert_eq!(
        log.iter()
            .map(|l| (l.command, l.status))
            .collect::<Vec<_>>(),
        [(0x0B, 0x2F), (0x0B, 0x00)]
    );
}

#[test]
fn accessors_do_not_wait_for_a_pending_touch() {
    use transport_hid::sim::PresencePolicy;
    let p = with_pin("1234");
    let (device, control) = hid_device(&p.auth);
    control.set_presence(PresencePolicy::WaitForPress);
    let channel = transport_hid::CtapHidChannel::open(device).unwrap();
    let waiting = std::thread::spawn(move || hid_cbor(&channel, &[0x0B]));
    std::thread::sleep(Duration::from_millis(200));
    // The selection waits for the touch with the state locked; these still answer.
    let started = std::time::Instant::now();
    assert!(p.auth.log().is_empty());
    assert_eq!(p.auth.pin_retries(), 8);
    assert_eq!(p.auth.credential_count(), 0);
    assert!(p.auth.pin_is_set());
    p.auth.advance_clock(Duration::from_secs(1));
    p.auth.set_nfc_presence(true);
    assert!(started.elapsed() < Duration::from_millis(100));
    control.press();
    assert_eq!(waiting.join().unwrap(), vec![0x00]);
    assert_eq!(p.auth.log().len(), 1);
}

// ---- hmac-secret --------------------------------------------------------------------------

/// getAssertion with hmac-secret for `salts` (32 or 64 bytes) under `protocol`: the
/// decrypted outputs, or the status.
fn hmac_assertion(
    p: &Platform,
    protocol: PinUvAuthProtocol,
    id: &[u8],
    salts: &[u8],
    token: Option<&[u8]>,
    forge: bool,
) -> Result<Option<Vec<u8>>, u8> {
    let r = p
        .call(
            0x06,
            Some(map(vec![(1, int(protocol.number().into())), (2, int(2))])),
        )
        .ok();
    let (key, secret) = protocol
        .encapsulate(&CoseKey::from_value(get(&r, 1)).unwrap())
        .unwrap();
    let salt_enc = protocol.encrypt(&secret, salts).unwrap();
    let mut salt_auth = protocol.authenticate(secret.as_bytes(), &salt_enc);
    if forge {
        salt_auth[0] ^= 1;
    }
    let cdh = Sha256::digest(b"ga a.com").to_vec();
    let mut params = vec![
        (1, t("a.com")),
        (2, b(&cdh)),
        (
            3,
            Value::Array(vec![tmap(vec![("id", b(id)), ("type", t("public-key"))])]),
        ),
        (
            4,
            tmap(vec![(
                "hmac-secret",
                map(vec![
                    (1, key.to_value()),
                    (2, b(&salt_enc)),
                    (3, b(&salt_auth)),
                    (4, int(protocol.number().into())),
                ]),
            )]),
        ),
    ];
    if let Some(tok) = token {
        params.push((6, p.param(tok, &cdh)));
        params.push((7, int(p.protocol.number().into())));
    }
    let r = p.call(GA_CMD, Some(map(params)));
    if r.status != OK {
        return Err(r.status);
    }
    let ad = bytes_of(get(&r.map, 2));
    if ad[32] & 0x80 == 0 {
        return Ok(None);
    }
    let ext = map_of(&cbor::decode(&ad[37..]).unwrap());
    let enc = bytes_of(cbor::get_text_key(&ext, "hmac-secret").unwrap());
    Ok(Some(protocol.decrypt(&secret, &enc).unwrap().to_vec()))
}

#[test]
fn hmac_secret_gives_stable_outputs_per_salt_and_uv() {
    let p = with_pin("1234");
    let mut req = p.mc_request("a.com", b"u", false, None);
    if let Value::Map(m) = &mut req {
        m.push((int(6), tmap(vec![("hmac-secret", Value::Bool(true))])));
    }
    let r = p.call(MC_CMD, Some(req)).ok();
    let ad = bytes_of(get(&r, 2));
    assert_eq!(ad[32] & 0x80, 0x80, "ED");
    let ad = parse_auth_data(&ad);
    let id = ad.cred_id;
    let (plain, _, _) = registered(&p, p.mc("a.com", b"v", false, None), "a.com");

    let salt1 = [0x11u8; 32];
    let salt2 = [0x22u8; 32];
    let both: Vec<u8> = salt1.iter().chain(salt2.iter()).copied().collect();
    for protocol in [PinUvAuthProtocol::One, PinUvAuthProtocol::Two] {
        let one = hmac_assertion(&p, protocol, &id, &salt1, None, false)
            .unwrap()
            .unwrap();
        assert_eq!(one.len(), 32);
        let again = hmac_assertion(&p, protocol, &id, &salt1, None, false)
            .unwrap()
            .unwrap();
        assert_eq!(one, again, "same salt, same output ({protocol})");
        let two = hmac_assertion(&p, protocol, &id, &both, None, false)
            .unwrap()
            .unwrap();
        assert_eq!(two.len(), 64);
        assert_eq!(two[..32], one[..], "the first output is salt1's");
        assert_ne!(two[32..], one[..]);
        // With UV (a PIN token), another CredRandom.
        let tok = p.token("1234", Some(GA), Some("a.com")).unwrap();
        let uv = hmac_assertion(&p, protocol, &id, &salt1, Some(&tok), false)
            .unwrap()
            .unwrap();
        assert_ne!(uv, one);
        assert_eq!(
            hmac_assertion(&p, protocol, &id, &salt1, None, true),
            Err(0x33),
            "saltAuth forged"
        );
        assert_eq!(
            hmac_assertion(&p, protocol, &id, &[0u8; 48], None, false),
            Err(0x03)
        );
        // A credential made without hmac-secret gives no output.
        assert_eq!(
            hmac_assertion(&p, protocol, &plain, &salt1, None, false),
            Ok(None)
        );
    }
}

#[test]
fn an_absurd_clock_advance_expires_things_without_panicking() {
    let p = with_pin("1234");
    let tok = p.token("1234", Some(CM), None).unwrap();
    p.auth.advance_clock(Duration::MAX);
    p.auth.advance_clock(Duration::MAX);
    assert!(!p.info().is_empty());
    // The reset window is long gone, the token too.
    assert_eq!(p.cm(&tok, 1, None).status, 0x33);
    assert_eq!(p.call(0x07, None).status, 0x30);
}

/// A simulated HID device (transport-hid's CTAPHID framing) serving `auth`, and its control.
fn hid_device(
    auth: &Authenticator,
) -> (
    transport_hid::sim::SimHidDevice,
    transport_hid::sim::SimControl,
) {
    transport_hid::sim::SimHidDevice::new(auth.handler())
}

/// A CTAPHID channel to a new simulated HID device of `auth` (the user touches at once).
fn hid_channel(
    auth: &Authenticator,
) -> transport_hid::CtapHidChannel<transport_hid::sim::SimHidDevice> {
    transport_hid::CtapHidChannel::open(hid_device(auth).0).unwrap()
}
