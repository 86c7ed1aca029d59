//! The first stage: serde structs that mirror the TOML file, and the reading of text into them.
//!
//! Nearly every field is optional and kept as text with its span, so that the second stage
//! (`validate`) can report every missing or malformed value at once, each at its own line. Serde
//! itself stops at the first error, so what it checks here is only the shape: unknown keys
//! (`deny_unknown_fields` everywhere, which is also what keeps secret values out of the file: there
//! is no key that takes one) and value types.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::Problem;
use super::redact_url;

/// Provider table names, in the order the documentation lists them.
pub(crate) const PROVIDERS: [&str; 7] = [
    "bigcommerce_storefront",
    "vault_approle_secret_id",
    "bigcommerce_legacy_account",
    "bigcommerce_user_token",
    "bigcommerce_store_account",
    "exec",
    "http",
];

type Text = Option<Spanned<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub vault: Option<Spanned<RawVault>>,
    pub defaults: Option<RawPolicy>,
    #[serde(default)]
    pub credentials: Vec<Spanned<RawCredential>>,
    /// `[[credential_sets]]`: the same keys as a credential (`path` a pattern), and the set's
    /// own; read after [`prepare_sets`] put markers where the segments go.
    #[serde(default)]
    pub credential_sets: Vec<Spanned<RawCredential>>,
    /// The segments' names of each set's pattern, by index (`None`: a malformed pattern,
    /// reported already); filled in by [`read`].
    #[serde(skip)]
    pub set_segments: Vec<Option<Vec<String>>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub daemon: Option<Spanned<RawDaemon>>,
}

/// `[daemon]`: the planner's reconcile interval and the limits on rotations in flight.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    pub reconcile_interval: Text,
    pub stagger: Text,
    pub max_rotations: Option<Spanned<i64>>,
    pub max_rotations_per_provider: Option<Spanned<i64>>,
    pub group_lease_ttl: Text,
}

/// `[admin]`: the daemon's health and metrics server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Text,
    pub socket: Text,
    pub allow_remote: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    pub address: Text,
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    pub namespace: Text,
    pub ca_file: Text,
    pub state_mount: Text,
    pub state_prefix: Text,
    pub request_timeout: Text,
    pub auth: Option<Spanned<RawAuth>>,
}

/// All auth methods' keys in one table: which ones belong to the chosen `method` is checked in
/// validation, so a misplaced key is reported with the others rather than as a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub method: Text,
    pub path: Text,
    pub mount: Text,
    pub role_id: Text,
    pub role_id_file: Text,
    pub secret_id_file: Text,
}

/// The policy keys, as written in `[defaults]` (and, repeated, in each credential).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub max_age: Text,
    pub schedule: Text,
    pub timezone: Text,
    pub expiry_lead: Text,
    pub window: Text,
    pub jitter: Text,
    pub grace: Text,
    pub destroy_old_version: Option<Spanned<bool>>,
    pub credential_lifetime: Text,
    pub expiring_warning: Text,
    pub supply_deadline: Text,
    pub supply_reminder: Text,
    pub drift_interval: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    pub name: Text,
    pub mount: Text,
    pub path: Text,

    // Policy overrides. Repeated rather than `#[serde(flatten)]`ed: flatten buffers the values
    // and loses their spans, and it does not combine with `deny_unknown_fields`.
    pub max_age: Text,
    pub schedule: Text,
    pub timezone: Text,
    pub expiry_lead: Text,
    pub window: Text,
    pub jitter: Text,
    pub grace: Text,
    pub destroy_old_version: Option<Spanned<bool>>,
    pub credential_lifetime: Text,
    pub expiring_warning: Text,
    pub supply_deadline: Text,
    pub supply_reminder: Text,
    pub drift_interval: Text,

    // Credential sets only.
    pub discovery_interval: Text,
    pub per_credential_metrics: Option<Spanned<bool>>,

    // Provider tables: exactly one must be present (checked in validation). Boxed: inline, the
    // seven tables made each credential about 3 KB while the file is read (300 MB of transient
    // heap at 100,000 credentials); boxed, only the one present takes room.
    pub bigcommerce_storefront: Option<Box<Spanned<RawStorefront>>>,
    pub vault_approle_secret_id: Option<Box<Spanned<RawAppRoleSecretId>>>,
    pub bigcommerce_legacy_account: Option<Box<Spanned<RawBasicAuthAccount>>>,
    pub bigcommerce_user_token: Option<Box<Spanned<RawBasicAuthAccount>>>,
    pub bigcommerce_store_account: Option<Box<Spanned<RawStoreAccount>>>,
    pub exec: Option<Box<Spanned<RawExecProvider>>>,
    pub http: Option<Box<Spanned<RawHttpProvider>>>,

    #[serde(default)]
    pub dependents: Vec<Spanned<RawDependent>>,
}

