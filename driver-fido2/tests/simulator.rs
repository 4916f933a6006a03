//! The rules of the automatic AuthToken logic (seed 003: one test per rule), checked against
//! the CTAP 2.1 simulator's command log: how many pinUvAuthTokens were asked for (clientPIN
//! subcommand 09, or 05 on CTAP 2.0), with which permissions and RP ID, and which commands
//! the authenticator refused.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use driver_fido2::client::GetAssertionRequest;
use driver_fido2::ctap::{self, Permissions};
use driver_fido2::session::Fido2Session;
use driver_fido2::sim::{Authenticator, LoggedCommand, SimConfig};
use token_core::{async_trait, block_on, ErrorCode, Pin, PinCallback, PinRequest};

const PIN: &str = "123456";

struct Collector {
    pin: &'static str,
    asked: AtomicUsize,
    requests: Mutex<Vec<PinRequest>>,
}

impl Collector {
    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl PinCallback for Collector {
    async fn request_pin(&self, request: &PinRequest) -> Option<Pin> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.requests.lock().unwrap().push(request.clone());
        Some(Pin::from(self.pin))
    }
}

fn authenticator(ctap21: bool) -> Authenticator {
    Authenticator::new(SimConfig {
        ctap21,
        pin: Some(PIN.into()),
        ..SimConfig::default()
    })
    .unwrap()
}

fn session_with(auth: &Authenticator, pin: &'static str) -> (Fido2Session, Arc<Collector>) {
    let mut s = common::hid_session(auth);
    let c = Arc::new(Collector {
        pin,
        asked: AtomicUsize::new(0),
        requests: Mutex::new(Vec::new()),
    });
    s.set_key_collector(c.clone());
    (s, c)
}

/// The token requests in the log: clientPIN 09 (or 05).
fn token_requests(auth: &Authenticator) -> Vec<LoggedCommand> {
    auth.log()
        .into_iter()
        .filter(|l| {
            l.command == ctap::CMD_CLIENT_PIN
                && matches!(
                    l.sub_command,
                    Some(ctap::client_pin::GET_PIN_TOKEN_WITH_PERMISSIONS)
                        | Some(ctap::client_pin::GET_PIN_TOKEN)
                )
        })
        .collect()
}

fn commands(auth: &Authenticator, command: u8) -> Vec<LoggedCommand> {
    auth.log()
        .into_iter()
        .filter(|l| l.command == command)
        .collect()
}

fn make_credential(s: &mut Fido2Session, rp: &str, user: &str) -> Vec<u8> {
    common::make_resident(s, rp, user)
        .credential_id()
        .unwrap()
        .to_vec()
}

fn assertion(rp: &str) -> GetAssertionRequest {
    GetAssertionRequest {
        rp_id: rp.into(),
        client_data_hash: vec![9; 32],
        ..Default::default()
    }
}

/// An authenticator with credentials for example.com and example.org, a fresh session (no
/// token) and an empty log.
fn prepared() -> (Authenticator, Fido2Session, Arc<Collector>) {
    let auth = authenticator(true);
    let (mut s, _) = session_with(&auth, PIN);
    make_credential(&mut s, "example.com", "alice");
    make_credential(&mut s, "example.org", "bob");
    let (s, c) = session_with(&auth, PIN);
    auth.clear_log();
    (auth, s, c)
}

#[test]
fn rule_the_current_auth_token_is_always_tried_first() {
    let (auth, mut s, collector) = prepared();
    block_on(s.add_permissions(Permissions::CREDENTIAL_MANAGEMENT, None)).unwrap();
    block_on(s.credential_metadata()).unwrap();
    block_on(s.enumerate_rps()).unwrap();
    block_on(s.enumerate_credentials("example.com")).unwrap();
    assert_eq!(token_requests(&auth).len(), 1, "one token for all four");
    assert_eq!(collector.asked(), 1);
    assert!(commands(&auth, ctap::CMD_CREDENTIAL_MANAGEMENT)
        .iter()
        .all(|l| l.status == 0));
}

