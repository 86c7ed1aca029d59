//! The man pages and shell completions, generated from the clap definitions by
//! `examples/gen-docs.rs` (the program `scripts/build-deb.sh` runs): one page for the binary and
//! one per subcommand, each with its EXIT STATUS; completions for bash, zsh and fish.

#[path = "../examples/gen-docs.rs"]
mod gen_docs;

use clap::CommandFactory;
use secret_rotator::cli::{Cli, EXIT_CODES};

#[test]
fn one_page_for_the_binary_and_one_per_subcommand_each_with_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let written = gen_docs::generate(dir.path()).unwrap();
    let mut expected = vec!["man/secret-rotator.1".to_string()];
    for sub in Cli::command().get_subcommands() {
        expected.push(format!("man/secret-rotator-{}.1", sub.get_name()));
    }
    expected.extend([
        "completions/bash/secret-rotator".to_string(),
        "completions/zsh/_secret-rotator".to_string(),
        "completions/fish/secret-rotator.fish".to_string(),
    ]);
    let mut got: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    for page in got.iter().filter(|p| p.ends_with(".1")) {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".SH \"EXIT STATUS\""), "{page}");
        for (code, _) in EXIT_CODES {
            assert!(
                text.contains(&format!("\\fB{code}\\fR")),
                "{page} lacks {code}"
            );
        }
    }
    // Each shell's completion offers the subcommands.
    for file in got.iter().filter(|p| p.starts_with("completions/")) {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        for sub in ["confirm-revoked", "supply", "status"] {
            assert!(text.contains(sub), "{file} lacks {sub}");
        }
    }
}

/// `man secret-rotator-supply`, rendered by man-db: stdin's JSON, the prompt, the exit codes.
#[test]
fn the_supply_page_renders_and_explains_stdin_the_prompt_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    gen_docs::generate(dir.path()).unwrap();
    let page = dir.path().join("man/secret-rotator-supply.1");
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "200")
        .env("MAN_KEEP_FORMATTING", "0")
        .output();
    let text = match rendered {
        Ok(out) if out.status.success() => plain(&String::from_utf8_lossy(&out.stdout)),
        _ if std::env::var_os("CI").is_some() => panic!("man -l {} failed", page.display()),
        _ => {
            println!("skipped: man is not installed (apt-get install man-db)");
            return;
        }
    };
    for needle in [
        "secret-rotator-supply - Hand over an assisted credential",
        "one JSON object, at most 64 KiB",
        r#"{"username"?, "token", "api_path"?}"#,
        "a prompt that does not echo",
        "Ctrl-C or Ctrl-D",
        "EXIT STATUS",
        "another instance holds the credential's rotation lease",
        "--delivery-backoff",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
}

/// The text without the overstrike (bold: `X\x08X`, underline: `_\x08X`) of a page rendered for
/// a terminal: a backspace takes back the character before it.
fn plain(rendered: &str) -> String {
    let mut text = String::new();
    for c in rendered.chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}
