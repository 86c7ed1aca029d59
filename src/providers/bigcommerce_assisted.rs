//! The assisted BigCommerce credentials: legacy API accounts and v1-style user tokens (Basic auth
//! on the store's API path) and store-level API accounts (`X-Auth-Token`, OAuth scopes). None can
//! be regenerated through an API: a person does it in the control panel and runs
//! `secret-rotator supply NAME`; these providers verify what was supplied and say when the old
//! credential is dead.
//!
//! Secret fields:
//! - legacy account and user token: `username`, `token`, `api_path`;
//! - store account: `client_id`, `access_token`, optionally `client_secret`.
//!
//! Invariants: verification never changes store data (reads, and writes with an empty body that
//! a scoped token gets 422 for); one request per probe, no retries (the caller owns them), each
//! started when the store's rate-limit budget ([`super::rate_budget`], shared with the storefront
//! provider) has room, within [`REQUEST_TIMEOUT`] wait included; no error carries a token, a URL
//! with credentials, or an answer's body: statuses and names only.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use tokio::time::Instant;

use super::outcome;
use super::rate_budget;
use super::{secret_header, MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::{BasicAuthAccountConfig, ProviderConfig, ScopeLevel, StoreAccountConfig};
use crate::egress::SendError;
use crate::secret::SecretFields;

/// The fields a supplied store-level account needs (and may have: `account_name` is the name
/// it has in the control panel, which messages then use beside its client_id).
pub const STORE_FIELDS: &[&str] = &["client_id", "access_token"];
pub const STORE_OPTIONAL_FIELDS: &[&str] = &["client_secret", "account_name"];
/// The fields a supplied legacy account or user token needs.
pub const BASIC_FIELDS: &[&str] = &["username", "token", "api_path"];

/// The endpoint that shows a scope, under `/stores/{hash}/`: (read probe, write probe).
fn probe_paths(scope: &str) -> Option<(&'static str, &'static str)> {
    Some(match scope {
        "content" => ("v3/content/widgets", "v3/content/widgets"),
        "customers" => ("v3/customers", "v3/customers"),
        "information_and_settings" => ("v3/settings/store/profile", "v3/settings/store/profile"),
        "marketing" => ("v3/promotions", "v3/promotions"),
        "orders" => ("v2/orders", "v2/orders"),
        "order_transactions" => ("v3/orders/transactions", "v3/orders/transactions"),
        "products" => ("v3/catalog/summary", "v3/catalog/products"),
        "carts" => ("v3/carts", "v3/carts"),
        "checkouts" => ("v3/checkouts/settings", "v3/checkouts/settings"),
        "themes" => ("v3/themes", "v3/themes"),
        "sites_and_routes" => ("v3/sites", "v3/sites"),
        "channel_settings" => ("v3/channels", "v3/channels"),
        "channel_listings" => ("v3/channels/1/listings", "v3/channels/1/listings"),
        "storefront_api_tokens" => ("v3/storefront/api-token", "v3/storefront/api-token"),
        "storefront_api_customer_impersonation" => (
            "v3/storefront/api-token-customer-impersonation",
            "v3/storefront/api-token-customer-impersonation",
        ),
        _ => return None,
    })
}

/// A scope as the control panel shows it ("Information & Settings").
fn scope_label(scope: &str) -> String {
    match scope {
        "information_and_settings" => "Information & Settings".into(),
        "sites_and_routes" => "Sites & Routes".into(),
        "storefront_api_tokens" => "Storefront API Tokens".into(),
        "storefront_api_customer_impersonation" => {
            "Storefront API Customer Impersonation Tokens".into()
        }
        other => {
            let mut words: Vec<String> = other
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            if words.is_empty() {
                words.push(other.to_string());
            }
            words.join(" ")
        }
    }
}

fn level_label(level: ScopeLevel) -> &'static str {
    match level {
        ScopeLevel::ReadOnly => "read-only",
        ScopeLevel::Modify => "modify",
    }
}