impl RawCredential {
    /// The credential's policy overrides, in the same shape as `[defaults]`.
    pub fn policy(&self) -> RawPolicy {
        RawPolicy {
            max_age: self.max_age.clone(),
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone(),
            expiry_lead: self.expiry_lead.clone(),
            window: self.window.clone(),
            jitter: self.jitter.clone(),
            grace: self.grace.clone(),
            destroy_old_version: self.destroy_old_version.clone(),
            expiring_warning: self.expiring_warning.clone(),
            credential_lifetime: self.credential_lifetime.clone(),
            supply_deadline: self.supply_deadline.clone(),
            supply_reminder: self.supply_reminder.clone(),
            drift_interval: self.drift_interval.clone(),
        }
    }
}

/// `{ path = "...", key = "...", mount = "..." }`: one field of a KV v2 secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultField {
    pub mount: Text,
    pub path: Text,
    pub key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorefront {
    pub store_hash: Text,
    pub api_url: Text,
    pub storefront_url: Text,
    pub access_token: Option<Spanned<RawVaultField>>,
    pub kind: Text,
    pub channel_ids: Option<Spanned<Vec<Spanned<i64>>>>,
    pub allowed_cors_origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub scopes: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppRoleSecretId {
    pub mount: Text,
    pub role_name: Text,
    pub secret_id_ttl: Text,
    pub secret_id_num_uses: Option<Spanned<i64>>,
}

/// `bigcommerce_legacy_account` and `bigcommerce_user_token` take the same keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuthAccount {
    pub store_hash: Text,
    pub username: Text,
    pub api_path: Text,
    pub probe: Text,
    pub required_permissions: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStoreAccount {
    pub store_hash: Text,
    pub api_url: Text,
    pub probe: Text,
    pub required_scopes: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

type Argv = Option<Spanned<Vec<Spanned<String>>>>;

/// `exec`: one program per step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExecProvider {
    pub mint: Argv,
    pub verify: Argv,
    pub revoke: Argv,
    pub verify_revoked: Argv,
    pub timeout: Text,
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
    pub credentials_expire: Option<Spanned<bool>>,
}

/// `http`: one request per step, and the parent secrets the requests may use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpProvider {
    pub parents: Option<Spanned<BTreeMap<String, Spanned<RawVaultField>>>>,
    pub timeout: Text,
    pub credentials_expire: Option<Spanned<bool>>,
    pub mint: Option<Spanned<RawHttpRequest>>,
    pub verify: Option<Spanned<RawHttpRequest>>,
    pub revoke: Option<Spanned<RawHttpRequest>>,
}

type Statuses = Option<Spanned<Vec<Spanned<i64>>>>;

/// One request of the `http` provider. `fields` and `expires_at` belong to `mint` only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpRequest {
    pub method: Text,
    pub url: Text,
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub body: Text,
    pub ok: Statuses,
    pub reject: Statuses,
    pub retry: Statuses,
    pub fields: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub expires_at: Text,
}

/// All dependent types' keys in one table. Serde's internally tagged enums (`tag = "type"`) would
/// buffer the values and lose their spans, so `type` is read as text and checked in validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDependent {
    #[serde(rename = "type")]
    pub kind: Text,
    pub name: Text,
    pub url: Text,
    pub signing_key: Option<Spanned<RawVaultField>>,
    pub timeout: Text,
    pub path: Text,
    pub field: Text,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub format: Text,
    pub env_prefix: Text,
    pub mode: Text,
    pub owner: Text,
    pub group: Text,
    pub exec: Option<Spanned<Vec<Spanned<String>>>>,
    pub exec_timeout: Text,
    pub ca_file: Text,
    pub require_ack: Option<Spanned<bool>>,
    pub ack_timeout: Text,
    pub on_ack_timeout: Text,
}

/// Keys of a credential table that are not provider tables.
const CREDENTIAL_KEYS: [&str; 19] = [
    "name",
    "mount",
    "path",
    "max_age",
    "schedule",
    "timezone",
    "expiry_lead",
    "window",
    "jitter",
    "grace",
    "destroy_old_version",
    "credential_lifetime",
    "expiring_warning",
    "supply_deadline",
    "supply_reminder",
    "drift_interval",
    "dependents",
    "discovery_interval",
    "per_credential_metrics",
];

