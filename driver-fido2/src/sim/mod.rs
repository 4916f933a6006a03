//! A CTAP 2.1 authenticator simulator, from the authenticator's side, for tests and for
//! third-party clients (python-fido2 through pcscd).
//!
//! One [`Authenticator`] holds the state (PIN, retries, credentials, the large-blob array, the
//! pinUvAuthToken); it is reached as a [`token_core::CtapHandler`] ([`Authenticator::handler`]:
//! put it behind transport-hid's simulated HID device, `SimHidDevice::new(auth.handler())`,
//! for real CTAPHID framing, keep-alives and CANCEL), in memory without framing
//! ([`Authenticator::memory_channel`]), and over NFC/CCID through [`Authenticator::card`] (a
//! [`token_core::CardSimulator`], which the vpcd bridge puts into pcscd). Handles share the
//! state, so a test can set a PIN over HID and see it over NFC.
//!
//! What it implements (CTAP 2.1, or CTAP 2.0 with [`SimConfig::ctap21`] `false`):
//!
//! - **getInfo** with versions, extensions (credProtect, hmac-secret, largeBlobKey), options
//!   (rk, up, clientPin, pinUvAuthToken, credMgmt, largeBlobs, authnrCfg, setMinPINLength,
//!   alwaysUv, makeCredUvNotRqd), maxMsgSize 1200, pinUvAuthProtocols, transports, ES256,
//!   maxSerializedLargeBlobArray 4096, forcePINChange, minPINLength, firmwareVersion,
//!   remainingDiscoverableCredentials (50 slots).
//! - **clientPIN** 01-05 and 09 with protocols one and two: 8 retries, three wrong PINs in a
//!   row block PIN use until a power cycle (PIN_AUTH_BLOCKED), PIN_BLOCKED at 0; the
//!   key-agreement key is new at power-up and after every wrong PIN; minimum PIN length and
//!   forcePINChange.
//! - **The pinUvAuthToken** (§6.5.2.1): one at a time (a new one replaces the old); its
//!   permissions and permissions RP ID (bound on first mc/ga use when none was given); unused,
//!   it expires after the initial usage time limit (USB 30 s, NFC 19.8 s), and in any case
//!   after 10 minutes; collecting user presence in makeCredential and getAssertion clears
//!   every permission but lbw. getPinToken on a 2.1 device gives mc|ga without RP ID, good
//!   for one use. A permission whose option is absent (be) gives UNAUTHORIZED_PERMISSION; a
//!   token with an RP ID cannot read metadata or enumerate RPs.
//! - **makeCredential** (ES256, packed self attestation, rk, excludeList, credProtect,
//!   hmac-secret, largeBlobKey, PUAT_REQUIRED when a PIN is set and the credential is
//!   discoverable or alwaysUv is on), **getAssertion** and **getNextAssertion** (newest
//!   discoverable credential first; allowList; hmac-secret with one or two salts, protocol one
//!   or two, separate secrets with and without UV; one signature counter for the device).
//! - **credentialManagement** 01-07, **largeBlobs** (fragments, the truncated-SHA-256 check),
//!   **authenticatorConfig** (toggleAlwaysUv, setMinPINLength with forceChangePin; no
//!   enterprise attestation: INVALID_SUBCOMMAND), **reset** (user presence, within
//!   [`SimConfig::reset_window`] of power-up), **selection**.
//!
//! Not implemented: built-in user verification (no `uv` option, getPinUvAuthTokenUsingUv and
//! getUVRetries answer INVALID_SUBCOMMAND), bio enrollment, enterprise attestation, CTAP1/U2F,
//! EdDSA, the credBlob and minPinLength extensions, and NFCCTAP_GETRESPONSE's 9100
//! "processing" (every NFC request is answered at once).
//!
//! **Credential IDs** are derived, not stored (50 bytes): `01 ‖ flags ‖ nonce(32) ‖ tag(16)`,
//! the flags saying discoverable, hmac-secret and the credProtect level, the tag an HMAC of
//! the rest and the RP ID hash under the device's master secret, and the private key
//! `HMAC-SHA-256(master, "tokenkit-sim-key" ‖ nonce ‖ rpIdHash)`. So an ID works only for its
//! RP, a discoverable credential's ID only while its entry is stored (deleting it ends it),
//! and a reset (a new master secret) ends every credential ever made.
//!
//! **The state file** ([`SimConfig::state_file`]) is one CBOR map (master secret, PIN hash
//! and length, retries, minimum PIN length, forcePINChange, alwaysUv, signature counter,
//! large-blob array, discoverable credentials), rewritten atomically after every command that
//! changed it; it holds the secrets, so it *is* the authenticator.
//!
//! Time is simulated: [`Authenticator::advance_clock`] moves it without sleeping.
//!
//! ```
//! use driver_fido2::sim::{Authenticator, SimConfig};
//! use token_core::{block_on, CtapChannel};
//!
//! let auth = Authenticator::new(SimConfig::default())?;
//! let channel = auth.memory_channel();
//! let info = block_on(channel.transact(0x90, &[0x04]))?; // CTAPHID CBOR: getInfo
//! assert_eq!(info[0], 0x00);
//! assert_eq!(auth.log()[0].command, 0x04);
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! Every request gives a CTAP status (never a panic): the decoder is total and every
//! parameter's type is checked. While a request waits for the user's touch over HID the
//! state stays locked: [`Authenticator::log`], [`Authenticator::pin_retries`],
//! [`Authenticator::credential_count`], [`Authenticator::pin_is_set`],
//! [`Authenticator::advance_clock`] and [`Authenticator::set_nfc_presence`] do not wait for
//! it (they see the state as the last finished command left it); the other methods do.