/// The scopes a person must grant, one line each (`Orders: read-only`); empty for the kinds
/// without scopes. Pure: it is what `rotation.due` carries.
pub fn scopes_to_grant(provider: &ProviderConfig) -> Vec<String> {
    match provider {
        ProviderConfig::BigCommerceStoreAccount(c) => c
            .required_scopes
            .iter()
            .map(|(name, level)| format!("{}: {}", scope_label(name), level_label(*level)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The control-panel steps of an assisted kind, in the provider's own words (BigCommerce's
/// documentation of each kind), followed by how to hand the result over. Empty for automatic
/// kinds. Pure.
pub fn steps(provider: &ProviderConfig, credential: &str) -> Vec<String> {
    let supply = |fields: &str| {
        format!("Run `secret-rotator supply {credential}` and give it {fields} (JSON on stdin, or at the prompt).")
    };
    match provider {
        ProviderConfig::BigCommerceLegacyAccount(c) => vec![
            "Log into your store's control panel.".into(),
            "Select Advanced Settings, then Legacy API Accounts.".into(),
            format!(
                "Select the gears icon in the Action column of {}, then select Edit.",
                c.username
            ),
            "Select the Generate New Token button, then select Save (the old token stops working at once).".into(),
            "Copy the API Token field's value.".into(),
            supply("username, token and api_path"),
        ],
        ProviderConfig::BigCommerceUserToken(c) => vec![
            "Log into your store's control panel and navigate to the Users area.".into(),
            format!("Edit the user {}.", c.username),
            "Click the Regenerate API Token link under the input box which displays the current token.".into(),
            "Copy the token, then click the Save button (the new token takes effect on Save and the old one is revoked).".into(),
            supply("username, token and api_path"),
        ],
        ProviderConfig::BigCommerceStoreAccount(c) => vec![
            "Log into your store's control panel and navigate to Settings > Store-level API accounts.".into(),
            "Click \"+ Create API Token\" and choose the token type V2/V3 API token.".into(),
            "Fill in the account name (at least 4 characters long).".into(),
            format!(
                "Configure the API resources and permissions exactly as listed in scopes: {}.",
                scopes_to_grant(provider).join(", ")
            ),
            "Click Save and copy the Client ID, Client Secret and Access Token from the pop-up (it cannot be shown again).".into(),
            supply("client_id, access_token and client_secret"),
            format!(
                "Re-create under the new account any webhooks the old account created: they vanish with it. Then delete the old account (store {}); the daemon checks that its token is rejected.",
                c.store_hash
            ),
        ],
        _ => Vec::new(),
    }
}

/// Check that a supplied credential has what its kind needs: every required field non-empty,
/// nothing unknown. `Err` names the fields (never their values).
pub fn check_fields(provider: &ProviderConfig, secret: &SecretFields) -> Result<(), String> {
    let (required, optional): (&[&str], &[&str]) = match provider {
        ProviderConfig::BigCommerceStoreAccount(_) => (STORE_FIELDS, STORE_OPTIONAL_FIELDS),
        ProviderConfig::BigCommerceLegacyAccount(_) | ProviderConfig::BigCommerceUserToken(_) => {
            (BASIC_FIELDS, &[])
        }
        other => {
            return Err(format!(
                "provider {} is rotated automatically; nothing is supplied by hand",
                other.kind()
            ))
        }
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|f| secret.expose(f).is_none_or(|v| v.trim().is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing or empty field(s): {} (a {} needs {})",
            missing.join(", "),
            provider.kind(),
            required.join(", ")
        ));
    }
    let unknown: Vec<&str> = secret
        .keys()
        .filter(|k| !required.contains(k) && !optional.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown field(s): {} (a {} takes {})",
            unknown.join(", "),
            provider.kind(),
            required
                .iter()
                .chain(optional)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Refused here, before anything is sent: a header cannot carry them, and a pasted token
    // with a line break in it is a copy slip.
    let broken: Vec<&str> = secret
        .keys()
        .filter(|k| {
            secret
                .expose(k)
                .is_some_and(|v| v.trim().chars().any(char::is_control))
        })
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "field(s) {} hold a control character (a NUL, a line break, a tab...): nothing was sent to the store; copy the value again",
            broken.join(", ")
        ));
    }
    if let ProviderConfig::BigCommerceLegacyAccount(c) | ProviderConfig::BigCommerceUserToken(c) =
        provider
    {
        let username = secret.expose("username").unwrap_or_default().trim();
        if username != c.username {
            return Err(format!(
                "field username: this credential is configured for user {:?}; a token of another user is not taken",
                c.username
            ));
        }
        let path = secret.expose("api_path").unwrap_or_default();
        if normal_api_path(path) != normal_api_path(&c.api_path) {
            return Err(format!(
                "field api_path: the configuration's API path is {}; a token for another API path is not taken",
                c.api_path
            ));
        }
    }
    Ok(())
}

/// The fields that say which account or token a secret is: a supplied credential is new only if
/// these differ from the current one's (a store account: its access token and its client_id;
/// a legacy account or user token: its token).
pub fn identity_fields(provider: &ProviderConfig) -> &'static [&'static str] {
    match provider {
        ProviderConfig::BigCommerceStoreAccount(_) => &["access_token", "client_id"],
        _ => &["token"],
    }
}

