//! Storefront GraphQL (`POST /store-{hash}/graphql`): checks the bearer JWT and answers the
//! minimal `{ site { settings { storeName } } }` query.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api_errors;
use crate::state::App;
use crate::store::StorefrontAuthError;
use crate::storefront::TokenKind;

pub async fn query(
    State(app): State<Arc<App>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hash) = segment.strip_prefix("store-") else {
        return api_errors::graphql(404, api_errors::NOT_FOUND);
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let store_name = {
        let inner = app.inner.lock().await;
        let Some(store) = inner.stores.get(hash) else {
            return api_errors::graphql(404, "Store not found");
        };
        let Some(token) = bearer else {
            return api_errors::graphql(401, StorefrontAuthError::Missing.message());
        };
        let record = match store.check_storefront_token(token, inner.now_ms()) {
            Ok(r) => r,
            Err(e) => return api_errors::graphql(401, e.message()),
        };
        if let Some(customer) = headers.get("x-bc-customer-id") {
            if record.kind != TokenKind::CustomerImpersonation {
                return api_errors::graphql(
                    401,
                    "X-Bc-Customer-Id may only be sent with a customer impersonation token",
                );
            }
            let valid = customer
                .to_str()
                .ok()
                .and_then(|c| c.trim().parse::<u64>().ok())
                .is_some_and(|id| id >= 1);
            if !valid {
                return api_errors::graphql(400, "X-Bc-Customer-Id must be a customer id");
            }
        }
        store.name.clone()
    };
    let query = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_string));
    let Some(query) = query else {
        return api_errors::graphql(400, "the body must be JSON with a `query` string");
    };
    if ["site", "settings", "storeName"]
        .iter()
        .all(|w| query.contains(w))
    {
        Json(json!({"data": {"site": {"settings": {"storeName": store_name}}}})).into_response()
    } else {
        Json(json!({
            "data": null,
            "errors": [{"message": "the emulator answers only `{ site { settings { storeName } } }`"}]
        }))
        .into_response()
    }
}
