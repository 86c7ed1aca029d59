//! `http`: mint, verify and revoke as HTTP requests described in the config file, with templates
//! (`crate::template`) for the URL, the headers and the body.
//!
//! Invariants: the parent secrets are read from Vault for every call that uses them and kept no
//! longer than the call; the client is the egress policy's (`crate::egress`: TLS verified, a
//! redirect is a `Config` error naming the configured URL and is never followed); every request
//! has a timeout covering its answer, and at most [`BODY_CAP`] bytes of an answer are read. A
//! header with a placeholder is sensitive. No error carries a rendered URL (templates may put
//! secrets in it; the configured one is named, user info and query hidden), a header, or the body of a successful mint (it holds the new credential); other
//! bodies are quoted clipped, with every secret value the call knows cut out.

use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use reqwest::Method;
use serde_json::Value;

use super::exec::{parse_time, static_names};
use super::outcome::{self, Reply, Request};
use super::{MintRequest, Minted, Mode, Provider, ProviderError, ProviderInfo};
use crate::config::{redact_url, HttpProviderConfig, HttpRequestConfig};
use crate::egress::{Capped, SendError};
use crate::secret::SecretFields;
use crate::template::{url_encode, Placeholder, Template};
use crate::vault::Vault;
use std::sync::Arc;

/// The most of an answer that is read.
pub const BODY_CAP: usize = 64 * 1024;
/// How much of an answer's body an error quotes.
const BODY_QUOTE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Mint,
    Verify,
    Revoke,
}

impl Step {
    /// A mint creates a credential each time; a verify or a revoke does the same however often.
    fn request(self) -> Request {
        match self {
            Step::Mint => Request::NotIdempotent,
            Step::Verify | Step::Revoke => Request::Idempotent,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::Mint => "mint",
            Step::Verify => "verify",
            Step::Revoke => "revoke",
        }
    }
}

/// What a status means for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ok,
    Reject,
    Retry,
    Unexpected,
}

fn classify(req: &HttpRequestConfig, status: u16) -> Class {
    if req.ok.contains(&status) {
        Class::Ok
    } else if req.reject.contains(&status) {
        Class::Reject
    } else if req.retry.contains(&status) {
        Class::Retry
    } else if req.ok.is_empty() && (200..300).contains(&status) {
        Class::Ok
    } else {
        Class::Unexpected
    }
}

/// The values a request's templates may use, for one call.
struct Values<'a> {
    credential: &'a str,
    parents: Vec<(String, String)>,
    current: Option<&'a SecretFields>,
    mint: Option<&'a MintRequest>,
}

impl Values<'_> {
    fn get(&self, p: &Placeholder) -> Option<String> {
        match p {
            Placeholder::Parent(name) => self
                .parents
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            Placeholder::Current(field) => self.current?.expose(field).map(str::to_string),
            Placeholder::ExpiresAt => Some(
                self.mint?
                    .expires_at
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            Placeholder::ExpiresAtUnix => Some(self.mint?.expires_at.timestamp().to_string()),
            Placeholder::Credential => Some(self.credential.to_string()),
            Placeholder::AttemptId => Some(self.mint?.attempt_id.clone()),
        }
    }

    /// Every secret value of this call, to cut out of quoted bodies.
    fn secrets(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.parents.iter().map(|(_, v)| v.as_str()).collect();
        if let Some(current) = self.current {
            all.extend(current.keys().filter_map(|k| current.expose(k)));
        }
        all
    }
}

/// An answer, read up to the cap.
struct Answer {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

pub struct HttpProvider {
    cfg: HttpProviderConfig,
    credential: String,
    vault: Arc<Vault>,
    http: crate::egress::Client,
    fields: &'static [&'static str],
}

