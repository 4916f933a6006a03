//! `cargo xtask test`, `demo` and `bench`: steps with headers, durations and a summary.

use std::env;
use std::path::Path;
use std::process::{ExitCode, ExitStatus};
use std::time::Instant;

use crate::{deps, manifest, pcscd, run, Error};

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything it counted passed.
    Ok,
    /// Something failed.
    Failed,
    /// It did not run (and counts nothing).
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

/// What a step counted: tests, or checks (a check is a whole step such as fmt, or one stack
/// check, counted as one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Tests and checks passed.
    pub passed: u64,
    /// Tests and checks failed.
    pub failed: u64,
    /// A few words for the summary.
    pub note: String,
}

impl Outcome {
    /// Nothing counted yet.
    pub fn empty() -> Self {
        Self {
            status: Status::Ok,
            passed: 0,
            failed: 0,
            note: String::new(),
        }
    }

    /// One check.
    pub fn check(ok: bool, note: impl Into<String>) -> Self {
        let mut outcome = Self::empty();
        outcome.add_check(ok);
        outcome.note = note.into();
        outcome
    }

    /// `count` checks that failed.
    pub fn failed(count: u64, note: impl Into<String>) -> Self {
        Self {
            status: Status::Failed,
            passed: 0,
            failed: count,
            note: note.into(),
        }
    }

    /// Did not run.
    pub fn skipped(note: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped,
            passed: 0,
            failed: 0,
            note: note.into(),
        }
    }

    /// Counts one more check.
    pub fn add_check(&mut self, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.status = Status::Failed;
        }
    }

    /// Adds another outcome's counts.
    pub fn merge(&mut self, other: &Outcome) {
        self.passed += other.passed;
        self.failed += other.failed;
        if other.status == Status::Failed {
            self.status = Status::Failed;
        }
    }

    /// Failed if anything failed.
    pub fn settle(mut self) -> Self {
        if self.failed > 0 {
            self.status = Status::Failed;
        }
        self
    }

    /// From a test run's exit and output: its tests if it printed libtest summaries (plus one
    /// failure if it exited non-zero with no failed test, as when a build fails half-way),
    /// else one check.
    pub fn from_tests(exit_ok: bool, output: &str) -> Self {
        let counts = run::parse_test_results(output);
        if counts.binaries == 0 {
            let note = if exit_ok {
                "no libtest output"
            } else {
                "failed before running any test"
            };
            return Self::check(exit_ok, note);
        }
        let extra = u64::from(!exit_ok && counts.failed == 0);
        Self {
            status: Status::Ok,
            passed: counts.passed,
            failed: counts.failed + extra,
            note: format!(
                "{} tests passed, {} failed, {} ignored, in {} test binaries{}",
                counts.passed,
                counts.failed,
                counts.ignored,
                counts.binaries,
                if extra == 1 { "; exited non-zero" } else { "" }
            ),
        }
        .settle()
    }
}

/// One finished step.
struct Record {
    name: &'static str,
    outcome: Outcome,
    secs: f64,
}

/// Runs the steps in order, each whatever happened before.
struct Steps {
    total: usize,
    records: Vec<Record>,
}

impl Steps {
    fn new(total: usize) -> Self {
        Self {
            total,
            records: Vec::new(),
        }
    }

    fn run(
        &mut self,
        name: &'static str,
        title: &str,
        body: impl FnOnce() -> Result<Outcome, Error>,
    ) -> &Outcome {
        let index = self.records.len() + 1;
        println!();
        println!("==== [{index}/{}] {name}: {title}", self.total);
        run::flush();
        let started = Instant::now();
        let outcome = body().unwrap_or_else(|error| {
            println!("!!! {name}: {error}");
            Outcome::check(false, error.to_string())
        });
        let secs = started.elapsed().as_secs_f64();
        let note = if outcome.note.is_empty() {
            String::new()
        } else {
            format!(": {}", outcome.note)
        };
        println!(
            "==== {name}: {} in {secs:.1} s{note}",
            outcome.status.word()
        );
        run::flush();
        self.records.push(Record {
            name,
            outcome,
            secs,
        });
        &self.records[index - 1].outcome
    }

