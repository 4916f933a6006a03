//! The byte channels transports supply: APDUs to a card, CTAPHID messages to an authenticator.

use async_trait::async_trait;

use crate::error::Result;

/// What a card channel (reader plus card) can carry, as the transport learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelCaps {
    /// The reader and the card's ATR allow extended-length APDUs (ISO 7816-4 §5.1).
    pub extended_length: bool,
    /// The longest command APDU the reader accepts, in bytes.
    pub max_command: usize,
    /// The longest response APDU the reader delivers, in bytes.
    pub max_response: usize,
}

impl Default for ChannelCaps {
    fn default() -> Self {
        Self {
            extended_length: false,
            max_command: 261,
            max_response: 258,
        }
    }
}

/// A raw APDU pipe to one card in one slot, supplied by a transport (PC/SC, NFC, a simulator).
///
/// Implementations move bytes and nothing else: GET RESPONSE, wrong-Le resends, chaining and
/// extended length are decided once, above this trait, by [`crate::SmartCard`]. Blocking
/// transports run their I/O off the async executor (see [`crate::unblock`]).
///
/// A card that is removed must make every later call fail with
/// [`crate::ErrorCode::TokenNotFound`] (or `CommunicationError` when the transport cannot tell),
/// promptly: never hang.
#[async_trait]
pub trait CardChannel: Send + Sync {
    /// Sends one command APDU and returns the whole response APDU, status word included.
    ///
    /// # Errors
    /// `TokenNotFound` when the card is gone, `CommunicationError` for transport failures.
    async fn transmit(&self, command: &[u8]) -> Result<Vec<u8>>;

    /// What this channel can carry.
    fn caps(&self) -> ChannelCaps {
        ChannelCaps::default()
    }

    /// The card's answer to reset, as it was read at connect.
    fn atr(&self) -> Vec<u8>;

    /// Starts an exclusive section: no other process talks to the card until
    /// [`CardChannel::end_exclusive`]. PC/SC maps this to `SCardBeginTransaction`.
    ///
    /// A channel may defer the work to the section's first command (transport-pcsc queues it
    /// ahead of that command on the card's I/O thread, saving a round trip per section). It
    /// must then keep the contract: no command of the section reaches the card outside the
    /// exclusive section, and if beginning fails, every command of the section fails with
    /// that error until the section ends.
    ///
    /// # Errors
    /// `TokenNotFound` when the card is gone; `CommunicationError` otherwise.
    async fn begin_exclusive(&self) -> Result<()> {
        Ok(())
    }

    /// Ends the exclusive section begun by [`CardChannel::begin_exclusive`]. It must not block
    /// for long: it runs when a session guard is dropped.
    fn end_exclusive(&self) {}

    /// How many times the card was reset since this channel connected, by this program or by
    /// another one (PC/SC's `SCARD_W_RESET_CARD`). A reset clears the selected application and
    /// every verified PIN: a driver records the count when a session verifies a PIN and treats
    /// the PIN as lost when it changed. Channels that cannot tell answer 0.
    fn reset_count(&self) -> u64 {
        0
    }

    /// Resets the card (warm reset); selected applications and verified PINs are lost.
    ///
    /// # Errors
    /// `NotImplemented` where the transport cannot reset.
    async fn reset(&self) -> Result<()> {
        Err(crate::Error::not_implemented("card reset"))
    }
}

/// A message pipe to a FIDO authenticator speaking CTAPHID (CTAP 2.1 §11.2), supplied by a
/// HID transport or a simulator. Framing into 64-byte reports, channel allocation and
/// keep-alives are the transport's job; this trait carries whole messages.
#[async_trait]
pub trait CtapChannel: Send + Sync {
    /// Sends one CTAPHID command (`cmd` with the high bit set, e.g. 0x90 for CBOR) and returns
    /// the payload of the answer.
    ///
    /// # Errors
    /// `TokenNotFound` when the device is gone; `CommunicationError` for framing errors, with
    /// the CTAPHID error code underneath.
    async fn transact(&self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>>;

    /// The capability flags of the CTAPHID INIT answer (WINK 01, CBOR 04, NMSG 08).
    fn capabilities(&self) -> u8;
}

/// The status byte of a CTAP keep-alive (CTAPHID KEEPALIVE, CTAP 2.1 §11.2.9.1.5; NFC's
/// status 9100 polling carries the same two states): what an authenticator is waiting for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepaliveStatus(pub u8);

impl KeepaliveStatus {
    /// 1 STATUS_PROCESSING: the authenticator is still working.
    pub const PROCESSING: Self = Self(1);
    /// 2 STATUS_UPNEEDED: the authenticator waits for the user to touch it.
    pub const UP_NEEDED: Self = Self(2);

    /// The spec's name, or `None` for a status it does not define.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("STATUS_PROCESSING"),
            2 => Some("STATUS_UPNEEDED"),
            _ => None,
        }
    }
}

impl std::fmt::Debug for KeepaliveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "KeepaliveStatus({})", self.0),
        }
    }
}