/// Is `a` the same account or token as `b`? True when any identifying field is equal (a new
/// store account has both a new client_id and a new token: one equal field means a slip).
pub fn same_credential(provider: &ProviderConfig, a: &SecretFields, b: &SecretFields) -> bool {
    identity_fields(provider).iter().any(|f| {
        matches!((a.expose(f), b.expose(f)), (Some(x), Some(y)) if !x.trim().is_empty() && x.trim() == y.trim())
    })
}

/// The fields that belong to one account and are never carried over from the previous one
/// (a store account's client_secret and name): a supply that leaves them out of a secret that
/// had them is refused rather than written with the old account's values.
pub fn account_bound_fields(provider: &ProviderConfig) -> &'static [&'static str] {
    match provider {
        ProviderConfig::BigCommerceStoreAccount(_) => STORE_OPTIONAL_FIELDS,
        _ => &[],
    }
}

/// Which account or token a secret holds, in words a person finds it by in the control panel;
/// never a secret (a client_id is not one).
pub fn describe(provider: &ProviderConfig, secret: &SecretFields) -> String {
    match provider {
        ProviderConfig::BigCommerceStoreAccount(c) => {
            let id = secret.expose("client_id").unwrap_or("?");
            match secret
                .expose("account_name")
                .filter(|n| !n.trim().is_empty())
            {
                Some(name) => format!(
                    "store-level API account \"{name}\" (client_id {id}, store {})",
                    c.store_hash
                ),
                None => format!(
                    "store-level API account with client_id {id} (store {})",
                    c.store_hash
                ),
            }
        }
        ProviderConfig::BigCommerceLegacyAccount(c) => {
            format!("the current API token of legacy API account {}", c.username)
        }
        ProviderConfig::BigCommerceUserToken(c) => {
            format!("the current API token of user {}", c.username)
        }
        other => other.kind().to_string(),
    }
}

/// A supplied or stored secret in the form kept in Vault and compared: every string trimmed,
/// a legacy account's or user's `api_path` ending in exactly one '/' (the configured form).
pub fn normalise(provider: &ProviderConfig, secret: &SecretFields) -> SecretFields {
    let mut out = secret.clone();
    if let ProviderConfig::BigCommerceLegacyAccount(_) | ProviderConfig::BigCommerceUserToken(_) =
        provider
    {
        if let Some(path) = secret
            .expose("api_path")
            .filter(|_| secret.is_string("api_path"))
        {
            out.insert("api_path", normal_api_path(path));
        }
    }
    out
}

