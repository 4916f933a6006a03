//! The authenticator as an NFC / CCID card (CTAP 2.1 §11.3): SELECT of the FIDO AID, then
//! NFCCTAP_MSG APDUs carrying the command byte and CBOR.
//!
//! Commands come as short or extended APDUs, and may be split by ISO 7816-4 command chaining
//! (CLA bit 0x10). Answers longer than Le are split with 61xx and fetched with GET RESPONSE
//! (INS C0). The simulator answers every request at once, so it never says 9100
//! ("processing") and NFCCTAP_GETRESPONSE (INS 11) finds nothing pending (6985).

use std::sync::{Arc, Mutex};

use token_core::CardSimulator;

use super::engine::{Inner, Up, UpSource};
use super::lock;
use crate::ctap::{FIDO_AID, INS_NFCCTAP_GETRESPONSE, INS_NFCCTAP_MSG};

/// The ATR of the simulated card: a YubiKey 5 NFC's (T=1, historical bytes `80 73 C0 21 C0
/// 57 59 75 62 69 4B 65 79`, "YubiKey"), which pcscd and pyscard accept, as the PIV simulator
/// uses.
pub const FIDO_ATR: [u8; 23] = [
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

/// The most command data gathered across a chain.
const MAX_CHAIN: usize = 8 * 1024;

/// The FIDO applet as a [`CardSimulator`]: shares its authenticator with the
/// [`super::Authenticator`] it came from. Over NFC the tap is the user's presence: requests
/// that need it succeed unless [`super::Authenticator::set_nfc_presence`] said `false`.
pub struct FidoCard {
    pub(super) shared: Arc<Mutex<Inner>>,
    pub(super) selected: bool,
    pub(super) chain: Vec<u8>,
    pub(super) pending: Vec<u8>,
}

impl std::fmt::Debug for FidoCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidoCard")
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

struct Tap(bool);

impl UpSource for Tap {
    fn user_presence(&mut self) -> Up {
        if self.0 {
            Up::Confirmed
        } else {
            Up::Denied
        }
    }
}

fn sw(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

impl FidoCard {
    /// Sends `data` with 9000, or its first `ne` bytes with 61xx and the rest kept for GET
    /// RESPONSE.
    fn respond(&mut self, mut data: Vec<u8>, le: Option<usize>) -> Vec<u8> {
        let ne = le.unwrap_or(256).max(1);
        if data.len() <= ne {
            self.pending.clear();
            data.extend_from_slice(&[0x90, 0x00]);
            return data;
        }
        self.pending = data.split_off(ne);
        let left = self.pending.len().min(256);
        data.extend_from_slice(&[0x61, (left % 256) as u8]);
        data
    }

    fn ctap(&mut self, request: &[u8]) -> Vec<u8> {
        let mut inner = lock(&self.shared);
        let refuse = inner
            .observed
            .nfc_refuse
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut tap = Tap(!refuse);
        inner.process(request, &mut tap)
    }
}

impl CardSimulator for FidoCard {
    fn atr(&self) -> Vec<u8> {
        FIDO_ATR.to_vec()
    }

    fn power_on(&mut self) {
        self.selected = false;
        self.chain.clear();
        self.pending.clear();
        lock(&self.shared).power_cycle();
    }

    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let Ok(c) = token_core::Command::decode(command) else {
            self.chain.clear();
            return sw(0x6700);
        };
        let chained = c.cla & 0x10 != 0;
        let cla = c.cla & !0x10;
        if c.ins.0 != 0xC0 {
            self.pending.clear();
        }
        if !chained && c.ins.0 != INS_NFCCTAP_MSG {
            self.chain.clear();
        }
        match (cla, c.ins.0) {
            (0x00, 0xA4) => {
                if c.p1 != 0x04 {
                    return sw(0x6A86);
                }
                if !c.data.is_empty() && FIDO_AID.starts_with(&c.data) {
                    self.selected = true;
                    self.respond(b"FIDO_2_0".to_vec(), c.le)
                } else {
                    self.selected = false;
                    sw(0x6A82)
                }
            }
            (0x00, 0xC0) => {
                if self.pending.is_empty() {
                    return sw(0x6985);
                }
                let data = std::mem::take(&mut self.pending);
                self.respond(data, c.le)
            }
            (0x80, INS_NFCCTAP_MSG) => {
                if !self.selected {
                    return sw(0x6985);
                }
                if self.chain.len() + c.data.len() > MAX_CHAIN {
                    self.chain.clear();
                    return sw(0x6700);
                }
                self.chain.extend_from_slice(&c.data);
                if chained {
                    return sw(0x9000);
                }
                let request = std::mem::take(&mut self.chain);
                if request.is_empty() {
                    return sw(0x6700);
                }
                let answer = self.ctap(&request);
                self.respond(answer, c.le)
            }
            (0x80, INS_NFCCTAP_GETRESPONSE) => sw(0x6985),
            (0x00 | 0x80, _) => sw(0x6D00),
            _ => sw(0x6E00),
        }
    }
}
