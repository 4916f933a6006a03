//! The workspace's structural rules, checked by reading the files as text.
//!
//! - `layering`: `token-core` depends on no workspace crate; no `driver-*` crate depends on
//!   another `driver-*` or on a `transport-*`; no `transport-*` depends on a `driver-*`. Every
//!   dependency section counts (normal, dev, build, per-target), with one exception: a
//!   driver's and a transport's *dev*-dependencies may name each other, so a driver's
//!   integration tests can run through real framing (CTAPHID reports, for instance). What a
//!   user of a driver links never includes a transport.
//! - `crate-docs`: a library crate's `src/lib.rs` (or `[lib] path`) starts with `//!` docs.
//! - `forbid-unsafe`: a library crate's root has `#![forbid(unsafe_code)]`, unless its
//!   `Cargo.toml` has a line `# tidy: allow-unsafe <reason>`.
//! - `workspace-lints`: every member's `Cargo.toml` has `[lints]` with `workspace = true`.
//! - `ignore-reason`: no `#[ignore]` without a reason (`#[ignore = "why"]`), in any `.rs`
//!   file of a member (also inside `cfg_attr`).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::manifest::{self, Member};
use crate::Error;

/// One broken rule.
#[derive(Debug)]
pub struct Violation {
    /// The file that breaks it.
    pub file: PathBuf,
    /// The 1-based line, where one applies.
    pub line: Option<usize>,
    /// The rule's name.
    pub rule: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file.display())?,
            None => write!(f, "{}: ", self.file.display())?,
        }
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// What a tidy run looked at and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Workspace members checked.
    pub crates: usize,
    /// `.rs` files scanned.
    pub source_files: usize,
    /// Every broken rule.
    pub violations: Vec<Violation>,
}

/// The marker line in a member's `Cargo.toml` that lets its library root go without
/// `#![forbid(unsafe_code)]`; a reason must follow it.
const ALLOW_UNSAFE: &str = "# tidy: allow-unsafe";

/// Checks every rule over the workspace at `root`, with paths in the report relative to it.
pub fn check(root: &Path) -> Result<Report, Error> {
    let members = manifest::members(root)?;
    let mut report = Report {
        crates: members.len(),
        ..Report::default()
    };
    let workspace_names: Vec<String> = members.iter().filter_map(|m| m.name.clone()).collect();
    let rel = |path: &Path| path.strip_prefix(root).unwrap_or(path).to_path_buf();

    for member in &members {
        let manifest_file = rel(&member.manifest_path());
        check_layering(member, &workspace_names, &manifest_file, &mut report);
        if !manifest::has_workspace_lints(&member.manifest) {
            report.violations.push(Violation {
                file: manifest_file.clone(),
                line: None,
                rule: "workspace-lints",
                detail: format!(
                    "{} has no `[lints]` section with `workspace = true`",
                    member.display_name()
                ),
            });
        }
        check_library_root(member, &manifest_file, &rel, &mut report)?;

        let mut files = Vec::new();
        rust_files(&member.dir, &mut files)?;
        files.sort();
        for file in files {
            report.source_files += 1;
            let text = fs::read_to_string(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            for (index, line) in text.lines().enumerate() {
                if ignore_without_reason(line) {
                    report.violations.push(Violation {
                        file: rel(&file),
                        line: Some(index + 1),
                        rule: "ignore-reason",
                        detail: format!(
                            "`{}` gives no reason: write `#[ignore = \"why\"]`",
                            line.trim()
                        ),
                    });
                }
            }
        }
    }
    Ok(report)
}

/// Which layer a crate is in, by name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layer {
    Core,
    Driver,
    Transport,
    Other,
}

fn layer(name: &str) -> Layer {
    if name == "token-core" {
        Layer::Core
    } else if name.starts_with("driver-") {
        Layer::Driver
    } else if name.starts_with("transport-") {
        Layer::Transport
    } else {
        Layer::Other
    }
}

/// Why `from` may not depend on `to` (both workspace crates) in a section of that kind
/// (`dev`: a dev-dependencies section), or `None` if it may.
fn forbidden_dependency(from: &str, to: &str, dev: bool) -> Option<&'static str> {
    match (layer(from), layer(to)) {
        (Layer::Driver, Layer::Transport) | (Layer::Transport, Layer::Driver) if dev => None,
        (Layer::Core, _) => Some("token-core depends on no workspace crate"),
        (Layer::Driver, Layer::Driver) => Some("a driver crate depends on no other driver crate"),
        (Layer::Driver, Layer::Transport) => Some("a driver crate depends on no transport crate"),
        (Layer::Transport, Layer::Driver) => Some("a transport crate depends on no driver crate"),
        _ => None,
    }
}

