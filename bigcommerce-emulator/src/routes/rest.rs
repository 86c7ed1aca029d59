//! The REST API under `/stores/{hash}/`: `/v2/time`, `/v2/store`, and one probe endpoint per
//! scope resource. The access token and its scope are checked before the body, as the real
//! API's auth layer does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api_errors;
use crate::endpoints::{Flavor, PROBES};
use crate::scopes::{Access, Resource};
use crate::state::App;
use crate::state::Inner;
use crate::store::{ApiAccount, Store};
use crate::storefront::FieldErrors;

/// Why `authorize` refused; answered in the shape of the path's flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub flavor: Flavor,
    pub reason: DeniedReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedReason {
    NoStore,
    MissingToken,
    InvalidToken,
    MissingScope,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self.reason {
            DeniedReason::NoStore => api_errors::for_flavor(self.flavor, 404, "Store not found"),
            DeniedReason::MissingToken => {
                api_errors::for_flavor(self.flavor, 401, "The X-Auth-Token header is required")
            }
            DeniedReason::InvalidToken => {
                api_errors::for_flavor(self.flavor, 401, api_errors::INVALID_TOKEN)
            }
            DeniedReason::MissingScope => match self.flavor {
                Flavor::V3 => api_errors::v3(403, api_errors::MISSING_SCOPE, &FieldErrors::new()),
                _ => api_errors::for_flavor(self.flavor, 403, api_errors::MISSING_SCOPE),
            },
        }
    }
}

/// Checks `X-Auth-Token` (401) then the scope (403). `X-Auth-Client` is ignored.
pub fn authorize<'a>(
    inner: &'a Inner,
    hash: &str,
    headers: &HeaderMap,
    resource: Resource,
    needed: Access,
    flavor: Flavor,
) -> Result<(&'a Store, &'a ApiAccount), Denied> {
    let deny = |reason| Denied { flavor, reason };
    let store = inner.stores.get(hash).ok_or(deny(DeniedReason::NoStore))?;
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or(deny(DeniedReason::MissingToken))?;
    let account = store
        .account_by_access_token(token)
        .ok_or(deny(DeniedReason::InvalidToken))?;
    if !account.scopes.allows(resource, needed) {
        return Err(deny(DeniedReason::MissingScope));
    }
    Ok((store, account))
}

/// The body of `/v2/store` (also answered by the legacy API's `store`).
pub fn store_info(store: &Store) -> Value {
    json!({
        "id": store.hash,
        "domain": format!("store-{}.mybigcommerce.com", store.hash),
        "secure_url": format!("https://store-{}.mybigcommerce.com", store.hash),
        "name": store.name,
        "plan_name": format!("{:?}", store.plan),
        "plan_level": format!("{:?}", store.plan),
        "status": "live",
        "language": "en",
        "currency": "USD",
        "is_price_entered_with_tax": false,
        "features": {"stencil_enabled": true},
        "store_id": store.id,
    })
}

pub async fn v2_time(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let inner = app.inner.lock().await;
    match authorize(
        &inner,
        &hash,
        &headers,
        Resource::InformationAndSettings,
        Access::ReadOnly,
        Flavor::V2,
    ) {
        Err(denied) => denied.into_response(),
        Ok(_) => Json(json!({"time": inner.now_secs()})).into_response(),
    }
}

pub async fn v2_store(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let inner = app.inner.lock().await;
    match authorize(
        &inner,
        &hash,
        &headers,
        Resource::InformationAndSettings,
        Access::ReadOnly,
        Flavor::V2,
    ) {
        Err(denied) => denied.into_response(),
        Ok((store, _)) => Json(store_info(store)).into_response(),
    }
}

fn empty_list(flavor: Flavor) -> Value {
    match flavor {
        Flavor::V3 => json!({
            "data": [],
            "meta": {"pagination": {"total": 0, "count": 0, "per_page": 50, "current_page": 1, "total_pages": 0}}
        }),
        _ => json!([]),
    }
}

/// GET on a probe: needs read-only on its resource.
pub async fn probe_read(i: usize, app: Arc<App>, hash: String, headers: HeaderMap) -> Response {
    let (path, resource, flavor) = PROBES[i];
    let inner = app.inner.lock().await;
    if let Err(denied) = authorize(&inner, &hash, &headers, resource, Access::ReadOnly, flavor) {
        return denied.into_response();
    }
    let body = if path == "v3/catalog/summary" {
        json!({"data": {"inventory_count": 0, "variant_count": 0, "inventory_value": 0, "primary_category_id": 0, "primary_category_name": ""}, "meta": {}})
    } else {
        empty_list(flavor)
    };
    Json(body).into_response()
}

/// POST or PUT on a probe: needs modify; then an empty or non-JSON body is a 422, so a
/// verifier can test a modify scope without changing anything. A JSON body is echoed back
/// and not stored.
pub async fn probe_write(
    i: usize,
    app: Arc<App>,
    hash: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, resource, flavor) = PROBES[i];
    {
        let inner = app.inner.lock().await;
        if let Err(denied) = authorize(&inner, &hash, &headers, resource, Access::Modify, flavor) {
            return denied.into_response();
        }
    }
    match parse_body(&body) {
        Err(detail) => api_errors::unprocessable_body(flavor, detail),
        Ok(value) => match flavor {
            Flavor::V3 => Json(json!({"data": value, "meta": {}})).into_response(),
            _ => Json(value).into_response(),
        },
    }
}

/// A JSON body, or why not.
pub fn parse_body(body: &[u8]) -> Result<Value, &'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request body is empty");
    }
    serde_json::from_slice(body).map_err(|_| "the request body is not valid JSON")
}

/// `GET /v3/storefront/api-token` has no real counterpart; it probes read access to the
/// Storefront API Tokens scope.
pub async fn storefront_tokens_probe(
    state: State<Arc<App>>,
    hash: Path<String>,
    headers: HeaderMap,
) -> Response {
    probe_read(
        probe_index(STOREFRONT_TOKENS_PROBE),
        state.0,
        hash.0,
        headers,
    )
    .await
}

/// `GET /v3/storefront/api-token-customer-impersonation` has no real counterpart either; it
/// probes read access to the Storefront API Customer Impersonation Tokens scope.
pub async fn impersonation_tokens_probe(
    state: State<Arc<App>>,
    hash: Path<String>,
    headers: HeaderMap,
) -> Response {
    probe_read(
        probe_index(IMPERSONATION_TOKENS_PROBE),
        state.0,
        hash.0,
        headers,
    )
    .await
}

/// The probe paths whose `POST` creates a token: only their `GET` is a probe.
pub const STOREFRONT_TOKENS_PROBE: &str = "v3/storefront/api-token";
pub const IMPERSONATION_TOKENS_PROBE: &str = "v3/storefront/api-token-customer-impersonation";

fn probe_index(path: &str) -> usize {
    PROBES
        .iter()
        .position(|(p, _, _)| *p == path)
        .expect("listed")
}
