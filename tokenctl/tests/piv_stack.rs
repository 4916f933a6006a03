//! The PIV simulator in a real pcscd, used by what real users run: OpenSC (`opensc-tool`,
//! `pkcs11-tool` with OpenSC's PKCS#11 module), `yubico-piv-tool`, openssl and `tokenctl`;
//! then faults (the card pulled in the middle of a signature, the simulator process killed, a
//! card that answers garbage) and load (two processes signing at once).
//!
//! The simulator is put into vpcd's first reader either in this process
//! ([`transport_pcsc::vpcd::VpcdBridge`], with an APDU log or a fault where a test needs one)
//! or as a child process (`tokenctl sim piv --state FILE`).
//!
//! Run by `cargo xtask stack` (and `cargo xtask test`), which starts a private pcscd with vpcd
//! and runs this file's tests with `--ignored --test-threads=1` inside its mount namespace with
//! `TOKENKIT_VPCD_PORT` set (the `piv-tools` suite of `xtask/src/pcscd.rs`). The tests are ignored (with a reason) so that a plain
//! `cargo test --workspace` skips them, and they share the one reader, hence one thread. Run
//! without `TOKENKIT_VPCD_PORT`, every test says so loudly and returns, or fails when `CI` is
//! set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_piv::sim::{PivCard, SimKey, YUBIKEY_ATR};
use driver_piv::{AlgorithmId, ManagementKey, PinPolicy, PivDriver, PivManagement, SlotId};
use driver_piv::{TouchPolicy, PIV_AID};
use keychain_index::Query;
use p256::ecdsa::signature::Verifier;
use token_core::{
    block_on, CardSimulator, Claim, Device, ErrorCode, HashAlg, ItemsNotifier, Pin, PinKind, Probe,
    PublicKey, SignatureAlgorithm, SlotState, SmartCard, TokenHandle, TokenId,
};
use transport_pcsc::vpcd::VpcdBridge;
use transport_pcsc::PcscCard;

use support::*;

/// Every test has a card of its own serial (token `piv:<serial>`).
const SN_OPENSC_TOOL: u32 = 70_000_001;
const SN_PKCS11: u32 = 70_000_002;
const SN_YUBICO: u32 = 70_000_003;
const SN_TOKENCTL: u32 = 70_000_004;
const SN_WATCH: u32 = 70_000_005;
const SN_PULLED: u32 = 70_000_006;
const SN_KILLED: u32 = 70_000_007;
const SN_LOAD: u32 = 70_000_008;
const SN_GARBAGE: u32 = 70_000_009;
const SN_RSA: u32 = 70_000_010;
const SN_ATTEST: u32 = 70_000_011;
const SN_RSA4096: u32 = 70_000_012;

/// INS bytes the tests look for in APDU logs (SP 800-73-4 Part 2 §3, YubiKey extensions).
const INS_SELECT: u8 = 0xA4;
const INS_VERIFY: u8 = 0x20;
const INS_GENERAL_AUTHENTICATE: u8 = 0x87;
const INS_GET_DATA: u8 = 0xCB;
const INS_GET_VERSION: u8 = 0xFD;

fn ins(apdu: &[u8]) -> u8 {
    apdu.get(1).copied().unwrap_or(0)
}

/// The data field of a short command APDU (what our driver and these tools send here).
fn command_data(apdu: &[u8]) -> &[u8] {
    let lc = usize::from(apdu.get(4).copied().unwrap_or(0));
    match apdu.get(5..5 + lc) {
        Some(data) if apdu.len() > 5 => data,
        _ => &[],
    }
}

/// The transactions of an APDU log, cut at every SELECT (every transaction of our driver
/// starts with one), as (kind, index of the first APDU): `P` a probe (GET VERSION and reads),
/// `V` a PIN verification, `S` a signature, `x` anything else (another driver's SELECT).
fn transactions<'a>(log: impl IntoIterator<Item = &'a [u8]>) -> Vec<(char, usize)> {
    let mut out = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut start = 0;
    let flush = |t: &[u8], start: usize, out: &mut Vec<(char, usize)>| {
        if t.is_empty() {
            return;
        }
        let kind = if t.contains(&INS_GENERAL_AUTHENTICATE) {
            'S'
        } else if t.contains(&INS_GET_VERSION) {
            'P'
        } else if t.contains(&INS_VERIFY) {
            'V'
        } else {
            'x'
        };
        out.push((kind, start));
    };
    for (i, apdu) in log.into_iter().enumerate() {
        if ins(apdu) == INS_SELECT {
            flush(&current, start, &mut out);
            current.clear();
            start = i;
        }
        current.push(ins(apdu));
    }
    flush(&current, start, &mut out);
    out
}

/// A GENERAL AUTHENTICATE with the key in 9A: a signature (9B would be the management key).
fn is_signature_with_9a(apdu: &[u8]) -> bool {
    ins(apdu) == INS_GENERAL_AUTHENTICATE && apdu.get(3) == Some(&0x9A)
}

/// A blank card with the factory management key as 3DES, as every YubiKey before 5.7 ships
/// (yubico-piv-tool 2.2.0, Debian 12's, authenticates with 3DES keys only: AES came with 2.3).
fn card_with_3des_key(serial: u32) -> PivCard {
    PivCard::new(serial).with_management_key(ManagementKey::default_for(AlgorithmId::TDES).unwrap())
}

/// `yubico-piv-tool` run against the first reader (it picks readers named "Yubikey" unless
/// told otherwise).
fn ykpiv(dir: &Scratch, args: &[&str]) -> support::Ran {
    let mut all = vec!["-r", "Virtual PCD"];
    all.extend_from_slice(args);
    run(tool("yubico-piv-tool", all), dir)
}

/// `yubico-piv-tool -a generate -s SLOT -A ALGORITHM [OPTIONS] -o OUT`: a key made on the card,
/// its public key (PEM) in `out`; asserts success.
fn ykpiv_generate(dir: &Scratch, slot: &str, algorithm: &str, options: &[&str], out: &Path) {
    let mut args = vec!["-a", "generate", "-s", slot, "-A", algorithm];
    args.extend_from_slice(options);
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    ykpiv(dir, &args).ok();
}

