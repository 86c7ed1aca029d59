//! `bigcommerce_legacy_account` and `bigcommerce_user_token`: the same keys, the same checks.

use toml::Spanned;

use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_LEGACY_API_PATH: &str = "https://store-{store_hash}.mybigcommerce.com/api/v2/";

impl Validator<'_> {
    /// `bigcommerce_legacy_account` and `bigcommerce_user_token`.
    pub(super) fn basic_auth_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawBasicAuthAccount>,
    ) -> Option<BasicAuthAccountConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();
        let store_hash = self
            .required(&raw.store_hash, &key("store_hash"), table.clone())
            .and_then(|hash| self.store_hash(&key("store_hash"), hash));
        let username = self
            .required(&raw.username, &key("username"), table)
            .and_then(|name| {
                // Basic auth joins username and token with ':', so the username cannot hold one.
                let text = name.get_ref().trim();
                if text.is_empty() || text.contains(':') {
                    self.bad(
                        &key("username"),
                        name,
                        "must be non-empty and must not contain ':'",
                    );
                    None
                } else {
                    Some(text.to_string())
                }
            });
        let api_path = self
            .url_or(
                &key("api_path"),
                &raw.api_path,
                DEFAULT_LEGACY_API_PATH,
                store_hash.as_deref(),
            )
            // Endpoints are appended to the API path (`{api_path}time`), so it ends in '/'.
            .map(|path| format!("{path}/"));
        Some(BasicAuthAccountConfig {
            store_hash: store_hash?,
            username: username?,
            api_path: api_path?,
        })
    }
}
