//! `tokenctl demo`: the main job of tokenkit on the embedded default, a soft token, with no
//! hardware: create (or reuse) a token, generate a key with a self-signed certificate, find it
//! in the keychain index by token ID, sign, verify the signature with an independent library,
//! and resolve a persistent reference. Every other token present (cards in pcscd) is listed too.

use std::path::Path;
use std::sync::Arc;

use keychain_index::Query;
use p256::ecdsa::signature::Verifier;
use token_core::{Error, Item, KeySpec, KeyType, Pin, Result};

use crate::commands::{self, Ctx};

/// The demo token's label.
const LABEL: &str = "tokenkit demo";
/// The demo token's PIN and PUK. A demo token holds no secret worth a real PIN; real tokens
/// are made with `tokenctl soft create`, which asks for both.
const DEMO_PIN: &str = "123456";
const DEMO_PUK: &str = "12345678";
const KEY_LABEL: &str = "demo signing key";

pub fn run(store: Option<&Path>) -> Result<()> {
    let ctx = Ctx::start(store)?;
    let soft = ctx.soft()?;
    println!("== tokenkit demo ==");
    println!("soft-token store: {}", soft.store().display());

    let existing = ctx
        .hub
        .tokens()
        .into_iter()
        .find(|t| t.driver_id() == driver_hsm_soft::DRIVER_ID && t.info().label == LABEL);
    let id = match existing {
        Some(t) => {
            println!("1. using the soft token {} ({LABEL:?})", t.id());
            t.id().clone()
        }
        None => {
            let id = soft.create(LABEL, &Pin::from(DEMO_PIN), &Pin::from(DEMO_PUK))?;
            ctx.hub.settle();
            println!("1. created the soft token {id} ({LABEL:?}, PIN {DEMO_PIN}, PUK {DEMO_PUK})");
            id
        }
    };
    ctx.index.sync_token(&id)?;

    // The PIN reaches the session through the callback, as a prompt would.
    let demo_pin: Arc<dyn token_core::PinCallback> = Arc::new(|req: &token_core::PinRequest| {
        println!(
            "   (PIN asked for {}; tries left: {:?})",
            req.token_id, req.retries_left
        );
        Some(Pin::from(DEMO_PIN))
    });

    let key = match ctx
        .index
        .first(&Query::keys().token(id.clone()).label(KEY_LABEL))
        .and_then(|r| r.key().cloned())
    {
        Some(k) => {
            println!("2. using the key {KEY_LABEL:?} (key ID {})", hex(&k.key_id));
            k
        }
        None => {
            let mut session = token_core::block_on(ctx.hub.open_session(&id))?;
            session.set_pin_callback(demo_pin.clone());
            let spec = KeySpec {
                key_type: KeyType::EcP256,
                label: KEY_LABEL.into(),
                slot: None,
                usage: None,
            };
            let key = token_core::block_on(session.generate_key(&spec))?;
            token_core::block_on(token_core::self_signed_certificate(
                &mut session,
                &key,
                "tokenkit demo",
            ))?;
            ctx.index.sync_token(&id)?;
            println!(
                "2. generated a P-256 key {KEY_LABEL:?} (key ID {}) with a self-signed certificate",
                hex(&key.key_id)
            );
            key
        }
    };

    println!("3. tokens present (from the hub):");
    for t in ctx.hub.tokens() {
        println!(
            "   {}  {:?}  via {} in {}",
            t.id(),
            t.info().label,
            t.driver_name(),
            t.slot_name()
        );
    }
    println!("   items of {id} (from the keychain index):");
    for r in ctx.index.query(&Query::new().token(id.clone())) {
        println!("   - {:<8} {:?}", r.class().name(), r.label());
    }
    let identities: Vec<_> = ctx
        .index
        .query(&Query::identities().token(id.clone()))
        .into_iter()
        .collect();
    println!(
        "   identities (certificate + matching key): {}",
        identities.len()
    );
    if identities.is_empty() {
        return Err(Error::object_not_found(
            "the demo key has no identity in the index",
        ));
    }

    let message = b"tokenkit demo: signed on a soft token";
    let mut session = token_core::block_on(ctx.hub.open_session(&id))?;
    session.set_pin_callback(demo_pin);
    let signature = commands::sign(&mut session, &key, message)?;
    println!(
        "4. signed {} bytes: {} byte DER ECDSA signature",
        message.len(),
        signature.len()
    );

    let public = key
        .public_key
        .as_ref()
        .ok_or_else(|| Error::object_not_found("no public key"))?;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public.raw)
        .map_err(|_| Error::corrupted("public key is not a P-256 point"))?;
    let sig = p256::ecdsa::Signature::from_der(&signature)
        .map_err(|_| Error::corrupted("signature is not DER"))?;
    vk.verify(message, &sig)
        .map_err(|_| Error::corrupted("the signature does not verify"))?;
    println!("5. the signature verifies with the p256 crate against the exported public key");

    let reference = ctx
        .index
        .first(&Query::keys().token(id.clone()).label(KEY_LABEL))
        .ok_or_else(|| Error::object_not_found("key left the index"))?
        .persistent_ref();
    let resolved = ctx.index.resolve(&reference)?;
    println!(
        "6. persistent reference ({} bytes) resolves to {:?} on {}",
        reference.len(),
        resolved.label(),
        resolved.token_id()
    );

    let others: Vec<_> = ctx
        .hub
        .tokens()
        .into_iter()
        .filter(|t| t.driver_id() != driver_hsm_soft::DRIVER_ID)
        .collect();
    if others.is_empty() {
        println!("7. no other tokens (no card in a PC/SC reader)");
    } else {
        println!("7. other tokens present:");
        for t in others {
            let n = t
                .items()
                .iter()
                .filter(|i| matches!(i, Item::Key(_)))
                .count();
            println!("   {}  {:?}  {n} keys", t.id(), t.info().label);
        }
    }
    println!("demo done");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