mod engine;
mod nfc;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use token_core::{CtapHandler, Presence, UserPresence};
use token_core::{Error, Result};
use zeroize::Zeroizing;

use crate::pin_protocol::PinUvAuthProtocol;

pub use nfc::{FidoCard, FIDO_ATR};

/// The transport the simulated authenticator reports, which sets the pinUvAuthToken's
/// initial usage time limit (§6.5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SimTransport {
    /// USB: 30 s; getInfo transports `["usb"]`.
    #[default]
    Usb,
    /// NFC: 19.8 s; getInfo transports `["nfc"]`.
    Nfc,
}

/// How the simulated authenticator is made.
#[derive(Clone)]
pub struct SimConfig {
    /// CTAP 2.1 (`true`) or CTAP 2.0 only: FIDO_2_0, protocol one, getPinToken, no
    /// credential management, large blobs, config or permissions.
    pub ctap21: bool,
    /// The PIN/UV auth protocols, in getInfo's order of preference (CTAP 2.0 mode keeps
    /// only 1).
    pub pin_protocols: Vec<u8>,
    /// USB or NFC.
    pub transport: SimTransport,
    /// A PIN already set (ignored when the state file exists).
    pub pin: Option<String>,
    /// The AAGUID.
    pub aaguid: [u8; 16],
    /// Keep the state (PIN, retries, credentials, large blob) in this file, made if missing.
    pub state_file: Option<PathBuf>,
    /// authenticatorReset only this long after power-up (`Some(10 s)` like hardware);
    /// `None`: any time.
    pub reset_window: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ctap21: true,
            pin_protocols: vec![2, 1],
            transport: SimTransport::Usb,
            pin: None,
            aaguid: DEFAULT_AAGUID,
            state_file: None,
            reset_window: Some(Duration::from_secs(10)),
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("ctap21", &self.ctap21)
            .field("pin_protocols", &self.pin_protocols)
            .field("transport", &self.transport)
            .field("pin", &self.pin.as_ref().map(|_| "***"))
            .field("state_file", &self.state_file)
            .field("reset_window", &self.reset_window)
            .finish_non_exhaustive()
    }
}

/// The simulator's default AAGUID ("tokenkit-sim-fid" in ASCII).
pub const DEFAULT_AAGUID: [u8; 16] = *b"tokenkit-sim-fid";

/// One CTAP2 command the simulator processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedCommand {
    /// The command byte (0x01 makeCredential, 0x06 clientPIN, ...).
    pub command: u8,
    /// The subcommand of clientPIN, credentialManagement and authenticatorConfig.
    pub sub_command: Option<u8>,
    /// The status byte answered.
    pub status: u8,
    /// The `permissions` parameter of a clientPIN request.
    pub permissions: Option<u8>,
    /// The RP ID of the request: clientPIN's `rpId`, makeCredential's `rp.id`,
    /// getAssertion's `rpId`.
    pub rp_id: Option<String>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simulated CTAP 2.1 authenticator. Clones share one state.
