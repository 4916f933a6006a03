//! # driver-fido2
//!
//! FIDO2 security keys for tokenkit: a CTAP 2.1 client (CTAP 2.0 devices too) over USB HID
//! and over NFC/CCID smart-card readers, the automatic AuthToken logic that gets
//! pinUvAuthTokens by itself, and a driver that shows an authenticator's discoverable
//! credentials as tokenkit key items.
//!
//! ## The layers
//!
//! | module | what it is |
//! | --- | --- |
//! | [`client`] | [`client::Ctap2`]: one typed method per CTAP2 command (getInfo, makeCredential, getAssertion, clientPIN, credentialManagement, largeBlobs, authenticatorConfig, reset, selection); status codes become [`token_core::Error`]s with [`token_core::Underlying::Ctap`] |
//! | [`session`] | [`session::Fido2Session`]: the client plus the AuthToken rules (current token first, a new one with united permissions on PIN_AUTH_INVALID, one retry, the metadata exception, never a retried wrong PIN) |
//! | [`driver`] | [`driver::Fido2Driver`]: the `fido2` token driver, registered with the hub |
//! | [`apdu`] | [`apdu::ApduCtapChannel`]: CTAP over ISO 7816 APDUs (NFCCTAP_MSG, GET RESPONSE, 9100 polling) |
//! | [`cbor`], [`ctap`], [`pin_protocol`] | CTAP2's CBOR, its numbers, PIN/UV auth protocols 1 and 2 |
//! | `sim` (feature `simulator`) | a CTAP 2.1 authenticator simulator over HID and NFC, for tests |
//!
//! Every transport is a [`token_core::CtapChannel`]: CTAPHID from `transport-hid` (HID slots
//! give [`token_core::Device::Ctap`]), or [`apdu::ApduCtapChannel`] over a
//! [`token_core::SmartCard`].
//!
//! ## AuthTokens, automatically
//!
//! A [`session::Fido2Session`] keeps the token it last obtained with its permissions and RP
//! ID ([`session::Fido2Session::auth_token_permissions`],
//! [`session::Fido2Session::auth_token_rp_id`]) and asks its key collector (a
//! [`token_core::PinCallback`], told the tries left) for the PIN only when the authenticator
//! refuses the token it has. Call [`session::Fido2Session::add_permissions`] first when you
//! know what the session will do, to be asked once. The rules are listed in the [`session`]
//! module; each has a test named after it in `tests/simulator.rs`.
//!
//! ```
//! # #[cfg(feature = "simulator")] {
//! use std::sync::Arc;
//! use driver_fido2::client::{GetAssertionRequest, MakeCredentialRequest, RelyingParty, User};
//! use driver_fido2::session::Fido2Session;
//! use driver_fido2::sim::{Authenticator, SimConfig};
//! use token_core::{block_on, CtapChannel, Pin, PinRequest};
//!
//! // A simulated authenticator with a PIN, reached over (simulated) USB HID.
//! let authenticator = Authenticator::new(SimConfig { pin: Some("123456".into()), ..SimConfig::default() })?;
//! let (device, _user) = transport_hid::sim::SimHidDevice::new(authenticator.handler());
//! let channel: Arc<dyn CtapChannel> = Arc::new(transport_hid::CtapHidChannel::open(device)?);
//! let mut fido = block_on(Fido2Session::connect(channel))?;
//! fido.set_key_collector(Arc::new(|request: &PinRequest| {
//!     println!("{}", request.prompt());
//!     Some(Pin::from("123456"))
//! }));
//!
//! let rp = RelyingParty { id: "example.com".into(), name: None };
//! let user = User { id: b"alice".to_vec(), name: Some("alice".into()), display_name: None };
//! let made = block_on(fido.make_credential(&MakeCredentialRequest {
//!     client_data_hash: vec![0; 32], rp, user, resident_key: true, ..Default::default()
//! }))?;
//! let assertion = block_on(fido.get_assertion(&GetAssertionRequest {
//!     rp_id: "example.com".into(), client_data_hash: vec![1; 32], ..Default::default()
//! }))?;
//! assert!(!assertion.signature.is_empty());
//! assert!(made.credential_id().is_some());
//! # }
//! # Ok::<(), token_core::Error>(())
//! ```
//!
//! ## As a token
//!
//! Linking this crate registers the `fido2` driver (`use driver_fido2 as _;`). It claims HID
//! authenticators and cards whose FIDO applet answers getInfo after SELECT (`FIDO_2_0`, or
//! `U2F_V2` from keys that speak both; on a security key with PIV and OpenPGP too, the FIDO2
//! token sits beside theirs). U2F-only applets are left alone.
//!
//! - **Token ID**: `fido2:<AAGUID hex>-<8 hex digits of SHA-256 of the slot name>`. CTAP gives
//!   no serial number; the AAGUID names the model, the slot (reader name, HID device) tells
//!   two keys apart. The ID is stable while the key stays in the same slot.
//! - **Items**: none until the user unlocks the token (verifies the PIN), since listing
//!   credentials needs credential management with the PIN; then one key item per
//!   discoverable credential, labelled `<RP ID> <user name>`, object ID = credential ID,
//!   public key and key ID from enumerateCredentials, constraint [`token_core::Constraint::Touch`].
//!   [`driver::Fido2TokenSession::refresh_credentials`] reads them again (after a
//!   makeCredential through [`driver::Fido2TokenSession::fido2`], say).
//! - **Signing** is a getAssertion with the credential alone in the allow list and the data as
//!   the client data hash (`EcdsaDigest(Sha256)`: the 32 bytes given; `EcdsaMessage(Sha256)`
//!   and `Ed25519`: SHA-256 of the data). The signature covers `authData ‖ clientDataHash`,
//!   not the data alone: a verifier needs the authenticator data, which
//!   [`driver::Fido2TokenSession::assertion`] returns with it. Reach it through
//!   `session.delegate_mut().as_any_mut()` and a downcast to [`driver::Fido2TokenSession`];
//!   [`driver::Fido2TokenSession::fido2`] gives the whole [`session::Fido2Session`].
//! - A touch clears a token's permissions on the authenticator (CTAP 2.1 §6.5.5.7), so every
//!   signature after the first asks the session's PIN callback again; deleting a key item
//!   deletes the credential.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod apdu;
pub mod cbor;
pub mod client;
pub mod ctap;
pub mod driver;
pub mod pin_protocol;
pub mod session;
#[cfg(feature = "simulator")]
pub mod sim;
