//! The payload a dependent receives, in the Standard Webhooks shape: `type`, `timestamp` (RFC 3339,
//! when the event happened) and `data`.
//!
//! Invariant: pure, and never a secret. `data` is built only from names the configuration holds
//! (credential, provider kind, the secret's mount and path), versions, times, the attempt id and a
//! reason that is itself free of secrets (see [`crate::events`]).
//!
//! The payload's id ([`Payload::id`]) is the idempotency key and travels beside the body (the
//! `webhook-id` header), not in it: `{attempt}:{type}`, the same id as the event's. A
//! `credential.expiring` warning belongs to the credential's live version rather than to an
//! attempt, so its id is `{credential}:v{version}:credential.expiring`: one warning per version.
//!
//! Fields of `data`:
//! - `credential`, `provider`, `mount`, `path`: always.
//! - `version`: always; the KV version the event is about (the new one for `rotated`, the revoked
//!   one for `revoked`, the one written by the rollback for `rolled_back`, the live one for
//!   `failed` and `expiring`); `null` when not known.
//! - `previous_version`: `rotated` and `rolled_back` only: the version that was current before;
//!   left out when there was none (the secret was missing).
//! - `revoke_after`: `rotated` only: the earliest time the previous credential is revoked.
//! - `expires_at`: `expiring` only: when the live credential reaches `max_age` or its expiry.
//! - `steps`, `scopes`: `rotation.due` and `credential.drift` of an assisted credential only: the
//!   control-panel steps in the provider's own words, and for a store-level account the exact
//!   scopes to grant.
//! - `attempt`: always; the rotation attempt's id (`null` for a warning that no attempt owns;
//!   `{credential}:v{version}` for `credential.drift`).
//! - `reason`: always; a short human reason.
//!
//! One example per type:
//!
//! `credential.rotated`
//! ```json
//! {
//!   "type": "credential.rotated",
//!   "timestamp": "2026-05-04T10:15:00Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 7,
//!     "previous_version": 6,
//!     "revoke_after": "2026-05-04T11:15:00Z",
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "a new version is live"
//!   }
//! }
//! ```
//!
//! `credential.revoked`
//! ```json
//! {
//!   "type": "credential.revoked",
//!   "timestamp": "2026-05-04T11:15:02Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 6,
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "the previous version is revoked"
//!   }
//! }
//! ```
//!
//! `credential.rolled_back`
//! ```json
//! {
//!   "type": "credential.rolled_back",
//!   "timestamp": "2026-05-04T10:40:00Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 8,
//!     "previous_version": 7,
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "rolled back: the previous credential is current again"
//!   }
//! }
//! ```
//!
//! `rotation.failed`
//! ```json
//! {
//!   "type": "rotation.failed",
//!   "timestamp": "2026-05-04T10:15:00Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 6,
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "failed: the provider refused to create a token (403)"
//!   }
//! }
//! ```
//!
//! `rotation.needs_attention`
//! ```json
//! {
//!   "type": "rotation.needs_attention",
//!   "timestamp": "2026-05-04T11:15:02Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 7,
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "revoke the old credential: the provider still accepts it"
//!   }
//! }
//! ```
//!
//! `credential.expiring`
//! ```json
//! {
//!   "type": "credential.expiring",
//!   "timestamp": "2026-05-27T09:00:00Z",
//!   "data": {
//!     "credential": "shop-storefront",
//!     "provider": "bigcommerce_storefront",
//!     "mount": "secret",
//!     "path": "shop/storefront",
//!     "version": 6,
//!     "expires_at": "2026-06-03T10:15:00Z",
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "parked: the provider refused to create a token (403)"
//!   }
//! }
//! ```
//!
//! `rotation.due` (an assisted credential; a reminder has the id `{attempt}:rotation.due:N`)
//! ```json
//! {
//!   "type": "rotation.due",
//!   "timestamp": "2026-05-04T10:15:00Z",
//!   "data": {
//!     "credential": "shop-admin-api",
//!     "provider": "bigcommerce_store_account",
//!     "mount": "secret",
//!     "path": "bigcommerce/abc123/store-api",
//!     "version": 6,
//!     "steps": [
//!       "Log into your store's control panel and navigate to Settings > Store-level API accounts.",
//!       "Click \"+ Create API Token\" and choose the token type V2/V3 API token.",
//!       "Fill in the account name (at least 4 characters long).",
//!       "Configure the API resources and permissions exactly as listed in scopes: Information & Settings: read-only, Storefront API Tokens: modify.",
//!       "Click Save and copy the Client ID, Client Secret and Access Token from the pop-up (it cannot be shown again).",
//!       "Run `secret-rotator supply shop-admin-api` and give it client_id, access_token and client_secret (JSON on stdin, or at the prompt).",
//!       "Re-create under the new account any webhooks the old account created: they vanish with it. Then delete the old account (store abc123); the daemon checks that its token is rejected."
//!     ],
//!     "scopes": [
//!       "Information & Settings: read-only",
//!       "Storefront API Tokens: modify"
//!     ],
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "due (max_age): create a new store-level API account with the same scopes in the control panel (Settings > Store-level API accounts) and run `secret-rotator supply shop-admin-api` with its Client ID, Client Secret and Access Token by 2026-05-11 10:15:00Z"
//!   }
//! }
//! ```
//!
//! `credential.drift` (id `{credential}:v{version}:credential.drift`: one per rejected version)
//! ```json
//! {
//!   "type": "credential.drift",
//!   "timestamp": "2026-05-04T12:00:00Z",
//!   "data": {
//!     "credential": "shop-admin-api",
//!     "provider": "bigcommerce_store_account",
//!     "mount": "secret",
//!     "path": "bigcommerce/abc123/store-api",
//!     "version": 6,
//!     "steps": [
//!       "Log into your store's control panel and navigate to Settings > Store-level API accounts.",
//!       "Click \"+ Create API Token\" and choose the token type V2/V3 API token.",
//!       "Fill in the account name (at least 4 characters long).",
//!       "Configure the API resources and permissions exactly as listed in scopes: Information & Settings: read-only, Storefront API Tokens: modify.",
//!       "Click Save and copy the Client ID, Client Secret and Access Token from the pop-up (it cannot be shown again).",
//!       "Run `secret-rotator supply shop-admin-api` and give it client_id, access_token and client_secret (JSON on stdin, or at the prompt).",
//!       "Re-create under the new account any webhooks the old account created: they vanish with it. Then delete the old account (store abc123); the daemon checks that its token is rejected."
//!     ],
//!     "scopes": [
//!       "Information & Settings: read-only",
//!       "Storefront API Tokens: modify"
//!     ],
//!     "attempt": "shop-admin-api:v6",
//!     "reason": "version 6 is rejected although secret-rotator did not change it: GET /v2/time: 401"
//!   }
//! }
//! ```
//!
//! `rotation.cancelled` (`secret-rotator cancel`)
//! ```json
//! {
//!   "type": "rotation.cancelled",
//!   "timestamp": "2026-05-04T13:00:00Z",
//!   "data": {
//!     "credential": "shop-admin-api",
//!     "provider": "bigcommerce_store_account",
//!     "mount": "secret",
//!     "path": "bigcommerce/abc123/store-api",
//!     "version": 6,
//!     "attempt": "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34",
//!     "reason": "cancelled by ops-1: the rotation waiting for a supply is cancelled; nothing was written and version 6 stays current. It is still due: the daemon asks again after a while (`secret-rotator pause shop-admin-api` stops that)"
//!   }
//! }
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Credential;
use crate::events::{Event, EventKind};
use crate::ledger::Logged;