impl HttpProvider {
    pub fn new(
        cfg: HttpProviderConfig,
        credential: &str,
        vault: Arc<Vault>,
    ) -> Result<HttpProvider, ProviderError> {
        let http = crate::egress::builder()
            .timeout(cfg.timeout)
            .body_cap(BODY_CAP)
            .build()
            .map_err(|e| ProviderError::Config {
                reason: format!("http provider: {e}"),
            })?;
        let names: Vec<String> = cfg.fields.iter().map(|(n, _)| n.clone()).collect();
        Ok(HttpProvider {
            fields: static_names(&names),
            credential: credential.to_string(),
            cfg,
            vault,
            http,
        })
    }

    fn request(&self, step: Step) -> &HttpRequestConfig {
        match step {
            Step::Mint => &self.cfg.mint,
            Step::Verify => &self.cfg.verify,
            Step::Revoke => &self.cfg.revoke,
        }
    }

    fn what(&self, step: Step) -> String {
        format!("http provider {}", step.name())
    }

    /// The parent secrets the step's templates name, read from Vault now.
    async fn parents(&self, step: Step) -> Result<Vec<(String, String)>, ProviderError> {
        let req = self.request(step);
        let mut texts = vec![req.url.as_str()];
        texts.extend(req.headers.iter().map(|(_, v)| v.as_str()));
        texts.extend(req.body.as_deref());
        let mut wanted: Vec<&str> = Vec::new();
        for template in texts.iter().filter_map(|t| Template::parse(t).ok()) {
            for p in template.placeholders() {
                if let Placeholder::Parent(name) = p {
                    if let Some((n, _)) = self.cfg.parents.iter().find(|(n, _)| n == name) {
                        if !wanted.contains(&n.as_str()) {
                            wanted.push(n);
                        }
                    }
                }
            }
        }
        let mut values = Vec::new();
        for name in wanted {
            let (_, field) = self
                .cfg
                .parents
                .iter()
                .find(|(n, _)| n == name)
                .expect("found above");
            let version = self.vault.read(&field.secret).await.map_err(|e| {
                let reason = format!(
                    "{}: cannot read the parent secret `{name}`: {e}",
                    self.what(step)
                );
                ProviderError::parent_unreadable(reason, &e)
            })?;
            match version.data.expose(&field.key) {
                Some(v) if !v.is_empty() => values.push((name.to_string(), v.to_string())),
                _ => {
                    return Err(ProviderError::Config {
                        reason: format!(
                            "{}: the parent secret {} has no `{}` field",
                            self.what(step),
                            field.secret,
                            field.key
                        ),
                    })
                }
            }
        }
        Ok(values)
    }

