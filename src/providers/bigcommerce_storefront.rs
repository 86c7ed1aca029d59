//! `bigcommerce_storefront`: GraphQL storefront, private and customer impersonation tokens
//! (JWTs), minted and revoked with the store-level access token kept in Vault.
//!
//! Secret fields: `token` (the JWT), `expires_at` (RFC 3339), `kind`.
//!
//! Invariants: the access token is read from Vault for every call that needs it and kept no
//! longer than that call, so a rotated parent token is picked up at once; every request goes
//! through [`StorefrontProvider::send`], which honours the store's rate limit; no error carries
//! the JWT or the access token (messages are summarised from status + title, then redacted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, TimeZone, Utc};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::{StorefrontConfig, StorefrontTokenKind};
use crate::secret::SecretFields;
use crate::vault::Vault;

/// How many times one call is sent again after a 429 before giving up with `Transient`.
const MAX_RATE_LIMIT_RETRIES: u32 = 6;
/// Backoff for a 429 without rate-limit headers (platform overload): doubles from here...
const OVERLOAD_BACKOFF_START: Duration = Duration::from_millis(250);
/// ...up to here.
const OVERLOAD_BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Never sleep longer than this on the word of a header (BigCommerce windows are 30 s).
const MAX_HEADER_WAIT: Duration = Duration::from_secs(60);

const GRAPHQL_PROBE: &str = "{ site { settings { storeName } } }";

/// Per store: no request before this instant (the quota was seen spent). Process-wide, because
/// the quota is shared by every client of a store, and so by every credential of that store.
fn quota_gates() -> &'static Mutex<HashMap<String, Instant>> {
    static GATES: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    GATES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Which call a request belongs to: a lost answer means different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Mint,
    Verify,
    Revoke,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Mint => "mint",
            Op::Verify => "verify",
            Op::Revoke => "revoke",
        }
    }
}

/// An HTTP answer, read whole.
struct Answer {
    status: u16,
    body: Value,
}

pub struct StorefrontProvider {
    cfg: StorefrontConfig,
    vault: Arc<Vault>,
    http: reqwest::Client,
}

impl StorefrontProvider {
    pub fn new(cfg: StorefrontConfig, vault: Arc<Vault>, http: reqwest::Client) -> Self {
        StorefrontProvider { cfg, vault, http }
    }

    fn api_base(&self) -> String {
        format!(
            "{}/stores/{}/v3/storefront",
            self.cfg.api_url.trim_end_matches('/'),
            self.cfg.store_hash
        )
    }

    fn graphql_url(&self) -> String {
        format!(
            "{}/graphql",
            self.cfg
                .storefront_url
                .replace("{store_hash}", &self.cfg.store_hash)
                .trim_end_matches('/')
        )
    }

    fn gate_key(&self, url_base: &str) -> String {
        format!("{url_base}|{}", self.cfg.store_hash)
    }

    fn what(&self, op: Op) -> String {
        format!("bigcommerce store {} {}", self.cfg.store_hash, op.name())
    }

