//! The authenticator itself: CTAP 2.1 commands over the simulator's state, independent of
//! the transport (HID and NFC feed it the same request bytes).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::store::{self, Persistent, Resident, StoredPin};
use super::{LoggedCommand, SimTransport};
use crate::cbor::{self, int_map, Value};
use crate::ctap::{self, client_pin as cp, Permissions, Status};
use crate::pin_protocol::{self, CoseKey, KeyAgreementKey, PinUvAuthProtocol};

type R<T> = Result<T, Status>;

/// The longest message the simulator takes or gives (getInfo maxMsgSize).
pub(crate) const MAX_MSG_SIZE: usize = 1200;
/// The largest large-blob fragment: maxMsgSize - 64.
const MAX_FRAGMENT: usize = MAX_MSG_SIZE - 64;
/// maxSerializedLargeBlobArray.
pub(crate) const MAX_LARGE_BLOB: usize = 4096;
/// How many discoverable credentials fit.
pub(crate) const MAX_RESIDENT: usize = 50;
/// maxCredentialCountInList.
const MAX_CREDS_IN_LIST: usize = 8;
/// The longest a pinUvAuthToken stays usable once used (§6.5.2.1: SHOULD default 10 min).
const MAX_USAGE_PERIOD: Duration = Duration::from_secs(600);
/// How long getNextAssertion / the enumerations stay possible (§6.3: 30 s).
const CONTINUATION_TIMEOUT: Duration = Duration::from_secs(30);
/// firmwareVersion.
const FIRMWARE_VERSION: i64 = 0x0001_0000;

/// The user's answer to a request for presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Up {
    Confirmed,
    Denied,
    Canceled,
    TimedOut,
}

/// Where user presence comes from (the HID keep-alive loop, or the NFC tap).
pub(crate) trait UpSource {
    fn user_presence(&mut self) -> Up;
}

fn up_status(up: Up) -> R<()> {
    match up {
        Up::Confirmed => Ok(()),
        Up::Denied => Err(Status::OPERATION_DENIED),
        Up::Canceled => Err(Status::KEEPALIVE_CANCEL),
        Up::TimedOut => Err(Status::USER_ACTION_TIMEOUT),
    }
}

/// The pinUvAuthToken and its state (§6.5.2.1).
struct Token {
    value: Zeroizing<[u8; 32]>,
    permissions: u8,
    rp_id: Option<String>,
    issued: Instant,
    used: bool,
    user_verified: bool,
    /// From getPinToken on a 2.1 device: mc|ga without RP ID, good for one use.
    legacy: bool,
}

/// A multi-step command in progress (getNextAssertion, the enumerations).
#[derive(Default)]
enum Continuation {
    #[default]
    None,
    Assertions {
        rest: VecDeque<Vec<u8>>,
        rp_id: String,
        client_data_hash: Vec<u8>,
        flags: u8,
        ext: AssertionExt,
        until: Instant,
    },
    Rps {
        rest: VecDeque<String>,
        until: Instant,
    },
    Creds {
        rest: VecDeque<Vec<u8>>,
        until: Instant,
    },
}

/// The extensions a getAssertion asked for, applied to every credential it returns.
#[derive(Clone, Default)]
struct AssertionExt {
    large_blob_key: bool,
    hmac: Option<HmacRequest>,
}

/// A getAssertion's hmac-secret input: the shared secret and the decrypted salts.
#[derive(Clone)]
struct HmacRequest {
    protocol: PinUvAuthProtocol,
    secret: pin_protocol::SharedSecret,
    salts: Zeroizing<Vec<u8>>,
}

struct BlobWrite {
    expected_len: usize,
    buf: Vec<u8>,
}

/// Configuration fixed at creation.
pub(crate) struct Fixed {
    pub ctap21: bool,
    pub protocols: Vec<PinUvAuthProtocol>,
    pub transport: SimTransport,
    pub aaguid: [u8; 16],
    pub state_file: Option<PathBuf>,
    pub reset_window: Option<Duration>,
}

/// The whole authenticator.
pub(crate) struct Inner {
    pub fixed: Fixed,
    pub st: Persistent,
    saved: Option<Zeroizing<Vec<u8>>>,
    key_agreement: KeyAgreementKey,
    consecutive_pin_failures: u8,
    token: Option<Token>,
    continuation: Continuation,
    blob_write: Option<BlobWrite>,
    power_on_at: Instant,
    /// What the accessors read without waiting for a request in progress.
    pub observed: Arc<Observed>,
}

/// The parts of the state that tests read or steer while a request may be waiting for the
/// user (with the state locked): kept beside it, updated after every command.
#[derive(Default)]
pub(crate) struct Observed {
    /// The simulated clock's lead over the real one, in nanoseconds.
    pub clock_offset_ns: AtomicU64,
    pub log: Mutex<Vec<LoggedCommand>>,
    /// NFC: the tap is refused when this is set.
    pub nfc_refuse: AtomicBool,
    pub pin_retries: AtomicU8,
    pub pin_set: AtomicBool,
    pub credentials: AtomicUsize,
}

/// Typed access to a request's parameter map.
struct P<'a>(&'a [(Value, Value)]);

fn need<T>(v: Option<T>) -> R<T> {
    v.ok_or(Status::MISSING_PARAMETER)
}

/// Adds how many there are in all (under `key`) to the first answer of an enumeration.
fn push_total(answer: &mut Value, key: i64, total: usize) {
    if let Value::Map(m) = answer {
        m.push((cbor::int(key), cbor::int(total as i64)));
    }
}

impl<'a> P<'a> {
    fn get(&self, k: i64) -> Option<&'a Value> {
        cbor::get(self.0, k)
    }
    fn bytes(&self, k: i64) -> R<Option<&'a [u8]>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
    fn text(&self, k: i64) -> R<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
    fn uint(&self, k: i64) -> R<Option<u64>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Integer(i)) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| Status::INVALID_PARAMETER),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
    fn boolean(&self, k: i64) -> R<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
    /// The subcommand under `k` (present, and one byte).
    fn sub_command(&self, k: i64) -> R<u8> {
        let sub = need(self.uint(k)?)?;
        u8::try_from(sub).map_err(|_| Status::INVALID_SUBCOMMAND)
    }
    fn map(&self, k: i64) -> R<Option<&'a [(Value, Value)]>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Map(m)) => Ok(Some(m)),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
    fn array(&self, k: i64) -> R<Option<&'a [Value]>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }
}

/// A text-keyed map's entry.
fn tget<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    cbor::get_text_key(m, key)
}

fn ttext<'a>(m: &'a [(Value, Value)], key: &str) -> R<Option<&'a str>> {
    match tget(m, key) {
        None => Ok(None),
        Some(Value::Text(t)) => Ok(Some(t)),
        Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

fn tbytes<'a>(m: &'a [(Value, Value)], key: &str) -> R<Option<&'a [u8]>> {
    match tget(m, key) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

