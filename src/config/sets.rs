//! Credential sets (`[[credential_sets]]`): one table describing many credentials, one per secret
//! whose path matches a pattern with named segments (`bigcommerce/stores/{store_hash}/storefront`).
//!
//! Invariant: pure. A set is validated once, with each segment stood in for by a marker that
//! every check accepts (lowercase letters and digits); a member is the validated template with
//! each marker replaced by the segment's value, after that value was checked for each of its uses
//! ([`CredentialSet::member`]). So a member is exactly as valid as a credential written by hand.

use std::collections::HashMap;
use std::time::Duration;

use super::model::*;

/// The stand-in for segment `index` while a set is validated: valid as a path segment, a name, a
/// store hash and in a URL's host, and nothing a person writes.
pub(crate) fn marker(index: usize) -> String {
    format!("zzsegment{index}zz")
}

/// The longest segment value taken from Vault (a store hash is at most 64 as well).
pub const MAX_SEGMENT: usize = 64;

/// The keys of a secret's KV `custom_metadata` that override a member's policy.
pub const OVERRIDE_KEYS: [&str; 3] = ["max_age", "expiry_lead", "jitter"];

/// One component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// A named segment, `{name}`: one path component of any member.
    Segment(String),
}

/// A path pattern: components, each a literal or a whole-component segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub mount: String,
    pub parts: Vec<Part>,
}

impl Pattern {
    /// Parses `path` (relative to the mount). Each `{name}` must be a whole component, named
    /// with lowercase letters, digits and '_', once; at least one segment.
    pub fn parse(mount: &str, path: &str) -> Result<Pattern, String> {
        let mut parts = Vec::new();
        for component in path.split('/') {
            let inner = component
                .strip_prefix('{')
                .and_then(|c| c.strip_suffix('}'));
            match inner {
                Some(name) => {
                    let ok = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !ok {
                        return Err(format!(
                            "segment `{{{name}}}`: name a segment with lowercase letters, digits and '_'"
                        ));
                    }
                    if parts.contains(&Part::Segment(name.to_string())) {
                        return Err(format!("segment `{{{name}}}` appears twice"));
                    }
                    parts.push(Part::Segment(name.to_string()));
                }
                None if component.contains(['{', '}']) => {
                    return Err(format!(
                        "component `{component}`: a segment is a whole path component, like `{{store_hash}}`"
                    ));
                }
                None => parts.push(Part::Literal(component.to_string())),
            }
        }
        if !parts.iter().any(|p| matches!(p, Part::Segment(_))) {
            return Err(
                "the pattern has no segment; name one like `stores/{store_hash}/storefront`".into(),
            );
        }
        Ok(Pattern {
            mount: mount.to_string(),
            parts,
        })
    }

    /// The segments' names, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Segment(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The path with each segment written `{name}`.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.clone(),
                Part::Segment(s) => format!("{{{s}}}"),
            })
            .collect();
        parts.join("/")
    }

    /// The literal components before the first segment (`bigcommerce/stores`), maybe empty.
    pub fn literal_prefix(&self) -> String {
        let literals: Vec<&str> = self
            .parts
            .iter()
            .map_while(|p| match p {
                Part::Literal(l) => Some(l.as_str()),
                Part::Segment(_) => None,
            })
            .collect();
        literals.join("/")
    }

    /// The segment values of `path` (relative to the mount) when it matches; a value is any
    /// non-empty component (its validity for its uses is [`CredentialSet::member`]'s to say).
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let mut values = Vec::new();
        let mut components = path.split('/');
        for part in &self.parts {
            let component = components.next()?;
            match part {
                Part::Literal(l) if l == component => {}
                Part::Literal(_) => return None,
                Part::Segment(_) if component.is_empty() => return None,
                Part::Segment(_) => values.push(component.to_string()),
            }
        }
        components.next().is_none().then_some(values)
    }

    /// The path of the member with these segment values.
    pub fn render(&self, values: &[String]) -> String {
        let mut values = values.iter();
        let parts: Vec<&str> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Segment(_) => values.next().map_or("", String::as_str),
            })
            .collect();
        parts.join("/")
    }

    /// Some path matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.mount == other.mount
            && self.parts.len() == other.parts.len()
            && self
                .parts
                .iter()
                .zip(&other.parts)
                .all(|(a, b)| match (a, b) {
                    (Part::Literal(a), Part::Literal(b)) => a == b,
                    _ => true,
                })
    }
}

