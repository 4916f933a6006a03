//! The subcommands.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use driver_hsm_soft::{SoftTokenProvider, PROVIDER_ID};
use keychain_index::{ItemRef, KeychainIndex, Query};
use serde_json::{json, Value};
use token_core::{
    block_on, der_to_pem, CertificateInfo, Error, HashAlg, Hub, ItemClass, KeyItem, KeySpec,
    KeyType, PinKind, PinRequest, Result, SignatureAlgorithm, TokenId, TokenSession, WatchEvent,
};

use crate::pin::Source;
use crate::{Cli, Cmd, PinArgs, PinCmd, SimCmd, SoftCmd};

/// The running parts every command shares.
pub struct Ctx {
    pub hub: Arc<Hub>,
    pub index: KeychainIndex,
}

impl Drop for Ctx {
    /// Stops the hub here, on the main thread, before the program exits: the keychain index's
    /// thread may hold the hub a moment longer, and its last drop must not leave PC/SC's
    /// monitor inside libpcsclite while the process exits.
    fn drop(&mut self) {
        self.hub.shutdown();
    }
}

impl Ctx {
    /// Starts the hub with every linked driver and transport, and the keychain index on it.
    pub fn start(store: Option<&Path>) -> Result<Self> {
        if let Some(dir) = store {
            // The registered soft-token provider reads its store from TOKENKIT_HOME; set it
            // before the hub starts the provider, while this program has one thread.
            std::env::set_var("TOKENKIT_HOME", dir);
        }
        let hub = Arc::new(Hub::builder().start()?);
        let index = KeychainIndex::attach(&hub)?;
        index.sync()?;
        Ok(Self { hub, index })
    }

    pub fn soft(&self) -> Result<&SoftTokenProvider> {
        self.hub
            .providers()
            .iter()
            .find(|p| p.id() == PROVIDER_ID)
            .and_then(|p| p.as_any().downcast_ref::<SoftTokenProvider>())
            .ok_or_else(|| Error::not_implemented("the soft-token provider is not running"))
    }

    /// The key named `name` (label or object ID) on `token`, from the keychain index.
    pub fn find_key(&self, token: &TokenId, name: &str) -> Result<KeyItem> {
        let found = self.find(token, Query::keys(), name)?;
        found
            .key()
            .cloned()
            .ok_or_else(|| Error::object_not_found("not a key"))
    }

    pub fn find(&self, token: &TokenId, query: Query, name: &str) -> Result<ItemRef> {
        self.hub.token(token)?;
        let candidates: Vec<ItemRef> = self
            .index
            .query(&query.token(token.clone()))
            .into_iter()
            .collect();
        let mut hits: Vec<ItemRef> = candidates
            .iter()
            .filter(|r| r.label() == name)
            .cloned()
            .collect();
        if hits.is_empty() {
            hits = candidates
                .into_iter()
                .filter(|r| r.object_id().to_string().eq_ignore_ascii_case(name))
                .collect();
        }
        match hits.len() {
            0 => Err(Error::object_not_found(format!(
                "no item named {name:?} on {token}"
            ))),
            1 => Ok(hits.remove(0)),
            n => Err(Error::bad_parameter(format!(
                "{n} items are named {name:?} on {token}; name one by its object ID"
            ))),
        }
    }

    pub fn session(&self, token: &TokenId, pin: &Source) -> Result<TokenSession> {
        let mut session = block_on(self.hub.open_session(token))?;
        session.set_pin_callback(pin.callback()?);
        Ok(session)
    }
}

