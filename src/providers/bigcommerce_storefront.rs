//! `bigcommerce_storefront`: GraphQL storefront, private and customer impersonation tokens
//! (JWTs), minted and revoked with the store-level access token kept in Vault.
//!
//! Secret fields: `token` (the JWT), `expires_at` (RFC 3339), `kind`.
//!
//! Invariants: the access token is read from Vault at most [`ACCESS_TOKEN_REUSE`] before a call
//! that needs it (the Vault client keeps the read that long, in memory only), so a rotated parent
//! token is picked up within seconds, and at once when the store refuses the one reused (it is
//! read again and the refused request, which did nothing, sent once more); every request goes
//! through [`StorefrontProvider::send`], which sends it once (retrying is the caller's business),
//! waits for room in the store's rate-limit budget ([`super::rate_budget`], shared by every
//! credential of the store) only within the call's deadline, and turns a 429 into
//! [`ProviderError::Transient`] with the wait the store asked for; no error carries a URL, the
//! JWT or the access token (messages are summarised from status + title, then redacted).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::outcome::{self, Definite, Reply, Request};
use super::rate_budget;
use super::{secret_header, MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::{StorefrontConfig, StorefrontTokenKind};
use crate::egress::{Capped, SendError};
use crate::secret::SecretFields;
use crate::vault::Vault;

/// The longest one call takes, waiting for a spent quota included.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(30);

/// How long a store access token read from Vault is used again before it is read anew (a
/// rotation's mint and revoke, and a burst of rotations against one store, read it once).
pub const ACCESS_TOKEN_REUSE: Duration = Duration::from_secs(5);

const GRAPHQL_PROBE: &str = "{ site { settings { storeName } } }";

/// Which call a request belongs to: a lost answer means different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Mint,
    Verify,
    Revoke,
}

impl Op {
    /// A mint creates a token each time; a verify or a revoke does the same however often.
    fn request(self) -> Request {
        match self {
            Op::Mint => Request::NotIdempotent,
            Op::Verify | Op::Revoke => Request::Idempotent,
        }
    }

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
    /// What `X-Rate-Limit-Time-Reset-Ms` / `Retry-After` asked for, if anything.
    retry_after: Option<Duration>,
}

impl Answer {
    /// The store's own answer says it did nothing: a wait it asked for, or its JSON error
    /// body (a gateway's page is text or HTML). Only a 503 is judged by it ([`outcome`]).
    fn reply(&self) -> Reply {
        Reply::Status {
            status: self.status,
            origin_refused: self.retry_after.is_some() || !self.body.is_null(),
        }
    }

    /// [`outcome::definite`] for this answer to `op`.
    fn definite(&self, op: Op, reason: impl FnOnce() -> String) -> Result<Definite, ProviderError> {
        outcome::definite(op.request(), self.reply(), reason, self.retry_after)
    }
}

pub struct StorefrontProvider {
    cfg: StorefrontConfig,
    vault: Arc<Vault>,
    http: crate::egress::Client,
    call_deadline: Duration,
    token_reuse: Duration,
}

impl StorefrontProvider {
    pub fn new(cfg: StorefrontConfig, vault: Arc<Vault>, http: crate::egress::Client) -> Self {
        StorefrontProvider {
            cfg,
            vault,
            http,
            call_deadline: DEFAULT_CALL_DEADLINE,
            token_reuse: ACCESS_TOKEN_REUSE,
        }
    }

    /// How long a store access token read from Vault is used again ([`ACCESS_TOKEN_REUSE`]
    /// unless set; zero reads it for every call).
    pub fn with_access_token_reuse(mut self, reuse: Duration) -> Self {
        self.token_reuse = reuse;
        self
    }

