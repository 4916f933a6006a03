//! Python tools the stack suites drive, in a virtual environment xtask makes itself.
//!
//! Yubico's python-fido2 is the third-party CTAP2 client of the `fido2-tools` suite. Debian's
//! `python3-fido2` is too old for CTAP 2.1 (and PyPI has pyscard only as source), so the venv
//! is made from Debian's `/usr/bin/python3` with `--system-site-packages` (for
//! `python3-pyscard`, installed by the deps step) and gets python-fido2 from PyPI, pinned:
//!
//! ```text
//! /usr/bin/python3 -m venv --system-site-packages <target>/fido2-venv
//! <target>/fido2-venv/bin/pip install fido2==2.2.1
//! ```
//!
//! A venv that already imports the pinned version with pyscard is reused as it is.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run;
use crate::Error;

/// The python-fido2 release the suite is written against.
pub const PYTHON_FIDO2: &str = "2.2.1";

/// The environment variable that gives the `fido2-tools` suite the venv's interpreter.
pub const FIDO2_PYTHON_VAR: &str = "TOKENKIT_FIDO2_PYTHON";

/// The system interpreter the venv is made from (Debian's, which sees python3-pyscard).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

/// Whether `python` imports python-fido2 at the pinned version and pyscard.
fn ready(python: &Path) -> bool {
    let check = format!(
        "import importlib.metadata as m, smartcard, fido2.pcsc; \
         assert m.version('fido2') == '{PYTHON_FIDO2}'"
    );
    python.exists()
        && Command::new(python)
            .args(["-c", &check])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Makes (or reuses) the venv with python-fido2 and returns its interpreter.
///
/// # Errors
/// When `/usr/bin/python3` is missing, or making the venv or installing python-fido2 fails
/// (no network to PyPI, `python3-venv` missing).
pub fn fido2_venv(root: &Path) -> Result<PathBuf, Error> {
    let venv = target_dir(root).join("fido2-venv");
    let python = venv.join("bin").join("python");
    if ready(&python) {
        return Ok(python);
    }
    if !Path::new(SYSTEM_PYTHON).exists() {
        return Err(format!(
            "{SYSTEM_PYTHON} is missing (Debian's python3, with python3-venv and python3-pyscard)"
        )
        .into());
    }
    let mut make = Command::new(SYSTEM_PYTHON);
    make.args(["-m", "venv", "--system-site-packages"])
        .arg(&venv)
        .stdin(Stdio::null());
    if !run::status(&mut make)?.success() {
        return Err(format!("could not make the venv {}", venv.display()).into());
    }
    let mut install = Command::new(venv.join("bin").join("pip"));
    install
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("fido2=={PYTHON_FIDO2}"),
        ])
        .stdin(Stdio::null());
    if !run::status(&mut install)?.success() {
        return Err(format!("pip could not install fido2=={PYTHON_FIDO2} from PyPI").into());
    }
    if !ready(&python) {
        return Err(format!(
            "{} does not import fido2 {PYTHON_FIDO2} with pyscard (is python3-pyscard installed?)",
            python.display()
        )
        .into());
    }
    Ok(python)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_lives_in_the_target_directory() {
        let root = Path::new("/work/x");
        let dir = target_dir(root);
        assert!(dir.is_absolute());
        assert!(dir.ends_with("target") || env::var_os("CARGO_TARGET_DIR").is_some());
    }
}
