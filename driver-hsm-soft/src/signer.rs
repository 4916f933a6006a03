//! Token keys as RustCrypto signers: [`P256TokenKey`] and [`Ed25519TokenKey`] implement
//! `signature::AsyncSigner` and `signature::Keypair` directly, so they drop into code written for
//! those traits.
//!
//! They are not `signature::Signer`: that trait's blanket `AsyncSigner` would do token I/O (a
//! PIN check, a card exchange) on the executor's thread. They work on any token's session, not
//! only the soft token's.

use std::sync::Arc;

use signature::hazmat::AsyncPrehashSigner;
use signature::{AsyncSigner, Keypair};
use token_core::{
    Error, HashAlg, KeyItem, KeyType, ObjectId, Result, SignatureAlgorithm, TokenSession,
};

/// A session several token keys may share; each signature locks it for its duration.
pub type SharedSession = Arc<async_lock::Mutex<TokenSession>>;

fn public_raw(key: &KeyItem, want: KeyType) -> Result<&[u8]> {
    if key.key_type != want {
        return Err(Error::bad_parameter("the key has another type"));
    }
    key.public_key
        .as_ref()
        .map(|p| p.raw.as_slice())
        .ok_or_else(|| Error::bad_parameter("the token does not report this key's public half"))
}

fn sig_error(e: Error) -> signature::Error {
    signature::Error::from_source(e)
}

/// An ECDSA P-256 key on a token: `AsyncSigner` of both `p256::ecdsa::Signature` and
/// `DerSignature` (ECDSA over SHA-256 of the message), `AsyncPrehashSigner` of both (the digest's
/// length picks SHA-256, -384 or -512), and `Keypair` with p256's `VerifyingKey`.
///
/// ```
/// # fn main() -> token_core::Result<()> {
/// use driver_hsm_soft::{CreateOptions, KdfParams, P256TokenKey, SoftToken};
/// use signature::{AsyncSigner, Keypair};
/// use p256::ecdsa::signature::Verifier;
/// use token_core::{block_on, KeySpec, KeyType, PinKind};
///
/// let dir = tempfile::tempdir().unwrap();
/// let options = CreateOptions::new("demo", "123456".into(), "12345678".into())
///     .kdf(KdfParams::insecure_fast());
/// let id = driver_hsm_soft::create_with(dir.path(), &options)?;
/// let token = SoftToken::open(&driver_hsm_soft::token_path(dir.path(), &id)?)?;
/// let mut session = token.session()?;
/// block_on(async {
///     session.verify_pin(PinKind::User, &"123456".into()).await?;
///     let spec = KeySpec { key_type: KeyType::EcP256, label: "k".into(), slot: None, usage: None };
///     let item = session.generate_key(&spec).await?;
///     let key = P256TokenKey::new(P256TokenKey::share(session), &item)?;
///     // Two signature types are offered (fixed-size and DER); name the one wanted.
///     let sig = AsyncSigner::<p256::ecdsa::Signature>::sign_async(&key, b"hello").await.unwrap();
///     assert!(key.verifying_key().verify(b"hello", &sig).is_ok());
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct P256TokenKey {
    session: SharedSession,
    object_id: ObjectId,
    verifying_key: p256::ecdsa::VerifyingKey,
}

impl core::fmt::Debug for P256TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("P256TokenKey")
            .field("object_id", &self.object_id)
            .finish_non_exhaustive()
    }
}

impl P256TokenKey {
    /// Wraps a session so that keys can share it.
    pub fn share(session: TokenSession) -> SharedSession {
        Arc::new(async_lock::Mutex::new(session))
    }

    /// The key `key` (a P-256 key whose public half the token reports) on `session`'s token.
    ///
    /// # Errors
    /// `BadParameter` for another key type or a missing or invalid public key.
    pub fn new(session: SharedSession, key: &KeyItem) -> Result<Self> {
        let raw = public_raw(key, KeyType::EcP256)?;
        let verifying_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(raw)
            .map_err(|_| Error::bad_parameter("the public key is not a P-256 point"))?;
        Ok(Self {
            session,
            object_id: key.object_id.clone(),
            verifying_key,
        })
    }

    /// The key's object ID on its token.
    pub fn object_id(&self) -> &ObjectId {
        &self.object_id
    }

