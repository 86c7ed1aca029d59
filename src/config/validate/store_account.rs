//! `bigcommerce_store_account`.

use toml::Spanned;

use super::storefront::DEFAULT_BIGCOMMERCE_API_URL;
use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
    pub(super) fn store_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawStoreAccount>,
    ) -> Option<StoreAccountConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let store_hash = self
            .required(&raw.store_hash, &key("store_hash"), table.clone())
            .and_then(|hash| self.store_hash(&key("store_hash"), hash));
        let api_url = self.url_or(
            &key("api_url"),
            &raw.api_url,
            DEFAULT_BIGCOMMERCE_API_URL,
            store_hash.as_deref(),
        );
        let required_scopes = self
            .required(&raw.required_scopes, &key("required_scopes"), table)
            .and_then(|scopes| {
                if scopes.get_ref().is_empty() {
                    self.bad(
                        &key("required_scopes"),
                        scopes,
                        "must name at least one scope, e.g. { store_v2_information = \"read-only\" }",
                    );
                    return None;
                }
                let mut all = Some(Vec::new());
                for (name, level) in scopes.get_ref() {
                    let scope_key = format!("{prefix}.required_scopes.{name}");
                    let name_ok = is_identifier(name);
                    if !name_ok {
                        self.bad(
                            &scope_key,
                            level,
                            format!("scope name `{name}` must be lowercase letters, digits and '_'"),
                        );
                    }
                    let level = match level.get_ref().as_str() {
                        "read-only" => Some(ScopeLevel::ReadOnly),
                        "modify" => Some(ScopeLevel::Modify),
                        other => {
                            self.bad(
                                &scope_key,
                                level,
                                format!("unknown scope level `{other}`; known levels: read-only, modify"),
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
            });
        Some(StoreAccountConfig {
            api_url: api_url?,
            store_hash: store_hash?,
            required_scopes: required_scopes?,
        })
    }
}

pub(super) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
