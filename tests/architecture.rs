//! The code's own structure rules, checked over `src/`: which module may do what.
//!
//! Each rule is a table row: a pattern, and the only files where it may appear. The import
//! cycles between top-level modules are checked by `scripts/check-module-cycles.sh`.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    out.into_iter()
        .map(|(p, t)| (p.strip_prefix(root).unwrap().to_path_buf(), t))
        .collect()
}

/// The part of a file outside its `#[cfg(test)]` module (a test module is last by convention).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Files (relative to the crate) where `pattern` appears outside test code, minus the allowed.
fn offenders(pattern: &str, allowed: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(path, text)| {
            let p = path.to_string_lossy();
            !p.ends_with("/tests.rs")
                && !allowed.iter().any(|a| p.starts_with(a))
                && without_tests(text).contains(pattern)
        })
        .map(|(path, _)| path.display().to_string())
        .collect()
}

#[test]
fn each_capability_lives_in_one_module() {
    // (what, pattern, the only places it may appear)
    let rules: &[(&str, &str, &[&str])] = &[
        (
            "an HTTP client is built by egress (providers, dependents) or the Vault transport",
            "Client::builder",
            &["src/egress.rs", "src/vault/http.rs"],
        ),
        (
            "only the vault module speaks to Vault (its token header)",
            "X-Vault-",
            &["src/vault/"],
        ),
        (
            "only egress and vault name reqwest's redirect policy",
            "redirect::Policy",
            &["src/egress.rs", "src/vault/http.rs"],
        ),
        (
            "anyhow is the binary's edge only",
            "anyhow",
            &["src/main.rs"],
        ),
        (
            "a process is spawned by the process module only",
            "Command::new",
            &["src/process.rs"],
        ),
    ];
    let mut broken = Vec::new();
    for (what, pattern, allowed) in rules {
        let found = offenders(pattern, allowed);
        if !found.is_empty() {
            broken.push(format!("{what}: `{pattern}` also in {}", found.join(", ")));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_source_file_is_over_800_lines_outside_its_tests() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(path, _)| !path.to_string_lossy().ends_with("/tests.rs"))
        .map(|(path, text)| (path, without_tests(text).lines().count()))
        .filter(|(_, lines)| *lines > 800)
        .map(|(path, lines)| format!("{} has {lines} lines", path.display()))
        .collect();
    assert!(long.is_empty(), "split these files: {}", long.join(", "));
}
