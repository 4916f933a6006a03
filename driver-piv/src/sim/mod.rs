//! The PIV card simulator (feature `simulator`): a YubiKey 5.7-like PIV application as an APDU
//! handler ([`CardSimulator`]), for tests in memory and, through transport-pcsc's vpcd
//! bridge, for real PC/SC tools (OpenSC, yubico-piv-tool).
//!
//! What it implements:
//!
//! | command | APDU | notes |
//! | --- | --- | --- |
//! | SELECT | `00 A4 04 00` AID | full AID or any prefix from the RID `A0 00 00 03 08`; answers the APT `61 { 4F, 79 { 4F }, 50, AC }` |
//! | GET DATA | `00 CB 3F FF 5C tag` | `53` objects; `7E` and `7F61` as their own templates; PIN-protected objects after VERIFY |
//! | PUT DATA | `00 DB 3F FF 5C tag 53 ..` | management key first; an empty `53` deletes; 3063 bytes at most |
//! | VERIFY | `00 20 00\|FF 80` | 8 bytes FF-padded; empty data asks the state; P1 FF forgets it |
//! | CHANGE REFERENCE DATA | `00 24 00 80\|81` | old and new, 8 bytes each |
//! | RESET RETRY COUNTER | `00 2C 00 80` | PUK and new PIN |
//! | GENERAL AUTHENTICATE | `00 87 alg ref 7C ..` | 9B mutual (80/81/82) and one-way (81/82) auth; signatures (81); ECDH (85); RSA: `81` a block of the modulus's length, `82` the raw private-key operation on it (the host pads: PKCS#1 v1.5, PSS, decryption) |
//! | GENERATE ASYMMETRIC KEY PAIR | `00 47 00 slot AC { 80 alg, AA, AB }` | P-256, P-384, Ed25519, X25519 (`7F49 { 86 }`); RSA 1024, 2048, 3072, 4096 with exponent 65537 (`7F49 { 81 n, 82 e }`) |
//! | YubiKey GET METADATA, GET SERIAL, GET VERSION | `F7`, `F8`, `FD` | version 5.7.1; metadata of slots (F9 included), PIN, PUK, 9B |
//! | YubiKey SET MANAGEMENT KEY, IMPORT KEY, SET PIN RETRIES, RESET | `FF`, `FE`, `FA`, `FB` | IMPORT KEY: `06` P-256/P-384 scalar, `07` Ed25519 seed, `08` X25519 secret, RSA `01` p `02` q `03` dP `04` dQ `05` qInv (checked against p and q; exponent 65537); RESET only with PIN and PUK blocked, and it keeps the attestation key |
//! | YubiKey ATTEST | `00 F9 slot 00` | an X.509 certificate for a key generated on the card, issued by the attestation key in F9: `CN=YubiKey PIV Attestation 9a`, Yubico's extensions `1.3.6.1.4.1.41482.3.3` firmware, `.7` serial, `.8` PIN and touch policy, `.9` form factor; imported keys 6A80, empty slots 6A88 |
//! | GET RESPONSE | `00 C0 00 00` | answers longer than Le (absent Le counts as 256) |
//!
//! Command chaining (CLA 10) and extended-length APDUs are accepted as on a real YubiKey.
//!
//! The attestation key in F9 is a P-256 key made when the card is made (or when a state file
//! without one is loaded) and kept in the state file; its certificate (object `5FFF01`, read
//! as `yubico-piv-tool -a read-certificate -s f9` does) is self-signed, `CN=Yubico PIV
//! Attestation (tokenkit simulator)`: a YubiKey's is issued by Yubico's CA, so check
//! simulated attestations against this certificate ([`PivCard::attestation_certificate`]).
//!
//! Not implemented: MOVE/DELETE KEY (F6), touch (always given), biometrics, secure
//! messaging, the global PIN (6A88), RSA exponents other than 65537, importing an
//! attestation key into F9.
//!
//! Defaults: PIN `123456`, PUK `12345678`, 3 tries each, management key
//! `010203040506070801020304050607080102030405060708` as AES-192 (YubiKey 5.7; 3DES with
//! [`PivCard::with_management_key`]).

mod attest;
mod keys;
mod state;

use std::path::{Path, PathBuf};

use token_core::{CardSimulator, Command, Error, Result, StatusWord, Tag, Tlv, TlvBuilder};
use zeroize::Zeroizing;

pub use keys::SimKey;

use crate::mgmt::{ct_eq, ManagementKey};
use crate::objects::{build_discovery, certificate_container, public_key_template, Chuid};
use crate::types::{
    data_object, ins, keyref, objects, tag, AlgorithmId, PinPolicy, ReadAccess, SlotId,
    TouchPolicy, PIV_AID, PIV_RID,
};

/// SW for "the operation went through".
type Answer = core::result::Result<Vec<u8>, StatusWord>;

