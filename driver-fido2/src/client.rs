//! The CTAP2 client: typed requests and answers for every CTAP 2.1 command, over any
//! [`CtapChannel`] (CTAPHID, or NFC/CCID through [`crate::apdu::ApduCtapChannel`]).
//!
//! [`Ctap2`] is the low level: one method per command or subcommand, each taking the
//! pinUvAuthToken to authenticate with when the command needs one ([`PinUvAuthToken`]). It
//! holds no token and never asks for a PIN; [`crate::session::Fido2Session`] adds the
//! automatic AuthToken logic on top.
//!
//! Every answer from the authenticator goes through [`cbor::decode`] and typed, total parsers:
//! arbitrary bytes give [`ErrorCode::CorruptedData`], never a panic. A CTAP status other than
//! CTAP2_OK becomes an [`Error`] carrying [`Underlying::Ctap`] (see [`ctap_error`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use token_core::{CtapChannel, Error, ErrorCode, KeyType, Pin, PublicKey, Result, Underlying};
use zeroize::Zeroizing;

use crate::cbor::{self, int_map, Value};
use crate::ctap::{self, client_pin, cred_mgmt, info as info_key, Permissions, Status};
use crate::pin_protocol::{self, CoseKey, PinUvAuthProtocol, SharedSecret};

/// The CTAPHID command that carries CTAP2 CBOR messages (CTAPHID_CBOR, 0x10 with the high bit).
pub const CTAPHID_CBOR: u8 = 0x90;

/// The most credentials, RPs or assertions an enumeration follows, so that an authenticator
/// announcing 2^64 of them cannot keep the client looping.
pub const MAX_ENUMERATION: u64 = 1024;

/// The largest large-blob array this client reads or writes (1 MiB), whatever the
/// authenticator announces.
pub const MAX_LARGE_BLOB_ARRAY: usize = 1 << 20;

/// The [`Error`] a CTAP status code means, with the code kept as [`Underlying::Ctap`].
///
/// PIN_INVALID is `AuthenticationFailed` (the caller adds the tries left when it knows them);
/// PIN_BLOCKED and PIN_AUTH_BLOCKED are `AuthenticationFailed` with no tries left (blocked);
/// PIN_AUTH_INVALID and PUAT_REQUIRED are `AuthenticationNeeded`; KEEPALIVE_CANCEL,
/// OPERATION_DENIED and the user-action timeouts are `CanceledByUser`; NO_CREDENTIALS and
/// INVALID_CREDENTIAL are `ObjectNotFound`; unknown commands, subcommands, options and
/// algorithms are `NotImplemented`; malformed or refused parameters are `BadParameter`;
/// INTEGRITY_FAILURE is `CorruptedData`; anything else `CommunicationError`.
pub fn ctap_error(status: u8) -> Error {
    let s = Status(status);
    let (code, retries, context): (ErrorCode, Option<u8>, &'static str) = match s {
        Status::PIN_INVALID => (ErrorCode::AuthenticationFailed, None, "wrong PIN"),
        Status::PIN_BLOCKED => (ErrorCode::AuthenticationFailed, Some(0), "PIN blocked"),
        Status::PIN_AUTH_BLOCKED => (
            ErrorCode::AuthenticationFailed,
            Some(0),
            "PIN blocked until the authenticator is power-cycled (too many wrong PINs in a row)",
        ),
        Status::UV_BLOCKED => (
            ErrorCode::AuthenticationFailed,
            Some(0),
            "built-in user verification blocked",
        ),
        Status::UV_INVALID => (
            ErrorCode::AuthenticationFailed,
            None,
            "user verification failed",
        ),
        Status::PIN_AUTH_INVALID => (
            ErrorCode::AuthenticationNeeded,
            None,
            "the pinUvAuthToken was refused (expired, replaced, or without the permission)",
        ),
        Status::PUAT_REQUIRED => (
            ErrorCode::AuthenticationNeeded,
            None,
            "the authenticator needs a pinUvAuthToken for this",
        ),
        Status::PIN_NOT_SET => (ErrorCode::BadParameter, None, "no PIN is set"),
        Status::PIN_POLICY_VIOLATION => (
            ErrorCode::BadParameter,
            None,
            "the PIN does not meet the authenticator's policy",
        ),
        Status::KEEPALIVE_CANCEL => (ErrorCode::CanceledByUser, None, "canceled"),
        Status::OPERATION_DENIED => (ErrorCode::CanceledByUser, None, "the user denied it"),
        Status::USER_ACTION_TIMEOUT | Status::ACTION_TIMEOUT => (
            ErrorCode::CanceledByUser,
            None,
            "the user did not touch the authenticator in time",
        ),
        Status::NO_CREDENTIALS => (ErrorCode::ObjectNotFound, None, "no such credential"),
        Status::INVALID_CREDENTIAL => (ErrorCode::ObjectNotFound, None, "invalid credential"),
        Status::INVALID_COMMAND
        | Status::INVALID_SUBCOMMAND
        | Status::UNSUPPORTED_OPTION
        | Status::UNSUPPORTED_ALGORITHM
        | Status::UNAUTHORIZED_PERMISSION => (
            ErrorCode::NotImplemented,
            None,
            "the authenticator does not support this",
        ),
        Status::INVALID_PARAMETER
        | Status::INVALID_LENGTH
        | Status::CBOR_UNEXPECTED_TYPE
        | Status::INVALID_CBOR
        | Status::MISSING_PARAMETER
        | Status::LIMIT_EXCEEDED
        | Status::INVALID_OPTION
        | Status::REQUEST_TOO_LARGE
        | Status::CREDENTIAL_EXCLUDED
        | Status::KEY_STORE_FULL
        | Status::LARGE_BLOB_STORAGE_FULL
        | Status::NOT_ALLOWED
        | Status::UP_REQUIRED => (
            ErrorCode::BadParameter,
            None,
            "the authenticator refused the request",
        ),
        Status::INTEGRITY_FAILURE => (
            ErrorCode::CorruptedData,
            None,
            "large-blob integrity check failed",
        ),
        _ => (
            ErrorCode::CommunicationError,
            None,
            "the authenticator reported an error",
        ),
    };
    Error::with_code(code, context)
        .with_underlying(Underlying::Ctap(status))
        .with_retries(retries)
}

/// The CTAP status code under an error, if an authenticator answered one.
pub fn ctap_status(error: &Error) -> Option<Status> {
    match error.underlying() {
        Underlying::Ctap(c) => Some(Status(*c)),
        _ => None,
    }
}

fn corrupted(what: &'static str) -> Error {
    Error::corrupted(what)
}

fn text_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_text().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// What authenticatorGetInfo says about the authenticator (CTAP 2.1 §6.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// Versions: `FIDO_2_0`, `FIDO_2_1_PRE`, `FIDO_2_1`, `U2F_V2`.
    pub versions: Vec<String>,
    /// Extensions (`credProtect`, `hmac-secret`, `largeBlobKey`, ...).
    pub extensions: Vec<String>,
    /// The model's AAGUID.
    pub aaguid: [u8; 16],
    /// Options (`rk`, `up`, `uv`, `clientPin`, `pinUvAuthToken`, `credMgmt`, ...).
    pub options: BTreeMap<String, bool>,
    /// The largest message the authenticator takes, in bytes (1024 when it does not say).
    pub max_msg_size: Option<u64>,
    /// PIN/UV auth protocols, in the authenticator's order of preference.
    pub pin_uv_auth_protocols: Vec<u64>,
    /// The most credentials an allow or exclude list may hold.
    pub max_credential_count_in_list: Option<u64>,
    /// The longest credential ID.
    pub max_credential_id_length: Option<u64>,
    /// Transports (`usb`, `nfc`, ...).
    pub transports: Vec<String>,
    /// COSE algorithms supported for new credentials.
    pub algorithms: Vec<i64>,
    /// The largest serialized large-blob array.
    pub max_serialized_large_blob_array: Option<u64>,
    /// The PIN must be changed before it can be used.
    pub force_pin_change: bool,
    /// The current minimum PIN length.
    pub min_pin_length: Option<u64>,
    /// The firmware version.
    pub firmware_version: Option<u64>,
    /// How many more discoverable credentials fit.
    pub remaining_discoverable_credentials: Option<u64>,
}