/// Reads text into the raw structs.
///
/// `Ok` carries the raw config plus the problems already found (unknown provider tables), which
/// validation adds to. `Err` means the text could not be read into the structs at all: a TOML
/// syntax error or a serde shape error, located by the parser's span.
pub(crate) fn read(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let mut document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let message = format!("invalid TOML: {}", redact_quoted(error.message().trim()));
            return Err(vec![Problem::new("", error.span(), message)]);
        }
    };
    let mut unknown_providers = remove_unknown_providers(document.get_mut());
    let (problems, set_segments) = prepare_sets(document.get_mut());
    unknown_providers.extend(problems);
    match RawConfig::deserialize(toml::de::Deserializer::from(document)) {
        Ok(mut raw) => {
            raw.set_segments = set_segments;
            Ok((raw, unknown_providers))
        }
        Err(error) => {
            // The key at the error's position (serde's error carries only the span), from the
            // text parsed again: a copy of the tree kept for this case would double the heap
            // the parse takes.
            let key = match (error.span(), DeTable::parse(text)) {
                (Some(span), Ok(mut tree)) => {
                    remove_unknown_providers(tree.get_mut());
                    prepare_sets(tree.get_mut());
                    key_at(tree.get_ref(), span.start)
                }
                _ => String::new(),
            };
            let mut problems = unknown_providers;
            problems.push(Problem::new(
                key,
                error.span(),
                plain_message(error.message()),
            ));
            Err(problems)
        }
    }
}

/// Finds tables inside `[[credentials]]` whose name is not a known provider, reports them, and
/// takes them out of the document.
///
/// Left in, serde would stop at the first one with "unknown field, expected one of" and a list that
/// mixes providers with every other key. Taken out, each one is reported with the known providers,
/// and validation still runs on the rest of the file.
fn remove_unknown_providers(root: &mut DeTable<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for list in ["credentials", "credential_sets"] {
        remove_unknown_providers_of(root, list, &mut problems);
    }
    problems
}

fn remove_unknown_providers_of(root: &mut DeTable<'_>, list: &str, problems: &mut Vec<Problem>) {
    let Some(credentials) = root.get_mut(list) else {
        return;
    };
    let DeValue::Array(credentials) = credentials.get_mut() else {
        return;
    };
    for (index, credential) in credentials.iter_mut().enumerate() {
        let DeValue::Table(table) = credential.get_mut() else {
            continue;
        };
        let unknown: Vec<(String, Range<usize>)> = table
            .iter()
            .filter(|(key, value)| {
                let name = key.get_ref().as_ref();
                matches!(value.get_ref(), DeValue::Table(_))
                    && !CREDENTIAL_KEYS.contains(&name)
                    && !PROVIDERS.contains(&name)
            })
            .map(|(key, _)| (key.get_ref().to_string(), key.span()))
            .collect();
        for (name, span) in unknown {
            table.remove(name.as_str());
            problems.push(Problem::new(
                format!("{list}[{index}].{name}"),
                Some(span),
                format!(
                    "unknown provider `{name}`; known providers: {}",
                    PROVIDERS.join(", ")
                ),
            ));
        }
    }
}

/// In each `[[credential_sets]]` table, puts the marker of each of the pattern's segments
/// (`config::sets::marker`) where the table's texts name it (`{store_hash}`), so that the set is
/// validated as one credential; reports a malformed pattern and a `{name}` that is not one of
/// its segments. `{store_hash}` in a URL is the provider's own placeholder and stays when the
/// pattern has no such segment; `{{...}}` (the `http` provider's templates) is left alone.
fn prepare_sets(root: &mut DeTable<'_>) -> (Vec<Problem>, Vec<Option<Vec<String>>>) {
    let mut problems = Vec::new();
    let mut all = Vec::new();
    let Some(sets) = root.get_mut("credential_sets") else {
        return (problems, all);
    };
    let DeValue::Array(sets) = sets.get_mut() else {
        return (problems, all);
    };
    for (index, set) in sets.iter_mut().enumerate() {
        all.push(None);
        let DeValue::Table(table) = set.get_mut() else {
            continue;
        };
        let segments: Vec<String> = match table.get("path").map(|p| (p.get_ref(), p.span())) {
            Some((DeValue::String(path), span)) => match super::sets::Pattern::parse("", path) {
                Ok(pattern) => pattern.segments().map(str::to_string).collect(),
                Err(problem) => {
                    problems.push(Problem::new(
                        format!("credential_sets[{index}].path"),
                        Some(span),
                        format!("invalid pattern `{}`: {problem}", redact_url(path)),
                    ));
                    continue;
                }
            },
            _ => continue,
        };
        for (key, value) in table.iter_mut() {
            if key.get_ref().as_ref() == "name" {
                continue;
            }
            let key = format!("credential_sets[{index}].{}", key.get_ref());
            fill_segments(&key, value, &segments, &mut problems);
        }
        all[index] = Some(segments);
    }
    (problems, all)
}