/// The body a dependent receives. Serialises to exactly the documented JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the event happened (not when it is delivered: that is the `webhook-timestamp`).
    pub timestamp: DateTime<Utc>,
    pub data: PayloadData,
}

impl Payload {
    /// The payload a dependent of `credential` receives for a logged event.
    pub fn of(event: &Logged, credential: &Credential) -> Payload {
        let (steps, scopes) = assisted_extras(event.kind, credential);
        Payload {
            kind: event.kind,
            timestamp: event.at,
            data: PayloadData {
                credential: credential.name.clone(),
                provider: credential.provider().kind().to_string(),
                mount: credential.secret.mount.clone(),
                path: credential.secret.path.clone(),
                version: event.version,
                previous_version: event.previous_version,
                revoke_after: event.revoke_after,
                expires_at: event.expires_at,
                steps,
                scopes,
                attempt: event.attempt.clone(),
                reason: event.reason.clone(),
            },
        }
    }
}

/// `data`: which fields appear for which type is in the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadData {
    pub credential: String,
    pub provider: String,
    pub mount: String,
    pub path: String,
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// `rotation.due` and `credential.drift` of an assisted credential: the control-panel steps,
    /// in the provider's own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
    /// `rotation.due` and `credential.drift` of a store-level account: the exact scopes to grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    pub attempt: Option<String>,
    pub reason: String,
}

