//! [`Fido2Session`]: the CTAP2 client with the automatic AuthToken logic.
//!
//! Most FIDO2 operations need a pinUvAuthToken ("AuthToken") carrying the right permissions
//! and, for some, the right relying-party ID. A `Fido2Session` obtains them by itself, asking
//! its key collector (a [`PinCallback`]) for the PIN when it must, by these rules:
//!
//! 1. **The current AuthToken is always tried first.** The session does not look at the
//!    recorded permissions to decide; it sends the operation with the token it holds.
//! 2. **On CTAP2_ERR_PIN_AUTH_INVALID** it obtains a new token whose permissions are the
//!    operation's **united with** the recorded [`Fido2Session::auth_token_permissions`], for
//!    the recorded [`Fido2Session::auth_token_rp_id`], or for the operation's own RP ID, which
//!    then replaces the recorded one; and it retries the operation **once**.
//! 3. **Credential metadata and RP enumeration** need a token with credentialManagement and
//!    *no* RP ID: the session first tries the token it has, then obtains one with only
//!    credentialManagement and no RP ID; afterwards the recorded properties are the saved
//!    ones (permissions with credentialManagement added, the RP ID as it was).
//! 4. [`Fido2Session::clear_auth_token`] forgets the token, permissions and RP ID.
//! 5. [`Fido2Session::add_permissions`] obtains a token with the recorded permissions plus the
//!    new ones, for the new RP ID, or the recorded one when `None` is given.
//! 6. **CTAP 2.0** authenticators (no `pinUvAuthToken` option) have no permissions: the session
//!    obtains a PinToken with getPinToken (clientPIN 05) instead, keeping the same properties.
//! 7. **Expiry**: after an operation with user presence an authenticator keeps only the
//!    largeBlobWrite permission of a token; the next operation that needs another permission
//!    gets PIN_AUTH_INVALID and the session obtains a new token by rule 2.
//! 8. **A wrong PIN is never retried**: the key collector is asked once per token acquisition,
//!    and a wrong PIN comes back to the caller as `AuthenticationFailed` with the tries left.
//!
//! Without a key collector, an operation that needs a new token fails with
//! `AuthenticationNeeded`; [`Fido2Session::verify_pin`] then obtains exactly the token that
//! operation needed, and the operation can be called again (this is how the tokenkit
//! [`token_core::TokenSession`] drives it).

use std::fmt;
use std::sync::Arc;

use token_core::{Error, ErrorCode, Pin, PinCallback, PinKind, PinRequest, Result, TokenId};

use crate::cbor::Value;
use crate::client::{
    ctap_status, Assertion, CredentialInfo, CredentialMetadata, Ctap2, GetAssertionRequest, Info,
    MakeCredentialRequest, MakeCredentialResponse, PinRetries, PinUvAuthToken, RpInfo, User,
};
use crate::ctap::{config, Permissions, Status};

/// What an operation needs of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// These permissions, with this RP ID (or the recorded one when `None`).
    Permissions(Permissions, Option<String>),
    /// credentialManagement and no RP ID (metadata, RP enumeration): rule 3.
    CredentialManagementWithoutRp,
}

impl Need {
    /// credentialManagement for `rp_id`'s credentials (or the recorded RP ID when `None`).
    fn credential_management(rp_id: Option<&str>) -> Self {
        Need::Permissions(Permissions::CREDENTIAL_MANAGEMENT, rp_id.map(str::to_owned))
    }
}

/// The CTAP2 client with the automatic AuthToken logic (see the module documentation).
pub struct Fido2Session {
    client: Ctap2,
    token_id: TokenId,
    key_collector: Option<Arc<dyn PinCallback>>,
    auth_token: Option<PinUvAuthToken>,
    auth_token_permissions: Option<Permissions>,
    auth_token_rp_id: Option<String>,
    pending: Option<Need>,
}

