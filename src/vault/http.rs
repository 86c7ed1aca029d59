//! The one HTTP stack every Vault call goes through: timeouts, TLS, the namespace header, the
//! token, failover across addresses and request counting.
//!
//! Invariants:
//! - TLS is always verified (against the system roots, plus the configured CA file).
//! - A read (GET, LIST) moves on to the next address whenever a node could not answer.
//! - A write (any other method) moves on only when it certainly was not processed: the
//!   connection was never made, or the node answered that it did not process it (sealed,
//!   standby, 429, a redirect). When it was sent and the reply was lost, the outcome is
//!   [`VaultError::OutcomeUnknown`]: never sent a second time.
//! - Redirects are followed only to a configured address, so the token goes nowhere else.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{classify_status, error_chain, Vault, VaultError};
use crate::config::VaultConfig;

/// One request to Vault, as the callers of [`Vault::send`] describe it.
pub(super) struct Request<'a> {
    pub method: Method,
    /// The path after `/v1/`, with its query string.
    pub api_path: &'a str,
    /// How errors name the request (a KV path such as `secret/app/db`, or the API path).
    pub shown: &'a str,
    pub body: Option<&'a Value>,
    /// The counter of [`super::VaultStats`] this request adds one to, once, whatever the number
    /// of addresses tried.
    pub count: Option<&'a AtomicU64>,
}

/// Why one node did not answer a request with success.
struct Failure {
    error: VaultError,
    /// The request certainly was not processed (or may be repeated): try the next address.
    try_next: bool,
}

/// GET and LIST change nothing and may be sent to any node, any number of times.
pub(super) fn is_idempotent(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method.as_str() == "LIST"
}

/// An answer that says the node did not process the request, so another node may: sealed or
/// standby (503), rate limited (429), a Raft node waiting for the primary, a standby that
/// cannot find the active node, or a redirect that was not followed.
pub(super) fn not_processed(status: u16, errors: &[String]) -> bool {
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    match status {
        300..=399 | 429 | 503 => true,
        400 => has("Waiting for the primary"),
        500 => has("local node not active but active cluster node not found"),
        _ => false,
    }
}

/// The HTTP client shared by every node: request timeout, TLS roots, redirect policy.
pub(super) fn client(cfg: &VaultConfig) -> Result<reqwest::Client, VaultError> {
    let origins: Vec<reqwest::Url> = cfg
        .addresses
        .iter()
        .filter_map(|a| reqwest::Url::parse(a).ok())
        .collect();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let allowed = origins.iter().any(|o| o.origin() == attempt.url().origin());
        if allowed && attempt.previous().len() < 3 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        // A connect that hangs is reported as a connect error: nothing was sent yet.
        .connect_timeout(cfg.request_timeout)
        .redirect(redirects);
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).map_err(|e| VaultError::Other {
            path: ca.display().to_string(),
            status: None,
            message: format!("cannot read CA file: {e}"),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| VaultError::Other {
            path: ca.display().to_string(),
            status: None,
            message: format!("cannot parse CA file: {e}"),
        })?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| VaultError::Other {
        path: String::new(),
        status: None,
        message: format!("cannot build HTTP client: {}", error_chain(&e)),
    })
}