/// `yubico-piv-tool -a import-certificate -s SLOT -i CERT`.
fn ykpiv_import_certificate(dir: &Scratch, slot: &str, cert_pem: &Path) -> support::Ran {
    ykpiv(
        dir,
        &[
            "-a",
            "import-certificate",
            "-s",
            slot,
            "-i",
            cert_pem.to_str().unwrap(),
        ],
    )
}

/// `yubico-piv-tool -a verify-pin -P PIN -a TEST -s SLOT -i CERT`: one of its own round trips
/// (`test-signature`, `test-decipher`) with the key in `slot`, checked against the certificate.
fn ykpiv_test(dir: &Scratch, test: &str, slot: &str, cert_pem: &Path) -> support::Ran {
    ykpiv(
        dir,
        &[
            "-a",
            "verify-pin",
            "-P",
            PIN,
            "-a",
            test,
            "-s",
            slot,
            "-i",
            cert_pem.to_str().unwrap(),
        ],
    )
}

/// What a tool said, on standard output and standard error together (yubico-piv-tool says
/// some of it on one, some on the other).
fn said(ran: &support::Ran) -> String {
    format!("{}{}", ran.stdout, ran.stderr)
}

/// Asserts that a tool succeeded and said `text`.
fn assert_succeeded_saying(ran: &support::Ran, text: &str) {
    assert!(ran.status.success(), "{}", ran.stderr);
    let said = said(ran);
    assert!(said.contains(text), "{said}");
}

/// `pkcs11-tool` with OpenSC's PKCS#11 module and `args`; asserts success.
fn pkcs11_tool(dir: &Scratch, args: &[&str]) -> String {
    let mut all = vec!["--module", OPENSC_PKCS11];
    all.extend_from_slice(args);
    run(tool("pkcs11-tool", all), dir).ok()
}