#[test]
fn rule_on_pin_auth_invalid_a_new_token_unites_the_permissions_and_the_operation_is_retried_once() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    // A large-blob write needs lbw, which the token lacks.
    block_on(s.write_large_blob_array(&[0x80])).unwrap();
    let tokens = token_requests(&auth);
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].permissions, Some(0x02 | 0x10));
    assert_eq!(tokens[1].rp_id.as_deref(), Some("example.com"));
    let writes = commands(&auth, ctap::CMD_LARGE_BLOBS);
    let statuses: Vec<u8> = writes.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        [0x33, 0x00],
        "refused with the old token, then retried once"
    );
    assert_eq!(
        s.auth_token_permissions(),
        Some(Permissions::GET_ASSERTION | Permissions::LARGE_BLOB_WRITE)
    );
    assert_eq!(block_on(s.read_large_blob_array()).unwrap(), vec![0x80]);
}

#[test]
fn rule_a_new_rp_id_replaces_the_recorded_one() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    block_on(s.get_assertion(&assertion("example.org"))).unwrap();
    let tokens = token_requests(&auth);
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].rp_id.as_deref(), Some("example.org"));
    assert_eq!(s.auth_token_rp_id(), Some("example.org"));
}

#[test]
fn rule_the_recorded_rp_id_is_used_when_the_operation_names_none() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    block_on(s.set_min_pin_length(Some(6), &[], false)).unwrap();
    let tokens = token_requests(&auth);
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].permissions, Some(0x02 | 0x20));
    assert_eq!(tokens[1].rp_id.as_deref(), Some("example.com"));
    assert_eq!(s.auth_token_rp_id(), Some("example.com"));
}

#[test]
fn rule_credential_metadata_gets_a_cm_only_token_without_rp_id_and_restores_the_properties() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(
        Permissions::GET_ASSERTION | Permissions::CREDENTIAL_MANAGEMENT,
        Some("example.com"),
    ))
    .unwrap();
    let metadata = block_on(s.credential_metadata()).unwrap();
    assert_eq!(metadata.existing, 2);
    let tokens = token_requests(&auth);
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[1].permissions,
        Some(0x04),
        "credentialManagement alone"
    );
    assert_eq!(tokens[1].rp_id, None, "and no RP ID");
    let statuses: Vec<u8> = commands(&auth, ctap::CMD_CREDENTIAL_MANAGEMENT)
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [0x33, 0x00], "the RP-bound token was tried first");
    // The recorded properties are the saved ones, for later tokens.
    assert_eq!(
        s.auth_token_permissions(),
        Some(Permissions::GET_ASSERTION | Permissions::CREDENTIAL_MANAGEMENT)
    );
    assert_eq!(s.auth_token_rp_id(), Some("example.com"));
    // A later getAssertion gets its token from them.
    block_on(s.get_assertion(&assertion("example.com"))).unwrap();
    let last = token_requests(&auth).pop().unwrap();
    assert_eq!(last.permissions, Some(0x02 | 0x04));
    assert_eq!(last.rp_id.as_deref(), Some("example.com"));
}

#[test]
fn rule_enumerate_rps_after_metadata_uses_the_cm_only_token_as_it_is() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    block_on(s.credential_metadata()).unwrap();
    let before = token_requests(&auth).len();
    let rps = block_on(s.enumerate_rps()).unwrap();
    assert_eq!(rps.len(), 2);
    assert_eq!(token_requests(&auth).len(), before, "no new token");
}

#[test]
fn rule_clear_auth_token_forgets_the_token_its_permissions_and_rp_id() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    s.clear_auth_token();
    assert!(s.auth_token().is_none());
    assert_eq!(s.auth_token_permissions(), None);
    assert_eq!(s.auth_token_rp_id(), None);
    block_on(s.set_min_pin_length(Some(6), &[], false)).unwrap();
    let last = token_requests(&auth).pop().unwrap();
    assert_eq!(
        last.permissions,
        Some(0x20),
        "only what the operation needs"
    );
    assert_eq!(last.rp_id, None);
}

