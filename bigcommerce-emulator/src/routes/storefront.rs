//! Creating and revoking storefront tokens (`/stores/{hash}/v3/storefront/api-token*`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api_errors;
use crate::credentials::fingerprint;
use crate::endpoints::Flavor;
use crate::routes::rest::{authorize, parse_body, DeniedReason};
use crate::scopes::{Access, Resource};
use crate::state::App;
use crate::storefront::{validate, FieldErrors, TokenKind};

pub async fn create_storefront(
    app: State<Arc<App>>,
    hash: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(TokenKind::Storefront, app.0, hash.0, headers, body).await
}

pub async fn create_private(
    app: State<Arc<App>>,
    hash: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(TokenKind::Private, app.0, hash.0, headers, body).await
}

pub async fn create_impersonation(
    app: State<Arc<App>>,
    hash: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(
        TokenKind::CustomerImpersonation,
        app.0,
        hash.0,
        headers,
        body,
    )
    .await
}

/// The scope a token kind's creation needs (at modify): customer impersonation tokens have a
/// scope of their own, "Storefront API Customer Impersonation Tokens".
pub fn creation_scope(kind: TokenKind) -> Resource {
    match kind {
        TokenKind::CustomerImpersonation => Resource::StorefrontApiCustomerImpersonation,
        TokenKind::Storefront | TokenKind::Private => Resource::StorefrontApiTokens,
    }
}

fn invalid(field: &str, message: &str) -> Response {
    let mut errors = FieldErrors::new();
    errors.insert(field.into(), message.into());
    api_errors::v3(422, api_errors::INVALID_INPUT, &errors)
}

async fn create(
    kind: TokenKind,
    app: Arc<App>,
    hash: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let jti = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        if let Err(denied) = authorize(
            inner,
            &hash,
            &headers,
            creation_scope(kind),
            Access::Modify,
            Flavor::V3,
        ) {
            return denied.into_response();
        }
        let value = match parse_body(&body) {
            Ok(v) => v,
            Err(detail) => return invalid("body", detail),
        };
        let now_ms = inner.now_ms();
        let store = inner.stores.get_mut(&hash).expect("authorized");
        let request = match validate(kind, &value, (now_ms / 1000) as i64, &store.channels) {
            Ok(r) => r,
            Err(errors) => return api_errors::v3(422, api_errors::INVALID_INPUT, &errors),
        };
        let (token, jti) = store.mint(kind, request, now_ms, &mut inner.rng);
        inner.counters.tokens_minted += 1;
        (token, jti)
    };
    app.persist().await;
    let (token, jti) = jti;
    tracing::info!(store = %hash, %jti, ?kind, "storefront token minted");
    Json(json!({"data": {"token": token}, "meta": {}})).into_response()
}

/// `DELETE /v3/storefront/api-token` with `Sf-Api-Token`: schedules the revocation.
pub async fn revoke(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        // The docs name no scope for revocation: either token scope at modify will do, so an
        // account that may only create impersonation tokens can also revoke them.
        let scope =
            |resource| authorize(inner, &hash, &headers, resource, Access::Modify, Flavor::V3);
        let denied = match scope(Resource::StorefrontApiTokens) {
            Err(d) if d.reason == DeniedReason::MissingScope => {
                scope(Resource::StorefrontApiCustomerImpersonation).err()
            }
            other => other.err(),
        };
        if let Some(denied) = denied {
            return denied.into_response();
        }
        let token = headers
            .get("sf-api-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return invalid("Sf-Api-Token", "the Sf-Api-Token header is required");
        };
        let now_ms = inner.now_ms();
        let store = inner.stores.get_mut(&hash).expect("authorized");
        match store.schedule_revocation(token, now_ms) {
            Err(e) => {
                tracing::info!(store = %hash, token = %fingerprint(token), "revocation refused: {}", e.message());
                return invalid("Sf-Api-Token", e.message());
            }
            Ok((jti, fresh)) => {
                if fresh {
                    inner.counters.tokens_revoked += 1;
                }
                tracing::info!(store = %hash, %jti, "storefront token revocation scheduled");
            }
        }
    }
    app.persist().await;
    Json(json!({"data": {"message": "revocation has been scheduled"}, "meta": {}})).into_response()
}
