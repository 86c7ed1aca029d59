//! Checks of single values that the other files share: names, paths, URLs, Vault references.

use std::ops::Range;

use toml::Spanned;

use super::{Home, Validator};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::redact_url;

/// The longest name (credential, dependent, AppRole role, field), in characters.
pub const MAX_NAME: usize = 128;
/// The longest Vault mount or path, in characters.
pub const MAX_PATH: usize = 512;
/// The longest URL, in characters.
pub const MAX_URL: usize = 2048;
/// The longest store hash, in characters.
pub const MAX_STORE_HASH: usize = 64;

/// `Err` when `value` is longer than `max` characters.
fn within(value: &str, max: usize, what: &str) -> Result<(), String> {
    let length = value.chars().count();
    if length > max {
        return Err(format!(
            "{what} is {length} characters long; at most {max} are allowed"
        ));
    }
    Ok(())
}

/// A value too long to quote whole: its first characters.
fn head(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_string(),
    }
}

impl Validator<'_> {
    pub(super) fn name(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let name = value.get_ref();
        if let Err(problem) = within(name, MAX_NAME, "the name") {
            self.bad(
                key,
                value,
                format!("invalid name {}: {problem}", quote(&head(name))),
            );
            return None;
        }
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            self.bad(
                key,
                value,
                format!(
                    "invalid name {}: use letters, digits, '_', '.' and '-'",
                    quote(name)
                ),
            );
            return None;
        }
        Some(name.clone())
    }

    pub(super) fn store_hash(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let hash = value.get_ref();
        if let Err(problem) = within(hash, MAX_STORE_HASH, "the store hash") {
            self.bad(
                key,
                value,
                format!("invalid store hash {}: {problem}", quote(&head(hash))),
            );
            return None;
        }
        let ok = !hash.is_empty()
            && hash
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            self.bad(
                key,
                value,
                format!(
                    "invalid store hash {}: lowercase letters and digits only, e.g. `abc123`",
                    quote(hash)
                ),
            );
            return None;
        }
        Some(hash.clone())
    }

    pub(super) fn kv_path(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        match check_kv_path(value.get_ref()) {
            Ok(()) => Some(value.get_ref().clone()),
            Err(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid path {}: {problem}", quote(&head(value.get_ref()))),
                );
                None
            }
        }
    }

    pub(super) fn kv_path_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: &str,
    ) -> Option<String> {
        match value {
            None => Some(default.to_string()),
            Some(value) => self.kv_path(key, value),
        }
    }

    pub(super) fn vault_field(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawVaultField>,
        home: Home<'_>,
    ) -> Option<VaultField> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let mount = match &raw.mount {
            Some(mount) => self.kv_path(&key("mount"), mount),
            // The credential's own mount; if that one is invalid it was reported already.
            None => home.mount.map(str::to_string),
        };
        let path = self.require(&raw.path, &key("path"), table.clone(), Self::kv_path);
        let field = self.require(&raw.key, &key("key"), table.clone(), |v, key, field| {
            if field.get_ref().trim().is_empty() {
                v.bad(key, field, "must not be empty");
                None
            } else {
                Some(field.get_ref().clone())
            }
        });
        let secret = KvPath {
            mount: mount?,
            path: path?,
        };
        // Both are errors, not warnings. The state prefix holds the daemon's records, which it
        // overwrites; and a credential's own secret is replaced on every rotation, so a parent
        // credential or a signing key kept there would be lost or rotated along with it.
        if is_under(&secret, home.state) {
            self.error(
                prefix,
                Some(table.clone()),
                format!(
                    "{} is inside the daemon's own state prefix {}",
                    quote(&secret.to_string()),
                    quote(&home.state.to_string())
                ),
            );
            return None;
        }
        if home.secret == Some(&secret) {
            self.error(
                prefix,
                Some(table.clone()),
                format!(
                    "{} is this credential's own secret, which every rotation replaces; keep it in a secret of its own",
                    quote(&secret.to_string())
                ),
            );
            return None;
        }
        Some(VaultField {
            secret,
            key: field?,
        })
    }

    /// What every BigCommerce provider table starts with: the required store hash, and a base URL
    /// (`name`, as written or `default`) that may name it as `{store_hash}`.
    pub(super) fn store(
        &mut self,
        prefix: &str,
        table: Range<usize>,
        store_hash: &Option<Spanned<String>>,
        (name, url, default): (&str, &Option<Spanned<String>>, &str),
    ) -> (Option<String>, Option<String>) {
        let store_hash = self.require(
            store_hash,
            &format!("{prefix}.store_hash"),
            table,
            Self::store_hash,
        );
        let url = self.url_or(
            &format!("{prefix}.{name}"),
            url,
            default,
            store_hash.as_deref(),
        );
        (store_hash, url)
    }

    /// An http(s) URL, without a trailing '/', so paths can be appended with one.
    pub(super) fn url(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        match check_url(value.get_ref()) {
            Ok(()) => Some(value.get_ref().trim_end_matches('/').to_string()),
            Err(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid URL {}: {problem}", quote(&head(value.get_ref()))),
                );
                None
            }
        }
    }

    /// A URL with an optional `{store_hash}` placeholder, or `default` (which has one) when absent.
    /// Without a valid store hash there is nothing to check: that problem is reported already.
    pub(super) fn url_or(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: &str,
        store_hash: Option<&str>,
    ) -> Option<String> {
        let store_hash = store_hash?;
        match value {
            None => Some(
                default
                    .replace("{store_hash}", store_hash)
                    .trim_end_matches('/')
                    .to_string(),
            ),
            Some(value) => {
                let url = value.get_ref().replace("{store_hash}", store_hash);
                if url.contains(['{', '}']) {
                    self.bad(
                        key,
                        value,
                        format!(
                            "invalid URL {}: the only placeholder is {{store_hash}}",
                            quote(value.get_ref())
                        ),
                    );
                    return None;
                }
                self.url(key, &Spanned::new(value.span(), url))
            }
        }
    }
}