fn check_layering(
    member: &Member,
    workspace_names: &[String],
    manifest_file: &Path,
    report: &mut Report,
) {
    let Some(name) = member.name.as_deref() else {
        return;
    };
    for dep in manifest::dependencies(&member.manifest) {
        if dep.package == name || !workspace_names.contains(&dep.package) {
            continue;
        }
        let dev = dep.section.ends_with("dev-dependencies");
        if let Some(rule) = forbidden_dependency(name, &dep.package, dev) {
            report.violations.push(Violation {
                file: manifest_file.to_path_buf(),
                line: None,
                rule: "layering",
                detail: format!(
                    "{name} depends on {} in [{}]: {rule}",
                    dep.package, dep.section
                ),
            });
        }
    }
}

fn check_library_root(
    member: &Member,
    manifest_file: &Path,
    rel: &dyn Fn(&Path) -> PathBuf,
    report: &mut Report,
) -> Result<(), Error> {
    let lib = member
        .dir
        .join(manifest::lib_path(&member.manifest).unwrap_or_else(|| "src/lib.rs".to_string()));
    if !lib.is_file() {
        return Ok(()); // not a library crate
    }
    let text = fs::read_to_string(&lib).map_err(|e| format!("reading {}: {e}", lib.display()))?;
    let file = rel(&lib);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    if !first.is_some_and(|l| l.starts_with("//!")) {
        report.violations.push(Violation {
            file: file.clone(),
            line: None,
            rule: "crate-docs",
            detail: "a library root starts with `//!` crate documentation".into(),
        });
    }
    let forbids = text
        .lines()
        .any(|l| l.trim().replace(' ', "") == "#![forbid(unsafe_code)]");
    if !forbids {
        match allow_unsafe_reason(&member.manifest) {
            Some(reason) if !reason.is_empty() => {}
            Some(_) => report.violations.push(Violation {
                file: manifest_file.to_path_buf(),
                line: None,
                rule: "forbid-unsafe",
                detail: format!("`{ALLOW_UNSAFE}` needs a reason after it"),
            }),
            None => report.violations.push(Violation {
                file,
                line: None,
                rule: "forbid-unsafe",
                detail: format!(
                    "a library root has `#![forbid(unsafe_code)]` (or its Cargo.toml says \
                     `{ALLOW_UNSAFE} <reason>`)"
                ),
            }),
        }
    }
    Ok(())
}

/// The text after `# tidy: allow-unsafe` in a manifest, if the line is there.
fn allow_unsafe_reason(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        l.trim()
            .strip_prefix(ALLOW_UNSAFE)
            .map(|rest| rest.trim().to_string())
    })
}

/// Every `.rs` file under `dir`, leaving out `target` and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether `line` is an attribute line with an `ignore` that has no reason: `#[ignore]`,
/// `#[ignore = ""]`, or `ignore` inside `#[cfg_attr(..)]` without `= "why"`.
fn ignore_without_reason(line: &str) -> bool {
    let attribute = line.trim_start();
    if !attribute.starts_with("#[") {
        return false;
    }
    // Several attributes may share a line: look at each.
    attribute.split("#[").skip(1).any(|attr| {
        let attr = attr.trim_start();
        let body = if let Some(rest) = attr.strip_prefix("cfg_attr") {
            rest
        } else if attr.starts_with("ignore") {
            attr
        } else {
            return false;
        };
        bare_ignore(body)
    })
}

/// Scans attribute text outside string literals for the word `ignore` not followed by
/// `= "<non-empty>"`.
fn bare_ignore(body: &str) -> bool {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_string(&chars, i).0;
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "ignore" {
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) != Some(&'=') {
                    return true;
                }
                j += 1;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    return true;
                }
                let (end, content_len) = skip_string(&chars, j);
                if content_len == 0 {
                    return true;
                }
                i = end;
            }
            continue;
        }
        i += 1;
    }
    false
}