/// `https://Store.example/api/v2` and `https://store.example/api/v2//` alike become
/// `https://store.example/api/v2/`: trimmed, scheme and host in lower case, one trailing '/'.
pub fn normal_api_path(path: &str) -> String {
    let path = path.trim().trim_end_matches('/');
    let lowered = match path.split_once("://") {
        Some((scheme, rest)) => {
            let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!(
                "{}://{}{tail}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
        }
        None => path.to_string(),
    };
    format!("{lowered}/")
}

/// Classify an answer that is neither ok nor a named rejection. Every call here is a read or a
/// write the store refuses ([`outcome::Request::Idempotent`]): a 5xx is transient.
fn other_status(what: &str, status: u16) -> ProviderError {
    let reply = outcome::Reply::Status {
        status,
        origin_refused: false,
    };
    let reason = || format!("{what}: the store answered {status}");
    match outcome::definite(outcome::Request::Idempotent, reply, reason, None) {
        Err(e) => e,
        Ok(_) => ProviderError::Config {
            reason: format!("{what}: unexpected answer {status}"),
        },
    }
}

/// No answer: what went wrong and its innermost cause (a refused certificate, a closed
/// connection), never the URL.
fn send_error(what: &str, e: &reqwest::Error) -> ProviderError {
    let reason = format!(
        "{what}: {} ({})",
        if e.is_timeout() {
            "no answer in time"
        } else if e.is_connect() {
            "cannot connect to the store"
        } else {
            "connection lost before the answer"
        },
        crate::egress::root_cause(e)
    );
    let reply = if e.is_connect() {
        outcome::Reply::NotSent
    } else {
        outcome::Reply::Lost
    };
    outcome::no_answer(outcome::Request::Idempotent, reply, reason)
}

/// The longest one probe takes, a wait for the store's rate-limit budget included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends one probe when the budget under `budget_key` has room for it, and returns the status.
/// A 429 is `Transient` with the wait the store asked for.
async fn probe_status(
    http: &crate::egress::Client,
    budget_key: &str,
    what: &str,
    request: RequestBuilder,
) -> Result<u16, ProviderError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    // Dropped without an answer (a send error), it frees its place in the budget.
    let permit = rate_budget::reserve(budget_key, deadline, what).await?;
    let request = request.timeout(deadline.saturating_duration_since(Instant::now()));
    let resp = match http.send(request).await {
        Ok(r) => r,
        Err(SendError::Transport(e)) => return Err(send_error(what, &e)),
        // Probes create nothing: a redirect only says the address is wrong.
        Err(SendError::Redirect(r)) => return Err(super::redirected(format!("{what}: {r}"))),
    };
    let status = resp.status().as_u16();
    let rate = permit.answered(status, resp.headers());
    if status == 429 {
        return Err(ProviderError::Transient {
            reason: format!("{what}: the store answered 429"),
            retry_after: rate.retry_wait(),
        });
    }
    Ok(status)
}

/// `bigcommerce_store_account`.
pub struct StoreAccountProvider {
    cfg: StoreAccountConfig,
    http: crate::egress::Client,
    credential: String,
}

impl StoreAccountProvider {
    pub fn new(cfg: StoreAccountConfig, http: crate::egress::Client, credential: &str) -> Self {
        StoreAccountProvider {
            cfg,
            http,
            credential: credential.to_string(),
        }
    }