fn tbool(m: &[(Value, Value)], key: &str) -> R<Option<bool>> {
    match tget(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

fn as_map(v: &Value) -> R<&[(Value, Value)]> {
    match v {
        Value::Map(m) => Ok(m),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// The `id` of a PublicKeyCredentialDescriptor.
fn descriptor_id(v: &Value) -> R<&[u8]> {
    let m = as_map(v)?;
    ttext(m, "type")?;
    need(tbytes(m, "id")?)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn descriptor(id: &[u8]) -> Value {
    Value::Map(vec![
        (text("id"), Value::Bytes(id.to_vec())),
        (text("type"), text("public-key")),
    ])
}

fn user_entity(r: &Resident, identifying: bool) -> Value {
    let mut m = vec![(text("id"), Value::Bytes(r.user_id.clone()))];
    if identifying {
        if let Some(n) = &r.user_name {
            m.push((text("name"), text(n)));
        }
        if let Some(n) = &r.display_name {
            m.push((text("displayName"), text(n)));
        }
    }
    Value::Map(m)
}

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

impl Inner {
    pub fn new(fixed: Fixed, st: Persistent) -> token_core::Result<Self> {
        let saved = fixed.state_file.is_some().then(|| st.encode());
        let inner = Self {
            fixed,
            st,
            saved,
            key_agreement: KeyAgreementKey::generate()?,
            consecutive_pin_failures: 0,
            token: None,
            continuation: Continuation::None,
            blob_write: None,
            power_on_at: Instant::now(),
            observed: Arc::new(Observed::default()),
        };
        inner.publish();
        Ok(inner)
    }

    /// Updates the observed copies of the state.
    fn publish(&self) {
        let o = &self.observed;
        o.pin_retries.store(self.st.pin_retries, Ordering::SeqCst);
        o.pin_set.store(self.st.pin.is_some(), Ordering::SeqCst);
        o.credentials
            .store(self.st.residents.len(), Ordering::SeqCst);
    }

    /// Writes the state file now.
    pub fn save_now(&mut self) -> token_core::Result<()> {
        if let Some(path) = &self.fixed.state_file {
            self.st.save(path)?;
            self.saved = Some(self.st.encode());
        }
        Ok(())
    }

    /// Writes the state file if the state changed since the last write.
    fn save_if_changed(&mut self) {
        let Some(path) = &self.fixed.state_file else {
            return;
        };
        let now = self.st.encode();
        if self.saved.as_ref().is_some_and(|s| **s == *now) {
            return;
        }
        match self.st.save(path) {
            Ok(()) => self.saved = Some(now),
            Err(e) => tracing::warn!("FIDO2 simulator: cannot save {}: {e}", path.display()),
        }
    }

    /// The simulated clock: the real one plus what tests advanced it by (saturating, so an
    /// absurd advance cannot panic).
    pub fn now(&self) -> Instant {
        let real = Instant::now();
        let offset = Duration::from_nanos(self.observed.clock_offset_ns.load(Ordering::SeqCst));
        real.checked_add(offset).unwrap_or(real)
    }

    fn continuation_deadline(&self) -> Instant {
        let now = self.now();
        now.checked_add(CONTINUATION_TIMEOUT).unwrap_or(now)
    }

    /// Power off and on: everything volatile goes (§6.5.5.1: a new key-agreement key, no
    /// pinUvAuthToken, the three-wrong-PINs block lifted).
    pub fn power_cycle(&mut self) {
        if let Ok(k) = KeyAgreementKey::generate() {
            self.key_agreement = k;
        }
        self.consecutive_pin_failures = 0;
        self.token = None;
        self.continuation = Continuation::None;
        self.blob_write = None;
        self.power_on_at = self.now();
    }

    fn initial_usage_limit(&self) -> Duration {
        match self.fixed.transport {
            SimTransport::Usb => Duration::from_secs(30),
            SimTransport::Nfc => Duration::from_millis(19_800),
        }
    }

    /// Processes one CTAP2 request (command byte ‖ CBOR); the answer is status ‖ CBOR.
    pub fn process(&mut self, request: &[u8], up: &mut dyn UpSource) -> Vec<u8> {
        let Some((&command, body)) = request.split_first() else {
            return vec![Status::INVALID_LENGTH.0];
        };
        let mut entry = LoggedCommand {
            command,
            sub_command: None,
            status: 0,
            permissions: None,
            rp_id: None,
        };
        let continuation = std::mem::take(&mut self.continuation);
        let out = if request.len() > MAX_MSG_SIZE {
            Err(Status::REQUEST_TOO_LARGE)
        } else {
            self.dispatch(command, body, up, &mut entry, continuation)
        };
        let bytes = match out {
            Ok(None) => vec![0],
            Ok(Some(v)) => {
                let mut b = vec![0];
                b.extend_from_slice(&cbor::encode(&v));
                b
            }
            Err(s) => vec![s.0],
        };
        entry.status = bytes[0];
        tracing::debug!(
            "FIDO2 simulator: command 0x{command:02X} → {}",
            Status(entry.status)
        );
        super::lock(&self.observed.log).push(entry);
        self.save_if_changed();
        self.publish();
        bytes
    }

    fn params(body: &[u8]) -> R<Value> {
        if body.is_empty() {
            return Err(Status::MISSING_PARAMETER);
        }
        let v = cbor::decode(body).map_err(|_| Status::INVALID_CBOR)?;
        if !matches!(v, Value::Map(_)) {
            return Err(Status::CBOR_UNEXPECTED_TYPE);
        }
        Ok(v)
    }

    fn dispatch(
        &mut self,
        command: u8,
        body: &[u8],
        up: &mut dyn UpSource,
        entry: &mut LoggedCommand,
        continuation: Continuation,
    ) -> R<Option<Value>> {
        let v21 = self.fixed.ctap21;
        match command {
            ctap::CMD_GET_INFO => Ok(Some(self.get_info())),
            ctap::CMD_MAKE_CREDENTIAL => {
                let v = Self::params(body)?;
                self.make_credential(P(as_map(&v)?), up, entry).map(Some)
            }
            ctap::CMD_GET_ASSERTION => {
                let v = Self::params(body)?;
                self.get_assertion(P(as_map(&v)?), up, entry).map(Some)
            }
            ctap::CMD_GET_NEXT_ASSERTION => self.get_next_assertion(continuation).map(Some),
            ctap::CMD_CLIENT_PIN => {
                let v = Self::params(body)?;
                self.client_pin(P(as_map(&v)?), entry)
            }
            ctap::CMD_RESET => self.reset(up).map(|()| None),
            ctap::CMD_CREDENTIAL_MANAGEMENT if v21 => {
                let v = Self::params(body)?;
                self.cred_mgmt(P(as_map(&v)?), entry, continuation)
            }
            ctap::CMD_SELECTION if v21 => up_status(up.user_presence()).map(|()| None),
            ctap::CMD_LARGE_BLOBS if v21 => {
                let v = Self::params(body)?;
                self.large_blobs(P(as_map(&v)?))
            }
            ctap::CMD_CONFIG if v21 => {
                let v = Self::params(body)?;
                self.config(P(as_map(&v)?), entry).map(|()| None)
            }
            _ => Err(Status::INVALID_COMMAND),
        }
    }

    // ---- getInfo ----------------------------------------------------------------------

    fn pin_is_set(&self) -> bool {
        self.st.pin.is_some()
    }

    fn make_cred_uv_not_rqd(&self) -> bool {
        self.fixed.ctap21 && !self.st.always_uv
    }

    fn get_info(&self) -> Value {
        let v21 = self.fixed.ctap21;
        let mut versions = vec![text("FIDO_2_0")];
        if v21 {
            versions.push(text("FIDO_2_1"));
        }
        let mut options = vec![
            (text("rk"), Value::Bool(true)),
            (text("up"), Value::Bool(true)),
            (text("plat"), Value::Bool(false)),
            (text("clientPin"), Value::Bool(self.pin_is_set())),
        ];
        if v21 {
            options.extend([
                (text("pinUvAuthToken"), Value::Bool(true)),
                (text("credMgmt"), Value::Bool(true)),
                (text("largeBlobs"), Value::Bool(true)),
                (text("authnrCfg"), Value::Bool(true)),
                (text("setMinPINLength"), Value::Bool(true)),
                (text("alwaysUv"), Value::Bool(self.st.always_uv)),
                (
                    text("makeCredUvNotRqd"),
                    Value::Bool(self.make_cred_uv_not_rqd()),
                ),
            ]);
        }
        let transport = match self.fixed.transport {
            SimTransport::Usb => "usb",
            SimTransport::Nfc => "nfc",
        };
        let mut m = vec![
            (ctap::info::VERSIONS, Value::Array(versions)),
            (ctap::info::AAGUID, Value::Bytes(self.fixed.aaguid.to_vec())),
            (ctap::info::OPTIONS, Value::Map(options)),
            (ctap::info::MAX_MSG_SIZE, cbor::int(MAX_MSG_SIZE as i64)),
            (
                ctap::info::PIN_UV_AUTH_PROTOCOLS,
                Value::Array(
                    self.fixed
                        .protocols
                        .iter()
                        .map(|p| cbor::int(i64::from(p.number())))
                        .collect(),
                ),
            ),
            (
                ctap::info::MAX_CREDENTIAL_COUNT_IN_LIST,
                cbor::int(MAX_CREDS_IN_LIST as i64),
            ),
            (
                ctap::info::MAX_CREDENTIAL_ID_LENGTH,
                cbor::int(store::CRED_ID_LEN as i64),
            ),
            (ctap::info::TRANSPORTS, Value::Array(vec![text(transport)])),
            (
                ctap::info::ALGORITHMS,
                Value::Array(vec![Value::Map(vec![
                    (text("alg"), cbor::int(-7)),
                    (text("type"), text("public-key")),
                ])]),
            ),
        ];
        if v21 {
            m.extend([
                (
                    ctap::info::EXTENSIONS,
                    Value::Array(vec![
                        text("credProtect"),
                        text("hmac-secret"),
                        text("largeBlobKey"),
                    ]),
                ),
                (
                    ctap::info::MAX_SERIALIZED_LARGE_BLOB_ARRAY,
                    cbor::int(MAX_LARGE_BLOB as i64),
                ),
                (
                    ctap::info::FORCE_PIN_CHANGE,
                    Value::Bool(self.st.force_pin_change),
                ),
                (
                    ctap::info::MIN_PIN_LENGTH,
                    cbor::int(i64::from(self.st.min_pin_length)),
                ),
                (ctap::info::FIRMWARE_VERSION, cbor::int(FIRMWARE_VERSION)),
                (ctap::info::MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH, cbor::int(0)),
                (
                    ctap::info::REMAINING_DISCOVERABLE_CREDENTIALS,
                    cbor::int(self.remaining_resident() as i64),
                ),
            ]);
        }
        int_map(m)
    }

    fn remaining_resident(&self) -> usize {
        MAX_RESIDENT.saturating_sub(self.st.residents.len())
    }

    // ---- clientPIN --------------------------------------------------------------------

    fn protocol(&self, n: Option<u64>) -> R<PinUvAuthProtocol> {
        let n = need(n)?;
        PinUvAuthProtocol::from_number(n)
            .filter(|p| self.fixed.protocols.contains(p))
            .ok_or(Status::INVALID_PARAMETER)
    }

    fn shared_secret(
        &self,
        protocol: PinUvAuthProtocol,
        key: &Value,
    ) -> R<pin_protocol::SharedSecret> {
        let peer = CoseKey::from_value(key).map_err(|_| Status::INVALID_PARAMETER)?;
        protocol
            .decapsulate(&self.key_agreement, &peer)
            .map_err(|_| Status::INVALID_PARAMETER)
    }

    fn client_pin(&mut self, p: P<'_>, entry: &mut LoggedCommand) -> R<Option<Value>> {
        let sub = p.sub_command(cp::req::SUB_COMMAND)?;
        entry.sub_command = Some(sub);
        entry.permissions = p
            .uint(cp::req::PERMISSIONS)
            .ok()
            .flatten()
            .and_then(|v| u8::try_from(v).ok());
        entry.rp_id = p.text(cp::req::RP_ID).ok().flatten().map(str::to_owned);
        let v21 = self.fixed.ctap21;
        match sub {
            cp::GET_PIN_RETRIES => {
                let mut m = vec![(
                    cp::resp::PIN_RETRIES,
                    cbor::int(i64::from(self.st.pin_retries)),
                )];
                if v21 {
                    m.push((
                        cp::resp::POWER_CYCLE_STATE,
                        Value::Bool(self.consecutive_pin_failures >= 3),
                    ));
                }
                Ok(Some(int_map(m)))
            }
            cp::GET_KEY_AGREEMENT => {
                self.protocol(p.uint(cp::req::PROTOCOL)?)?;
                Ok(Some(int_map(vec![(
                    cp::resp::KEY_AGREEMENT,
                    self.key_agreement.public().to_value(),
                )])))
            }
            cp::SET_PIN => self.set_pin(&p).map(|()| None),
            cp::CHANGE_PIN => self.change_pin(&p).map(|()| None),
            cp::GET_PIN_TOKEN => self.get_pin_token(&p, None).map(Some),
            cp::GET_PIN_TOKEN_WITH_PERMISSIONS if v21 => {
                let perms = need(p.uint(cp::req::PERMISSIONS)?)?;
                self.get_pin_token(&p, Some(perms)).map(Some)
            }
            // No built-in user verification.
            cp::GET_UV_TOKEN_WITH_PERMISSIONS | cp::GET_UV_RETRIES if v21 => {
                Err(Status::INVALID_SUBCOMMAND)
            }
            _ if v21 => Err(Status::INVALID_SUBCOMMAND),
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    /// The new PIN from newPinEnc, checked against the policy.
    fn new_pin(
        &self,
        protocol: PinUvAuthProtocol,
        secret: &pin_protocol::SharedSecret,
        new_pin_enc: &[u8],
    ) -> R<StoredPin> {
        let padded = protocol
            .decrypt(secret, new_pin_enc)
            .map_err(|_| Status::PIN_POLICY_VIOLATION)?;
        let pin = pin_protocol::unpad_pin(&padded).ok_or(Status::PIN_POLICY_VIOLATION)?;
        let code_points = pin.chars().count();
        let min = usize::from(self.st.min_pin_length).max(pin_protocol::MIN_PIN_CODE_POINTS);
        if code_points < min || pin.len() > pin_protocol::MAX_PIN_BYTES {
            return Err(Status::PIN_POLICY_VIOLATION);
        }
        Ok(StoredPin {
            hash: Zeroizing::new(pin_protocol::pin_hash(&pin)),
            code_points: u8::try_from(code_points).unwrap_or(u8::MAX),
        })
    }

    fn set_pin(&mut self, p: &P<'_>) -> R<()> {
        let protocol = self.protocol(p.uint(cp::req::PROTOCOL)?)?;
        let key = need(p.get(cp::req::KEY_AGREEMENT))?;
        let new_pin_enc = need(p.bytes(cp::req::NEW_PIN_ENC)?)?;
        let param = need(p.bytes(cp::req::PIN_UV_AUTH_PARAM)?)?;
        if self.pin_is_set() {
            return Err(Status::NOT_ALLOWED);
        }
        let secret = self.shared_secret(protocol, key)?;
        if !protocol.verify(secret.as_bytes(), new_pin_enc, param) {
            return Err(Status::PIN_AUTH_INVALID);
        }
        let pin = self.new_pin(protocol, &secret, new_pin_enc)?;
        self.st.pin = Some(pin);
        self.st.pin_retries = store::MAX_PIN_RETRIES;
        Ok(())
    }

    /// The checks before a PIN is compared.
    fn pin_gate(&self) -> R<()> {
        if !self.pin_is_set() {
            return Err(Status::PIN_NOT_SET);
        }
        if self.st.pin_retries == 0 {
            return Err(Status::PIN_BLOCKED);
        }
        if self.consecutive_pin_failures >= 3 {
            return Err(Status::PIN_AUTH_BLOCKED);
        }
        Ok(())
    }

    /// Compares pinHashEnc with the stored PIN (§6.5.5.5 steps): a try is spent first; a
    /// mismatch regenerates the key-agreement key.
    fn check_pin_hash(
        &mut self,
        protocol: PinUvAuthProtocol,
        secret: &pin_protocol::SharedSecret,
        pin_hash_enc: &[u8],
    ) -> R<()> {
        self.st.pin_retries = self.st.pin_retries.saturating_sub(1);
        let matches = match (&self.st.pin, protocol.decrypt(secret, pin_hash_enc)) {
            (Some(stored), Ok(hash)) => pin_protocol::ct_eq(&hash, stored.hash.as_ref()),
            _ => false,
        };
        if !matches {
            if let Ok(k) = KeyAgreementKey::generate() {
                self.key_agreement = k;
            }
            self.consecutive_pin_failures = self.consecutive_pin_failures.saturating_add(1);
            return Err(if self.st.pin_retries == 0 {
                Status::PIN_BLOCKED
            } else if self.consecutive_pin_failures >= 3 {
                Status::PIN_AUTH_BLOCKED
            } else {
                Status::PIN_INVALID
            });
        }
        self.consecutive_pin_failures = 0;
        self.st.pin_retries = store::MAX_PIN_RETRIES;
        Ok(())
    }

    fn change_pin(&mut self, p: &P<'_>) -> R<()> {
        let protocol = self.protocol(p.uint(cp::req::PROTOCOL)?)?;
        let key = need(p.get(cp::req::KEY_AGREEMENT))?;
        let pin_hash_enc = need(p.bytes(cp::req::PIN_HASH_ENC)?)?;
        let new_pin_enc = need(p.bytes(cp::req::NEW_PIN_ENC)?)?;
        let param = need(p.bytes(cp::req::PIN_UV_AUTH_PARAM)?)?;
        self.pin_gate()?;
        let secret = self.shared_secret(protocol, key)?;
        let mut message = new_pin_enc.to_vec();
        message.extend_from_slice(pin_hash_enc);
        if !protocol.verify(secret.as_bytes(), &message, param) {
            return Err(Status::PIN_AUTH_INVALID);
        }
        self.check_pin_hash(protocol, &secret, pin_hash_enc)?;
        let pin = self.new_pin(protocol, &secret, new_pin_enc)?;
        if self.st.force_pin_change
            && self
                .st
                .pin
                .as_ref()
                .is_some_and(|old| pin_protocol::ct_eq(old.hash.as_ref(), pin.hash.as_ref()))
        {
            return Err(Status::PIN_POLICY_VIOLATION);
        }
        self.st.pin = Some(pin);
        self.st.force_pin_change = false;
        self.token = None;
        Ok(())
    }

    fn get_pin_token(&mut self, p: &P<'_>, permissions: Option<u64>) -> R<Value> {
        let v21 = self.fixed.ctap21;
        let protocol = self.protocol(p.uint(cp::req::PROTOCOL)?)?;
        let key = need(p.get(cp::req::KEY_AGREEMENT))?;
        let pin_hash_enc = need(p.bytes(cp::req::PIN_HASH_ENC)?)?;
        let rp_id = p.text(cp::req::RP_ID)?;
        let (perms, legacy) = match permissions {
            None => {
                if v21 && (p.get(cp::req::PERMISSIONS).is_some() || rp_id.is_some()) {
                    return Err(Status::INVALID_PARAMETER);
                }
                (
                    Permissions::MAKE_CREDENTIAL.0 | Permissions::GET_ASSERTION.0,
                    v21,
                )
            }
            Some(0) => return Err(Status::INVALID_PARAMETER),
            Some(perms) => {
                // Supported: mc ga cm lbw acfg (no bio enrollment, nothing of CTAP 2.2).
                let supported = 0x01 | 0x02 | 0x04 | 0x10 | 0x20;
                if perms & !supported != 0 {
                    return Err(Status::UNAUTHORIZED_PERMISSION);
                }
                (perms as u8, false)
            }
        };
        self.pin_gate()?;
        let secret = self.shared_secret(protocol, key)?;
        self.check_pin_hash(protocol, &secret, pin_hash_enc)?;
        if v21 && self.st.force_pin_change {
            return Err(Status::PIN_POLICY_VIOLATION);
        }
        let value = Zeroizing::new(store::random::<32>().map_err(|_| Status::OTHER)?);
        let enc = protocol
            .encrypt(&secret, value.as_ref())
            .map_err(|_| Status::OTHER)?;
        self.token = Some(Token {
            value,
            permissions: perms,
            rp_id: if legacy {
                None
            } else {
                rp_id.map(str::to_owned)
            },
            issued: self.now(),
            used: false,
            user_verified: true,
            legacy,
        });
        Ok(int_map(vec![(
            cp::resp::PIN_UV_AUTH_TOKEN,
            Value::Bytes(enc),
        )]))
    }

    // ---- the pinUvAuthToken -------------------------------------------------------------

    /// Checks a pinUvAuthParam over `message` against the token in use, with permission
    /// `perm`; `bind_rp` associates an RP with a token that has none, or must match its RP.
    fn use_token(
        &mut self,
        protocol: PinUvAuthProtocol,
        param: &[u8],
        message: &[u8],
        perm: Permissions,
        bind_rp: Option<&str>,
    ) -> R<()> {
        let v21 = self.fixed.ctap21;
        let now = self.now();
        let initial = self.initial_usage_limit();
        let Some(t) = self.token.as_mut() else {
            return Err(Status::PIN_AUTH_INVALID);
        };
        if v21 {
            let age = now.saturating_duration_since(t.issued);
            if (!t.used && age > initial) || age > MAX_USAGE_PERIOD {
                // stopUsingPinUvAuthToken
                self.token = None;
                return Err(Status::PIN_AUTH_INVALID);
            }
        }
        if !protocol.verify(t.value.as_ref(), message, param) {
            return Err(Status::PIN_AUTH_INVALID);
        }
        if v21 {
            if t.permissions & perm.0 != perm.0 {
                return Err(Status::PIN_AUTH_INVALID);
            }
            if let Some(rp) = bind_rp {
                match &t.rp_id {
                    Some(bound) if bound != rp => return Err(Status::PIN_AUTH_INVALID),
                    Some(_) => {}
                    None => t.rp_id = Some(rp.to_owned()),
                }
            }
        }
        t.used = true;
        Ok(())
    }

    /// The token's permissions RP ID must be absent.
    fn token_without_rp(&self) -> R<()> {
        match self.token.as_ref() {
            Some(t) if t.rp_id.is_none() => Ok(()),
            _ => Err(Status::PIN_AUTH_INVALID),
        }
    }

    /// The token's permissions RP ID, if any, must be the one with this hash.
    fn token_rp_matches(&self, rp_id_hash: &[u8]) -> R<()> {
        match self.token.as_ref().and_then(|t| t.rp_id.as_deref()) {
            Some(rp) if store::sha256(rp.as_bytes()) != rp_id_hash => Err(Status::PIN_AUTH_INVALID),
            _ => Ok(()),
        }
    }

    /// mc and ga need the user-verified flag of the token (§6.5.2.1).
    fn token_user_verified(&self) -> R<()> {
        match self.token.as_ref() {
            Some(t) if t.user_verified || !self.fixed.ctap21 => Ok(()),
            _ => Err(Status::PIN_AUTH_INVALID),
        }
    }

    /// A legacy token (getPinToken on a 2.1 device) dies after its one use.
    fn after_token_use(&mut self) {
        if self.token.as_ref().is_some_and(|t| t.legacy) {
            self.token = None;
        }
    }

    /// clearUserPresentFlag, clearUserVerifiedFlag, clearPinUvAuthTokenPermissionsExceptLbw.
    fn user_presence_collected(&mut self) {
        if !self.fixed.ctap21 {
            return;
        }
        if let Some(t) = self.token.as_mut() {
            t.permissions &= Permissions::LARGE_BLOB_WRITE.0;
            t.user_verified = false;
        }
    }

    /// A zero-length pinUvAuthParam: the platform asks for a touch to pick this
    /// authenticator (§6.1.2 step 1). The status it always ends in.
    fn touch_probe(&mut self, up: &mut dyn UpSource) -> Status {
        match up_status(up.user_presence()) {
            Err(e) if e == Status::KEEPALIVE_CANCEL => e,
            Err(_) => Status::OPERATION_DENIED,
            Ok(()) if self.pin_is_set() => Status::PIN_AUTH_INVALID,
            Ok(()) => Status::PIN_NOT_SET,
        }
    }

    /// The optional pinUvAuthParam of makeCredential or getAssertion (under `param_key`)
    /// and its protocol (under `protocol_key`); a zero-length one is the touch probe.
    fn optional_auth<'a>(
        &mut self,
        p: &P<'a>,
        param_key: i64,
        protocol_key: i64,
        up: &mut dyn UpSource,
    ) -> R<Option<(&'a [u8], PinUvAuthProtocol)>> {
        let Some(param) = p.bytes(param_key)? else {
            return Ok(None);
        };
        if param.is_empty() {
            return Err(self.touch_probe(up));
        }
        Ok(Some((param, self.protocol(p.uint(protocol_key)?)?)))
    }

    /// Checks the pinUvAuthParam of makeCredential or getAssertion over the client data
    /// hash, with permission `perm` for `rp_id`: true (user verified) when there is one.
    fn verify_optional_auth(
        &mut self,
        auth: Option<(&[u8], PinUvAuthProtocol)>,
        client_data_hash: &[u8],
        perm: Permissions,
        rp_id: &str,
    ) -> R<bool> {
        let Some((param, protocol)) = auth else {
            return Ok(false);
        };
        self.use_token(protocol, param, client_data_hash, perm, Some(rp_id))?;
        self.token_user_verified()?;
        self.after_token_use();
        Ok(true)
    }

    /// The pinUvAuthParam a command needs (PUAT_REQUIRED without it, under `param_key`) over
    /// `message`, with its protocol (under `protocol_key`), checked for permission `perm`.
    fn required_auth(
        &mut self,
        p: &P<'_>,
        param_key: i64,
        protocol_key: i64,
        message: &[u8],
        perm: Permissions,
    ) -> R<()> {
        let param = p.bytes(param_key)?.ok_or(Status::PUAT_REQUIRED)?;
        let protocol = self.protocol(p.uint(protocol_key)?)?;
        self.use_token(protocol, param, message, perm, None)
    }

    // ---- makeCredential ---------------------------------------------------------------

    fn make_credential(
        &mut self,
        p: P<'_>,
        up: &mut dyn UpSource,
        entry: &mut LoggedCommand,
    ) -> R<Value> {
        let v21 = self.fixed.ctap21;
        let auth = self.optional_auth(&p, 8, 9, up)?;
        let client_data_hash = need(p.bytes(1)?)?;
        let rp = need(p.map(2)?)?;
        let user = need(p.map(3)?)?;
        let params = need(p.array(4)?)?;
        let rp_id = need(ttext(rp, "id")?)?.to_owned();
        entry.rp_id = Some(rp_id.clone());
        let rp_name = ttext(rp, "name")?.map(str::to_owned);
        let user_id = need(tbytes(user, "id")?)?.to_vec();
        if user_id.len() > 64 {
            return Err(Status::INVALID_PARAMETER);
        }
        let user_name = ttext(user, "name")?.map(str::to_owned);
        let display_name = ttext(user, "displayName")?.map(str::to_owned);
        let mut es256 = false;
        for param in params {
            let m = as_map(param)?;
            let kind = need(ttext(m, "type")?)?;
            let alg = match tget(m, "alg") {
                Some(Value::Integer(i)) => i64::try_from(*i).unwrap_or(0),
                Some(_) => return Err(Status::CBOR_UNEXPECTED_TYPE),
                None => return Err(Status::MISSING_PARAMETER),
            };
            if kind == "public-key" && alg == -7 {
                es256 = true;
                break;
            }
        }
        if !es256 {
            return Err(Status::UNSUPPORTED_ALGORITHM);
        }
        let (mut rk, mut want_up) = (false, true);
        if let Some(options) = p.map(7)? {
            rk = tbool(options, "rk")?.unwrap_or(false);
            want_up = tbool(options, "up")?.unwrap_or(true);
            if tbool(options, "uv")? == Some(true) {
                return Err(Status::INVALID_OPTION);
            }
        }
        if !want_up {
            return Err(Status::INVALID_OPTION);
        }
        if v21 && p.get(0x0A).is_some() {
            // No enterprise attestation.
            return Err(Status::INVALID_PARAMETER);
        }
        if auth.is_none()
            && (self.st.always_uv || (self.pin_is_set() && (rk || !self.make_cred_uv_not_rqd())))
        {
            return Err(Status::PUAT_REQUIRED);
        }
        let uv = self.verify_optional_auth(
            auth,
            client_data_hash,
            Permissions::MAKE_CREDENTIAL,
            &rp_id,
        )?;
        // Extensions (2.1): credProtect, largeBlobKey.
        let mut cred_protect = 1u8;
        let mut cred_protect_asked = false;
        let mut large_blob_key = false;
        let mut hmac_secret = false;
        if let (true, Some(ext)) = (v21, p.map(6)?) {
            match tget(ext, "credProtect") {
                None => {}
                Some(Value::Integer(i)) => {
                    cred_protect = match u64::try_from(*i) {
                        Ok(l @ 1..=3) => l as u8,
                        _ => return Err(Status::INVALID_PARAMETER),
                    };
                    cred_protect_asked = true;
                }
                Some(_) => return Err(Status::CBOR_UNEXPECTED_TYPE),
            }
            match tbool(ext, "largeBlobKey")? {
                None => {}
                Some(true) if rk => large_blob_key = true,
                Some(_) => return Err(Status::INVALID_OPTION),
            }
            hmac_secret = tbool(ext, "hmac-secret")? == Some(true);
        }
        let rp_id_hash = store::sha256(rp_id.as_bytes());
        if let Some(exclude) = p.array(5)? {
            for d in exclude {
                let id = descriptor_id(d)?;
                if let Some(c) = self.find_credential(&rp_id_hash, id) {
                    if c.cred_protect == 3 && !uv {
                        continue;
                    }
                    up_status(up.user_presence())?;
                    return Err(Status::CREDENTIAL_EXCLUDED);
                }
            }
        }
        up_status(up.user_presence())?;
        self.user_presence_collected();
        if rk
            && self.remaining_resident() == 0
            && !self
                .st
                .residents
                .iter()
                .any(|r| r.rp_id == rp_id && r.user_id == user_id)
        {
            return Err(Status::KEY_STORE_FULL);
        }
        let (id, key) =
            store::new_credential(&self.st.master, &rp_id_hash, rk, hmac_secret, cred_protect)
                .map_err(|_| Status::OTHER)?;
        let mut blob_key = None;
        if rk {
            if large_blob_key {
                blob_key = Some(Zeroizing::new(
                    store::random::<32>().map_err(|_| Status::OTHER)?,
                ));
            }
            self.st
                .residents
                .retain(|r| !(r.rp_id == rp_id && r.user_id == user_id));
            let serial = self.st.next_serial;
            self.st.next_serial = self.st.next_serial.wrapping_add(1);
            self.st.residents.push(Resident {
                id: id.clone(),
                rp_id: rp_id.clone(),
                rp_name,
                user_id,
                user_name,
                display_name,
                cred_protect,
                large_blob_key: blob_key.clone(),
                serial,
            });
        }
        self.st.sign_count = self.st.sign_count.wrapping_add(1);
        let mut flags = FLAG_UP | FLAG_AT;
        if uv {
            flags |= FLAG_UV;
        }
        let mut ext_out = Vec::new();
        if cred_protect_asked {
            ext_out.push((text("credProtect"), cbor::int(i64::from(cred_protect))));
        }
        if hmac_secret {
            ext_out.push((text("hmac-secret"), Value::Bool(true)));
        }
        if !ext_out.is_empty() {
            flags |= FLAG_ED;
        }
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&self.st.sign_count.to_be_bytes());
        auth_data.extend_from_slice(&self.fixed.aaguid);
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cbor::encode(&key.cose_public().ok_or(Status::OTHER)?));
        if !ext_out.is_empty() {
            auth_data.extend_from_slice(&cbor::encode(&Value::Map(ext_out)));
        }
        let mut signed = auth_data.clone();
        signed.extend_from_slice(client_data_hash);
        let sig = key.sign(&signed).ok_or(Status::OTHER)?;
        let mut out = vec![
            (1, text("packed")),
            (2, Value::Bytes(auth_data)),
            (
                3,
                Value::Map(vec![
                    (text("alg"), cbor::int(-7)),
                    (text("sig"), Value::Bytes(sig)),
                ]),
            ),
        ];
        if let Some(k) = blob_key {
            out.push((5, Value::Bytes(k.to_vec())));
        }
        Ok(int_map(out))
    }

    /// A credential of ours for this RP: its key and, if discoverable, its table entry.
    fn find_credential(&self, rp_id_hash: &[u8; 32], id: &[u8]) -> Option<Found> {
        let opened = store::open_credential(&self.st.master, rp_id_hash, id)?;
        let resident = if opened.discoverable {
            Some(self.st.residents.iter().find(|r| r.id == id)?.clone())
        } else {
            None
        };
        Some(Found {
            id: id.to_vec(),
            cred_protect: opened.cred_protect,
            hmac_secret: opened.hmac_secret,
            key: opened.key,
            resident,
        })
    }

    // ---- getAssertion -----------------------------------------------------------------

    fn get_assertion(
        &mut self,
        p: P<'_>,
        up: &mut dyn UpSource,
        entry: &mut LoggedCommand,
    ) -> R<Value> {
        let v21 = self.fixed.ctap21;
        let auth = self.optional_auth(&p, 6, 7, up)?;
        let rp_id = need(p.text(1)?)?.to_owned();
        entry.rp_id = Some(rp_id.clone());
        let client_data_hash = need(p.bytes(2)?)?.to_vec();
        let allow = p.array(3)?.unwrap_or(&[]);
        let mut want_up = true;
        if let Some(options) = p.map(5)? {
            if tget(options, "rk").is_some() {
                return Err(Status::UNSUPPORTED_OPTION);
            }
            want_up = tbool(options, "up")?.unwrap_or(true);
            if tbool(options, "uv")? == Some(true) {
                return Err(Status::INVALID_OPTION);
            }
        }
        let mut ext = AssertionExt::default();
        if let (true, Some(extensions)) = (v21, p.map(4)?) {
            match tbool(extensions, "largeBlobKey")? {
                None => {}
                Some(true) => ext.large_blob_key = true,
                Some(false) => return Err(Status::INVALID_OPTION),
            }
            match tget(extensions, "hmac-secret") {
                None => {}
                Some(Value::Map(m)) => ext.hmac = Some(self.hmac_request(P(m))?),
                Some(_) => return Err(Status::CBOR_UNEXPECTED_TYPE),
            }
        }
        if auth.is_none() && self.st.always_uv {
            return Err(Status::PUAT_REQUIRED);
        }
        let uv =
            self.verify_optional_auth(auth, &client_data_hash, Permissions::GET_ASSERTION, &rp_id)?;
        let rp_id_hash = store::sha256(rp_id.as_bytes());
        let mut found: Vec<Found> = Vec::new();
        if allow.is_empty() {
            let mut residents: Vec<&Resident> = self
                .st
                .residents
                .iter()
                .filter(|r| r.rp_id == rp_id)
                .collect();
            residents.sort_by_key(|r| std::cmp::Reverse(r.serial));
            found.extend(
                residents
                    .iter()
                    .filter_map(|r| self.find_credential(&rp_id_hash, &r.id))
                    .filter(|c| c.cred_protect < 2 || uv),
            );
        } else {
            for d in allow {
                let id = descriptor_id(d)?;
                if let Some(c) = self.find_credential(&rp_id_hash, id) {
                    if c.cred_protect < 3 || uv {
                        found.push(c);
                        break;
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(Status::NO_CREDENTIALS);
        }
        let mut flags = 0;
        if want_up {
            up_status(up.user_presence())?;
            self.user_presence_collected();
            flags |= FLAG_UP;
        }
        if uv {
            flags |= FLAG_UV;
        }
        let total = found.len();
        let first = found.remove(0);
        let mut answer = self.assertion(&first, &rp_id_hash, &client_data_hash, flags, &ext)?;
        if allow.is_empty() && total > 1 {
            push_total(&mut answer, 5, total);
            self.continuation = Continuation::Assertions {
                rest: found.into_iter().map(|c| c.id).collect(),
                rp_id,
                client_data_hash,
                flags,
                ext,
                until: self.continuation_deadline(),
            };
        }
        Ok(answer)
    }

    fn assertion(
        &mut self,
        c: &Found,
        rp_id_hash: &[u8; 32],
        client_data_hash: &[u8],
        flags: u8,
        ext: &AssertionExt,
    ) -> R<Value> {
        let hmac_output = match &ext.hmac {
            Some(h) if c.hmac_secret => Some(self.hmac_output(h, &c.id, flags & FLAG_UV != 0)?),
            _ => None,
        };
        self.st.sign_count = self.st.sign_count.wrapping_add(1);
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(if hmac_output.is_some() {
            flags | FLAG_ED
        } else {
            flags
        });
        auth_data.extend_from_slice(&self.st.sign_count.to_be_bytes());
        if let Some(output) = hmac_output {
            auth_data.extend_from_slice(&cbor::encode(&Value::Map(vec![(
                text("hmac-secret"),
                Value::Bytes(output),
            )])));
        }
        let mut signed = auth_data.clone();
        signed.extend_from_slice(client_data_hash);
        let sig = c.key.sign(&signed).ok_or(Status::OTHER)?;
        let mut out = vec![
            (1, descriptor(&c.id)),
            (2, Value::Bytes(auth_data)),
            (3, Value::Bytes(sig)),
        ];
        if let Some(r) = &c.resident {
            out.push((4, user_entity(r, flags & FLAG_UV != 0)));
            if ext.large_blob_key {
                if let Some(k) = &r.large_blob_key {
                    out.push((7, Value::Bytes(k.to_vec())));
                }
            }
        }
        Ok(int_map(out))
    }

    /// Reads the hmac-secret input of a getAssertion (§12.5): keyAgreement, saltEnc, saltAuth
    /// and the PIN/UV auth protocol (one when absent).
    fn hmac_request(&self, m: P<'_>) -> R<HmacRequest> {
        let key = need(m.get(1))?;
        let salt_enc = need(m.bytes(2)?)?;
        let salt_auth = need(m.bytes(3)?)?;
        let protocol = self.protocol(Some(m.uint(4)?.unwrap_or(1)))?;
        let secret = self.shared_secret(protocol, key)?;
        if !protocol.verify(secret.as_bytes(), salt_enc, salt_auth) {
            return Err(Status::PIN_AUTH_INVALID);
        }
        let salts = protocol
            .decrypt(&secret, salt_enc)
            .map_err(|_| Status::INVALID_LENGTH)?;
        if salts.len() != 32 && salts.len() != 64 {
            return Err(Status::INVALID_LENGTH);
        }
        Ok(HmacRequest {
            protocol,
            secret,
            salts,
        })
    }

    /// The encrypted hmac-secret output for one credential.
    fn hmac_output(&self, h: &HmacRequest, id: &[u8], uv: bool) -> R<Vec<u8>> {
        let cred_random = store::cred_random(&self.st.master, id, uv);
        let mut outputs = Zeroizing::new(Vec::with_capacity(64));
        for salt in h.salts.chunks(32) {
            // HMAC-SHA-256(CredRandom, salt): protocol two's authenticate with a 32-byte key.
            outputs.extend_from_slice(&PinUvAuthProtocol::Two.authenticate(&cred_random[..], salt));
        }
        h.protocol
            .encrypt(&h.secret, &outputs)
            .map_err(|_| Status::OTHER)
    }

    fn get_next_assertion(&mut self, continuation: Continuation) -> R<Value> {
        let Continuation::Assertions {
            mut rest,
            rp_id,
            client_data_hash,
            flags,
            ext,
            until,
        } = continuation
        else {
            return Err(Status::NOT_ALLOWED);
        };
        if self.now() > until {
            return Err(Status::NOT_ALLOWED);
        }
        let rp_id_hash = store::sha256(rp_id.as_bytes());
        while let Some(id) = rest.pop_front() {
            let Some(c) = self.find_credential(&rp_id_hash, &id) else {
                continue;
            };
            let answer = self.assertion(&c, &rp_id_hash, &client_data_hash, flags, &ext)?;
            if !rest.is_empty() {
                self.continuation = Continuation::Assertions {
                    rest,
                    rp_id,
                    client_data_hash,
                    flags,
                    ext,
                    until,
                };
            }
            return Ok(answer);
        }
        Err(Status::NOT_ALLOWED)
    }

    // ---- credentialManagement ---------------------------------------------------------

    fn cred_mgmt(
        &mut self,
        p: P<'_>,
        entry: &mut LoggedCommand,
        continuation: Continuation,
    ) -> R<Option<Value>> {
        use ctap::cred_mgmt as cm;
        let sub = p.sub_command(1)?;
        entry.sub_command = Some(sub);
        let params = p.map(2)?;
        match sub {
            cm::ENUMERATE_RPS_NEXT => return self.next_rp(continuation).map(Some),
            cm::ENUMERATE_CREDENTIALS_NEXT => return self.next_cred(continuation).map(Some),
            cm::GET_CREDS_METADATA
            | cm::ENUMERATE_RPS_BEGIN
            | cm::ENUMERATE_CREDENTIALS_BEGIN
            | cm::DELETE_CREDENTIAL
            | cm::UPDATE_USER_INFORMATION => {}
            _ => return Err(Status::INVALID_SUBCOMMAND),
        }
        let mut message = vec![sub];
        if let Some(v) = p.get(2) {
            message.extend_from_slice(&cbor::encode(v));
        }
        self.required_auth(&p, 4, 3, &message, Permissions::CREDENTIAL_MANAGEMENT)?;
        let params = P(params.unwrap_or(&[]));
        match sub {
            cm::GET_CREDS_METADATA => {
                self.token_without_rp()?;
                Ok(Some(int_map(vec![
                    (1, cbor::int(self.st.residents.len() as i64)),
                    (2, cbor::int(self.remaining_resident() as i64)),
                ])))
            }
            cm::ENUMERATE_RPS_BEGIN => {
                self.token_without_rp()?;
                let mut rps: Vec<String> = Vec::new();
                for r in &self.st.residents {
                    if !rps.contains(&r.rp_id) {
                        rps.push(r.rp_id.clone());
                    }
                }
                let total = rps.len();
                let until = self.continuation_deadline();
                let mut answer = self.enumeration_step(
                    rps.into(),
                    until,
                    Status::NO_CREDENTIALS,
                    |e, rp| Ok(e.rp_entry(rp)),
                    |rest, until| Continuation::Rps { rest, until },
                )?;
                push_total(&mut answer, 5, total);
                Ok(Some(answer))
            }
            cm::ENUMERATE_CREDENTIALS_BEGIN => {
                let hash = need(params.bytes(1)?)?;
                self.token_rp_matches(hash)?;
                let mut creds: Vec<&Resident> = self
                    .st
                    .residents
                    .iter()
                    .filter(|r| store::sha256(r.rp_id.as_bytes()) == hash)
                    .collect();
                creds.sort_by_key(|r| r.serial);
                let total = creds.len();
                let ids: VecDeque<Vec<u8>> = creds.iter().map(|r| r.id.clone()).collect();
                let until = self.continuation_deadline();
                let mut answer = self.enumeration_step(
                    ids,
                    until,
                    Status::NO_CREDENTIALS,
                    |e, id| e.cred_entry(id),
                    |rest, until| Continuation::Creds { rest, until },
                )?;
                push_total(&mut answer, 9, total);
                Ok(Some(answer))
            }
            cm::DELETE_CREDENTIAL => {
                let id = descriptor_id(need(params.get(2))?)?;
                let index = self.resident_for_token(id)?;
                self.st.residents.remove(index);
                Ok(None)
            }
            _ => {
                // updateUserInformation
                let id = descriptor_id(need(params.get(2))?)?;
                let user = as_map(need(params.get(3))?)?;
                let user_id = need(tbytes(user, "id")?)?;
                let name = ttext(user, "name")?.map(str::to_owned);
                let display_name = ttext(user, "displayName")?.map(str::to_owned);
                let index = self.resident_for_token(id)?;
                let r = &mut self.st.residents[index];
                if r.user_id != user_id {
                    return Err(Status::INVALID_PARAMETER);
                }
                r.user_name = name;
                r.display_name = display_name;
                Ok(None)
            }
        }
    }

    /// The index of the discoverable credential `id` (NO_CREDENTIALS when there is none),
    /// whose RP must be the token's, if the token has one.
    fn resident_for_token(&self, id: &[u8]) -> R<usize> {
        let index = self
            .st
            .residents
            .iter()
            .position(|r| r.id == id)
            .ok_or(Status::NO_CREDENTIALS)?;
        let rp = store::sha256(self.st.residents[index].rp_id.as_bytes());
        self.token_rp_matches(&rp)?;
        Ok(index)
    }

    /// The answer `entry` makes for the first of `rest` (`none` when it is empty); the others
    /// wait for the next subcommand, until `until`, as the continuation `keep` makes of them.
    fn enumeration_step<T>(
        &mut self,
        mut rest: VecDeque<T>,
        until: Instant,
        none: Status,
        entry: fn(&Self, &T) -> R<Value>,
        keep: fn(VecDeque<T>, Instant) -> Continuation,
    ) -> R<Value> {
        let first = rest.pop_front().ok_or(none)?;
        let answer = entry(self, &first)?;
        if !rest.is_empty() {
            self.continuation = keep(rest, until);
        }
        Ok(answer)
    }

    /// An enumeration's next subcommand: [`Inner::enumeration_step`] on what is left, and
    /// NOT_ALLOWED once it has expired or nothing is left.
    fn enumeration_next<T>(
        &mut self,
        rest: VecDeque<T>,
        until: Instant,
        entry: fn(&Self, &T) -> R<Value>,
        keep: fn(VecDeque<T>, Instant) -> Continuation,
    ) -> R<Value> {
        if self.now() > until {
            return Err(Status::NOT_ALLOWED);
        }
        self.enumeration_step(rest, until, Status::NOT_ALLOWED, entry, keep)
    }

    fn rp_entry(&self, rp_id: &str) -> Value {
        let mut rp = vec![(text("id"), text(rp_id))];
        if let Some(name) = self
            .st
            .residents
            .iter()
            .filter(|r| r.rp_id == rp_id)
            .find_map(|r| r.rp_name.clone())
        {
            rp.push((text("name"), text(&name)));
        }
        int_map(vec![
            (3, Value::Map(rp)),
            (4, Value::Bytes(store::sha256(rp_id.as_bytes()).to_vec())),
        ])
    }

    fn cred_entry(&self, id: &[u8]) -> R<Value> {
        let r = self
            .st
            .residents
            .iter()
            .find(|r| r.id == id)
            .ok_or(Status::NO_CREDENTIALS)?;
        let found = self
            .find_credential(&store::sha256(r.rp_id.as_bytes()), id)
            .ok_or(Status::OTHER)?;
        let mut out = vec![
            (6, user_entity(r, true)),
            (7, descriptor(id)),
            (8, found.key.cose_public().ok_or(Status::OTHER)?),
            (0x0A, cbor::int(i64::from(r.cred_protect))),
        ];
        if let Some(k) = &r.large_blob_key {
            out.push((0x0B, Value::Bytes(k.to_vec())));
        }
        Ok(int_map(out))
    }

    fn next_rp(&mut self, continuation: Continuation) -> R<Value> {
        let Continuation::Rps { rest, until } = continuation else {
            return Err(Status::NOT_ALLOWED);
        };
        self.enumeration_next(
            rest,
            until,
            |e, rp| Ok(e.rp_entry(rp)),
            |rest, until| Continuation::Rps { rest, until },
        )
    }

    fn next_cred(&mut self, continuation: Continuation) -> R<Value> {
        let Continuation::Creds { rest, until } = continuation else {
            return Err(Status::NOT_ALLOWED);
        };
        self.enumeration_next(
            rest,
            until,
            |e, id| e.cred_entry(id),
            |rest, until| Continuation::Creds { rest, until },
        )
    }

    // ---- largeBlobs -------------------------------------------------------------------

    fn large_blobs(&mut self, p: P<'_>) -> R<Option<Value>> {
        let get = p.uint(1)?;
        let set = p.bytes(2)?;
        let offset = p.uint(3)?;
        let length = p.uint(4)?;
        let (Some(offset), true) = (offset, get.is_some() != set.is_some()) else {
            return Err(Status::INVALID_PARAMETER);
        };
        let offset = usize::try_from(offset).map_err(|_| Status::INVALID_PARAMETER)?;
        if let Some(get) = get {
            if length.is_some() {
                return Err(Status::INVALID_PARAMETER);
            }
            let get = usize::try_from(get).map_err(|_| Status::INVALID_LENGTH)?;
            if get > MAX_FRAGMENT {
                return Err(Status::INVALID_LENGTH);
            }
            let blob = &self.st.large_blob;
            if offset > blob.len() {
                return Err(Status::INVALID_PARAMETER);
            }
            let end = offset.saturating_add(get).min(blob.len());
            return Ok(Some(int_map(vec![(
                1,
                Value::Bytes(blob[offset..end].to_vec()),
            )])));
        }
        let set = set.unwrap_or(&[]);
        if set.len() > MAX_FRAGMENT {
            return Err(Status::INVALID_LENGTH);
        }
        if offset == 0 {
            let length = need(length)
                .map_err(|_| Status::INVALID_PARAMETER)
                .and_then(|l| usize::try_from(l).map_err(|_| Status::LARGE_BLOB_STORAGE_FULL))?;
            if length > MAX_LARGE_BLOB {
                return Err(Status::LARGE_BLOB_STORAGE_FULL);
            }
            if length < 17 {
                return Err(Status::INVALID_PARAMETER);
            }
            self.blob_write = Some(BlobWrite {
                expected_len: length,
                buf: Vec::new(),
            });
        } else if length.is_some() {
            return Err(Status::INVALID_PARAMETER);
        }
        let Some(expected_next) = self.blob_write.as_ref().map(|w| w.buf.len()) else {
            return Err(Status::INVALID_SEQ);
        };
        if offset != expected_next {
            return Err(Status::INVALID_SEQ);
        }
        if self.pin_is_set() || self.st.always_uv {
            let mut message = vec![0xFF; 32];
            message.extend_from_slice(&[ctap::CMD_LARGE_BLOBS, 0x00]);
            message.extend_from_slice(&(offset as u32).to_le_bytes());
            message.extend_from_slice(&store::sha256(set));
            self.required_auth(&p, 5, 6, &message, Permissions::LARGE_BLOB_WRITE)?;
        }
        let Some(w) = self.blob_write.as_mut() else {
            return Err(Status::INVALID_SEQ);
        };
        if offset + set.len() > w.expected_len {
            return Err(Status::INVALID_PARAMETER);
        }
        w.buf.extend_from_slice(set);
        if w.buf.len() == w.expected_len {
            let (data, trailer) = w.buf.split_at(w.expected_len - 16);
            let ok = store::sha256(data)[..16] == *trailer;
            let buf = std::mem::take(&mut w.buf);
            self.blob_write = None;
            if !ok {
                return Err(Status::INTEGRITY_FAILURE);
            }
            self.st.large_blob = buf;
        }
        Ok(None)
    }

    // ---- authenticatorConfig ----------------------------------------------------------

    fn config(&mut self, p: P<'_>, entry: &mut LoggedCommand) -> R<()> {
        use ctap::config as cfg;
        let sub = p.sub_command(1)?;
        entry.sub_command = Some(sub);
        let params = p.map(2)?;
        if sub != cfg::TOGGLE_ALWAYS_UV && sub != cfg::SET_MIN_PIN_LENGTH {
            // No enterprise attestation, no vendor prototype commands.
            return Err(Status::INVALID_SUBCOMMAND);
        }
        if self.pin_is_set() || self.st.always_uv {
            let mut message = vec![0xFF; 32];
            message.extend_from_slice(&[ctap::CMD_CONFIG, sub]);
            if let Some(v) = p.get(2) {
                message.extend_from_slice(&cbor::encode(v));
            }
            self.required_auth(&p, 4, 3, &message, Permissions::AUTHENTICATOR_CONFIG)?;
        }
        match sub {
            cfg::TOGGLE_ALWAYS_UV => {
                self.st.always_uv = !self.st.always_uv;
                Ok(())
            }
            cfg::SET_MIN_PIN_LENGTH => {
                let params = P(params.unwrap_or(&[]));
                let new_min = params.uint(1)?;
                let rp_ids = params.array(2)?;
                let force = params.boolean(3)?.unwrap_or(false);
                if rp_ids.is_some_and(|a| !a.is_empty()) {
                    // maxRPIDsForSetMinPINLength is 0.
                    return Err(Status::PIN_POLICY_VIOLATION);
                }
                let new_min = match new_min {
                    Some(n) => u8::try_from(n).map_err(|_| Status::PIN_POLICY_VIOLATION)?,
                    None => self.st.min_pin_length,
                };
                if new_min < self.st.min_pin_length || usize::from(new_min) > 63 {
                    return Err(Status::PIN_POLICY_VIOLATION);
                }
                if force && !self.pin_is_set() {
                    return Err(Status::PIN_NOT_SET);
                }
                self.st.min_pin_length = new_min;
                if force
                    || self
                        .st
                        .pin
                        .as_ref()
                        .is_some_and(|pin| pin.code_points < new_min)
                {
                    self.st.force_pin_change = true;
                }
                Ok(())
            }
            _ => Err(Status::INVALID_SUBCOMMAND),
        }
    }

    // ---- reset ------------------------------------------------------------------------

    fn reset(&mut self, up: &mut dyn UpSource) -> R<()> {
        if let Some(window) = self.fixed.reset_window {
            if self.now().saturating_duration_since(self.power_on_at) > window {
                return Err(Status::NOT_ALLOWED);
            }
        }
        up_status(up.user_presence())?;
        self.st = Persistent::fresh().map_err(|_| Status::OTHER)?;
        self.token = None;
        self.consecutive_pin_failures = 0;
        self.blob_write = None;
        if let Ok(k) = KeyAgreementKey::generate() {
            self.key_agreement = k;
        }
        Ok(())
    }
}

/// A located credential.
struct Found {
    id: Vec<u8>,
    cred_protect: u8,
    hmac_secret: bool,
    key: store::CredKey,
    resident: Option<Resident>,
}
