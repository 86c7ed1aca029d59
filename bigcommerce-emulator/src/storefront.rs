//! Storefront token kinds and validation of token-creation bodies.
//!
//! Invariant: pure; the current time is passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `POST /v3/storefront/api-token`
    Storefront,
    /// `POST /v3/storefront/api-token-private`
    Private,
    /// `POST /v3/storefront/api-token-customer-impersonation`
    CustomerImpersonation,
}

/// Scopes a private token may carry.
pub const PRIVATE_SCOPES: [&str; 3] = ["Unauthenticated", "Customer", "B2B"];

/// A validated creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub channel_ids: Vec<u64>,
    pub expires_at: i64,
    pub allowed_cors_origins: Vec<String>,
    pub scopes: Vec<String>,
}

/// Field name to message, as in the v3 error body's `errors` map.
pub type FieldErrors = BTreeMap<String, String>;

fn positive_int(v: &Value) -> Option<u64> {
    v.as_u64().filter(|n| *n >= 1)
}

/// Validates a creation body for `kind` at `now_secs`, against the store's `channels`.
pub fn validate(
    kind: TokenKind,
    body: &Value,
    now_secs: i64,
    channels: &[u64],
) -> Result<TokenRequest, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(obj) = body.as_object() else {
        errors.insert("body".into(), "the body must be a JSON object".into());
        return Err(errors);
    };

    let channel_ids = match (obj.get("channel_id"), obj.get("channel_ids")) {
        (Some(_), Some(_)) | (None, None) => {
            errors.insert(
                "channel_id".into(),
                "exactly one of channel_id or channel_ids is required".into(),
            );
            vec![]
        }
        (Some(one), None) => match positive_int(one) {
            Some(id) => vec![id],
            None => {
                errors.insert("channel_id".into(), "must be an integer >= 1".into());
                vec![]
            }
        },
        (None, Some(many)) => {
            let ids: Option<Vec<u64>> = many
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| a.iter().map(positive_int).collect());
            match ids {
                Some(ids) => ids,
                None => {
                    errors.insert(
                        "channel_ids".into(),
                        "must be a non-empty array of integers >= 1".into(),
                    );
                    vec![]
                }
            }
        }
    };
    if let Some(unknown) = channel_ids.iter().find(|id| !channels.contains(id)) {
        let field = if obj.contains_key("channel_id") {
            "channel_id"
        } else {
            "channel_ids"
        };
        errors.insert(field.into(), format!("channel {unknown} does not exist"));
    }

    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => {
            errors.insert("expires_at".into(), "is required".into());
            0
        }
        Some(v) => match v.as_i64() {
            Some(t) if t > now_secs => t,
            Some(_) => {
                errors.insert("expires_at".into(), "must be in the future".into());
                0
            }
            None => {
                errors.insert(
                    "expires_at".into(),
                    "must be a Unix timestamp in seconds".into(),
                );
                0
            }
        },
    };

    let mut allowed_cors_origins = vec![];
    if kind != TokenKind::CustomerImpersonation {
        if let Some(v) = obj.get("allowed_cors_origins") {
            let origins: Option<Vec<String>> = v
                .as_array()
                .and_then(|a| a.iter().map(|o| o.as_str().map(str::to_string)).collect());
            match origins {
                Some(o) if (1..=2).contains(&o.len()) => allowed_cors_origins = o,
                _ => {
                    errors.insert(
                        "allowed_cors_origins".into(),
                        "must be an array of 1 to 2 origins".into(),
                    );
                }
            }
        }
    }

    let mut scopes = vec![];
    if kind == TokenKind::Private {
        let given: Option<Vec<String>> = obj
            .get("scopes")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect());
        match given {
            Some(s) if !s.is_empty() && s.iter().all(|x| PRIVATE_SCOPES.contains(&x.as_str())) => {
                for x in s {
                    if !scopes.contains(&x) {
                        scopes.push(x);
                    }
                }
            }
            _ => {
                errors.insert(
                    "scopes".into(),
                    "is required: a non-empty subset of Unauthenticated, Customer, B2B".into(),
                );
            }
        }
    }

    if errors.is_empty() {
        Ok(TokenRequest {
            channel_ids,
            expires_at,
            allowed_cors_origins,
            scopes,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_000;

    fn check(kind: TokenKind, body: Value, expected: Result<(), &[&str]>) {
        let got = validate(kind, &body, NOW, &[1, 2]);
        match (got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(errors), Err(fields)) => {
                let names: Vec<&str> = errors.keys().map(String::as_str).collect();
                assert_eq!(names, fields, "{body}");
            }
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn storefront_token_bodies() {
        use TokenKind::Storefront as S;
        check(S, json!({"channel_id": 1, "expires_at": 2000}), Ok(()));
        check(
            S,
            json!({"channel_ids": [1, 2], "expires_at": 2000}),
            Ok(()),
        );
        check(
            S,
            json!({"channel_id": 1, "expires_at": 2000, "allowed_cors_origins": ["https://a"]}),
            Ok(()),
        );
        check(S, json!({"expires_at": 2000}), Err(&["channel_id"]));
        check(
            S,
            json!({"channel_id": 1, "channel_ids": [1], "expires_at": 2000}),
            Err(&["channel_id"]),
        );
        check(
            S,
            json!({"channel_id": 0, "expires_at": 2000}),
            Err(&["channel_id"]),
        );
        check(
            S,
            json!({"channel_id": 9, "expires_at": 2000}),
            Err(&["channel_id"]),
        );
        check(
            S,
            json!({"channel_ids": [], "expires_at": 2000}),
            Err(&["channel_ids"]),
        );
        check(
            S,
            json!({"channel_ids": ["1"], "expires_at": 2000}),
            Err(&["channel_ids"]),
        );
        check(S, json!({"channel_id": 1}), Err(&["expires_at"]));
        check(
            S,
            json!({"channel_id": 1, "expires_at": NOW}),
            Err(&["expires_at"]),
        );
        check(
            S,
            json!({"channel_id": 1, "expires_at": "soon"}),
            Err(&["expires_at"]),
        );
        check(
            S,
            json!({"channel_id": 1, "expires_at": 2000, "allowed_cors_origins": []}),
            Err(&["allowed_cors_origins"]),
        );
        check(
            S,
            json!({"channel_id": 1, "expires_at": 2000, "allowed_cors_origins": ["a", "b", "c"]}),
            Err(&["allowed_cors_origins"]),
        );
        check(S, json!([]), Err(&["body"]));
        check(S, json!({}), Err(&["channel_id", "expires_at"]));
    }

    #[test]
    fn private_token_bodies() {
        use TokenKind::Private as P;
        check(
            P,
            json!({"channel_id": 1, "expires_at": 2000, "scopes": ["Customer"]}),
            Ok(()),
        );
        check(
            P,
            json!({"channel_id": 1, "expires_at": 2000, "scopes": ["Unauthenticated", "Customer", "B2B"]}),
            Ok(()),
        );
        check(
            P,
            json!({"channel_id": 1, "expires_at": 2000}),
            Err(&["scopes"]),
        );
        check(
            P,
            json!({"channel_id": 1, "expires_at": 2000, "scopes": []}),
            Err(&["scopes"]),
        );
        check(
            P,
            json!({"channel_id": 1, "expires_at": 2000, "scopes": ["Admin"]}),
            Err(&["scopes"]),
        );
    }

    #[test]
    fn impersonation_token_bodies() {
        use TokenKind::CustomerImpersonation as I;
        check(I, json!({"channel_id": 1, "expires_at": 2000}), Ok(()));
        check(I, json!({"channel_ids": [2], "expires_at": 2000}), Ok(()));
        check(I, json!({"channel_id": 1}), Err(&["expires_at"]));
    }
}
