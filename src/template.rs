//! The templates of the `http` provider: text with `{{placeholder}}`s from a small fixed set.
//!
//! Invariants: pure; a template is parsed once (validation) and its placeholders are known
//! before anything is rendered; rendering never fails on a known placeholder whose value is
//! missing: it says which one, and the caller reports it without any value.

use std::fmt;

/// A value a template may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{{parent.NAME}}`: a parent secret read from Vault.
    Parent(String),
    /// `{{current.FIELD}}`: a field of the credential the step acts on (verify, revoke).
    Current(String),
    /// `{{expires_at}}`: the planned expiry of a new credential, RFC 3339 (mint).
    ExpiresAt,
    /// `{{expires_at_unix}}`: the same in unix seconds (mint).
    ExpiresAtUnix,
    /// `{{credential}}`: the credential's name.
    Credential,
    /// `{{attempt_id}}`: the rotation attempt's id, e.g. for an idempotency key (mint).
    AttemptId,
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::Parent(name) => write!(f, "{{{{parent.{name}}}}}"),
            Placeholder::Current(field) => write!(f, "{{{{current.{field}}}}}"),
            Placeholder::ExpiresAt => f.write_str("{{expires_at}}"),
            Placeholder::ExpiresAtUnix => f.write_str("{{expires_at_unix}}"),
            Placeholder::Credential => f.write_str("{{credential}}"),
            Placeholder::AttemptId => f.write_str("{{attempt_id}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The placeholders, as the documentation lists them.
pub const KNOWN: &str = "{{parent.NAME}}, {{current.FIELD}}, {{expires_at}}, {{expires_at_unix}}, {{credential}}, {{attempt_id}}";

impl Template {
    /// Parses `text`. `Err` says what is wrong (an unclosed `{{`, an unknown placeholder).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let inner = &rest[open + 2..];
            let close = inner
                .find("}}")
                .ok_or_else(|| "`{{` without a closing `}}`".to_string())?;
            parts.push(Part::Value(placeholder(inner[..close].trim())?));
            rest = &inner[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Value(v) => Some(v),
            Part::Text(_) => None,
        })
    }

    /// The text before the first placeholder.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(text)) => text,
            _ => "",
        }
    }

    /// The text with every placeholder replaced by `value(p)` passed through `encode`. `Err`: the
    /// first placeholder without a value.
    pub fn render(
        &self,
        value: impl Fn(&Placeholder) -> Option<String>,
        encode: impl Fn(&str) -> String,
    ) -> Result<String, Placeholder> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(p) => match value(p) {
                    Some(v) => out.push_str(&encode(&v)),
                    None => return Err(p.clone()),
                },
            }
        }
        Ok(out)
    }
}

fn placeholder(name: &str) -> Result<Placeholder, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if let Some(n) = named("parent.") {
        return Ok(Placeholder::Parent(n));
    }
    if let Some(n) = named("current.") {
        return Ok(Placeholder::Current(n));
    }
    match name {
        "expires_at" => Ok(Placeholder::ExpiresAt),
        "expires_at_unix" => Ok(Placeholder::ExpiresAtUnix),
        "credential" => Ok(Placeholder::Credential),
        "attempt_id" => Ok(Placeholder::AttemptId),
        other => Err(format!(
            "unknown placeholder `{{{{{other}}}}}`; known: {KNOWN}"
        )),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a value put into a URL
/// stays one path segment or one query value.
pub fn url_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: &Placeholder) -> Option<String> {
        match p {
            Placeholder::Parent(n) if n == "access_token" => Some("tok".into()),
            Placeholder::Current(f) if f == "token" => Some("a b/c".into()),
            Placeholder::ExpiresAtUnix => Some("1700000000".into()),
            Placeholder::Credential => Some("shop".into()),
            _ => None,
        }
    }

    #[test]
    fn templates_render_their_placeholders() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            ("{{parent.access_token}}", "tok"),
            ("Bearer {{ current.token }}!", "Bearer a b/c!"),
            (
                r#"{"expires_at": {{expires_at_unix}}, "name": "{{credential}}"}"#,
                r#"{"expires_at": 1700000000, "name": "shop"}"#,
            ),
            ("{ not a placeholder }", "{ not a placeholder }"),
        ];
        for (text, expected) in cases {
            let t = Template::parse(text).unwrap();
            assert_eq!(
                t.render(values, str::to_string).unwrap(),
                *expected,
                "{text}"
            );
        }
        let url = Template::parse("http://h/t/{{current.token}}").unwrap();
        assert_eq!(
            url.render(values, url_encode).unwrap(),
            "http://h/t/a%20b%2Fc"
        );
        assert_eq!(url.literal_prefix(), "http://h/t/");
    }

    #[test]
    fn bad_templates_say_why() {
        let cases = [
            ("{{nope}}", "unknown placeholder `{{nope}}`"),
            ("{{parent.}}", "unknown placeholder `{{parent.}}`"),
            ("a {{credential", "without a closing"),
        ];
        for (text, fragment) in cases {
            let err = Template::parse(text).unwrap_err();
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn a_missing_value_names_its_placeholder() {
        let t = Template::parse("{{credential}} {{parent.other}}").unwrap();
        assert_eq!(
            t.render(values, str::to_string).unwrap_err().to_string(),
            "{{parent.other}}"
        );
    }
}