impl Info {
    /// Parses a getInfo answer.
    ///
    /// # Errors
    /// `CorruptedData` when it is not a map or lacks versions or the AAGUID.
    pub fn parse(value: &Value) -> Result<Self> {
        let map = cbor::as_map(value)?;
        let versions = text_list(cbor::get(map, info_key::VERSIONS));
        if versions.is_empty() {
            return Err(corrupted("getInfo without versions"));
        }
        let aaguid = cbor::bytes(map, info_key::AAGUID)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| corrupted("getInfo without a 16-byte AAGUID"))?;
        let mut options = BTreeMap::new();
        if let Some(Value::Map(entries)) = cbor::get(map, info_key::OPTIONS) {
            for (k, v) in entries {
                if let (Value::Text(k), Value::Bool(v)) = (k, v) {
                    options.insert(k.clone(), *v);
                }
            }
        }
        let pin_uv_auth_protocols = cbor::array(map, info_key::PIN_UV_AUTH_PROTOCOLS)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| match v {
                Value::Integer(i) => u64::try_from(*i).ok(),
                _ => None,
            })
            .collect();
        let algorithms = cbor::array(map, info_key::ALGORITHMS)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| {
                let m = cbor::as_map(v).ok()?;
                match cbor::get_text_key(m, "alg")? {
                    Value::Integer(i) => i64::try_from(*i).ok(),
                    _ => None,
                }
            })
            .collect();
        Ok(Self {
            versions,
            extensions: text_list(cbor::get(map, info_key::EXTENSIONS)),
            aaguid,
            options,
            max_msg_size: cbor::uint(map, info_key::MAX_MSG_SIZE),
            pin_uv_auth_protocols,
            max_credential_count_in_list: cbor::uint(map, info_key::MAX_CREDENTIAL_COUNT_IN_LIST),
            max_credential_id_length: cbor::uint(map, info_key::MAX_CREDENTIAL_ID_LENGTH),
            transports: text_list(cbor::get(map, info_key::TRANSPORTS)),
            algorithms,
            max_serialized_large_blob_array: cbor::uint(
                map,
                info_key::MAX_SERIALIZED_LARGE_BLOB_ARRAY,
            ),
            force_pin_change: cbor::boolean(map, info_key::FORCE_PIN_CHANGE).unwrap_or(false),
            min_pin_length: cbor::uint(map, info_key::MIN_PIN_LENGTH),
            firmware_version: cbor::uint(map, info_key::FIRMWARE_VERSION),
            remaining_discoverable_credentials: cbor::uint(
                map,
                info_key::REMAINING_DISCOVERABLE_CREDENTIALS,
            ),
        })
    }

    /// An option's value, `None` when the authenticator does not list it.
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options.get(name).copied()
    }

    /// True for a CTAP 2.1 authenticator that issues pinUvAuthTokens with permissions (the
    /// `pinUvAuthToken` option); false for CTAP 2.0, which only has getPinToken.
    pub fn has_permissions(&self) -> bool {
        self.option("pinUvAuthToken") == Some(true)
    }

    /// True when a PIN is set (`clientPin` is true).
    pub fn pin_is_set(&self) -> bool {
        self.option("clientPin") == Some(true)
    }

    /// The PIN/UV auth protocol to use: two where the authenticator lists it, else one.
    /// `None` when it lists neither (and has no clientPin option at all).
    pub fn pin_protocol(&self) -> Option<PinUvAuthProtocol> {
        if self.pin_uv_auth_protocols.contains(&2) {
            Some(PinUvAuthProtocol::Two)
        } else if self.pin_uv_auth_protocols.contains(&1)
            || (self.pin_uv_auth_protocols.is_empty() && self.option("clientPin").is_some())
        {
            Some(PinUvAuthProtocol::One)
        } else {
            None
        }
    }

    /// The credentialManagement command byte: 0x0A (`credMgmt`), 0x41 for CTAP 2.1-PRE
    /// devices (`credentialMgmtPreview`), `None` when neither is offered.
    pub fn credential_management_command(&self) -> Option<u8> {
        if self.option("credMgmt") == Some(true) {
            Some(ctap::CMD_CREDENTIAL_MANAGEMENT)
        } else if self.option("credentialMgmtPreview") == Some(true) {
            Some(ctap::CMD_CREDENTIAL_MANAGEMENT_PRE)
        } else {
            None
        }
    }

    /// The largest message to send: what the authenticator says, 1024 when it does not
    /// (§6.4), and never more than a CTAPHID message carries (7609 bytes).
    pub fn max_msg_size(&self) -> usize {
        self.max_msg_size
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1024)
            .clamp(1024, 7609)
    }
}

/// A pinUvAuthToken (or CTAP 2.0 PinToken) with the protocol it was obtained with. Zeroized on
/// drop; its `Debug` hides the bytes.
#[derive(Clone)]
pub struct PinUvAuthToken {
    protocol: PinUvAuthProtocol,
    token: Zeroizing<Vec<u8>>,
}

impl PinUvAuthToken {
    /// Wraps a decrypted token.
    pub fn new(protocol: PinUvAuthProtocol, token: Zeroizing<Vec<u8>>) -> Self {
        Self { protocol, token }
    }

    /// The protocol.
    pub fn protocol(&self) -> PinUvAuthProtocol {
        self.protocol
    }

    /// The pinUvAuthParam over `message`.
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        self.protocol.authenticate(&self.token, message)
    }

    /// The token's bytes. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.token
    }
}

impl fmt::Debug for PinUvAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinUvAuthToken({}, ***)", self.protocol.number())
    }
}

/// A relying party (`PublicKeyCredentialRpEntity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelyingParty {
    /// The RP ID (a domain).
    pub id: String,
    /// A human name.
    pub name: Option<String>,
}

impl RelyingParty {
    fn to_value(&self) -> Value {
        let mut m = vec![(Value::Text("id".into()), Value::Text(self.id.clone()))];
        if let Some(n) = &self.name {
            m.push((Value::Text("name".into()), Value::Text(n.clone())));
        }
        Value::Map(m)
    }

    fn parse(value: &Value) -> Result<Self> {
        let m = cbor::as_map(value)?;
        let id = match cbor::get_text_key(m, "id") {
            Some(Value::Text(t)) => t.clone(),
            _ => return Err(corrupted("RP entity without an id")),
        };
        let name = match cbor::get_text_key(m, "name") {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        Ok(Self { id, name })
    }
}

/// A user account (`PublicKeyCredentialUserEntity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The user handle (at most 64 bytes).
    pub id: Vec<u8>,
    /// The account name.
    pub name: Option<String>,
    /// The display name.
    pub display_name: Option<String>,
}

impl User {
    /// The CBOR map CTAP carries.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::Text("id".into()), Value::Bytes(self.id.clone()))];
        if let Some(n) = &self.name {
            m.push((Value::Text("name".into()), Value::Text(n.clone())));
        }
        if let Some(n) = &self.display_name {
            m.push((Value::Text("displayName".into()), Value::Text(n.clone())));
        }
        Value::Map(m)
    }

    fn parse(value: &Value) -> Result<Self> {
        let m = cbor::as_map(value)?;
        let id = match cbor::get_text_key(m, "id") {
            Some(Value::Bytes(b)) => b.clone(),
            _ => return Err(corrupted("user entity without an id")),
        };
        let text = |k| match cbor::get_text_key(m, k) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        Ok(Self {
            id,
            name: text("name"),
            display_name: text("displayName"),
        })
    }
}

