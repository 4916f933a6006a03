//! The store directory: one file per token, written atomically, read without a PIN.

use core::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use token_core::{
    CertificateItem, Constraint, Error, Item, KeyItem, ObjectId, PersistentConfig, Pin, PublicKey,
    Result, TokenId,
};

use crate::crypto::{self, KdfParams, Wrapper};
use crate::format::{self, PinSlot, StoreData, MAX_FILE, MAX_LABEL};

/// The driver ID: soft token IDs read `soft:<uuid>`.
pub const DRIVER_ID: &str = "soft";
/// The extension of token files in a store directory: `<uuid>.softtoken`.
pub const FILE_EXTENSION: &str = "softtoken";
/// Shortest PIN or PUK accepted, in bytes.
pub const MIN_PIN_LEN: usize = 4;
/// Longest PIN or PUK accepted, in bytes.
pub const MAX_PIN_LEN: usize = 64;
/// Environment variable that makes [`CreateOptions::new`] use [`KdfParams::insecure_fast`].
pub const INSECURE_KDF_ENV: &str = "TOKENKIT_SOFT_INSECURE_KDF";

/// The default store directory: `$TOKENKIT_HOME`, else `$XDG_DATA_HOME/tokenkit`, else
/// `~/.local/share/tokenkit`. A caller's explicit `--store DIR` takes precedence over all of
/// them; that choice is the caller's, this function does not read arguments.
///
/// # Errors
/// `BadParameter` when none of `TOKENKIT_HOME`, `XDG_DATA_HOME` and `HOME` is set.
pub fn default_store() -> Result<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("TOKENKIT_HOME") {
        return Ok(home);
    }
    // XDG Base Directory: a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(data) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(data.join("tokenkit"));
    }
    var("HOME")
        .map(|h| h.join(".local/share/tokenkit"))
        .ok_or_else(|| Error::bad_parameter("no store directory: set TOKENKIT_HOME or HOME"))
}

/// What a new token gets: label, PIN, PUK, KDF cost and retry counters.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// The token's label (at most 255 bytes of UTF-8).
    pub label: String,
    /// The user PIN (4 to 64 bytes).
    pub pin: Pin,
    /// The unblocking code (4 to 64 bytes).
    pub puk: Pin,
    /// The Argon2id cost of checking the PIN or PUK.
    pub kdf: KdfParams,
    /// Wrong PINs allowed before the PIN blocks (1 to 15).
    pub pin_tries: u8,
    /// Wrong PUKs allowed before the token is locked for good (1 to 15).
    pub puk_tries: u8,
}

impl CreateOptions {
    /// Options with 3 PIN tries, 3 PUK tries and the production KDF cost, or
    /// [`KdfParams::insecure_fast`] when `TOKENKIT_SOFT_INSECURE_KDF=1` is set (for test suites
    /// that create tokens through tools, never for real keys).
    pub fn new(label: impl Into<String>, pin: Pin, puk: Pin) -> Self {
        let insecure = std::env::var_os(INSECURE_KDF_ENV).is_some_and(|v| v == "1");
        let kdf = if insecure {
            tracing::warn!("{INSECURE_KDF_ENV}=1: creating a soft token with a test-only KDF");
            KdfParams::insecure_fast()
        } else {
            KdfParams::default()
        };
        Self {
            label: label.into(),
            pin,
            puk,
            kdf,
            pin_tries: 3,
            puk_tries: 3,
        }
    }

    /// The same options with other KDF parameters.
    #[must_use]
    pub fn kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }
}

pub(crate) fn check_pin_format(pin: &Pin, what: &'static str) -> Result<()> {
    if (MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.len()) {
        Ok(())
    } else {
        Err(Error::bad_parameter(what))
    }
}

pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.len() > MAX_LABEL {
        Err(Error::bad_parameter("label longer than 255 bytes"))
    } else {
        Ok(())
    }
}