/// The YubiKey 5 NFC's ATR: T=1, historical bytes `80 73 C0 21 C0 57 59 75 62 69 4B 65 79`
/// (card capabilities announcing chaining and extended length, then "YubiKey").
pub const YUBIKEY_ATR: [u8; 23] = [
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

/// The largest data object the simulator stores (a YubiKey 5's limit).
pub const MAX_OBJECT: usize = 3063;
/// The most command data gathered across a chain.
const MAX_CHAIN: usize = 16 * 1024;
const DEFAULT_PIN: &[u8] = b"123456";
const DEFAULT_PUK: &[u8] = b"12345678";
const DEFAULT_TRIES: u8 = 3;

/// A key in a slot, with its policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySlot {
    pub(crate) key: SimKey,
    /// Never `Default`: resolved to the slot's default when stored.
    pub(crate) pin_policy: PinPolicy,
    pub(crate) touch_policy: TouchPolicy,
    pub(crate) generated: bool,
}

/// A PIN or PUK: 8 bytes FF-padded, with its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Secret {
    pub(crate) value: Zeroizing<[u8; 8]>,
    pub(crate) max: u8,
    pub(crate) left: u8,
    pub(crate) is_default: bool,
}

impl Secret {
    fn new(value: &[u8], tries: u8) -> Secret {
        let mut v = [0xFFu8; 8];
        for (d, s) in v.iter_mut().zip(value) {
            *d = *s;
        }
        Secret {
            value: Zeroizing::new(v),
            max: tries,
            left: tries,
            is_default: true,
        }
    }
}

/// What survives power cycles (and goes to the state file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Persistent {
    pub(crate) serial: u32,
    pub(crate) version: [u8; 3],
    pub(crate) pin: Secret,
    pub(crate) puk: Secret,
    pub(crate) management: ManagementKey,
    pub(crate) management_touch: bool,
    pub(crate) management_default: bool,
    pub(crate) keys: std::collections::BTreeMap<u8, KeySlot>,
    pub(crate) objects: std::collections::BTreeMap<u32, Vec<u8>>,
}

impl Persistent {
    /// Puts a fresh attestation key in F9 and its self-signed certificate in `5FFF01` when
    /// the card has no attestation key (a new card, or a state file from before ATTEST).
    /// True when it did. A failing random source leaves the card without one (ATTEST then
    /// answers 6A88).
    fn install_attestation(&mut self) -> bool {
        if self.keys.contains_key(&attest::ATTESTATION_SLOT) {
            return false;
        }
        let Ok((key, cert)) = attest::new_attestation_key() else {
            return false;
        };
        self.keys.insert(
            attest::ATTESTATION_SLOT,
            KeySlot {
                key,
                pin_policy: PinPolicy::Never,
                touch_policy: TouchPolicy::Never,
                generated: false,
            },
        );
        self.objects.insert(
            objects::YUBIKEY_ATTESTATION,
            certificate_container(&cert, false),
        );
        true
    }

    fn factory(serial: u32, version: [u8; 3], management: AlgorithmId) -> Persistent {
        let mut objects = std::collections::BTreeMap::new();
        objects.insert(objects::DISCOVERY, build_discovery());
        Persistent {
            serial,
            version,
            pin: Secret::new(DEFAULT_PIN, DEFAULT_TRIES),
            puk: Secret::new(DEFAULT_PUK, DEFAULT_TRIES),
            management: ManagementKey::factory(management),
            management_touch: false,
            management_default: true,
            keys: Default::default(),
            objects,
        }
    }
}

/// A challenge the card is waiting to see answered.
#[derive(Clone, Debug)]
enum Pending {
    /// Mutual authentication: the witness in plain (the host must return it decrypted).
    Witness(Zeroizing<Vec<u8>>),
    /// One-way: the challenge sent (the host must return it encrypted).
    Challenge(Zeroizing<Vec<u8>>),
}

/// What a power cycle clears.
#[derive(Debug, Default)]
struct Volatile {
    selected: bool,
    pin_verified: bool,
    /// A VERIFY happened since the last PIN-always key operation.
    pin_fresh: bool,
    management_authenticated: bool,
    pending_auth: Option<Pending>,
    /// (INS, P1, P2, data so far) of an unfinished command chain.
    chain: Option<(u8, u8, u8, Zeroizing<Vec<u8>>)>,
    /// Response bytes waiting for GET RESPONSE.
    pending_response: Vec<u8>,
}

/// A simulated PIV card with the YubiKey 5.7 extensions. See the [module docs](self).
///
/// ```
/// use driver_piv::sim::{PivCard, SimKey};
/// use driver_piv::SlotId;
/// use token_core::CardSimulator;
///
/// let mut card = PivCard::new_with_keys(1234, [(SlotId::AUTHENTICATION, SimKey::ed25519([7; 32]))]);
/// // SELECT PIV with the RID alone, as yubico-piv-tool does.
/// let answer = card.process(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08]);
/// assert_eq!(&answer[answer.len() - 2..], &[0x90, 0x00]);
/// ```
pub struct PivCard {
    st: Persistent,
    vol: Volatile,
    state_file: Option<PathBuf>,
    dirty: bool,
}