// ---------------------------------------------------------------------------------------------
// What real tools must do

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn opensc_tool_lists_the_reader_and_the_atr_of_the_card_tokenctl_sim_serves() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("opensc-tool");
    let state = dir.path("card.state");
    PivCard::new(SN_OPENSC_TOOL).persist_to(&state).unwrap();
    let mut sim = SimProcess::start(&dir, stack.port, "piv", &state);
    let id = stack.expect_inserted();
    assert_eq!(id.as_str(), format!("piv:{SN_OPENSC_TOOL}"));

    let readers = run(tool("opensc-tool", ["--list-readers"]), &dir).ok();
    let line = line_with(&readers, READER);
    // "Nr.  Card  Features  Name": the card column says Yes.
    assert!(
        line.split_whitespace().nth(1) == Some("Yes"),
        "no card shown in: {line}"
    );

    let shown = run(tool("opensc-tool", ["-r", READER, "--atr"]), &dir).ok();
    let atr: Vec<String> = YUBIKEY_ATR.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(shown.trim().to_ascii_lowercase(), atr.join(":"));

    // OpenSC's own card drivers take it for a PIV card (its PIV driver, YubiKey flavour, from
    // the ATR and the SELECT of the PIV AID).
    let name = run(tool("opensc-tool", ["-r", READER, "--name"]), &dir).ok();
    assert_eq!(name.trim(), "Personal Identity Verification Card");

    sim.kill();
    stack.expect_removed(&id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn pkcs11_tool_lists_the_key_and_certificate_and_signs_what_openssl_verifies() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("pkcs11");
    let (bridge, id) = stack.insert_token(Box::new(PivCard::new(SN_PKCS11)));

    // A key generated on the card in 9A through our own stack, and a certificate for it made
    // by openssl and written through our stack.
    let mgmt = PivManagement::for_token(&id).unwrap();
    let key = block_on(mgmt.generate(
        SlotId::AUTHENTICATION,
        AlgorithmId::ECC_P256,
        PinPolicy::Default,
        TouchPolicy::Default,
    ))
    .unwrap();
    let public_pem = dir.write(
        "9a.pub.pem",
        key.public_key.as_ref().unwrap().to_spki_pem().as_bytes(),
    );
    let (cert_pem, cert_der) = certificate_for(&dir, &public_pem, "test");
    block_on(mgmt.import_certificate(SlotId::AUTHENTICATION, &cert_der, false)).unwrap();

    // Without login: the certificate and the public key; OpenSC names 9A's objects ID 01.
    let public = pkcs11_tool(&dir, &["--list-objects"]);
    let cert = public
        .split("Certificate Object;")
        .nth(1)
        .unwrap_or_else(|| panic!("no certificate object in:\n{public}"));
    assert!(cert.contains("type = X.509 cert"), "{cert}");
    assert!(
        line_with(cert, "subject:").ends_with("DN: CN=test"),
        "{cert}"
    );
    assert!(line_with(cert, "ID:").trim().ends_with("01"), "{cert}");
    let pubkey = public
        .split("Public Key Object; EC")
        .nth(1)
        .unwrap_or_else(|| panic!("no EC public key object in:\n{public}"));
    assert!(line_with(pubkey, "ID:").trim().ends_with("01"), "{pubkey}");
    assert!(pubkey.contains("EC_POINT 256 bits"), "{pubkey}");

    // With the PIN: the private key.
    let private = pkcs11_tool(
        &dir,
        &[
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "privkey",
        ],
    );
    let privkey = private
        .split("Private Key Object; EC")
        .nth(1)
        .unwrap_or_else(|| panic!("no EC private key object in:\n{private}"));
    assert!(
        line_with(privkey, "ID:").trim().ends_with("01"),
        "{privkey}"
    );
    assert!(line_with(privkey, "Usage:").contains("sign"), "{privkey}");

    // ECDSA over a SHA-256 digest made on the host, as PKCS#11 callers do.
    let message = dir.write(
        "message",
        b"signed by OpenSC's PKCS#11 module through pcscd",
    );
    let digest = dir.path("digest");
    openssl(
        &dir,
        [
            OsStr::new("dgst"),
            OsStr::new("-sha256"),
            OsStr::new("-binary"),
            OsStr::new("-out"),
            digest.as_os_str(),
            message.as_os_str(),
        ],
    );
    let digest_arg = digest.to_str().unwrap();
    let der_sig = dir.path("sig.der");
    let raw_sig = dir.path("sig.raw");
    let sign = |out: &Path, format: &[&str]| {
        let mut args = vec![
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--mechanism",
            "ECDSA",
            "--id",
            "01",
            "--input-file",
            digest_arg,
            "--output-file",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(format);
        pkcs11_tool(&dir, &args);
    };
    sign(&der_sig, &["--signature-format", "openssl"]);
    sign(&raw_sig, &[]);

    // openssl verifies both with the certificate's key: the DER one as it is, the raw r||s
    // (PKCS#11's format) once put in DER.
    let cert_key = dir.write(
        "cert.pub.pem",
        openssl_cert_public_pem(&dir, &cert_pem).as_bytes(),
    );
    openssl_verifies(&dir, &cert_key, &der_sig, &message);
    let raw = std::fs::read(&raw_sig).unwrap();
    assert_eq!(raw.len(), 64, "PKCS#11 ECDSA on P-256 is r||s, 64 bytes");
    let from_raw = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let converted = dir.write("sig.raw.der", from_raw.as_bytes());
    openssl_verifies(&dir, &cert_key, &converted, &message);

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn yubico_piv_tool_reads_status_generates_verifies_the_pin_and_imports_a_certificate() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("yubico");
    // yubico-piv-tool 2.2.0 (Debian 12) authenticates with 3DES management keys only (AES came
    // with 2.3), and a YubiKey 5.7 ships with the factory key as AES-192: against such a card
    // it fails "Failed authentication with the application", as it would against the real
    // one. This card has the factory key as 3DES, as every YubiKey before 5.7 ships.
    let (bridge, id) = stack.insert_token(Box::new(card_with_3des_key(SN_YUBICO)));

    let status = ykpiv(&dir, &["-a", "status"]).ok();
    assert!(status.contains("Version:\t5.7.1"), "{status}");
    assert!(
        status.contains(&format!("Serial Number:\t{SN_YUBICO}")),
        "{status}"
    );
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    assert!(
        !status.contains("Slot 9c"),
        "a blank card shows no slot: {status}"
    );

    let public = dir.path("9c.pub.pem");
    ykpiv_generate(&dir, "9c", "ECCP256", &[], &public);
    let pem = std::fs::read_to_string(&public).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let text = openssl_public_text(&dir, &public);
    assert!(text.contains("prime256v1"), "{text}");

    let verified = ykpiv(&dir, &["-a", "verify-pin", "-P", PIN]);
    assert_succeeded_saying(&verified, "Successfully verified PIN");

    // `-a selfsign-certificate` fails on the client side with OpenSSL 3 before any APDU is
    // sent, against any card (protocols.md): the certificate comes from openssl instead.
    let (cert_pem, _) = certificate_for(&dir, &public, "test 9c");
    let imported = ykpiv_import_certificate(&dir, "9c", &cert_pem);
    assert_succeeded_saying(&imported, "Successfully imported a new certificate");

    let status = ykpiv(&dir, &["-a", "status"]).ok();
    let slot = status
        .split("Slot 9c:")
        .nth(1)
        .unwrap_or_else(|| panic!("no slot 9c in:\n{status}"));
    assert!(slot.contains("Algorithm:\tECCP256"), "{slot}");
    assert!(slot.contains("Subject DN:\tCN=test 9c"), "{slot}");

    // yubico-piv-tool signs with the new key (9C wants the PIN right before, in the same
    // connection) and checks the signature with the certificate it is given.
    let tested = ykpiv_test(&dir, "test-signature", "9c", &cert_pem);
    assert_succeeded_saying(&tested, "Successful ECDSA verification");

    let read = ykpiv(&dir, &["-a", "read-certificate", "-s", "9c"]).ok();
    assert_eq!(
        read.trim(),
        std::fs::read_to_string(&cert_pem).unwrap().trim()
    );

    // Our stack, in a fresh process, sees what yubico-piv-tool made.
    let ours = tokenctl_pubkey(&dir, id.as_str(), "9c");
    assert_eq!(ours.trim(), pem.trim());
    let items = run(tokenctl(&dir, ["items", "--token", id.as_str()]), &dir).ok();
    assert!(
        line_with(&items, "\"Digital Signature\"").contains("\tkey\t"),
        "{items}"
    );
    assert!(
        line_with(&items, "\"test 9c\"").contains("\tcert\t"),
        "{items}"
    );

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn yubico_piv_tool_generates_rsa_2048_and_pkcs11_tool_signs_sha256_rsa_pkcs_for_openssl() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("rsa");
    // The factory key as 3DES: yubico-piv-tool 2.2.0 knows no AES management keys.
    let (bridge, id) = stack.insert_token(Box::new(card_with_3des_key(SN_RSA)));

    // An RSA 2048 key generated on the card by yubico-piv-tool (GENERATE answers 7F49 with
    // 81 modulus and 82 exponent).
    let public = dir.path("9a.pub.pem");
    ykpiv_generate(&dir, "9a", "RSA2048", &[], &public);
    let text = openssl_public_text(&dir, &public);
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("Exponent: 65537 (0x10001)"), "{text}");

    // A certificate for it (`-a selfsign-certificate` of yubico-piv-tool 2.2.0 with OpenSSL 3
    // fails before any APDU, protocols.md), written by yubico-piv-tool.
    let (cert_pem, _) = certificate_for(&dir, &public, "rsa on piv");
    let imported = ykpiv_import_certificate(&dir, "9a", &cert_pem);
    assert!(imported.status.success(), "{}", imported.stderr);

    // yubico-piv-tool's own round trips with the card's RSA key: a PKCS#1 v1.5 signature it
    // checks with the certificate, and a decryption of what it encrypted to the certificate.
    let tested = said(&ykpiv_test(&dir, "test-signature", "9a", &cert_pem));
    assert!(tested.contains("Successful RSA verification"), "{tested}");
    let deciphered = said(&ykpiv_test(&dir, "test-decipher", "9a", &cert_pem));
    assert!(
        deciphered.contains("Successfully performed RSA decryption"),
        "{deciphered}"
    );

    // OpenSC's PKCS#11 module: an RSA key, and a SHA256-RSA-PKCS signature.
    let listed = pkcs11_tool(&dir, &["--list-objects", "--type", "pubkey"]);
    assert!(
        listed.contains("Public Key Object; RSA 2048 bits"),
        "{listed}"
    );
    let message = dir.write("message", b"RSA on a PIV card, through pcscd and OpenSC");
    let sig = dir.path("sig.rsa");
    pkcs11_tool(
        &dir,
        &[
            "--login",
            "--pin",
            PIN,
            "--sign",
            "-m",
            "SHA256-RSA-PKCS",
            "--id",
            "01",
            "--input-file",
            message.to_str().unwrap(),
            "--output-file",
            sig.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&sig).unwrap().len(), 256);
    let cert_key = dir.write(
        "cert.pub.pem",
        openssl_cert_public_pem(&dir, &cert_pem).as_bytes(),
    );
    assert_eq!(
        std::fs::read_to_string(&cert_key).unwrap(),
        std::fs::read_to_string(&public).unwrap()
    );
    openssl_verifies(&dir, &cert_key, &sig, &message);
    // And a message openssl did not sign with this key does not verify (the check can fail).
    let other = dir.write("other", b"another message");
    let refused = openssl_verify(&dir, &cert_key, &sig, &other);
    assert!(!refused.status.success(), "{}", refused.stdout);

    // Our stack signs with the same key (PKCS#1 v1.5 padded on the host) for openssl too.
    let ours = dir.path("sig.ours");
    run(
        tokenctl_sign(&dir, id.as_str(), "9a", &message, &ours),
        &dir,
    )
    .ok();
    openssl_verifies(&dir, &cert_key, &ours, &message);

    // IMPORT KEY of an RSA key openssl made (01 p, 02 q, 03 dP, 04 dQ, 05 qInv, as
    // yubico-piv-tool sends them): our stack, in a fresh process, reads its public key back;
    // the card does not attest it (it was not generated there).
    let imported_key = dir.path("9d.key.pem");
    openssl_genpkey(&dir, "RSA", "rsa_keygen_bits:2048", &imported_key);
    let imported_pub = openssl(
        &dir,
        [
            OsStr::new("pkey"),
            OsStr::new("-in"),
            imported_key.as_os_str(),
            OsStr::new("-pubout"),
        ],
    );
    let said_imported = said(&ykpiv(
        &dir,
        &[
            "-a",
            "import-key",
            "-s",
            "9d",
            "-i",
            imported_key.to_str().unwrap(),
        ],
    ));
    assert!(
        said_imported.contains("Successfully imported a new private key"),
        "{said_imported}"
    );
    let read_back = tokenctl_pubkey(&dir, id.as_str(), "9d");
    assert_eq!(read_back, imported_pub);
    let attested = ykpiv(&dir, &["-a", "attest", "-s", "9d"]);
    assert!(!attested.status.success(), "{}", attested.stdout);

    stack.remove_token(bridge, &id);
}