/// `secret` is `prefix` (a mount and a path prefix) or lies below it.
pub(super) fn is_under(secret: &KvPath, prefix: &KvPath) -> bool {
    secret.mount == prefix.mount
        && (secret.path == prefix.path
            || secret
                .path
                .strip_prefix(&prefix.path)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// A KV v2 mount or secret path: segments separated by single '/', no '.' or '..' segments.
pub(super) fn check_kv_path(path: &str) -> Result<(), String> {
    within(path, MAX_PATH, "the path")?;
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err("must not start or end with '/'".into());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("must not contain '//'".into()),
            "." | ".." => return Err("must not contain '.' or '..' segments".into()),
            _ => {}
        }
    }
    Ok(())
}

/// http or https with a host; no whitespace; no user info (which would put a secret in the file).
pub(super) fn check_url(url: &str) -> Result<(), String> {
    within(url, MAX_URL, "the URL")?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not contain a user name or password".into());
    }
    let host = match authority.rsplit_once(':') {
        // A port: digits after the last ':' (and not inside an IPv6 literal).
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
                return Err("has an invalid port".into());
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(())
}

/// A value as quoted in a message: in backticks, with what could be a URL's secret parts hidden.
/// Every value a message repeats goes through here: a URL's password or a token in its query string
/// must not reach a terminal or a log.
pub(super) fn quote(value: &str) -> String {
    format!("`{}`", redact_url(value))
}

/// The known name closest to `name`, when one is close enough to be a likely typo, or shares a
/// whole word with it (`store_v2_products` -> `products`).
pub(super) fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let close = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(distance, _)| *distance <= (name.chars().count() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k);
    close.or_else(|| {
        let words: Vec<&str> = name.split('_').filter(|w| w.len() >= 4).collect();
        known
            .iter()
            .find(|k| k.split('_').any(|w| words.contains(&w)))
            .copied()
    })
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
