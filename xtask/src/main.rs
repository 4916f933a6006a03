//! # xtask
//!
//! tokenkit's automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the project's one test command, and what CI runs (`.ci/run`). Steps:
//!   `deps` (system packages, installed with apt when running as root on Debian or Ubuntu),
//!   `fmt`, `clippy`, `test`, `doc`, and `stack` (the stack suites through a private pcscd with
//!   vpcd, see [`pcscd`]). Every step runs even after a failure; the last line printed is
//!   `N passed, N failed`, and any failure makes the exit code 1.
//! - `cargo xtask demo`: the deps step, then `cargo run -p tokenctl -- demo`.
//! - `cargo xtask bench [ARGS]`: the deps step, then `cargo bench --workspace ARGS`.
//! - `cargo xtask stack`: the stack step of `test` alone, for work on the stack suites.
//! - `cargo xtask tidy`: the workspace's structural rules (see [`tidy`]), also run as a
//!   `#[test]` so that `cargo test --workspace` enforces them.
//!
//! xtask uses std alone: it must build and run on a machine that has nothing but Rust, since
//! installing the rest is its first job.
//!
//! Environment: `CI=true` makes a stack test that cannot run a failure rather than a skip;
//! `TOKENKIT_SKIP_DEPS=1` skips the deps step.

#![forbid(unsafe_code)]

mod deps;
mod manifest;
mod pcscd;
mod pipeline;
mod python;
mod run;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The error type of every fallible xtask function: a message is all a binary needs.
type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test            deps, fmt, clippy, test, doc and the pcscd stack tests; what CI runs
  demo            deps, then `cargo run -p tokenctl -- demo`
  bench [ARGS]    deps, then `cargo bench --workspace ARGS`
  stack [SUITE..] only the stack step of `test` (private pcscd, smoke check, stack suites;
                  just the named suites if any are given)
  tidy            check the workspace's structural rules
  help            this text

environment:
  CI=true               a stack test that cannot run (no pcscd, not root) fails instead of skipping
  TOKENKIT_SKIP_DEPS=1  skip the system-package step";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Test,
    Stack(Vec<String>),
    Demo,
    Bench(Vec<String>),
    Tidy,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some((first, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    let no_more = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{first}` takes no arguments, got {rest:?}"))
        }
    };
    match first.as_str() {
        "test" => no_more(Command::Test),
        "stack" => Ok(Command::Stack(rest.to_vec())),
        "demo" => no_more(Command::Demo),
        "tidy" => no_more(Command::Tidy),
        "bench" => Ok(Command::Bench(rest.to_vec())),
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Test => Ok(pipeline::test(&root)),
        Command::Stack(suites) => Ok(pipeline::stack(&root, &suites)),
        Command::Demo => pipeline::demo(&root),
        Command::Bench(extra) => pipeline::bench(&root, &extra),
        Command::Tidy => tidy_command(&root),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn tidy_command(root: &Path) -> Result<ExitCode, Error> {
    let report = tidy::check(root)?;
    for violation in &report.violations {
        eprintln!("{violation}");
    }
    if report.violations.is_empty() {
        println!(
            "tidy: {} crates, {} source files: all rules hold",
            report.crates, report.source_files
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("tidy: {} violation(s)", report.violations.len());
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn parses_the_commands() {
        assert_eq!(parse_args(&strings(&["test"])), Ok(Command::Test));
        assert_eq!(parse_args(&strings(&["tidy"])), Ok(Command::Tidy));
        assert_eq!(
            parse_args(&strings(&["bench", "--", "--save-baseline", "a"])),
            Ok(Command::Bench(strings(&["--", "--save-baseline", "a"])))
        );
        assert!(parse_args(&strings(&["test", "extra"])).is_err());
        assert_eq!(
            parse_args(&strings(&["stack", "piv-tools"])),
            Ok(Command::Stack(strings(&["piv-tools"])))
        );
        assert!(parse_args(&strings(&["frobnicate"])).is_err());
        assert!(parse_args(&[]).is_err());
    }

    /// The workspace's structural rules, so that plain `cargo test --workspace` enforces them.
    #[test]
    fn workspace_is_tidy() {
        match tidy::check(&workspace_root()) {
            Ok(report) => {
                let listed: Vec<String> =
                    report.violations.iter().map(ToString::to_string).collect();
                assert!(
                    listed.is_empty(),
                    "tidy found {} violation(s):\n{}",
                    listed.len(),
                    listed.join("\n")
                );
                assert!(
                    report.crates >= 2,
                    "tidy found only {} crates",
                    report.crates
                );
            }
            Err(error) => panic!("tidy could not read the workspace: {error}"),
        }
    }
}