fn fill_segments(
    key: &str,
    value: &mut Spanned<DeValue<'_>>,
    segments: &[String],
    problems: &mut Vec<Problem>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) => {
            let mut filled = String::with_capacity(text.len());
            let mut rest: &str = text.as_ref();
            while let Some(open) = rest.find('{') {
                filled.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                if let Some(inner) = after.strip_prefix('{') {
                    // `{{...}}`: a template of the `http` provider, kept whole.
                    let end = inner.find("}}").map_or(inner.len(), |e| e + 2);
                    filled.push_str("{{");
                    filled.push_str(&inner[..end]);
                    rest = &inner[end..];
                    continue;
                }
                let Some(close) = after.find('}') else {
                    filled.push('{');
                    rest = after;
                    continue;
                };
                let name = &after[..close];
                let named = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !named {
                    // Not a segment's name (a JSON text, say): written as it is.
                    filled.push('{');
                    rest = after;
                    continue;
                }
                match segments.iter().position(|s| s == name) {
                    Some(i) => filled.push_str(&super::sets::marker(i)),
                    // The provider's own placeholder in its URLs.
                    None if name == "store_hash"
                        && (key.ends_with("_url") || key.ends_with(".api_path")) =>
                    {
                        filled.push_str("{store_hash}")
                    }
                    None => {
                        problems.push(Problem::new(
                            key,
                            Some(span.clone()),
                            format!(
                                "unknown segment `{{{name}}}`; the pattern's segments: {}",
                                segments
                                    .iter()
                                    .map(|s| format!("{{{s}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                        filled.push('{');
                        filled.push_str(name);
                        filled.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            filled.push_str(rest);
            *text = filled.into();
        }
        DeValue::Table(table) => {
            for (k, v) in table.iter_mut() {
                let key = format!("{key}.{}", k.get_ref());
                fill_segments(&key, v, segments, problems);
            }
        }
        DeValue::Array(array) => {
            for (i, v) in array.iter_mut().enumerate() {
                fill_segments(&format!("{key}[{i}]"), v, segments, problems);
            }
        }
        _ => {}
    }
}

/// The dotted key path of the innermost key or value that contains `offset`.
fn key_at(table: &DeTable<'_>, offset: usize) -> String {
    let mut path = String::new();
    find_in_table(table, offset, &mut path);
    path
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let before = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        // Look inside first: a table's own span is only its header, so the match for a value in a
        // `[table]` is found among its children, not by the table's span.
        if find_in_value(value.get_ref(), offset, path) {
            return true;
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return true;
        }
        path.truncate(before);
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut String) -> bool {
    match value {
        DeValue::Table(table) => find_in_table(table, offset, path),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                let before = path.len();
                path.push_str(&format!("[{index}]"));
                if find_in_value(item.get_ref(), offset, path) || item.span().contains(&offset) {
                    return true;
                }
                path.truncate(before);
            }
            false
        }
        _ => false,
    }
}

/// Serde names the Rust type it expected; say what to write instead.
fn plain_message(message: &str) -> String {
    let message = message.trim();
    if message.contains("expected struct RawVaultField") {
        // Most likely a secret written where a reference to it belongs. Serde's message quotes the
        // value it found, so it is dropped: the error must not repeat the secret.
        return "expected a Vault reference { path = \"...\", key = \"...\" }; secret values do not \
                belong in this file: store the secret in Vault and reference it here"
            .to_string();
    }
    let message = match message.split_once("expected struct Raw") {
        Some((before, _)) => format!("{before}expected a table"),
        None => message.to_string(),
    };
    redact_quoted(&message)
}

/// Serde and the TOML parser quote the value they found (`invalid type: string "..."`); a URL's
/// user info or query string in it must not reach the output.
fn redact_quoted(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = &rest[open..open + 1];
        let inner = &rest[open + 1..];
        // Serde quotes strings with `{:?}`, so an escaped quote does not end the value.
        let close = inner
            .char_indices()
            .find(|&(i, c)| c.to_string() == quote && !inner[..i].ends_with('\\'))
            .map(|(i, _)| i);
        out.push_str(&rest[..=open]);
        let Some(close) = close else {
            // No end in sight: everything after the opening quote may be the value.
            out.push_str(&redact_url(inner));
            return out;
        };
        out.push_str(&redact_url(&inner[..close]));
        out.push_str(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}