/// The primes of the RSA key in `key_pem`, read from `openssl pkey -text` (`prime1:` and
/// `prime2:`, hex with colons).
fn openssl_rsa_primes(dir: &Scratch, key_pem: &Path) -> (Vec<u8>, Vec<u8>) {
    let text = openssl(
        dir,
        [
            OsStr::new("pkey"),
            OsStr::new("-in"),
            key_pem.as_os_str(),
            OsStr::new("-noout"),
            OsStr::new("-text"),
        ],
    );
    let field = |name: &str| -> Vec<u8> {
        let hex: String = text
            .lines()
            .skip_while(|l| l.trim() != name)
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .flat_map(|l| l.trim().split(':'))
            .filter(|b| !b.is_empty())
            .collect();
        assert!(!hex.is_empty(), "no {name} in:\n{text}");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    (field("prime1:"), field("prime2:"))
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn an_rsa_4096_key_signs_through_pcscd_with_its_512_byte_block_split_across_apdus() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("rsa4096");
    // A key openssl made, put into the card from its primes (IMPORT KEY's way).
    let key = dir.path("key.pem");
    openssl_genpkey(&dir, "RSA", "rsa_keygen_bits:4096", &key);
    let public = dir.path("pub.pem");
    openssl_pubout(&dir, &key, &public);
    let (p, q) = openssl_rsa_primes(&dir, &key);
    let (_, cert_der) = certificate_for(&dir, &public, "rsa 4096");
    let card = PivCard::new_with_keys(
        SN_RSA4096,
        [(SlotId::AUTHENTICATION, SimKey::rsa(&p, &q).unwrap())],
    )
    .with_certificate(SlotId::AUTHENTICATION, &cert_der, false);
    let log: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = log.clone();
    let bridge = stack.insert_with(
        VpcdBridge::builder(Box::new(card))
            .apdu_log(move |command, _| seen.lock().unwrap().push(command.to_vec())),
    );
    let id = stack.expect_inserted();

    let pubkey = tokenctl_pubkey(&dir, id.as_str(), "9a");
    assert_eq!(pubkey, std::fs::read_to_string(&public).unwrap());
    let message = dir.write("message", b"a 4096-bit RSA signature from a PIV card");
    let sig = dir.path("sig");
    log.lock().unwrap().clear();
    run(tokenctl_sign(&dir, id.as_str(), "9a", &message, &sig), &dir).ok();
    assert_eq!(std::fs::read(&sig).unwrap().len(), 512);
    openssl_verifies(&dir, &public, &sig, &message);
    // GENERAL AUTHENTICATE with RSA 4096 (algorithm 16): the 7C template of a 512-byte block
    // does not fit one short APDU; it went as a chain (CLA 10 first) or one extended APDU.
    let log = log.lock().unwrap();
    let ga: Vec<&Vec<u8>> = log
        .iter()
        .filter(|a| ins(a) == INS_GENERAL_AUTHENTICATE && a.get(2) == Some(&0x16))
        .collect();
    let chained = ga.iter().any(|a| a[0] & 0x10 != 0);
    let extended = ga.iter().any(|a| a.len() > 5 && a[4] == 0);
    assert!(chained || extended, "{ga:02x?}");
    drop(log);

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn yubico_piv_tool_attests_a_generated_key_and_openssl_verifies_it_with_the_f9_certificate() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("attest");
    let (bridge, id) = stack.insert_token(Box::new(card_with_3des_key(SN_ATTEST)));

    let public = dir.path("9a.pub.pem");
    ykpiv_generate(
        &dir,
        "9a",
        "ECCP256",
        &["--pin-policy", "always", "--touch-policy", "cached"],
        &public,
    );
    let attestation = dir.write(
        "attest.pem",
        ykpiv(&dir, &["-a", "attest", "-s", "9a"]).ok().as_bytes(),
    );
    let f9 = dir.write(
        "f9.pem",
        ykpiv(&dir, &["-a", "read-certificate", "-s", "f9"])
            .ok()
            .as_bytes(),
    );
    let verified = openssl(
        &dir,
        [
            OsStr::new("verify"),
            OsStr::new("-CAfile"),
            f9.as_os_str(),
            attestation.as_os_str(),
        ],
    );
    assert_eq!(verified.trim(), format!("{}: OK", attestation.display()));
    // The attestation names the generated key, and the slot.
    let key = openssl_cert_public_pem(&dir, &attestation);
    assert_eq!(key, std::fs::read_to_string(&public).unwrap());
    let text = openssl(
        &dir,
        [
            OsStr::new("x509"),
            OsStr::new("-in"),
            attestation.as_os_str(),
            OsStr::new("-noout"),
            OsStr::new("-text"),
        ],
    );
    assert!(
        text.contains("Subject: CN = YubiKey PIV Attestation 9a"),
        "{text}"
    );
    // Yubico's extensions, as openssl's ASN.1 dump shows them (each OID's value on the line
    // after it): firmware 5.7.1, the serial as a DER INTEGER, PIN always (03) and touch
    // cached (03).
    let der = openssl(
        &dir,
        [
            OsStr::new("asn1parse"),
            OsStr::new("-in"),
            attestation.as_os_str(),
        ],
    );
    let value_of = |oid: &str| {
        let mut lines = der.lines();
        lines
            .find(|l| l.trim_end().ends_with(&format!(":{oid}")))
            .unwrap_or_else(|| panic!("no extension {oid} in:\n{der}"));
        let value = lines.next().unwrap_or_default();
        value
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(value_of("1.3.6.1.4.1.41482.3.3"), "050701");
    assert_eq!(
        value_of("1.3.6.1.4.1.41482.3.7"),
        format!("0204{SN_ATTEST:08X}")
    );
    assert_eq!(value_of("1.3.6.1.4.1.41482.3.8"), "0303");

    // Our own stack reads the same F9 certificate.
    let mgmt = PivManagement::for_token(&id).unwrap();
    let ours = block_on(mgmt.attestation_certificate()).unwrap().unwrap();
    let theirs = openssl_cert_der(&dir, &f9, &dir.path("f9.der"));
    assert!(theirs.is_empty());
    assert_eq!(ours, std::fs::read(dir.path("f9.der")).unwrap());

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn tokenctl_lists_signs_and_manages_the_pin_of_the_card_in_pcscd() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("tokenctl");
    let card = card_with_9a(&dir, SN_TOKENCTL, "test");
    let (bridge, id) = stack.insert_token(Box::new(card.card));
    assert_eq!(id, card.id);
    let token = id.as_str();
    let ctl = |args: &[&str]| run(tokenctl(&dir, args), &dir);

    let slots = ctl(&["slots"]).ok();
    let mut lines = slots.lines().skip_while(|l| !l.starts_with(READER));
    let reader: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(reader[..3], [READER, "SmartCard", "valid"], "{slots}");
    assert_eq!(reader[3], hex(&YUBIKEY_ATR), "{slots}");
    assert_eq!(lines.next(), Some(format!("\t{token}").as_str()), "{slots}");

    let tokens = ctl(&["tokens"]).ok();
    let line: Vec<&str> = line_with(&tokens, token).split('\t').collect();
    assert_eq!(
        line[..3],
        [token, &format!("\"YubiKey PIV #{SN_TOKENCTL}\""), "2 items"],
        "{tokens}"
    );
    assert!(line[3].ends_with(&format!("in {READER}")), "{tokens}");

    let items = ctl(&["items", "--token", token]).ok();
    let key: Vec<&str> = line_with(&items, "\tkey\t").split('\t').collect();
    assert_eq!(
        key[..3],
        [token, "key", "\"PIV Authentication\""],
        "{items}"
    );
    assert!(
        key[3].starts_with("p256 ") && key[3].contains("sign"),
        "{items}"
    );
    let cert: Vec<&str> = line_with(&items, "\tcert\t").split('\t').collect();
    assert_eq!(cert[..4], [token, "cert", "\"test\"", "CN=test"], "{items}");
    // The identity: the certificate's key ID is the key's.
    assert_eq!(key[4], cert[4], "{items}");

    // The public key tokenctl reports is the card's; openssl verifies signatures made by key
    // slot and by label with it.
    let public = dir.write("pub.pem", tokenctl_pubkey(&dir, token, "9a").as_bytes());
    assert_eq!(
        std::fs::read_to_string(&public).unwrap(),
        std::fs::read_to_string(&card.public_pem).unwrap()
    );
    let message = dir.write("message", b"signed by tokenctl through pcscd");
    for (name, by) in [("sig-slot", "9a"), ("sig-label", "PIV Authentication")] {
        let sig = dir.path(name);
        run(tokenctl_sign(&dir, token, by, &message, &sig), &dir).ok();
        let der = std::fs::read(&sig).unwrap();
        assert_eq!(der.first(), Some(&0x30), "a DER ECDSA-Sig-Value");
        openssl_verifies(&dir, &public, &sig, &message);
        openssl_verifies(&dir, &card.public_pem, &sig, &message);
    }

    // The PIN: verify, a wrong one (one try spent, and said), change, unblock with the PUK.
    let pin = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = tokenctl(&dir, ["pin"]);
        cmd.args(args).args(["--token", token]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, &dir)
    };
    let out = pin(&["verify", "--pin-env", "T_PIN"], &[]).ok();
    assert_eq!(out.trim(), format!("PIN verified on {token}"));
    let wrong = pin(
        &["verify", "--pin-env", "T_WRONG"],
        &[("T_WRONG", "000000")],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        wrong.stderr.trim_end().lines().count(),
        1,
        "{}",
        wrong.stderr
    );
    let said = wrong.stderr.to_lowercase();
    assert!(
        said.contains("authenticationfailed") && said.contains("2 tries left"),
        "the error names the refusal and the tries left: {}",
        wrong.stderr
    );
    let out = pin(
        &["change", "--pin-env", "T_PIN", "--new-pin-env", "T_NEW"],
        &[("T_NEW", "654321")],
    )
    .ok();
    assert_eq!(out.trim(), format!("PIN changed on {token}"));
    pin(&["verify", "--pin-env", "T_NEW"], &[("T_NEW", "654321")]).ok();
    // The old PIN, three times: the PIN is blocked, the right one is refused too.
    for left in ["SW 63C2", "SW 63C1", "SW 63C0"] {
        let old = pin(&["verify", "--pin-env", "T_PIN"], &[]);
        assert_eq!(old.status.code(), Some(1), "the old PIN still works");
        assert!(old.stderr.contains(left), "{left}: {}", old.stderr);
    }
    let blocked = pin(&["verify", "--pin-env", "T_NEW"], &[("T_NEW", "654321")]);
    assert_eq!(blocked.status.code(), Some(1), "a blocked PIN verified");
    assert!(blocked.stderr.contains("6983"), "{}", blocked.stderr);
    // The PUK unblocks it with a new PIN.
    let out = pin(
        &["unblock", "--puk-env", "T_PUK", "--new-pin-env", "T_NEW"],
        &[("T_NEW", "111111")],
    )
    .ok();
    assert_eq!(out.trim(), format!("PIN reset on {token}"));
    pin(&["verify", "--pin-env", "T_NEW"], &[("T_NEW", "111111")]).ok();
    let message2 = dir.write("message2", b"signed with the PIN set by the PUK");
    let sig = dir.path("sig-after-unblock");
    let mut sign = tokenctl(
        &dir,
        [
            "sign",
            "--token",
            token,
            "--key",
            "9a",
            "--pin-env",
            "T_NEW",
        ],
    );
    sign.arg("--in")
        .arg(&message2)
        .arg("--out")
        .arg(&sig)
        .env("T_NEW", "111111");
    run(sign, &dir).ok();
    openssl_verifies(&dir, &card.public_pem, &sig, &message2);

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn tokenctl_watch_reports_the_card_coming_and_going() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("watch");
    let mut watch = tokenctl(&dir, ["watch", "--count", "2"])
        .env("HOME", dir.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watch);

    let card = PivCard::new(SN_WATCH);
    let (bridge, id) = stack.insert_token(Box::new(card));
    let first = lines
        .recv_timeout(EVENT_TIMEOUT)
        .expect("tokenctl watch reported no insertion");
    assert_eq!(first, format!("inserted {id}"));

    let sim = bridge.disconnect().unwrap();
    stack.expect_removed(&id);
    let second = lines
        .recv_timeout(EVENT_TIMEOUT)
        .expect("tokenctl watch reported no removal");
    assert_eq!(second, format!("removed {id}"));
    let status = wait_bounded(&mut watch, EVENT_TIMEOUT).expect("watch --count 2 did not end");
    assert!(status.success(), "{status}");
    drop(sim);
}

// ---------------------------------------------------------------------------------------------
// Faults and load

/// The pulled or killed card's token is gone from the hub and from the keychain index; the
/// persistent reference taken before fails with ObjectNotFound.
fn assert_gone(stack: &Stack, index: &keychain_index::KeychainIndex, id: &TokenId, r: &[u8]) {
    index.sync().unwrap();
    assert!(!index.contains_token(id));
    assert_eq!(index.count(&Query::new().token(id.clone())), 0);
    let e = index.resolve(r).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ObjectNotFound, "{e}");
    let e = stack.hub.token(id).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TokenNotFound, "{e}");
}

