//! An authenticator in memory: a [`CtapChannel`] over any [`CtapHandler`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::channel::{CtapChannel, KeepaliveStatus};
use crate::error::{Error, Result, Underlying};
use crate::sim::{CtapHandler, Presence, UserPresence};

/// CTAPHID commands as [`CtapChannel::transact`] takes them (high bit set).
const PING: u8 = 0x81;
const MSG: u8 = 0x83;
const WINK: u8 = 0x88;
const CBOR: u8 = 0x90;
/// Capabilities: WINK, CBOR, NMSG (no CTAP1 messages).
const CAPABILITIES: u8 = 0x01 | 0x04 | 0x08;
/// CTAPHID_ERR_INVALID_CMD.
const ERR_INVALID_CMD: u8 = 0x01;

/// A FIDO authenticator in memory: a [`CtapChannel`] that hands each request straight to a
/// [`CtapHandler`], with no HID framing in between (driver tests, layer two of the testing
/// plan; `transport-hid`'s simulated device runs the same handler behind real CTAPHID
/// framing).
///
/// Clones share the authenticator. The simulated user answers presence requests as
/// [`MemoryAuthenticator::set_user_presence`] says (at once, by default); removing the
/// device ([`MemoryAuthenticator::remove`], [`MemoryAuthenticator::fail_after`]) makes
/// requests fail with `TokenNotFound`.
///
/// ```
/// use token_core::testkit::MemoryAuthenticator;
/// use token_core::{block_on, CtapChannel, CtapHandler, Presence};
///
/// struct Echo;
/// impl CtapHandler for Echo {
///     fn handle_cbor(&mut self, request: &[u8], _: &mut dyn Presence) -> Vec<u8> {
///         [&[0u8][..], request].concat()
///     }
/// }
///
/// let device = MemoryAuthenticator::new(Echo);
/// assert_eq!(block_on(device.transact(0x90, &[0x04]))?, vec![0x00, 0x04]);
/// device.remove();
/// assert!(block_on(device.transact(0x90, &[0x04])).is_err());
/// # Ok::<(), token_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryAuthenticator {
    handler: Arc<Mutex<Box<dyn CtapHandler>>>,
    user: Arc<Mutex<UserPresence>>,
    present: Arc<AtomicBool>,
    /// Requests left before the device is pulled; 0 means never.
    fail_countdown: Arc<AtomicU32>,
    keepalives: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl core::fmt::Debug for MemoryAuthenticator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryAuthenticator")
            .field("present", &self.is_present())
            .finish_non_exhaustive()
    }
}

impl MemoryAuthenticator {
    /// Wraps `handler`; the simulated user touches the device whenever asked.
    pub fn new(handler: impl CtapHandler) -> Self {
        Self {
            handler: Arc::new(Mutex::new(Box::new(handler))),
            user: Arc::new(Mutex::new(UserPresence::Confirmed)),
            present: Arc::new(AtomicBool::new(true)),
            fail_countdown: Arc::new(AtomicU32::new(0)),
            keepalives: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How the simulated user answers from now on: touch ([`UserPresence::Confirmed`]), the
    /// request canceled while waiting ([`UserPresence::Canceled`]), or no touch in time
    /// ([`UserPresence::TimedOut`]).
    pub fn set_user_presence(&self, answer: UserPresence) {
        *self.user.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// Pulls the device: every later request fails with `TokenNotFound`.
    pub fn remove(&self) {
        self.present.store(false, Ordering::Release);
    }

    /// True until the device is pulled.
    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Pulls the device during the `n`-th request from now (1 = the next one): the handler
    /// does not answer it, and it and all later requests fail with `TokenNotFound`.
    pub fn fail_after(&self, n: u32) {
        self.fail_countdown.store(n, Ordering::Release);
    }

    /// Keep-alives the handler has sent.
    pub fn keepalives(&self) -> u64 {
        self.keepalives.load(Ordering::Acquire)
    }

    /// Requests the handler has answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    fn gone() -> Error {
        Error::token_not_found("the authenticator was removed")
    }
}

/// The presence a [`MemoryAuthenticator`] hands its handler.
struct MemoryPresence<'a> {
    user: UserPresence,
    keepalives: &'a AtomicU64,
}

impl Presence for MemoryPresence<'_> {
    fn keepalive(&mut self, _status: KeepaliveStatus) -> bool {
        self.keepalives.fetch_add(1, Ordering::AcqRel);
        self.user != UserPresence::Canceled
    }

