//! The legacy API path `/store-{hash}/api/v2/...` with Basic auth, for legacy API accounts
//! and users with API access. Every answer carries `X-BC-ApiLimit-Remaining`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::api_errors;
use crate::routes::rest::{parse_body, store_info};
use crate::scopes::{Access, Resource};
use crate::state::App;
use crate::store::BasicAuth;

/// The resource a legacy path belongs to; None for paths the emulator does not know.
pub fn resource_of(path: &str) -> Option<Resource> {
    let path = path.trim_end_matches('/').trim_end_matches(".json");
    let first = path.split('/').next().unwrap_or("");
    match first {
        "time" | "store" => Some(Resource::InformationAndSettings),
        "orders" => Some(Resource::Orders),
        "products" | "categories" | "brands" => Some(Resource::Products),
        "customers" => Some(Resource::Customers),
        "coupons" => Some(Resource::Marketing),
        "blog" | "pages" => Some(Resource::Content),
        _ => None,
    }
}

/// `username:token` from an `Authorization: Basic ...` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, token) = decoded.split_once(':')?;
    Some((user.to_string(), token.to_string()))
}

pub async fn handle(
    State(app): State<Arc<App>>,
    Path((segment, rest)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hash) = segment.strip_prefix("store-") else {
        return api_errors::v2(404, api_errors::NOT_FOUND);
    };
    let (mut resp, remaining) = answer(&app, hash, &rest, &method, &headers, &body).await;
    if let Some(remaining) = remaining {
        resp.headers_mut().insert(
            "x-bc-apilimit-remaining",
            HeaderValue::from_str(&remaining.to_string()).expect("digits"),
        );
    }
    resp
}

async fn answer(
    app: &App,
    hash: &str,
    rest: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<u32>) {
    let mut guard = app.inner.lock().await;
    let inner = &mut *guard;
    let now_ms = inner.now_ms();
    let now_secs = inner.now_secs();
    let Some(store) = inner.stores.get_mut(hash) else {
        return (api_errors::v2(404, "Store not found"), None);
    };
    let Some(remaining) = store.legacy_hour().take(now_ms) else {
        return (api_errors::v2(429, api_errors::TOO_MANY_REQUESTS), Some(0));
    };
    let with = |resp: Response| (resp, Some(remaining));
    let Some((username, token)) = basic_credentials(headers) else {
        return with(api_errors::v2(401, "No credentials were supplied"));
    };
    let account = match store.authenticate_basic(&username, &token) {
        BasicAuth::Invalid => return with(api_errors::v2(401, "The credentials are invalid")),
        BasicAuth::Allowed(a) => a,
    };
    let Some(resource) = resource_of(rest) else {
        return with(api_errors::v2(404, api_errors::NOT_FOUND));
    };
    let needed = if method == Method::GET || method == Method::HEAD {
        Access::ReadOnly
    } else {
        Access::Modify
    };
    if !account.permissions.allows(resource, needed) {
        return with(api_errors::v2(
            403,
            "You don't have permission to access this resource",
        ));
    }
    let path = rest.trim_end_matches('/').trim_end_matches(".json");
    if needed == Access::ReadOnly {
        let value = match path {
            "time" => json!({"time": now_secs}),
            "store" => store_info(store),
            _ => json!([]),
        };
        return with(Json(value).into_response());
    }
    match parse_body(body) {
        Err(detail) => with(api_errors::v2(422, detail)),
        Ok(value) => with(Json(value).into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_paths_map_to_resources() {
        let cases = [
            ("time", Some(Resource::InformationAndSettings)),
            ("time.json", Some(Resource::InformationAndSettings)),
            ("orders/12", Some(Resource::Orders)),
            ("products/", Some(Resource::Products)),
            ("coupons", Some(Resource::Marketing)),
            ("webhooks", None),
        ];
        for (path, expected) in cases {
            assert_eq!(resource_of(path), expected, "{path}");
        }
    }
}