/// Signs `message` with 9A (ECDSA, SHA-256) in a new session, after verifying the PIN.
fn sign_with_9a(token: &TokenHandle, message: &[u8]) -> token_core::Result<Vec<u8>> {
    block_on(async {
        let mut session = token.open_session().await?;
        session.verify_pin(PinKind::User, &Pin::from(PIN)).await?;
        session
            .sign(
                &SlotId::AUTHENTICATION.object_id(),
                SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
                message,
            )
            .await
    })
}

/// The error of a signature whose card went away: the card is gone, or did not answer, and
/// the signature failed within a second of it.
fn assert_failed_fast(e: &token_core::Error, took: Duration) {
    assert!(
        matches!(
            e.code(),
            ErrorCode::TokenNotFound | ErrorCode::CommunicationError
        ),
        "{e}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}: {e}");
}

/// Signs `message` with 9A through the in-process hub and checks it with `public`.
fn sign_and_check(stack: &Stack, id: &TokenId, message: &[u8], public: &PublicKey) {
    let signature = sign_with_9a(&stack.token(id), message).unwrap();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public.raw).unwrap();
    let signature = p256::ecdsa::Signature::from_der(&signature).unwrap();
    key.verify(message, &signature).unwrap();
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn a_card_pulled_during_a_signature_fails_fast_and_returns_with_its_id_and_references() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("pulled");
    let card = card_with_9a(&dir, SN_PULLED, "pulled");
    let index = stack.index();
    let pulled_at = Arc::new(Mutex::new(None));
    let mark = pulled_at.clone();
    let bridge = stack.insert_with(VpcdBridge::builder(Box::new(card.card)).pull_card_on(
        move |command| {
            let sign = is_signature_with_9a(command);
            if sign {
                *mark.lock().unwrap() = Some(Instant::now());
            }
            sign
        },
    ));
    let id = stack.expect_inserted();
    assert_eq!(id, card.id);
    index.sync_token(&id).unwrap();
    let cert = index
        .first(&Query::certificates().token(id.clone()))
        .expect("the certificate is in the index");
    let reference = cert.persistent_ref();
    assert_eq!(index.resolve(&reference).unwrap().label(), "pulled");

    let token = stack.token(&id);
    let started = Instant::now();
    let result = sign_with_9a(&token, b"never signed");
    let failed = Instant::now();
    let e = result.unwrap_err();
    let pulled = pulled_at
        .lock()
        .unwrap()
        .expect("the GENERAL AUTHENTICATE reached the card");
    let after = failed - pulled;
    println!(
        "signature failed {:.1} ms after the card was pulled ({:.1} ms in all): {e}",
        after.as_secs_f64() * 1e3,
        (failed - started).as_secs_f64() * 1e3
    );
    assert_failed_fast(&e, after);

    stack.expect_removed(&id);
    assert!(!bridge.is_connected());
    assert_gone(&stack, &index, &id, &reference);
    let Err(e) = block_on(token.open_session()) else {
        panic!("a session opened on a pulled card");
    };
    assert_eq!(e.code(), ErrorCode::TokenNotFound, "{e}");

    // The same card (its state kept) back in the reader: the same token, and the reference
    // resolves again.
    let sim = bridge.disconnect().unwrap();
    let bridge = stack.insert(sim);
    assert_eq!(stack.expect_inserted(), id);
    index.sync_token(&id).unwrap();
    let again = index.resolve(&reference).unwrap();
    assert_eq!(again.token_id(), &id);
    assert_eq!(again.certificate().unwrap().der, card.cert_der);
    sign_and_check(
        &stack,
        &id,
        b"signed after the card came back",
        &card.public,
    );

    stack.remove_token(bridge, &id);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn a_killed_simulator_process_fails_the_session_and_its_restart_brings_the_token_back() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("killed");
    let card = card_with_9a(&dir, SN_KILLED, "killed");
    let state = dir.path("card.state");
    let _ = card.card.persist_to(&state).unwrap();
    let index = stack.index();
    let mut sim = SimProcess::start(&dir, stack.port, "piv", &state);
    let id = stack.expect_inserted();
    assert_eq!(id, card.id);
    index.sync_token(&id).unwrap();
    let key = index
        .first(&Query::keys().token(id.clone()))
        .expect("the key is in the index");
    let reference = key.persistent_ref();

    let token = stack.token(&id);
    let mut session = block_on(token.open_session()).unwrap();
    block_on(session.verify_pin(PinKind::User, &Pin::from(PIN))).unwrap();
    sim.kill();
    let started = Instant::now();
    let e = block_on(session.sign(
        &SlotId::AUTHENTICATION.object_id(),
        SignatureAlgorithm::EcdsaMessage(HashAlg::Sha256),
        b"never signed",
    ))
    .unwrap_err();
    let took = started.elapsed();
    println!(
        "signature failed {:.1} ms after the simulator was killed: {e}",
        took.as_secs_f64() * 1e3
    );
    assert_failed_fast(&e, took);
    stack.expect_removed(&id);
    assert_gone(&stack, &index, &id, &reference);
    drop(session);

    // Restarted on the same state file: the same token, the reference resolves, it signs.
    let mut sim = SimProcess::start(&dir, stack.port, "piv", &state);
    assert_eq!(stack.expect_inserted(), id);
    index.sync_token(&id).unwrap();
    let again = index.resolve(&reference).unwrap();
    assert_eq!(again.label(), "PIV Authentication");
    sign_and_check(&stack, &id, b"signed after a restart", &card.public);
    sim.kill();
    stack.expect_removed(&id);
}

