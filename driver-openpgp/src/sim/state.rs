//! The simulated card's persistent state, and its file: one `name hex` pair a line, written
//! to a temporary file and renamed over the old one, so a crash never leaves half a card.

use std::fmt::Write as _;
use std::path::Path;

use token_core::{Error, Result};
use zeroize::Zeroizing;

use super::keys::SimKey;
use crate::types::{Algorithm, KeyRef};

/// The first line of a state file; a later format gets a new version number.
const MAGIC: &str = "tokenkit-openpgp-sim 1";

/// The factory PINs of OpenPGP cards.
pub(crate) const DEFAULT_PW1: &[u8] = b"123456";
pub(crate) const DEFAULT_PW3: &[u8] = b"12345678";
pub(crate) const MAX_TRIES: u8 = 3;

/// What survives a power cycle. Its `Debug` leaves out the PINs, the resetting code and the
/// AES key (the private keys' own `Debug` hides them).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub serial: [u8; 4],
    pub pw1: Zeroizing<Vec<u8>>,
    pub pw3: Zeroizing<Vec<u8>>,
    /// The resetting code; empty when not set.
    pub rc: Zeroizing<Vec<u8>>,
    pub pw1_tries: u8,
    pub rc_tries: u8,
    pub pw3_tries: u8,
    /// C4 byte 1: PW1 stays valid for several signatures.
    pub pw1_multi: bool,
    pub attrs: [Algorithm; 3],
    pub keys: [Option<SimKey>; 3],
    /// DE key information: 00 absent, 01 generated, 02 imported.
    pub origin: [u8; 3],
    pub fingerprints: [[u8; 20]; 3],
    pub ca_fingerprints: [[u8; 20]; 3],
    pub times: [[u8; 4]; 3],
    pub name: Vec<u8>,
    pub lang: Vec<u8>,
    pub sex: u8,
    pub url: Vec<u8>,
    pub login: Vec<u8>,
    /// The cardholder certificates by occurrence: AUT, DEC, SIG (OpenPGP card 3.4 §7.2.5).
    pub certs: [Vec<u8>; 3],
    pub sig_count: u32,
    pub terminated: bool,
    /// The KDF-DO (F9) as last written; empty when the KDF is off.
    pub kdf: Vec<u8>,
    /// The AES key of PSO:ENCIPHER / DECIPHER (D5); empty when none is set.
    pub aes_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("serial", &self.serial)
            .field("tries", &(self.pw1_tries, self.rc_tries, self.pw3_tries))
            .field("attrs", &self.attrs)
            .field("keys", &self.keys)
            .field("kdf", &self.kdf)
            .field("terminated", &self.terminated)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A card as it leaves the factory.
    pub(crate) fn factory(serial: [u8; 4]) -> State {
        State {
            serial,
            pw1: Zeroizing::new(DEFAULT_PW1.to_vec()),
            pw3: Zeroizing::new(DEFAULT_PW3.to_vec()),
            rc: Zeroizing::new(Vec::new()),
            pw1_tries: MAX_TRIES,
            rc_tries: 0,
            pw3_tries: MAX_TRIES,
            pw1_multi: false,
            attrs: [
                Algorithm::EcdsaP256,
                Algorithm::EcdhP256,
                Algorithm::EcdsaP256,
            ],
            keys: [None, None, None],
            origin: [0; 3],
            fingerprints: [[0; 20]; 3],
            ca_fingerprints: [[0; 20]; 3],
            times: [[0; 4]; 3],
            name: Vec::new(),
            lang: Vec::new(),
            sex: b'9',
            url: Vec::new(),
            login: Vec::new(),
            certs: [Vec::new(), Vec::new(), Vec::new()],
            sig_count: 0,
            terminated: false,
            kdf: Vec::new(),
            aes_key: Zeroizing::new(Vec::new()),
        }
    }

    /// The state file's text. It holds the private keys and PINs: test cards only.
    pub(crate) fn encode(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        let mut line = |name: &str, value: &[u8]| {
            let _ = write!(s, "{name} ");
            for b in value {
                let _ = write!(s, "{b:02x}");
            }
            s.push('\n');
        };
        line("serial", &self.serial);
        line("pw1", &self.pw1);
        line("pw3", &self.pw3);
        line("rc", &self.rc);
        line(
            "tries",
            &[
                self.pw1_tries,
                self.rc_tries,
                self.pw3_tries,
                u8::from(self.pw1_multi),
            ],
        );
        for k in KeyRef::ALL {
            let i = k.index();
            line(&format!("attr-{k}"), &self.attrs[i].attributes());
            if let Some(key) = &self.keys[i] {
                line(&format!("key-{k}"), &key.secret);
            }
            line(&format!("fp-{k}"), &self.fingerprints[i]);
            line(&format!("cafp-{k}"), &self.ca_fingerprints[i]);
            line(&format!("time-{k}"), &self.times[i]);
        }
        line("origin", &self.origin);
        line("name", &self.name);
        line("lang", &self.lang);
        line("sex", &[self.sex]);
        line("url", &self.url);
        line("login", &self.login);
        for (i, c) in self.certs.iter().enumerate() {
            line(&format!("cert-{i}"), c);
        }
        line("sigcount", &self.sig_count.to_be_bytes());
        line("terminated", &[u8::from(self.terminated)]);
        line("kdf", &self.kdf);
        line("aes", &self.aes_key);
        let mut out = Zeroizing::new(format!("{MAGIC}\n"));
        out.push_str(&s);
        out
    }

    /// Reads a state file's text.
    pub(crate) fn decode(text: &str) -> Result<State> {
        let bad = |what: &str| Error::corrupted(format!("OpenPGP simulator state: {what}"));
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad("not a state file of version 1"));
        }
        let mut st = State::factory([0; 4]);
        let mut keys: [Option<Zeroizing<Vec<u8>>>; 3] = [None, None, None];
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let (name, hex) = line.split_once(' ').unwrap_or((line, ""));
            let value = Zeroizing::new(unhex(hex).ok_or_else(|| bad("bad hex"))?);
            let fixed = |n: usize| -> Result<&[u8]> {
                if value.len() == n {
                    Ok(&value)
                } else {
                    Err(bad(name))
                }
            };
            let slot = |prefix: &str| -> Option<usize> {
                name.strip_prefix(prefix)
                    .and_then(|k| k.parse::<KeyRef>().ok())
                    .map(KeyRef::index)
            };
            match name {
                "serial" => st.serial.copy_from_slice(fixed(4)?),
                "pw1" => st.pw1 = value.clone(),
                "pw3" => st.pw3 = value.clone(),
                "rc" => st.rc = value.clone(),
                "tries" => {
                    let t = fixed(4)?;
                    st.pw1_tries = t[0].min(MAX_TRIES);
                    st.rc_tries = t[1].min(MAX_TRIES);
                    st.pw3_tries = t[2].min(MAX_TRIES);
                    st.pw1_multi = t[3] != 0;
                }
                "origin" => st.origin.copy_from_slice(fixed(3)?),
                "name" => st.name = value.to_vec(),
                "lang" => st.lang = value.to_vec(),
                "sex" => st.sex = fixed(1)?[0],
                "url" => st.url = value.to_vec(),
                "login" => st.login = value.to_vec(),
                "cert-0" => st.certs[0] = value.to_vec(),
                "cert-1" => st.certs[1] = value.to_vec(),
                "cert-2" => st.certs[2] = value.to_vec(),
                "sigcount" => {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(fixed(4)?);
                    st.sig_count = u32::from_be_bytes(b);
                }
                "terminated" => st.terminated = fixed(1)?[0] != 0,
                "kdf" => st.kdf = value.to_vec(),
                "aes" => st.aes_key = value.clone(),
                _ => {
                    if let Some(i) = slot("attr-") {
                        st.attrs[i] =
                            Algorithm::from_attributes(&value).ok_or_else(|| bad("attributes"))?;
                    } else if let Some(i) = slot("key-") {
                        keys[i] = Some(value.clone());
                    } else if let Some(i) = slot("fp-") {
                        st.fingerprints[i].copy_from_slice(fixed(20)?);
                    } else if let Some(i) = slot("cafp-") {
                        st.ca_fingerprints[i].copy_from_slice(fixed(20)?);
                    } else if let Some(i) = slot("time-") {
                        st.times[i].copy_from_slice(fixed(4)?);
                    } else {
                        return Err(bad("unknown entry"));
                    }
                }
            }
        }
        for (i, secret) in keys.iter().enumerate() {
            if let Some(secret) = secret {
                st.keys[i] = Some(
                    SimKey::from_secret(st.attrs[i], secret).ok_or_else(|| bad("private key"))?,
                );
            }
        }
        Ok(st)
    }

    /// Saves atomically: a temporary file beside `path`, then a rename.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| {
            Error::communication("cannot write the simulator state")
                .with_underlying(token_core::Underlying::Io(e.kind()))
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, self.encode().as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Loads a state file.
    pub(crate) fn load(path: &Path) -> Result<State> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::communication("cannot read the simulator state")
                .with_underlying(token_core::Underlying::Io(e.kind()))
        })?);
        Self::decode(&text)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}
