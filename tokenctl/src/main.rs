//! # tokenctl
//!
//! The command line of tokenkit: the user's face of the hub, the drivers and the keychain
//! index. It lists slots, tokens and items; watches insertions and removals; creates soft
//! tokens; generates keys (with a self-signed certificate); signs files; exports public keys
//! and certificates; and verifies, changes and unblocks PINs.
//!
//! PINs come from `--pin-env VAR`, `--pin-file FILE` or an interactive prompt on the terminal
//! that says how many tries are left; they are never logged. Every error is one line naming
//! the CryptoTokenKit error code, and the exit status is 1.
//!
//! Run `tokenctl --help` for the commands, `tokenctl demo` for the whole path on a machine
//! with no hardware.

#![forbid(unsafe_code)]

mod commands;
mod demo;
mod pin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Link the drivers and transports this binary offers: registration happens at link time.
use driver_hsm_soft as _;
use driver_openpgp as _;
use driver_piv as _;
use hello_driver as _;
use transport_pcsc as _;

#[derive(Parser, Debug)]
#[command(name = "tokenctl", version, about = "Find and use security tokens", long_about = None)]
struct Cli {
    /// The soft-token store directory (default: $TOKENKIT_HOME, else the XDG data directory).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Log to standard error: -v what happens (providers, tokens), -vv details, -vvv every
    /// APDU with PINs and imported keys redacted (safe to attach to a bug report).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Cmd,
}