/// How long the card of the load test takes per APDU, and per signature.
const CARD_APDU_TIME: Duration = Duration::from_millis(2);
const CARD_SIGNATURE_TIME: Duration = Duration::from_millis(50);

/// One APDU as the card saw it.
#[derive(Clone)]
struct Logged {
    at: Instant,
    command: Vec<u8>,
}

/// `tokenctl sign` of `input` with 9A, started now.
fn start_signing(dir: &Scratch, id: &TokenId, input: &Path, output: &Path) -> Child {
    let mut cmd = tokenctl_sign(dir, id.as_str(), "9a", input, output);
    cmd.env("HOME", dir.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn two_processes_signing_at_once_both_succeed_and_their_apdus_never_interleave() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("load");
    let card = card_with_9a(&dir, SN_LOAD, "load");
    let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
    let seen = log.clone();
    let bridge = stack.insert_with(VpcdBridge::builder(Box::new(card.card)).apdu_log(
        move |command, _| {
            seen.lock().unwrap().push(Logged {
                at: Instant::now(),
                command: command.to_vec(),
            });
            // The bridge answers after this returns: the card is as slow as a real one (a
            // YubiKey takes milliseconds per APDU and tens of them per ECDSA signature), so
            // each process's work on it lasts long after the other process is up.
            std::thread::sleep(if is_signature_with_9a(command) {
                CARD_SIGNATURE_TIME
            } else {
                CARD_APDU_TIME
            });
        },
    ));
    let id = stack.expect_inserted();

    const ROUNDS: usize = 3;
    let mut digests = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let first = log.lock().unwrap().len();
        // Two processes started together, each signing a file of its own.
        let started = Instant::now();
        let mut children = Vec::new();
        for p in 0..2 {
            let input = dir.write(
                &format!("in-{round}-{p}"),
                format!("round {round}, process {p}").as_bytes(),
            );
            let output = dir.path(&format!("sig-{round}-{p}"));
            children.push((start_signing(&dir, &id, &input, &output), input, output));
        }
        let spawned = started.elapsed();
        for (mut child, input, output) in children {
            let status = wait_bounded(&mut child, TOOL_TIMEOUT).expect("tokenctl sign hung");
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "tokenctl sign failed: {err}");
            openssl_verifies(&dir, &card.public_pem, &output, &input);
            let digest = openssl(
                &dir,
                [
                    OsStr::new("dgst"),
                    OsStr::new("-sha256"),
                    OsStr::new("-r"),
                    input.as_os_str(),
                ],
            );
            digests.push(digest.split_whitespace().next().unwrap().to_owned());
        }
        rounds.push((first, started, spawned));
    }

    let log = log.lock().unwrap().clone();
    let signatures: Vec<usize> = (0..log.len())
        .filter(|&i| is_signature_with_9a(&log[i].command))
        .collect();
    assert_eq!(signatures.len(), 2 * ROUNDS, "one signature per process");
    let mut signed = Vec::new();
    for &g in &signatures {
        // The transaction that signed: from its SELECT of the PIV application to the
        // GENERAL AUTHENTICATE, nothing but VERIFY (of the PIN state, and of the PIN when the
        // card forgot it). Without PC/SC transactions the other process's APDUs land here.
        let s = (0..g)
            .rev()
            .find(|&i| ins(&log[i].command) == INS_SELECT)
            .expect("a SELECT before the signature");
        let aid = command_data(&log[s].command);
        assert!(
            aid.len() >= 5 && PIV_AID.starts_with(aid),
            "APDU {s} selects another application: {}",
            hex(&log[s].command)
        );
        let between: Vec<u8> = log[s + 1..g].iter().map(|l| ins(&l.command)).collect();
        assert!(
            !between.is_empty() && between.iter().all(|&i| i == INS_VERIFY),
            "APDUs {s}..={g}, SELECT .. GENERAL AUTHENTICATE, interleaved with others: \
             INS {between:02X?}"
        );
        // Nothing after the signature but a new transaction (its SELECT) or the end.
        if let Some(next) = log.get(g + 1) {
            assert_eq!(
                ins(&next.command),
                INS_SELECT,
                "APDU {} follows the signature at {g} in the same transaction",
                g + 1
            );
        }
        // Which process it was: the digest in the 7C { 82, 81 digest } template.
        let data = command_data(&log[g].command);
        signed.push(hex(data
            .get(data.len().saturating_sub(32)..)
            .unwrap_or(&[])));
    }
    signed.sort();
    digests.sort();
    assert_eq!(signed, digests, "each process's digest signed once");

    // The card's view of each round: both processes were started before the card saw its
    // first APDU of the round and ran until their signatures; the card served them one
    // transaction at a time.
    for (r, &(first, started, spawned)) in rounds.iter().enumerate() {
        let end = rounds.get(r + 1).map_or(log.len(), |next| next.0);
        let round = &log[first..end];
        let timeline: Vec<String> = transactions(round.iter().map(|l| l.command.as_slice()))
            .into_iter()
            .map(|(kind, i)| format!("{kind}@{:.0}", (round[i].at - started).as_secs_f64() * 1e3))
            .collect();
        println!(
            "round {r}: both processes started within {:.1} ms; transactions (ms after): {}",
            spawned.as_secs_f64() * 1e3,
            timeline.join(" ")
        );
        let first_signature = round
            .iter()
            .find(|l| is_signature_with_9a(&l.command))
            .expect("a signature in every round");
        assert!(
            spawned < first_signature.at - started,
            "round {r}: the second process started after the first signature"
        );
    }

    stack.remove_token(bridge, &id);
}

