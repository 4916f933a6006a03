//! Just enough reading of `Cargo.toml` files, as text, for tidy and for finding packages.
//!
//! No toml crate: xtask builds from std alone. The manifests are ours and written the ordinary
//! way, so a line-oriented reading (comments, `[section]` headers, `key = value` lines, a
//! multi-line `members = [...]` array) is enough.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// One workspace member.
#[derive(Debug)]
pub struct Member {
    /// The member's directory, as written in the root manifest (`token-core`).
    pub rel: String,
    /// Its absolute directory.
    pub dir: PathBuf,
    /// The text of its `Cargo.toml`.
    pub manifest: String,
    /// `[package] name`, if it has one.
    pub name: Option<String>,
}

impl Member {
    /// The member's `Cargo.toml` path.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("Cargo.toml")
    }

    /// The name to show: the package name, else the directory.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.rel)
    }
}

/// Reads the root manifest and every member's manifest.
pub fn members(root: &Path) -> Result<Vec<Member>, Error> {
    let root_manifest = root.join("Cargo.toml");
    let text = fs::read_to_string(&root_manifest)
        .map_err(|e| format!("reading {}: {e}", root_manifest.display()))?;
    let mut out = Vec::new();
    for entry in workspace_members(&text) {
        for rel in expand_glob(root, &entry)? {
            let dir = root.join(&rel);
            let path = dir.join("Cargo.toml");
            let manifest = fs::read_to_string(&path)
                .map_err(|e| format!("reading {} (a workspace member): {e}", path.display()))?;
            let name = package_name(&manifest);
            out.push(Member {
                rel,
                dir,
                manifest,
                name,
            });
        }
    }
    Ok(out)
}

/// `members = [...]` of the `[workspace]` section, in order.
pub fn workspace_members(root_manifest: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut collecting = false;
    let mut array = String::new();
    for raw in root_manifest.lines() {
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if collecting {
            array.push_str(trimmed);
            array.push(' ');
            if trimmed.contains(']') {
                break;
            }
            continue;
        }
        if let Some(header) = section_header(trimmed) {
            in_workspace = header == "workspace";
            continue;
        }
        if in_workspace {
            if let Some((key, value)) = trimmed.split_once('=') {
                if key.trim() == "members" {
                    array.push_str(value.trim());
                    array.push(' ');
                    if value.contains(']') {
                        break;
                    }
                    collecting = true;
                }
            }
        }
    }
    quoted_strings(&array)
}

/// `dir/*` lists the subdirectories of `dir` that hold a `Cargo.toml`; anything else is itself.
fn expand_glob(root: &Path, entry: &str) -> Result<Vec<String>, Error> {
    let Some(parent) = entry.strip_suffix("/*") else {
        return Ok(vec![entry.to_string()]);
    };
    let mut found = Vec::new();
    let dir = root.join(parent);
    for item in fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
        let item = item?;
        if item.path().join("Cargo.toml").is_file() {
            found.push(format!("{parent}/{}", item.file_name().to_string_lossy()));
        }
    }
    found.sort();
    Ok(found)
}

/// `[package] name = "..."`.
pub fn package_name(manifest: &str) -> Option<String> {
    section_value(manifest, "package", "name")
}

/// `[lib] path = "..."`, if set.
pub fn lib_path(manifest: &str) -> Option<String> {
    section_value(manifest, "lib", "path")
}

/// Whether the manifest has `[lints]` with `workspace = true`.
pub fn has_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for raw in manifest.lines() {
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if let Some(header) = section_header(trimmed) {
            in_lints = header == "lints";
            continue;
        }
        if in_lints {
            if let Some((key, value)) = trimmed.split_once('=') {
                if key.trim() == "workspace" && value.trim() == "true" {
                    return true;
                }
            }
        }
    }
    false
}

/// One dependency declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The package depended on (after `package = "..."` renaming).
    pub package: String,
    /// The section it is declared in, e.g. `dev-dependencies`.
    pub section: String,
}

