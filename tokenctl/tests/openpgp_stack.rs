//! The OpenPGP card simulator in a real pcscd, used by what real users run: GnuPG
//! (`gpg --card-status`, on-card key generation through `--card-edit`, ECC and, after
//! `key-attr`, RSA 2048 with the fingerprint tokenctl's driver computes, signatures that
//! `gpg --verify` accepts), OpenSC's `openpgp-tool`, `tokenctl` with openssl checking its
//! signatures and key agreements, and a card with both PIV and OpenPGP (`tokenctl sim multi`)
//! that GnuPG and OpenSC both still find.
//!
//! The card is served by `tokenctl sim openpgp|multi --vpcd 127.0.0.1:PORT --state FILE` as a
//! child process, in vpcd's first reader; every test starts from a fresh state file, so every
//! card is serial 00000001 (token `openpgp:fffe00000001`: manufacturer FFFE, "for test
//! purposes").
//!
//! Run by `cargo xtask stack` (and `cargo xtask test`): it starts a private pcscd with vpcd
//! and runs `cargo test -p tokenctl --test openpgp_stack -- --ignored --test-threads=1` in its
//! mount namespace with `TOKENKIT_VPCD_PORT` set. Every test has a GNUPGHOME of its own and
//! stops its gpg-agent and scdaemon (`gpgconf --kill all`) before it ends: scdaemon keeps the
//! card open. The tests are numbered so that they run in this order (libtest sorts by name).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use driver_openpgp::{fingerprint_v4, Algorithm};

use support::*;

/// What `tokenctl sim openpgp` makes from a fresh state file: serial 1, manufacturer FFFE.
const TOKEN: &str = "openpgp:fffe00000001";
/// The full AID of that card: D276000124 01, version 3.4, manufacturer FFFE, serial, RFU.
const AID_HEX: &str = "D276000124010304FFFE000000010000";
/// The serial number in the AID.
const SERIAL_HEX: &str = "00000001";
/// The card's factory admin PIN (PW3); support's `T_PUK` holds the same.
const ADMIN_PIN: &str = "12345678";
/// How long a card served by a child process may take to show in `tokenctl tokens`.
const CARD_TIMEOUT: Duration = Duration::from_secs(20);

/// The three key slots: object label as tokenctl shows it, `--slot` name, the algorithm the
/// simulator's default attributes give it, in the order of C5 (sig, dec, aut).
const SLOTS: [(&str, &str, Algorithm); 3] = [
    ("Signature key", "sig", Algorithm::EcdsaP256),
    ("Decryption key", "dec", Algorithm::EcdhP256),
    ("Authentication key", "aut", Algorithm::EcdsaP256),
];

fn now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    u32::try_from(secs).unwrap()
}

/// The value after `label` on its line (`Serial number ....: 00000001` gives `00000001`).
fn value_of<'a>(text: &'a str, label: &str) -> &'a str {
    let line = line_with(text, label);
    line.split_once(':').map_or("", |(_, v)| v).trim()
}

/// The fields of the first `--with-colons` record of this type, after the type.
fn record<'a>(colons: &'a str, kind: &str) -> Vec<&'a str> {
    let prefix = format!("{kind}:");
    let line = colons
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {kind} record in:\n{colons}"));
    line.split(':').skip(1).collect()
}