/// What [`Garbling`] does to the answer to GET DATA of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Garble {
    /// Cut the data in half, status word 9000.
    Truncate(u32),
    /// Make the `53` wrapper claim a 4-byte length it does not have, status word 9000.
    HugeLength(u32),
}

/// A PIV card that answers one object's GET DATA with garbage.
struct Garbling {
    inner: PivCard,
    garble: Arc<Mutex<Option<Garble>>>,
}

impl Garbling {
    fn is_get_data_of(command: &[u8], object: u32) -> bool {
        let tag = object.to_be_bytes();
        ins(command) == INS_GET_DATA
            && command.get(5..10) == Some(&[0x5C, 0x03, tag[1], tag[2], tag[3]][..])
    }
}

impl CardSimulator for Garbling {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }
    fn power_on(&mut self) {
        self.inner.power_on();
    }
    fn power_off(&mut self) {
        self.inner.power_off();
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
    fn process(&mut self, command: &[u8]) -> Vec<u8> {
        let answer = self.inner.process(command);
        let garble = *self.garble.lock().unwrap();
        let Some(data_len) = answer.len().checked_sub(2) else {
            return answer;
        };
        let mut data = answer[..data_len].to_vec();
        match garble {
            Some(Garble::Truncate(o)) if Self::is_get_data_of(command, o) => {
                data.truncate(data.len() / 2);
            }
            Some(Garble::HugeLength(o)) if Self::is_get_data_of(command, o) && data.len() > 1 => {
                data[1] = 0x84;
            }
            _ => return answer,
        }
        data.extend_from_slice(&[0x90, 0x00]);
        data
    }
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn a_card_answering_garbage_to_get_data_gives_errors_and_the_hub_lives_on() {
    let Some(stack) = Stack::start() else { return };
    let dir = Scratch::new("garbage");
    let card = card_with_9a(&dir, SN_GARBAGE, "garbage");
    let id = card.id.clone();
    let public = card.public.clone();
    // A security object (SP 800-73-4 Part 1 §3.1.5), which the probe does not read.
    let card = card
        .card
        .with_object(0x5F_C106, &[0x30, 0x03, 0x02, 0x01, 0x00]);
    let garble = Arc::new(Mutex::new(Some(Garble::Truncate(
        SlotId::AUTHENTICATION.certificate_tag(),
    ))));
    let bridge = stack.insert(Box::new(Garbling {
        inner: card,
        garble: garble.clone(),
    }));

    // 9A's certificate, cut short while the hub probes: the probe fails (logged), the slot
    // holds a card and no token, and nothing panics.
    stack.wait_state(SlotState::ValidCard);
    stack.hub.settle();
    let slot = stack.hub.slot_manager().slot(READER).unwrap();
    assert!(slot.tokens.is_empty(), "{slot:?}");
    assert!(stack.hub.token(&id).is_err());
    // The same probe through pcscd, to see its error.
    let e = block_on(async {
        let channel = PcscCard::connect(READER).await?;
        let probe = Probe {
            slot_name: READER.into(),
            device: Device::SmartCard(SmartCard::new(Arc::new(channel))),
            notifier: ItemsNotifier::detached(),
        };
        match token_core::TokenDriver::probe(&PivDriver, &probe).await {
            Ok(Claim::Token(t)) => panic!("a token from a garbled certificate: {}", t.id()),
            Ok(_) => panic!("the PIV application went unrecognised"),
            Err(e) => Ok::<_, token_core::Error>(e),
        }
    })
    .unwrap();
    println!("probe of a card with a truncated certificate: {e}");
    assert_eq!(e.code(), ErrorCode::CorruptedData, "{e}");

    // The same card with a garbled security object instead: the token comes, and reading the
    // object is an error while the token goes on signing.
    let sim = bridge.disconnect().unwrap();
    stack.wait_state(SlotState::Empty);
    *garble.lock().unwrap() = Some(Garble::HugeLength(0x5F_C106));
    let bridge = stack.insert(sim);
    assert_eq!(stack.expect_inserted(), id);
    let mgmt = PivManagement::for_token(&id).unwrap();
    let e = block_on(mgmt.read_object(0x5F_C106)).unwrap_err();
    println!("GET DATA of a garbled security object: {e}");
    assert_eq!(e.code(), ErrorCode::CorruptedData, "{e}");
    let token = stack.token(&id);
    assert!(token.is_present());
    assert_eq!(
        stack.hub.slot_manager().slot(READER).unwrap().state,
        SlotState::ValidCard
    );
    sign_and_check(&stack, &id, b"signed after garbage", &public);
    // Ungarbled, the object reads as stored.
    *garble.lock().unwrap() = None;
    assert_eq!(
        block_on(mgmt.read_object(0x5F_C106)).unwrap(),
        Some(vec![0x30, 0x03, 0x02, 0x01, 0x00])
    );

    stack.remove_token(bridge, &id);
}