    /// Renders the step's request and sends it once, reading the answer up to the cap.
    async fn send(&self, step: Step, values: &Values<'_>) -> Result<Answer, ProviderError> {
        let req = self.request(step);
        let render = |text: &str, encode: fn(&str) -> String| {
            let template = Template::parse(text).map_err(|e| ProviderError::Config {
                reason: format!("{}: {e}", self.what(step)),
            })?;
            template
                .render(|p| values.get(p), encode)
                .map_err(|p| ProviderError::Config {
                    reason: format!(
                        "{}: no value for {p} (the credential lacks the field?)",
                        self.what(step)
                    ),
                })
        };
        let url = render(&req.url, url_encode)?;
        let method =
            Method::from_bytes(req.method.as_bytes()).map_err(|_| ProviderError::Config {
                reason: format!("{}: invalid method", self.what(step)),
            })?;
        let mut builder = self.http.request(method, &url);
        for (name, template) in &req.headers {
            let rendered = render(template, str::to_string)?;
            // A header with a placeholder may carry a secret, and Authorization always may:
            // Debug never shows either.
            let mut value = reqwest::header::HeaderValue::from_str(&rendered).map_err(|_| {
                ProviderError::Config {
                    reason: format!(
                        "{}: header `{name}` is not a valid header value once rendered",
                        self.what(step)
                    ),
                }
            })?;
            value
                .set_sensitive(rendered != *template || name.eq_ignore_ascii_case("authorization"));
            builder = builder.header(name.as_str(), value);
        }
        if let Some(body) = &req.body {
            builder = builder.body(render(body, str::to_string)?);
        }
        let request = builder.build().map_err(|_| ProviderError::Config {
            reason: format!(
                "{}: the request cannot be built (a header value that is not valid?)",
                self.what(step)
            ),
        })?;
        let mut resp = match self.http.send_request(request).await {
            Ok(r) => r,
            Err(SendError::Transport(e)) => return Err(self.no_answer(step, e)),
            Err(SendError::Redirect(r)) => {
                // The configured URL, not the rendered one: a template may put a secret in it.
                let reason = format!(
                    "{}: {} answered {}, a redirect, not followed",
                    self.what(step),
                    redact_url(&req.url),
                    r.status
                );
                return Err(super::redirected(reason));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let body = match self.http.read_capped(&mut resp).await {
            Capped { error: Some(e), .. } => return Err(self.no_answer(step, e)),
            Capped { over_cap: true, .. } => {
                let reason = format!(
                    "{}: status {status} with an answer larger than {} KiB",
                    self.what(step),
                    BODY_CAP / 1024
                );
                return Err(outcome::no_answer(
                    step.request(),
                    Reply::Unreadable,
                    reason,
                ));
            }
            Capped { body, .. } => body,
        };
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    /// No (whole) answer. A refused connect never reached the server; anything else may have
    /// been processed. The text names the cause, never the URL.
    fn no_answer(&self, step: Step, e: reqwest::Error) -> ProviderError {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "no answer within the timeout"
        } else {
            "connection lost before the answer"
        };
        let reply = if e.is_connect() {
            Reply::NotSent
        } else {
            Reply::Lost
        };
        let reason = format!("{}: {what} ({})", self.what(step), root_cause(e));
        outcome::no_answer(step.request(), reply, reason)
    }

    /// The error for an answer that is not ok.
    fn refused(
        &self,
        step: Step,
        answer: &Answer,
        class: Class,
        secrets: &[&str],
    ) -> ProviderError {
        let reason = format!(
            "{}: {}",
            self.what(step),
            summarise(answer.status, &answer.body, secrets)
        );
        match class {
            Class::Reject => ProviderError::Rejected { reason },
            Class::Retry => ProviderError::Transient {
                reason,
                retry_after: answer.retry_after,
            },
            Class::Unexpected => ProviderError::Config {
                reason: format!("{reason} (a status the configuration does not list)"),
            },
            Class::Ok => unreachable!("not an error"),
        }
    }

    async fn call(
        &self,
        step: Step,
        current: Option<&SecretFields>,
        mint: Option<&MintRequest>,
    ) -> Result<Answer, ProviderError> {
        let values = Values {
            credential: &self.credential,
            parents: self.parents(step).await?,
            current,
            mint,
        };
        let answer = self.send(step, &values).await?;
        // The configured lists judge the answer, but never make a mint's lost answer (a 5xx
        // but the origin's own 503 with a `Retry-After`) "nothing happened".
        let reply = Reply::Status {
            status: answer.status,
            origin_refused: answer.retry_after.is_some(),
        };
        let reason = || {
            format!(
                "{}: {}",
                self.what(step),
                summarise(answer.status, &answer.body, &values.secrets())
            )
        };
        if let Err(e @ ProviderError::UnknownOutcome { .. }) =
            outcome::definite(step.request(), reply, reason, answer.retry_after)
        {
            return Err(e);
        }
        match classify(self.request(step), answer.status) {
            Class::Ok => Ok(answer),
            // The body of a 2xx mint may hold the new credential: never quoted.
            class if step == Step::Mint && (200..300).contains(&answer.status) => {
                let reason = format!("{}: status {}", self.what(step), answer.status);
                Err(match class {
                    Class::Reject => ProviderError::Rejected { reason },
                    Class::Retry => ProviderError::Transient {
                        reason,
                        retry_after: answer.retry_after,
                    },
                    _ => outcome::no_answer(step.request(), Reply::Unreadable, reason),
                })
            }
            class => Err(self.refused(step, &answer, class, &values.secrets())),
        }
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            mode: Mode::Automatic,
            credentials_expire: self.cfg.credentials_expire,
            // Revocation is confirmed by verifying until the credential is rejected.
            async_revocation: true,
        }
    }

    fn required_fields(&self) -> &'static [&'static str] {
        self.fields
    }