    async fn status(&self, method: Method, path: &str, token: &str) -> Result<u16, ProviderError> {
        let url = format!("{}/stores/{}/{path}", self.cfg.api_url, self.cfg.store_hash);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Auth-Token", secret_header(token)?)
            .header(ACCEPT, "application/json");
        if method != Method::GET {
            // An empty body: a token with the scope gets 422, nothing is created or changed.
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let what = format!("{method} /{path}");
        let budget = rate_budget::store_key(&self.cfg.api_url, &self.cfg.store_hash);
        probe_status(&self.http, &budget, &what, req).await
    }
}

#[async_trait]
impl Provider for StoreAccountProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Assisted,
            credentials_expire: false,
            async_revocation: false,
        }
    }

    fn required_fields(&self) -> &'static [&'static str] {
        STORE_FIELDS
    }

    fn assisted_steps(&self) -> Vec<String> {
        steps(
            &ProviderConfig::BigCommerceStoreAccount(self.cfg.clone()),
            &self.credential,
        )
    }

    async fn mint(&self, _req: &MintRequest) -> Result<Minted, ProviderError> {
        Err(ProviderError::Config {
            reason: "a store-level API account is created by a person in the control panel (`secret-rotator supply`)".into(),
        })
    }

    /// `GET /v2/time` (401: the token is invalid or its account deleted), then one probe per
    /// required scope: a read for read-only, an empty-body write for modify (422 means the scope
    /// is granted). A 403 names the missing scope.
    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = secret
            .expose("access_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::Config {
                reason: "the credential has no access_token field".into(),
            })?;
        let probe = &self.cfg.probe;
        match self.status(Method::GET, probe, token).await? {
            200..=299 => {}
            401 => {
                return Err(ProviderError::Rejected {
                    reason: format!(
                        "GET /{probe}: 401: the access token is invalid or its account was deleted"
                    ),
                })
            }
            // Authenticated, without the scope of the probe: its own probe below names it if
            // the config requires it.
            403 => {}
            s => return Err(other_status(&format!("GET /{probe}"), s)),
        }
        for (scope, level) in &self.cfg.required_scopes {
            let Some((read, write)) = probe_paths(scope) else {
                return Err(ProviderError::Config {
                    reason: format!("no probe is known for scope {scope}"),
                });
            };
            let (method, path) = match level {
                ScopeLevel::ReadOnly => (Method::GET, read),
                ScopeLevel::Modify => (Method::POST, write),
            };
            let status = self.status(method.clone(), path, token).await?;
            let what = format!("scope {scope} ({})", level_label(*level));
            match (level, status) {
                (ScopeLevel::ReadOnly, 200..=299) | (ScopeLevel::Modify, 400 | 422) => {}
                (_, 403) => {
                    return Err(ProviderError::Rejected {
                        reason: format!(
                            "missing scope {scope} ({}): {method} /{path} answered 403; grant {}: {} to the account",
                            level_label(*level),
                            scope_label(scope),
                            level_label(*level)
                        ),
                    })
                }
                (_, 401) => {
                    return Err(ProviderError::Rejected {
                        reason: format!("{what}: 401: the access token was rejected"),
                    })
                }
                (_, s) => return Err(other_status(&what, s)),
            }
        }
        Ok(())
    }

    async fn revoke(&self, _secret: &SecretFields) -> Result<(), ProviderError> {
        Err(ProviderError::Config {
            reason: "a store-level API account is deleted by a person in the control panel".into(),
        })
    }

    /// The old account is dead when its token gets 401 (deleted); anything else means alive or
    /// unknown.
    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        let token = secret.expose("access_token").unwrap_or_default();
        let probe = &self.cfg.probe;
        match self.status(Method::GET, probe, token).await? {
            401 => Ok(true),
            200..=299 | 403 => Ok(false),
            s => Err(other_status(&format!("GET /{probe}"), s)),
        }
    }
}

/// Which Basic-auth kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicKind {
    Legacy,
    User,
}

/// `bigcommerce_legacy_account` and `bigcommerce_user_token`.
pub struct BasicAuthProvider {
    cfg: BasicAuthAccountConfig,
    kind: BasicKind,
    http: crate::egress::Client,
    credential: String,
}

impl BasicAuthProvider {
    pub fn new(
        cfg: BasicAuthAccountConfig,
        kind: BasicKind,
        http: crate::egress::Client,
        credential: &str,
    ) -> Self {
        BasicAuthProvider {
            cfg,
            kind,
            http,
            credential: credential.to_string(),
        }
    }

