//! `bigcommerce_store_account`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::storefront::DEFAULT_BIGCOMMERCE_API_URL;
use super::values::{nearest, quote};
use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

/// The resources of a store-level API account's OAuth scopes, as the control panel lists them
/// (Settings > Store-level API accounts), in snake case: what the provider probes one endpoint for.
///
/// An unknown name is an error, not a warning: the provider can neither grant nor probe a scope it
/// does not know, so the rotation would fail on the day it runs rather than today.
pub const KNOWN_SCOPES: [&str; 15] = [
    "content",
    "customers",
    "information_and_settings",
    "marketing",
    "orders",
    "order_transactions",
    "products",
    "carts",
    "checkouts",
    "themes",
    "sites_and_routes",
    "channel_settings",
    "channel_listings",
    "storefront_api_tokens",
    "storefront_api_customer_impersonation",
];

/// What a store-level account's token is checked on by default: documented for validating
/// authentication.
pub const DEFAULT_STORE_PROBE: &str = "v2/time";

/// The resources of a legacy account's or user's permissions that the legacy API path serves
/// (`required_permissions`), each probed on one endpoint under the API path.
pub const KNOWN_PERMISSIONS: [&str; 6] = [
    "content",
    "customers",
    "information_and_settings",
    "marketing",
    "orders",
    "products",
];

impl Validator<'_> {
    pub(super) fn store_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawStoreAccount>,
    ) -> Option<StoreAccountConfig> {
        let table = raw.span();
        let raw = raw.get_ref();
        let (store_hash, api_url) = self.store(
            prefix,
            table.clone(),
            &raw.store_hash,
            ("api_url", &raw.api_url, DEFAULT_BIGCOMMERCE_API_URL),
        );
        let required_scopes = self.require(
            &raw.required_scopes,
            &format!("{prefix}.required_scopes"),
            table,
            |v, key, scopes| v.levels(key, scopes, &KNOWN_SCOPES, "scope"),
        );
        let probe = self.probe(&format!("{prefix}.probe"), &raw.probe, DEFAULT_STORE_PROBE);
        Some(StoreAccountConfig {
            api_url: api_url?,
            store_hash: store_hash?,
            required_scopes: required_scopes?,
            probe: probe?,
        })
    }

    /// The resource an assisted provider's token is checked on: a relative path (letters,
    /// digits, `-`, `_`, `.`, `/`; no `..`, no query), `default` when absent.
    pub(super) fn probe(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: &str,
    ) -> Option<String> {
        let Some(value) = value else {
            return Some(default.to_string());
        };
        let text = value.get_ref().trim();
        let ok = !text.is_empty()
            && text.len() <= 200
            && !text.starts_with('/')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            && !text.split('/').any(|seg| seg == ".." || seg == ".");
        if ok {
            Some(text.to_string())
        } else {
            self.bad(
                key,
                value,
                format!(
                    "must be a path relative to the API path, such as {}: letters, digits, '-', '_', '.' and '/', without a leading '/', '..' or a query (at most 200 characters)",
                    quote(default)
                ),
            );
            None
        }
    }

    /// A table of resource -> "read-only" | "modify" (`what`: "scope" or "permission"), each
    /// resource one of `known`.
    pub(super) fn levels(
        &mut self,
        key: &str,
        scopes: &Spanned<BTreeMap<String, Spanned<String>>>,
        known: &[&str],
        what: &str,
    ) -> Option<Vec<(String, ScopeLevel)>> {
        if scopes.get_ref().is_empty() {
            self.bad(
                key,
                scopes,
                format!("must name at least one {what}, e.g. {{ information_and_settings = \"read-only\" }}"),
            );
            return None;
        }
        let mut all = Some(Vec::new());
        for (name, level) in scopes.get_ref() {
            let scope_key = format!("{key}.{name}");
            let name_ok = known.contains(&name.as_str());
            if !name_ok {
                let hint = match nearest(name, known) {
                    Some(known) => format!(" (did you mean `{known}`?)"),
                    None => String::new(),
                };
                self.bad(
                    &scope_key,
                    level,
                    format!(
                        "unknown {what} {}{hint}; known {what}s: {}",
                        quote(name),
                        known.join(", ")
                    ),
                );
            }
            let level = match level.get_ref().as_str() {
                "read-only" => Some(ScopeLevel::ReadOnly),
                "modify" => Some(ScopeLevel::Modify),
                other => {
                    self.bad(
                        &scope_key,
                        level,
                        format!(
                            "unknown {what} level {}; known levels: read-only, modify",
                            quote(other)
                        ),
                    );
                    None
                }
            };
            match (name_ok, level, all.as_mut()) {
                (true, Some(level), Some(all)) => all.push((name.clone(), level)),
                _ => all = None,
            }
        }
        all
    }
}