fn credential_descriptor(id: &[u8]) -> Value {
    Value::Map(vec![
        (Value::Text("id".into()), Value::Bytes(id.to_vec())),
        (Value::Text("type".into()), Value::Text("public-key".into())),
    ])
}

fn credential_id_of(value: &Value) -> Result<Vec<u8>> {
    let m = cbor::as_map(value)?;
    match cbor::get_text_key(m, "id") {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        _ => Err(corrupted("credential descriptor without an id")),
    }
}

/// A credential public key as COSE carries it, and what tokenkit makes of it.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialPublicKey {
    /// The COSE algorithm (-7 ES256, -8 EdDSA, ...).
    pub algorithm: Option<i64>,
    /// The key as a tokenkit public key, for the algorithms tokenkit knows (P-256, Ed25519).
    pub public_key: Option<PublicKey>,
    /// The COSE_Key map.
    pub cose: Value,
}

impl CredentialPublicKey {
    /// Reads a COSE_Key (EC2 P-256 or OKP Ed25519 give a [`PublicKey`]; other keys are kept
    /// only as COSE).
    ///
    /// # Errors
    /// `CorruptedData` when it is not a map.
    pub fn parse(value: &Value) -> Result<Self> {
        let m = cbor::as_map(value)?;
        let kty = cbor::integer(m, 1);
        let algorithm = cbor::integer(m, 3);
        let crv = cbor::integer(m, -1);
        let x = cbor::bytes(m, -2);
        let public_key = match (kty, crv, x, cbor::bytes(m, -3)) {
            (Some(2), Some(1), Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                let mut raw = Vec::with_capacity(65);
                raw.push(0x04);
                raw.extend_from_slice(x);
                raw.extend_from_slice(y);
                Some(PublicKey {
                    key_type: KeyType::EcP256,
                    raw,
                })
            }
            (Some(1), Some(6), Some(x), _) if x.len() == 32 => Some(PublicKey {
                key_type: KeyType::Ed25519,
                raw: x.to_vec(),
            }),
            _ => None,
        };
        Ok(Self {
            algorithm,
            public_key,
            cose: value.clone(),
        })
    }
}

/// Authenticator data (WebAuthn §6.1), as makeCredential and getAssertion return it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthenticatorData {
    /// SHA-256 of the RP ID.
    pub rp_id_hash: [u8; 32],
    /// Flags: UP 0x01, UV 0x04, AT 0x40, ED 0x80.
    pub flags: u8,
    /// The signature counter.
    pub sign_count: u32,
    /// With AT set: the AAGUID, the credential ID and its public key.
    pub attested_credential: Option<(Vec<u8>, Vec<u8>, CredentialPublicKey)>,
}

impl AuthenticatorData {
    /// User present.
    pub const UP: u8 = 0x01;
    /// User verified.
    pub const UV: u8 = 0x04;
    /// Attested credential data included.
    pub const AT: u8 = 0x40;

    /// Parses authenticator data.
    ///
    /// # Errors
    /// `CorruptedData` when it is shorter than its fields say.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let short = || corrupted("authenticator data too short");
        let rp_id_hash: [u8; 32] = bytes
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(short)?;
        let flags = *bytes.get(32).ok_or_else(short)?;
        let count: [u8; 4] = bytes
            .get(33..37)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(short)?;
        let attested_credential = if flags & Self::AT != 0 {
            let aaguid = bytes.get(37..53).ok_or_else(short)?.to_vec();
            let len_bytes = bytes.get(53..55).ok_or_else(short)?;
            let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            let id = bytes.get(55..55 + len).ok_or_else(short)?.to_vec();
            let rest = bytes.get(55 + len..).ok_or_else(short)?;
            let (key, _) = cbor::decode_prefix(rest)?;
            Some((aaguid, id, CredentialPublicKey::parse(&key)?))
        } else {
            None
        };
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count: u32::from_be_bytes(count),
            attested_credential,
        })
    }
}

/// The parameters of authenticatorMakeCredential.
#[derive(Clone, Debug, Default)]
pub struct MakeCredentialRequest {
    /// The hash of the client data (32 bytes).
    pub client_data_hash: Vec<u8>,
    /// The relying party.
    pub rp: RelyingParty,
    /// The user account.
    pub user: User,
    /// COSE algorithms acceptable, in order of preference (ES256 -7 when empty).
    pub algorithms: Vec<i64>,
    /// Credential IDs that must not be on the authenticator already.
    pub exclude_list: Vec<Vec<u8>>,
    /// Extensions, as a CBOR map keyed by extension identifier.
    pub extensions: Option<Value>,
    /// Make a discoverable (resident) credential.
    pub resident_key: bool,
    /// The `uv` option (CTAP 2.0 built-in UV), normally absent.
    pub user_verification: Option<bool>,
}

/// What authenticatorMakeCredential answers.
#[derive(Clone, Debug, PartialEq)]
pub struct MakeCredentialResponse {
    /// The attestation statement format (`packed`, `none`, ...).
    pub fmt: String,
    /// The raw authenticator data (what the attestation signature covers, with the client
    /// data hash).
    pub auth_data: Vec<u8>,
    /// The parsed authenticator data.
    pub parsed: AuthenticatorData,
    /// The attestation statement.
    pub att_stmt: Value,
}

impl MakeCredentialResponse {
    /// The new credential's ID.
    pub fn credential_id(&self) -> Option<&[u8]> {
        self.parsed
            .attested_credential
            .as_ref()
            .map(|(_, id, _)| id.as_slice())
    }

    /// The new credential's public key.
    pub fn public_key(&self) -> Option<&CredentialPublicKey> {
        self.parsed.attested_credential.as_ref().map(|(_, _, k)| k)
    }

    fn parse(value: &Value) -> Result<Self> {
        let m = cbor::as_map(value)?;
        let fmt = cbor::text(m, 1)
            .ok_or_else(|| corrupted("makeCredential without fmt"))?
            .to_owned();
        let auth_data = cbor::bytes(m, 2)
            .ok_or_else(|| corrupted("makeCredential without authData"))?
            .to_vec();
        let parsed = AuthenticatorData::parse(&auth_data)?;
        if parsed.attested_credential.is_none() {
            return Err(corrupted("makeCredential without attested credential data"));
        }
        Ok(Self {
            fmt,
            auth_data,
            parsed,
            att_stmt: cbor::get(m, 3).cloned().unwrap_or(Value::Map(Vec::new())),
        })
    }
}

/// The parameters of authenticatorGetAssertion.
#[derive(Clone, Debug, Default)]
pub struct GetAssertionRequest {
    /// The RP ID.
    pub rp_id: String,
    /// The hash of the client data (32 bytes): what the signature covers after authData.
    pub client_data_hash: Vec<u8>,
    /// The credentials that may answer; empty for discoverable credentials.
    pub allow_list: Vec<Vec<u8>>,
    /// Extensions.
    pub extensions: Option<Value>,
    /// The `up` option; `None` leaves the default (true).
    pub user_presence: Option<bool>,
}

/// One assertion.
#[derive(Clone, Debug, PartialEq)]
pub struct Assertion {
    /// The credential that signed (absent when the allow list held exactly one).
    pub credential_id: Option<Vec<u8>>,
    /// The raw authenticator data: the signature covers `auth_data ‖ client_data_hash`.
    pub auth_data: Vec<u8>,
    /// The signature (DER ECDSA for ES256, 64 bytes for EdDSA).
    pub signature: Vec<u8>,
    /// The user, for discoverable credentials.
    pub user: Option<User>,
    /// How many credentials matched (first assertion only).
    pub number_of_credentials: Option<u64>,
    /// The largeBlobKey extension's output.
    pub large_blob_key: Option<Vec<u8>>,
}

