//! The OpenPGP card 3.4 simulator (feature `simulator`): [`OpenPgpCard`].
//!
//! | command | what it does here |
//! | --- | --- |
//! | SELECT `A4 04 00` | by the 6-byte prefix or the full AID; 6285 once terminated |
//! | GET DATA `CA` | 4F, 5E, 65, 6E, 7A, 5B, 5F2D, 5F35, 5F50, 5F52, 7F21, 7F66, C0-C6, CD, DE, 93, F9 |
//! | SELECT DATA `A5` / GET NEXT DATA `CC` | the three 7F21 occurrences: AUT, DEC, SIG |
//! | PUT DATA `DA` (PW3) | 5B, 5F2D, 5F35, 5E, 5F50, 7F21, C1-C3 (ECC, RSA 2048/3072/4096 with any import format; a change drops the key), C4 byte 1, C7-CC, CE-D0, D3, D5 (AES key), F9 (KDF-DO: resets the PINs to their derived factory values) |
//! | PUT DATA `DB 3FFF` (PW3) | key import with the extended header list: ECC 92, optional 99; RSA 91, 92, 93, then 94-96 and 97 as the import format says (a modulus given must match) |
//! | VERIFY `20` | 81 / 82 / 83, three tries, 63Cx and 6983, empty data asks, P1 FF resets |
//! | CHANGE REFERENCE DATA `24` | PW1 (81, 6-127 bytes), PW3 (83, 8-127 bytes) |
//! | RESET RETRY COUNTER `2C` | P1 00 with the resetting code, P1 02 after PW3 |
//! | GENERATE `47` | 80 generates (PW3), 81 reads; answers 7F49 { 86 } (ECC) or 7F49 { 81 n, 82 e } (RSA) |
//! | PSO `2A 9E 9A` | raw r‖s ECDSA over the digest, EdDSA over the message, RSA PKCS#1 v1.5 over the DigestInfo (at most 40% of the modulus); counts; PW1 81 once unless C4 says several |
//! | PSO `2A 80 86` | ECDH with A6 { 7F49 { 86 point } }; RSA with 00 ‖ cryptogram (PKCS#1 v1.5 padding removed); AES-CBC with 02 ‖ cryptogram |
//! | PSO `2A 86 80` | AES-CBC (zero IV) with the key in D5, answered 02 ‖ cryptogram |
//! | INTERNAL AUTHENTICATE `88` | the authentication key (ECDSA, EdDSA, RSA over the DigestInfo), after PW1 82 |
//! | TERMINATE DF `E6` / ACTIVATE FILE `44` | factory reset, with PW3 verified or blocked |
//! | GET RESPONSE `C0` | the rest of any answer longer than Le; chaining (CLA 10) and extended length in |
//!
//! The KDF-DO: the card compares what VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER
//! send with what it holds, so with KDF_ITERSALTED_S2K on it holds the hashes; writing F9
//! sets the PINs to the hashes of 123456 / 12345678 (87 / 88 when given, else derived with
//! the DO's salts) and removes the resetting code, as a YubiKey does.
//!
//! Not implemented: GET CHALLENGE, MANAGE SECURITY ENVIRONMENT, user interaction flags
//! (D6-D8), private DOs (0101-0104), secure messaging, the algorithm information DO (FA); the
//! CRT parts of an imported RSA key are checked for length only (the card computes its own).

mod aes_cbc;
mod keys;
mod state;

use std::path::{Path, PathBuf};

use token_core::{CardSimulator, Command, Error, Result, StatusWord, Tag, Tlv, TlvBuilder};
use zeroize::Zeroizing;

use self::keys::SimKey;
use self::state::{State, MAX_TRIES};
use crate::types::{Algorithm, KeyRef, AID_PREFIX};

type SwResult<T> = core::result::Result<T, StatusWord>;

/// The longest command data the card takes, over a chain or in one extended APDU (7F66).
const MAX_COMMAND: usize = 0x0800;
/// The longest cardholder certificate.
const MAX_CERT: usize = 0x0800;
/// 6285: the selected file is in termination state (ISO 7816-4).
const SW_TERMINATED: StatusWord = StatusWord::from_bytes(0x62, 0x85);
/// The manufacturer ID 0xFFFE: "for test purposes" (OpenPGP card 3.4 §4.2.1).
pub const TEST_MANUFACTURER: u16 = 0xFFFE;

/// A simulated OpenPGP card 3.4: ECC keys (ECDSA P-256/P-384, EdDSA Ed25519, ECDH P-256/P-384
/// and X25519) and RSA 2048/3072/4096 keys, PW1/PW3/resetting code with three tries, the
/// KDF-DO, cardholder data and certificates, the signature counter, key generation and import,
/// PSO:ENCIPHER / DECIPHER with an AES key, factory reset.
///
/// Its state survives power cycles, and is kept in a file when the card is made with
/// [`OpenPgpCard::with_state_file`]. What a power cycle clears (selection, verified PINs, a
/// pending chain or response) it clears in [`CardSimulator::power_on`].
pub struct OpenPgpCard {
    state: State,
    path: Option<PathBuf>,
    selected: bool,
    pw1_81: bool,
    pw1_82: bool,
    pw3: bool,
    chain: Zeroizing<Vec<u8>>,
    chain_header: Option<(u8, u8, u8)>,
    pending: Vec<u8>,
    occurrence: usize,
}