#[derive(Clone)]
pub struct Authenticator {
    shared: Arc<Mutex<engine::Inner>>,
    observed: Arc<engine::Observed>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// A simulated authenticator as `config` says: factory-fresh (with `config.pin` set if
    /// given), or loaded from `config.state_file` when that exists.
    ///
    /// # Errors
    /// `BadParameter` for a PIN shorter than 4 code points or longer than 63 bytes, or no
    /// usable protocol; I/O errors and `CorruptedData` from the state file.
    pub fn new(config: SimConfig) -> Result<Self> {
        let mut protocols: Vec<PinUvAuthProtocol> = config
            .pin_protocols
            .iter()
            .filter_map(|n| PinUvAuthProtocol::from_number(u64::from(*n)))
            .collect();
        protocols.dedup();
        if !config.ctap21 {
            protocols = vec![PinUvAuthProtocol::One];
        }
        if protocols.is_empty() {
            return Err(Error::bad_parameter(
                "the simulator needs PIN/UV auth protocol 1 or 2",
            ));
        }
        let existing = match &config.state_file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => Some(store::Persistent::decode(&Zeroizing::new(bytes))?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let fresh = existing.is_none();
        let mut st = match existing {
            Some(st) => st,
            None => store::Persistent::fresh()?,
        };
        if let (true, Some(pin)) = (fresh, &config.pin) {
            if pin.chars().count() < crate::pin_protocol::MIN_PIN_CODE_POINTS
                || pin.len() > crate::pin_protocol::MAX_PIN_BYTES
            {
                return Err(Error::bad_parameter(
                    "a FIDO2 PIN has at least 4 characters and at most 63 bytes",
                ));
            }
            st.pin = Some(store::StoredPin {
                hash: Zeroizing::new(crate::pin_protocol::pin_hash(pin)),
                code_points: u8::try_from(pin.chars().count()).unwrap_or(u8::MAX),
            });
        }
        let fixed = engine::Fixed {
            ctap21: config.ctap21,
            protocols,
            transport: config.transport,
            aaguid: config.aaguid,
            state_file: config.state_file.clone(),
            reset_window: config.reset_window,
        };
        let mut inner = engine::Inner::new(fixed, st)?;
        if fresh {
            inner.save_now()?;
        }
        Ok(Self {
            observed: inner.observed.clone(),
            shared: Arc::new(Mutex::new(inner)),
        })
    }

    /// The CTAP handler: plug it into transport-hid's `SimHidDevice` (user presence then
    /// comes from the device's [`Presence`], so keep-alives and CANCEL work) or into
    /// [`token_core::testkit::MemoryAuthenticator`].
    pub fn handler(&self) -> SimHandler {
        SimHandler {
            shared: self.shared.clone(),
        }
    }

    /// A [`token_core::CtapChannel`] to this authenticator in memory (no HID framing); the
    /// simulated user touches at once until told otherwise
    /// ([`token_core::testkit::MemoryAuthenticator::set_user_presence`]).
    pub fn memory_channel(&self) -> token_core::testkit::MemoryAuthenticator {
        token_core::testkit::MemoryAuthenticator::new(self.handler())
    }

    /// The FIDO applet as a card (NFC / CCID), for the test kit or the vpcd bridge.
    pub fn card(&self) -> FidoCard {
        FidoCard {
            shared: self.shared.clone(),
            selected: false,
            chain: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Over NFC: whether the user's presence is given (the default) or refused.
    pub fn set_nfc_presence(&self, approve: bool) {
        self.observed.nfc_refuse.store(!approve, Ordering::SeqCst);
    }

    /// Power off and on: the pinUvAuthToken and the key-agreement key are new, the
    /// three-wrong-PINs block is lifted, the reset window starts again.
    pub fn power_cycle(&self) {
        lock(&self.shared).power_cycle();
    }

    /// Moves the simulated clock forward (token expiry, the reset window, continuations).
    pub fn advance_clock(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let offset = &self.observed.clock_offset_ns;
        let _ = offset.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            Some(v.saturating_add(ns))
        });
    }

    /// Every CTAP2 command processed so far, in order.
    pub fn log(&self) -> Vec<LoggedCommand> {
        lock(&self.observed.log).clone()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        lock(&self.observed.log).clear();
    }

    /// PIN retries left.
    pub fn pin_retries(&self) -> u8 {
        self.observed.pin_retries.load(Ordering::SeqCst)
    }

    /// Discoverable credentials stored.
    pub fn credential_count(&self) -> usize {
        self.observed.credentials.load(Ordering::SeqCst)
    }

    /// Whether a PIN is set.
    pub fn pin_is_set(&self) -> bool {
        self.observed.pin_set.load(Ordering::SeqCst)
    }

    /// The serialized large-blob array as stored.
    pub fn large_blob_array(&self) -> Vec<u8> {
        lock(&self.shared).st.large_blob.clone()
    }

    /// Processes one CTAP2 request (command byte ‖ CBOR) directly, with the user's presence
    /// given or refused; the answer is status ‖ CBOR.
    pub fn process(&self, request: &[u8], user_present: bool) -> Vec<u8> {
        struct Fixed(bool);
        impl engine::UpSource for Fixed {
            fn user_presence(&mut self) -> engine::Up {
                if self.0 {
                    engine::Up::Confirmed
                } else {
                    engine::Up::Denied
                }
            }
        }
        lock(&self.shared).process(request, &mut Fixed(user_present))
    }
}

/// The [`CtapHandler`] of an [`Authenticator`] (sharing its state).
pub struct SimHandler {
    shared: Arc<Mutex<engine::Inner>>,
}

impl std::fmt::Debug for SimHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandler").finish_non_exhaustive()
    }
}

struct HidPresence<'a>(&'a mut dyn Presence);

impl engine::UpSource for HidPresence<'_> {
    fn user_presence(&mut self) -> engine::Up {
        match self.0.user_presence() {
            UserPresence::Confirmed => engine::Up::Confirmed,
            UserPresence::Canceled => engine::Up::Canceled,
            UserPresence::TimedOut => engine::Up::TimedOut,
        }
    }
}

impl CtapHandler for SimHandler {
    fn handle_cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        lock(&self.shared).process(request, &mut HidPresence(presence))
    }
}