/// A fresh PIN slot wrapping `data_key` under `pin`.
pub(crate) fn new_pin_slot(
    uuid: &[u8; 16],
    which: Wrapper,
    pin: &Pin,
    data_key: &[u8; 32],
    kdf: &KdfParams,
    max_tries: u8,
) -> Result<PinSlot> {
    let salt: [u8; 16] = crypto::random()?;
    let kek = crypto::derive_kek(pin.expose(), &salt, kdf)?;
    let wrapped = crypto::seal(&kek, data_key, &crypto::wrap_ad(uuid, which))?;
    Ok(PinSlot {
        salt,
        wrapped,
        tries_left: max_tries,
        max_tries,
    })
}

/// Creates a token in `store` (made if missing, mode 0700) with 3 PIN and 3 PUK tries and the
/// default KDF cost; returns its ID.
///
/// # Errors
/// `BadParameter` for a PIN or PUK outside 4 to 64 bytes or a label over 255 bytes;
/// `CommunicationError` for I/O failures.
pub fn create(store: &Path, label: &str, pin: &Pin, puk: &Pin) -> Result<TokenId> {
    create_with(store, &CreateOptions::new(label, pin.clone(), puk.clone()))
}

/// Creates a token with every option given.
///
/// # Errors
/// As [`create`], and `BadParameter` for retry counts outside 1 to 15.
pub fn create_with(store: &Path, options: &CreateOptions) -> Result<TokenId> {
    check_label(&options.label)?;
    check_pin_format(&options.pin, "a PIN has 4 to 64 bytes")?;
    check_pin_format(&options.puk, "a PUK has 4 to 64 bytes")?;
    for tries in [options.pin_tries, options.puk_tries] {
        if !(1..=15).contains(&tries) {
            return Err(Error::bad_parameter("retry counters allow 1 to 15 tries"));
        }
    }
    let mut uuid: [u8; 16] = crypto::random()?;
    // RFC 9562 §5.4: version 4, variant 10.
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    let data_key = zeroize::Zeroizing::new(crypto::random::<32>()?);
    let data = StoreData {
        uuid,
        label: options.label.clone(),
        kdf: options.kdf,
        user: new_pin_slot(
            &uuid,
            Wrapper::Pin,
            &options.pin,
            &data_key,
            &options.kdf,
            options.pin_tries,
        )?,
        puk: new_pin_slot(
            &uuid,
            Wrapper::Puk,
            &options.puk,
            &data_key,
            &options.kdf,
            options.puk_tries,
        )?,
        keys: Vec::new(),
        certs: Vec::new(),
        seal: None,
    };
    let mut data = data;
    data.seal = Some(crypto::seal_contents(&data_key, &data)?);
    let bytes = format::encode(&data)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(store)?;
    let id = token_id(&uuid)?;
    let path = file_path(store, &uuid);
    let _lock = DirLock::acquire(store)?;
    if path.exists() {
        return Err(Error::bad_parameter(
            "a token with this UUID exists already",
        ));
    }
    write_atomic(&path, &bytes)?;
    tracing::info!(token = %id, "soft token created");
    Ok(id)
}

/// Deletes the token `id` from `store`, with its keys. A damaged file is deleted too.
///
/// # Errors
/// `TokenNotFound` when there is no such token; `BadParameter` for an ID that is not a soft
/// token's.
pub fn delete(store: &Path, id: &TokenId) -> Result<()> {
    let path = token_path(store, id)?;
    let _lock = DirLock::acquire(store).map_err(|e| {
        if e.code() == token_core::ErrorCode::CommunicationError && !store.exists() {
            Error::token_not_found("no such soft token")
        } else {
            e
        }
    })?;
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::token_not_found("no such soft token"))
        }
        Err(e) => return Err(e.into()),
    }
    sync_dir(store)?;
    tracing::info!(token = %id, "soft token deleted");
    Ok(())
}

