//! # driver-fido2
//!
//! FIDO2 security keys as tokenkit tokens (work in progress; see the module list).
//!
//! - [`cbor`]: CTAP2's CBOR: a total, bounded decoder (arbitrary bytes give an error, never a
//!   panic or an allocation larger than the input) and the canonical encoding CTAP2 requires.
//! - [`ctap`]: CTAP 2.1's numbers: commands, status codes, subcommands, permissions.
//! - [`pin_protocol`]: PIN/UV auth protocols 1 and 2 (CTAP 2.1 §6.5.6 and §6.5.7), for both
//!   the platform and the authenticator side: key agreement, encryption, authentication, and
//!   PIN padding and hashing.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod cbor;
pub mod ctap;
pub mod pin_protocol;
#[cfg(feature = "simulator")]
pub mod sim;