impl fmt::Debug for Fido2Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fido2Session")
            .field("token_id", &self.token_id)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("auth_token_permissions", &self.auth_token_permissions)
            .field("auth_token_rp_id", &self.auth_token_rp_id)
            .finish_non_exhaustive()
    }
}

/// Runs `$call` (which uses `$client` and `$token`) by the AuthToken rules: current token
/// first, a new one on PIN_AUTH_INVALID, one retry.
macro_rules! with_token {
    ($self:ident, $need:expr, |$client:ident, $token:ident| $call:expr) => {{
        let need: Need = $need;
        // Only the last operation's need is kept for verify_pin.
        $self.pending = None;
        if !$self.pin_in_use() {
            let $client = &$self.client;
            let $token: Option<&PinUvAuthToken> = None;
            $call.await
        } else {
            let mut done = None;
            if $self.auth_token.is_some() {
                let $client = &$self.client;
                let $token = $self.auth_token.as_ref();
                match $call.await {
                    Err(e) if is_pin_auth_invalid(&e) => {}
                    other => done = Some(other),
                }
            }
            match done {
                Some(result) => result,
                None => {
                    $self.obtain_token(&need).await?;
                    let $client = &$self.client;
                    let $token = $self.auth_token.as_ref();
                    $call.await
                }
            }
        }
    }};
}