impl Vault {
    /// Send a request to the active node, moving on to the next address when the rules above
    /// allow it; remember the node that answered.
    pub(super) async fn send(&self, req: Request<'_>) -> Result<Value, VaultError> {
        if let Some(counter) = req.count {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.addresses.len();
        let start = self.active.load(Ordering::Relaxed);
        for i in 0..n {
            let idx = (start + i) % n;
            let address = &self.addresses[idx];
            match self.send_to(address, &req).await {
                Ok(v) => {
                    if idx != start {
                        self.active.store(idx, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(f) if f.try_next && i + 1 < n => {
                    tracing::warn!(%address, error = %f.error, "vault node failed; trying the next address");
                }
                Err(f) => return Err(f.error),
            }
        }
        Err(VaultError::Unavailable {
            address: String::new(),
            reason: "no address configured".into(),
        })
    }

    /// A raw JSON call: `api_path` is the path after `/v1/`; errors are classified by
    /// [`classify_status`]. Not counted in [`super::VaultStats`]: callers count.
    pub(crate) async fn raw(
        &self,
        method: reqwest::Method,
        api_path: &str,
        body: Option<Value>,
    ) -> Result<Value, VaultError> {
        self.send(Request {
            method,
            api_path,
            shown: api_path,
            body: body.as_ref(),
            count: None,
        })
        .await
    }

    async fn send_to(&self, address: &str, req: &Request<'_>) -> Result<Value, Failure> {
        let idempotent = is_idempotent(&req.method);
        let url = format!("{address}/v1/{}", req.api_path);
        let mut builder = self
            .http
            .request(req.method.clone(), &url)
            .header("X-Vault-Request", "true");
        let token = self.current_token();
        if !token.expose_secret().is_empty() {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                    Failure {
                        error: VaultError::Login {
                            reason: "the token holds characters not allowed in a header".into(),
                        },
                        try_next: false,
                    }
                })?;
            // Kept out of the Debug output of requests.
            value.set_sensitive(true);
            builder = builder.header("X-Vault-Token", value);
        }
        if let Some(ns) = &self.namespace {
            builder = builder.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = req.body {
            builder = builder.json(b);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| transport_failure(e, address, req.shown, idempotent))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| transport_failure(e, address, req.shown, idempotent))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let errors = error_list(&value);
        let error = classify_status(status, &errors, req.shown, address);
        if not_processed(status, &errors) {
            return Err(Failure {
                error,
                try_next: true,
            });
        }
        if idempotent {
            let try_next = error.is_retryable();
            return Err(Failure { error, try_next });
        }
        match error {
            // A 5xx that does not say the node skipped the request: it may have been applied.
            VaultError::Unavailable { reason, .. } => Err(Failure {
                error: VaultError::OutcomeUnknown {
                    path: req.shown.to_string(),
                    reason: format!("{address}: {reason}"),
                },
                try_next: false,
            }),
            error => Err(Failure {
                error,
                try_next: false,
            }),
        }
    }

    /// Prefer the active node of an HA cluster: standbys check CAS against a stale copy
    /// (reference/openbao.md). `sys/health` answers 200 only on the active node.
    pub(super) async fn pick_active_node(&self) {
        if self.addresses.len() < 2 {
            return;
        }
        for (i, address) in self.addresses.iter().enumerate() {
            let url = format!("{address}/v1/sys/health");
            if let Ok(resp) = self.http.get(&url).send().await {
                if resp.status().as_u16() == 200 {
                    self.active.store(i, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// A request that got no answer. Never connected: not sent, safe anywhere. Otherwise a read
/// may go elsewhere, and a write's outcome is unknown.
fn transport_failure(e: reqwest::Error, address: &str, shown: &str, idempotent: bool) -> Failure {
    let (builder, connect) = (e.is_builder(), e.is_connect());
    let reason = error_chain(&e.without_url());
    if builder {
        return Failure {
            error: VaultError::Other {
                path: shown.to_string(),
                status: None,
                message: reason,
            },
            try_next: false,
        };
    }
    if connect || idempotent {
        return Failure {
            error: VaultError::Unavailable {
                address: address.to_string(),
                reason,
            },
            try_next: true,
        };
    }
    Failure {
        error: VaultError::OutcomeUnknown {
            path: shown.to_string(),
            reason: format!("{address}: {reason}"),
        },
        try_next: false,
    }
}

/// The `errors` list of a Vault error answer.
fn error_list(value: &Value) -> Vec<String> {
    value
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_idempotent() {
        let cases = [
            ("GET", true),
            ("LIST", true),
            ("HEAD", true),
            ("POST", false),
            ("PUT", false),
            ("DELETE", false),
            ("PATCH", false),
        ];
        for (method, idempotent) in cases {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(is_idempotent(&m), idempotent, "{method}");
        }
    }

    #[test]
    fn answers_that_say_the_request_was_not_processed() {
        let cases: &[(u16, &[&str], bool)] = &[
            (503, &["Vault is sealed"], true),
            (503, &[], true),
            (429, &[], true),
            (307, &[], true),
            (
                400,
                &["Waiting for the primary to upgrade from non-versioned to versioned data"],
                true,
            ),
            (
                500,
                &["local node not active but active cluster node not found"],
                true,
            ),
            (500, &["internal error"], false),
            (502, &[], false),
            (504, &[], false),
            (
                400,
                &["check-and-set parameter did not match the current version"],
                false,
            ),
            (403, &["permission denied"], false),
            (404, &[], false),
        ];
        for (status, errors, expected) in cases {
            let errors: Vec<String> = errors.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                not_processed(*status, &errors),
                *expected,
                "{status} {errors:?}"
            );
        }
    }
}