impl Assertion {
    fn parse(value: &Value) -> Result<Self> {
        let m = cbor::as_map(value)?;
        let credential_id = cbor::get(m, 1).map(credential_id_of).transpose()?;
        let auth_data = cbor::bytes(m, 2)
            .ok_or_else(|| corrupted("assertion without authData"))?
            .to_vec();
        AuthenticatorData::parse(&auth_data)?;
        let signature = cbor::bytes(m, 3)
            .ok_or_else(|| corrupted("assertion without a signature"))?
            .to_vec();
        let user = cbor::get(m, 4).map(User::parse).transpose()?;
        Ok(Self {
            credential_id,
            auth_data,
            signature,
            user,
            number_of_credentials: cbor::uint(m, 5),
            large_blob_key: cbor::bytes(m, 7).map(<[u8]>::to_vec),
        })
    }
}

/// What getCredsMetadata answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialMetadata {
    /// Discoverable credentials on the authenticator.
    pub existing: u64,
    /// How many more fit.
    pub max_remaining: u64,
}

/// An RP with discoverable credentials, from enumerateRPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpInfo {
    /// The RP entity.
    pub rp: RelyingParty,
    /// SHA-256 of its ID.
    pub rp_id_hash: Vec<u8>,
}

/// A discoverable credential, from enumerateCredentials.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialInfo {
    /// The user account.
    pub user: User,
    /// The credential ID.
    pub credential_id: Vec<u8>,
    /// The public key.
    pub public_key: Option<CredentialPublicKey>,
    /// The credProtect level.
    pub cred_protect: Option<u64>,
    /// The largeBlobKey.
    pub large_blob_key: Option<Vec<u8>>,
}

/// The authenticator's answer to getPINRetries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRetries {
    /// Tries left.
    pub retries: u8,
    /// A power cycle is needed before the PIN can be tried again.
    pub power_cycle_state: Option<bool>,
}

fn pin_str(pin: &Pin) -> Result<&str> {
    std::str::from_utf8(pin.expose()).map_err(|_| Error::bad_parameter("a FIDO2 PIN is UTF-8"))
}

fn uint_value(n: u64) -> Value {
    Value::Integer(n.into())
}

/// The first two entries of every clientPIN request: pinUvAuthProtocol and subCommand.
fn client_pin_entries(protocol: u8, sub_command: u8) -> Vec<(i64, Value)> {
    vec![
        (client_pin::req::PROTOCOL, uint_value(u64::from(protocol))),
        (
            client_pin::req::SUB_COMMAND,
            uint_value(u64::from(sub_command)),
        ),
    ]
}

/// An array of credential descriptors (an allow or exclude list).
fn credential_descriptors(ids: &[Vec<u8>]) -> Value {
    Value::Array(ids.iter().map(|id| credential_descriptor(id)).collect())
}

/// A `PublicKeyCredentialParameters` entry for the COSE algorithm `alg`.
fn credential_parameters(alg: i64) -> Value {
    Value::Map(vec![
        (Value::Text("alg".into()), cbor::int(alg)),
        (Value::Text("type".into()), Value::Text("public-key".into())),
    ])
}

/// Adds `token`'s pinUvAuthParam over `message` under `param_key` and its protocol number
/// under `protocol_key`, the pair every authenticated command carries.
fn push_auth(
    entries: &mut Vec<(i64, Value)>,
    token: &PinUvAuthToken,
    message: &[u8],
    param_key: i64,
    protocol_key: i64,
) {
    entries.push((param_key, Value::Bytes(token.authenticate(message))));
    entries.push((
        protocol_key,
        uint_value(u64::from(token.protocol().number())),
    ));
}

/// A subcommand request (credentialManagement, authenticatorConfig): subCommand (1),
/// subCommandParams (2), pinUvAuthProtocol (3) and the pinUvAuthParam (4) over what
/// `auth_message` makes of the subcommand and its parameters.
fn sub_command_request(
    sub_command: u8,
    params: Option<Value>,
    auth: Option<&PinUvAuthToken>,
    auth_message: fn(u8, Option<&Value>) -> Vec<u8>,
) -> Value {
    let mut entries = vec![(1, uint_value(u64::from(sub_command)))];
    if let Some(p) = &params {
        entries.push((2, p.clone()));
    }
    if let Some(token) = auth {
        push_auth(
            &mut entries,
            token,
            &auth_message(sub_command, params.as_ref()),
            4,
            3,
        );
    }
    int_map(entries)
}

/// The message a credentialManagement pinUvAuthParam covers: subCommand ‖ CBOR(params).
pub fn cred_mgmt_auth_message(sub_command: u8, params: Option<&Value>) -> Vec<u8> {
    let mut m = vec![sub_command];
    if let Some(p) = params {
        m.extend(cbor::encode(p));
    }
    m
}

/// The message an authenticatorConfig pinUvAuthParam covers: 32×FF ‖ 0D ‖ subCommand ‖
/// CBOR(params).
pub fn config_auth_message(sub_command: u8, params: Option<&Value>) -> Vec<u8> {
    let mut m = vec![0xFF; 32];
    m.push(ctap::CMD_CONFIG);
    m.push(sub_command);
    if let Some(p) = params {
        m.extend(cbor::encode(p));
    }
    m
}

/// The message a largeBlobs set pinUvAuthParam covers: 32×FF ‖ 0C 00 ‖ uint32LE(offset) ‖
/// SHA-256(fragment).
pub fn large_blob_auth_message(offset: u32, fragment: &[u8]) -> Vec<u8> {
    let mut m = vec![0xFF; 32];
    m.extend([ctap::CMD_LARGE_BLOBS, 0x00]);
    m.extend(offset.to_le_bytes());
    m.extend(Sha256::digest(fragment));
    m
}

/// A CTAP2 client over one channel, with the authenticator's getInfo.
#[derive(Clone)]
pub struct Ctap2 {
    channel: Arc<dyn CtapChannel>,
    info: Info,
}

impl fmt::Debug for Ctap2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctap2")
            .field("versions", &self.info.versions)
            .finish_non_exhaustive()
    }
}

impl Ctap2 {
    /// Connects: sends getInfo and keeps its answer.
    ///
    /// # Errors
    /// Transport errors; `CorruptedData` for an unreadable getInfo.
    pub async fn new(channel: Arc<dyn CtapChannel>) -> Result<Self> {
        let value = send_raw(&*channel, ctap::CMD_GET_INFO, None)
            .await?
            .ok_or_else(|| corrupted("empty getInfo answer"))?;
        let info = Info::parse(&value)?;
        Ok(Self { channel, info })
    }

    /// The getInfo answer read at connection (or by the last [`Ctap2::refresh_info`]).
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The channel.
    pub fn channel(&self) -> &Arc<dyn CtapChannel> {
        &self.channel
    }

    /// Reads getInfo again (after setPIN or a configuration change).
    ///
    /// # Errors
    /// As [`Ctap2::new`].
    pub async fn refresh_info(&mut self) -> Result<&Info> {
        let value = self
            .send(ctap::CMD_GET_INFO, None)
            .await?
            .ok_or_else(|| corrupted("empty getInfo answer"))?;
        self.info = Info::parse(&value)?;
        Ok(&self.info)
    }

    /// Sends one CTAP2 command with its parameters (a CBOR map) and returns the decoded
    /// answer (`None` for an empty one).
    ///
    /// # Errors
    /// Transport errors; [`ctap_error`] for a status other than CTAP2_OK; `CorruptedData`
    /// for an answer that is not CBOR.
    pub async fn send(&self, command: u8, params: Option<&Value>) -> Result<Option<Value>> {
        send_raw(&*self.channel, command, params).await
    }

