//! The `webhook` sink: one POST of one payload, signed the Standard Webhooks way.
//!
//! Headers: `webhook-id` (the payload's idempotency key), `webhook-timestamp` (unix seconds, when
//! sent) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
//! space-separated signature per key while a key is being rotated. A key is given as
//! `whsec_<base64>`; the HMAC key is the decoded part.
//!
//! Invariant: a key never leaves this module except as a signature: not in an error, a reason or
//! a log line. A reason names the URL with its user info and query hidden
//! ([`crate::config::redact_url`]). TLS is always verified; redirects are never followed (a 3xx is
//! a failure); at most [`BODY_CAP`] bytes of an answer are read. The sink does not retry: it says
//! whether a retry may help.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use crate::config::redact_url;
use crate::egress::error_chain;
use crate::egress::SendError;
use crate::notify::payload::Payload;

/// How much of an answer's body is read, for the reason of a failure.
pub const BODY_CAP: usize = 4096;

/// How much of that body a reason quotes.
const SUMMARY_CHARS: usize = 200;

const KEY_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("signing key is not in whsec_<base64> form")]
    InvalidKey,
    #[error("webhook URL {url} is not a valid URL")]
    InvalidUrl { url: String },
    #[error("cannot use CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// What one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Anything else. `reason` is one line fit for a log; `retryable` says whether the same
    /// request may succeed later (5xx, 408, 429, timeouts, connection errors).
    Failed { retryable: bool, reason: String },
}

/// A decoded signing key. Shows as `SigningKey(***)`.
pub struct SigningKey(SecretSlice<u8>);

impl SigningKey {
    /// Decodes a `whsec_<base64>` key (a key without the prefix is taken as bare base64, as the
    /// Standard Webhooks libraries do). The error never quotes the key.
    pub fn parse(key: &SecretString) -> Result<SigningKey, WebhookError> {
        let text = key.expose_secret().trim();
        let encoded = text.strip_prefix(KEY_PREFIX).unwrap_or(text);
        match BASE64.decode(encoded) {
            Ok(bytes) if !bytes.is_empty() => Ok(SigningKey(SecretSlice::from(bytes))),
            _ => Err(WebhookError::InvalidKey),
        }
    }

    /// The key as base64, to hide it should a receiver echo it back.
    fn encoded(&self) -> String {
        BASE64.encode(self.0.expose_secret())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
/// for each key, separated by spaces.
pub fn sign(id: &str, timestamp: i64, body: &[u8], keys: &[SigningKey]) -> String {
    keys.iter()
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.0.expose_secret())
                .expect("HMAC takes a key of any length");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a non-2xx status may succeed on a later try: 5xx, 408 and 429 may; redirects and
/// other 4xx say the request itself is wrong (address, authentication, payload).
pub fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// One dependent's webhook endpoint.
pub struct WebhookSink {
    url: reqwest::Url,
    /// The URL as reasons show it.
    shown: String,
    timeout: Duration,
    client: crate::egress::Client,
}

impl WebhookSink {
    /// A sink for `url`; `timeout` bounds a whole delivery (connect, send, answer). `extra_ca` is
    /// a PEM bundle trusted besides the system's roots.
    pub fn new(
        url: &str,
        timeout: Duration,
        extra_ca: Option<&Path>,
    ) -> Result<WebhookSink, WebhookError> {
        let shown = redact_url(url);
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| WebhookError::InvalidUrl { url: shown.clone() })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl { url: shown });
        }
        let mut builder = crate::egress::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .body_cap(BODY_CAP);
        if let Some(ca) = extra_ca {
            let ca_error = |message: String| WebhookError::CaFile {
                path: ca.display().to_string(),
                message,
            };
            let pem = std::fs::read(ca).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_error(error_chain(&e)))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|crate::egress::EgressError::Build(e)| WebhookError::Client(e))?;
        Ok(WebhookSink {
            url: parsed,
            shown,
            timeout,
            client,
        })
    }

    /// Sends `payload`, signed with each of `keys` (`whsec_<base64>`).
    pub async fn deliver(&self, payload: &Payload, keys: &[SecretString]) -> Outcome {
        self.deliver_as(&payload.id(), &payload.body(), keys).await
    }

    /// Sends `body` as `id`, signed with each of `keys` (`whsec_<base64>`).
    pub async fn deliver_as(&self, id: &str, body: &[u8], keys: &[SecretString]) -> Outcome {
        let mut parsed = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            match SigningKey::parse(key) {
                Ok(k) => parsed.push(k),
                Err(e) => {
                    return Outcome::Failed {
                        retryable: false,
                        reason: format!("webhook {}: signing key {}: {e}", self.shown, n + 1),
                    }
                }
            }
        }
        self.post(id, body, &parsed).await
    }

    /// Sends `body` as `id`, signed with each of `keys`, timestamped now.
    pub async fn post(&self, id: &str, body: &[u8], keys: &[SigningKey]) -> Outcome {
        if keys.is_empty() {
            return Outcome::Failed {
                retryable: false,
                reason: format!("webhook {}: no signing key", self.shown),
            };
        }
        let timestamp = chrono::Utc::now().timestamp();
        // The signature is no secret once sent, but is kept out of every Debug all the same.
        let Ok(signature) = crate::egress::sensitive(&sign(id, timestamp, body, keys)) else {
            unreachable!("base64 and spaces are valid header characters");
        };
        let request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec());
        let mut response = match self.client.send(request).await {
            Ok(r) => r,
            Err(SendError::Transport(e)) => {
                return Outcome::Failed {
                    retryable: true,
                    reason: self.transport_reason(e),
                }
            }
            Err(SendError::Redirect(r)) => {
                return Outcome::Failed {
                    retryable: retryable(r.status),
                    reason: format!(
                        "webhook {} answered {}: redirect to {} not followed",
                        self.shown, r.status, r.location
                    ),
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let answer = summary(&self.client.read_capped(&mut response).await.body, keys);
        Outcome::Failed {
            retryable: retryable(status.as_u16()),
            reason: format!(
                "webhook {} answered {}: {answer}",
                self.shown,
                status.as_u16()
            ),
        }
    }

    fn transport_reason(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "webhook {} did not answer within {}",
                self.shown,
                crate::human::duration(self.timeout)
            );
        }
        let what = if e.is_connect() {
            "cannot connect to"
        } else {
            "cannot send to"
        };
        // Without the URL: the error would print it whole, query and all.
        format!(
            "{what} webhook {}: {}",
            self.shown,
            error_chain(&e.without_url())
        )
    }
}

