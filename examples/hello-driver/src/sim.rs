//! The "hello" card simulator: what a real card would do, as an APDU handler.

use ed25519_dalek::{Signer, SigningKey};
use token_core::{CardSimulator, Command, Response, StatusWord};

use crate::AID;

const MAX_TRIES: u8 = 3;
/// Longest message the card accepts across a command chain.
const MAX_MESSAGE: usize = 4096;

/// A simulated "hello" card: one Ed25519 key, a PIN with three tries, a serial number.
///
/// Its state (key, PIN, counter) survives power cycles; the selected application and the
/// verified PIN do not.
pub struct HelloCard {
    serial: [u8; 4],
    key: SigningKey,
    pin: Vec<u8>,
    tries_left: u8,
    selected: bool,
    verified: bool,
    chain: Vec<u8>,
}

impl core::fmt::Debug for HelloCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HelloCard")
            .field("serial", &self.serial)
            .field("tries_left", &self.tries_left)
            .finish_non_exhaustive()
    }
}

impl HelloCard {
    /// A card with this serial, a key derived from `seed`, and the PIN `pin`.
    pub fn new(serial: u32, seed: [u8; 32], pin: &str) -> Self {
        Self {
            serial: serial.to_be_bytes(),
            key: SigningKey::from_bytes(&seed),
            pin: pin.as_bytes().to_vec(),
            tries_left: MAX_TRIES,
            selected: false,
            verified: false,
            chain: Vec::new(),
        }
    }

    /// PIN tries left.
    pub fn tries_left(&self) -> u8 {
        self.tries_left
    }

    fn status(sw: StatusWord) -> Vec<u8> {
        sw.to_bytes().to_vec()
    }

    fn ok(data: &[u8]) -> Vec<u8> {
        Response::new(data.to_vec(), StatusWord::SUCCESS).encode()
    }

    fn verify(&mut self, pin: &[u8]) -> Vec<u8> {
        if self.tries_left == 0 {
            return Self::status(StatusWord::AUTH_METHOD_BLOCKED);
        }
        if pin.is_empty() {
            return if self.verified {
                Self::ok(&[])
            } else {
                Self::status(StatusWord::from_bytes(0x63, 0xC0 | self.tries_left))
            };
        }
        if pin == self.pin.as_slice() {
            self.tries_left = MAX_TRIES;
            self.verified = true;
            Self::ok(&[])
        } else {
            self.tries_left -= 1;
            self.verified = false;
            if self.tries_left == 0 {
                Self::status(StatusWord::AUTH_METHOD_BLOCKED)
            } else {
                Self::status(StatusWord::from_bytes(0x63, 0xC0 | self.tries_left))
            }
        }
    }
}

impl CardSimulator for HelloCard {
    fn atr(&self) -> Vec<u8> {
        // T=1 (TD1 = 80, TD2 = 01) and five historical bytes: category 80, then the card
        // capabilities (COMPACT-TLV tag 7, three bytes; ISO 7816-4 §8.1.1.2.7) announcing
        // command chaining (third byte, b8). The TCK closes it.
        let mut atr = vec![0x3B, 0x85, 0x80, 0x01];
        atr.extend_from_slice(&[0x80, 0x73, 0x00, 0x00, 0x80]);
        let tck = atr.iter().skip(1).fold(0u8, |a, b| a ^ b);
        atr.push(tck);
        atr
    }

    fn power_on(&mut self) {
        self.selected = false;
        self.verified = false;
        self.chain.clear();
    }

    fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        let Ok(cmd) = Command::decode(raw) else {
            return Self::status(StatusWord::WRONG_LENGTH);
        };
        // Command chaining (ISO 7816-4 §5.1.1.1): buffer every block flagged with CLA bit 0x10.
        if cmd.cla & 0x10 != 0 {
            if self.chain.len() + cmd.data.len() > MAX_MESSAGE {
                self.chain.clear();
                return Self::status(StatusWord::WRONG_LENGTH);
            }
            self.chain.extend_from_slice(&cmd.data);
            return Self::ok(&[]);
        }
        let mut data = std::mem::take(&mut self.chain);
        data.extend_from_slice(&cmd.data);
        match (cmd.ins.0, cmd.p1, cmd.p2) {
            (0xA4, 0x04, 0x00) => {
                // Selecting another application drops the PIN state; re-selecting this one
                // keeps it, as PIV and OpenPGP cards do.
                self.selected = data == AID;
                if !self.selected {
                    self.verified = false;
                }
                if self.selected {
                    Self::ok(&[])
                } else {
                    Self::status(StatusWord::FILE_NOT_FOUND)
                }
            }
            _ if !self.selected => Self::status(StatusWord::CONDITIONS_NOT_SATISFIED),
            (0xCA, 0x00, 0x01) => Self::ok(&self.serial),
            (0xCA, 0x00, 0x02) => Self::ok(self.key.verifying_key().as_bytes()),
            (0xCA, _, _) => Self::status(StatusWord::REFERENCED_DATA_NOT_FOUND),
            (0x20, 0x00, 0x80) => self.verify(&data),
            (0x20, _, _) => Self::status(StatusWord::INCORRECT_P1P2),
            (0x2A, 0x9E, 0x9A) if !self.verified => {
                Self::status(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
            }
            (0x2A, 0x9E, 0x9A) => Self::ok(&self.key.sign(&data).to_bytes()),
            (0x2A, _, _) => Self::status(StatusWord::INCORRECT_P1P2),
            _ => Self::status(StatusWord::INS_NOT_SUPPORTED),
        }
    }
}