/// One `[[credential_sets]]` table, validated.
#[derive(Debug, Clone)]
pub struct CredentialSet {
    pub name: String,
    pub pattern: Pattern,
    /// Every member as validated: its strings hold [`marker`]s where the segments go.
    pub template: Credential,
    /// The members are looked for again this often (default 5 minutes).
    pub discovery_interval: Duration,
    /// `/metrics` has a series per member (default: only the set's totals).
    pub per_credential_metrics: bool,
    /// Where the set is written: `file:line:column` of its `path`, for messages about members.
    pub location: String,
    /// The segments (by index) used as a store hash, which must then be one.
    pub store_hash_segments: Vec<usize>,
    /// The provider settings use a segment: each member fills its values in on use.
    templated: bool,
}

impl CredentialSet {
    /// The set from its validated template (the pattern's segments stood in by markers).
    pub(crate) fn new(
        template: Credential,
        pattern: Pattern,
        discovery_interval: Duration,
        per_credential_metrics: bool,
    ) -> CredentialSet {
        let segments = pattern.segments().count();
        let store_hash = store_hash_of(template.provider_template());
        let store_hash_segments = (0..segments)
            .filter(|i| store_hash.is_some_and(|h| h.contains(&marker(*i))))
            .collect();
        let templated = uses_segments(template.provider_template());
        CredentialSet {
            name: template.name.clone(),
            pattern,
            template,
            discovery_interval,
            per_credential_metrics,
            location: String::new(),
            store_hash_segments,
            templated,
        }
    }

    /// `mount/pattern`, with `{name}` segments: how messages name the set's path.
    pub fn shown(&self) -> String {
        format!("{}/{}", self.pattern.mount, self.pattern.text())
    }

    /// The member's name: the set's name and the segment values, joined by '/'. No name written
    /// in the file holds a '/', so a member's name never meets a configured one.
    pub fn member_name<S: AsRef<str>>(&self, values: &[S]) -> String {
        let mut name = String::with_capacity(
            self.name.len() + values.iter().map(|v| v.as_ref().len() + 1).sum::<usize>(),
        );
        name.push_str(&self.name);
        for v in values {
            name.push('/');
            name.push_str(v.as_ref());
        }
        name
    }

    /// The member with these segment values (taken from a path that matched the pattern), or
    /// why there is none: a value not valid for one of its uses, or a name or path too long.
    pub fn member<S: AsRef<str>>(&self, values: &[S]) -> Result<Credential, String> {
        let (name, path) = self.checked(values)?;
        Ok(Credential::member_of(
            &self.template,
            name,
            path,
            self.templated,
        ))
    }

    /// The member named `name` (the set's name and its segment values, as
    /// [`CredentialSet::member_name`] makes it), or why there is none.
    pub fn member_named(&self, name: &str) -> Result<Credential, String> {
        let values: Vec<&str> = match name.split_once('/') {
            Some((set, values)) if set == self.name => values.split('/').collect(),
            _ => {
                return Err(format!(
                    "`{name}` is not a member's name of set `{}`",
                    self.name
                ))
            }
        };
        self.member(&values)
    }

    /// The name and the path of the member with these segment values, or why there is none
    /// (what [`CredentialSet::member`] checks, without making the member).
    pub fn checked<S: AsRef<str>>(&self, values: &[S]) -> Result<(String, String), String> {
        let names: Vec<&str> = self.pattern.segments().collect();
        if values.len() != names.len() {
            return Err(format!(
                "{} segment values for the {} segments of the pattern",
                values.len(),
                names.len()
            ));
        }
        for (i, value) in values.iter().enumerate() {
            let value = value.as_ref();
            let segment = names[i];
            check_segment(value, self.store_hash_segments.contains(&i))
                .map_err(|problem| format!("segment `{segment}` = `{value}`: {problem}"))?;
        }
        let name = self.member_name(values);
        if name.chars().count() > super::validate::MAX_NAME_CHARS {
            return Err(format!(
                "the member's name `{name}` is longer than {} characters",
                super::validate::MAX_NAME_CHARS
            ));
        }
        let path = filled(&self.template.secret.path, values);
        if path.chars().count() > super::validate::MAX_PATH_CHARS {
            return Err(format!(
                "the path is longer than {} characters",
                super::validate::MAX_PATH_CHARS
            ));
        }
        Ok((name, path))
    }
}

/// `text` with each segment's [`marker`] replaced by its value.
fn filled<S: AsRef<str>>(text: &str, values: &[S]) -> String {
    let mut text = text.to_string();
    if text.contains("zzsegment") {
        for (i, v) in values.iter().enumerate() {
            let m = marker(i);
            if text.contains(m.as_str()) {
                text = text.replace(m.as_str(), v.as_ref());
            }
        }
    }
    text
}

/// A set's provider settings (`template`, with [`marker`]s) for the member with these segment
/// values.
pub(crate) fn rendered(template: &ProviderConfig, values: &[&str]) -> ProviderConfig {
    let mut provider = template.clone();
    fill_provider(&mut provider, &|text: &mut String| {
        if text.contains("zzsegment") {
            *text = filled(text, values);
        }
    });
    provider
}