/// What `rotation.due` and `credential.drift` add for an assisted credential: the steps, and
/// for a store-level account the scopes. Rebuilt from the configuration (the record keeps none
/// of it, so it stays small). `(None, None)` for other types and automatic credentials.
pub fn assisted_extras(
    kind: EventKind,
    credential: &Credential,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if !matches!(kind, EventKind::Due | EventKind::Drift) {
        return (None, None);
    }
    let (steps, scopes) =
        crate::providers::assisted_guidance(&credential.provider(), &credential.name);
    if steps.is_empty() {
        return (None, None);
    }
    (Some(steps), (!scopes.is_empty()).then_some(scopes))
}

/// What an [`Event`] does not carry. Each field is used only by the types it applies to and
/// ignored by the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// `rotated` and `rolled_back`: the version that was current before.
    pub previous_version: Option<u64>,
    /// `rotated`: the earliest time the previous credential is revoked.
    pub revoke_after: Option<DateTime<Utc>>,
}

/// A `credential.expiring` warning: what the caller knows about the credential it warns about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub at: DateTime<Utc>,
    /// The live version.
    pub version: u64,
    /// When the live version reaches `max_age` or its expiry.
    pub expires_at: DateTime<Utc>,
    /// The attempt that failed or parked the credential, when there is one.
    pub attempt: Option<String>,
    /// Why it cannot be rotated (never a secret).
    pub reason: String,
}

impl Payload {
    /// The payload for an event about `credential`.
    pub fn from_event(event: &Event, credential: &Credential, extra: &Extra) -> Payload {
        debug_assert_eq!(event.credential, credential.name);
        let kind = event.kind;
        let previous_version = match kind {
            EventKind::Rotated | EventKind::RolledBack => extra.previous_version,
            _ => None,
        };
        let revoke_after = match kind {
            EventKind::Rotated => extra.revoke_after,
            _ => None,
        };
        let (steps, scopes) = assisted_extras(kind, credential);
        Payload {
            kind,
            timestamp: event.at,
            data: PayloadData {
                credential: credential.name.clone(),
                provider: credential.provider().kind().to_string(),
                mount: credential.secret.mount.clone(),
                path: credential.secret.path.clone(),
                version: event.version,
                previous_version,
                revoke_after,
                expires_at: None,
                steps,
                scopes,
                attempt: Some(event.attempt.clone()),
                reason: event.detail.clone(),
            },
        }
    }

