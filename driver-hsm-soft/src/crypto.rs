//! The store's secrets: a random 32-byte data key, wrapped under keys derived from the PIN and
//! the PUK (Argon2id), and every private key sealed under the data key (XChaCha20-Poly1305,
//! random 24-byte nonces, associated data binding the token and the record).

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use token_core::{Error, Result};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// A sealed 32-byte secret: nonce, ciphertext, tag.
pub(crate) const SEALED_LEN: usize = NONCE_LEN + SECRET_LEN + TAG_LEN;

/// A 32-byte secret (data key, key-encryption key, private key), zeroized on drop.
pub(crate) type Secret = Zeroizing<[u8; SECRET_LEN]>;

/// Argon2id parameters for deriving the key that wraps the data key from a PIN or PUK.
///
/// They are stored in each token file, so a token keeps the parameters it was created with.
/// [`KdfParams::default`] is the production setting (19 MiB, 2 passes, 1 lane: the OWASP
/// recommendation, about 40 ms per PIN check on a current core). Tests that create many tokens
/// use [`KdfParams::insecure_fast`], or set `TOKENKIT_SOFT_INSECURE_KDF=1` in the environment of
/// the process that creates the token (see [`crate::CreateOptions::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfParams {
    pub(crate) m_cost_kib: u32,
    pub(crate) t_cost: u32,
    pub(crate) p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// Most memory a store may ask for (1 GiB): a crafted file must not exhaust the machine.
const MAX_M_COST_KIB: u32 = 1 << 20;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

impl KdfParams {
    /// Parameters with `m_cost_kib` KiB of memory, `t_cost` passes and `p_cost` lanes.
    ///
    /// # Errors
    /// `BadParameter` unless 1 ≤ lanes ≤ 16, 8 × lanes ≤ memory ≤ 1 GiB and 1 ≤ passes ≤ 64.
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        Self::checked(m_cost_kib, t_cost, p_cost)
    }

    pub(crate) fn checked(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let ok = (1..=MAX_P_COST).contains(&p_cost)
            && (8 * p_cost..=MAX_M_COST_KIB).contains(&m_cost_kib)
            && (1..=MAX_T_COST).contains(&t_cost);
        if ok {
            Ok(Self {
                m_cost_kib,
                t_cost,
                p_cost,
            })
        } else {
            Err(Error::bad_parameter("Argon2id parameters out of range"))
        }
    }

    /// The cheapest parameters Argon2 allows (8 KiB, 1 pass). **For tests only**: a PIN
    /// protected this way falls to a brute-force search quickly once the file is copied.
    pub const fn insecure_fast() -> Self {
        Self {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Memory, in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Passes over the memory.
    pub fn passes(&self) -> u32 {
        self.t_cost
    }

    /// Lanes (degree of parallelism).
    pub fn lanes(&self) -> u32 {
        self.p_cost
    }
}

/// Fills an array from the operating system's random source.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|_| Error::communication("the system random source failed"))?;
    Ok(out)
}

/// Derives the key that wraps the data key from a PIN (Argon2id v1.3).
pub(crate) fn derive_kek(pin: &[u8], salt: &[u8; 16], kdf: &KdfParams) -> Result<Secret> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(SECRET_LEN))
        .map_err(|_| Error::corrupted("store: KDF parameters out of range"))?;
    let mut out = Zeroizing::new([0u8; SECRET_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pin, salt, out.as_mut_slice())
        .map_err(|_| Error::bad_parameter("the PIN cannot be processed"))?;
    Ok(out)
}