    /// The longest one call may take, waiting for a spent quota included
    /// ([`DEFAULT_CALL_DEADLINE`] unless set).
    pub fn with_call_deadline(mut self, deadline: Duration) -> Self {
        self.call_deadline = deadline;
        self
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

    /// The rate-limit budget of the store behind `url_base` (the REST API, or the storefront).
    fn budget_key(&self, url_base: &str) -> String {
        rate_budget::store_key(url_base, &self.cfg.store_hash)
    }

    fn what(&self, op: Op) -> String {
        format!("bigcommerce store {} {}", self.cfg.store_hash, op.name())
    }

    /// The store-level access token: Vault's answer of less than the reuse time ago, or read
    /// now (`true`: reused).
    async fn access_token(&self) -> Result<(String, bool), ProviderError> {
        let field = &self.cfg.access_token;
        let (version, reused) = self
            .vault
            .read_recent(&field.secret, self.token_reuse)
            .await
            .map_err(|e| {
                ProviderError::parent_unreadable(
                    format!("cannot read the store access token: {e}"),
                    &e,
                )
            })?;
        match version.data.expose(&field.key) {
            Some(t) if !t.is_empty() => Ok((t.to_string(), reused)),
            _ => Err(ProviderError::Config {
                reason: format!(
                    "the store access token secret {} has no `{}` field",
                    field.secret, field.key
                ),
            }),
        }
    }

    /// [`Self::send`] with the store access token in `X-Auth-Token`. A reused token the store
    /// refuses (401, 403) may have been replaced in Vault since it was read: it is read again
    /// and the request, which the store did not carry out, sent once more. Returns the answer
    /// and the token it went with (for the summary to mask).
    async fn send_authorized(
        &self,
        op: Op,
        budget_key: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<(Answer, String), ProviderError> {
        let (token, reused) = self.access_token().await?;
        let answer = self
            .send(
                op,
                budget_key,
                request().header("X-Auth-Token", secret_header(&token)?),
            )
            .await?;
        if !(reused && matches!(answer.status, 401 | 403)) {
            return Ok((answer, token));
        }
        self.vault.forget(&self.cfg.access_token.secret);
        tracing::debug!(store = %self.cfg.store_hash, status = answer.status, "the store refused the access token read lately; reading it again");
        let (token, _) = self.access_token().await?;
        let answer = self
            .send(
                op,
                budget_key,
                request().header("X-Auth-Token", secret_header(&token)?),
            )
            .await?;
        Ok((answer, token))
    }

    /// Sends one request, once, when the store's rate-limit budget has room for it: a wait for
    /// room (a spent quota, a 429's wait, pacing) within the call's deadline is waited out;
    /// otherwise, or on a 429, the call ends with `Transient` and the wait the store asked for.
    /// Transport failures are classified here; every other answer is returned for the caller to
    /// judge.
    async fn send(
        &self,
        op: Op,
        budget_key: &str,
        request: RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let deadline = Instant::now() + self.call_deadline;
        // Dropped without an answer (an error below), it frees its place in the budget.
        let permit = rate_budget::reserve(budget_key, deadline, &self.what(op)).await?;
        let mut resp = match tokio::time::timeout_at(deadline, self.http.send(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(SendError::Transport(e))) => return Err(self.transport_error(op, e)),
            Ok(Err(SendError::Redirect(r))) => {
                let reason = format!("{}: {r}", self.what(op));
                return Err(super::redirected(reason));
            }
            Err(_) => return Err(self.deadline_error(op)),
        };
        let status = resp.status().as_u16();
        let rate = permit.answered(status, resp.headers());
        if status == 429 {
            return Err(ProviderError::Transient {
                reason: format!("{}: rate limited (429)", self.what(op)),
                retry_after: rate.retry_wait(),
            });
        }
        let capped = match tokio::time::timeout_at(deadline, self.http.read_capped(&mut resp)).await
        {
            // The status line arrived but the body did not: for a mint, a 200 would have
            // carried the only copy of the token.
            Ok(Capped { error: Some(e), .. }) => return Err(self.transport_error(op, e)),
            Ok(c) => c,
            Err(_) => return Err(self.deadline_error(op)),
        };
        // A success over the cap is not read whole: it counts as a lost answer (for a mint,
        // the token it carried is out of reach). Another status over the cap is judged by its
        // status alone.
        if capped.over_cap && (200..300).contains(&status) {
            let reason = format!(
                "{}: status {status} with an answer larger than the {} KiB cap, not read",
                self.what(op),
                self.http.body_cap() / 1024
            );
            return Err(self.no_answer(op, reason, false));
        }
        let body = match capped.over_cap {
            true => Value::Null,
            false => serde_json::from_slice(&capped.body).unwrap_or(Value::Null),
        };
        Ok(Answer {
            status,
            body,
            retry_after: rate.retry_wait(),
        })
    }

    /// No answer. A refused connect never reached the server: safe to send again. Anything
    /// else (timeout, connection closed) may have been processed. The text names the cause but
    /// never the URL.
    fn transport_error(&self, op: Op, e: reqwest::Error) -> ProviderError {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out waiting for the answer"
        } else {
            "connection lost before the answer"
        };
        let never_sent = e.is_connect();
        let reason = format!("{}: {what} ({})", self.what(op), root_cause(e));
        self.no_answer(op, reason, never_sent)
    }

    fn deadline_error(&self, op: Op) -> ProviderError {
        let reason = format!(
            "{}: no answer within the call's deadline of {}",
            self.what(op),
            crate::human::duration(self.call_deadline)
        );
        self.no_answer(op, reason, false)
    }

    fn no_answer(&self, op: Op, reason: String, never_sent: bool) -> ProviderError {
        let reply = if never_sent {
            Reply::NotSent
        } else {
            Reply::Lost
        };
        outcome::no_answer(op.request(), reply, reason)
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

/// The innermost cause of a transport error (e.g. "Connection refused (os error 111)"), taken
/// from the error without its URL, so that no userinfo, query or path reaches a message.
fn root_cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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
    if parts.is_empty() {
        return format!("status {status}");
    }
    // Only what the server wrote is redacted: a short secret must not eat the status code.
    let mut said = parts.join("; ");
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        said = said.replace(s, "[REDACTED]");
    }
    let mut text = format!("status {status}: {said}");
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

/// Does the secret's `expires_at` say the token has expired? False when it says nothing.
fn expired(secret: &SecretFields, now: DateTime<Utc>) -> bool {
    secret
        .expose("expires_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t <= now)
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
        let url = format!("{}/{}", self.api_base(), create_path(self.cfg.kind));
        let (answer, access_token) = self
            .send_authorized(Op::Mint, &self.budget_key(&self.cfg.api_url), || {
                self.http
                    .request(Method::POST, &url)
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
        match answer.definite(Op::Mint, reason)? {
            Definite::Success => {
                let Some(token) = answer
                    .body
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                else {
                    // Accepted, but the token did not reach us: one may exist that nobody holds.
                    return Err(outcome::no_answer(
                        Request::NotIdempotent,
                        Reply::Unreadable,
                        format!(
                            "{}: status {status} without a token in the answer",
                            self.what(Op::Mint)
                        ),
                    ));
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
            Definite::Refused if matches!(status, 401 | 403) => {
                Err(ProviderError::Rejected { reason: reason() })
            }
            // 400/422: bad body (channel unknown, expiry in the past...); 404: no such store.
            Definite::Refused => Err(ProviderError::Config { reason: reason() }),
        }
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = token_of(secret)?;
        let url = self.graphql_url();
        let answer = self
            .send(
                Op::Verify,
                &self.budget_key(&self.cfg.storefront_url),
                self.http
                    .request(Method::POST, &url)
                    .bearer_auth(token)
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .json(&json!({ "query": GRAPHQL_PROBE })),
            )
            .await?;
        let status = answer.status;
        let reason = || {
            format!(
                "{}: {}",
                self.what(Op::Verify),
                summarise(status, &answer.body, &[token])
            )
        };
        match answer.definite(Op::Verify, reason)? {
            Definite::Success if answer.body.get("data").is_some_and(|d| !d.is_null()) => Ok(()),
            Definite::Success => Err(ProviderError::Config {
                reason: format!("{}: an answer without data", reason()),
            }),
            // All GraphQL auth errors are 401 ("Unknown JWT token", "JWT is expired", ...).
            Definite::Refused if matches!(status, 401 | 403) => {
                Err(ProviderError::Rejected { reason: reason() })
            }
            Definite::Refused => Err(ProviderError::Config { reason: reason() }),
        }
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        let token = token_of(secret)?;
        let url = format!("{}/api-token", self.api_base());
        let sf_token = secret_header(token)?;
        let (answer, access_token) = self
            .send_authorized(Op::Revoke, &self.budget_key(&self.cfg.api_url), || {
                self.http
                    .request(Method::DELETE, &url)
                    .header("Sf-Api-Token", sf_token.clone())
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
        match answer.definite(Op::Revoke, reason)? {
            // "Revocation has been scheduled": verify_revoked polls until it took effect.
            Definite::Success => Ok(()),
            // "The JWT is missing or invalid": the store does not take it for one of its tokens.
            // Past its expiry it is dead anyway; otherwise nothing says it is not live.
            Definite::Refused if status == 422 && expired(secret, Utc::now()) => {
                tracing::debug!(store = %self.cfg.store_hash, "revoke refused for a token past its expiry");
                Ok(())
            }
            Definite::Refused if status == 422 => Err(ProviderError::Rejected {
                reason: format!(
                    "{}; the store refused to revoke the token, which may still be live",
                    reason()
                ),
            }),
            Definite::Refused if matches!(status, 401 | 403) => {
                Err(ProviderError::Rejected { reason: reason() })
            }
            Definite::Refused => Err(ProviderError::Config { reason: reason() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_recorded_expiry_is_expired() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        let cases = [
            (Some("2030-01-01T11:59:59Z"), true),
            (Some("2030-01-01T12:00:00Z"), true),
            (Some("2030-01-01T12:00:01Z"), false),
            (Some("soon"), false),
            (None, false),
        ];
        for (expires_at, expected) in cases {
            let mut secret = SecretFields::new().with("token", "t");
            if let Some(e) = expires_at {
                secret.insert("expires_at", e);
            }
            assert_eq!(expired(&secret, now), expected, "{expires_at:?}");
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
        // A secret that looks like a status code leaves the status alone.
        let body = json!({"title":"Input is invalid","errors":{"Sf-Api-Token":"42 is not a JWT"}});
        assert_eq!(
            summarise(422, &body, &["42"]),
            "status 422: Input is invalid; Sf-Api-Token: [REDACTED] is not a JWT"
        );
    }
}
