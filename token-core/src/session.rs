//! [`TokenSession`]: the user's handle for operations on a token, with the PIN logic every
//! driver shares.

use core::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::driver::{KeyImport, KeySpec, SessionDelegate};
use crate::error::{Error, ErrorCode, Result};
use crate::hub::ItemsNotifier;
use crate::model::{
    CertificateItem, DecryptAlgorithm, KeyItem, ObjectId, Operation, Pin, PinKind, PinStatus,
    SignatureAlgorithm, TokenId,
};

/// Runs a delegate call once; on `AuthenticationNeeded` collects the PIN through the callback
/// (once) and runs it a second time. Never loops on a wrong PIN.
macro_rules! with_auth {
    ($self:ident, $operation:expr, $d:ident => $call:expr) => {{
        $self.check_present()?;
        let first = {
            let $d = &mut $self.delegate;
            $call.await
        };
        match first {
            Err(e) if e.code() == ErrorCode::AuthenticationNeeded => {
                $self.collect_pin(e, $operation).await?;
                let $d = &mut $self.delegate;
                $call.await
            }
            other => other,
        }
    }};
}

/// What the caller's PIN callback is told when a PIN is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRequest {
    /// The token asking.
    pub token_id: TokenId,
    /// Which PIN.
    pub kind: PinKind,
    /// Tries left before the PIN blocks, when the token tells.
    pub retries_left: Option<u8>,
    /// The operation waiting for the PIN.
    pub operation: Option<Operation>,
}

impl PinRequest {
    /// True when exactly one try is left: a wrong PIN now blocks it. Prompts must say so
    /// plainly.
    pub fn is_last_try(&self) -> bool {
        self.retries_left == Some(1)
    }

    /// A prompt line for a terminal or dialog, naming the token and the tries left.
    pub fn prompt(&self) -> String {
        let mut s = format!("{} for {}", self.kind.name(), self.token_id);
        match self.retries_left {
            Some(1) => s.push_str(" (LAST TRY: a wrong PIN now blocks it)"),
            Some(n) => s.push_str(&format!(" ({n} tries left)")),
            None => {}
        }
        s.push_str(": ");
        s
    }
}

/// Supplies a PIN when an operation needs one (CryptoTokenKit's "key collector").
///
/// Return `None` to cancel: the operation then fails with `CanceledByUser`. The callback is
/// asked at most once per operation; a wrong PIN is reported to the caller, never retried.
/// Closures `Fn(&PinRequest) -> Option<Pin>` implement it.
#[async_trait]
pub trait PinCallback: Send + Sync {
    /// Asks for the PIN described by `request`.
    async fn request_pin(&self, request: &PinRequest) -> Option<Pin>;
}

#[async_trait]
impl<F> PinCallback for F
where
    F: Fn(&PinRequest) -> Option<Pin> + Send + Sync,
{
    async fn request_pin(&self, request: &PinRequest) -> Option<Pin> {
        self(request)
    }
}

/// Whether the session has verified the user PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthState {
    /// No PIN verified in this session.
    Unauthenticated,
    /// The user PIN was verified in this session.
    Authenticated,
}

/// A session on one token (the counterpart of `TKTokenSession`): its own authentication state,
/// and the operations on the token's keys.
///
/// An operation that needs a PIN fails with `AuthenticationNeeded`, unless the session was
/// authenticated with [`TokenSession::verify_pin`] or a [`PinCallback`] was set, in which case
/// the callback is asked once, told the tries left. A wrong PIN is returned as
/// `AuthenticationFailed` with the tries left; the session never tries again by itself.
/// Authentication state is never shared between sessions.
pub struct TokenSession {
    token_id: TokenId,
    delegate: Box<dyn SessionDelegate>,
    pin_callback: Option<Arc<dyn PinCallback>>,
    auth: AuthState,
    present: Arc<AtomicBool>,
    notifier: Option<ItemsNotifier>,
}

impl fmt::Debug for TokenSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSession")
            .field("token_id", &self.token_id)
            .field("auth", &self.auth)
            .field("pin_callback", &self.pin_callback.is_some())
            .finish()
    }
}

impl TokenSession {
    /// Wraps a driver's session delegate. The hub does this in
    /// [`crate::TokenHandle::open_session`]; driver tests may call it directly.
    pub fn new(token_id: TokenId, delegate: Box<dyn SessionDelegate>) -> Self {
        Self {
            token_id,
            delegate,
            pin_callback: None,
            auth: AuthState::Unauthenticated,
            present: Arc::new(AtomicBool::new(true)),
            notifier: None,
        }
    }

    pub(crate) fn attach(mut self, present: Arc<AtomicBool>, notifier: ItemsNotifier) -> Self {
        self.present = present;
        self.notifier = Some(notifier);
        self
    }

    /// The token this session is on.
    pub fn token_id(&self) -> &TokenId {
        &self.token_id
    }

    /// Sets the callback asked for a PIN when an operation needs one.
    pub fn set_pin_callback(&mut self, callback: Arc<dyn PinCallback>) {
        self.pin_callback = Some(callback);
    }

    /// Removes the PIN callback: operations needing a PIN then fail with
    /// `AuthenticationNeeded`.
    pub fn clear_pin_callback(&mut self) {
        self.pin_callback = None;
    }

    /// Whether this session verified the user PIN.
    pub fn auth_state(&self) -> AuthState {
        self.auth
    }

    /// True when the token can do `operation` with `key`.
    pub fn supports(&self, operation: Operation, key: &ObjectId) -> bool {
        self.delegate.supports(operation, key)
    }