/// A token file found in a store directory.
#[derive(Debug)]
pub struct StoredToken {
    /// The token's ID, from the file name.
    pub id: TokenId,
    /// The file.
    pub path: PathBuf,
    /// Its public contents, or why they cannot be read (`CorruptedData`, ...).
    pub file: Result<TokenFile>,
}

/// Every token file in `store`, by ID. A missing directory holds no tokens.
///
/// # Errors
/// `CommunicationError` when the directory cannot be read.
pub fn list(store: &Path) -> Result<Vec<StoredToken>> {
    let mut out: Vec<StoredToken> = token_files(store)?
        .into_iter()
        .map(|(id, path)| StoredToken {
            file: TokenFile::read(&path),
            id,
            path,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The `(id, path)` of every token file in `store`, without reading them.
pub(crate) fn token_files(store: &Path) -> Result<Vec<(TokenId, PathBuf)>> {
    let entries = match fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(FILE_EXTENSION))
            .and_then(|n| n.strip_suffix('.'))
        else {
            continue;
        };
        if let Some(uuid) = parse_uuid(stem) {
            out.push((token_id(&uuid)?, entry.path()));
        }
    }
    Ok(out)
}

/// The file of token `id` in `store`.
///
/// # Errors
/// `BadParameter` when `id` is not `soft:<uuid>`.
pub fn token_path(store: &Path, id: &TokenId) -> Result<PathBuf> {
    if id.driver() != DRIVER_ID {
        return Err(Error::bad_parameter("not a soft token ID"));
    }
    let uuid = parse_uuid(id.instance())
        .ok_or_else(|| Error::bad_parameter("a soft token ID is soft:<uuid>"))?;
    Ok(file_path(store, &uuid))
}

/// The configuration a persistent slot hands the driver for token `id` of `store`.
///
/// # Errors
/// As [`token_path`].
pub fn persistent_config(store: &Path, id: &TokenId) -> Result<PersistentConfig> {
    let path = token_path(store, id)?;
    Ok(PersistentConfig {
        driver: DRIVER_ID.to_owned(),
        instance: id.instance().to_owned(),
        data: path.as_os_str().as_bytes().to_vec(),
    })
}

fn file_path(store: &Path, uuid: &[u8; 16]) -> PathBuf {
    store.join(format!("{}.{FILE_EXTENSION}", uuid_string(uuid)))
}

pub(crate) fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses the lowercase hyphenated form `uuid_string` writes, nothing else (it names files).
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let hi = hex(*b.get(i)?)?;
        let lo = hex(*b.get(i + 1)?)?;
        *out.get_mut(n)? = hi << 4 | lo;
        n += 1;
        i += 2;
    }
    (n == 16).then_some(out)
}

pub(crate) fn token_id(uuid: &[u8; 16]) -> Result<TokenId> {
    TokenId::new(DRIVER_ID, &uuid_string(uuid))
}

pub(crate) fn token_id_of_instance(instance: &str) -> Result<TokenId> {
    let uuid = parse_uuid(instance).ok_or_else(|| Error::bad_parameter("not a soft token UUID"))?;
    token_id(&uuid)
}

/// Reads a store file whole, refusing more than the format allows.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::token_not_found("the soft token's file is gone"))
        }
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE {
        return Err(Error::corrupted(
            "store: file larger than the format allows",
        ));
    }
    Ok(bytes)
}

pub(crate) fn load(path: &Path) -> Result<StoreData> {
    format::decode(&read_file(path)?)
}

