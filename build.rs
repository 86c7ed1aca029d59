//! Records the git commit the binary is built from, for `--version`: `git rev-parse --short HEAD`
//! in a git checkout of this crate; from a crate tarball, the commit cargo wrote into
//! `.cargo_vcs_info.json`; otherwise "unknown commit". `SECRET_ROTATOR_GIT_COMMIT` overrides all
//! three (for packagers building from an exported tree).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The short commit of the checkout, only when this crate is its top level (not a tarball
/// unpacked inside some other repository).
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={}", dir.join(p).display());
        }
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={}", dir.join(p).display());
        }
    }
    git(dir, &["rev-parse", "--short", "HEAD"])
}

/// `"git": {"sha1": "..."}` of the file `cargo package` writes into a crate tarball.
fn from_vcs_info(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let start = text.find("\"sha1\"")?;
    let rest = &text[start + "\"sha1\"".len()..];
    let sha: String = rest
        .trim_start_matches([' ', ':', '"'])
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (sha.len() >= 7).then(|| sha[..7].to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SECRET_ROTATOR_GIT_COMMIT");
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = std::env::var("SECRET_ROTATOR_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| from_git(&dir))
        .or_else(|| from_vcs_info(&dir))
        .map(|c| format!("commit {c}"))
        .unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=SECRET_ROTATOR_GIT_COMMIT={commit}");
}
