//! Located configuration errors.
//!
//! Validation works on byte offsets (what the TOML parser gives); the errors shown to people carry
//! line and column, so the conversion happens once, here, at the edge.

use std::fmt;
use std::ops::Range;

/// One problem in a configuration file, located as precisely as the parser allows.
///
/// `Display` and `Error` are written by hand rather than derived with `thiserror`: `thiserror`
/// treats a field named `source` as the error's cause, and here `source` is the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the text came from: a file path, or a name such as `<test>`.
    pub source: String,
    /// 1-based; 0 when unknown (for example a table that is missing altogether).
    pub line: usize,
    /// 1-based, counted in characters; 0 when unknown.
    pub column: usize,
    /// Dotted key path, e.g. `credentials[1].max_age` or `vault.auth.secret_id_file`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `source:line:column: key: message`; without a position (a whole-file problem, a missing
    /// table) `source: key: message`, and without a key `source:line:column: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem before it is located: a key path and the byte range it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub key: String,
    /// `None` when there is nothing in the text to point at (a missing `[vault]` table).
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl Problem {
    pub fn new(
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            key: key.into(),
            span,
            message: message.into(),
        }
    }
}

/// Turns problems into located errors, ordered by position so the output reads top to bottom.
pub(crate) fn locate(problems: Vec<Problem>, text: &str, source: &str) -> ConfigErrors {
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|problem| {
            let (line, column) = match problem.span {
                Some(span) => line_column(text, span.start),
                None => (0, 0),
            };
            ConfigError {
                source: source.to_string(),
                line,
                column,
                key: problem.key,
                message: problem.message,
            }
        })
        .collect();
    // Stable: problems at the same position keep the order in which they were found.
    errors.sort_by_key(|e| (e.line, e.column));
    ConfigErrors { errors }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Offsets come from the parser and fall on character boundaries; be safe anyway.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