/// From an opening quote at `at`, the index after the closing one and the content length.
fn skip_string(chars: &[char], at: usize) -> (usize, usize) {
    let mut i = at + 1;
    let mut len = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                i += 2;
                len += 1;
            }
            '"' => return (i + 1, len),
            _ => {
                i += 1;
                len += 1;
            }
        }
    }
    (i, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ignore_without_reason() {
        let bad = [
            "#[ignore]",
            "    #[ignore]",
            "#[test] #[ignore]",
            "#[ignore = \"\"]",
            "#[cfg_attr(not(feature = \"stack\"), ignore)]",
        ];
        for line in bad {
            assert!(ignore_without_reason(line), "{line}");
        }
        let good = [
            "#[ignore = \"needs pcscd\"]",
            "#[ignore = \"we ignore this, see #12\"]",
            "#[cfg_attr(not(feature = \"stack\"), ignore = \"needs pcscd\")]",
            "// #[ignore]",
            "/// `#[ignore]` needs a reason",
            "let s = \"#[ignore]\";",
            "#[serde(skip)]",
            "#[test]",
            "#[cfg(ignore_me)]",
        ];
        for line in good {
            assert!(!ignore_without_reason(line), "{line}");
        }
    }

    #[test]
    fn layering_rules() {
        assert!(forbidden_dependency("token-core", "driver-piv", false).is_some());
        assert!(forbidden_dependency("token-core", "keychain-index", false).is_some());
        assert!(forbidden_dependency("driver-piv", "driver-openpgp", false).is_some());
        assert!(forbidden_dependency("driver-piv", "transport-pcsc", false).is_some());
        assert!(forbidden_dependency("transport-hid", "driver-fido2", false).is_some());
        assert!(forbidden_dependency("driver-piv", "token-core", false).is_none());
        assert!(forbidden_dependency("transport-pcsc", "token-core", false).is_none());
        assert!(forbidden_dependency("tokenctl", "driver-piv", false).is_none());
        assert!(forbidden_dependency("keychain-index", "token-core", false).is_none());
        // Dev-dependencies: drivers and transports may test through each other; the core
        // still depends on nothing of ours, and drivers on no other driver.
        assert!(forbidden_dependency("driver-fido2", "transport-hid", true).is_none());
        assert!(forbidden_dependency("transport-hid", "driver-fido2", true).is_none());
        assert!(forbidden_dependency("driver-piv", "driver-openpgp", true).is_some());
        assert!(forbidden_dependency("token-core", "transport-pcsc", true).is_some());
    }

    /// A small workspace on disk that breaks each rule once.
    #[test]
    fn reports_each_rule_with_its_file() -> Result<(), Error> {
        let dir = crate::pcscd::TempDir::new("tidy-test")?;
        let root = dir.path();
        let write = |path: &str, text: &str| -> Result<(), Error> {
            let path = root.join(path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, text)?;
            Ok(())
        };
        let lints = "\n[lints]\nworkspace = true\n";
        let good_lib = "//! Docs.\n\n#![forbid(unsafe_code)]\n";
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\n  \"token-core\", # core\n  \"driver-a\",\n  \"transport-b\",\n  \"tool\",\n]\n",
        )?;
        write(
            "token-core/Cargo.toml",
            &format!("[package]\nname = \"token-core\"\n\n[dev-dependencies]\ndriver-a = {{ path = \"../driver-a\" }}\n{lints}"),
        )?;
        write("token-core/src/lib.rs", good_lib)?;
        write(
            "driver-a/Cargo.toml",
            &format!("[package]\nname = \"driver-a\"\n\n[dependencies]\ntoken-core.workspace = true\ntransport-b.workspace = true\n\n[dev-dependencies]\ntransport-b.workspace = true\n{lints}"),
        )?;
        write(
            "driver-a/src/lib.rs",
            "#![forbid(unsafe_code)]\n//! Docs too late.\n",
        )?;
        write(
            "transport-b/Cargo.toml",
            "[package]\nname = \"transport-b\"\n# tidy: allow-unsafe talks to a C library\n\n[dependencies]\ntoken-core.workspace = true\n",
        )?;
        write("transport-b/src/lib.rs", "//! Docs.\n")?;
        write("transport-b/tests/t.rs", "#[test]\n#[ignore]\nfn t() {}\n")?;
        write(
            "tool/Cargo.toml",
            &format!(
                "[package]\nname = \"tool\"\n[dependencies]\ndriver-a.workspace = true\n{lints}"
            ),
        )?;
        write("tool/src/main.rs", "fn main() {}\n")?;
        write("tool/target/x.rs", "#[ignore]\n")?;

        let report = check(root)?;
        let found: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        let expected = [
            "token-core/Cargo.toml: [layering] token-core depends on driver-a in [dev-dependencies]",
            "driver-a/Cargo.toml: [layering] driver-a depends on transport-b in [dependencies]",
            "driver-a/src/lib.rs: [crate-docs]",
            "transport-b/Cargo.toml: [workspace-lints]",
            "transport-b/tests/t.rs:2: [ignore-reason]",
        ];
        for want in expected {
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        assert_eq!((report.crates, report.source_files), (4, 5));
        Ok(())
    }

    #[test]
    fn allow_unsafe_needs_its_marker() {
        assert_eq!(
            allow_unsafe_reason("[package]\n# tidy: allow-unsafe FFI to hidapi\n").as_deref(),
            Some("FFI to hidapi")
        );
        assert_eq!(
            allow_unsafe_reason("# tidy: allow-unsafe\n").as_deref(),
            Some("")
        );
        assert_eq!(allow_unsafe_reason("[package]\n"), None);
    }
}
