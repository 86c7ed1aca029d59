//! `bigcommerce_legacy_account` and `bigcommerce_user_token`: the same keys, the same checks.

use toml::Spanned;

use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

use super::store_account::KNOWN_PERMISSIONS;

/// What a legacy account's or user's token is checked on by default (`GET {api_path}time`).
pub const DEFAULT_BASIC_PROBE: &str = "time";

const DEFAULT_LEGACY_API_PATH: &str = "https://store-{store_hash}.mybigcommerce.com/api/v2/";

impl Validator<'_> {
    /// `bigcommerce_legacy_account` and `bigcommerce_user_token`.
    pub(super) fn basic_auth_account(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawBasicAuthAccount>,
    ) -> Option<BasicAuthAccountConfig> {
        let table = raw.span();
        let raw = raw.get_ref();
        let (store_hash, api_path) = self.store(
            prefix,
            table.clone(),
            &raw.store_hash,
            ("api_path", &raw.api_path, DEFAULT_LEGACY_API_PATH),
        );
        // Endpoints are appended to the API path (`{api_path}time`), so it ends in '/'.
        let api_path = api_path.map(|path| format!("{path}/"));
        let username = self.require(
            &raw.username,
            &format!("{prefix}.username"),
            table,
            |v, key, name| {
                // Basic auth joins username and token with ':', so the username cannot hold one.
                let text = name.get_ref().trim();
                if text.is_empty() || text.contains(':') {
                    v.bad(key, name, "must be non-empty and must not contain ':'");
                    None
                } else {
                    Some(text.to_string())
                }
            },
        );
        let probe = self.probe(&format!("{prefix}.probe"), &raw.probe, DEFAULT_BASIC_PROBE);
        let required_permissions = match &raw.required_permissions {
            None => Some(Vec::new()),
            Some(map) => self.levels(
                &format!("{prefix}.required_permissions"),
                map,
                &KNOWN_PERMISSIONS,
                "permission",
            ),
        };
        Some(BasicAuthAccountConfig {
            store_hash: store_hash?,
            username: username?,
            api_path: api_path?,
            probe: probe?,
            required_permissions: required_permissions?,
        })
    }
}
