//! Generates the man pages and the shell completions from the clap definitions
//! (`src/cli/args.rs`): nothing of either is written by hand.
//!
//! ```sh
//! cargo run --example gen-docs -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/man/secret-rotator.1` and one `secret-rotator-SUBCOMMAND.1` per subcommand
//! (each with an EXIT STATUS section from `cli::EXIT_CODES`), and the completions under the names
//! Debian's directories expect: `OUT_DIR/completions/bash/secret-rotator`,
//! `OUT_DIR/completions/zsh/_secret-rotator` and `OUT_DIR/completions/fish/secret-rotator.fish`.
//! `scripts/build-deb.sh` runs it before `cargo deb`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{bold, roman, Roff};
use secret_rotator::cli::{Cli, EXIT_CODES, VERSION};

const BIN: &str = "secret-rotator";

/// The sections every page ends with: DETAILS (the help's closing text, when there is one), EXIT
/// STATUS, FILES and SEE ALSO.
fn closing_sections(details: Option<String>, subcommand: Option<&str>) -> Roff {
    let mut roff = Roff::default();
    if let Some(text) = details {
        roff.control("SH", ["DETAILS"]);
        roff.control("nf", []);
        for line in text.lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_CODES {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    roff.control("TP", []);
    roff.text([bold("/etc/secret-rotator/config.toml")]);
    roff.text([roman(
        "the configuration (--config, SECRET_ROTATOR_CONFIG); \
         /usr/share/doc/secret-rotator/ holds the README and the Vault policy",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = match subcommand {
        Some(_) => vec![format!("{BIN}(1)")],
        None => Vec::new(),
    };
    see.push("systemctl(1)".to_string());
    roff.text([roman(see.join(", "))]);
    roff
}

fn man_page(cmd: clap::Command, subcommand: Option<&str>, dir: &Path) -> std::io::Result<PathBuf> {
    // The help's closing text, its line breaks kept (it holds lists and tables).
    let details = cmd.get_after_help().map(|h| h.to_string());
    let man =
        clap_mangen::Man::new(cmd).source(concat!("secret-rotator ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if subcommand.is_none() {
        man.render_subcommands_section(&mut out)?;
    }
    closing_sections(details, subcommand).to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&out)?;
    Ok(path)
}

/// Writes every man page and completion under `out`; returns the files written.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().to_string();
        // clap's names are &'static str (without its `string` feature): this program is short.
        let page_name: &'static str = Box::leak(format!("{BIN}-{name}").into_boxed_str());
        let page = sub
            .clone()
            .name(page_name)
            .display_name(page_name)
            .bin_name(format!("{BIN} {name}"))
            .version(VERSION);
        written.push(man_page(page, Some(&name), &man_dir)?);
    }
    written.push(man_page(cmd.clone(), None, &man_dir)?);

    for (shell, dir, file) in [
        (Shell::Bash, "bash", BIN.to_string()),
        (Shell::Zsh, "zsh", format!("_{BIN}")),
        (Shell::Fish, "fish", format!("{BIN}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut text);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example gen-docs -- OUT_DIR");
        std::process::exit(64);
    };
    for path in generate(Path::new(&out))? {
        println!("{}", path.display());
    }
    Ok(())
}
