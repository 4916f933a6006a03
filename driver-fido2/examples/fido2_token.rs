//! Embedding driver-fido2: a (simulated) FIDO2 security key in an NFC reader, found by the
//! hub, unlocked with its PIN, its passkeys listed as keys, one of them signing.
//!
//! ```sh
//! cargo run -p driver-fido2 --features simulator --example fido2_token
//! ```

#[cfg(feature = "simulator")]
fn main() -> token_core::Result<()> {
    use std::sync::Arc;

    use driver_fido2::client::{AuthenticatorData, MakeCredentialRequest, RelyingParty, User};
    use driver_fido2::driver::Fido2TokenSession;
    use driver_fido2::session::Fido2Session;
    use driver_fido2::sim::{Authenticator, SimConfig, SimTransport};
    use p256::ecdsa::signature::Verifier;
    use sha2::{Digest, Sha256};
    use token_core::testkit::TestSlots;
    use token_core::{block_on, CtapChannel, HashAlg, Hub, Item, Pin, PinKind, PinRequest};

    // Linking the crate registers the `fido2` driver with every hub.
    use driver_fido2 as _;

    const PIN: &str = "123456";
    let key_collector = Arc::new(|request: &PinRequest| {
        eprintln!("{}(answered by the example)", request.prompt());
        Some(Pin::from(PIN))
    });

    // A security key with a PIN and one passkey, made over USB HID.
    let authenticator = Authenticator::new(SimConfig {
        pin: Some(PIN.into()),
        transport: SimTransport::Nfc,
        ..SimConfig::default()
    })?;
    let (device, _user) = transport_hid::sim::SimHidDevice::new(authenticator.handler());
    let channel: Arc<dyn CtapChannel> = Arc::new(transport_hid::CtapHidChannel::open(device)?);
    let mut fido = block_on(Fido2Session::connect(channel))?;
    fido.set_key_collector(key_collector.clone());
    block_on(fido.make_credential(&MakeCredentialRequest {
        client_data_hash: Sha256::digest(b"registration").to_vec(),
        rp: RelyingParty {
            id: "example.com".into(),
            name: Some("Example".into()),
        },
        user: User {
            id: b"alice-id".to_vec(),
            name: Some("alice".into()),
            display_name: Some("Alice".into()),
        },
        resident_key: true,
        ..Default::default()
    }))?;

    // The same key tapped on an NFC reader: the hub finds it through the driver registry.
    let slots = TestSlots::new();
    slots.add_reader("NFC Reader");
    let hub = Hub::builder().provider(slots.provider()).start()?;
    slots.insert_card("NFC Reader", Box::new(authenticator.card()));
    hub.settle();
    let token = hub
        .tokens()
        .into_iter()
        .find(|t| t.driver_id() == "fido2")
        .ok_or_else(|| token_core::Error::token_not_found("no FIDO2 token"))?;
    println!("token {} in {}", token.id(), token.slot_name());
    println!("items before unlocking: {}", token.items().len());

    // Unlock: the PIN lets the driver list the discoverable credentials.
    let mut session = block_on(token.open_session())?;
    session.set_pin_callback(key_collector.clone());
    block_on(session.verify_pin(PinKind::User, &Pin::from(PIN)))?;
    let Some(Item::Key(key)) = token.items().into_iter().next() else {
        return Err(token_core::Error::object_not_found("no passkey listed"));
    };
    println!("key {:?}, {}", key.label, key.key_type);

    // The full assertion, through the FIDO2-specific session: the signature covers
    // authData ‖ clientDataHash.
    let client_data_hash = Sha256::digest(b"a document").to_vec();
    let fido2 = session
        .delegate_mut()
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<Fido2TokenSession>())
        .ok_or_else(|| token_core::Error::not_implemented("not a FIDO2 session"))?;
    fido2.fido2().set_key_collector(key_collector);
    let assertion = block_on(fido2.assertion(&key.object_id, &client_data_hash))?;
    let auth_data = AuthenticatorData::parse(&assertion.auth_data)?;
    let public = key
        .public_key
        .as_ref()
        .ok_or_else(|| token_core::Error::corrupted("no public key"))?;
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public.raw)
        .map_err(|_| token_core::Error::corrupted("public key"))?;
    let signature = p256::ecdsa::Signature::from_der(&assertion.signature)
        .map_err(|_| token_core::Error::corrupted("signature"))?;
    let mut signed = assertion.auth_data.clone();
    signed.extend_from_slice(&client_data_hash);
    let ok = verifying.verify(&signed, &signature).is_ok();
    println!(
        "assertion: counter {}, user present {}, signature verifies: {ok}",
        auth_data.sign_count,
        auth_data.flags & AuthenticatorData::UP != 0
    );

    // The plain tokenkit call gives the signature alone.
    let plain = block_on(session.sign(
        &key.object_id,
        token_core::SignatureAlgorithm::EcdsaDigest(HashAlg::Sha256),
        &client_data_hash,
    ))?;
    println!("TokenSession::sign: {} signature bytes", plain.len());
    Ok(())
}

#[cfg(not(feature = "simulator"))]
fn main() {
    eprintln!("run with --features simulator");
}