    /// The store-level access token, read fresh from Vault for this one call.
    async fn access_token(&self) -> Result<String, ProviderError> {
        let field = &self.cfg.access_token;
        let version = self.vault.read(&field.secret).await.map_err(|e| {
            let reason = format!("cannot read the store access token: {e}");
            if e.is_retryable() {
                ProviderError::Transient {
                    reason,
                    retry_after: None,
                }
            } else {
                // Not found, permission denied: the configuration or the daemon's policy is wrong.
                ProviderError::Config { reason }
            }
        })?;
        match version.data.expose(&field.key) {
            Some(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(ProviderError::Config {
                reason: format!(
                    "the store access token secret {} has no `{}` field",
                    field.secret, field.key
                ),
            }),
        }
    }

    /// Send one request, honouring the store's rate limit: wait while the quota is spent, and
    /// send again after a 429 (as long as the headers say, or a growing backoff when they say
    /// nothing). `build` makes a fresh request for every try. Transport failures are
    /// classified here; every other answer is returned for the caller to judge.
    async fn send(
        &self,
        op: Op,
        gate_key: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let mut backoff = OVERLOAD_BACKOFF_START;
        let mut retries = 0;
        loop {
            wait_for_quota(gate_key).await;
            let resp = match build().send().await {
                Ok(r) => r,
                Err(e) => return Err(self.transport_error(op, &e)),
            };
            let status = resp.status().as_u16();
            let rate = RateHeaders::parse(resp.headers());
            if rate.left == Some(0) {
                if let Some(reset) = rate.reset {
                    close_gate(gate_key, reset);
                }
            }
            if status == 429 {
                let wait = match rate.retry_wait() {
                    Some(w) => w,
                    None => {
                        // No headers: the platform is overloaded, not our quota spent.
                        let w = backoff;
                        backoff = (backoff * 2).min(OVERLOAD_BACKOFF_CAP);
                        w
                    }
                };
                if retries >= MAX_RATE_LIMIT_RETRIES {
                    return Err(ProviderError::Transient {
                        reason: format!(
                            "{}: still rate limited (429) after {retries} retries",
                            self.what(op)
                        ),
                        retry_after: Some(wait),
                    });
                }
                retries += 1;
                tracing::debug!(
                    store = %self.cfg.store_hash,
                    op = op.name(),
                    wait_ms = wait.as_millis() as u64,
                    "rate limited; waiting before sending again"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = match resp.text().await {
                Ok(t) => t,
                // The status line arrived but the body did not: for a mint, a 200 would have
                // carried the only copy of the token.
                Err(e) => return Err(self.transport_error(op, &e)),
            };
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok(Answer { status, body });
        }
    }

    /// No answer. A refused connect never reached the server: safe to send again. Anything
    /// else (timeout, connection closed) may have been processed.
    fn transport_error(&self, op: Op, e: &reqwest::Error) -> ProviderError {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out waiting for the answer"
        } else {
            "connection lost before the answer"
        };
        let reason = format!("{}: {what}", self.what(op));
        if op == Op::Mint && !e.is_connect() {
            ProviderError::UnknownOutcome {
                reason: format!("{reason}; a token may have been created"),
            }
        } else {
            ProviderError::Transient {
                reason,
                retry_after: None,
            }
        }
    }

    fn create_body(&self, req: &MintRequest) -> Result<Value, ProviderError> {
        let mut body = serde_json::Map::new();
        match self.cfg.channel_ids.as_slice() {
            [] => {
                return Err(ProviderError::Config {
                    reason: "no channel id configured".into(),
                })
            }
            [one] => {
                body.insert("channel_id".into(), json!(one));
            }
            many => {
                body.insert("channel_ids".into(), json!(many));
            }
        }
        body.insert("expires_at".into(), json!(req.expires_at.timestamp()));
        match self.cfg.kind {
            StorefrontTokenKind::Storefront => {
                if !self.cfg.allowed_cors_origins.is_empty() {
                    body.insert(
                        "allowed_cors_origins".into(),
                        json!(self.cfg.allowed_cors_origins),
                    );
                }
            }
            StorefrontTokenKind::Private => {
                body.insert("scopes".into(), json!(self.cfg.scopes));
            }
            StorefrontTokenKind::CustomerImpersonation => {}
        }
        Ok(Value::Object(body))
    }
}

fn kind_name(kind: StorefrontTokenKind) -> &'static str {
    match kind {
        StorefrontTokenKind::Storefront => "storefront",
        StorefrontTokenKind::Private => "private",
        StorefrontTokenKind::CustomerImpersonation => "customer_impersonation",
    }
}

fn create_path(kind: StorefrontTokenKind) -> &'static str {
    match kind {
        StorefrontTokenKind::Storefront => "api-token",
        StorefrontTokenKind::Private => "api-token-private",
        StorefrontTokenKind::CustomerImpersonation => "api-token-customer-impersonation",
    }
}

/// What the `X-Rate-Limit-*` / `X-Retry-After` headers of one answer say.
#[derive(Debug, Default, PartialEq)]
struct RateHeaders {
    left: Option<u64>,
    reset: Option<Duration>,
    retry_after: Option<Duration>,
}

impl RateHeaders {
    fn parse(h: &HeaderMap) -> RateHeaders {
        let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
        RateHeaders {
            left: num("x-rate-limit-requests-left"),
            reset: num("x-rate-limit-time-reset-ms").map(Duration::from_millis),
            retry_after: num("x-retry-after").map(Duration::from_secs),
        }
    }

    /// How long a 429 tells us to wait; `None` when it says nothing (platform overload).
    fn retry_wait(&self) -> Option<Duration> {
        self.reset
            .or(self.retry_after)
            .map(|w| w.min(MAX_HEADER_WAIT))
    }
}