/// An exclusive `flock` on the store directory: serializes read-modify-write of token files
/// between threads and processes. Released on drop.
pub(crate) struct DirLock(File);

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let f = File::open(dir)?;
        f.lock()?;
        Ok(Self(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock as well; this only makes it explicit.
        let _ = self.0.unlock();
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either the old or the new
/// contents: temporary file in the same directory (mode 0600), fsync, rename, fsync of the
/// directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::bad_parameter("a token file needs a directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::bad_parameter("a token file needs a name"))?;
    let nonce: [u8; 8] = crypto::random()?;
    let tmp = dir.join(format!(
        ".{}.{}-{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Loads `path` under the directory lock, applies `f`, and writes the result atomically. When
/// the file does not load (damaged, newer version) or `f` fails, nothing is written.
pub(crate) fn update<T>(
    path: &Path,
    f: impl FnOnce(&mut StoreData) -> Result<T>,
) -> Result<(T, StoreData)> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::bad_parameter("a token file needs a directory"))?;
    let _lock = DirLock::acquire(dir)?;
    let mut data = load(path)?;
    let out = f(&mut data)?;
    write_atomic(path, &format::encode(&data)?)?;
    Ok((out, data))
}

/// As [`update`], for a change of the records made with the data key: the current contents
/// seal is checked first (a version 1 file has none yet), and the new contents are sealed.
pub(crate) fn update_sealed<T>(
    path: &Path,
    data_key: &[u8; 32],
    f: impl FnOnce(&mut StoreData) -> Result<T>,
) -> Result<(T, StoreData)> {
    update(path, |d| {
        if d.seal.is_some() {
            crypto::check_contents(data_key, d)?;
        }
        let out = f(d)?;
        d.seal = Some(crypto::seal_contents(data_key, d)?);
        Ok(out)
    })
}

/// The public contents of a token file, readable without the PIN, as a card's are.
#[derive(Clone)]
pub struct TokenFile {
    data: StoreData,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("id", &uuid_string(&self.data.uuid))
            .field("label", &self.data.label)
            .field("keys", &self.data.keys.len())
            .field("certificates", &self.data.certs.len())
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// `TokenNotFound` when it does not exist; `CorruptedData` when it is damaged, truncated or
    /// of a newer format version.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&read_file(path)?)
    }

    /// Checks and reads a store file's bytes. Never panics, whatever the bytes are; every
    /// length is checked against the input, so it allocates at most a small multiple of the
    /// input's size.
    ///
    /// # Errors
    /// `CorruptedData` for anything but a well-formed file of a version this build reads.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            data: format::decode(bytes)?,
        })
    }

    /// The token's ID, `soft:<uuid>`.
    ///
    /// # Errors
    /// None in practice: a UUID always makes a valid ID.
    pub fn token_id(&self) -> Result<TokenId> {
        token_id(&self.data.uuid)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.data.label
    }

    /// The keys and certificates, as the keychain lists them.
    pub fn items(&self) -> Vec<Item> {
        items_of(&self.data)
    }

    /// PIN tries left before it blocks.
    pub fn pin_tries_left(&self) -> u8 {
        self.data.user.tries_left
    }

    /// PUK tries left before the token is locked for good.
    pub fn puk_tries_left(&self) -> u8 {
        self.data.puk.tries_left
    }

    /// The Argon2id parameters the token's PIN and PUK are checked with.
    pub fn kdf(&self) -> KdfParams {
        self.data.kdf
    }
}

pub(crate) fn items_of(d: &StoreData) -> Vec<Item> {
    let keys = d.keys.iter().map(|k| {
        Item::Key(KeyItem::new(
            ObjectId::new(k.id),
            k.label.clone(),
            PublicKey {
                key_type: k.key_type,
                raw: k.public.clone(),
            },
            k.usage,
            Constraint::Pin,
        ))
    });
    let certs = d.certs.iter().map(|c| {
        Item::Certificate(CertificateItem {
            object_id: ObjectId::new(c.id),
            label: c.label.clone(),
            der: c.der.clone(),
        })
    });
    keys.chain(certs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_reject_other_spellings() {
        let u = [0xAB; 16];
        let s = uuid_string(&u);
        assert_eq!(s, "abababab-abab-abab-abab-abababababab");
        assert_eq!(parse_uuid(&s), Some(u));
        for bad in [
            "",
            "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB",
            "../../etc/passwd",
            &s[1..],
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }
}