    fn protocol(&self) -> Result<PinUvAuthProtocol> {
        self.info
            .pin_protocol()
            .ok_or_else(|| Error::not_implemented("the authenticator has no PIN/UV auth protocol"))
    }

    // -- clientPIN --

    async fn client_pin(&self, entries: Vec<(i64, Value)>) -> Result<Vec<(Value, Value)>> {
        let answer = self
            .send(ctap::CMD_CLIENT_PIN, Some(&int_map(entries)))
            .await?;
        match answer {
            Some(v) => Ok(cbor::as_map(&v)?.to_vec()),
            None => Ok(Vec::new()),
        }
    }

    /// clientPIN getPINRetries.
    ///
    /// # Errors
    /// Transport and CTAP errors; `CorruptedData` without pinRetries.
    pub async fn get_pin_retries(&self) -> Result<PinRetries> {
        let protocol = self.protocol().map(|p| p.number()).unwrap_or(1);
        let m = self
            .client_pin(client_pin_entries(protocol, client_pin::GET_PIN_RETRIES))
            .await?;
        let retries = cbor::uint(&m, client_pin::resp::PIN_RETRIES)
            .ok_or_else(|| corrupted("getPINRetries without pinRetries"))?;
        Ok(PinRetries {
            retries: u8::try_from(retries).unwrap_or(u8::MAX),
            power_cycle_state: cbor::boolean(&m, client_pin::resp::POWER_CYCLE_STATE),
        })
    }

    /// clientPIN getKeyAgreement, then the platform's half: our public key and the shared
    /// secret.
    ///
    /// # Errors
    /// Transport and CTAP errors; `CorruptedData` for a missing or invalid key.
    pub async fn key_agreement(&self) -> Result<(CoseKey, SharedSecret)> {
        let protocol = self.protocol()?;
        let m = self
            .client_pin(client_pin_entries(
                protocol.number(),
                client_pin::GET_KEY_AGREEMENT,
            ))
            .await?;
        let key = cbor::get(&m, client_pin::resp::KEY_AGREEMENT)
            .ok_or_else(|| corrupted("getKeyAgreement without keyAgreement"))?;
        let peer = CoseKey::from_value(key).map_err(|_| corrupted("invalid keyAgreement key"))?;
        protocol.encapsulate(&peer)
    }

    /// clientPIN setPIN (no PIN set yet).
    ///
    /// # Errors
    /// `BadParameter` for a PIN outside CTAP's rules; CTAP errors (PIN_POLICY_VIOLATION,
    /// NOT_ALLOWED when one is set).
    pub async fn set_pin(&self, new: &Pin) -> Result<()> {
        let protocol = self.protocol()?;
        let padded = pin_protocol::pad_pin(pin_str(new)?)?;
        let (platform, secret) = self.key_agreement().await?;
        let new_pin_enc = protocol.encrypt(&secret, padded.as_ref())?;
        let param = protocol.authenticate(secret.as_bytes(), &new_pin_enc);
        let mut entries = client_pin_entries(protocol.number(), client_pin::SET_PIN);
        entries.extend([
            (client_pin::req::KEY_AGREEMENT, platform.to_value()),
            (client_pin::req::PIN_UV_AUTH_PARAM, Value::Bytes(param)),
            (client_pin::req::NEW_PIN_ENC, Value::Bytes(new_pin_enc)),
        ]);
        self.client_pin(entries).await?;
        Ok(())
    }