    fn check_present(&self) -> Result<()> {
        if self.present.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::token_not_found("the token was removed"))
        }
    }

    /// Tries left and verified state of a PIN.
    ///
    /// # Errors
    /// `NotImplemented` when the token has no such PIN; `TokenNotFound` when it is gone.
    pub async fn pin_status(&mut self, kind: PinKind) -> Result<PinStatus> {
        self.check_present()?;
        self.delegate.pin_status(kind).await
    }

    /// Verifies a PIN once.
    ///
    /// # Errors
    /// `AuthenticationFailed` with the tries left when it is wrong (or `Some(0)` blocked).
    pub async fn verify_pin(&mut self, kind: PinKind, pin: &Pin) -> Result<()> {
        self.check_present()?;
        self.delegate.verify_pin(kind, pin).await?;
        if kind == PinKind::User {
            self.auth = AuthState::Authenticated;
        }
        Ok(())
    }

    /// Forgets verified PINs.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn logout(&mut self) -> Result<()> {
        self.auth = AuthState::Unauthenticated;
        self.delegate.logout().await
    }

    /// Called when an operation answered `AuthenticationNeeded`: asks the callback once (told
    /// the tries left) and verifies what it gives. Returns the original error when there is no
    /// callback.
    async fn collect_pin(&mut self, needed: Error, operation: Option<Operation>) -> Result<()> {
        let Some(callback) = self.pin_callback.clone() else {
            return Err(needed);
        };
        let kind = needed.needed_pin().unwrap_or(PinKind::User);
        let retries_left = match self.delegate.pin_status(kind).await {
            Ok(status) => status.retries_left,
            Err(_) => None,
        };
        if retries_left == Some(0) {
            return Err(Error::authentication_failed(Some(0)));
        }
        let request = PinRequest {
            token_id: self.token_id.clone(),
            kind,
            retries_left,
            operation,
        };
        let pin = callback
            .request_pin(&request)
            .await
            .ok_or_else(Error::canceled)?;
        self.verify_pin(kind, &pin).await
    }

    /// Signs `data` with `key`.
    ///
    /// # Errors
    /// `AuthenticationNeeded` (no PIN and no callback), `AuthenticationFailed` (wrong PIN from
    /// the callback), `CanceledByUser`, `ObjectNotFound`, `BadParameter`, `TokenNotFound`.
    pub async fn sign(
        &mut self,
        key: &ObjectId,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        with_auth!(self, Some(Operation::Sign(algorithm)), d => d.sign(key, algorithm, data))
    }

    /// Decrypts `data` with `key`.
    ///
    /// # Errors
    /// As [`TokenSession::sign`].
    pub async fn decrypt(
        &mut self,
        key: &ObjectId,
        algorithm: DecryptAlgorithm,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        with_auth!(self, Some(Operation::Decrypt(algorithm)), d => d.decrypt(key, algorithm, data))
    }

    /// Agrees a shared secret with `peer` (a raw public key of the same type as `key`).
    ///
    /// # Errors
    /// As [`TokenSession::sign`].
    pub async fn key_exchange(
        &mut self,
        key: &ObjectId,
        peer: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        with_auth!(self, Some(Operation::KeyExchange), d => d.key_exchange(key, peer))
    }

    /// Changes a PIN.
    ///
    /// # Errors
    /// `AuthenticationFailed` with tries left when `old` is wrong.
    pub async fn change_pin(&mut self, kind: PinKind, old: &Pin, new: &Pin) -> Result<()> {
        self.check_present()?;
        self.delegate.change_pin(kind, old, new).await
    }

    /// Resets the user PIN with the unblocking code.
    ///
    /// # Errors
    /// `AuthenticationFailed` with tries left when `puk` is wrong.
    pub async fn unblock_pin(&mut self, puk: &Pin, new: &Pin) -> Result<()> {
        self.check_present()?;
        self.delegate.unblock_pin(puk, new).await
    }

    fn changed(&self) {
        if let Some(n) = &self.notifier {
            n.items_changed(&self.token_id);
        }
    }

    /// Generates a key on the token. The keychain index sees it at once.
    ///
    /// # Errors
    /// As [`SessionDelegate::generate_key`], plus the PIN errors of [`TokenSession::sign`].
    pub async fn generate_key(&mut self, spec: &KeySpec) -> Result<KeyItem> {
        let item = with_auth!(self, None, d => d.generate_key(spec))?;
        self.changed();
        Ok(item)
    }

    /// Imports a private key. The keychain index sees it at once.
    ///
    /// # Errors
    /// As [`SessionDelegate::import_key`], plus the PIN errors of [`TokenSession::sign`].
    pub async fn import_key(&mut self, key: &KeyImport) -> Result<KeyItem> {
        let item = with_auth!(self, None, d => d.import_key(key))?;
        self.changed();
        Ok(item)
    }

    /// Stores a certificate. The keychain index sees it at once.
    ///
    /// # Errors
    /// As [`SessionDelegate::import_certificate`], plus the PIN errors.
    pub async fn import_certificate(
        &mut self,
        label: &str,
        der: &[u8],
        key: Option<&ObjectId>,
    ) -> Result<CertificateItem> {
        let item = with_auth!(self, None, d => d.import_certificate(label, der, key))?;
        self.changed();
        Ok(item)
    }

    /// Deletes an item. The keychain index drops it at once.
    ///
    /// # Errors
    /// As [`SessionDelegate::delete_item`], plus the PIN errors.
    pub async fn delete_item(&mut self, object: &ObjectId) -> Result<()> {
        with_auth!(self, None, d => d.delete_item(object))?;
        self.changed();
        Ok(())
    }

    /// The driver's delegate, for driver-specific operations a driver crate exposes through
    /// its own extension trait.
    pub fn delegate_mut(&mut self) -> &mut dyn SessionDelegate {
        self.delegate.as_mut()
    }
}
