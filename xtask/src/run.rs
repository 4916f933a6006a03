//! Running child processes: printing what runs, teeing output, finding programs, parsing
//! libtest's summary lines.

use std::env;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::Error;

/// `cargo`, as the one that started us (cargo sets `CARGO` for `cargo run`), in `root`.
pub fn cargo(root: &Path) -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    // `cargo run` set this for xtask itself; build scripts that watch it (ring's does) would
    // rebuild every time a build alternates between xtask and a shell.
    cmd.current_dir(root).env_remove("CARGO_MANIFEST_DIR");
    cmd
}

/// The command line, for the log: `cargo fmt --all --check`.
pub fn describe(cmd: &Command) -> String {
    let mut text = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            text.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
    }
    let program = Path::new(cmd.get_program());
    // Show `cargo`, not the toolchain's full path to it.
    let shown = if program.file_name().is_some_and(|n| n == "cargo") {
        "cargo".to_string()
    } else {
        program.to_string_lossy().into_owned()
    };
    text.push_str(&shown);
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    text
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited output, printing it first.
pub fn status(cmd: &mut Command) -> Result<ExitStatus, Error> {
    println!("$ {}", describe(cmd));
    flush();
    cmd.status()
        .map_err(|e| format!("could not start `{}`: {e}", describe(cmd)).into())
}

/// Runs `cmd`, passing its standard output through as it comes and keeping a copy; standard
/// error is inherited. Standard input is closed.
pub fn tee(cmd: &mut Command) -> Result<(ExitStatus, String), Error> {
    println!("$ {}", describe(cmd));
    flush();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start `{}`: {e}", describe(cmd)))?;
    let mut captured = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        let out = io::stdout();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut lock = out.lock();
            // A closed stdout of ours must not stop the child's run: keep reading.
            let _ = lock.write_all(&buf[..n]).and_then(|()| lock.flush());
            captured.extend_from_slice(&buf[..n]);
        }
    }
    let status = child.wait()?;
    Ok((status, String::from_utf8_lossy(&captured).into_owned()))
}

/// Flushes standard output so that our lines come before a child's.
pub fn flush() {
    let _ = io::stdout().flush();
}

/// The first executable file named `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Our user ID, from `id -u`; `None` if that cannot be run.
pub fn user_id() -> Option<u32> {
    let output = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Whether `CI` is set to something true (`true`, `1`, `yes`).
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !v.is_empty() && v != "false" && v != "0" && v != "no"
    })
}

/// The sum of libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    /// `test result:` lines seen (one per test binary and one per crate's doc tests).
    pub binaries: u64,
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
    /// Tests ignored.
    pub ignored: u64,
}

/// Sums every `test result: ok. 3 passed; 0 failed; 1 ignored; ...` (or `FAILED.`) line.
pub fn parse_test_results(output: &str) -> TestCounts {
    let mut counts = TestCounts::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let Some((_verdict, fields)) = rest.split_once(". ") else {
            continue;
        };
        counts.binaries += 1;
        for field in fields.split(';') {
            let mut words = field.split_whitespace();
            let (Some(number), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => counts.passed += number,
                "failed" => counts.failed += number,
                "ignored" => counts.ignored += number,
                _ => {}
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_test_result_lines() {
        let output = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests token_core
test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
not a test result: ok. 9 passed; 9 failed
";
        assert_eq!(
            parse_test_results(output),
            TestCounts {
                binaries: 3,
                passed: 8,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("--all"), "--all");
        assert_eq!(shell_quote("-D warnings"), "'-D warnings'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
