//! The system packages that the build and the stack tests need, and getting them installed.
//!
//! One table, [`PACKAGES`]. Each package is checked with `dpkg-query`; the missing ones are
//! installed with apt when we run as root on Debian or Ubuntu, else the exact command is
//! printed. The step fails only when a package the workspace build needs is still missing
//! (or when an install we attempted did not take).

use std::env;
use std::fs;
use std::process::{Command, Stdio};

use crate::pipeline::Outcome;
use crate::run;
use crate::Error;

/// Who needs a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `cargo build --workspace` fails without it.
    Build,
    /// Only the stack tests (pcscd, simulators, third-party tools) and benchmarks use it.
    Stack,
}

/// A Debian package and why we want it.
#[derive(Debug)]
pub struct Package {
    /// The Debian package name.
    pub name: &'static str,
    /// Whether the workspace build needs it or only the stack tests.
    pub need: Need,
    /// What it is for.
    pub why: &'static str,
}

const fn pkg(name: &'static str, need: Need, why: &'static str) -> Package {
    Package { name, need, why }
}

/// Every system package the project uses. Add a line here when a crate or a stack suite
/// starts to need one; mark it [`Need::Build`] only if the workspace does not build without it.
pub const PACKAGES: &[Package] = &[
    pkg(
        "libpcsclite-dev",
        Need::Build,
        "the pcsc crate links libpcsclite",
    ),
    pkg(
        "pkg-config",
        Need::Build,
        "build scripts find libpcsclite, hidapi and libudev with it",
    ),
    pkg(
        "libhidapi-dev",
        Need::Build,
        "transport-hid opens FIDO HID devices through hidapi",
    ),
    pkg(
        "libudev-dev",
        Need::Build,
        "hidapi's hidraw backend and USB hot-plug use libudev",
    ),
    pkg(
        "pcscd",
        Need::Stack,
        "the PC/SC daemon the stack tests run privately",
    ),
    pkg(
        "vsmartcard-vpcd",
        Need::Stack,
        "pcscd's virtual reader for the simulated cards",
    ),
    pkg(
        "pcsc-tools",
        Need::Stack,
        "pcsc_scan, to see readers and cards in the test pcscd",
    ),
    pkg(
        "opensc",
        Need::Stack,
        "opensc-tool, pkcs11-tool, piv-tool, openpgp-tool against the simulators",
    ),
    pkg(
        "yubico-piv-tool",
        Need::Stack,
        "a second, independent PIV client for the PIV simulator",
    ),
    pkg(
        "gnupg",
        Need::Stack,
        "gpg --card-status against the OpenPGP simulator",
    ),
    pkg(
        "scdaemon",
        Need::Stack,
        "GnuPG's smart-card daemon, which gpg uses to reach the card",
    ),
    pkg(
        "softhsm2",
        Need::Stack,
        "the peer in the soft-token benchmark",
    ),
    pkg(
        "fido2-tools",
        Need::Stack,
        "libfido2's fido2-token, a third-party CTAP2 client",
    ),
    pkg(
        "openssl",
        Need::Stack,
        "makes test certificates and checks signatures from the tokens",
    ),
    pkg(
        "python3-pyscard",
        Need::Stack,
        "PC/SC for python-fido2 (PyPI has pyscard only as source)",
    ),
    pkg(
        "python3-venv",
        Need::Stack,
        "a venv for python-fido2, a third-party CTAP2 client",
    ),
];

/// Whether a package is installed, per `dpkg-query`.
fn installed(name: &str) -> Result<bool, Error> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    Ok(output.status.success() && String::from_utf8_lossy(&output.stdout).ends_with(" installed"))
}

/// Whether /etc/os-release says Debian, Ubuntu or a derivative.
fn debian_like() -> bool {
    let Ok(text) = fs::read_to_string("/etc/os-release") else {
        return false;
    };
    text.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let value = value.trim_matches('"').to_ascii_lowercase();
        (key == "ID" || key == "ID_LIKE")
            && value
                .split_whitespace()
                .any(|id| id == "debian" || id == "ubuntu")
    })
}