    fn config(&self) -> ProviderConfig {
        match self.kind {
            BasicKind::Legacy => ProviderConfig::BigCommerceLegacyAccount(self.cfg.clone()),
            BasicKind::User => ProviderConfig::BigCommerceUserToken(self.cfg.clone()),
        }
    }

    /// `method {api_path}{resource}` with Basic auth (an empty JSON body for a write); always on
    /// the configured API path (never one a supplied credential names). Returns the status and
    /// the request's words for messages.
    async fn status(
        &self,
        secret: &SecretFields,
        method: Method,
        resource: &str,
    ) -> Result<(u16, String), ProviderError> {
        let token = secret
            .expose("token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::Config {
                reason: "the credential has no token field".into(),
            })?;
        let username = secret.expose("username").unwrap_or(&self.cfg.username);
        let url = format!("{}{resource}", self.cfg.api_path);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .basic_auth(username, Some(token))
            .header(ACCEPT, "application/json");
        if method != Method::GET {
            // An empty body: a user with the permission gets 400 or 422, nothing changes.
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let what = format!("{method} {url}");
        // The legacy API path has a quota of its own (a rolling hour), apart from the REST API's.
        let budget = rate_budget::store_key(&self.cfg.api_path, &self.cfg.store_hash);
        let status = probe_status(&self.http, &budget, &what, request).await?;
        Ok((status, what))
    }
}

/// The endpoint under the legacy API path that shows a permission.
fn permission_probe(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "information_and_settings" => "time",
        "orders" => "orders",
        "products" => "products",
        "customers" => "customers",
        "marketing" => "coupons",
        "content" => "pages",
        _ => return None,
    })
}