impl core::fmt::Debug for PivCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PivCard")
            .field("serial", &self.st.serial)
            .field("pin_tries_left", &self.st.pin.left)
            .field("puk_tries_left", &self.st.puk.left)
            .field("slots", &self.st.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PivCard {
    /// A blank card (no keys, no certificates, the discovery object) with this serial number
    /// and the factory PIN, PUK and management key.
    pub fn new(serial: u32) -> PivCard {
        let mut st = Persistent::factory(serial, [5, 7, 1], AlgorithmId::AES192);
        st.install_attestation();
        PivCard {
            st,
            vol: Volatile::default(),
            state_file: None,
            dirty: false,
        }
    }

    /// A card with these keys (imported, with their slots' default policies).
    pub fn new_with_keys(serial: u32, keys: impl IntoIterator<Item = (SlotId, SimKey)>) -> PivCard {
        keys.into_iter()
            .fold(PivCard::new(serial), |card, (slot, key)| {
                card.with_key(slot, key)
            })
    }

    /// Puts `key` in `slot` as an imported key with the slot's default PIN policy and no
    /// touch (replacing what the slot held).
    #[must_use]
    pub fn with_key(mut self, slot: SlotId, key: SimKey) -> PivCard {
        self.st.keys.insert(
            slot.byte(),
            KeySlot {
                key,
                pin_policy: slot.default_pin_policy(),
                touch_policy: TouchPolicy::Never,
                generated: false,
            },
        );
        self
    }

    /// Loads the card saved in `path`, or makes a blank one with a random serial and saves it
    /// there. Every change is saved to `path` from then on (atomically: a temporary file, then
    /// a rename).
    ///
    /// # Errors
    /// I/O errors; `CorruptedData` for a file that is not a simulator state.
    pub fn with_state_file(path: impl AsRef<Path>) -> Result<PivCard> {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut card = PivCard {
                    st: state::decode(&bytes)?,
                    vol: Volatile::default(),
                    state_file: Some(path.to_path_buf()),
                    dirty: false,
                };
                if card.st.install_attestation() {
                    card.save()?;
                }
                Ok(card)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut sn = [0u8; 4];
                getrandom::fill(&mut sn)
                    .map_err(|_| Error::communication("the system random source failed"))?;
                // YubiKey serials are 8 decimal digits at most.
                PivCard::new(u32::from_be_bytes(sn) % 100_000_000).persist_to(path)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves this card to `path` now and after every change.
    ///
    /// # Errors
    /// I/O errors.
    pub fn persist_to(mut self, path: impl AsRef<Path>) -> Result<PivCard> {
        self.state_file = Some(path.as_ref().to_path_buf());
        self.save()?;
        Ok(self)
    }

    /// Writes `der` as the certificate of `slot` (uncompressed, or gzip'd with CertInfo 01).
    #[must_use]
    pub fn with_certificate(mut self, slot: SlotId, der: &[u8], compress: bool) -> PivCard {
        self.st
            .objects
            .insert(slot.certificate_tag(), certificate_container(der, compress));
        self
    }

    /// Writes a CHUID with this GUID (and the FASC-N YubiKey tools write).
    #[must_use]
    pub fn with_chuid(mut self, guid: [u8; 16]) -> PivCard {
        self.st
            .objects
            .insert(objects::CHUID, Chuid::build(guid, "20991231"));
        self
    }

    /// Stores a data object's content as it is (for fixtures and fault tests).
    #[must_use]
    pub fn with_object(mut self, tag: u32, content: &[u8]) -> PivCard {
        self.st.objects.insert(tag, content.to_vec());
        self
    }

    /// Sets the management key (the default is the factory key as AES-192).
    #[must_use]
    pub fn with_management_key(mut self, key: ManagementKey) -> PivCard {
        self.st.management_default = key.expose() == crate::types::DEFAULT_MANAGEMENT_KEY;
        self.st.management = key;
        self
    }

    /// Sets the firmware version GET VERSION answers (default 5.7.1). Below 5.3 the card
    /// answers GET METADATA with 6D00, as such YubiKeys do.
    #[must_use]
    pub fn with_version(mut self, version: [u8; 3]) -> PivCard {
        self.st.version = version;
        self
    }

    /// The serial number.
    pub fn serial(&self) -> u32 {
        self.st.serial
    }

    /// PIN tries left.
    pub fn pin_tries_left(&self) -> u8 {
        self.st.pin.left
    }

    /// PUK tries left.
    pub fn puk_tries_left(&self) -> u8 {
        self.st.puk.left
    }

    /// The public key in `slot`, if it holds one.
    pub fn public_key(&self, slot: SlotId) -> Option<token_core::PublicKey> {
        self.st
            .keys
            .get(&slot.byte())
            .and_then(|k| k.key.public_key().ok())
    }

    /// The attestation certificate (slot F9's, object `5FFF01`), DER, if the card has one.
    pub fn attestation_certificate(&self) -> Option<Vec<u8>> {
        let content = self.st.objects.get(&objects::YUBIKEY_ATTESTATION)?;
        crate::objects::parse_certificate_container(content)
            .ok()
            .map(|c| c.der)
    }

    /// A data object's content, if stored.
    pub fn object(&self, tag: u32) -> Option<&[u8]> {
        self.st.objects.get(&tag).map(Vec::as_slice)
    }

    fn save(&mut self) -> Result<()> {
        self.dirty = false;
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let bytes = Zeroizing::new(state::encode(&self.st));
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    // -- command handlers --

    fn select(&mut self, p1: u8, data: &[u8]) -> Answer {
        if p1 != 0x04 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        // The full AID, or a prefix of it from the RID on (yubico-piv-tool sends the RID).
        if data.len() < PIV_RID.len() || !PIV_AID.starts_with(data) {
            self.vol = Volatile::default();
            return Err(StatusWord::FILE_NOT_FOUND);
        }
        self.vol.selected = true;
        // SP 800-73-4 Part 2 §3.1.1, Table 3: the application property template.
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x61), |b| {
            b.put(Tag::new(0x4F), PIV_AID.get(5..).unwrap_or(&[]));
            b.constructed(Tag::new(0x79), |b| {
                b.put(Tag::new(0x4F), &PIV_RID);
            });
            b.put(Tag::new(0x50), b"tokenkit PIV simulator (YubiKey 5.7)");
            b.constructed(Tag::new(0xAC), |b| {
                for alg in [
                    0x03u8, 0x08, 0x0A, 0x0C, 0x06, 0x07, 0x05, 0x16, 0x11, 0x14, 0xE0, 0xE1,
                ] {
                    b.put(Tag::new(0x80), &[alg]);
                }
                b.put(Tag::new(0x06), &[]);
            });
        });
        Ok(b.finish())
    }

    fn get_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if (p1, p2) != (0x3F, 0xFF) {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let list = Tlv::parse_exact(data).map_err(|_| StatusWord::INCORRECT_DATA)?;
        if list.tag.value() != tag::TAG_LIST || list.value.is_empty() || list.value.len() > 3 {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let object = list
            .value
            .iter()
            .fold(0u32, |v, &b| (v << 8) | u32::from(b));
        if data_object(object).is_some_and(|o| o.read == ReadAccess::Pin) && !self.vol.pin_verified
        {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let content = self
            .st
            .objects
            .get(&object)
            .ok_or(StatusWord::FILE_NOT_FOUND)?;
        // The discovery object and the BIT group are their own templates (SP 800-73-4 Part 1
        // §3.3.2, §3.3.1); everything else comes in a 53 wrapper.
        if matches!(object, objects::DISCOVERY | 0x7F61) {
            return Ok(content.clone());
        }
        let mut b = TlvBuilder::new();
        b.put(Tag::new(tag::DATA), content);
        Ok(b.finish())
    }

    fn put_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if (p1, p2) != (0x3F, 0xFF) {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        if !self.vol.management_authenticated {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let (first, rest) = Tlv::parse(data).map_err(|_| StatusWord::INCORRECT_DATA)?;
        let (object, content) = match first.tag.value() {
            // The discovery object and BIT group are written as their templates.
            0x7E | 0x7F61 if rest.is_empty() => (first.tag.value(), first.raw().to_vec()),
            tag::TAG_LIST if !first.value.is_empty() && first.value.len() <= 3 => {
                let object = first
                    .value
                    .iter()
                    .fold(0u32, |v, &b| (v << 8) | u32::from(b));
                let body = Tlv::parse_exact(rest).map_err(|_| StatusWord::INCORRECT_DATA)?;
                if body.tag.value() != tag::DATA {
                    return Err(StatusWord::INCORRECT_DATA);
                }
                (object, body.value.to_vec())
            }
            _ => return Err(StatusWord::INCORRECT_DATA),
        };
        let known = data_object(object).is_some() || (0x5F_FF00..=0x5F_FF15).contains(&object);
        if !known {
            return Err(StatusWord::INCORRECT_DATA);
        }
        if content.len() > MAX_OBJECT {
            return Err(StatusWord::NOT_ENOUGH_MEMORY);
        }
        if content.is_empty() {
            self.st.objects.remove(&object);
        } else {
            self.st.objects.insert(object, content);
        }
        self.dirty = true;
        Ok(Vec::new())
    }

    /// Checks an 8-byte FF-padded PIN block: 6 to 8 bytes, then only FF.
    fn well_formed(block: &[u8], min: usize) -> bool {
        let len = block.iter().position(|&b| b == 0xFF).unwrap_or(block.len());
        block.len() == 8 && len >= min && block.iter().skip(len).all(|&b| b == 0xFF)
    }

    fn fail(secret: &mut Secret) -> StatusWord {
        secret.left = secret.left.saturating_sub(1);
        StatusWord::from_bytes(0x63, 0xC0 | secret.left.min(0x0F))
    }

    fn verify(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        match (p1, p2) {
            (0xFF, keyref::PIN) if data.is_empty() => {
                self.vol.pin_verified = false;
                self.vol.pin_fresh = false;
                return Ok(Vec::new());
            }
            (0x00, keyref::PIN) => {}
            (0x00 | 0xFF, _) => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
            _ => return Err(StatusWord::INCORRECT_P1P2),
        }
        if self.st.pin.left == 0 {
            return Err(StatusWord::AUTH_METHOD_BLOCKED);
        }
        if data.is_empty() {
            return if self.vol.pin_verified {
                Ok(Vec::new())
            } else {
                Err(StatusWord::from_bytes(
                    0x63,
                    0xC0 | self.st.pin.left.min(0x0F),
                ))
            };
        }
        if data.len() != 8 {
            return Err(StatusWord::INCORRECT_DATA);
        }
        if ct_eq(data, &*self.st.pin.value) {
            if self.st.pin.left != self.st.pin.max {
                self.st.pin.left = self.st.pin.max;
                self.dirty = true;
            }
            self.vol.pin_verified = true;
            self.vol.pin_fresh = true;
            Ok(Vec::new())
        } else {
            self.vol.pin_verified = false;
            self.vol.pin_fresh = false;
            self.dirty = true;
            Err(Self::fail(&mut self.st.pin))
        }
    }

    fn change_reference(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if p1 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let secret = match p2 {
            keyref::PIN => &mut self.st.pin,
            keyref::PUK => &mut self.st.puk,
            _ => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
        };
        if secret.left == 0 {
            return Err(StatusWord::AUTH_METHOD_BLOCKED);
        }
        let (Some(old), Some(new)) = (data.get(..8), data.get(8..)) else {
            return Err(StatusWord::INCORRECT_DATA);
        };
        if data.len() != 16 {
            return Err(StatusWord::INCORRECT_DATA);
        }
        self.dirty = true;
        if !ct_eq(old, &*secret.value) {
            return Err(Self::fail(secret));
        }
        if !Self::well_formed(new, 6) {
            return Err(StatusWord::INCORRECT_DATA);
        }
        secret.value.copy_from_slice(new);
        secret.left = secret.max;
        secret.is_default = false;
        Ok(Vec::new())
    }

    fn reset_retry_counter(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if p1 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        if p2 != keyref::PIN {
            return Err(StatusWord::REFERENCED_DATA_NOT_FOUND);
        }
        if self.st.puk.left == 0 {
            return Err(StatusWord::AUTH_METHOD_BLOCKED);
        }
        let (Some(puk), Some(new)) = (data.get(..8), data.get(8..)) else {
            return Err(StatusWord::INCORRECT_DATA);
        };
        if data.len() != 16 {
            return Err(StatusWord::INCORRECT_DATA);
        }
        self.dirty = true;
        if !ct_eq(puk, &*self.st.puk.value) {
            return Err(Self::fail(&mut self.st.puk));
        }
        if !Self::well_formed(new, 6) {
            return Err(StatusWord::INCORRECT_DATA);
        }
        self.st.puk.left = self.st.puk.max;
        self.st.pin.value.copy_from_slice(new);
        self.st.pin.left = self.st.pin.max;
        self.st.pin.is_default = false;
        self.vol.pin_verified = false;
        Ok(Vec::new())
    }

    fn general_authenticate(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        let template = Tlv::parse_exact(data).map_err(|_| StatusWord::INCORRECT_DATA)?;
        if template.tag.value() != tag::DYNAMIC_AUTH {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let mut fields: [Option<&[u8]>; 6] = [None; 6];
        for item in template.children() {
            let item = item.map_err(|_| StatusWord::INCORRECT_DATA)?;
            let slot = match item.tag.value() {
                tag::WITNESS => 0,
                tag::CHALLENGE => 1,
                tag::RESPONSE => 2,
                tag::EXPONENTIATION => 5,
                _ => return Err(StatusWord::INCORRECT_DATA),
            };
            if let Some(f) = fields.get_mut(slot) {
                f.get_or_insert(item.value);
            }
        }
        let [witness, challenge, response, _, _, exponentiation] = fields;
        if p2 == keyref::MANAGEMENT {
            return self.management_auth(p1, witness, challenge, response);
        }
        let slot = SlotId::try_from(p2).map_err(|_| StatusWord::INCORRECT_P1P2)?;
        let key = self
            .st
            .keys
            .get(&slot.byte())
            .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        if key.key.algorithm().0 != p1 {
            return Err(StatusWord::INCORRECT_DATA);
        }
        // The operation asked for: 82 empty, and 81 (sign) or 85 (agree).
        let op = match (response, challenge, exponentiation) {
            (Some([]), Some(input), None) if !input.is_empty() => Ok(input),
            (Some([]), None, Some(peer)) if !peer.is_empty() => Err(peer),
            _ => return Err(StatusWord::INCORRECT_DATA),
        };
        let allowed = match key.pin_policy {
            PinPolicy::Never => true,
            PinPolicy::Always | PinPolicy::MatchAlways => {
                self.vol.pin_verified && self.vol.pin_fresh
            }
            _ => self.vol.pin_verified,
        };
        if !allowed {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        if matches!(key.pin_policy, PinPolicy::Always | PinPolicy::MatchAlways) {
            self.vol.pin_fresh = false;
        }
        let out = match op {
            Ok(input) => key.key.sign(input)?,
            Err(peer) => key.key.agree(peer)?,
        };
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(tag::DYNAMIC_AUTH), |b| {
            b.put(Tag::new(tag::RESPONSE), &out);
        });
        Ok(b.finish())
    }

    fn management_auth(
        &mut self,
        p1: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Answer {
        let key = self.st.management.clone();
        // YubiKeys take 00 for 3DES from old tools.
        let alg_ok = p1 == key.algorithm().0 || (p1 == 0 && key.algorithm() == AlgorithmId::TDES);
        if !alg_ok {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let n = key.block_len();
        let pending = self.vol.pending_auth.take();
        self.vol.management_authenticated = false;
        let random = |n: usize| -> core::result::Result<Zeroizing<Vec<u8>>, StatusWord> {
            let mut r = Zeroizing::new(vec![0u8; n]);
            getrandom::fill(&mut r).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
            Ok(r)
        };
        let bad = StatusWord::SECURITY_STATUS_NOT_SATISFIED;
        let template = |t: u32, v: &[u8]| {
            let mut b = TlvBuilder::new();
            b.constructed(Tag::new(tag::DYNAMIC_AUTH), |b| {
                if let Ok(t) = Tag::try_from(t) {
                    b.put(t, v);
                }
            });
            b.finish()
        };
        match (witness, challenge, response) {
            // Mutual, step 1: a witness, encrypted.
            (Some([]), None, None) => {
                let w = random(n)?;
                let enc = key.encrypt(&w).map_err(|_| bad)?;
                self.vol.pending_auth = Some(Pending::Witness(w));
                Ok(template(tag::WITNESS, &enc))
            }
            // Mutual, step 2: the witness decrypted, and the host's challenge.
            (Some(w), Some(c), None) => match pending {
                Some(Pending::Witness(expected)) if ct_eq(w, &expected) && c.len() == n => {
                    let enc = key.encrypt(c).map_err(|_| bad)?;
                    self.vol.management_authenticated = true;
                    Ok(template(tag::RESPONSE, &enc))
                }
                _ => Err(bad),
            },
            // One-way, step 1: a challenge in plain.
            (None, Some([]), None) => {
                let c = random(n)?;
                let out = template(tag::CHALLENGE, &c);
                self.vol.pending_auth = Some(Pending::Challenge(c));
                Ok(out)
            }
            // One-way, step 2: the challenge encrypted.
            (None, None, Some(r)) if !r.is_empty() => match pending {
                Some(Pending::Challenge(c)) => {
                    let expected = key.encrypt(&c).map_err(|_| bad)?;
                    if ct_eq(r, &expected) {
                        self.vol.management_authenticated = true;
                        Ok(Vec::new())
                    } else {
                        Err(bad)
                    }
                }
                _ => Err(bad),
            },
            _ => Err(StatusWord::INCORRECT_DATA),
        }
    }

    fn store_key(
        &mut self,
        slot: SlotId,
        key: SimKey,
        pin: u8,
        touch: u8,
        generated: bool,
    ) -> Answer {
        let pin_policy = match PinPolicy::from_byte(pin).ok_or(StatusWord::INCORRECT_DATA)? {
            PinPolicy::Default => slot.default_pin_policy(),
            p => p,
        };
        let touch_policy = match TouchPolicy::from_byte(touch).ok_or(StatusWord::INCORRECT_DATA)? {
            TouchPolicy::Default => TouchPolicy::Never,
            t => t,
        };
        let public = key.public_key().map_err(|_| StatusWord::INCORRECT_DATA)?;
        self.st.keys.insert(
            slot.byte(),
            KeySlot {
                key,
                pin_policy,
                touch_policy,
                generated,
            },
        );
        self.dirty = true;
        public_key_template(&public).map_err(|_| StatusWord::INCORRECT_DATA)
    }

    fn generate(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if p1 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let slot = SlotId::try_from(p2).map_err(|_| StatusWord::INCORRECT_P1P2)?;
        if !self.vol.management_authenticated {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let template = Tlv::parse_exact(data).map_err(|_| StatusWord::INCORRECT_DATA)?;
        if template.tag.value() != tag::KEY_TEMPLATE {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let (mut alg, mut pin, mut touch) = (None, 0u8, 0u8);
        for item in template.children() {
            let item = item.map_err(|_| StatusWord::INCORRECT_DATA)?;
            match (item.tag.value(), item.value) {
                (tag::ALGORITHM, [a]) => alg = Some(AlgorithmId(*a)),
                (tag::PIN_POLICY, [p]) => pin = *p,
                (tag::TOUCH_POLICY, [t]) => touch = *t,
                _ => return Err(StatusWord::INCORRECT_DATA),
            }
        }
        let alg = alg.ok_or(StatusWord::INCORRECT_DATA)?;
        let key = SimKey::generate(alg).map_err(|_| StatusWord::INCORRECT_DATA)?;
        let content = self.store_key(slot, key, pin, touch, true)?;
        let mut b = TlvBuilder::new();
        b.put(Tag::new(tag::PUBLIC_KEY_TEMPLATE), &content);
        Ok(b.finish())
    }

    fn import_key(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        let slot = SlotId::try_from(p2).map_err(|_| StatusWord::INCORRECT_P1P2)?;
        if !self.vol.management_authenticated {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let alg = AlgorithmId(p1);
        let rsa_bits = match alg.key_type() {
            Some(token_core::KeyType::Rsa(bits)) => Some(usize::from(bits)),
            _ => None,
        };
        let (mut secret, mut pin, mut touch) = (None, 0u8, 0u8);
        // RSA: the CRT elements p, q, dP, dQ, qInv (01..05), each half the modulus long.
        let mut crt: [Option<&[u8]>; 5] = [None; 5];
        for item in token_core::TlvIter::new(data) {
            let item = item.map_err(|_| StatusWord::INCORRECT_DATA)?;
            match (item.tag.value(), item.value) {
                (t @ 0x01..=0x05, v) if rsa_bits.is_some_and(|b| v.len() == b / 16) => {
                    if let Some(slot) = crt.get_mut(t as usize - 1) {
                        *slot = Some(v);
                    }
                }
                (0x06..=0x08, v) if rsa_bits.is_none() => secret = Some(v),
                (tag::PIN_POLICY, [p]) => pin = *p,
                (tag::TOUCH_POLICY, [t]) => touch = *t,
                _ => return Err(StatusWord::INCORRECT_DATA),
            }
        }
        let key = if rsa_bits.is_some() {
            let [Some(p), Some(q), Some(dp), Some(dq), Some(qinv)] = crt else {
                return Err(StatusWord::INCORRECT_DATA);
            };
            let key = SimKey::rsa(p, q).map_err(|_| StatusWord::INCORRECT_DATA)?;
            if key.algorithm() != alg || !key.crt_matches(dp, dq, qinv) {
                return Err(StatusWord::INCORRECT_DATA);
            }
            key
        } else {
            let secret = secret.ok_or(StatusWord::INCORRECT_DATA)?;
            SimKey::from_secret(alg, secret).map_err(|_| StatusWord::INCORRECT_DATA)?
        };
        self.store_key(slot, key, pin, touch, false)
            .map(|_| Vec::new())
    }

    fn metadata(&mut self, p1: u8, p2: u8) -> Answer {
        if (self.st.version[0], self.st.version[1]) < (5, 3) {
            return Err(StatusWord::INS_NOT_SUPPORTED);
        }
        if p1 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let mut b = TlvBuilder::new();
        match p2 {
            keyref::PIN | keyref::PUK => {
                let s = if p2 == keyref::PIN {
                    &self.st.pin
                } else {
                    &self.st.puk
                };
                b.put(Tag::new(0x01), &[0xFF]);
                b.put(Tag::new(0x05), &[u8::from(s.is_default)]);
                b.put(Tag::new(0x06), &[s.max, s.left]);
            }
            keyref::MANAGEMENT => {
                b.put(Tag::new(0x01), &[self.st.management.algorithm().0]);
                b.put(
                    Tag::new(0x02),
                    &[0x00, if self.st.management_touch { 0x02 } else { 0x01 }],
                );
                b.put(Tag::new(0x05), &[u8::from(self.st.management_default)]);
            }
            _ => {
                let reference = if p2 == attest::ATTESTATION_SLOT {
                    p2
                } else {
                    SlotId::try_from(p2)
                        .map_err(|_| StatusWord::REFERENCED_DATA_NOT_FOUND)?
                        .byte()
                };
                let key = self
                    .st
                    .keys
                    .get(&reference)
                    .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
                let public = key
                    .key
                    .public_key()
                    .map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
                b.put(Tag::new(0x01), &[key.key.algorithm().0]);
                b.put(
                    Tag::new(0x02),
                    &[key.pin_policy.byte(), key.touch_policy.byte()],
                );
                b.put(Tag::new(0x03), &[if key.generated { 1 } else { 2 }]);
                b.put(
                    Tag::new(0x04),
                    &public_key_template(&public).map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?,
                );
            }
        }
        Ok(b.finish())
    }

    /// YubiKey ATTEST (`00 F9 slot 00`): a certificate for the key in `slot`, issued by the
    /// attestation key in F9. Only keys generated on the card are attested (imported ones
    /// answer 6A80, as a YubiKey does); an empty slot answers 6A88.
    fn attest(&mut self, p1: u8, p2: u8) -> Answer {
        if p2 != 0x00 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        let slot = SlotId::try_from(p1).map_err(|_| StatusWord::INCORRECT_P1P2)?;
        let key = self
            .st
            .keys
            .get(&slot.byte())
            .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        if !key.generated {
            return Err(StatusWord::INCORRECT_DATA);
        }
        let ca = self
            .st
            .keys
            .get(&attest::ATTESTATION_SLOT)
            .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        let public = key
            .key
            .public_key()
            .map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)?;
        attest::attest(
            &ca.key,
            &attest::Attested {
                slot: slot.byte(),
                public: &public,
                pin_policy: key.pin_policy,
                touch_policy: key.touch_policy,
                version: self.st.version,
                serial: self.st.serial,
            },
        )
        .map_err(|_| StatusWord::NO_PRECISE_DIAGNOSIS)
    }

    fn set_management_key(&mut self, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if p1 != 0xFF || !matches!(p2, 0xFF | 0xFE) {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        if !self.vol.management_authenticated {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let (alg, key) = match data {
            [alg, keyref::MANAGEMENT, len, key @ ..] if usize::from(*len) == key.len() => {
                (AlgorithmId(*alg), key)
            }
            _ => return Err(StatusWord::INCORRECT_DATA),
        };
        let key = ManagementKey::new(alg, key).map_err(|_| StatusWord::INCORRECT_DATA)?;
        self.st.management_default = key.expose() == crate::types::DEFAULT_MANAGEMENT_KEY;
        self.st.management = key;
        self.st.management_touch = p2 == 0xFE;
        self.dirty = true;
        Ok(Vec::new())
    }

    fn set_pin_retries(&mut self, p1: u8, p2: u8) -> Answer {
        if !self.vol.management_authenticated || !self.vol.pin_verified {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        if p1 == 0 || p2 == 0 {
            return Err(StatusWord::INCORRECT_P1P2);
        }
        self.st.pin = Secret::new(DEFAULT_PIN, p1);
        self.st.puk = Secret::new(DEFAULT_PUK, p2);
        self.vol.pin_verified = false;
        self.dirty = true;
        Ok(Vec::new())
    }

    fn reset(&mut self) -> Answer {
        if self.st.pin.left != 0 || self.st.puk.left != 0 {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
        // The attestation key and certificate survive a reset, as on a YubiKey.
        let attestation_key = self.st.keys.remove(&attest::ATTESTATION_SLOT);
        let attestation_cert = self.st.objects.remove(&objects::YUBIKEY_ATTESTATION);
        self.st = Persistent::factory(self.st.serial, self.st.version, AlgorithmId::AES192);
        if let (Some(key), Some(cert)) = (attestation_key, attestation_cert) {
            self.st.keys.insert(attest::ATTESTATION_SLOT, key);
            self.st.objects.insert(objects::YUBIKEY_ATTESTATION, cert);
        }
        self.st.install_attestation();
        self.vol = Volatile {
            selected: true,
            ..Volatile::default()
        };
        self.dirty = true;
        Ok(Vec::new())
    }

    fn dispatch(&mut self, ins_byte: u8, p1: u8, p2: u8, data: &[u8]) -> Answer {
        if ins_byte == ins::SELECT {
            return self.select(p1, data);
        }
        if !self.vol.selected {
            return Err(StatusWord::INS_NOT_SUPPORTED);
        }
        match ins_byte {
            ins::GET_DATA => self.get_data(p1, p2, data),
            ins::PUT_DATA => self.put_data(p1, p2, data),
            ins::VERIFY => self.verify(p1, p2, data),
            ins::CHANGE_REFERENCE_DATA => self.change_reference(p1, p2, data),
            ins::RESET_RETRY_COUNTER => self.reset_retry_counter(p1, p2, data),
            ins::GENERAL_AUTHENTICATE => self.general_authenticate(p1, p2, data),
            ins::GENERATE_ASYMMETRIC_KEY_PAIR => self.generate(p1, p2, data),
            ins::GET_METADATA => self.metadata(p1, p2),
            ins::GET_SERIAL => Ok(self.st.serial.to_be_bytes().to_vec()),
            ins::GET_VERSION => Ok(self.st.version.to_vec()),
            ins::SET_MANAGEMENT_KEY => self.set_management_key(p1, p2, data),
            ins::IMPORT_KEY => self.import_key(p1, p2, data),
            ins::SET_PIN_RETRIES => self.set_pin_retries(p1, p2),
            ins::RESET => self.reset(),
            ins::ATTEST => self.attest(p1, p2),
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    /// Answers with up to `le` bytes, keeping the rest for GET RESPONSE (61xx).
    fn respond(&mut self, mut data: Vec<u8>, le: usize) -> Vec<u8> {
        if data.len() <= le {
            data.extend_from_slice(&StatusWord::SUCCESS.to_bytes());
            return data;
        }
        let rest = data.split_off(le);
        let sw2 = if rest.len() >= 256 {
            0
        } else {
            rest.len() as u8
        };
        self.vol.pending_response = rest;
        data.extend_from_slice(&[0x61, sw2]);
        data
    }
}

impl CardSimulator for PivCard {
    fn atr(&self) -> Vec<u8> {
        YUBIKEY_ATR.to_vec()
    }

    fn power_on(&mut self) {
        self.vol = Volatile::default();
    }

    fn power_off(&mut self) {
        self.vol = Volatile::default();
    }

    fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        let Ok(cmd) = Command::decode(raw) else {
            self.vol.chain = None;
            return StatusWord::WRONG_LENGTH.to_bytes().to_vec();
        };
        // An absent Le on a case 3 command counts as 256, as on T=1 cards (yubico-piv-tool
        // relies on it); extended APDUs take up to 65536.
        let extended = raw.get(4) == Some(&0) && raw.len() > 5;
        let le = cmd.le.unwrap_or(if extended { 65_536 } else { 256 });
        if cmd.cla & !0x10 != 0 {
            return StatusWord::CLA_NOT_SUPPORTED.to_bytes().to_vec();
        }
        if cmd.ins.0 == ins::GET_RESPONSE {
            if self.vol.pending_response.is_empty() {
                return StatusWord::CONDITIONS_NOT_SATISFIED.to_bytes().to_vec();
            }
            let data = std::mem::take(&mut self.vol.pending_response);
            return self.respond(data, le);
        }
        self.vol.pending_response.clear();
        let header = (cmd.ins.0, cmd.p1, cmd.p2);
        // Command chaining (ISO 7816-4 §5.1.1.1): gather blocks flagged with CLA bit 10.
        let mut data = match self.vol.chain.take() {
            Some((i, a, b, so_far)) if (i, a, b) == header => so_far,
            _ => Zeroizing::new(Vec::new()),
        };
        if data.len() + cmd.data.len() > MAX_CHAIN {
            return StatusWord::WRONG_LENGTH.to_bytes().to_vec();
        }
        data.extend_from_slice(&cmd.data);
        if cmd.cla & 0x10 != 0 {
            self.vol.chain = Some((header.0, header.1, header.2, data));
            return StatusWord::SUCCESS.to_bytes().to_vec();
        }
        let answer = self.dispatch(header.0, header.1, header.2, &data);
        let mut out = match answer {
            Ok(d) => self.respond(d, le),
            Err(sw) => sw.to_bytes().to_vec(),
        };
        if self.dirty && self.save().is_err() {
            // The change is made in memory but could not be kept: say so, as a card's
            // memory failure.
            out = vec![0x65, 0x81];
        }
        out
    }
}
