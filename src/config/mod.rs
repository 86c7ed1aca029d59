//! Typed configuration: raw TOML structs, validation with located errors, the validated model.
//!
//! Invariant: `parse` is pure. It reads nothing but its arguments; what it needs to know about the
//! outside world (environment variables, whether a file exists) it asks through [`Environment`], so
//! tests pass a map and the binary passes [`ProcessEnvironment`]. `load` only adds reading the file.

mod error;
mod model;
mod raw;
mod redact;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use redact::redact_url;

/// What validation may ask of the outside world; tests pass a map/fake, the binary passes the real one.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn file_exists(&self, path: &Path) -> bool;
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
    validate::validate(raw, problems, env).map_err(located)
}

/// Reads and validates a configuration file. An unreadable file is one error naming the path.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &source, env),
        Err(error) => Err(ConfigErrors {
            errors: vec![ConfigError {
                source,
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the configuration file: {error}"),
            }],
        }),
    }
}