fn token_id(s: &str) -> Result<TokenId> {
    TokenId::parse(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pin_source(args: &PinArgs, what: &'static str) -> Source {
    Source::new(args.pin_env.clone(), args.pin_file.clone(), what)
}

pub fn run(cli: Cli) -> Result<()> {
    let store = cli.store.as_deref();
    match cli.command {
        Cmd::Demo => crate::demo::run(store),
        Cmd::Sim { card } => sim(card),
        command => {
            let ctx = Ctx::start(store)?;
            dispatch(&ctx, command)
        }
    }
}

fn dispatch(ctx: &Ctx, command: Cmd) -> Result<()> {
    match command {
        Cmd::Slots { json } => slots(ctx, json),
        Cmd::Tokens { json } => tokens(ctx, json),
        Cmd::Items {
            token,
            class,
            label,
            json,
        } => {
            let mut query = Query::new();
            if let Some(t) = token {
                query = query.token(token_id(&t)?);
            }
            if let Some(c) = class {
                query = query.class(c.parse::<ItemClass>()?);
            }
            if let Some(l) = label {
                query = query.label(l);
            }
            items(ctx, &query, json)
        }
        Cmd::Watch { json, count } => watch(ctx, json, count),
        Cmd::Soft { command } => soft(ctx, command),
        Cmd::Keygen {
            token,
            alg,
            label,
            slot,
            self_signed,
            pin,
        } => {
            let id = token_id(&token)?;
            let spec = KeySpec {
                key_type: alg.parse::<KeyType>()?,
                label,
                slot,
                usage: None,
            };
            let key = keygen(
                ctx,
                &id,
                &spec,
                self_signed.as_deref(),
                &pin_source(&pin, "PIN"),
            )?;
            println!(
                "generated {} key {:?} (object {}, key ID {}) on {id}",
                key.key_type,
                key.label,
                key.object_id,
                hex(&key.key_id)
            );
            Ok(())
        }
        Cmd::Sign {
            token,
            key,
            input,
            output,
            pin,
        } => {
            let id = token_id(&token)?;
            let key = ctx.find_key(&id, &key)?;
            let data = std::fs::read(&input).map_err(|e| {
                Error::bad_parameter(format!("cannot read {}", input.display())).with_source(e)
            })?;
            let mut session = ctx.session(&id, &pin_source(&pin, "PIN"))?;
            let signature = sign(&mut session, &key, &data)?;
            write_file(&output, &signature)?;
            eprintln!(
                "signed {} with {:?} ({}): {} bytes written to {}",
                input.display(),
                key.label,
                key.key_type,
                signature.len(),
                output.display()
            );
            Ok(())
        }
        Cmd::Derive {
            token,
            key,
            peer,
            output,
            pin,
        } => {
            let id = token_id(&token)?;
            let key = ctx.find_key(&id, &key)?;
            let bytes = std::fs::read(&peer).map_err(|e| {
                Error::bad_parameter(format!("cannot read {}", peer.display())).with_source(e)
            })?;
            let der = match std::str::from_utf8(&bytes) {
                Ok(text) if text.contains("-----BEGIN") => {
                    token_core::pem_to_der(text, "PUBLIC KEY")?
                }
                _ => bytes,
            };
            let spki = token_core::SubjectPublicKeyInfo::parse(&der)?;
            let peer_key = token_core::PublicKey::from_spki(&spki)?;
            let compatible = matches!(
                (key.key_type, peer_key.key_type),
                (KeyType::EcP256, KeyType::EcP256)
                    | (KeyType::EcP384, KeyType::EcP384)
                    | (KeyType::X25519, KeyType::X25519)
            );
            if !compatible {
                return Err(Error::bad_parameter(format!(
                    "a {} key cannot agree with a {} peer key",
                    key.key_type, peer_key.key_type
                )));
            }
            let mut session = ctx.session(&id, &pin_source(&pin, "PIN"))?;
            let secret = block_on(session.key_exchange(&key.object_id, &peer_key.raw))?;
            write_file(&output, &secret)?;
            eprintln!(
                "{} byte shared secret written to {}",
                secret.len(),
                output.display()
            );
            Ok(())
        }
        Cmd::Pubkey { token, key } => {
            let id = token_id(&token)?;
            let key = ctx.find_key(&id, &key)?;
            let public = key.public_key.ok_or_else(|| {
                Error::object_not_found("the token does not report this public key")
            })?;
            print!("{}", public.to_spki_pem());
            Ok(())
        }
        Cmd::Cert { token, label } => {
            let id = token_id(&token)?;
            let found = ctx.find(&id, Query::certificates(), &label)?;
            let cert = found
                .certificate()
                .ok_or_else(|| Error::object_not_found("not a certificate"))?;
            print!("{}", der_to_pem("CERTIFICATE", &cert.der));
            Ok(())
        }
        Cmd::Pin { command } => pin(ctx, command),
        Cmd::Demo => crate::demo::run(None),
        Cmd::Sim { card } => sim(card),
    }
}

fn vpcd_address(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let port = std::env::var("TOKENKIT_VPCD_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(transport_pcsc::vpcd::DEFAULT_PORT);
        format!("127.0.0.1:{port}")
    })
}

fn piv_card(state: Option<std::path::PathBuf>) -> Result<driver_piv::sim::PivCard> {
    match state {
        Some(path) => driver_piv::sim::PivCard::with_state_file(path),
        None => Ok(driver_piv::sim::PivCard::new(10_000_001)),
    }
}

/// The OpenPGP simulator with its three keys (generated on first use).
pub fn openpgp_card(state: Option<std::path::PathBuf>) -> Result<driver_openpgp::sim::OpenPgpCard> {
    let mut card = match state {
        Some(path) => driver_openpgp::sim::OpenPgpCard::with_state_file(path, 1)?,
        None => driver_openpgp::sim::OpenPgpCard::new(1),
    };
    if card.public_key(driver_openpgp::KeyRef::Sig).is_none() {
        card.generate_keys()?;
    }
    Ok(card)
}

/// The FIDO2 authenticator simulator as an NFC security key (CTAP 2.1, protocols 2 and 1).
pub fn fido2_authenticator(
    state: Option<std::path::PathBuf>,
    pin: Option<String>,
) -> Result<driver_fido2::sim::Authenticator> {
    driver_fido2::sim::Authenticator::new(driver_fido2::sim::SimConfig {
        transport: driver_fido2::sim::SimTransport::Nfc,
        pin,
        state_file: state,
        ..driver_fido2::sim::SimConfig::default()
    })
}

/// PIV, OpenPGP and FIDO2 behind a YubiKey 5 NFC's ATR, selected by AID.
pub fn multi_card(
    piv_state: Option<std::path::PathBuf>,
    openpgp_state: Option<std::path::PathBuf>,
    fido2_state: Option<std::path::PathBuf>,
) -> Result<token_core::MultiApplicationCard> {
    let piv = piv_card(piv_state)?;
    let atr = token_core::CardSimulator::atr(&piv);
    Ok(token_core::MultiApplicationCard::new(atr)
        .with(&driver_piv::PIV_AID, Box::new(piv))
        .with(
            &driver_openpgp::AID_PREFIX,
            Box::new(openpgp_card(openpgp_state)?),
        )
        .with(
            &driver_fido2::ctap::FIDO_AID,
            Box::new(fido2_authenticator(fido2_state, None)?.card()),
        ))
}

/// Serves a simulated card to vpcd until pcscd closes the reader or the process is stopped.
fn sim(card: SimCmd) -> Result<()> {
    let (sim, addr): (Box<dyn token_core::CardSimulator>, String) = match card {
        SimCmd::Piv { vpcd, state } => (Box::new(piv_card(state)?), vpcd_address(vpcd)),
        SimCmd::Openpgp { vpcd, state } => (Box::new(openpgp_card(state)?), vpcd_address(vpcd)),
        SimCmd::Multi { vpcd, state } => {
            let with_ext = |ext: &str| {
                state.as_ref().map(|p| {
                    let mut s = p.as_os_str().to_owned();
                    s.push(ext);
                    std::path::PathBuf::from(s)
                })
            };
            (
                Box::new(multi_card(
                    with_ext(".piv"),
                    with_ext(".openpgp"),
                    with_ext(".fido2"),
                )?),
                vpcd_address(vpcd),
            )
        }
        SimCmd::Fido2 { vpcd, state, pin } => (
            Box::new(fido2_authenticator(state, pin)?.card()),
            vpcd_address(vpcd),
        ),
        SimCmd::Hello { vpcd } => (
            Box::new(hello_driver::HelloCard::new(0x1234_5678, [7; 32], "1234")),
            vpcd_address(vpcd),
        ),
    };
    eprintln!("tokenctl: simulated card in vpcd at {addr}; stop with Ctrl-C");
    transport_pcsc::vpcd::VpcdBridge::builder(sim).run_blocking(addr.as_str())?;
    eprintln!("tokenctl: vpcd closed the reader");
    Ok(())
}

fn slots(ctx: &Ctx, json: bool) -> Result<()> {
    let slots = ctx.hub.slot_manager().slots();
    if json {
        let v: Vec<Value> = slots
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "kind": format!("{:?}", s.kind),
                    "state": s.state.name(),
                    "atr": s.atr.as_deref().map(hex),
                    "tokens": s.tokens.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return Ok(());
    }
    if slots.is_empty() {
        println!("no slots");
    }
    for s in slots {
        let atr = s.atr.as_deref().map(hex).unwrap_or_default();
        println!("{}\t{:?}\t{}\t{atr}", s.name, s.kind, s.state);
        for t in s.tokens {
            println!("\t{t}");
        }
    }
    Ok(())
}

fn tokens(ctx: &Ctx, json: bool) -> Result<()> {
    let tokens = ctx.hub.tokens();
    if json {
        let v: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let info = t.info();
                json!({
                    "id": t.id().to_string(),
                    "driver": t.driver_name(),
                    "slot": t.slot_name(),
                    "label": info.label,
                    "manufacturer": info.manufacturer,
                    "model": info.model,
                    "serial": info.serial,
                    "items": ctx.index.count(&Query::new().token(t.id().clone())),
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return Ok(());
    }
    if tokens.is_empty() {
        println!("no tokens");
    }
    for t in tokens {
        let info = t.info();
        println!(
            "{}\t{:?}\t{} items\t{} in {}",
            t.id(),
            info.label,
            ctx.index.count(&Query::new().token(t.id().clone())),
            t.driver_name(),
            t.slot_name()
        );
    }
    Ok(())
}

fn item_json(r: &ItemRef) -> Value {
    let mut v = json!({
        "token": r.token_id().to_string(),
        "class": r.class().name(),
        "label": r.label(),
        "object_id": r.object_id().to_string(),
    });
    if let Some(k) = r.key() {
        v["key_type"] = json!(k.key_type.name());
        v["usage"] = json!(k.usage.to_string());
        v["key_id"] = json!(hex(&k.key_id));
    }
    if let Some(c) = r.certificate() {
        if let Ok(info) = CertificateInfo::parse(&c.der) {
            v["subject"] = json!(info.subject_common_name());
            v["issuer"] = json!(info.issuer_common_name());
            v["serial"] = json!(hex(info.serial()));
        }
    }
    if !r.key_id().is_empty() {
        v["key_id"] = json!(hex(r.key_id()));
    }
    v["persistent_ref"] = json!(hex(&r.persistent_ref()));
    v
}

fn items(ctx: &Ctx, query: &Query, json: bool) -> Result<()> {
    let found: Vec<ItemRef> = ctx.index.query(query).into_iter().collect();
    if json {
        println!("{}", Value::Array(found.iter().map(item_json).collect()));
        return Ok(());
    }
    if found.is_empty() {
        println!("no items");
    }
    for r in found {
        let detail = match (r.key(), r.certificate()) {
            (Some(k), _) => format!("{} {}", k.key_type, k.usage),
            (None, Some(c)) => CertificateInfo::parse(&c.der)
                .ok()
                .and_then(|i| i.subject_common_name())
                .map(|cn| format!("CN={cn}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        println!(
            "{}\t{}\t{:?}\t{}\tkey ID {}",
            r.token_id(),
            r.class().name(),
            r.label(),
            detail,
            hex(r.key_id())
        );
    }
    Ok(())
}

fn watch(ctx: &Ctx, json: bool, count: Option<usize>) -> Result<()> {
    let events = ctx.hub.watcher().subscribe();
    let mut seen = 0usize;
    let mut out = std::io::stdout();
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        let event = match events.recv_timeout(Duration::from_secs(3600)) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let (what, id) = match &event {
            WatchEvent::Inserted(id) => ("inserted", id),
            WatchEvent::Removed(id) => ("removed", id),
            WatchEvent::ItemsChanged(id) => ("changed", id),
            _ => continue,
        };
        let line = if json {
            json!({ "event": what, "token": id.to_string() }).to_string()
        } else {
            format!("{what} {id}")
        };
        // A closed pipe ends the watch quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        seen += 1;
    }
}

fn soft(ctx: &Ctx, command: SoftCmd) -> Result<()> {
    let provider = ctx.soft()?;
    match command {
        SoftCmd::Create {
            label,
            pin,
            puk_env,
            puk_file,
        } => {
            let pin = read_new(&pin_source(&pin, "PIN"), "PIN for the new token: ")?;
            let puk = read_new(
                &Source::new(puk_env, puk_file, "PUK"),
                "PUK (unblocking code) for the new token: ",
            )?;
            let id = provider.create(&label, &pin, &puk)?;
            ctx.hub.settle();
            println!("{id}");
            eprintln!(
                "created soft token {label:?} in {}",
                provider.store().display()
            );
            Ok(())
        }
        SoftCmd::Delete { token } => {
            let id = token_id(&token)?;
            provider.delete_token(&id)?;
            eprintln!("deleted {id}");
            Ok(())
        }
    }
}

/// Reads a new secret; when prompting, asks twice and compares.
fn read_new(source: &Source, prompt: &str) -> Result<token_core::Pin> {
    let first = source.read(prompt)?;
    if source.env.is_some() || source.file.is_some() {
        return Ok(first);
    }
    let again = source.read("again: ")?;
    if first != again {
        return Err(Error::bad_parameter(format!(
            "the two {}s differ",
            source.what
        )));
    }
    Ok(first)
}

/// Generates a key and, if asked, a self-signed certificate for it.
pub fn keygen(
    ctx: &Ctx,
    id: &TokenId,
    spec: &KeySpec,
    self_signed: Option<&str>,
    pin: &Source,
) -> Result<KeyItem> {
    let mut session = ctx.session(id, pin)?;
    let key = block_on(session.generate_key(spec))?;
    if let Some(cn) = self_signed {
        block_on(token_core::self_signed_certificate(&mut session, &key, cn))?;
    }
    // The session told the hub; wait until the index shows the new items.
    ctx.index.sync_token(id)?;
    Ok(key)
}

/// The signature `tokenctl sign` makes for a key of this type.
pub fn algorithm_for(key: &KeyItem) -> Result<SignatureAlgorithm> {
    Ok(match key.key_type {
        KeyType::EcP256 => SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        KeyType::EcP384 => SignatureAlgorithm::EcdsaMessage(HashAlg::Sha384),
        KeyType::Ed25519 => SignatureAlgorithm::Ed25519,
        KeyType::Rsa(_) => SignatureAlgorithm::RsaPkcs1v15Message(HashAlg::Sha256),
        other => return Err(Error::bad_parameter(format!("a {other} key cannot sign"))),
    })
}

pub fn sign(session: &mut TokenSession, key: &KeyItem, data: &[u8]) -> Result<Vec<u8>> {
    let algorithm = algorithm_for(key)?;
    block_on(session.sign(&key.object_id, algorithm, data))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| {
        Error::bad_parameter(format!("cannot write {}", path.display())).with_source(e)
    })
}

fn prompt_for(session: &mut TokenSession, kind: PinKind) -> String {
    let retries_left = block_on(session.pin_status(kind))
        .ok()
        .and_then(|s| s.retries_left);
    PinRequest {
        token_id: session.token_id().clone(),
        kind,
        retries_left,
        operation: None,
    }
    .prompt()
}

fn pin(ctx: &Ctx, command: PinCmd) -> Result<()> {
    match command {
        PinCmd::Verify { token, pin } => {
            let id = token_id(&token)?;
            let mut session = block_on(ctx.hub.open_session(&id))?;
            let prompt = prompt_for(&mut session, PinKind::User);
            let pin = pin_source(&pin, "PIN").read(&prompt)?;
            block_on(session.verify_pin(PinKind::User, &pin))?;
            println!("PIN verified on {id}");
            Ok(())
        }
        PinCmd::Change {
            token,
            pin,
            new_pin_env,
            new_pin_file,
        } => {
            let id = token_id(&token)?;
            let mut session = block_on(ctx.hub.open_session(&id))?;
            let prompt = prompt_for(&mut session, PinKind::User);
            let old = pin_source(&pin, "PIN").read(&prompt)?;
            let new = read_new(
                &Source::new(new_pin_env, new_pin_file, "new PIN"),
                "new PIN: ",
            )?;
            block_on(session.change_pin(PinKind::User, &old, &new))?;
            println!("PIN changed on {id}");
            Ok(())
        }
        PinCmd::Unblock {
            token,
            puk_env,
            puk_file,
            new_pin_env,
            new_pin_file,
        } => {
            let id = token_id(&token)?;
            let mut session = block_on(ctx.hub.open_session(&id))?;
            let prompt = prompt_for(&mut session, PinKind::Unblock);
            let puk = Source::new(puk_env, puk_file, "PUK").read(&prompt)?;
            let new = read_new(
                &Source::new(new_pin_env, new_pin_file, "new PIN"),
                "new PIN: ",
            )?;
            block_on(session.unblock_pin(&puk, &new))?;
            println!("PIN reset on {id}");
            Ok(())
        }
    }
}