/// Seals a 32-byte secret under `key`.
pub(crate) fn seal(
    key: &[u8; SECRET_LEN],
    secret: &[u8; SECRET_LEN],
    ad: &[u8],
) -> Result<[u8; SEALED_LEN]> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let mut out = [0u8; SEALED_LEN];
    let (n, rest) = out.split_at_mut(NONCE_LEN);
    let (body, tag_out) = rest.split_at_mut(SECRET_LEN);
    n.copy_from_slice(&nonce);
    body.copy_from_slice(secret);
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), ad, body.into())
        .map_err(|_| Error::bad_parameter("sealing failed"))?;
    tag_out.copy_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal`] made; `None` when the key or associated data is wrong or the bytes
/// were changed.
pub(crate) fn open(key: &[u8; SECRET_LEN], sealed: &[u8; SEALED_LEN], ad: &[u8]) -> Option<Secret> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(SECRET_LEN);
    let nonce = XNonce::try_from(nonce).ok()?;
    let tag = Tag::try_from(tag).ok()?;
    let mut out = Zeroizing::new([0u8; SECRET_LEN]);
    out.copy_from_slice(body);
    cipher
        .decrypt_inout_detached(&nonce, ad, out.as_mut_slice().into(), &tag)
        .ok()?;
    Some(out)
}

/// Which secret wraps a copy of the data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wrapper {
    Pin = 1,
    Puk = 2,
}

/// Associated data of a wrapped data key: the token and which secret wraps it, so a wrapped
/// key cannot be moved to another token or from the PUK's place to the PIN's.
pub(crate) fn wrap_ad(uuid: &[u8; 16], wrapper: Wrapper) -> Vec<u8> {
    let mut ad = b"tokenkit soft token v1: data key".to_vec();
    ad.extend_from_slice(uuid);
    ad.push(wrapper as u8);
    ad
}

/// Associated data of a sealed private key: the token, the record ID and its public part
/// (label, type, usage, public key), as encoded in the file.
pub(crate) fn key_ad(uuid: &[u8; 16], public_part: &[u8]) -> Vec<u8> {
    let mut ad = b"tokenkit soft token v1: private key".to_vec();
    ad.extend_from_slice(uuid);
    ad.extend_from_slice(public_part);
    ad
}

/// The contents seal of a store (format 2): SHA-256 of [`crate::format::seal_input`], sealed
/// under the data key, so only a holder of the data key can make one that opens.
pub(crate) fn seal_contents(
    data_key: &[u8; SECRET_LEN],
    d: &crate::format::StoreData,
) -> Result<[u8; SEALED_LEN]> {
    let digest = contents_digest(d)?;
    seal(data_key, &digest, &contents_ad(&d.uuid))
}

/// Checks a store's contents seal.
///
/// # Errors
/// `CorruptedData` when the seal is missing or does not match the contents: the records were
/// changed by something that did not have the data key.
pub(crate) fn check_contents(
    data_key: &[u8; SECRET_LEN],
    d: &crate::format::StoreData,
) -> Result<()> {
    let seal = d
        .seal
        .as_ref()
        .ok_or_else(|| Error::corrupted("store: the contents seal is missing"))?;
    let digest = contents_digest(d)?;
    match open(data_key, seal, &contents_ad(&d.uuid)) {
        Some(sealed) if sealed.as_slice() == digest.as_slice() => Ok(()),
        _ => Err(Error::corrupted(
            "store: the token's records were changed outside tokenkit (contents seal mismatch)",
        )),
    }
}

fn contents_digest(d: &crate::format::StoreData) -> Result<[u8; SECRET_LEN]> {
    use sha2::Digest as _;
    let input = crate::format::seal_input(d)?;
    Ok(sha2::Sha256::digest(&input).into())
}

fn contents_ad(uuid: &[u8; 16]) -> Vec<u8> {
    let mut ad = b"tokenkit soft token v2: contents seal".to_vec();
    ad.extend_from_slice(uuid);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_key_and_associated_data() {
        let key = [1u8; 32];
        let secret = [2u8; 32];
        let sealed = seal(&key, &secret, b"ad").unwrap();
        assert_eq!(*open(&key, &sealed, b"ad").unwrap(), secret);
        assert!(open(&key, &sealed, b"other").is_none());
        assert!(open(&[3u8; 32], &sealed, b"ad").is_none());
        let mut bad = sealed;
        bad[30] ^= 1;
        assert!(open(&key, &bad, b"ad").is_none());
    }

    #[test]
    fn kdf_is_deterministic_per_salt() {
        let p = KdfParams::insecure_fast();
        let a = derive_kek(b"1234", &[0; 16], &p).unwrap();
        let b = derive_kek(b"1234", &[0; 16], &p).unwrap();
        let c = derive_kek(b"1234", &[1; 16], &p).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
    }
}