async fn wait_for_quota(key: &str) {
    let until = quota_gates()
        .lock()
        .expect("quota gate lock poisoned")
        .get(key)
        .copied();
    if let Some(until) = until {
        if until > Instant::now() {
            tokio::time::sleep_until(until).await;
        }
    }
}

fn close_gate(key: &str, reset: Duration) {
    let until = Instant::now() + reset.min(MAX_HEADER_WAIT);
    let mut gates = quota_gates().lock().expect("quota gate lock poisoned");
    let entry = gates.entry(key.to_string()).or_insert(until);
    if *entry < until {
        *entry = until;
    }
}

/// "status 403: <title or message>", from a v3, v2 or GraphQL error body, with every known
/// secret value cut out in case the server echoed one.
fn summarise(status: u16, body: &Value, secrets: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = body.get("title").and_then(Value::as_str) {
        parts.push(t.to_string());
    }
    if let Some(fields) = body.get("errors").and_then(Value::as_object) {
        for (field, msg) in fields {
            if let Some(m) = msg.as_str() {
                parts.push(format!("{field}: {m}"));
            }
        }
    }
    // GraphQL `{"errors":[{"message":..}]}` and v2 `[{"status":..,"message":..}]`.
    let list = body
        .get("errors")
        .and_then(Value::as_array)
        .or_else(|| body.as_array());
    for e in list.into_iter().flatten() {
        if let Some(m) = e.get("message").and_then(Value::as_str) {
            parts.push(m.to_string());
        }
    }
    let mut text = if parts.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}: {}", parts.join("; "))
    };
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s, "[REDACTED]");
    }
    // A message is a summary, not a dump.
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn token_of(secret: &SecretFields) -> Result<&str, ProviderError> {
    secret
        .expose("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::Config {
            reason: "the secret has no `token` field".into(),
        })
}

