//! Typed configuration: raw TOML structs, validation with located errors, the validated model.
//!
//! Invariant: `parse` is pure. It reads nothing but its arguments; what it needs to know about the
//! outside world (environment variables, whether a file exists) it asks through [`Environment`], so
//! tests pass a map and the binary passes [`ProcessEnvironment`]. `load` only adds reading the file.

mod error;
mod model;
mod raw;
mod redact;
pub mod sets;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use chrono::{DateTime, Utc};

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use redact::redact_url;
pub use sets::{CredentialSet, Pattern};
pub use validate::store_account::{KNOWN_PERMISSIONS, KNOWN_SCOPES};

/// What validation may ask of the outside world; tests pass a map/fake, the binary passes the real one.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn file_exists(&self, path: &Path) -> bool;

    /// The current time: a schedule must fire at some point after it.
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The real process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file_exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Parses and validates a configuration. `source` names the text in error messages (a path).
///
/// On failure, every problem found is returned, each located by line and column: all validation
/// problems at once, or the first TOML syntax or type error (the parser cannot go past it).
pub fn parse(text: &str, source: &str, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    let located = |problems| error::locate(problems, text, source);
    let (raw, problems) = raw::read(text).map_err(located)?;
    let spans: Vec<_> = raw
        .credential_sets
        .iter()
        .map(|s| s.get_ref().path.as_ref().map(|p| p.span()))
        .collect();
    let mut config = validate::validate(raw, problems, env).map_err(located)?;
    // Where each set is written, for what discovery says about its members.
    for (i, (set, span)) in config.credential_sets.iter_mut().zip(spans).enumerate() {
        let (line, column) = span.map_or((0, 0), |s| error::line_column(text, s.start));
        set.location = format!("{source}:{line}:{column}: credential_sets[{i}].path");
    }
    Ok(config)
}

/// The largest configuration file read. A fleet of 100,000 credentials takes about 20 MB; the
/// cap keeps a wrong path (a log file, a pipe that never ends) from filling memory.
const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Reads and validates a configuration file. A file that cannot be read (missing, a directory or a
/// device, larger than 64 MiB, not UTF-8) is one error naming the path, without a position.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    match read_file(path) {
        Ok(text) => parse(&text, &source, env),
        Err(message) => Err(ConfigErrors {
            errors: vec![ConfigError {
                source,
                line: 0,
                column: 0,
                key: String::new(),
                message,
            }],
        }),
    }
}

/// The file's text, or what is wrong with it. Reads at most `MAX_FILE_SIZE` + 1 bytes, whatever
/// the file says its size is: devices, pipes and files in /proc report none, or a wrong one.
fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    let cannot_read =
        |error: std::io::Error| format!("cannot read the configuration file: {error}");
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let kind = file.metadata().map_err(cannot_read)?.file_type();
    // A pipe is read, under the same cap: `--config <(render-config)` and `--config /dev/stdin`
    // are ways to pass a file. A device or a socket never holds one.
    let not_a_file = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        None
    };
    if let Some(what) = not_a_file {
        return Err(format!("is {what}, not a configuration file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!(
            "is larger than {} MiB, far more than any configuration file",
            MAX_FILE_SIZE / (1024 * 1024)
        ));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())
}