/// Where a PIN comes from.
#[derive(clap::Args, Debug, Clone, Default)]
struct PinArgs {
    /// Read the PIN from this environment variable.
    #[arg(long, value_name = "VAR")]
    pin_env: Option<String>,
    /// Read the PIN from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the slots (readers, devices, registered persistent tokens) and their states.
    Slots {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tokens present.
    Tokens {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List items from the keychain index.
    Items {
        /// Only items of this token.
        #[arg(long, value_name = "ID")]
        token: Option<String>,
        /// Only this class: key, cert or identity.
        #[arg(long)]
        class: Option<String>,
        /// Only items with this label.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print token insertions and removals as they happen, until interrupted.
    Watch {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Stop after this many events (the tokens present at start count as insertions).
        #[arg(long, value_name = "N")]
        count: Option<usize>,
    },
    /// Manage soft tokens.
    Soft {
        #[command(subcommand)]
        command: SoftCmd,
    },
    /// Generate a key pair on a token.
    Keygen {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// The algorithm: p256, p384, ed25519, rsa2048 (what the token supports).
        #[arg(long)]
        alg: String,
        /// The key's label.
        #[arg(long)]
        label: String,
        /// The token's place for the key, where it has fixed ones (a PIV slot such as 9c).
        #[arg(long)]
        slot: Option<String>,
        /// Also make a self-signed certificate with this common name and store it.
        #[arg(long, value_name = "CN")]
        self_signed: Option<String>,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Sign a file: ECDSA writes DER over SHA-256 of the file (SHA-384 for P-384), Ed25519
    /// writes the 64-byte signature, RSA writes PKCS#1 v1.5 over SHA-256.
    Sign {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// The key, by label or by object ID (a PIV slot such as 9a).
        #[arg(long)]
        key: String,
        /// The file to sign.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the signature.
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Agree a shared secret (ECDH, X25519) with a peer's public key; writes the raw secret
    /// (the x-coordinate for ECDH), as `openssl pkeyutl -derive` does.
    Derive {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// The key, by label or object ID.
        #[arg(long)]
        key: String,
        /// The peer's public key, PEM or DER SubjectPublicKeyInfo.
        #[arg(long, value_name = "FILE")]
        peer: PathBuf,
        /// Where to write the shared secret.
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Print a key's public key as a PEM SubjectPublicKeyInfo.
    Pubkey {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// The key, by label or object ID.
        #[arg(long)]
        key: String,
    },
    /// Print a certificate as PEM.
    Cert {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// The certificate's label (or object ID).
        #[arg(long)]
        label: String,
    },
    /// Verify, change or unblock a token's PIN.
    Pin {
        #[command(subcommand)]
        command: PinCmd,
    },
    /// The main job on this machine: a soft token, a key with a certificate, the keychain
    /// index, a signature verified; plus every other token present.
    Demo,
    /// Put a simulated card into pcscd's virtual reader (vsmartcard-vpcd) until interrupted.
    Sim {
        #[command(subcommand)]
        card: SimCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SimCmd {
    /// A PIV card (SP 800-73-4 with YubiKey 5.7 extensions; PIN 123456, PUK 12345678, the
    /// default management key).
    Piv {
        /// vpcd's address (default 127.0.0.1 and $TOKENKIT_VPCD_PORT, else 35963).
        #[arg(long, value_name = "HOST:PORT")]
        vpcd: Option<String>,
        /// Keep the card's keys, PINs and objects in this file (made if missing).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// An OpenPGP card 3.4 (PW1 123456, PW3 12345678) with three keys generated on first use.
    Openpgp {
        /// vpcd's address (default 127.0.0.1 and $TOKENKIT_VPCD_PORT, else 35963).
        #[arg(long, value_name = "HOST:PORT")]
        vpcd: Option<String>,
        /// Keep the card's keys, PINs and objects in this file (made if missing).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// One card carrying PIV, OpenPGP and FIDO2 behind one ATR, selected by AID, as a
    /// YubiKey does: each application becomes a token of its own.
    Multi {
        /// vpcd's address (default 127.0.0.1 and $TOKENKIT_VPCD_PORT, else 35963).
        #[arg(long, value_name = "HOST:PORT")]
        vpcd: Option<String>,
        /// Keep the PIV application's state in FILE.piv, the OpenPGP one's in
        /// FILE.openpgp and the FIDO2 one's in FILE.fido2.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// A FIDO2 security key (CTAP 2.1) as an NFC card: the FIDO applet, NFCCTAP_MSG APDUs;
    /// no PIN unless --pin says one; the tap (user presence) is always given.
    Fido2 {
        /// vpcd's address (default 127.0.0.1 and $TOKENKIT_VPCD_PORT, else 35963).
        #[arg(long, value_name = "HOST:PORT")]
        vpcd: Option<String>,
        /// Keep the authenticator's PIN, credentials and large blob in this file (made if
        /// missing).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Start with this PIN set (ignored when the state file exists).
        #[arg(long, value_name = "PIN")]
        pin: Option<String>,
    },
    /// The example "hello" card of hello-driver (PIN 1234).
    Hello {
        /// vpcd's address (default 127.0.0.1 and $TOKENKIT_VPCD_PORT, else 35963).
        #[arg(long, value_name = "HOST:PORT")]
        vpcd: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SoftCmd {
    /// Create a soft token (asks for a PIN and a PUK).
    Create {
        /// The token's label.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        pin: PinArgs,
        /// Read the PUK from this environment variable.
        #[arg(long, value_name = "VAR")]
        puk_env: Option<String>,
        /// Read the PUK from the first line of this file.
        #[arg(long, value_name = "FILE")]
        puk_file: Option<PathBuf>,
    },
    /// Delete a soft token and its keys.
    Delete {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
    },
}

#[derive(Subcommand, Debug)]
enum PinCmd {
    /// Verify the PIN once (a wrong PIN costs a try; tries left are printed).
    Verify {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Change the PIN.
    Change {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        #[command(flatten)]
        pin: PinArgs,
        /// Read the new PIN from this environment variable.
        #[arg(long, value_name = "VAR")]
        new_pin_env: Option<String>,
        /// Read the new PIN from the first line of this file.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<PathBuf>,
    },
    /// Reset a blocked or forgotten PIN with the unblocking code (PUK).
    Unblock {
        /// The token.
        #[arg(long, value_name = "ID")]
        token: String,
        /// Read the PUK from this environment variable.
        #[arg(long, value_name = "VAR")]
        puk_env: Option<String>,
        /// Read the PUK from the first line of this file.
        #[arg(long, value_name = "FILE")]
        puk_file: Option<PathBuf>,
        /// Read the new PIN from this environment variable.
        #[arg(long, value_name = "VAR")]
        new_pin_env: Option<String>,
        /// Read the new PIN from the first line of this file.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose > 0 {
        let level = match cli.verbose {
            1 => tracing::Level::INFO,
            2 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        };
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenctl: {e}");
            ExitCode::FAILURE
        }
    }
}