    /// The session it signs through.
    pub fn session(&self) -> &SharedSession {
        &self.session
    }

    async fn sign_der(&self, algorithm: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>> {
        self.session
            .lock()
            .await
            .sign(&self.object_id, algorithm, data)
            .await
    }
}

impl AsyncSigner<p256::ecdsa::DerSignature> for P256TokenKey {
    async fn sign_async(&self, msg: &[u8]) -> Result<p256::ecdsa::DerSignature, signature::Error> {
        let der = self
            .sign_der(SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256), msg)
            .await
            .map_err(sig_error)?;
        p256::ecdsa::DerSignature::from_bytes(&der)
    }
}

impl AsyncSigner<p256::ecdsa::Signature> for P256TokenKey {
    async fn sign_async(&self, msg: &[u8]) -> Result<p256::ecdsa::Signature, signature::Error> {
        let der = <Self as AsyncSigner<p256::ecdsa::DerSignature>>::sign_async(self, msg).await?;
        p256::ecdsa::Signature::from_der(der.as_bytes())
    }
}

fn hash_of_len(len: usize) -> Result<HashAlg, signature::Error> {
    Ok(match len {
        32 => HashAlg::Sha256,
        48 => HashAlg::Sha384,
        64 => HashAlg::Sha512,
        _ => return Err(signature::Error::new()),
    })
}

impl AsyncPrehashSigner<p256::ecdsa::DerSignature> for P256TokenKey {
    async fn sign_prehash_async(
        &self,
        prehash: &[u8],
    ) -> Result<p256::ecdsa::DerSignature, signature::Error> {
        let alg = SignatureAlgorithm::EcdsaDigest(hash_of_len(prehash.len())?);
        let der = self.sign_der(alg, prehash).await.map_err(sig_error)?;
        p256::ecdsa::DerSignature::from_bytes(&der)
    }
}

impl AsyncPrehashSigner<p256::ecdsa::Signature> for P256TokenKey {
    async fn sign_prehash_async(
        &self,
        prehash: &[u8],
    ) -> Result<p256::ecdsa::Signature, signature::Error> {
        let der = <Self as AsyncPrehashSigner<p256::ecdsa::DerSignature>>::sign_prehash_async(
            self, prehash,
        )
        .await?;
        p256::ecdsa::Signature::from_der(der.as_bytes())
    }
}

impl Keypair for P256TokenKey {
    type VerifyingKey = p256::ecdsa::VerifyingKey;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.verifying_key
    }
}

/// An Ed25519 key on a token.
#[derive(Clone)]
pub struct Ed25519TokenKey {
    session: SharedSession,
    object_id: ObjectId,
    verifying_key: ed25519_dalek::VerifyingKey,
}

impl core::fmt::Debug for Ed25519TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ed25519TokenKey")
            .field("object_id", &self.object_id)
            .finish_non_exhaustive()
    }
}

impl Ed25519TokenKey {
    /// The key `key` (an Ed25519 key whose public half the token reports) on `session`'s
    /// token.
    ///
    /// # Errors
    /// `BadParameter` for another key type or a missing or invalid public key.
    pub fn new(session: SharedSession, key: &KeyItem) -> Result<Self> {
        let raw: &[u8; 32] = public_raw(key, KeyType::Ed25519)?
            .try_into()
            .map_err(|_| Error::bad_parameter("an Ed25519 public key has 32 bytes"))?;
        let verifying_key = ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map_err(|_| Error::bad_parameter("invalid Ed25519 public key"))?;
        Ok(Self {
            session,
            object_id: key.object_id.clone(),
            verifying_key,
        })
    }

    /// The key's object ID on its token.
    pub fn object_id(&self) -> &ObjectId {
        &self.object_id
    }
}

impl AsyncSigner<ed25519_dalek::Signature> for Ed25519TokenKey {
    async fn sign_async(&self, msg: &[u8]) -> Result<ed25519_dalek::Signature, signature::Error> {
        let raw = self
            .session
            .lock()
            .await
            .sign(&self.object_id, SignatureAlgorithm::Ed25519, msg)
            .await
            .map_err(sig_error)?;
        ed25519_dalek::Signature::from_slice(&raw)
    }
}

impl Keypair for Ed25519TokenKey {
    type VerifyingKey = ed25519_dalek::VerifyingKey;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.verifying_key
    }
}