    fn user_presence(&mut self) -> UserPresence {
        self.keepalive(KeepaliveStatus::UP_NEEDED);
        self.user
    }
}

#[crate::async_trait]
impl CtapChannel for MemoryAuthenticator {
    async fn transact(&self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>> {
        if !self.is_present() {
            return Err(Self::gone());
        }
        let left = self.fail_countdown.load(Ordering::Acquire);
        if left > 0 {
            self.fail_countdown.store(left - 1, Ordering::Release);
            if left == 1 {
                self.remove();
                return Err(Self::gone());
            }
        }
        let mut presence = MemoryPresence {
            user: *self.user.lock().unwrap_or_else(PoisonError::into_inner),
            keepalives: &self.keepalives,
        };
        let mut handler = self.handler.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = match cmd {
            CBOR => handler.handle_cbor(payload, &mut presence),
            MSG if CAPABILITIES & 0x08 == 0 => handler.handle_msg(payload, &mut presence),
            PING => payload.to_vec(),
            WINK => {
                handler.wink();
                Vec::new()
            }
            _ => {
                return Err(Error::communication(
                    "the authenticator does not know this CTAPHID command",
                )
                .with_underlying(Underlying::CtapHid(ERR_INVALID_CMD)))
            }
        };
        self.requests.fetch_add(1, Ordering::AcqRel);
        Ok(answer)
    }

    fn capabilities(&self) -> u8 {
        CAPABILITIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::block_on;
    use crate::ErrorCode;

    /// Answers OK with the request, after asking for the user when the request starts 0x01.
    struct NeedsTouch;

    impl CtapHandler for NeedsTouch {
        fn handle_cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
            if request.first() == Some(&0x01) {
                match presence.user_presence() {
                    UserPresence::Confirmed => {}
                    UserPresence::Canceled => return vec![0x2D],
                    UserPresence::TimedOut => return vec![0x2F],
                }
            }
            [&[0u8][..], request].concat()
        }
    }

    #[test]
    fn presence_answers_follow_the_test_and_keepalives_are_counted() {
        let device = MemoryAuthenticator::new(NeedsTouch);
        assert_eq!(block_on(device.transact(CBOR, &[0x01])).unwrap(), [0, 1]);
        assert_eq!(device.keepalives(), 1);
        device.set_user_presence(UserPresence::Canceled);
        assert_eq!(block_on(device.transact(CBOR, &[0x01])).unwrap(), [0x2D]);
        device.set_user_presence(UserPresence::TimedOut);
        assert_eq!(block_on(device.transact(CBOR, &[0x01])).unwrap(), [0x2F]);
        // No presence needed: no keep-alive.
        assert_eq!(block_on(device.transact(CBOR, &[0x04])).unwrap(), [0, 4]);
        assert_eq!(device.keepalives(), 3);
        assert_eq!(device.requests(), 4);
    }

    #[test]
    fn pulled_mid_request_and_unknown_commands() {
        let device = MemoryAuthenticator::new(NeedsTouch);
        assert_eq!(block_on(device.transact(PING, b"hi")).unwrap(), b"hi");
        let e = block_on(device.transact(0xC1, &[])).unwrap_err();
        assert_eq!(e.underlying(), &Underlying::CtapHid(ERR_INVALID_CMD));
        device.fail_after(2);
        assert!(block_on(device.transact(CBOR, &[0x04])).is_ok());
        let e = block_on(device.transact(CBOR, &[0x04])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TokenNotFound);
        assert!(!device.is_present());
        assert_eq!(device.requests(), 2);
    }
}