    /// A `credential.expiring` warning about `credential`.
    pub fn expiring(credential: &Credential, warning: &Expiring) -> Payload {
        Payload {
            kind: EventKind::Expiring,
            timestamp: warning.at,
            data: PayloadData {
                credential: credential.name.clone(),
                provider: credential.provider().kind().to_string(),
                mount: credential.secret.mount.clone(),
                path: credential.secret.path.clone(),
                version: Some(warning.version),
                previous_version: None,
                revoke_after: None,
                expires_at: Some(warning.expires_at),
                steps: None,
                scopes: None,
                attempt: warning.attempt.clone(),
                reason: warning.reason.clone(),
            },
        }
    }

    /// The idempotency key (`webhook-id`): `{attempt}:{type}`, as the event's id; a warning, or a
    /// payload without an attempt, is keyed by the credential and its version instead.
    pub fn id(&self) -> String {
        let kind = self.kind.as_str();
        match (&self.data.attempt, self.kind) {
            (Some(attempt), t) if t != EventKind::Expiring => format!("{attempt}:{kind}"),
            _ => format!(
                "{}:v{}:{kind}",
                self.data.credential,
                self.data.version.unwrap_or(0)
            ),
        }
    }

    /// The exact bytes sent (and signed).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payloads serialise")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;
    use serde_json::Value;

    use super::*;
    use crate::config::{
        KvPath, Policy, ProviderConfig, StorefrontConfig, StorefrontTokenKind, VaultField,
    };

    const ATTEMPT: &str = "3f2a9c1e-8d4b-4c7a-9e21-5b6f0d8a7c34";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// The credential of the documented examples. Its provider reads a parent token from
    /// `secret/bigcommerce/store-admin` field `parent_token`: neither may reach a payload.
    fn credential() -> Credential {
        Credential::new(
            "shop-storefront".into(),
            KvPath {
                mount: "secret".into(),
                path: "shop/storefront".into(),
            },
            ProviderConfig::BigCommerceStorefront(StorefrontConfig {
                api_url: "https://api.bigcommerce.com".into(),
                storefront_url: "https://store-abc123.mybigcommerce.com".into(),
                store_hash: "abc123".into(),
                access_token: VaultField {
                    secret: KvPath {
                        mount: "secret".into(),
                        path: "bigcommerce/store-admin".into(),
                    },
                    key: "parent_token".into(),
                },
                kind: StorefrontTokenKind::Storefront,
                channel_ids: vec![1],
                allowed_cors_origins: vec![],
                scopes: vec![],
            }),
            Policy::default(),
            vec![],
        )
    }

    fn event(kind: EventKind, when: &str, version: u64, detail: &str) -> Event {
        Event::new(
            kind,
            "shop-storefront",
            ATTEMPT,
            at(when),
            Some(version),
            detail,
        )
    }

    /// The store-level account of the assisted examples.
    fn store_account() -> Credential {
        Credential::new(
            "shop-admin-api".into(),
            KvPath {
                mount: "secret".into(),
                path: "bigcommerce/abc123/store-api".into(),
            },
            ProviderConfig::BigCommerceStoreAccount(crate::config::StoreAccountConfig {
                api_url: "https://api.bigcommerce.com".into(),
                store_hash: "abc123".into(),
                required_scopes: vec![
                    (
                        "information_and_settings".into(),
                        crate::config::ScopeLevel::ReadOnly,
                    ),
                    (
                        "storefront_api_tokens".into(),
                        crate::config::ScopeLevel::Modify,
                    ),
                ],
                probe: "v2/time".into(),
            }),
            Policy::default(),
            vec![],
        )
    }