    async fn mint(&self, req: &MintRequest) -> Result<Minted, ProviderError> {
        let answer = self.call(Step::Mint, None, Some(req)).await?;
        let bad = |what: String| {
            outcome::no_answer(
                Request::NotIdempotent,
                Reply::Unreadable,
                format!(
                    "{}: status {} but {what}",
                    self.what(Step::Mint),
                    answer.status
                ),
            )
        };
        let body: Value = serde_json::from_slice(&answer.body)
            .map_err(|_| bad("the answer is not JSON".into()))?;
        let mut secret = SecretFields::new();
        for (name, pointer) in &self.cfg.fields {
            match body.pointer(pointer) {
                Some(Value::String(s)) if !s.is_empty() => secret.insert(name, s.clone()),
                Some(Value::Number(n)) => secret.insert(name, n.to_string()),
                _ => return Err(bad(format!("no value at {pointer} for the field `{name}`"))),
            }
        }
        let expires_at = match &self.cfg.expires_at {
            Some(pointer) => Some(body.pointer(pointer).and_then(parse_time).ok_or_else(|| {
                bad(format!("no expiry (RFC 3339 or unix seconds) at {pointer}"))
            })?),
            None => self.cfg.credentials_expire.then_some(req.expires_at),
        };
        Ok(Minted { secret, expires_at })
    }

    async fn verify(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        self.call(Step::Verify, Some(secret), None)
            .await
            .map(|_| ())
    }

    async fn revoke(&self, secret: &SecretFields) -> Result<(), ProviderError> {
        self.call(Step::Revoke, Some(secret), None)
            .await
            .map(|_| ())
    }
}

/// The innermost cause of a transport error, taken without its URL.
fn root_cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// "status 403: <body, one line, clipped>", with every known secret value cut out.
fn summarise(status: u16, body: &[u8], secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "[REDACTED]");
    }
    if text.is_empty() {
        return format!("status {status}");
    }
    if text.len() > BODY_QUOTE {
        let mut cut = BODY_QUOTE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("status {status}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ok: &[u16], reject: &[u16], retry: &[u16]) -> HttpRequestConfig {
        HttpRequestConfig {
            method: "POST".into(),
            url: "http://h/x".into(),
            headers: vec![],
            body: None,
            ok: ok.to_vec(),
            reject: reject.to_vec(),
            retry: retry.to_vec(),
        }
    }

    #[test]
    fn statuses_are_classified_by_the_configured_lists() {
        let defaults = request(&[], &[401, 403], &[429, 502, 503, 504]);
        let listed = request(&[200], &[401, 422], &[503]);
        let cases = [
            (&defaults, 200, Class::Ok),
            (&defaults, 204, Class::Ok),
            (&defaults, 301, Class::Unexpected),
            (&defaults, 401, Class::Reject),
            (&defaults, 429, Class::Retry),
            (&defaults, 500, Class::Unexpected),
            (&listed, 200, Class::Ok),
            (&listed, 201, Class::Unexpected),
            (&listed, 422, Class::Reject),
            (&listed, 503, Class::Retry),
        ];
        for (req, status, expected) in cases {
            assert_eq!(
                classify(req, status),
                expected,
                "{status} with {:?}",
                req.ok
            );
        }
    }

    #[test]
    fn summaries_are_clipped_one_line_and_secret_free() {
        let cases = [
            (401, "", "status 401"),
            (
                403,
                "{\"title\": \"no\",\n \"token\": \"sekrit-value\"}",
                "status 403: {\"title\": \"no\", \"token\": \"[REDACTED]\"}",
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                summarise(status, body.as_bytes(), &["sekrit-value"]),
                expected
            );
        }
        let long = "y".repeat(500);
        assert_eq!(
            summarise(500, long.as_bytes(), &[]).chars().count(),
            "status 500: ".len() + 201
        );
    }
}