#[test]
fn rule_add_permissions_unites_and_none_keeps_the_rp_id() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap();
    block_on(s.add_permissions(Permissions::LARGE_BLOB_WRITE, None)).unwrap();
    let last = token_requests(&auth).pop().unwrap();
    assert_eq!(last.permissions, Some(0x12));
    assert_eq!(last.rp_id.as_deref(), Some("example.com"));
    block_on(s.add_permissions(Permissions::CREDENTIAL_MANAGEMENT, Some("example.org"))).unwrap();
    let last = token_requests(&auth).pop().unwrap();
    assert_eq!(last.permissions, Some(0x16));
    assert_eq!(last.rp_id.as_deref(), Some("example.org"));
    assert_eq!(s.auth_token_rp_id(), Some("example.org"));
    // The token now serves both without another PIN.
    block_on(s.get_assertion(&assertion("example.org"))).unwrap();
    block_on(s.write_large_blob_array(&[0x80])).unwrap();
    assert_eq!(token_requests(&auth).len(), 3);
}

#[test]
fn rule_on_a_ctap20_device_a_pin_token_is_obtained() {
    let auth = authenticator(false);
    let (mut s, _) = session_with(&auth, PIN);
    make_credential(&mut s, "example.com", "alice");
    block_on(s.get_assertion(&assertion("example.com"))).unwrap();
    let tokens = token_requests(&auth);
    assert!(!tokens.is_empty());
    assert!(tokens
        .iter()
        .all(|l| l.sub_command == Some(ctap::client_pin::GET_PIN_TOKEN)));
    assert!(tokens.iter().all(|l| l.permissions.is_none()));
}

#[test]
fn rule_after_user_presence_only_large_blob_write_survives() {
    let (auth, mut s, _) = prepared();
    block_on(s.add_permissions(
        Permissions::GET_ASSERTION
            | Permissions::LARGE_BLOB_WRITE
            | Permissions::CREDENTIAL_MANAGEMENT,
        Some("example.com"),
    ))
    .unwrap();
    block_on(s.get_assertion(&assertion("example.com"))).unwrap();
    // lbw survived the touch: no new token.
    block_on(s.write_large_blob_array(&[0x80])).unwrap();
    assert_eq!(token_requests(&auth).len(), 1);
    assert!(commands(&auth, ctap::CMD_LARGE_BLOBS)
        .iter()
        .all(|l| l.status == 0));
    // cm did not: the next credential-management operation obtains a new token.
    block_on(s.enumerate_credentials("example.com")).unwrap();
    let tokens = token_requests(&auth);
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].permissions, Some(0x02 | 0x10 | 0x04));
}

#[test]
fn rule_a_wrong_pin_is_never_retried() {
    let (auth, _, _) = prepared();
    let (mut s, collector) = session_with(&auth, "000000");
    auth.clear_log();
    let e = block_on(s.get_assertion(&assertion("example.com"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
    assert_eq!(e.retries_left(), Some(7));
    assert_eq!(collector.asked(), 1);
    assert_eq!(token_requests(&auth).len(), 1);
    assert!(commands(&auth, ctap::CMD_GET_ASSERTION).is_empty());
    assert_eq!(auth.pin_retries(), 7);
    let request = collector.requests.lock().unwrap()[0].clone();
    assert_eq!(request.retries_left, Some(8));
    assert!(!request.is_last_try());
}

#[test]
fn the_key_collector_is_told_when_it_is_the_last_try() {
    let auth = authenticator(true);
    let (mut s, collector) = session_with(&auth, "000000");
    // Seven wrong PINs, power-cycling after every third (PIN_AUTH_BLOCKED).
    for i in 0..7 {
        if i % 3 == 0 && i > 0 {
            auth.power_cycle();
        }
        let _ = block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com")));
    }
    auth.power_cycle();
    let e =
        block_on(s.add_permissions(Permissions::GET_ASSERTION, Some("example.com"))).unwrap_err();
    let last = collector.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.retries_left, Some(1));
    assert!(last.is_last_try());
    assert!(e.is_blocked(), "{e}");
}