    /// Each documented example, built the way the daemon builds it, in the order of the docs.
    fn examples() -> Vec<Payload> {
        let c = credential();
        let store = store_account();
        let assisted = |kind: EventKind, when: &str, attempt: &str, detail: &str| {
            Payload::from_event(
                &Event::new(kind, &store.name, attempt, at(when), Some(6), detail),
                &store,
                &Extra::default(),
            )
        };
        let extra = Extra {
            previous_version: Some(6),
            revoke_after: Some(at("2026-05-04T11:15:00Z")),
        };
        vec![
            Payload::from_event(
                &event(
                    EventKind::Rotated,
                    "2026-05-04T10:15:00Z",
                    7,
                    "a new version is live",
                ),
                &c,
                &extra,
            ),
            Payload::from_event(
                &event(
                    EventKind::Revoked,
                    "2026-05-04T11:15:02Z",
                    6,
                    "the previous version is revoked",
                ),
                &c,
                &extra,
            ),
            Payload::from_event(
                &event(
                    EventKind::RolledBack,
                    "2026-05-04T10:40:00Z",
                    8,
                    "rolled back: the previous credential is current again",
                ),
                &c,
                &Extra {
                    previous_version: Some(7),
                    revoke_after: None,
                },
            ),
            Payload::from_event(
                &event(
                    EventKind::Failed,
                    "2026-05-04T10:15:00Z",
                    6,
                    "failed: the provider refused to create a token (403)",
                ),
                &c,
                &extra,
            ),
            Payload::from_event(
                &event(
                    EventKind::NeedsAttention,
                    "2026-05-04T11:15:02Z",
                    7,
                    "revoke the old credential: the provider still accepts it",
                ),
                &c,
                &extra,
            ),
            Payload::expiring(
                &c,
                &Expiring {
                    at: at("2026-05-27T09:00:00Z"),
                    version: 6,
                    expires_at: at("2026-06-03T10:15:00Z"),
                    attempt: Some(ATTEMPT.into()),
                    reason: "parked: the provider refused to create a token (403)".into(),
                },
            ),
            assisted(
                EventKind::Due,
                "2026-05-04T10:15:00Z",
                ATTEMPT,
                "due (max_age): create a new store-level API account with the same scopes in the control panel (Settings > Store-level API accounts) and run `secret-rotator supply shop-admin-api` with its Client ID, Client Secret and Access Token by 2026-05-11 10:15:00Z",
            ),
            assisted(
                EventKind::Drift,
                "2026-05-04T12:00:00Z",
                "shop-admin-api:v6",
                "version 6 is rejected although secret-rotator did not change it: GET /v2/time: 401",
            ),
            assisted(
                EventKind::Cancelled,
                "2026-05-04T13:00:00Z",
                ATTEMPT,
                "cancelled by ops-1: the rotation waiting for a supply is cancelled; nothing was written and version 6 stays current. It is still due: the daemon asks again after a while (`secret-rotator pause shop-admin-api` stops that)",
            ),
        ]
    }

    #[test]
    #[ignore]
    fn print_examples() {
        for p in examples() {
            println!("{}", serde_json::to_string_pretty(&p).unwrap());
        }
    }