impl core::fmt::Debug for OpenPgpCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenPgpCard")
            .field("serial", &self.state.serial)
            .field("pw1_tries", &self.state.pw1_tries)
            .field("pw3_tries", &self.state.pw3_tries)
            .finish_non_exhaustive()
    }
}

fn sw(sw: StatusWord) -> Vec<u8> {
    sw.to_bytes().to_vec()
}

fn tries_sw(left: u8) -> StatusWord {
    if left == 0 {
        StatusWord::AUTH_METHOD_BLOCKED
    } else {
        StatusWord::from_bytes(0x63, 0xC0 | left.min(15))
    }
}

impl OpenPgpCard {
    /// A factory-fresh card with this serial number: no keys, PW1 `123456`, PW3 `12345678`, no
    /// resetting code, algorithm attributes ECDSA P-256 / ECDH P-256 / ECDSA P-256.
    pub fn new(serial: u32) -> Self {
        Self::from_state(State::factory(serial.to_be_bytes()), None)
    }

    /// A card whose state lives in `path`: loaded when the file exists, else a fresh card with
    /// `serial`, saved there. Every change is saved (atomically) before the answer is given.
    ///
    /// # Errors
    /// `CorruptedData` for a file that is not a state file, `CommunicationError` when it cannot
    /// be read or written.
    pub fn with_state_file(path: impl AsRef<Path>, serial: u32) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let state = if path.exists() {
            State::load(&path)?
        } else {
            let s = State::factory(serial.to_be_bytes());
            s.save(&path)?;
            s
        };
        Ok(Self::from_state(state, Some(path)))
    }

    fn from_state(state: State, path: Option<PathBuf>) -> Self {
        Self {
            state,
            path,
            selected: false,
            pw1_81: false,
            pw1_82: false,
            pw3: false,
            chain: Zeroizing::new(Vec::new()),
            chain_header: None,
            pending: Vec::new(),
            occurrence: 0,
        }
    }

    /// Puts a private key in a slot (as an imported key), setting the slot's algorithm.
    ///
    /// # Errors
    /// `BadParameter` when `secret` is not a key of `algorithm`, or the slot cannot use it.
    ///
    /// `secret` is the scalar or seed of an ECC key, or the DER `RSAPrivateKey` (PKCS#1,
    /// `openssl rsa -traditional -outform DER`) of an RSA key of `algorithm`'s size.
    pub fn put_key(&mut self, slot: KeyRef, algorithm: Algorithm, secret: &[u8]) -> Result<()> {
        if !algorithm.fits_slot(slot) {
            return Err(Error::bad_parameter(
                "the slot does not take this algorithm",
            ));
        }
        let key = SimKey::from_secret(algorithm, secret)
            .ok_or_else(|| Error::bad_parameter("not a valid private key"))?;
        let i = slot.index();
        self.state.attrs[i] = algorithm;
        self.state.keys[i] = Some(key);
        self.state.origin[i] = 2;
        self.changed()
    }

    /// Sets a slot's algorithm attributes (as PUT DATA C1-C3 does: a change removes the key).
    ///
    /// # Errors
    /// `BadParameter` when the slot cannot use the algorithm.
    pub fn set_algorithm(&mut self, slot: KeyRef, algorithm: Algorithm) -> Result<()> {
        if !algorithm.fits_slot(slot) {
            return Err(Error::bad_parameter(
                "the slot does not take this algorithm",
            ));
        }
        let i = slot.index();
        if self.state.attrs[i] != algorithm {
            self.state.attrs[i] = algorithm;
            self.state.keys[i] = None;
            self.state.origin[i] = 0;
        }
        self.changed()
    }

    /// Sets the AES key of PSO:ENCIPHER / DECIPHER (DO D5): 16 or 32 bytes.
    ///
    /// # Errors
    /// `BadParameter` for a key of another length.
    pub fn set_aes_key(&mut self, key: &[u8]) -> Result<()> {
        if key.len() != 16 && key.len() != 32 {
            return Err(Error::bad_parameter("an AES key has 16 or 32 bytes"));
        }
        self.state.aes_key = Zeroizing::new(key.to_vec());
        self.changed()
    }

    /// Generates a fresh key in each of the three slots with the slot's algorithm (by default
    /// ECDSA P-256, ECDH P-256, ECDSA P-256), as a demonstration card would hold them.
    ///
    /// # Errors
    /// `CommunicationError` when the system random source fails, state file errors.
    pub fn generate_keys(&mut self) -> Result<()> {
        for slot in KeyRef::ALL {
            let key = SimKey::generate(self.state.attrs[slot.index()])
                .map_err(|_| Error::communication("the system random source failed"))?;
            self.install(slot, key, 1);
        }
        self.changed()
    }

    /// The public key in a slot, as the card gives it (uncompressed point, or 32 bytes), or
    /// for RSA the DER `RSAPublicKey`.
    pub fn public_key(&self, slot: KeyRef) -> Option<Vec<u8>> {
        self.state.keys[slot.index()].as_ref()?.public().ok()
    }

    /// Sets the resetting code (8 to 127 bytes; empty removes it).
    ///
    /// # Errors
    /// `BadParameter` for a code of the wrong length.
    pub fn set_resetting_code(&mut self, code: &[u8]) -> Result<()> {
        if !code.is_empty() && !(8..=127).contains(&code.len()) {
            return Err(Error::bad_parameter("a resetting code has 8 to 127 bytes"));
        }
        self.state.rc = Zeroizing::new(code.to_vec());
        self.state.rc_tries = if code.is_empty() { 0 } else { MAX_TRIES };
        self.changed()
    }

    /// Stores a cardholder certificate (DER) for a slot's key (7F21, occurrence by slot).
    ///
    /// # Errors
    /// `BadParameter` for a certificate longer than 2048 bytes.
    pub fn set_certificate(&mut self, slot: KeyRef, der: &[u8]) -> Result<()> {
        if der.len() > MAX_CERT {
            return Err(Error::bad_parameter("certificate too long for the card"));
        }
        self.state.certs[cert_occurrence(slot)] = der.to_vec();
        self.changed()
    }

    /// Sets the cardholder name (5B, `Surname<<Given`).
    ///
    /// # Errors
    /// `BadParameter` for a name longer than 39 bytes.
    pub fn set_name(&mut self, name: &str) -> Result<()> {
        if name.len() > 39 {
            return Err(Error::bad_parameter(
                "a cardholder name has at most 39 bytes",
            ));
        }
        self.state.name = name.as_bytes().to_vec();
        self.changed()
    }

    /// Sets C4 byte 1: whether PW1 (81) stays valid for several signatures.
    ///
    /// # Errors
    /// State file errors.
    pub fn set_pw1_valid_for_several_signatures(&mut self, several: bool) -> Result<()> {
        self.state.pw1_multi = several;
        self.changed()
    }

    /// Tries left for PW1.
    pub fn pw1_tries(&self) -> u8 {
        self.state.pw1_tries
    }

    /// Tries left for PW3.
    pub fn pw3_tries(&self) -> u8 {
        self.state.pw3_tries
    }

    /// Tries left for the resetting code (0 when none is set).
    pub fn rc_tries(&self) -> u8 {
        self.state.rc_tries
    }

    /// The digital signature counter (7A/93).
    pub fn signature_count(&self) -> u32 {
        self.state.sig_count
    }

    /// True after TERMINATE DF, until ACTIVATE FILE.
    pub fn is_terminated(&self) -> bool {
        self.state.terminated
    }

    /// The full 16-byte AID: D2 76 00 01 24 01, version 3.4, manufacturer FFFE, the serial,
    /// RFU 0000.
    pub fn aid(&self) -> [u8; 16] {
        let mut aid = [0u8; 16];
        aid[..6].copy_from_slice(&AID_PREFIX);
        aid[6..8].copy_from_slice(&[0x03, 0x04]);
        aid[8..10].copy_from_slice(&TEST_MANUFACTURER.to_be_bytes());
        aid[10..14].copy_from_slice(&self.state.serial);
        aid
    }

    fn changed(&mut self) -> Result<()> {
        match &self.path {
            Some(p) => self.state.save(p),
            None => Ok(()),
        }
    }

    fn clear_volatile(&mut self) {
        self.selected = false;
        self.pw1_81 = false;
        self.pw1_82 = false;
        self.pw3 = false;
        self.chain.clear();
        self.chain_header = None;
        self.pending.clear();
        self.occurrence = 0;
    }

    // -- data objects (OpenPGP card 3.4 §4.4.1) --

    fn historical_bytes() -> Vec<u8> {
        // Category 00; card capabilities (73): chaining, extended Lc/Le, extended length
        // information in 7F66 (E0); status: LCS 05 (operational), 9000.
        vec![0x00, 0x73, 0x00, 0x00, 0xE0, 0x05, 0x90, 0x00]
    }

    fn extended_length_info() -> Vec<u8> {
        let max = (MAX_COMMAND as u16).to_be_bytes();
        vec![0x02, 0x02, max[0], max[1], 0x02, 0x02, max[0], max[1]]
    }

    fn extended_capabilities() -> Vec<u8> {
        let cert = (MAX_CERT as u16).to_be_bytes();
        // Key import (20), PW status changeable (10), algorithm attributes changeable (04),
        // PSO:DEC/ENC with AES (02), KDF-DO (01).
        vec![
            0x37, 0x00, 0x00, 0x00, cert[0], cert[1], 0x00, 0xFF, 0x00, 0x00,
        ]
    }

    fn pw_status(&self) -> Vec<u8> {
        let s = &self.state;
        vec![
            u8::from(s.pw1_multi),
            0x7F,
            0x7F,
            0x7F,
            s.pw1_tries,
            s.rc_tries,
            s.pw3_tries,
        ]
    }

    fn simple_object(&self, tag: u16) -> Option<Vec<u8>> {
        let s = &self.state;
        Some(match tag {
            0x004F => self.aid().to_vec(),
            0x005E => s.login.clone(),
            0x005B => s.name.clone(),
            0x5F2D => s.lang.clone(),
            0x5F35 => vec![s.sex],
            0x5F50 => s.url.clone(),
            0x5F52 => Self::historical_bytes(),
            0x00C0 => Self::extended_capabilities(),
            0x00C1..=0x00C3 => s.attrs[usize::from(tag - 0xC1)].attributes(),
            0x00C4 => self.pw_status(),
            0x00C5 => s.fingerprints.concat(),
            0x00C6 => s.ca_fingerprints.concat(),
            0x00CD => s.times.concat(),
            0x00DE => vec![0x01, s.origin[0], 0x02, s.origin[1], 0x03, s.origin[2]],
            0x0093 => s.sig_count.to_be_bytes()[1..].to_vec(),
            0x7F21 => s.certs[self.occurrence].clone(),
            0x00F9 if s.kdf.is_empty() => vec![0x81, 0x01, 0x00],
            0x00F9 => s.kdf.clone(),
            _ => return None,
        })
    }

    fn get_data(&self, tag: u16) -> SwResult<Vec<u8>> {
        let t = |v: u16| crate::types::tag(v);
        let mut b = TlvBuilder::new();
        match tag {
            0x0065 => {
                b.constructed(t(0x65), |b| {
                    for inner in [0x005B, 0x5F2D, 0x5F35] {
                        b.put(t(inner), &self.simple_object(inner).unwrap_or_default());
                    }
                });
            }
            0x006E => {
                b.constructed(t(0x6E), |b| {
                    b.put(t(0x4F), &self.aid());
                    b.put(t(0x5F52), &Self::historical_bytes());
                    b.put(t(0x7F66), &Self::extended_length_info());
                    b.constructed(t(0x73), |b| {
                        for inner in [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xCD, 0xDE] {
                            b.put(t(inner), &self.simple_object(inner).unwrap_or_default());
                        }
                    });
                });
            }
            0x007A => {
                b.constructed(t(0x7A), |b| {
                    b.put(t(0x93), &self.simple_object(0x93).unwrap_or_default());
                });
            }
            0x7F66 => {
                b.put(t(0x7F66), &Self::extended_length_info());
            }
            _ => {
                return self
                    .simple_object(tag)
                    .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)
            }
        }
        Ok(b.finish())
    }

    fn put_data(&mut self, tag: u16, data: &[u8]) -> SwResult<Vec<u8>> {
        if !self.pw3 {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let too_long = |max: usize| {
            if data.len() > max {
                Err(StatusWord::WRONG_LENGTH)
            } else {
                Ok(())
            }
        };
        let exact = |n: usize| {
            if data.len() == n {
                Ok(())
            } else {
                Err(StatusWord::WRONG_LENGTH)
            }
        };
        let s = &mut self.state;
        match tag {
            0x005B => {
                too_long(39)?;
                s.name = data.to_vec();
            }
            0x5F2D => {
                too_long(8)?;
                s.lang = data.to_vec();
            }
            0x5F35 => {
                exact(1)?;
                s.sex = data.first().copied().unwrap_or(b'9');
            }
            0x5F50 => {
                too_long(255)?;
                s.url = data.to_vec();
            }
            0x005E => {
                too_long(255)?;
                s.login = data.to_vec();
            }
            0x7F21 => {
                too_long(MAX_CERT)?;
                s.certs[self.occurrence] = data.to_vec();
            }
            0x00C1..=0x00C3 => {
                let i = usize::from(tag - 0xC1);
                let alg = Algorithm::from_attributes(data).ok_or(StatusWord::INCORRECT_DATA)?;
                if !alg.fits_slot(KeyRef::ALL[i]) {
                    return Err(StatusWord::INCORRECT_DATA);
                }
                if alg != s.attrs[i] {
                    // A new algorithm voids the key of the old one.
                    s.attrs[i] = alg;
                    s.keys[i] = None;
                    s.origin[i] = 0;
                }
            }
            0x00C4 => {
                exact(1)?;
                s.pw1_multi = data.first().is_some_and(|&b| b != 0);
            }
            0x00C7..=0x00C9 => {
                exact(20)?;
                s.fingerprints[usize::from(tag - 0xC7)].copy_from_slice(data);
            }
            0x00CA..=0x00CC => {
                exact(20)?;
                s.ca_fingerprints[usize::from(tag - 0xCA)].copy_from_slice(data);
            }
            0x00CE..=0x00D0 => {
                exact(4)?;
                s.times[usize::from(tag - 0xCE)].copy_from_slice(data);
            }
            0x00D3 => {
                if !data.is_empty() && !(8..=127).contains(&data.len()) {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                s.rc = Zeroizing::new(data.to_vec());
                s.rc_tries = if data.is_empty() { 0 } else { MAX_TRIES };
            }
            0x00F9 => {
                too_long(255)?;
                self.set_kdf(data)?;
            }
            0x00D5 => {
                if data.len() != 16 && data.len() != 32 {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                s.aes_key = Zeroizing::new(data.to_vec());
            }
            _ => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
        }
        Ok(Vec::new())
    }

    /// PUT DATA F9 (OpenPGP card 3.4 §4.3.2), as a YubiKey does it: the PINs go back to their
    /// factory values, as the KDF-DO derives them (87 and 88 when given, else derived here
    /// with the DO's salts), and the resetting code is removed. KDF 00 turns the KDF off.
    fn set_kdf(&mut self, data: &[u8]) -> SwResult<()> {
        let bad = StatusWord::INCORRECT_DATA;
        let kdf = crate::kdf::Kdf::parse(data).map_err(|_| bad)?;
        let find = |t: u32| -> SwResult<Option<&[u8]>> {
            Ok(Tlv::find(data, Tag::new(t))
                .map_err(|_| bad)?
                .map(|t| t.value))
        };
        let (pw1, pw3) = match &kdf {
            None => (
                Zeroizing::new(state::DEFAULT_PW1.to_vec()),
                Zeroizing::new(state::DEFAULT_PW3.to_vec()),
            ),
            Some(k) => {
                let given = |t: u32, which, default: &[u8]| -> SwResult<Zeroizing<Vec<u8>>> {
                    Ok(match find(t)? {
                        Some(h) if !h.is_empty() => Zeroizing::new(h.to_vec()),
                        _ => k.derive(which, default),
                    })
                };
                (
                    given(0x87, crate::kdf::PinRef::Pw1, state::DEFAULT_PW1)?,
                    given(0x88, crate::kdf::PinRef::Pw3, state::DEFAULT_PW3)?,
                )
            }
        };
        let s = &mut self.state;
        s.kdf = if kdf.is_some() {
            data.to_vec()
        } else {
            Vec::new()
        };
        s.pw1 = pw1;
        s.pw3 = pw3;
        s.pw1_tries = MAX_TRIES;
        s.pw3_tries = MAX_TRIES;
        s.rc = Zeroizing::new(Vec::new());
        s.rc_tries = 0;
        self.pw1_81 = false;
        self.pw1_82 = false;
        Ok(())
    }

    // -- PINs (OpenPGP card 3.4 §7.2.2 - §7.2.4) --

    fn verify(&mut self, p1: u8, p2: u8, pin: &[u8]) -> SwResult<Vec<u8>> {
        let flag = match p2 {
            0x81 => &mut self.pw1_81,
            0x82 => &mut self.pw1_82,
            0x83 => &mut self.pw3,
            _ => return Err(StatusWord::INCORRECT_P1P2),
        };
        if p1 == 0xFF {
            // 3.4 §7.2.2: P1 FF resets the access status.
            if !pin.is_empty() {
                return Err(StatusWord::WRONG_LENGTH);
            }
            *flag = false;
            return Ok(Vec::new());
        }
        if p1 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let (right, tries) = if p2 == 0x83 {
            (&self.state.pw3, &mut self.state.pw3_tries)
        } else {
            (&self.state.pw1, &mut self.state.pw1_tries)
        };
        if pin.is_empty() {
            return if *flag {
                Ok(Vec::new())
            } else {
                Err(tries_sw(*tries))
            };
        }
        if *tries == 0 {
            return Err(StatusWord::AUTH_METHOD_BLOCKED);
        }
        if pin == right.as_slice() {
            *tries = MAX_TRIES;
            *flag = true;
            Ok(Vec::new())
        } else {
            *tries -= 1;
            *flag = false;
            Err(tries_sw(*tries))
        }
    }

    fn change_reference(&mut self, p2: u8, data: &[u8]) -> SwResult<Vec<u8>> {
        let (pin, tries, min) = match p2 {
            0x81 => (&mut self.state.pw1, &mut self.state.pw1_tries, 6),
            0x83 => (&mut self.state.pw3, &mut self.state.pw3_tries, 8),
            _ => return Err(StatusWord::INCORRECT_P1P2),
        };
        if *tries == 0 {
            return Err(StatusWord::AUTH_METHOD_BLOCKED);
        }
        let (old, new) = data
            .split_at_checked(pin.len())
            .ok_or(StatusWord::WRONG_LENGTH)?;
        if !(min..=127).contains(&new.len()) {
            return Err(StatusWord::WRONG_LENGTH);
        }
        if old != pin.as_slice() {
            *tries -= 1;
            return Err(tries_sw(*tries));
        }
        *pin = Zeroizing::new(new.to_vec());
        *tries = MAX_TRIES;
        Ok(Vec::new())
    }

    fn reset_retry_counter(&mut self, p1: u8, data: &[u8]) -> SwResult<Vec<u8>> {
        let new = match p1 {
            0x00 => {
                if self.state.rc.is_empty() || self.state.rc_tries == 0 {
                    return Err(StatusWord::AUTH_METHOD_BLOCKED);
                }
                let (code, new) = data
                    .split_at_checked(self.state.rc.len())
                    .ok_or(StatusWord::WRONG_LENGTH)?;
                if !(6..=127).contains(&new.len()) {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                if code != self.state.rc.as_slice() {
                    self.state.rc_tries -= 1;
                    return Err(tries_sw(self.state.rc_tries));
                }
                self.state.rc_tries = MAX_TRIES;
                new
            }
            0x02 => {
                if !self.pw3 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                if !(6..=127).contains(&data.len()) {
                    return Err(StatusWord::WRONG_LENGTH);
                }
                data
            }
            _ => return Err(StatusWord::INCORRECT_P1P2),
        };
        self.state.pw1 = Zeroizing::new(new.to_vec());
        self.state.pw1_tries = MAX_TRIES;
        Ok(Vec::new())
    }

    // -- keys (§7.2.10 - §7.2.14, §4.4.3.12) --

    fn aes_key(&self) -> SwResult<&[u8]> {
        let key = self.state.aes_key.as_slice();
        if key.is_empty() {
            return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
        }
        Ok(key)
    }

    fn key(&self, slot: KeyRef) -> SwResult<&SimKey> {
        self.state.keys[slot.index()]
            .as_ref()
            .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)
    }

    fn public_template(key: &SimKey) -> SwResult<Vec<u8>> {
        let mut b = TlvBuilder::new();
        if key.algorithm.is_rsa() {
            let (n, e) = key.rsa_public()?;
            b.constructed(crate::types::tag(0x7F49), |b| {
                b.put(Tag::new(0x81), &n);
                b.put(Tag::new(0x82), &e);
            });
            return Ok(b.finish());
        }
        let point = key.public()?;
        b.constructed(crate::types::tag(0x7F49), |b| {
            b.put(Tag::new(0x86), &point);
        });
        Ok(b.finish())
    }

    fn generate(&mut self, p1: u8, data: &[u8]) -> SwResult<Vec<u8>> {
        let (crt, _) = Tlv::parse(data).map_err(|_| StatusWord::INCORRECT_DATA)?;
        let slot = u8::try_from(crt.tag.value())
            .ok()
            .and_then(KeyRef::from_crt)
            .ok_or(StatusWord::INCORRECT_DATA)?;
        match p1 {
            0x81 => Self::public_template(self.key(slot)?),
            0x80 => {
                if !self.pw3 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let i = slot.index();
                let key = SimKey::generate(self.state.attrs[i])?;
                let answer = Self::public_template(&key)?;
                self.install(slot, key, 1);
                Ok(answer)
            }
            _ => Err(StatusWord::INCORRECT_P1P2),
        }
    }

    fn install(&mut self, slot: KeyRef, key: SimKey, origin: u8) {
        let i = slot.index();
        self.state.keys[i] = Some(key);
        self.state.origin[i] = origin;
        self.state.fingerprints[i] = [0; 20];
        self.state.times[i] = [0; 4];
        if slot == KeyRef::Sig {
            self.state.sig_count = 0;
        }
    }

    /// Key import with the extended header list (OpenPGP card 3.4 §4.4.3.12).
    fn import(&mut self, data: &[u8]) -> SwResult<Vec<u8>> {
        if !self.pw3 {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let bad = StatusWord::INCORRECT_DATA;
        let outer = Tlv::parse_exact(data).map_err(|_| bad)?;
        if outer.tag.value() != 0x4D {
            return Err(bad);
        }
        let mut slot = None;
        let mut header: Option<&[u8]> = None;
        let mut concatenated: Option<&[u8]> = None;
        for child in outer.children() {
            let child = child.map_err(|_| bad)?;
            match child.tag.value() {
                0x7F48 => header = Some(child.value),
                0x5F48 => concatenated = Some(child.value),
                t => {
                    if let Some(k) = u8::try_from(t).ok().and_then(KeyRef::from_crt) {
                        slot = Some(k);
                    }
                }
            }
        }
        let (Some(slot), Some(header), Some(mut rest)) = (slot, header, concatenated) else {
            return Err(bad);
        };
        let alg = self.state.attrs[slot.index()];
        if let Algorithm::Rsa {
            bits,
            exponent_bits,
            format,
        } = alg
        {
            let mut parts: [Option<&[u8]>; 7] = [None; 7];
            for (tag, len) in header_list(header).ok_or(bad)? {
                let (value, tail) = rest.split_at_checked(len).ok_or(bad)?;
                rest = tail;
                let i = usize::try_from(tag.wrapping_sub(0x91)).map_err(|_| bad)?;
                let slot = parts.get_mut(i).ok_or(bad)?;
                if slot.replace(value).is_some() {
                    return Err(bad);
                }
            }
            let half = usize::from(bits) / 16;
            let [Some(e), Some(p), Some(q), pq, dp, dq, n] = parts else {
                return Err(bad);
            };
            let crt = [pq, dp, dq];
            if crt.iter().any(|v| v.is_some() != format.has_crt())
                || n.is_some() != format.has_modulus()
                || e.len() > usize::from(exponent_bits).div_ceil(8)
                || [p, q]
                    .iter()
                    .chain(crt.iter().flatten())
                    .any(|v| v.len() > half)
            {
                return Err(bad);
            }
            // The card computes the rest from e, p and q; a modulus given must match them.
            let uint = |v: &[u8]| rsa::BoxedUint::from_be_slice_vartime(v);
            let key = rsa::PrivateKey::from_p_q(uint(p), uint(q), uint(e)).map_err(|_| bad)?;
            let key = SimKey::from_rsa(alg, &key).map_err(|_| bad)?;
            if let Some(n) = n {
                if key.rsa_public()?.0 != crate::rsa_der::strip(n) {
                    return Err(bad);
                }
            }
            self.install(slot, key, 2);
            return Ok(Vec::new());
        }
        let mut private = None;
        let mut public = None;
        for (tag, len) in header_list(header).ok_or(bad)? {
            let (value, tail) = rest.split_at_checked(len).ok_or(bad)?;
            rest = tail;
            match tag {
                0x92 => private = Some(value),
                0x99 => public = Some(value),
                _ => return Err(bad),
            }
        }
        let private = private.ok_or(bad)?;
        // A scalar may come without its leading zero bytes.
        let mut secret = Zeroizing::new(vec![0u8; alg.private_len().saturating_sub(private.len())]);
        secret.extend_from_slice(private);
        let key = SimKey::from_secret(alg, &secret).ok_or(bad)?;
        if let Some(p) = public {
            let p = p
                .strip_prefix(&[0x40])
                .filter(|p| p.len() == 32)
                .unwrap_or(p);
            if key.public()? != p {
                return Err(bad);
            }
        }
        self.install(slot, key, 2);
        Ok(Vec::new())
    }

    fn pso(&mut self, p1: u8, p2: u8, data: &[u8]) -> SwResult<Vec<u8>> {
        match (p1, p2) {
            (0x9E, 0x9A) => {
                if !self.pw1_81 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let sig = self.key(KeyRef::Sig)?.sign(data)?;
                self.state.sig_count = (self.state.sig_count + 1).min(0xFF_FFFF);
                if !self.state.pw1_multi {
                    self.pw1_81 = false;
                }
                Ok(sig)
            }
            (0x86, 0x80) => {
                // PSO:ENCIPHER (§7.2.12): the answer is the padding indicator 02 and the
                // cryptogram.
                if !self.pw1_82 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let key = self.aes_key()?;
                let mut out = vec![0x02];
                out.extend_from_slice(&aes_cbc::cbc(key, data, true)?);
                Ok(out)
            }
            (0x80, 0x86) if data.first() == Some(&0x02) => {
                if !self.pw1_82 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let key = self.aes_key()?;
                Ok(aes_cbc::cbc(key, data.get(1..).unwrap_or(&[]), false)?.to_vec())
            }
            (0x80, 0x86) => {
                if !self.pw1_82 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                let key = self.key(KeyRef::Dec)?;
                if key.algorithm.is_rsa() {
                    // Padding indicator 00, then the cryptogram (§7.2.11).
                    let Some((&0x00, cryptogram)) = data.split_first() else {
                        return Err(StatusWord::INCORRECT_DATA);
                    };
                    return Ok(key.rsa_decrypt(cryptogram)?.to_vec());
                }
                let point = Tlv::find_path(
                    data,
                    &[Tag::new(0xA6), crate::types::tag(0x7F49), Tag::new(0x86)],
                )
                .ok()
                .flatten()
                .ok_or(StatusWord::INCORRECT_DATA)?;
                Ok(key.agree(point.value)?.to_vec())
            }
            _ => Err(StatusWord::INCORRECT_P1P2),
        }
    }

    fn dispatch(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> SwResult<Vec<u8>> {
        let tag = u16::from_be_bytes([p1, p2]);
        match ins {
            0xCA => self.get_data(tag),
            0xCC if tag == 0x7F21 => {
                if self.occurrence >= 2 {
                    return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
                }
                self.occurrence += 1;
                self.get_data(tag)
            }
            0xA5 => {
                // 3.4 §7.2.5: P1 is the occurrence, P2 04; data 60 04 5C 02 7F 21.
                if p2 != 0x04 || p1 > 2 {
                    return Err(StatusWord::INCORRECT_P1P2);
                }
                if !data.ends_with(&[0x5C, 0x02, 0x7F, 0x21]) {
                    return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
                }
                self.occurrence = usize::from(p1);
                Ok(Vec::new())
            }
            0xDA => self.put_data(tag, data),
            0xDB if tag == 0x3FFF => self.import(data),
            0x20 => self.verify(p1, p2, data),
            0x24 if p1 == 0 => self.change_reference(p2, data),
            0x2C if p2 == 0x81 => self.reset_retry_counter(p1, data),
            0x47 if p2 == 0 => self.generate(p1, data),
            0x2A => self.pso(p1, p2, data),
            0x88 if tag == 0 => {
                if !self.pw1_82 {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                self.key(KeyRef::Aut)?.sign(data)
            }
            0xE6 if tag == 0 => {
                if !(self.pw3 || self.state.pw3_tries == 0) {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                self.state.terminated = true;
                // The application stays selected: ACTIVATE FILE follows directly (§7.2.17).
                self.clear_volatile();
                self.selected = true;
                Ok(Vec::new())
            }
            0x44 if tag == 0 => Ok(Vec::new()),
            0xCC | 0xDB | 0x24 | 0x2C | 0x47 | 0x88 | 0xE6 | 0x44 => {
                Err(StatusWord::INCORRECT_P1P2)
            }
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    /// Gives `data` in pieces of at most `le` bytes, the rest through GET RESPONSE (61xx).
    fn respond(&mut self, mut data: Vec<u8>, le: usize) -> Vec<u8> {
        if data.len() <= le {
            data.extend_from_slice(&StatusWord::SUCCESS.to_bytes());
            return data;
        }
        self.pending = data.split_off(le);
        let left = u8::try_from(self.pending.len()).unwrap_or(0);
        data.extend_from_slice(&[0x61, left]);
        data
    }

    fn handle(&mut self, raw: &[u8]) -> Vec<u8> {
        let Ok(cmd) = Command::decode(raw) else {
            return sw(StatusWord::WRONG_LENGTH);
        };
        if cmd.cla & !0x10 != 0 {
            return sw(StatusWord::CLA_NOT_SUPPORTED);
        }
        let (ins, p1, p2) = (cmd.ins.0, cmd.p1, cmd.p2);
        let le = cmd.le.unwrap_or(Command::LE_MAX_SHORT);
        if ins == 0xC0 {
            if self.pending.is_empty() {
                return sw(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            let data = std::mem::take(&mut self.pending);
            return self.respond(data, le);
        }
        self.pending.clear();
        // ISO 7816-4 §5.1.1.1 command chaining.
        if self.chain_header.is_some_and(|h| h != (ins, p1, p2)) {
            self.chain.clear();
            self.chain_header = None;
        }
        if cmd.cla & 0x10 != 0 {
            if self.chain.len() + cmd.data.len() > MAX_COMMAND {
                self.chain.clear();
                self.chain_header = None;
                return sw(StatusWord::WRONG_LENGTH);
            }
            self.chain.extend_from_slice(&cmd.data);
            self.chain_header = Some((ins, p1, p2));
            return sw(StatusWord::SUCCESS);
        }
        let mut data = std::mem::replace(&mut self.chain, Zeroizing::new(Vec::new()));
        self.chain_header = None;
        data.extend_from_slice(&cmd.data);
        if data.len() > MAX_COMMAND {
            return sw(StatusWord::WRONG_LENGTH);
        }
        if ins == 0xA4 {
            if p1 != 0x04 {
                return sw(StatusWord::INCORRECT_P1P2);
            }
            let aid = self.aid();
            self.selected = data.len() >= AID_PREFIX.len() && aid.starts_with(&data);
            if !self.selected {
                self.clear_volatile();
                return sw(StatusWord::FILE_NOT_FOUND);
            }
            // Selecting the application resets the data object selection (SELECT DATA).
            self.occurrence = 0;
            return sw(if self.state.terminated {
                SW_TERMINATED
            } else {
                StatusWord::SUCCESS
            });
        }
        if !self.selected {
            return sw(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        if self.state.terminated {
            if (ins, p1, p2) == (0x44, 0, 0) {
                // ACTIVATE FILE after TERMINATE DF: back to factory state.
                self.state = State::factory(self.state.serial);
                self.clear_volatile();
                self.selected = true;
                return sw(StatusWord::SUCCESS);
            }
            return sw(SW_TERMINATED);
        }
        match self.dispatch(ins, p1, p2, &data) {
            Ok(answer) => self.respond(answer, le),
            Err(status) => sw(status),
        }
    }
}

/// The occurrence of 7F21 that holds a slot's certificate: AUT 0, DEC 1, SIG 2.
fn cert_occurrence(slot: KeyRef) -> usize {
    match slot {
        KeyRef::Aut => 0,
        KeyRef::Dec => 1,
        KeyRef::Sig => 2,
    }
}

/// Reads a 7F48 header list: tags and lengths without values.
fn header_list(mut h: &[u8]) -> Option<Vec<(u32, usize)>> {
    let mut out = Vec::new();
    while let Some((&first, rest)) = h.split_first() {
        let mut tag = u32::from(first);
        h = rest;
        if first & 0x1F == 0x1F {
            loop {
                let (&b, rest) = h.split_first()?;
                h = rest;
                tag = tag.checked_mul(256)? | u32::from(b);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let (&l, rest) = h.split_first()?;
        h = rest;
        let len = match l {
            0..=0x7F => usize::from(l),
            0x81 => {
                let (&b, rest) = h.split_first()?;
                h = rest;
                usize::from(b)
            }
            0x82 => {
                let (b, rest) = h.split_at_checked(2)?;
                h = rest;
                usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
            }
            _ => return None,
        };
        out.push((tag, len));
    }
    Some(out)
}

impl CardSimulator for OpenPgpCard {
    fn atr(&self) -> Vec<u8> {
        // A YubiKey 5 NFC's ATR (T=1, historical bytes 80 73 C0 21 C0 57 "YubiKey").
        vec![
            0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0,
            0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
        ]
    }

    fn power_on(&mut self) {
        self.clear_volatile();
    }

    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let before = self.path.is_some().then(|| self.state.clone());
        let answer = self.handle(command);
        if let (Some(before), Some(path)) = (before, &self.path) {
            if before != self.state && self.state.save(path).is_err() {
                // 6581: memory failure; the change stays in memory.
                return sw(StatusWord::from_bytes(0x65, 0x81));
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_lists_of_the_spec() {
        // 7F48 for an ECC key with its public key: 92 20, 99 41.
        assert_eq!(
            header_list(&[0x92, 0x20, 0x99, 0x41]),
            Some(vec![(0x92, 32), (0x99, 65)])
        );
        assert_eq!(
            header_list(&[0x92, 0x81, 0x80, 0x5F, 0x48, 0x82, 0x01, 0x00]),
            Some(vec![(0x92, 128), (0x5F48, 256)])
        );
        assert_eq!(header_list(&[0x92]), None);
    }

    proptest! {
        #[test]
        fn header_list_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = header_list(&data);
        }

        #[test]
        fn state_text_never_panics(text in ".{0,200}") {
            let _ = State::decode(&format!("tokenkit-openpgp-sim 1\n{text}"));
        }
    }

    #[test]
    fn state_encodes_and_decodes() {
        let mut card = OpenPgpCard::new(9);
        card.put_key(KeyRef::Dec, Algorithm::X25519, &[3; 32])
            .unwrap();
        card.set_resetting_code(b"abcdefgh").unwrap();
        let text = card.state.encode();
        assert_eq!(State::decode(&text).unwrap(), card.state);
    }
}