/// The apt command line that installs `names`, as a user would type it.
fn install_command_line(names: &[&str], root: bool) -> String {
    let sudo = if root { "" } else { "sudo " };
    format!(
        "{sudo}apt-get update && {sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y \
         --no-install-recommends {}",
        names.join(" ")
    )
}

fn apt(args: &[&str]) -> Result<bool, Error> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    Ok(run::status(&mut cmd)?.success())
}

/// The deps step.
pub fn step() -> Result<Outcome, Error> {
    if env::var("TOKENKIT_SKIP_DEPS").is_ok_and(|v| v == "1") {
        println!("TOKENKIT_SKIP_DEPS=1: not checking system packages");
        return Ok(Outcome::skipped("TOKENKIT_SKIP_DEPS=1"));
    }
    if run::find_program("dpkg-query").is_none() {
        let names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
        println!("!!! no dpkg-query here: cannot check system packages. This project expects");
        println!(
            "!!! Debian or Ubuntu; on them: {}",
            install_command_line(&names, false)
        );
        println!(
            "!!! elsewhere, install the equivalents of: {}",
            names.join(", ")
        );
        return Ok(Outcome::skipped("no dpkg-query: packages not checked"));
    }

    let mut missing = Vec::new();
    for package in PACKAGES {
        if !installed(package.name)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        println!("all {} system packages are installed", PACKAGES.len());
        return Ok(Outcome::check(true, String::new()));
    }
    println!("missing system packages:");
    for package in &missing {
        let need = match package.need {
            Need::Build => "build",
            Need::Stack => "stack",
        };
        println!("  {:<18} [{need}] {}", package.name, package.why);
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();

    let root = run::user_id() == Some(0);
    let can_install = root && debian_like() && run::find_program("apt-get").is_some();
    if !can_install {
        let reason = if !root {
            "not running as root"
        } else {
            "not Debian/Ubuntu with apt-get"
        };
        println!("{reason}, so not installing them. Run:");
        println!("  {}", install_command_line(&names, root));
        let build_missing: Vec<&str> = missing
            .iter()
            .filter(|p| p.need == Need::Build)
            .map(|p| p.name)
            .collect();
        return Ok(if build_missing.is_empty() {
            println!("(the workspace builds without them; the stack tests need them)");
            Outcome::check(true, format!("{} stack package(s) missing", names.len()))
        } else {
            Outcome::check(
                false,
                format!("build needs {} (not installed)", build_missing.join(", ")),
            )
        });
    }

    if !apt(&["update", "-q"])? {
        println!("apt-get update failed; trying the install anyway");
    }
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&names);
    if !apt(&install)? {
        // One unknown or broken package fails the whole transaction: get the others in.
        println!("the install failed as a whole; installing one package at a time");
        for name in &names {
            apt(&["install", "-y", "-q", "--no-install-recommends", name])?;
        }
    }
    let mut still_missing = Vec::new();
    for package in &missing {
        if !installed(package.name)? {
            still_missing.push(package.name);
        }
    }
    Ok(if still_missing.is_empty() {
        println!("installed: {}", names.join(" "));
        Outcome::check(true, format!("installed {}", names.len()))
    } else {
        println!(
            "!!! still missing after apt-get: {}",
            still_missing.join(" ")
        );
        Outcome::check(
            false,
            format!("could not install {}", still_missing.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sane() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len(), "a package is listed twice");
        for package in PACKAGES {
            assert!(!package.why.is_empty(), "{} has no reason", package.name);
        }
        let build: Vec<&str> = PACKAGES
            .iter()
            .filter(|p| p.need == Need::Build)
            .map(|p| p.name)
            .collect();
        assert_eq!(
            build,
            [
                "libpcsclite-dev",
                "pkg-config",
                "libhidapi-dev",
                "libudev-dev"
            ]
        );
    }

    #[test]
    fn prints_a_usable_command() {
        assert_eq!(
            install_command_line(&["pcscd", "opensc"], false),
            "sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends pcscd opensc"
        );
    }
}