/// Whether any text of the provider settings holds a segment's marker.
fn uses_segments(provider: &ProviderConfig) -> bool {
    let found = std::cell::Cell::new(false);
    fill_provider(&mut provider.clone(), &|text: &mut String| {
        if text.contains("zzsegment") {
            found.set(true);
        }
    });
    found.get()
}

/// The store hash a provider works on, when it has one.
fn store_hash_of(provider: &ProviderConfig) -> Option<&str> {
    match provider {
        ProviderConfig::BigCommerceStorefront(c) => Some(&c.store_hash),
        ProviderConfig::BigCommerceLegacyAccount(c) | ProviderConfig::BigCommerceUserToken(c) => {
            Some(&c.store_hash)
        }
        ProviderConfig::BigCommerceStoreAccount(c) => Some(&c.store_hash),
        _ => None,
    }
}

/// A segment value read from Vault: one path component of letters, digits, '_', '.' and '-'
/// (safe in a path, a URL and a name), not `.` or `..`; as a store hash, lowercase letters and
/// digits.
pub fn check_segment(value: &str, store_hash: bool) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_SEGMENT {
        return Err(format!("must be 1 to {MAX_SEGMENT} characters long"));
    }
    if store_hash {
        if !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(
                "not a valid store hash: lowercase letters and digits only, e.g. `abc123`".into(),
            );
        }
        return Ok(());
    }
    if value == "." || value == ".." {
        return Err("must not be `.` or `..`".into());
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err("use letters, digits, '_', '.' and '-'".into());
    }
    Ok(())
}

/// Every text of the provider's settings through `fill`.
fn fill_provider(provider: &mut ProviderConfig, fill: &dyn Fn(&mut String)) {
    let field = |f: &mut VaultField| {
        fill(&mut f.secret.mount);
        fill(&mut f.secret.path);
        fill(&mut f.key);
    };
    match provider {
        ProviderConfig::BigCommerceStorefront(c) => {
            fill(&mut c.api_url);
            fill(&mut c.storefront_url);
            fill(&mut c.store_hash);
            field(&mut c.access_token);
        }
        ProviderConfig::VaultAppRoleSecretId(c) => {
            fill(&mut c.mount);
            fill(&mut c.role_name);
        }
        ProviderConfig::BigCommerceLegacyAccount(c) | ProviderConfig::BigCommerceUserToken(c) => {
            fill(&mut c.store_hash);
            fill(&mut c.username);
            fill(&mut c.api_path);
            fill(&mut c.probe);
        }
        ProviderConfig::BigCommerceStoreAccount(c) => {
            fill(&mut c.api_url);
            fill(&mut c.store_hash);
            fill(&mut c.probe);
        }
        ProviderConfig::Exec(c) => {
            for argv in [&mut c.mint, &mut c.verify, &mut c.revoke] {
                argv.iter_mut().for_each(fill);
            }
            if let Some(argv) = &mut c.verify_revoked {
                argv.iter_mut().for_each(fill);
            }
        }
        ProviderConfig::Http(c) => {
            for (_, parent) in &mut c.parents {
                field(parent);
            }
            for request in [&mut c.mint, &mut c.verify, &mut c.revoke] {
                fill(&mut request.url);
                for (_, value) in &mut request.headers {
                    fill(value);
                }
                if let Some(body) = &mut request.body {
                    fill(body);
                }
            }
        }
    }
}

/// A member's policy: the set's, with what the secret's `custom_metadata` overrides
/// ([`OVERRIDE_KEYS`], durations as in the file). A value that is not a duration is skipped and
/// named in the returned problems.
pub fn overridden(policy: &Policy, custom: &HashMap<String, String>) -> (Policy, Vec<String>) {
    let mut policy = policy.clone();
    let mut problems = Vec::new();
    for key in OVERRIDE_KEYS {
        let Some(text) = custom.get(key) else {
            continue;
        };
        let parsed = humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| *d < Duration::from_secs(10 * 365 * 24 * 3600));
        match (key, parsed) {
            ("max_age", Some(d)) if !d.is_zero() => policy.max_age = Some(d),
            ("max_age", _) if text.trim() == "never" => policy.max_age = None,
            ("expiry_lead", Some(d)) => policy.expiry_lead = d,
            ("jitter", Some(d)) => policy.jitter = d,
            _ => problems.push(format!(
                "custom_metadata {key} = `{text}` is not a duration; the set's value applies"
            )),
        }
    }
    (policy, problems)
}

/// Whether `custom` holds any policy override.
pub fn has_overrides(custom: &HashMap<String, String>) -> bool {
    OVERRIDE_KEYS.iter().any(|k| custom.contains_key(*k))
}

#[cfg(test)]
mod tests;
