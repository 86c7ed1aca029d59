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
            Self::required_scopes,
        );
        Some(StoreAccountConfig {
            api_url: api_url?,
            store_hash: store_hash?,
            required_scopes: required_scopes?,
        })
    }

    fn required_scopes(
        &mut self,
        key: &str,
        scopes: &Spanned<BTreeMap<String, Spanned<String>>>,
    ) -> Option<Vec<(String, ScopeLevel)>> {
        if scopes.get_ref().is_empty() {
            self.bad(
                key,
                scopes,
                "must name at least one scope, e.g. { information_and_settings = \"read-only\" }",
            );
            return None;
        }
        let mut all = Some(Vec::new());
        for (name, level) in scopes.get_ref() {
            let scope_key = format!("{key}.{name}");
            let name_ok = KNOWN_SCOPES.contains(&name.as_str());
            if !name_ok {
                let hint = match nearest(name, &KNOWN_SCOPES) {
                    Some(known) => format!(" (did you mean `{known}`?)"),
                    None => String::new(),
                };
                self.bad(
                    &scope_key,
                    level,
                    format!(
                        "unknown scope {}{hint}; known scopes: {}",
                        quote(name),
                        KNOWN_SCOPES.join(", ")
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
                            "unknown scope level {}; known levels: read-only, modify",
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