#[async_trait]
impl Provider for BasicAuthProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Assisted,
            credentials_expire: false,
            async_revocation: false,
        }
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["username", "token"]
    }

    fn assisted_steps(&self) -> Vec<String> {
        steps(&self.config(), &self.credential)
    }

    fn old_dies_at_supply(&self) -> bool {
        true
    }

    async fn mint(&self, _req: &MintRequest) -> Result<Minted, ProviderError> {
        Err(ProviderError::Config {
            reason: "this token is regenerated by a person in the control panel (`secret-rotator supply`)".into(),
        })
    }

    /// Basic auth on the configured probe (`time` unless `probe` says otherwise): a 2xx or a
    /// 403 proves the store knows the token, a 401 rejects it. Then, only when the config asks
    /// (`required_permissions`), one probe per permission: a 403 names the missing one.
    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let (status, what) = self.status(secret, Method::GET, &self.cfg.probe).await?;
        match status {
            200..=299 | 403 => {}
            401 => {
                return Err(ProviderError::Rejected {
                    reason: format!("{what}: 401: the username or token is invalid (regenerated since, or API access off)"),
                })
            }
            s => return Err(other_status(&what, s)),
        }
        for (resource, level) in &self.cfg.required_permissions {
            let Some(path) = permission_probe(resource) else {
                return Err(ProviderError::Config {
                    reason: format!("no probe is known for permission {resource}"),
                });
            };
            let method = match level {
                ScopeLevel::ReadOnly => Method::GET,
                ScopeLevel::Modify => Method::POST,
            };
            let (status, what) = self.status(secret, method, path).await?;
            match (level, status) {
                (ScopeLevel::ReadOnly, 200..=299) | (ScopeLevel::Modify, 400 | 422) => {}
                (_, 403) => {
                    return Err(ProviderError::Rejected {
                        reason: format!(
                            "missing permission {resource} ({}): {what} answered 403; grant {}: {} to {}",
                            level_label(*level),
                            scope_label(resource),
                            level_label(*level),
                            self.cfg.username
                        ),
                    })
                }
                (_, 401) => {
                    return Err(ProviderError::Rejected {
                        reason: format!("{what}: 401: the username or token was rejected"),
                    })
                }
                (_, s) => return Err(other_status(&what, s)),
            }
        }
        Ok(())
    }

    async fn revoke(&self, _secret: &SecretFields) -> Result<(), ProviderError> {
        Err(ProviderError::Config {
            reason: "this token is revoked by regenerating it in the control panel".into(),
        })
    }

    async fn verify_revoked(&self, secret: &SecretFields) -> Result<bool, ProviderError> {
        let (status, what) = self.status(secret, Method::GET, &self.cfg.probe).await?;
        match status {
            401 => Ok(true),
            200..=299 | 403 => Ok(false),
            s => Err(other_status(&what, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ProviderConfig {
        ProviderConfig::BigCommerceStoreAccount(StoreAccountConfig {
            api_url: "https://api.bigcommerce.com".into(),
            store_hash: "abc123".into(),
            required_scopes: vec![
                ("information_and_settings".into(), ScopeLevel::ReadOnly),
                ("orders".into(), ScopeLevel::Modify),
            ],
            probe: "v2/time".into(),
        })
    }

    fn legacy() -> ProviderConfig {
        ProviderConfig::BigCommerceLegacyAccount(BasicAuthAccountConfig {
            store_hash: "abc123".into(),
            username: "legacy-app".into(),
            api_path: "https://store-abc123.mybigcommerce.com/api/v2/".into(),
            probe: "time".into(),
            required_permissions: vec![],
        })
    }

    #[test]
    fn every_known_scope_and_permission_has_a_probe() {
        for scope in crate::config::KNOWN_SCOPES {
            assert!(probe_paths(scope).is_some(), "{scope}");
        }
        for permission in crate::config::KNOWN_PERMISSIONS {
            assert!(permission_probe(permission).is_some(), "{permission}");
        }
    }

    #[test]
    fn a_credential_is_the_same_when_its_identifying_secret_is() {
        let f = |pairs: &[(&str, &str)]| {
            let mut f = SecretFields::new();
            for (k, v) in pairs {
                f.insert(k, *v);
            }
            f
        };
        let current = f(&[
            ("client_id", "c1"),
            ("access_token", "t1"),
            ("client_secret", "s1"),
        ]);
        // (provider, supplied, the same credential?)
        let cases = [
            (
                store(),
                f(&[("client_id", "c1"), ("access_token", "t1")]),
                true,
            ),
            (
                store(),
                f(&[("client_id", "c2"), ("access_token", "t1")]),
                true,
            ),
            (
                store(),
                f(&[("client_id", "c1"), ("access_token", "t2")]),
                true,
            ),
            (
                store(),
                f(&[
                    ("client_id", "c2"),
                    ("access_token", "t2"),
                    ("client_secret", "s1"),
                ]),
                false,
            ),
        ];
        for (provider, supplied, same) in cases {
            assert_eq!(
                same_credential(&provider, &supplied, &current),
                same,
                "{supplied:?}"
            );
        }
        let stored = f(&[
            ("username", "u"),
            ("token", "t"),
            ("api_path", "https://s.example/api/v2/"),
            ("note", "n"),
        ]);
        let supplied = f(&[
            ("username", "u"),
            ("token", "t"),
            ("api_path", "https://s.example/api/v2"),
        ]);
        assert!(same_credential(&legacy(), &supplied, &stored));
        assert!(!same_credential(&legacy(), &f(&[("token", "t2")]), &stored));
    }

    #[test]
    fn api_paths_are_normalised() {
        for (given, expected) in [
            ("https://s.example/api/v2", "https://s.example/api/v2/"),
            (" https://S.Example/api/v2// ", "https://s.example/api/v2/"),
            (
                "HTTP://s.example:8080/Store/api/v2/",
                "http://s.example:8080/Store/api/v2/",
            ),
        ] {
            assert_eq!(normal_api_path(given), expected, "{given}");
        }
        let supplied = SecretFields::new().with("api_path", "https://s.example/api/v2");
        assert_eq!(
            normalise(&legacy(), &supplied).expose("api_path"),
            Some("https://s.example/api/v2/")
        );
    }

    #[test]
    fn store_account_steps_name_the_exact_scopes_and_the_webhooks() {
        assert_eq!(
            scopes_to_grant(&store()),
            ["Information & Settings: read-only", "Orders: modify"]
        );
        let text = steps(&store(), "shop").join("\n");
        assert!(
            text.contains("Settings > Store-level API accounts"),
            "{text}"
        );
        assert!(text.contains("Orders: modify"), "{text}");
        assert!(text.contains("webhooks"), "{text}");
        assert!(text.contains("secret-rotator supply shop"), "{text}");
        assert!(scopes_to_grant(&legacy()).is_empty());
        assert!(steps(&legacy(), "l")
            .join(" ")
            .contains("Generate New Token"));
    }

    #[test]
    fn supplied_fields_are_checked_per_kind() {
        let s = |pairs: &[(&str, &str)]| {
            let mut f = SecretFields::new();
            for (k, v) in pairs {
                f.insert(k, *v);
            }
            f
        };
        let path = "https://store-abc123.mybigcommerce.com/api/v2/";
        // (provider, fields, expected error fragment; "" = accepted)
        let cases: Vec<(ProviderConfig, SecretFields, &str)> = vec![
            (store(), s(&[("client_id", "c"), ("access_token", "t")]), ""),
            (
                store(),
                s(&[
                    ("client_id", "c"),
                    ("access_token", "t"),
                    ("client_secret", "x"),
                ]),
                "",
            ),
            (
                store(),
                s(&[("client_id", "c")]),
                "missing or empty field(s): access_token",
            ),
            (
                store(),
                s(&[("client_id", "c"), ("access_token", " ")]),
                "access_token",
            ),
            (
                store(),
                s(&[("client_id", "c"), ("access_token", "t"), ("token", "t")]),
                "unknown field(s): token",
            ),
            (
                legacy(),
                s(&[
                    ("username", "legacy-app"),
                    ("token", "t"),
                    ("api_path", path),
                ]),
                "",
            ),
            (
                legacy(),
                s(&[("username", "other"), ("token", "t"), ("api_path", path)]),
                "field username",
            ),
            (
                legacy(),
                s(&[
                    ("username", "legacy-app"),
                    ("token", "t"),
                    ("api_path", "https://evil.example/api/v2/"),
                ]),
                "field api_path",
            ),
            (
                legacy(),
                s(&[("username", "legacy-app")]),
                "token, api_path",
            ),
            // The trailing '/' or the host's case does not make another API path.
            (
                legacy(),
                s(&[
                    ("username", "legacy-app"),
                    ("token", "t"),
                    ("api_path", "https://Store-abc123.mybigcommerce.com/api/v2"),
                ]),
                "",
            ),
            // Refused before anything is sent.
            (
                legacy(),
                s(&[
                    ("username", "legacy-app"),
                    ("token", "to\0ken"),
                    ("api_path", path),
                ]),
                "field(s) token hold a control character",
            ),
            (
                store(),
                s(&[("client_id", "c"), ("access_token", "to\nken")]),
                "field(s) access_token hold a control character",
            ),
            (
                store(),
                s(&[
                    ("client_id", "c"),
                    ("access_token", "t"),
                    ("account_name", "app-v2"),
                ]),
                "",
            ),
        ];
        for (provider, fields, expected) in cases {
            let got = check_fields(&provider, &fields).err().unwrap_or_default();
            if expected.is_empty() {
                assert_eq!(got, "", "{fields:?}");
            } else {
                assert!(got.contains(expected), "{got:?} should say {expected:?}");
            }
            assert!(!got.contains("evil"), "no value is repeated: {got}");
        }
    }
}