/// Every dependency in `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, their
/// `[target.'cfg(..)'.*]` forms, and the `[dependencies.NAME]` table form.
pub fn dependencies(manifest: &str) -> Vec<Dependency> {
    let mut out = Vec::new();
    // The current section: not a dependency section, a list of them, or one `[x.NAME]` table.
    enum Current {
        Other,
        List(String),
        Table {
            section: String,
            key: String,
            package: Option<String>,
        },
    }
    fn finish(current: Current, out: &mut Vec<Dependency>) {
        if let Current::Table {
            section,
            key,
            package,
        } = current
        {
            out.push(Dependency {
                package: package.unwrap_or(key),
                section,
            });
        }
    }
    let mut current = Current::Other;
    for raw in manifest.lines() {
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if let Some(header) = section_header(trimmed) {
            finish(std::mem::replace(&mut current, Current::Other), &mut out);
            let parts = split_dotted(&header);
            let kind_at = parts.iter().position(|p| is_dependency_kind(p));
            current = match kind_at {
                Some(i) if i == 0 || (i == 2 && parts[0] == "target") => {
                    let section = parts[..=i].join(".");
                    match parts.get(i + 1) {
                        Some(key) if parts.len() == i + 2 => Current::Table {
                            section,
                            key: key.clone(),
                            package: None,
                        },
                        Some(_) => Current::Other,
                        None => Current::List(section),
                    }
                }
                _ => Current::Other,
            };
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        let key_parts = split_dotted(key);
        let Some(first) = key_parts.first() else {
            continue;
        };
        if !is_bare_key(first) {
            continue;
        }
        match &mut current {
            Current::Other => {}
            Current::List(section) => {
                let package = if key_parts.len() == 1 {
                    inline_string(value, "package")
                } else {
                    None
                };
                out.push(Dependency {
                    package: package.unwrap_or_else(|| first.clone()),
                    section: section.clone(),
                });
            }
            Current::Table { package, .. } => {
                if key_parts.len() == 1 && first == "package" {
                    *package = quoted_strings(value).into_iter().next();
                }
            }
        }
    }
    finish(current, &mut out);
    // `foo.workspace = true` and `foo.features = [..]` name the same dependency twice.
    out.dedup();
    out
}

fn is_dependency_kind(part: &str) -> bool {
    matches!(
        part,
        "dependencies" | "dev-dependencies" | "build-dependencies"
    )
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The value of `key` in `[section]`, when it is a plain string.
fn section_value(manifest: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for raw in manifest.lines() {
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if let Some(header) = section_header(trimmed) {
            inside = header == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = trimmed.split_once('=') {
                if k.trim() == key {
                    return quoted_strings(v).into_iter().next();
                }
            }
        }
    }
    None
}

/// `[name]` gives `name`; `[[name]]` gives `[name]` so that it never equals a plain section.
fn section_header(trimmed: &str) -> Option<String> {
    let inner = trimmed.strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.trim().to_string())
}

/// Removes a `#` comment, minding quoted strings.
pub fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => return &line[..i],
                _ => {}
            },
        }
    }
    line
}

/// Splits `a."b.c".d` into `a`, `b.c`, `d`.
fn split_dotted(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None => match c {
                '"' | '\'' => quote = Some(c),
                '.' => parts.push(std::mem::take(&mut current).trim().to_string()),
                _ => current.push(c),
            },
        }
    }
    parts.push(current.trim().to_string());
    parts
}

/// Every `"..."` or `'...'` string in `s`, unescaped only for `\"` and `\\`.
fn quoted_strings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' && c != '\'' {
            continue;
        }
        let mut value = String::new();
        let mut escaped = false;
        for d in chars.by_ref() {
            if escaped {
                value.push(d);
                escaped = false;
            } else if d == '\\' && c == '"' {
                escaped = true;
            } else if d == c {
                break;
            } else {
                value.push(d);
            }
        }
        out.push(value);
    }
    out
}

/// The string value of `key` inside an inline table such as `{ path = "x", package = "y" }`.
fn inline_string(value: &str, key: &str) -> Option<String> {
    let inner = value.trim().strip_prefix('{')?;
    let mut rest = inner;
    while let Some(at) = rest.find(key) {
        let before_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c == '{' || c == ',' || c.is_whitespace());
        let after = rest[at + key.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                return quoted_strings(v).into_iter().next();
            }
        }
        rest = &rest[at + key.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "[workspace]\nresolver = \"2\"\nmembers = [\n    \"token-core\",     # the floor, with a ] in a comment\n    \"driver-piv\",\n    'xtask',\n]\n\n[workspace.dependencies]\nmembers = \"not this\"\n";

    #[test]
    fn reads_multiline_members() {
        assert_eq!(
            workspace_members(ROOT),
            vec!["token-core", "driver-piv", "xtask"]
        );
        assert_eq!(
            workspace_members("[workspace]\nmembers = [\"a\", \"b\"]\n"),
            vec!["a", "b"]
        );
    }

    #[test]
    fn reads_dependencies_in_all_forms() {
        let manifest = "[package]\nname = \"driver-x\" # a comment\n\n[dependencies]\ntoken-core.workspace = true\ntoken-core.features = [\"testkit\"]\nrenamed = { package = \"transport-pcsc\", path = \"../transport-pcsc\" }\nserde = { version = \"1\", features = [\n  \"derive\",\n] }\n\n[target.'cfg(unix)'.dev-dependencies]\ndriver-piv = { path = \"../driver-piv\" }\n\n[build-dependencies.cc2]\npackage = \"driver-openpgp\"\nversion = \"1\"\n\n[features]\nsimulator = [\"dep:serde\"]\n";
        let deps = dependencies(manifest);
        let names: Vec<(&str, &str)> = deps
            .iter()
            .map(|d| (d.package.as_str(), d.section.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("token-core", "dependencies"),
                ("transport-pcsc", "dependencies"),
                ("serde", "dependencies"),
                ("driver-piv", "target.cfg(unix).dev-dependencies"),
                ("driver-openpgp", "build-dependencies"),
            ]
        );
        assert_eq!(package_name(manifest).as_deref(), Some("driver-x"));
    }

    #[test]
    fn reads_lints_and_lib_path() {
        assert!(has_workspace_lints(
            "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n"
        ));
        assert!(!has_workspace_lints(
            "[package]\nname = \"a\"\nworkspace = true\n[lints.rust]\nworkspace = true\n"
        ));
        assert!(!has_workspace_lints("[lints]\n# workspace = true\n"));
        assert_eq!(
            lib_path("[lib]\npath = \"src/core.rs\"\n").as_deref(),
            Some("src/core.rs")
        );
    }

    #[test]
    fn strips_comments_outside_strings() {
        assert_eq!(strip_comment("a = \"#x\" # c"), "a = \"#x\" ");
        assert_eq!(strip_comment("# all"), "");
    }
}
