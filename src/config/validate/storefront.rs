//! `bigcommerce_storefront`.

use toml::Spanned;

use super::values::{check_url, quote};
use super::{Home, Validator};
use crate::config::model::*;
use crate::config::raw::*;

pub(super) const DEFAULT_BIGCOMMERCE_API_URL: &str = "https://api.bigcommerce.com";
const DEFAULT_STOREFRONT_URL: &str = "https://store-{store_hash}.mybigcommerce.com";
const PRIVATE_TOKEN_SCOPES: [&str; 3] = ["Unauthenticated", "Customer", "B2B"];

impl Validator<'_> {
    pub(super) fn storefront(
        &mut self,
        prefix: &str,
        raw: &Spanned<RawStorefront>,
        home: Home<'_>,
    ) -> Option<StorefrontConfig> {
        let key = |name: &str| format!("{prefix}.{name}");
        let table = raw.span();
        let raw = raw.get_ref();

        let (store_hash, api_url) = self.store(
            prefix,
            table.clone(),
            &raw.store_hash,
            ("api_url", &raw.api_url, DEFAULT_BIGCOMMERCE_API_URL),
        );
        let storefront_url = self.url_or(
            &key("storefront_url"),
            &raw.storefront_url,
            DEFAULT_STOREFRONT_URL,
            store_hash.as_deref(),
        );
        let access_token = self.require(
            &raw.access_token,
            &key("access_token"),
            table.clone(),
            |v, key, field| v.vault_field(key, field, home),
        );

        let kind = match &raw.kind {
            None => Some(StorefrontTokenKind::Storefront),
            Some(kind) => match kind.get_ref().as_str() {
                "storefront" => Some(StorefrontTokenKind::Storefront),
                "private" => Some(StorefrontTokenKind::Private),
                "customer_impersonation" => Some(StorefrontTokenKind::CustomerImpersonation),
                other => {
                    self.bad(
                        &key("kind"),
                        kind,
                        format!("unknown token kind {}; known kinds: storefront, private, customer_impersonation", quote(other)),
                    );
                    None
                }
            },
        };

        let channel_ids = self.require(
            &raw.channel_ids,
            &key("channel_ids"),
            table.clone(),
            |v, key, ids| {
                if ids.get_ref().is_empty() {
                    v.bad(key, ids, "must list at least one channel id");
                    return None;
                }
                let mut all = Some(Vec::new());
                for (i, id) in ids.get_ref().iter().enumerate() {
                    let checked = match u32::try_from(*id.get_ref()) {
                        Ok(id) if id >= 1 => Some(id),
                        _ => {
                            v.bad(
                                &format!("{prefix}.channel_ids[{i}]"),
                                id,
                                format!(
                                    "channel id must be a whole number >= 1, got {}",
                                    id.get_ref()
                                ),
                            );
                            None
                        }
                    };
                    match (checked, all.as_mut()) {
                        (Some(id), Some(all)) => all.push(id),
                        _ => all = None,
                    }
                }
                all
            },
        );

        let allowed_cors_origins = match &raw.allowed_cors_origins {
            None => Some(Vec::new()),
            Some(origins) => {
                let mut ok = true;
                if kind.is_some_and(|k| k != StorefrontTokenKind::Storefront) {
                    self.bad(
                        &key("allowed_cors_origins"),
                        origins,
                        "only tokens of kind `storefront` take allowed_cors_origins",
                    );
                    ok = false;
                }
                if origins.get_ref().len() > 2 {
                    self.bad(
                        &key("allowed_cors_origins"),
                        origins,
                        format!(
                            "at most 2 origins are allowed, got {}",
                            origins.get_ref().len()
                        ),
                    );
                    ok = false;
                }
                let mut all = Vec::new();
                for (i, origin) in origins.get_ref().iter().enumerate() {
                    match self.origin(&format!("{prefix}.allowed_cors_origins[{i}]"), origin) {
                        Some(origin) => all.push(origin),
                        None => ok = false,
                    }
                }
                ok.then_some(all)
            }
        };

        let scopes = match (&raw.scopes, kind) {
            (None, Some(StorefrontTokenKind::Private)) => {
                self.error(
                    key("scopes"),
                    Some(table),
                    format!(
                        "tokens of kind `private` need `scopes`, a non-empty subset of {}",
                        PRIVATE_TOKEN_SCOPES.join(", ")
                    ),
                );
                None
            }
            (None, _) => Some(Vec::new()),
            (Some(scopes), Some(StorefrontTokenKind::Private)) => {
                self.private_scopes(&key("scopes"), scopes)
            }
            (Some(scopes), _) => {
                self.bad(
                    &key("scopes"),
                    scopes,
                    "only tokens of kind `private` take scopes",
                );
                None
            }
        };

        Some(StorefrontConfig {
            api_url: api_url?,
            storefront_url: storefront_url?,
            store_hash: store_hash?,
            access_token: access_token?,
            kind: kind?,
            channel_ids: channel_ids?,
            allowed_cors_origins: allowed_cors_origins?,
            scopes: scopes?,
        })
    }

    pub(super) fn private_scopes(
        &mut self,
        key: &str,
        scopes: &Spanned<Vec<Spanned<String>>>,
    ) -> Option<Vec<String>> {
        if scopes.get_ref().is_empty() {
            self.bad(
                key,
                scopes,
                format!(
                    "must list at least one of {}",
                    PRIVATE_TOKEN_SCOPES.join(", ")
                ),
            );
            return None;
        }
        let mut all: Option<Vec<String>> = Some(Vec::new());
        for (i, scope) in scopes.get_ref().iter().enumerate() {
            let name = scope.get_ref();
            let problem = if !PRIVATE_TOKEN_SCOPES.contains(&name.as_str()) {
                Some(format!(
                    "unknown scope {}; known scopes: {}",
                    quote(name),
                    PRIVATE_TOKEN_SCOPES.join(", ")
                ))
            } else if all.as_ref().is_some_and(|all| all.contains(name)) {
                Some(format!("scope {} is listed twice", quote(name)))
            } else {
                None
            };
            match (problem, all.as_mut()) {
                (Some(problem), _) => {
                    self.bad(&format!("{key}[{i}]"), scope, problem);
                    all = None;
                }
                (None, Some(all)) => all.push(name.clone()),
                (None, None) => {}
            }
        }
        all
    }
    /// A CORS origin: scheme, host and optional port, nothing else.
    pub(super) fn origin(&mut self, key: &str, value: &Spanned<String>) -> Option<String> {
        let origin = value.get_ref();
        let problem = match check_url(origin) {
            Err(problem) => Some(problem.to_string()),
            Ok(())
                if origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| rest.contains(['/', '?', '#'])) =>
            {
                Some("an origin is scheme://host[:port], without a path".to_string())
            }
            Ok(()) => None,
        };
        match problem {
            Some(problem) => {
                self.bad(
                    key,
                    value,
                    format!("invalid origin {}: {problem}", quote(origin)),
                );
                None
            }
            None => Some(origin.clone()),
        }
    }
}