    /// The JSON examples in this module's documentation.
    fn documented_examples() -> Vec<Value> {
        let source = include_str!("payload.rs");
        let mut examples = Vec::new();
        let mut block: Option<String> = None;
        for line in source.lines().take_while(|l| l.starts_with("//!")) {
            let text = line.trim_start_matches("//!").trim_start();
            match (&mut block, text) {
                (None, "```json") => block = Some(String::new()),
                (Some(b), "```") => {
                    examples.push(serde_json::from_str(b).unwrap());
                    block = None;
                }
                (Some(b), _) => {
                    b.push_str(text);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
        examples
    }

    #[test]
    fn each_type_has_exactly_the_documented_fields_and_values() {
        let common = [
            "credential",
            "provider",
            "mount",
            "path",
            "version",
            "attempt",
            "reason",
        ];
        let cases: [(EventKind, &[&str]); 9] = [
            (EventKind::Rotated, &["previous_version", "revoke_after"]),
            (EventKind::Revoked, &[]),
            (EventKind::RolledBack, &["previous_version"]),
            (EventKind::Failed, &[]),
            (EventKind::NeedsAttention, &[]),
            (EventKind::Expiring, &["expires_at"]),
            (EventKind::Due, &["steps", "scopes"]),
            (EventKind::Drift, &["steps", "scopes"]),
            (EventKind::Cancelled, &[]),
        ];
        let documented = documented_examples();
        let built = examples();
        assert_eq!(documented.len(), cases.len());
        assert_eq!(built.len(), cases.len());
        for (((kind, own), doc), payload) in cases.iter().zip(&documented).zip(&built) {
            assert_eq!(payload.kind, *kind);
            let json = serde_json::to_value(payload).unwrap();
            let top: BTreeSet<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(
                top,
                BTreeSet::from(["type", "timestamp", "data"]),
                "{kind:?}"
            );
            let fields: BTreeSet<&str> = json["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            let expected: BTreeSet<&str> = common.iter().chain(own.iter()).copied().collect();
            assert_eq!(fields, expected, "{kind:?}");
            assert_eq!(json["type"], kind.as_str());
            assert_eq!(
                &json, doc,
                "{kind:?}: the documented example is what is sent"
            );
            // The body round-trips: an outbox may keep payloads as they are.
            let back: Payload = serde_json::from_slice(&payload.body()).unwrap();
            assert_eq!(&back, payload);
        }
    }

    #[test]
    fn extras_that_do_not_apply_to_a_type_are_left_out() {
        let extra = Extra {
            previous_version: Some(6),
            revoke_after: Some(Utc.with_ymd_and_hms(2026, 5, 4, 11, 15, 0).unwrap()),
        };
        for kind in [
            EventKind::Revoked,
            EventKind::Failed,
            EventKind::NeedsAttention,
        ] {
            let e = event(kind, "2026-05-04T10:15:00Z", 6, "x");
            let p = Payload::from_event(&e, &credential(), &extra);
            assert_eq!(p.data.previous_version, None, "{kind:?}");
            assert_eq!(p.data.revoke_after, None, "{kind:?}");
        }
        let e = event(EventKind::Rotated, "2026-05-04T10:15:00Z", 1, "first");
        let p = Payload::from_event(&e, &credential(), &Extra::default());
        let json = serde_json::to_value(&p).unwrap();
        assert!(json["data"].get("previous_version").is_none());
    }

    #[test]
    fn ids_are_the_event_ids_and_one_per_version_for_warnings() {
        let c = credential();
        for kind in [
            EventKind::Rotated,
            EventKind::Revoked,
            EventKind::RolledBack,
            EventKind::Failed,
            EventKind::NeedsAttention,
        ] {
            let e = event(kind, "2026-05-04T10:15:00Z", 7, "x");
            assert_eq!(
                Payload::from_event(&e, &c, &Extra::default()).id(),
                e.id,
                "{kind:?}"
            );
        }
        let warning = |attempt: Option<&str>, at_text: &str| {
            Payload::expiring(
                &c,
                &Expiring {
                    at: at(at_text),
                    version: 6,
                    expires_at: at("2026-06-03T10:15:00Z"),
                    attempt: attempt.map(str::to_string),
                    reason: "parked".into(),
                },
            )
            .id()
        };
        let expected = "shop-storefront:v6:credential.expiring";
        assert_eq!(warning(Some(ATTEMPT), "2026-05-27T09:00:00Z"), expected);
        assert_eq!(warning(None, "2026-05-28T09:00:00Z"), expected);
    }

    #[test]
    fn no_payload_names_where_a_secret_is_kept_other_than_the_credential_itself() {
        // The storefront credential's parent token is another credential; the assisted examples'
        // steps name their own fields (what a person supplies), never a value.
        for payload in examples()
            .into_iter()
            .filter(|p| p.data.credential == "shop-storefront")
        {
            let text = String::from_utf8(payload.body()).unwrap();
            for needle in ["store-admin", "parent_token", "access_token"] {
                assert!(!text.contains(needle), "{needle} in {text}");
            }
        }
    }
}