/// Waits until `tokenctl tokens` lists a token starting with each of `ids` (a card from an earlier test may
/// still be on its way out: pcscd polls vpcd); returns what it printed last.
fn wait_tokens(dir: &Scratch, ids: &[&str]) -> String {
    let deadline = Instant::now() + CARD_TIMEOUT;
    loop {
        let out = tokenctl(dir, ["tokens"]).output().unwrap();
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        let listed = |id: &str| {
            shown
                .lines()
                .any(|l| l.split('\t').next().is_some_and(|t| t.starts_with(id)))
        };
        if out.status.success() && ids.iter().all(|id| listed(id)) {
            println!("$ tokenctl tokens\n{shown}");
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "tokenctl tokens did not list {ids:?} within {CARD_TIMEOUT:?}:\n{shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh OpenPGP card (`tokenctl sim openpgp` on a new state file) in vpcd's first reader,
/// with a scratch directory `name`, once `tokenctl tokens` lists it (with what that printed);
/// `None` when this does not run under `cargo xtask stack`.
fn fresh_openpgp_card(name: &str) -> Option<(Scratch, SimProcess, String)> {
    let port = vpcd_port()?;
    let dir = Scratch::new(name);
    let sim = SimProcess::start(&dir, port, "openpgp", &dir.path("card.state"));
    let tokens = wait_tokens(&dir, &[TOKEN]);
    Some((dir, sim, tokens))
}

/// A GNUPGHOME of the test's own with scdaemon on PC/SC (the private pcscd), loopback
/// pinentry allowed. Its agent and scdaemon are stopped on drop.
struct Gnupg {
    home: PathBuf,
}

impl Gnupg {
    fn new(dir: &Scratch) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let home = dir.path("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(
            home.join("scdaemon.conf"),
            "disable-ccid\n\
             pcsc-driver /usr/lib/x86_64-linux-gnu/libpcsclite.so.1\n\
             pcsc-shared\n",
        )
        .unwrap();
        std::fs::write(home.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        Self { home }
    }

    fn gpg<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut c = tool("gpg", args);
        c.env("GNUPGHOME", &self.home).env("TZ", "UTC");
        c
    }

    /// `gpgconf --kill all`: scdaemon lets go of the card.
    fn kill(&self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Gnupg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key's public key as tokenctl reads it from the card: the PEM file and the raw point.
fn public_key(dir: &Scratch, label: &str, file: &str) -> (PathBuf, Vec<u8>) {
    let pem = tokenctl_pubkey(dir, TOKEN, label);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pem_path = dir.write(&format!("{file}.pem"), pem.as_bytes());
    let der = openssl_public_der(dir, &pem_path, &dir.path(&format!("{file}.der")));
    // A P-256 SubjectPublicKeyInfo ends with the 65-byte uncompressed point.
    let point = der[der.len() - 65..].to_vec();
    assert_eq!(
        point[0],
        0x04,
        "not an uncompressed P-256 point: {}",
        hex(&der)
    );
    (pem_path, point)
}

/// Generates keys in all three slots through tokenctl (which writes each key's v4
/// fingerprint and creation time to the card, as GnuPG does).
fn keygen_all(dir: &Scratch) {
    for (label, slot, _) in SLOTS {
        let out = run(
            tokenctl(
                dir,
                [
                    "keygen",
                    "--token",
                    TOKEN,
                    "--alg",
                    "p256",
                    "--label",
                    label,
                    "--slot",
                    slot,
                    "--pin-env",
                    "T_PUK",
                ],
            ),
            dir,
        )
        .ok();
        assert!(
            out.contains(&format!("generated p256 key \"{label}\"")) && out.contains(TOKEN),
            "{out}"
        );
    }
}

/// `tokenctl pin verify` with the right PIN; asserts success and returns what it said.
fn verify_pin(dir: &Scratch) -> String {
    run(
        tokenctl(
            dir,
            ["pin", "verify", "--token", TOKEN, "--pin-env", "T_PIN"],
        ),
        dir,
    )
    .ok()
}

/// PW1 := PW3's value (through tokenctl), so every PIN prompt of gpg gets the same answer.
fn set_pin_to_the_admin_pin(dir: &Scratch) {
    run(
        tokenctl(
            dir,
            [
                "pin",
                "change",
                "--token",
                TOKEN,
                "--pin-env",
                "T_PIN",
                "--new-pin-env",
                "T_PUK",
            ],
        ),
        dir,
    )
    .ok();
}

/// The key attributes of `--card-status --with-colons`: key number, algorithm, curve or size.
fn key_attributes(colons: &str) -> Vec<Vec<&str>> {
    colons
        .lines()
        .filter(|l| l.starts_with("keyattr:"))
        .map(|l| l.split(':').skip(1).take(3).collect())
        .collect()
}

/// How a `gpg --card-edit` prompt is answered: (status kind, keyword, the commands left).
type CardEditAnswer = fn(&str, &str, &mut std::vec::IntoIter<&str>) -> Option<String>;

/// Runs `gpg --card-edit` with `commands` (which make it generate keys), answering its
/// prompts with `answer`, for at most `timeout`; asserts it succeeded and reported the new
/// key (KEY_CREATED), and returns that key's fingerprint.
fn card_edit_generate(
    gnupg: &Gnupg,
    dir: &Scratch,
    commands: Vec<&str>,
    answer: CardEditAnswer,
    timeout: Duration,
) -> String {
    let mut cmd = gnupg.gpg([
        "--no-tty",
        "--command-fd",
        "0",
        "--status-fd",
        "1",
        "--pinentry-mode",
        "loopback",
        "--card-edit",
    ]);
    cmd.env("HOME", dir.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = lines_of(&mut child);
    let mut commands = commands.into_iter();
    let mut transcript = String::new();
    let mut created = None;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        transcript.push_str(&line);
        transcript.push('\n');
        let Some(status) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = status.split_whitespace();
        let kind = words.next().unwrap_or("");
        if kind == "KEY_CREATED" {
            created = words.nth(1).map(str::to_string);
            continue;
        }
        if !kind.starts_with("GET_") {
            continue;
        }
        let keyword = words.next().unwrap_or("");
        let Some(answer) = answer(kind, keyword, &mut commands) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected prompt {kind} {keyword}; gpg said:\n{transcript}");
        };
        let shown = if kind == "GET_HIDDEN" { "***" } else { &answer };
        transcript.push_str(&format!("> {shown}\n"));
        if writeln!(stdin, "{answer}").is_err() {
            break;
        }
    }
    drop(stdin);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    println!(
        "gpg --card-edit ({:.1} s):\n{transcript}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "gpg --card-edit failed ({status:?}):\n{transcript}"
    );
    let fpr = created.unwrap_or_else(|| panic!("no KEY_CREATED in:\n{transcript}"));
    assert_eq!(fpr.len(), 40, "{fpr}");
    fpr
}

/// With PW1 set to the admin PIN (so every PIN prompt gets the same answer), gpg generates keys
/// on the card in a GNUPGHOME of the test's own (see [`card_edit_generate`]); returns that
/// GnuPG and the signature key's fingerprint.
fn gpg_generates_on_the_card(
    dir: &Scratch,
    commands: Vec<&str>,
    answer: CardEditAnswer,
    timeout: Duration,
) -> (Gnupg, String) {
    set_pin_to_the_admin_pin(dir);
    let gnupg = Gnupg::new(dir);
    let fpr = card_edit_generate(&gnupg, dir, commands, answer, timeout);
    (gnupg, fpr)
}

/// gpg signs `data` with the card's key `fpr` (PW1 through loopback; detached, to
/// `message.txt.sig`) and verifies the signature (GOODSIG, and VALIDSIG naming `fpr`); stops
/// gpg's agent and scdaemon. Returns the VALIDSIG line.
fn gpg_signs_and_verifies(gnupg: &Gnupg, dir: &Scratch, fpr: &str, data: &Path) -> String {
    let signature = dir.path("message.txt.sig");
    run(
        gnupg.gpg([
            OsStr::new("--batch"),
            OsStr::new("--pinentry-mode"),
            OsStr::new("loopback"),
            OsStr::new("--passphrase"),
            OsStr::new(ADMIN_PIN),
            OsStr::new("--local-user"),
            OsStr::new(fpr),
            OsStr::new("--output"),
            signature.as_os_str(),
            OsStr::new("--detach-sign"),
            data.as_os_str(),
        ]),
        dir,
    )
    .ok();
    let verified = run(
        gnupg.gpg([
            OsStr::new("--batch"),
            OsStr::new("--status-fd"),
            OsStr::new("1"),
            OsStr::new("--verify"),
            signature.as_os_str(),
            data.as_os_str(),
        ]),
        dir,
    )
    .ok();
    gnupg.kill();
    assert!(
        verified.lines().any(|l| l.starts_with("[GNUPG:] GOODSIG ")),
        "{verified}"
    );
    let valid = line_with(&verified, "[GNUPG:] VALIDSIG ");
    assert!(valid.contains(fpr), "{valid}");
    valid.to_string()
}

// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t1_gpg_card_status_shows_the_serial_key_attributes_and_fingerprints() {
    let Some((dir, _sim, _)) = fresh_openpgp_card("openpgp-gpg-status") else {
        return;
    };
    let before = now();
    keygen_all(&dir);
    let after = now();
    let points: Vec<Vec<u8>> = SLOTS
        .iter()
        .map(|(label, slot, _)| public_key(&dir, label, slot).1)
        .collect();

    let gnupg = Gnupg::new(&dir);
    let status = run(gnupg.gpg(["--card-status"]), &dir).ok();
    gnupg.kill();
    let colons = run(gnupg.gpg(["--card-status", "--with-colons"]), &dir).ok();
    gnupg.kill();

    // The card, as the AID names it; the serial is the one in the AID and in the token ID.
    assert_eq!(value_of(&status, "Reader ..."), READER);
    assert_eq!(value_of(&status, "Application ID ..."), AID_HEX);
    assert_eq!(value_of(&status, "Application type ."), "OpenPGP");
    assert_eq!(value_of(&status, "Version ....."), "3.4");
    assert_eq!(value_of(&status, "Serial number ..."), SERIAL_HEX);
    assert!(AID_HEX[20..28] == *SERIAL_HEX && TOKEN.ends_with(&SERIAL_HEX.to_lowercase()));
    assert_eq!(record(&colons, "serial")[0], SERIAL_HEX);
    assert_eq!(record(&colons, "vendor")[0], "fffe");
    // Key attributes: ECDSA (19) / ECDH (18) / ECDSA on P-256 (the simulator's defaults).
    assert_eq!(
        value_of(&status, "Key attributes ..."),
        "nistp256 nistp256 nistp256"
    );
    assert_eq!(
        key_attributes(&colons),
        [
            ["1", "19", "NIST P-256"],
            ["2", "18", "NIST P-256"],
            ["3", "19", "NIST P-256"]
        ],
        "{colons}"
    );
    assert_eq!(value_of(&status, "PIN retry counter"), "3 0 3");

    // The three fingerprints: the v4 fingerprints of the public keys tokenctl reads from the
    // card, at the creation times the card holds (written when tokenctl generated them).
    let fprs = record(&colons, "fpr");
    let times = record(&colons, "fprtime");
    for (i, (label, _, alg)) in SLOTS.iter().enumerate() {
        let created: u32 = times[i].parse().unwrap();
        assert!(
            (before..=after).contains(&created),
            "{label}: created {created}, not in [{before}, {after}]"
        );
        let expected = hex(&fingerprint_v4(*alg, &points[i], created)).to_ascii_uppercase();
        assert_eq!(fprs[i], expected, "{label}'s fingerprint");
        let human = match i {
            0 => value_of(&status, "Signature key ....").replace(' ', ""),
            1 => value_of(&status, "Encryption key....").replace(' ', ""),
            _ => value_of(&status, "Authentication key").replace(' ', ""),
        };
        assert_eq!(
            human, expected,
            "{label}: gpg --card-status shows another fingerprint"
        );
    }
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t2_openpgp_tool_reads_the_aid_serial_and_keys() {
    let Some((dir, _sim, _)) = fresh_openpgp_card("openpgp-tool") else {
        return;
    };

    let card = run(tool("openpgp-tool", ["-r", READER, "-C"]), &dir).ok();
    let aid: Vec<String> = AID_HEX
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_ascii_lowercase())
        .collect();
    assert_eq!(value_of(&card, "AID:"), aid.join(":"));
    assert_eq!(value_of(&card, "Version:"), "3.4");
    assert_eq!(value_of(&card, "Serial number:"), SERIAL_HEX);

    let keys = run(tool("openpgp-tool", ["-r", READER, "-K"]), &dir).ok();
    assert_eq!(value_of(&keys, "Sig Algorithm:"), "ECDSA");
    assert_eq!(value_of(&keys, "Dec Algorithm:"), "ECDH");
    assert_eq!(value_of(&keys, "Aut Algorithm:"), "ECDSA");

    // PW1 through OpenSC: the right PIN passes, a wrong one fails and costs a try.
    run(
        tool(
            "openpgp-tool",
            ["-r", READER, "--verify", "CHV1", "--pin", PIN],
        ),
        &dir,
    )
    .ok();
    let wrong = run(
        tool(
            "openpgp-tool",
            ["-r", READER, "--verify", "CHV1", "--pin", "654321"],
        ),
        &dir,
    );
    assert!(
        !wrong.status.success(),
        "a wrong PIN passed: {}",
        wrong.stdout
    );
    let tries = verify_pin(&dir);
    assert!(
        tries.contains(&format!("PIN verified on {TOKEN}")),
        "{tries}"
    );
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t3_tokenctl_lists_signs_derives_and_verifies_the_pin() {
    let Some((dir, _sim, tokens)) = fresh_openpgp_card("openpgp-tokenctl") else {
        return;
    };
    let line = line_with(&tokens, TOKEN);
    assert!(
        line.contains("OpenPGP card 3.4 in Virtual PCD 00 00"),
        "{line}"
    );
    assert!(line.contains("3 items"), "{line}");

    let items = run(tokenctl(&dir, ["items"]), &dir).ok();
    for (label, _, _) in SLOTS {
        let line = line_with(&items, &format!("\"{label}\""));
        assert!(line.starts_with(&format!("{TOKEN}\tkey\t")), "{line}");
    }
    assert!(line_with(&items, "\"Signature key\"").contains("p256 sign"));
    assert!(line_with(&items, "\"Decryption key\"").contains("p256 derive"));
    assert!(line_with(&items, "\"Authentication key\"").contains("p256 sign"));

    // A signature with the signature key (ECDSA P-256, DER over SHA-256) that openssl verifies
    // with the public key tokenctl reads.
    let (sig_pem, _) = public_key(&dir, "Signature key", "sig");
    let data = dir.write("data.txt", b"signed by an OpenPGP card in pcscd\n");
    let signature = dir.path("data.sig");
    run(
        tokenctl_sign(&dir, TOKEN, "Signature key", &data, &signature),
        &dir,
    )
    .ok();
    openssl_verifies(&dir, &sig_pem, &signature, &data);

    // ECDH with the decryption key against a peer key openssl makes: the same secret as
    // `openssl pkeyutl -derive` on the peer's side.
    let (dec_pem, _) = public_key(&dir, "Decryption key", "dec");
    let peer_key = dir.path("peer.key");
    let peer_pub = dir.path("peer.pub.pem");
    openssl_genpkey(&dir, "EC", "ec_paramgen_curve:P-256", &peer_key);
    openssl_pubout(&dir, &peer_key, &peer_pub);
    let ours = dir.path("secret.card");
    run(
        tokenctl(
            &dir,
            [
                OsStr::new("derive"),
                OsStr::new("--token"),
                OsStr::new(TOKEN),
                OsStr::new("--key"),
                OsStr::new("Decryption key"),
                OsStr::new("--peer"),
                peer_pub.as_os_str(),
                OsStr::new("--out"),
                ours.as_os_str(),
                OsStr::new("--pin-env"),
                OsStr::new("T_PIN"),
            ],
        ),
        &dir,
    )
    .ok();
    let theirs = dir.path("secret.openssl");
    openssl(
        &dir,
        [
            OsStr::new("pkeyutl"),
            OsStr::new("-derive"),
            OsStr::new("-inkey"),
            peer_key.as_os_str(),
            OsStr::new("-peerkey"),
            dec_pem.as_os_str(),
            OsStr::new("-out"),
            theirs.as_os_str(),
        ],
    );
    let ours = std::fs::read(&ours).unwrap();
    assert_eq!(ours.len(), 32, "a P-256 shared secret is 32 bytes");
    assert_eq!(hex(&ours), hex(&std::fs::read(&theirs).unwrap()));

    // PIN verification: the right PIN, then a wrong one that costs a try (and says so).
    let ok = verify_pin(&dir);
    assert_eq!(ok.trim(), format!("PIN verified on {TOKEN}"));
    let mut wrong = tokenctl(
        &dir,
        ["pin", "verify", "--token", TOKEN, "--pin-env", "WRONG_PIN"],
    );
    wrong.env("WRONG_PIN", "000000");
    let wrong = run(wrong, &dir);
    assert!(!wrong.status.success(), "{}", wrong.stdout);
    assert!(wrong.stderr.contains("2 tries left"), "{}", wrong.stderr);
    verify_pin(&dir);
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t4_a_card_with_piv_and_openpgp_is_found_by_tokenctl_gpg_and_opensc() {
    let Some(port) = vpcd_port() else { return };
    let dir = Scratch::new("openpgp-multi");
    let _sim = SimProcess::start(&dir, port, "multi", &dir.path("card"));
    // Both applications of the one card, as tokens of their own.
    let tokens = wait_tokens(&dir, &[TOKEN, "piv:"]);
    let piv = tokens
        .lines()
        .find_map(|l| l.split('\t').next().filter(|id| id.starts_with("piv:")))
        .unwrap_or_else(|| panic!("no piv: token in:\n{tokens}"));
    assert!(
        line_with(&tokens, piv).ends_with("in Virtual PCD 00 00"),
        "{tokens}"
    );
    assert!(
        line_with(&tokens, TOKEN).ends_with("in Virtual PCD 00 00"),
        "{tokens}"
    );

    // GnuPG still finds the OpenPGP application behind the YubiKey's ATR.
    let gnupg = Gnupg::new(&dir);
    let status = run(gnupg.gpg(["--card-status"]), &dir).ok();
    gnupg.kill();
    assert_eq!(value_of(&status, "Application ID ..."), AID_HEX);
    assert_eq!(value_of(&status, "Application type ."), "OpenPGP");
    assert_eq!(value_of(&status, "Serial number ..."), SERIAL_HEX);

    // OpenSC still takes the card for a PIV card, and its PKCS#11 module shows the token.
    let name = run(tool("opensc-tool", ["-r", READER, "--name"]), &dir).ok();
    assert_eq!(name.trim(), "Personal Identity Verification Card");
    let slots = run(
        tool("pkcs11-tool", ["--module", OPENSC_PKCS11, "--list-slots"]),
        &dir,
    )
    .ok();
    let slot = slots
        .split("Slot ")
        .find(|s| s.contains(READER))
        .unwrap_or_else(|| panic!("no slot for {READER} in:\n{slots}"));
    assert!(!slot.contains("(empty)"), "{slot}");
    assert!(
        line_with(slot, "token manufacturer").ends_with("piv_II"),
        "{slot}"
    );
}

/// Answers for GnuPG's `--card-edit` prompts, by the keyword of the status line (GnuPG asks
/// some yes/no questions with GET_LINE, some with GET_BOOL: both take `y` or `n`).
fn card_edit_answer(
    kind: &str,
    keyword: &str,
    commands: &mut std::vec::IntoIter<&str>,
) -> Option<String> {
    Some(match keyword {
        "cardedit.prompt" => commands.next().unwrap_or("quit").to_string(),
        "cardedit.genkeys.backup_enc" => "n".into(),
        "cardedit.genkeys.replace_keys" => "y".into(),
        // PW1 and PW3 are both the admin PIN here (the test sets PW1 so).
        "passphrase.enter" if kind == "GET_HIDDEN" => ADMIN_PIN.into(),
        "keygen.valid" => "0".into(),
        "keygen.valid.okay" => "y".into(),
        "keygen.name" => "Card Test".into(),
        "keygen.email" => "card@example.org".into(),
        "keygen.comment" => String::new(),
        "keygen.userid.cmd" => "O".into(),
        _ => return None,
    })
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t5_a_key_gpg_generates_on_the_card_signs_and_gpg_verifies() {
    let Some((dir, _sim, _)) = fresh_openpgp_card("openpgp-gpg-keygen") else {
        return;
    };
    let (gnupg, fpr) = gpg_generates_on_the_card(
        &dir,
        vec!["admin", "generate", "quit"],
        card_edit_answer,
        Duration::from_secs(120),
    );

    // The card now holds that key as its signature key.
    let colons = run(gnupg.gpg(["--card-status", "--with-colons"]), &dir).ok();
    assert_eq!(record(&colons, "fpr")[0], fpr, "{colons}");

    // It signs (with PW1 through loopback), and gpg verifies the signature.
    let data = dir.write("message.txt", b"signed on the card by gpg\n");
    gpg_signs_and_verifies(&gnupg, &dir, &fpr, &data);
    // ECDSA (19) on the card's signature key.
    assert!(record(&colons, "keyattr")[1] == "19", "{colons}");
    // The signature counter (reset when the key was generated, then counting gpg's
    // certifications with it: the user ID, the subkey bindings, the revocation certificate)
    // counted the detached signature, once.
    let after = run(gnupg.gpg(["--card-status", "--with-colons"]), &dir).ok();
    gnupg.kill();
    let count = |colons: &str| -> u32 { record(colons, "sigcount")[0].parse().unwrap() };
    assert!(count(&colons) >= 1, "{colons}");
    assert_eq!(count(&after), count(&colons) + 1, "{after}");

    // The encryption subkey gpg made on the card decrypts (ECDH through PSO:DECIPHER) what
    // gpg encrypts to it.
    let encrypted = dir.path("message.txt.gpg");
    run(
        gnupg.gpg([
            OsStr::new("--batch"),
            OsStr::new("--trust-model"),
            OsStr::new("always"),
            OsStr::new("--recipient"),
            OsStr::new(&fpr),
            OsStr::new("--output"),
            encrypted.as_os_str(),
            OsStr::new("--encrypt"),
            data.as_os_str(),
        ]),
        &dir,
    )
    .ok();
    let decrypted = dir.path("message.decrypted");
    let out = run(
        gnupg.gpg([
            OsStr::new("--batch"),
            OsStr::new("--status-fd"),
            OsStr::new("1"),
            OsStr::new("--pinentry-mode"),
            OsStr::new("loopback"),
            OsStr::new("--passphrase"),
            OsStr::new(ADMIN_PIN),
            OsStr::new("--output"),
            decrypted.as_os_str(),
            OsStr::new("--decrypt"),
            encrypted.as_os_str(),
        ]),
        &dir,
    )
    .ok();
    gnupg.kill();
    assert!(out.contains("[GNUPG:] DECRYPTION_OKAY"), "{out}");
    assert_eq!(
        std::fs::read(&decrypted).unwrap(),
        std::fs::read(&data).unwrap()
    );
}

/// `card_edit_answer`, and the prompts of `key-attr`: RSA (1), 2048 bits, for each key.
fn key_attr_answer(
    kind: &str,
    keyword: &str,
    commands: &mut std::vec::IntoIter<&str>,
) -> Option<String> {
    match keyword {
        "cardedit.genkeys.algo" => Some("1".into()),
        "cardedit.genkeys.size" => Some("2048".into()),
        _ => card_edit_answer(kind, keyword, commands),
    }
}

#[test]
#[ignore = "needs the private pcscd of cargo xtask stack"]
fn t6_gpg_switches_the_card_to_rsa_2048_generates_signs_and_verifies() {
    let Some((dir, _sim, _)) = fresh_openpgp_card("openpgp-gpg-rsa") else {
        return;
    };
    let (gnupg, fpr) = gpg_generates_on_the_card(
        &dir,
        vec!["admin", "key-attr", "generate", "quit"],
        key_attr_answer,
        Duration::from_secs(240),
    );

    // The card says RSA 2048 for all three keys, and holds gpg's key as its signature key.
    let colons = run(gnupg.gpg(["--card-status", "--with-colons"]), &dir).ok();
    assert_eq!(
        key_attributes(&colons),
        [["1", "1", "2048"], ["2", "1", "2048"], ["3", "1", "2048"]],
        "{colons}"
    );
    assert_eq!(record(&colons, "fpr")[0], fpr, "{colons}");

    // It signs (PSO:CDS with RSA, PW1 through loopback), and gpg verifies the signature.
    let data = dir.write("message.txt", b"signed with RSA on the card by gpg\n");
    let valid = gpg_signs_and_verifies(&gnupg, &dir, &fpr, &data);
    // RSA (pubkey algorithm 1) made it.
    assert_eq!(valid.split_whitespace().nth(8), Some("1"), "{valid}");

    // tokenctl lists the RSA key gpg generated, and the v4 fingerprint tokenctl's driver
    // computes from it (with the card's creation time) is the one gpg computed.
    let pem = tokenctl_pubkey(&dir, TOKEN, "Signature key");
    let pem_path = dir.write("rsa-sig.pem", pem.as_bytes());
    let der = openssl_public_der(&dir, &pem_path, &dir.path("rsa-sig.der"));
    let spki = token_core::SubjectPublicKeyInfo::parse(&der).unwrap();
    assert_eq!(
        spki.algorithm_oid,
        token_core::SubjectPublicKeyInfo::OID_RSA_ENCRYPTION
    );
    let created: u32 = record(&colons, "fprtime")[0].parse().unwrap();
    let computed = fingerprint_v4(Algorithm::rsa(2048), spki.public_key, created);
    assert_eq!(hex(&computed).to_ascii_uppercase(), fpr);
}