/// The start of an answer's body on one line, with any key the receiver echoed hidden.
fn summary(body: &[u8], keys: &[SigningKey]) -> String {
    let mut text = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for key in keys {
        text = text.replace(&key.encoded(), "***");
    }
    if text.is_empty() {
        return "empty body".to_string();
    }
    match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SigningKey {
        SigningKey::parse(&SecretString::from(text)).unwrap()
    }

    /// The vector of the Standard Webhooks reference library's own test (`test_sign` in
    /// github.com/standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs).
    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        let keys = [key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")];
        let signature = sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
            &keys,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn several_keys_give_several_signatures_in_key_order() {
        let reference = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let other = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let keys = [other, key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")];
        let signature = sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
            &keys,
        );
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0], reference);
        assert!(parts[0].starts_with("v1,"));
        assert_eq!(parts[1], reference);
    }

    #[test]
    fn keys_are_whsec_base64_and_never_shown() {
        let cases = [
            ("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", true),
            ("C2FVsBQIhrscChlQIMV+b5sSYspob7oD", true),
            (" whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n", true),
            ("whsec_", false),
            ("", false),
            ("whsec_not base64!", false),
        ];
        for (text, valid) in cases {
            let parsed = SigningKey::parse(&SecretString::from(text));
            assert_eq!(parsed.is_ok(), valid, "{text:?}");
            let shown = match parsed {
                Ok(k) => format!("{k:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            let secret = text.trim().trim_start_matches("whsec_");
            assert!(secret.is_empty() || !shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn statuses_that_may_succeed_later_are_retryable() {
        let cases = [
            (301, false),
            (302, false),
            (400, false),
            (401, false),
            (404, false),
            (408, true),
            (410, false),
            (413, false),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (504, true),
        ];
        for (status, expected) in cases {
            assert_eq!(retryable(status), expected, "{status}");
        }
    }

    #[test]
    fn a_summary_is_one_short_line_without_echoed_keys() {
        let k = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let echoed = b"bad\n\n signature for key whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(
            summary(echoed, std::slice::from_ref(&k)),
            "bad signature for key whsec_***"
        );
        assert_eq!(summary(b"", &[]), "empty body");
        let long = "x".repeat(BODY_CAP);
        assert_eq!(summary(long.as_bytes(), &[]).len(), SUMMARY_CHARS + 3);
    }
}