fn is_pin_auth_invalid(e: &Error) -> bool {
    ctap_status(e) == Some(Status::PIN_AUTH_INVALID)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Fido2Session {
    /// A session over `client`, with no key collector and no token.
    pub fn new(client: Ctap2) -> Self {
        let token_id = default_token_id(&client.info().aaguid);
        Self {
            client,
            token_id,
            key_collector: None,
            auth_token: None,
            auth_token_permissions: None,
            auth_token_rp_id: None,
            pending: None,
        }
    }

    /// Connects over `channel` (getInfo) and makes a session.
    ///
    /// # Errors
    /// As [`Ctap2::new`].
    pub async fn connect(channel: Arc<dyn token_core::CtapChannel>) -> Result<Self> {
        Ok(Self::new(Ctap2::new(channel).await?))
    }

    /// Names the token in the key collector's requests.
    pub fn set_token_id(&mut self, id: TokenId) {
        self.token_id = id;
    }

    /// Sets the key collector: asked for the PIN once per token acquisition, told the tries
    /// left (and whether this is the last one).
    pub fn set_key_collector(&mut self, collector: Arc<dyn PinCallback>) {
        self.key_collector = Some(collector);
    }

    /// Removes the key collector: operations that need a new token then fail with
    /// `AuthenticationNeeded` (see [`Fido2Session::verify_pin`]).
    pub fn clear_key_collector(&mut self) {
        self.key_collector = None;
    }

    /// The low-level client.
    pub fn client(&self) -> &Ctap2 {
        &self.client
    }

    /// getInfo, as read when the session connected (or refreshed since).
    pub fn info(&self) -> &Info {
        self.client.info()
    }

    /// The AuthToken in use, if any. Zeroized when replaced or dropped.
    pub fn auth_token(&self) -> Option<&PinUvAuthToken> {
        self.auth_token.as_ref()
    }

    /// The permissions of the last AuthToken obtained (with the rule-3 exception).
    pub fn auth_token_permissions(&self) -> Option<Permissions> {
        self.auth_token_permissions
    }

    /// The RP ID given when the last AuthToken was obtained (with the rule-3 exception).
    pub fn auth_token_rp_id(&self) -> Option<&str> {
        self.auth_token_rp_id.as_deref()
    }

    /// Forgets the AuthToken, its permissions and its RP ID: the next token starts from
    /// nothing.
    pub fn clear_auth_token(&mut self) {
        self.auth_token = None;
        self.auth_token_permissions = None;
        self.auth_token_rp_id = None;
    }

    /// Obtains a token with the recorded permissions plus `permissions`, for `rp_id`, or the
    /// recorded RP ID when `None` (the recorded one cannot be removed but by
    /// [`Fido2Session::clear_auth_token`]).
    ///
    /// # Errors
    /// The PIN errors (wrong PIN with the tries left, blocked, canceled);
    /// `AuthenticationNeeded` without a key collector.
    pub async fn add_permissions(
        &mut self,
        permissions: Permissions,
        rp_id: Option<&str>,
    ) -> Result<()> {
        self.obtain_token(&Need::Permissions(permissions, rp_id.map(str::to_owned)))
            .await
    }

    /// Obtains, with `pin`, the token that the last operation that failed with
    /// `AuthenticationNeeded` needed; without such an operation, a token with
    /// credentialManagement and no RP ID (enough to list credentials; rule 3 for the recorded
    /// properties). The key collector is not asked.
    ///
    /// # Errors
    /// `AuthenticationFailed` with the tries left for a wrong PIN; blocked PINs.
    pub async fn verify_pin(&mut self, pin: &Pin) -> Result<()> {
        let need = self
            .pending
            .take()
            .unwrap_or(Need::CredentialManagementWithoutRp);
        self.obtain_with_pin(&need, pin).await
    }

    /// True when an operation failed with `AuthenticationNeeded` (no key collector) and
    /// [`Fido2Session::verify_pin`] would obtain the token it needs.
    pub fn is_waiting_for_pin(&self) -> bool {
        self.pending.is_some()
    }

    /// True when the session must authenticate operations (a PIN is set).
    fn pin_in_use(&self) -> bool {
        self.client.info().pin_is_set()
    }

    async fn obtain_token(&mut self, need: &Need) -> Result<()> {
        let Some(collector) = self.key_collector.clone() else {
            self.pending = Some(need.clone());
            return Err(Error::authentication_needed(
                "the FIDO2 PIN is needed for a new pinUvAuthToken",
            ));
        };
        let retries = self.client.get_pin_retries().await.ok();
        if retries.is_some_and(|r| r.retries == 0) {
            return Err(Error::authentication_failed(Some(0)));
        }
        let request = PinRequest {
            token_id: self.token_id.clone(),
            kind: PinKind::User,
            retries_left: retries.map(|r| r.retries),
            operation: None,
        };
        let pin = collector
            .request_pin(&request)
            .await
            .ok_or_else(Error::canceled)?;
        self.obtain_with_pin(need, &pin).await
    }

    async fn obtain_with_pin(&mut self, need: &Need, pin: &Pin) -> Result<()> {
        let recorded = self.auth_token_permissions.unwrap_or(Permissions::NONE);
        let (permissions, rp_id) = match need {
            Need::Permissions(p, rp) => (
                recorded.union(*p),
                rp.clone().or_else(|| self.auth_token_rp_id.clone()),
            ),
            Need::CredentialManagementWithoutRp => (Permissions::CREDENTIAL_MANAGEMENT, None),
        };
        // The old token is dead on the authenticator once a new one is asked for.
        self.auth_token = None;
        let token = self
            .client
            .get_pin_token(pin, permissions, rp_id.as_deref())
            .await?;
        self.auth_token = Some(token);
        match need {
            Need::Permissions(..) => {
                self.auth_token_permissions = Some(permissions);
                self.auth_token_rp_id = rp_id;
            }
            Need::CredentialManagementWithoutRp => {
                // Rule 3: the recorded properties stay what they were (plus cm), for later
                // tokens; they do not describe this one.
                self.auth_token_permissions =
                    Some(recorded.union(Permissions::CREDENTIAL_MANAGEMENT));
            }
        }
        Ok(())
    }

    // -- PIN management (no token needed) --

    /// The PIN tries left.
    ///
    /// # Errors
    /// Transport and CTAP errors.
    pub async fn pin_retries(&self) -> Result<PinRetries> {
        self.client.get_pin_retries().await
    }

    /// Sets the first PIN, then reads getInfo again.
    ///
    /// # Errors
    /// As [`Ctap2::set_pin`].
    pub async fn set_pin(&mut self, new: &Pin) -> Result<()> {
        self.client.set_pin(new).await?;
        self.client.refresh_info().await?;
        Ok(())
    }

    /// Changes the PIN; the authenticator invalidates the current token.
    ///
    /// # Errors
    /// `AuthenticationFailed` with the tries left for a wrong current PIN.
    pub async fn change_pin(&mut self, current: &Pin, new: &Pin) -> Result<()> {
        self.client.change_pin(current, new).await?;
        self.auth_token = None;
        self.client.refresh_info().await?;
        Ok(())
    }

    // -- operations --

    /// makeCredential, authenticated with a token carrying makeCredential for the RP.
    ///
    /// # Errors
    /// PIN errors as in the module documentation; CTAP and transport errors.
    pub async fn make_credential(
        &mut self,
        request: &MakeCredentialRequest,
    ) -> Result<MakeCredentialResponse> {
        with_token!(
            self,
            Need::Permissions(Permissions::MAKE_CREDENTIAL, Some(request.rp.id.clone())),
            |c, t| c.make_credential(request, t)
        )
    }

    /// getAssertion and, when several credentials answer, every getNextAssertion.
    ///
    /// # Errors
    /// `ObjectNotFound` when no credential matches; PIN, CTAP and transport errors.
    pub async fn get_assertions(
        &mut self,
        request: &GetAssertionRequest,
    ) -> Result<Vec<Assertion>> {
        let first = with_token!(
            self,
            Need::Permissions(Permissions::GET_ASSERTION, Some(request.rp_id.clone())),
            |c, t| c.get_assertion(request, t)
        )?;
        let more = first
            .number_of_credentials
            .unwrap_or(1)
            .clamp(1, crate::client::MAX_ENUMERATION);
        let mut out = vec![first];
        for _ in 1..more {
            out.push(self.client.get_next_assertion().await?);
        }
        Ok(out)
    }

    /// getAssertion, the first assertion only.
    ///
    /// # Errors
    /// As [`Fido2Session::get_assertions`].
    pub async fn get_assertion(&mut self, request: &GetAssertionRequest) -> Result<Assertion> {
        with_token!(
            self,
            Need::Permissions(Permissions::GET_ASSERTION, Some(request.rp_id.clone())),
            |c, t| c.get_assertion(request, t)
        )
    }

    fn need_token(t: Option<&PinUvAuthToken>) -> Result<&PinUvAuthToken> {
        t.ok_or_else(|| {
            Error::with_code(
                ErrorCode::BadParameter,
                "credential management needs a PIN: set one first",
            )
        })
    }

    /// getCredsMetadata (rule 3: credentialManagement without an RP ID).
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn credential_metadata(&mut self) -> Result<CredentialMetadata> {
        with_token!(self, Need::CredentialManagementWithoutRp, |c, t| async {
            c.credential_metadata(Self::need_token(t)?).await
        })
    }

    /// Every RP with discoverable credentials (rule 3).
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn enumerate_rps(&mut self) -> Result<Vec<RpInfo>> {
        with_token!(self, Need::CredentialManagementWithoutRp, |c, t| async {
            c.enumerate_rps(Self::need_token(t)?).await
        })
    }

    /// The discoverable credentials of one RP. The token is tried as it is; a new one is for
    /// `rp_id` with credentialManagement.
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn enumerate_credentials(&mut self, rp_id: &str) -> Result<Vec<CredentialInfo>> {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(rp_id.as_bytes()).to_vec();
        with_token!(
            self,
            Need::credential_management(Some(rp_id)),
            |c, t| async { c.enumerate_credentials(&hash, Self::need_token(t)?).await }
        )
    }

    /// Deletes a discoverable credential; `rp_id` is its RP where known (a new token is then
    /// for that RP).
    ///
    /// # Errors
    /// `ObjectNotFound`; PIN, CTAP and transport errors.
    pub async fn delete_credential(
        &mut self,
        credential_id: &[u8],
        rp_id: Option<&str>,
    ) -> Result<()> {
        with_token!(self, Need::credential_management(rp_id), |c, t| async {
            c.delete_credential(credential_id, Self::need_token(t)?)
                .await
        })
    }

    /// Updates a credential's user name and display name.
    ///
    /// # Errors
    /// As [`Fido2Session::delete_credential`].
    pub async fn update_user_information(
        &mut self,
        credential_id: &[u8],
        user: &User,
        rp_id: Option<&str>,
    ) -> Result<()> {
        with_token!(self, Need::credential_management(rp_id), |c, t| async {
            c.update_user_information(credential_id, user, Self::need_token(t)?)
                .await
        })
    }

    /// Reads the large-blob array (no token needed), trailer checked.
    ///
    /// # Errors
    /// As [`Ctap2::read_large_blob_array`].
    pub async fn read_large_blob_array(&self) -> Result<Vec<u8>> {
        self.client.read_large_blob_array().await
    }

    /// Writes the serialized large-blob array `array` (a CBOR array), in fragments, with a
    /// token carrying largeBlobWrite. The first fragment goes by the AuthToken rules; the rest
    /// use the token that wrote it.
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn write_large_blob_array(&mut self, array: &[u8]) -> Result<()> {
        let fragments = self.client.large_blob_fragments(array)?;
        let total = array.len() + 16;
        let mut iter = fragments.iter();
        let Some((_, first)) = iter.next() else {
            return Ok(());
        };
        with_token!(
            self,
            Need::Permissions(Permissions::LARGE_BLOB_WRITE, None),
            |c, t| c.write_large_blob_fragment(first, 0, Some(total), t)
        )?;
        for (offset, piece) in iter {
            self.client
                .write_large_blob_fragment(piece, *offset, None, self.auth_token.as_ref())
                .await?;
        }
        Ok(())
    }

    /// authenticatorConfig toggleAlwaysUv (token with authenticatorConfig).
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn toggle_always_uv(&mut self) -> Result<()> {
        with_token!(
            self,
            Need::Permissions(Permissions::AUTHENTICATOR_CONFIG, None),
            |c, t| c.config(config::TOGGLE_ALWAYS_UV, None, t)
        )?;
        self.client.refresh_info().await?;
        Ok(())
    }

    /// authenticatorConfig setMinPINLength.
    ///
    /// # Errors
    /// PIN, CTAP and transport errors.
    pub async fn set_min_pin_length(
        &mut self,
        new_min: Option<u64>,
        rp_ids: &[String],
        force_change: bool,
    ) -> Result<()> {
        let params: Option<Value> = Ctap2::min_pin_length_params(new_min, rp_ids, force_change);
        with_token!(
            self,
            Need::Permissions(Permissions::AUTHENTICATOR_CONFIG, None),
            |c, t| c.config(config::SET_MIN_PIN_LENGTH, params.clone(), t)
        )?;
        self.client.refresh_info().await?;
        Ok(())
    }

    /// authenticatorReset; forgets the token and its properties.
    ///
    /// # Errors
    /// As [`Ctap2::reset`].
    pub async fn reset(&mut self) -> Result<()> {
        self.client.reset().await?;
        self.clear_auth_token();
        self.client.refresh_info().await?;
        Ok(())
    }

    /// authenticatorSelection (a touch).
    ///
    /// # Errors
    /// As [`Ctap2::selection`].
    pub async fn selection(&self) -> Result<()> {
        self.client.selection().await
    }
}

/// `fido2:<AAGUID in hex>`, the name a standalone session gives its key collector.
#[allow(clippy::expect_used)]
fn default_token_id(aaguid: &[u8; 16]) -> TokenId {
    // 32 hex digits are always a valid instance.
    TokenId::new("fido2", &hex(aaguid)).expect("hex digits make a valid token ID")
}