#[async_trait]
impl Provider for StorefrontProvider {
    fn required_fields(&self) -> &'static [&'static str] {
        &["token"]
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: true,
            async_revocation: true,
        }
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let body = self.create_body(req)?;
        let access_token = self.access_token().await?;
        let url = format!("{}/{}", self.api_base(), create_path(self.cfg.kind));
        let answer = self
            .send(Op::Mint, &self.gate_key(&self.cfg.api_url), || {
                self.http
                    .request(Method::POST, &url)
                    .header("X-Auth-Token", &access_token)
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .json(&body)
            })
            .await?;
        let status = answer.status;
        let reason = || {
            format!(
                "{}: {}",
                self.what(Op::Mint),
                summarise(status, &answer.body, &[&access_token])
            )
        };
        match status {
            200..=299 => {
                let Some(token) = answer
                    .body
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                else {
                    // Accepted, but the token did not reach us: one may exist that nobody holds.
                    return Err(ProviderError::UnknownOutcome {
                        reason: format!(
                            "{}: status {status} without a token in the answer",
                            self.what(Op::Mint)
                        ),
                    });
                };
                // BigCommerce keeps whole seconds.
                let expires_at = Utc
                    .timestamp_opt(req.expires_at.timestamp(), 0)
                    .single()
                    .unwrap_or(req.expires_at);
                let mut secret = SecretFields::new();
                secret.insert("token", token);
                secret.insert(
                    "expires_at",
                    expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                );
                secret.insert("kind", kind_name(self.cfg.kind));
                Ok(Minted {
                    secret,
                    expires_at: Some(expires_at),
                })
            }
            // Bad access token, or it lacks "Storefront API Tokens: modify".
            401 | 403 => Err(ProviderError::Rejected { reason: reason() }),
            // The request may have been processed before the server failed.
            500 => Err(ProviderError::UnknownOutcome { reason: reason() }),
            501..=599 => Err(ProviderError::Transient {
                reason: reason(),
                retry_after: None,
            }),
            // 400/422: bad body (channel unknown, expiry in the past...); 404: no such store.
            _ => Err(ProviderError::Config { reason: reason() }),
        }
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = token_of(secret)?;
        let url = self.graphql_url();
        let answer = self
            .send(Op::Verify, &self.gate_key(&self.cfg.storefront_url), || {
                self.http
                    .request(Method::POST, &url)
                    .bearer_auth(token)
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .json(&json!({ "query": GRAPHQL_PROBE }))
            })
            .await?;
        let status = answer.status;
        let reason = || {
            format!(
                "{}: {}",
                self.what(Op::Verify),
                summarise(status, &answer.body, &[token])
            )
        };
        match status {
            200..=299 if answer.body.get("data").is_some_and(|d| !d.is_null()) => Ok(()),
            200..=299 => Err(ProviderError::Config {
                reason: format!("{}: an answer without data", reason()),
            }),
            // All GraphQL auth errors are 401 ("Unknown JWT token", "JWT is expired", ...).
            401 | 403 => Err(ProviderError::Rejected { reason: reason() }),
            500..=599 => Err(ProviderError::Transient {
                reason: reason(),
                retry_after: None,
            }),
            _ => Err(ProviderError::Config { reason: reason() }),
        }
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = token_of(secret)?;
        let access_token = self.access_token().await?;
        let url = format!("{}/api-token", self.api_base());
        let answer = self
            .send(Op::Revoke, &self.gate_key(&self.cfg.api_url), || {
                self.http
                    .request(Method::DELETE, &url)
                    .header("X-Auth-Token", &access_token)
                    .header("Sf-Api-Token", token)
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
            })
            .await?;
        let status = answer.status;
        let reason = || {
            format!(
                "{}: {}",
                self.what(Op::Revoke),
                summarise(status, &answer.body, &[token, &access_token])
            )
        };
        match status {
            // "Revocation has been scheduled": verify_revoked polls until it took effect.
            200..=299 => Ok(()),
            // The JWT is invalid, unknown or expired: nothing left to revoke.
            422 => {
                tracing::debug!(store = %self.cfg.store_hash, "revoke: token already invalid");
                Ok(())
            }
            401 | 403 => Err(ProviderError::Rejected { reason: reason() }),
            500..=599 => Err(ProviderError::Transient {
                reason: reason(),
                retry_after: None,
            }),
            _ => Err(ProviderError::Config { reason: reason() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// Response headers, then the expected `left` and 429 wait.
    type HeaderCase = (
        &'static [(&'static str, &'static str)],
        Option<u64>,
        Option<Duration>,
    );

    #[test]
    fn rate_headers_say_how_long_to_wait() {
        let cases: &[HeaderCase] = &[
            (
                &[
                    ("X-Rate-Limit-Requests-Left", "0"),
                    ("X-Rate-Limit-Time-Reset-Ms", "1500"),
                    ("X-Retry-After", "2"),
                ],
                Some(0),
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("X-Retry-After", "2")],
                None,
                Some(Duration::from_secs(2)),
            ),
            (
                &[("X-Rate-Limit-Time-Reset-Ms", "999999999")],
                None,
                Some(MAX_HEADER_WAIT),
            ),
            (&[], None, None),
            (&[("X-Rate-Limit-Time-Reset-Ms", "soon")], None, None),
        ];
        for (headers, left, wait) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *headers {
                h.insert(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_static(v),
                );
            }
            let r = RateHeaders::parse(&h);
            assert_eq!(r.left, *left, "{headers:?}");
            assert_eq!(r.retry_wait(), *wait, "{headers:?}");
        }
    }

    #[test]
    fn summaries_name_the_error_and_never_a_secret() {
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.payload.sig";
        let cases = [
            (
                403,
                json!({"status":403,"title":"You don't have a required scope to access the endpoint","type":"x","errors":{}}),
                "status 403: You don't have a required scope to access the endpoint",
            ),
            (
                422,
                json!({"status":422,"title":"Invalid input","errors":{"channel_id":"channel 9 does not exist"}}),
                "status 422: Invalid input; channel_id: channel 9 does not exist",
            ),
            (
                401,
                json!({"errors":[{"message":"Unknown JWT token"}]}),
                "status 401: Unknown JWT token",
            ),
            (
                404,
                json!([{"status":404,"message":"The requested resource was not found."}]),
                "status 404: The requested resource was not found.",
            ),
            (
                401,
                json!({"errors":[{"message":format!("bad token {jwt}")}]}),
                "status 401: bad token [REDACTED]",
            ),
            (502, Value::Null, "status 502"),
        ];
        for (status, body, expected) in cases {
            assert_eq!(summarise(status, &body, &[jwt]), expected);
        }
    }
}