    /// clientPIN changePIN. A wrong current PIN is `AuthenticationFailed` with the tries left.
    ///
    /// # Errors
    /// As [`Ctap2::set_pin`], and the PIN errors.
    pub async fn change_pin(&self, current: &Pin, new: &Pin) -> Result<()> {
        let protocol = self.protocol()?;
        let padded = pin_protocol::pad_pin(pin_str(new)?)?;
        let hash = Zeroizing::new(pin_protocol::pin_hash(pin_str(current)?));
        let (platform, secret) = self.key_agreement().await?;
        let new_pin_enc = protocol.encrypt(&secret, padded.as_ref())?;
        let pin_hash_enc = protocol.encrypt(&secret, hash.as_ref())?;
        let mut message = new_pin_enc.clone();
        message.extend_from_slice(&pin_hash_enc);
        let param = protocol.authenticate(secret.as_bytes(), &message);
        let mut entries = client_pin_entries(protocol.number(), client_pin::CHANGE_PIN);
        entries.extend([
            (client_pin::req::KEY_AGREEMENT, platform.to_value()),
            (client_pin::req::PIN_UV_AUTH_PARAM, Value::Bytes(param)),
            (client_pin::req::NEW_PIN_ENC, Value::Bytes(new_pin_enc)),
            (client_pin::req::PIN_HASH_ENC, Value::Bytes(pin_hash_enc)),
        ]);
        match self.client_pin(entries).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.with_retries_left(e).await),
        }
    }

    /// Adds the PIN tries left to a PIN_INVALID error (asking getPINRetries).
    pub async fn with_retries_left(&self, e: Error) -> Error {
        if ctap_status(&e) == Some(Status::PIN_INVALID) {
            if let Ok(r) = self.get_pin_retries().await {
                return e.with_retries(Some(r.retries));
            }
        }
        e
    }

    /// Obtains a token with the PIN: getPinUvAuthTokenUsingPinWithPermissions (subcommand 09)
    /// on a CTAP 2.1 authenticator, getPinToken (05) on CTAP 2.0 (`permissions` and `rp_id`
    /// are then not sent). A wrong PIN is `AuthenticationFailed` with the tries left.
    ///
    /// # Errors
    /// The PIN errors; transport errors; `CorruptedData` for a token that does not decrypt.
    pub async fn get_pin_token(
        &self,
        pin: &Pin,
        permissions: Permissions,
        rp_id: Option<&str>,
    ) -> Result<PinUvAuthToken> {
        let protocol = self.protocol()?;
        let hash = Zeroizing::new(pin_protocol::pin_hash(pin_str(pin)?));
        let (platform, secret) = self.key_agreement().await?;
        let pin_hash_enc = protocol.encrypt(&secret, hash.as_ref())?;
        let with_permissions = self.info.has_permissions();
        let sub = if with_permissions {
            client_pin::GET_PIN_TOKEN_WITH_PERMISSIONS
        } else {
            client_pin::GET_PIN_TOKEN
        };
        let mut entries = client_pin_entries(protocol.number(), sub);
        entries.extend([
            (client_pin::req::KEY_AGREEMENT, platform.to_value()),
            (client_pin::req::PIN_HASH_ENC, Value::Bytes(pin_hash_enc)),
        ]);
        if with_permissions {
            entries.push((
                client_pin::req::PERMISSIONS,
                uint_value(u64::from(permissions.0)),
            ));
            if let Some(rp) = rp_id {
                entries.push((client_pin::req::RP_ID, Value::Text(rp.to_owned())));
            }
        }
        let m = match self.client_pin(entries).await {
            Ok(m) => m,
            Err(e) => return Err(self.with_retries_left(e).await),
        };
        let enc = cbor::bytes(&m, client_pin::resp::PIN_UV_AUTH_TOKEN)
            .ok_or_else(|| corrupted("no pinUvAuthToken in the answer"))?;
        let token = protocol
            .decrypt(&secret, enc)
            .map_err(|_| corrupted("the pinUvAuthToken does not decrypt"))?;
        let ok_len = match protocol {
            PinUvAuthProtocol::One => token.len() == 16 || token.len() == 32,
            PinUvAuthProtocol::Two => token.len() == 32,
        };
        if !ok_len {
            return Err(corrupted("pinUvAuthToken of the wrong length"));
        }
        Ok(PinUvAuthToken::new(protocol, token))
    }

    // -- credentials --

    /// authenticatorMakeCredential; `auth` authenticates it over the client data hash.
    ///
    /// # Errors
    /// CTAP errors (CREDENTIAL_EXCLUDED, PIN_AUTH_INVALID, KEY_STORE_FULL, ...); transport
    /// errors; `CorruptedData` for an unreadable answer.
    pub async fn make_credential(
        &self,
        request: &MakeCredentialRequest,
        auth: Option<&PinUvAuthToken>,
    ) -> Result<MakeCredentialResponse> {
        let algs = if request.algorithms.is_empty() {
            vec![-7]
        } else {
            request.algorithms.clone()
        };
        let params = Value::Array(algs.iter().map(|a| credential_parameters(*a)).collect());
        let mut entries = vec![
            (1, Value::Bytes(request.client_data_hash.clone())),
            (2, request.rp.to_value()),
            (3, request.user.to_value()),
            (4, params),
        ];
        if !request.exclude_list.is_empty() {
            entries.push((5, credential_descriptors(&request.exclude_list)));
        }
        if let Some(ext) = &request.extensions {
            entries.push((6, ext.clone()));
        }
        let mut options = Vec::new();
        if request.resident_key {
            options.push((Value::Text("rk".into()), Value::Bool(true)));
        }
        if let Some(uv) = request.user_verification {
            options.push((Value::Text("uv".into()), Value::Bool(uv)));
        }
        if !options.is_empty() {
            entries.push((7, Value::Map(options)));
        }
        if let Some(token) = auth {
            push_auth(&mut entries, token, &request.client_data_hash, 8, 9);
        }
        let answer = self
            .send(ctap::CMD_MAKE_CREDENTIAL, Some(&int_map(entries)))
            .await?
            .ok_or_else(|| corrupted("empty makeCredential answer"))?;
        MakeCredentialResponse::parse(&answer)
    }

    /// authenticatorGetAssertion: the first assertion (see
    /// [`Assertion::number_of_credentials`] and [`Ctap2::get_next_assertion`]).
    ///
    /// # Errors
    /// NO_CREDENTIALS is `ObjectNotFound`; other CTAP and transport errors.
    pub async fn get_assertion(
        &self,
        request: &GetAssertionRequest,
        auth: Option<&PinUvAuthToken>,
    ) -> Result<Assertion> {
        let mut entries = vec![
            (1, Value::Text(request.rp_id.clone())),
            (2, Value::Bytes(request.client_data_hash.clone())),
        ];
        if !request.allow_list.is_empty() {
            entries.push((3, credential_descriptors(&request.allow_list)));
        }
        if let Some(ext) = &request.extensions {
            entries.push((4, ext.clone()));
        }
        if let Some(up) = request.user_presence {
            entries.push((
                5,
                Value::Map(vec![(Value::Text("up".into()), Value::Bool(up))]),
            ));
        }
        if let Some(token) = auth {
            push_auth(&mut entries, token, &request.client_data_hash, 6, 7);
        }
        let answer = self
            .send(ctap::CMD_GET_ASSERTION, Some(&int_map(entries)))
            .await?
            .ok_or_else(|| corrupted("empty getAssertion answer"))?;
        Assertion::parse(&answer)
    }

    /// authenticatorGetNextAssertion.
    ///
    /// # Errors
    /// NOT_ALLOWED when there is none left; transport errors.
    pub async fn get_next_assertion(&self) -> Result<Assertion> {
        let answer = self
            .send(ctap::CMD_GET_NEXT_ASSERTION, None)
            .await?
            .ok_or_else(|| corrupted("empty getNextAssertion answer"))?;
        Assertion::parse(&answer)
    }

    // -- credential management --

    fn cred_mgmt_command(&self) -> Result<u8> {
        self.info
            .credential_management_command()
            .ok_or_else(|| Error::not_implemented("the authenticator has no credential management"))
    }

    /// Sends one credentialManagement subcommand, authenticated with `auth` when given.
    ///
    /// # Errors
    /// `NotImplemented` when getInfo offers no credential management; CTAP errors.
    pub async fn cred_mgmt(
        &self,
        sub_command: u8,
        params: Option<Value>,
        auth: Option<&PinUvAuthToken>,
    ) -> Result<Vec<(Value, Value)>> {
        let command = self.cred_mgmt_command()?;
        let request = sub_command_request(sub_command, params, auth, cred_mgmt_auth_message);
        match self.send(command, Some(&request)).await? {
            Some(v) => Ok(cbor::as_map(&v)?.to_vec()),
            None => Ok(Vec::new()),
        }
    }

    /// getCredsMetadata.
    ///
    /// # Errors
    /// As [`Ctap2::cred_mgmt`]; `CorruptedData` for a missing field.
    pub async fn credential_metadata(&self, auth: &PinUvAuthToken) -> Result<CredentialMetadata> {
        let m = self
            .cred_mgmt(cred_mgmt::GET_CREDS_METADATA, None, Some(auth))
            .await?;
        Ok(CredentialMetadata {
            existing: cbor::uint(&m, 1).ok_or_else(|| corrupted("metadata without a count"))?,
            max_remaining: cbor::uint(&m, 2)
                .ok_or_else(|| corrupted("metadata without remaining"))?,
        })
    }

    /// enumerateRPsBegin and every enumerateRPsGetNextRP. No RP gives an empty list.
    ///
    /// # Errors
    /// As [`Ctap2::cred_mgmt`].
    pub async fn enumerate_rps(&self, auth: &PinUvAuthToken) -> Result<Vec<RpInfo>> {
        let Some(first) = self
            .enumeration_begin(cred_mgmt::ENUMERATE_RPS_BEGIN, None, auth)
            .await?
        else {
            return Ok(Vec::new());
        };
        if first.is_empty() {
            return Ok(Vec::new());
        }
        self.enumeration_rest(&first, 5, cred_mgmt::ENUMERATE_RPS_NEXT, parse_rp)
            .await
    }

    /// enumerateCredentialsBegin and every enumerateCredentialsGetNextCredential for the RP
    /// whose ID hashes to `rp_id_hash`.
    ///
    /// # Errors
    /// As [`Ctap2::cred_mgmt`].
    pub async fn enumerate_credentials(
        &self,
        rp_id_hash: &[u8],
        auth: &PinUvAuthToken,
    ) -> Result<Vec<CredentialInfo>> {
        let params = int_map(vec![(1, Value::Bytes(rp_id_hash.to_vec()))]);
        let Some(first) = self
            .enumeration_begin(cred_mgmt::ENUMERATE_CREDENTIALS_BEGIN, Some(params), auth)
            .await?
        else {
            return Ok(Vec::new());
        };
        self.enumeration_rest(
            &first,
            9,
            cred_mgmt::ENUMERATE_CREDENTIALS_NEXT,
            parse_credential,
        )
        .await
    }

    /// The answer to an enumeration's begin subcommand; `None` for NO_CREDENTIALS (nothing
    /// to enumerate).
    async fn enumeration_begin(
        &self,
        sub_command: u8,
        params: Option<Value>,
        auth: &PinUvAuthToken,
    ) -> Result<Option<Vec<(Value, Value)>>> {
        match self.cred_mgmt(sub_command, params, Some(auth)).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if ctap_status(&e) == Some(Status::NO_CREDENTIALS) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `first` item of an enumeration and the rest, one `next` subcommand each, up to
    /// the total `first` announces under `total_key` (at most [`MAX_ENUMERATION`]).
    async fn enumeration_rest<T>(
        &self,
        first: &[(Value, Value)],
        total_key: i64,
        next: u8,
        parse: fn(&[(Value, Value)]) -> Result<T>,
    ) -> Result<Vec<T>> {
        let total = cbor::uint(first, total_key)
            .unwrap_or(1)
            .min(MAX_ENUMERATION);
        let mut out = vec![parse(first)?];
        for _ in 1..total {
            let m = self.cred_mgmt(next, None, None).await?;
            out.push(parse(&m)?);
        }
        Ok(out)
    }

    /// deleteCredential.
    ///
    /// # Errors
    /// As [`Ctap2::cred_mgmt`]; NO_CREDENTIALS is `ObjectNotFound`.
    pub async fn delete_credential(
        &self,
        credential_id: &[u8],
        auth: &PinUvAuthToken,
    ) -> Result<()> {
        let params = int_map(vec![(2, credential_descriptor(credential_id))]);
        self.cred_mgmt(cred_mgmt::DELETE_CREDENTIAL, Some(params), Some(auth))
            .await?;
        Ok(())
    }

    /// updateUserInformation (the user ID must stay the same).
    ///
    /// # Errors
    /// As [`Ctap2::cred_mgmt`].
    pub async fn update_user_information(
        &self,
        credential_id: &[u8],
        user: &User,
        auth: &PinUvAuthToken,
    ) -> Result<()> {
        let params = int_map(vec![
            (2, credential_descriptor(credential_id)),
            (3, user.to_value()),
        ]);
        self.cred_mgmt(cred_mgmt::UPDATE_USER_INFORMATION, Some(params), Some(auth))
            .await?;
        Ok(())
    }

    // -- large blobs --

    fn max_fragment(&self) -> usize {
        self.info.max_msg_size().saturating_sub(64).max(1)
    }

    /// Reads the whole serialized large-blob array in fragments of maxMsgSize − 64 and checks
    /// its trailer (the first 16 bytes of SHA-256 of the rest). Returns the array without the
    /// trailer (the CBOR array itself).
    ///
    /// # Errors
    /// `CorruptedData` when the trailer does not match or the array grows past
    /// [`MAX_LARGE_BLOB_ARRAY`]; CTAP and transport errors.
    pub async fn read_large_blob_array(&self) -> Result<Vec<u8>> {
        let fragment = self.max_fragment();
        let mut data: Vec<u8> = Vec::new();
        loop {
            let offset = data.len();
            let m = int_map(vec![
                (1, uint_value(fragment as u64)),
                (3, uint_value(offset as u64)),
            ]);
            let answer = self
                .send(ctap::CMD_LARGE_BLOBS, Some(&m))
                .await?
                .ok_or_else(|| corrupted("empty largeBlobs answer"))?;
            let am = cbor::as_map(&answer)?;
            let piece =
                cbor::bytes(am, 1).ok_or_else(|| corrupted("largeBlobs get without config"))?;
            if piece.len() > fragment {
                return Err(corrupted("largeBlobs fragment longer than asked"));
            }
            if data.len() + piece.len() > MAX_LARGE_BLOB_ARRAY {
                return Err(corrupted("large-blob array over 1 MiB"));
            }
            data.extend_from_slice(piece);
            if piece.len() < fragment {
                break;
            }
        }
        let split = data
            .len()
            .checked_sub(16)
            .ok_or_else(|| corrupted("large-blob array shorter than its trailer"))?;
        let (array, trailer) = data.split_at(split);
        if Sha256::digest(array)[..16] != *trailer {
            return Err(corrupted("large-blob array trailer does not match"));
        }
        Ok(array.to_vec())
    }

    /// Writes one largeBlobs set fragment at `offset` (`length` only with offset 0), with
    /// the pinUvAuthParam over 32×FF ‖ 0C 00 ‖ uint32LE(offset) ‖ SHA-256(fragment).
    ///
    /// # Errors
    /// CTAP errors (PIN_AUTH_INVALID, INTEGRITY_FAILURE, LARGE_BLOB_STORAGE_FULL); transport
    /// errors.
    pub async fn write_large_blob_fragment(
        &self,
        fragment: &[u8],
        offset: usize,
        length: Option<usize>,
        auth: Option<&PinUvAuthToken>,
    ) -> Result<()> {
        let off32 = u32::try_from(offset).map_err(|_| Error::bad_parameter("large-blob offset"))?;
        let mut entries = vec![
            (2, Value::Bytes(fragment.to_vec())),
            (3, uint_value(offset as u64)),
        ];
        if let Some(len) = length {
            entries.push((4, uint_value(len as u64)));
        }
        if let Some(token) = auth {
            push_auth(
                &mut entries,
                token,
                &large_blob_auth_message(off32, fragment),
                5,
                6,
            );
        }
        self.send(ctap::CMD_LARGE_BLOBS, Some(&int_map(entries)))
            .await?;
        Ok(())
    }

    /// The serialized array (with its trailer) cut into the fragments a write sends.
    pub fn large_blob_fragments(&self, array: &[u8]) -> Result<Vec<(usize, Vec<u8>)>> {
        if array.len() + 16 > MAX_LARGE_BLOB_ARRAY {
            return Err(Error::bad_parameter("large-blob array over 1 MiB"));
        }
        if let Some(max) = self.info.max_serialized_large_blob_array {
            if (array.len() + 16) as u64 > max {
                return Err(Error::bad_parameter(
                    "large-blob array longer than the authenticator takes",
                ));
            }
        }
        let mut data = array.to_vec();
        data.extend_from_slice(&Sha256::digest(array)[..16]);
        let fragment = self.max_fragment();
        Ok(data
            .chunks(fragment)
            .enumerate()
            .map(|(i, c)| (i * fragment, c.to_vec()))
            .collect())
    }

    // -- configuration, reset, selection --

    /// authenticatorConfig with a subcommand, authenticated with `auth` (a token with the acfg
    /// permission) over 32×FF ‖ 0D ‖ subCommand ‖ CBOR(params).
    ///
    /// # Errors
    /// `NotImplemented` when the authenticator has no authnrCfg; CTAP errors.
    pub async fn config(
        &self,
        sub_command: u8,
        params: Option<Value>,
        auth: Option<&PinUvAuthToken>,
    ) -> Result<()> {
        let request = sub_command_request(sub_command, params, auth, config_auth_message);
        self.send(ctap::CMD_CONFIG, Some(&request)).await?;
        Ok(())
    }

    /// setMinPINLength parameters: the new length, RP IDs that may read it, force a PIN change.
    pub fn min_pin_length_params(
        new_min: Option<u64>,
        rp_ids: &[String],
        force_change: bool,
    ) -> Option<Value> {
        let mut entries = Vec::new();
        if let Some(n) = new_min {
            entries.push((1, uint_value(n)));
        }
        if !rp_ids.is_empty() {
            entries.push((
                2,
                Value::Array(rp_ids.iter().map(|r| Value::Text(r.clone())).collect()),
            ));
        }
        if force_change {
            entries.push((3, Value::Bool(true)));
        }
        (!entries.is_empty()).then(|| int_map(entries))
    }

    /// authenticatorReset: erases every credential and the PIN. Authenticators allow it only
    /// within seconds of power-up and with the user's touch.
    ///
    /// # Errors
    /// NOT_ALLOWED (too late after power-up), OPERATION_DENIED, USER_ACTION_TIMEOUT.
    pub async fn reset(&self) -> Result<()> {
        self.send(ctap::CMD_RESET, None).await?;
        Ok(())
    }

    /// authenticatorSelection: waits for the user's touch (CTAP 2.1). On a CTAP 2.0
    /// authenticator, a makeCredential with a dummy PIN parameter does the same (the touch
    /// then ends in PIN_NOT_SET or PIN_INVALID, which count as selected).
    ///
    /// # Errors
    /// KEEPALIVE_CANCEL, USER_ACTION_TIMEOUT, OPERATION_DENIED; transport errors.
    pub async fn selection(&self) -> Result<()> {
        if self.info.versions.iter().any(|v| v == "FIDO_2_1") {
            self.send(ctap::CMD_SELECTION, None).await?;
            return Ok(());
        }
        let request = int_map(vec![
            (1, Value::Bytes(vec![0; 32])),
            (
                2,
                RelyingParty {
                    id: ".dummy".into(),
                    name: None,
                }
                .to_value(),
            ),
            (
                3,
                User {
                    id: vec![0],
                    name: Some("dummy".into()),
                    display_name: None,
                }
                .to_value(),
            ),
            (4, Value::Array(vec![credential_parameters(-7)])),
            (8, Value::Bytes(Vec::new())),
            (9, uint_value(1)),
        ]);
        match self.send(ctap::CMD_MAKE_CREDENTIAL, Some(&request)).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    ctap_status(&e),
                    Some(Status::PIN_NOT_SET) | Some(Status::PIN_INVALID)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn parse_rp(m: &[(Value, Value)]) -> Result<RpInfo> {
    let rp = RelyingParty::parse(cbor::get(m, 3).ok_or_else(|| corrupted("RP without rp"))?)?;
    let rp_id_hash = cbor::bytes(m, 4)
        .ok_or_else(|| corrupted("RP without rpIDHash"))?
        .to_vec();
    Ok(RpInfo { rp, rp_id_hash })
}

fn parse_credential(m: &[(Value, Value)]) -> Result<CredentialInfo> {
    let user = User::parse(cbor::get(m, 6).ok_or_else(|| corrupted("credential without user"))?)?;
    let credential_id = credential_id_of(
        cbor::get(m, 7).ok_or_else(|| corrupted("credential without credentialID"))?,
    )?;
    let public_key = cbor::get(m, 8)
        .map(CredentialPublicKey::parse)
        .transpose()?;
    Ok(CredentialInfo {
        user,
        credential_id,
        public_key,
        cred_protect: cbor::uint(m, 0x0A),
        large_blob_key: cbor::bytes(m, 0x0B).map(<[u8]>::to_vec),
    })
}

/// Decodes a CTAP2 answer: status byte, then CBOR (or nothing).
///
/// # Errors
/// [`ctap_error`] for a status other than CTAP2_OK; `CorruptedData` for an empty answer or
/// CBOR that does not decode.
pub fn decode_response(answer: &[u8]) -> Result<Option<Value>> {
    let (&status, body) = answer
        .split_first()
        .ok_or_else(|| corrupted("empty CTAP2 answer"))?;
    if status != Status::OK.0 {
        return Err(ctap_error(status));
    }
    if body.is_empty() {
        return Ok(None);
    }
    Ok(Some(cbor::decode(body)?))
}

async fn send_raw(
    channel: &dyn CtapChannel,
    command: u8,
    params: Option<&Value>,
) -> Result<Option<Value>> {
    let mut payload = vec![command];
    if let Some(p) = params {
        payload.extend(cbor::encode(p));
    }
    let answer = channel.transact(CTAPHID_CBOR, &payload).await?;
    decode_response(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_codes_map_to_cryptotokenkit_codes() {
        let e = ctap_error(0x31);
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
        assert_eq!(e.underlying(), &Underlying::Ctap(0x31));
        assert!(!e.is_blocked());
        assert!(ctap_error(0x32).is_blocked());
        assert!(ctap_error(0x34).is_blocked());
        assert_eq!(ctap_error(0x2D).code(), ErrorCode::CanceledByUser);
        assert_eq!(ctap_error(0x2E).code(), ErrorCode::ObjectNotFound);
        assert_eq!(ctap_error(0x33).code(), ErrorCode::AuthenticationNeeded);
        assert_eq!(ctap_error(0x3E).code(), ErrorCode::NotImplemented);
        assert_eq!(ctap_error(0x12).code(), ErrorCode::BadParameter);
        assert_eq!(ctap_error(0xF3).code(), ErrorCode::CommunicationError);
    }

    #[test]
    fn large_blob_message_is_the_spec_layout() {
        let m = large_blob_auth_message(0x0102_0304, b"abc");
        assert_eq!(&m[..32], &[0xFF; 32]);
        assert_eq!(&m[32..34], &[0x0C, 0x00]);
        assert_eq!(&m[34..38], &[0x04, 0x03, 0x02, 0x01]);
        // SHA-256("abc") (FIPS 180-2 example).
        assert_eq!(&m[38..42], &[0xBA, 0x78, 0x16, 0xBF]);
        assert_eq!(m.len(), 70);
        let c = config_auth_message(0x02, None);
        assert_eq!(&c[32..], &[0x0D, 0x02]);
    }

    #[test]
    fn authenticator_data_with_attested_credential_parses() {
        let mut ad = vec![0x11; 32];
        ad.push(AuthenticatorData::UP | AuthenticatorData::AT);
        ad.extend([0, 0, 0, 7]);
        ad.extend([0xAA; 16]);
        ad.extend([0, 3, 1, 2, 3]);
        let key = Value::Map(vec![
            (cbor::int(1), cbor::int(2)),
            (cbor::int(3), cbor::int(-7)),
            (cbor::int(-1), cbor::int(1)),
            (cbor::int(-2), Value::Bytes(vec![5; 32])),
            (cbor::int(-3), Value::Bytes(vec![6; 32])),
        ]);
        ad.extend(cbor::encode(&key));
        // An extensions map after the key.
        ad.extend(cbor::encode(&Value::Map(vec![])));
        let parsed = AuthenticatorData::parse(&ad).unwrap();
        assert_eq!(parsed.sign_count, 7);
        let (_, id, pk) = parsed.attested_credential.unwrap();
        assert_eq!(id, vec![1, 2, 3]);
        let pk = pk.public_key.unwrap();
        assert_eq!(pk.key_type, KeyType::EcP256);
        assert_eq!(pk.raw[0], 4);
        assert_eq!(&pk.raw[1..33], &[5; 32]);
        assert!(AuthenticatorData::parse(&ad[..60]).is_err());
    }

    #[test]
    fn info_prefers_protocol_two_and_finds_preview_credential_management() {
        let v = int_map(vec![
            (1, Value::Array(vec![Value::Text("FIDO_2_1_PRE".into())])),
            (3, Value::Bytes(vec![0; 16])),
            (
                4,
                Value::Map(vec![
                    (Value::Text("clientPin".into()), Value::Bool(true)),
                    (
                        Value::Text("credentialMgmtPreview".into()),
                        Value::Bool(true),
                    ),
                ]),
            ),
            (6, Value::Array(vec![cbor::int(1), cbor::int(2)])),
        ]);
        let info = Info::parse(&v).unwrap();
        assert_eq!(info.pin_protocol(), Some(PinUvAuthProtocol::Two));
        assert_eq!(info.credential_management_command(), Some(0x41));
        assert!(!info.has_permissions());
        assert!(info.pin_is_set());
    }

    proptest! {
        #[test]
        fn every_decoder_of_authenticator_output_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_response(&bytes);
            let _ = AuthenticatorData::parse(&bytes);
            if let Ok(v) = cbor::decode(&bytes) {
                let _ = Info::parse(&v);
                let _ = Assertion::parse(&v);
                let _ = MakeCredentialResponse::parse(&v);
                let _ = CredentialPublicKey::parse(&v);
                if let Ok(m) = cbor::as_map(&v) {
                    let _ = parse_rp(m);
                    let _ = parse_credential(m);
                }
            }
        }

        #[test]
        fn structured_answers_never_panic(
            keys in proptest::collection::vec((0i64..12, proptest::collection::vec(any::<u8>(), 0..64)), 0..10)
        ) {
            // Maps with the right keys but arbitrary byte-string values.
            let v = int_map(keys.into_iter().map(|(k, b)| (k, Value::Bytes(b))).collect());
            let _ = Info::parse(&v);
            let _ = Assertion::parse(&v);
            let _ = MakeCredentialResponse::parse(&v);
            if let Ok(m) = cbor::as_map(&v) {
                let _ = parse_rp(m);
                let _ = parse_credential(m);
            }
        }
    }
}