    /// Prints the table and the closing `N passed, N failed` line; the exit code.
    fn summary(&self) -> ExitCode {
        let passed: u64 = self.records.iter().map(|r| r.outcome.passed).sum();
        let failed: u64 = self.records.iter().map(|r| r.outcome.failed).sum();
        println!();
        println!("==== summary");
        println!(
            "{:<8} {:<8} {:>8} {:>7} {:>7}  note",
            "step", "status", "seconds", "passed", "failed"
        );
        for r in &self.records {
            println!(
                "{:<8} {:<8} {:>8.1} {:>7} {:>7}  {}",
                r.name,
                r.outcome.status.word(),
                r.secs,
                r.outcome.passed,
                r.outcome.failed,
                r.outcome.note
            );
        }
        let total: f64 = self.records.iter().map(|r| r.secs).sum();
        println!("{:<8} {:<8} {total:>8.1}", "total", "");
        println!("{passed} passed, {failed} failed");
        run::flush();
        if failed == 0
            && !self
                .records
                .iter()
                .any(|r| r.outcome.status == Status::Failed)
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// One check from a command's exit status.
fn checked(status: ExitStatus) -> Outcome {
    if status.success() {
        Outcome::check(true, "")
    } else {
        Outcome::check(false, format!("{status}"))
    }
}

/// `cargo xtask test`.
pub fn test(root: &Path) -> ExitCode {
    let mut steps = Steps::new(6);
    steps.run(
        "deps",
        "system packages for the build and the stack tests",
        deps::step,
    );
    steps.run("fmt", "formatting", || {
        Ok(checked(run::status(
            run::cargo(root).args(["fmt", "--all", "--check"]),
        )?))
    });
    steps.run("clippy", "lints, warnings denied", || {
        Ok(checked(run::status(run::cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?))
    });
    steps.run(
        "test",
        "unit, property, in-process driver and doc tests",
        || {
            // --no-fail-fast: every test binary runs, so the counts are complete.
            let (status, output) = run::tee(run::cargo(root).args([
                "test",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ]))?;
            Ok(Outcome::from_tests(status.success(), &output))
        },
    );
    steps.run("doc", "documentation, warnings denied", || {
        let flags = match env::var("RUSTDOCFLAGS") {
            Ok(existing) if !existing.trim().is_empty() => format!("{existing} -D warnings"),
            _ => "-D warnings".to_string(),
        };
        Ok(checked(run::status(
            run::cargo(root)
                .args(["doc", "--workspace", "--no-deps", "--all-features"])
                .env("RUSTDOCFLAGS", flags),
        )?))
    });
    steps.run(
        "stack",
        "stack tests through a private pcscd with vpcd",
        || pcscd::step(root, &[]),
    );
    steps.summary()
}

/// `cargo xtask stack [SUITE..]`: the stack step alone, all suites or the named ones.
pub fn stack(root: &Path, suites: &[String]) -> ExitCode {
    let mut steps = Steps::new(1);
    steps.run(
        "stack",
        "stack tests through a private pcscd with vpcd",
        || pcscd::step(root, suites),
    );
    steps.summary()
}

/// The exit code of a child, for passing it on.
fn pass_on(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        None => ExitCode::FAILURE,
    }
}

/// The deps step on its own, for demo and bench: whether to go on.
fn deps_first(total: usize) -> bool {
    let mut steps = Steps::new(total);
    let outcome = steps.run("deps", "system packages", deps::step);
    if outcome.status == Status::Failed {
        println!("xtask: the workspace cannot build without those packages; stopping");
        false
    } else {
        true
    }
}

/// `cargo xtask demo`.
pub fn demo(root: &Path) -> Result<ExitCode, Error> {
    if !deps_first(2) {
        return Ok(ExitCode::FAILURE);
    }
    let members = manifest::members(root)?;
    if !members
        .iter()
        .any(|m| m.name.as_deref() == Some("tokenctl"))
    {
        let names: Vec<&str> = members.iter().map(|m| m.display_name()).collect();
        println!();
        println!(
            "xtask demo: the workspace has no `tokenctl` package yet (members: {}), so there \
             is no demo to run",
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!();
    println!("==== [2/2] demo: tokenctl demo");
    // Where a private pcscd can run, a simulated security key (PIV and OpenPGP on one card)
    // sits in its virtual reader during the demo, so the demo shows those tokens too.
    let missing = pcscd::missing_prerequisites();
    if !missing.is_empty() {
        println!(
            "(no private pcscd: {}; the demo shows the soft token only)",
            missing.join("; ")
        );
        let status =
            run::status(run::cargo(root).args(["run", "--quiet", "-p", "tokenctl", "--", "demo"]))?;
        return Ok(pass_on(status));
    }
    let mut daemon = pcscd::PrivatePcscd::start()?;
    let script = "cargo build --quiet -p tokenctl || exit 1; \
                  cargo run --quiet -p tokenctl -- sim multi 2>/dev/null & SIM=$!; \
                  sleep 2; \
                  cargo run --quiet -p tokenctl -- demo; rc=$?; \
                  kill $SIM 2>/dev/null; wait $SIM 2>/dev/null; exit $rc";
    let status =
        run::status(&mut daemon.command(root, script, std::time::Duration::from_secs(1800)));
    daemon.stop()?;
    Ok(pass_on(status?))
}

/// `cargo xtask bench [ARGS]`.
pub fn bench(root: &Path, extra: &[String]) -> Result<ExitCode, Error> {
    if !deps_first(2) {
        return Ok(ExitCode::FAILURE);
    }
    println!();
    println!("==== [2/2] bench");
    // Benchmarks through PC/SC (a PIV signature beside the bare pcsc crate) need a pcscd with
    // the vpcd reader: run the whole bench inside a private one when this machine allows it.
    let missing = pcscd::missing_prerequisites();
    if !missing.is_empty() {
        println!(
            "no private pcscd ({}): the PC/SC benchmarks will say they did not run",
            missing.join("; ")
        );
        let status = run::status(run::cargo(root).args(["bench", "--workspace"]).args(extra))?;
        return Ok(pass_on(status));
    }
    let mut daemon = pcscd::PrivatePcscd::start()?;
    let mut script = String::from("cargo bench --workspace");
    for arg in extra {
        script.push_str(" '");
        script.push_str(&arg.replace('\'', "'\\''"));
        script.push('\'');
    }
    let status =
        run::status(&mut daemon.command(root, &script, std::time::Duration::from_secs(3 * 3600)));
    daemon.stop()?;
    Ok(pass_on(status?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tests_or_one_check() {
        let ok = "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let outcome = Outcome::from_tests(true, ok);
        assert_eq!(
            (outcome.status, outcome.passed, outcome.failed),
            (Status::Ok, 4, 0)
        );

        // Tests passed but the run failed (a later binary did not build): one failure more.
        let outcome = Outcome::from_tests(false, ok);
        assert_eq!(
            (outcome.status, outcome.passed, outcome.failed),
            (Status::Failed, 4, 1)
        );

        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured\n";
        let outcome = Outcome::from_tests(false, bad);
        assert_eq!(
            (outcome.status, outcome.passed, outcome.failed),
            (Status::Failed, 3, 2)
        );

        let outcome = Outcome::from_tests(false, "error[E0425]: cannot find value\n");
        assert_eq!(
            (outcome.status, outcome.passed, outcome.failed),
            (Status::Failed, 0, 1)
        );

        let outcome = Outcome::from_tests(true, "all good\n");
        assert_eq!(
            (outcome.status, outcome.passed, outcome.failed),
            (Status::Ok, 1, 0)
        );
    }

    #[test]
    fn skipped_counts_nothing() {
        let mut total = Outcome::empty();
        total.merge(&Outcome::skipped("no pcscd"));
        assert_eq!(
            (total.passed, total.failed, total.status),
            (0, 0, Status::Ok)
        );
        total.merge(&Outcome::failed(2, "x"));
        assert_eq!((total.failed, total.status), (2, Status::Failed));
    }
}
