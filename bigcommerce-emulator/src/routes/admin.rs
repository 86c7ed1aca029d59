//! The control panel as an HTTP API under `/__admin/`, guarded by the admin bearer token.
//! Admin requests do not count against rate limits, and faults never apply to them.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::admin_api::*;
use crate::scopes::{Access, Scopes};
use crate::state::App;
use crate::state::Inner;
use crate::store::{AccountError, ApiAccount, BasicAccount, Store, TokenState};

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let guarded = Router::new()
        .route("/stores", get(list_stores))
        .route("/stores/{hash}", get(get_store))
        .route("/stores/{hash}/settings", put(set_settings))
        .route("/stores/{hash}/credentials", get(credentials))
        .route(
            "/stores/{hash}/api-accounts",
            get(list_api_accounts).post(create_api_account),
        )
        .route(
            "/stores/{hash}/api-accounts/{client_id}",
            delete(delete_api_account),
        )
        .route(
            "/stores/{hash}/api-accounts/{client_id}/scopes",
            put(set_scopes),
        )
        .route("/stores/{hash}/storefront-tokens", get(list_tokens))
        .route(
            "/stores/{hash}/storefront-tokens/{jti}",
            delete(revoke_token),
        )
        .route("/stores/{hash}/{kind}", get(list_basic).post(create_basic))
        .route("/stores/{hash}/{kind}/{username}", delete(delete_basic))
        .route(
            "/stores/{hash}/{kind}/{username}/regenerate",
            post(regenerate_basic),
        )
        .route(
            "/stores/{hash}/{kind}/{username}/permissions",
            put(set_permissions),
        )
        .route(
            "/stores/{hash}/{kind}/{username}/api-access",
            put(set_api_access),
        )
        .route("/counters", get(counters).delete(reset_counters))
        .route("/clock", get(clock).put(set_clock))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route_layer(middleware::from_fn_with_state(app, require_admin));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(guarded)
}

async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(app.admin_token.as_str()) {
        return AdminError(
            StatusCode::UNAUTHORIZED,
            "admin bearer token required".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// An admin error: status and message, answered as `{"error": "..."}`.
pub struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(AdminErrorBody { error: self.1 })).into_response()
    }
}

impl From<AccountError> for AdminError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::TooMany => AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "a store has at most {} store-level API accounts",
                    crate::seed::MAX_API_ACCOUNTS
                ),
            ),
            AccountError::NameTaken => AdminError(
                StatusCode::CONFLICT,
                "username already taken in this store".into(),
            ),
            AccountError::NotFound => AdminError(StatusCode::NOT_FOUND, "no such account".into()),
            AccountError::InvalidName => {
                AdminError(StatusCode::UNPROCESSABLE_ENTITY, "invalid name".into())
            }
        }
    }
}

type AdminResult<T> = Result<Json<T>, AdminError>;

fn store_mut<'a>(inner: &'a mut Inner, hash: &str) -> Result<&'a mut Store, AdminError> {
    inner
        .stores
        .get_mut(hash)
        .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no store `{hash}`")))
}

fn store_view(base: &str, s: &Store) -> StoreView {
    StoreView {
        hash: s.hash.clone(),
        id: s.id,
        name: s.name.clone(),
        plan: s.plan,
        channels: s.channels.clone(),
        rate_limit_quota: s.rate_limit_quota,
        rate_limit_window_ms: s.rate_limit_window_ms,
        revocation_delay_ms: s.revocation_delay_ms,
        legacy_hourly_quota: s.legacy_hourly_quota,
        api_path: format!("{base}{}", s.api_path()),
        legacy_api_path: format!("{base}{}", s.legacy_api_path()),
        graphql_url: format!("{base}/store-{}/graphql", s.hash),
    }
}

fn account_view(base: &str, s: &Store, a: &ApiAccount) -> ApiAccountView {
    ApiAccountView {
        name: a.name.clone(),
        client_id: a.client_id.clone(),
        client_secret: a.client_secret.clone(),
        access_token: a.access_token.clone(),
        api_path: format!("{base}{}", s.api_path()),
        scopes: a.scopes.clone(),
        created_at: a.created_at,
    }
}

fn basic_view(base: &str, s: &Store, a: &BasicAccount) -> BasicAccountView {
    BasicAccountView {
        username: a.username.clone(),
        token: a.token.clone(),
        api_path: format!("{base}{}", s.legacy_api_path()),
        permissions: a.permissions.clone(),
        api_enabled: a.api_enabled,
    }
}

fn is_user(kind: &str) -> Result<bool, AdminError> {
    match kind {
        "legacy-accounts" => Ok(false),
        "users" => Ok(true),
        _ => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no admin route `{kind}`"),
        )),
    }
}

async fn list_stores(State(app): State<Arc<App>>) -> AdminResult<Vec<StoreView>> {
    let inner = app.inner.lock().await;
    Ok(Json(
        inner
            .stores
            .values()
            .map(|s| store_view(&app.base_url, s))
            .collect(),
    ))
}

async fn get_store(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
) -> AdminResult<StoreView> {
    let mut inner = app.inner.lock().await;
    let s = store_mut(&mut inner, &hash)?;
    Ok(Json(store_view(&app.base_url, s)))
}

async fn set_settings(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    Json(body): Json<StoreSettings>,
) -> AdminResult<StoreView> {
    let view = {
        let mut inner = app.inner.lock().await;
        let s = store_mut(&mut inner, &hash)?;
        if body.rate_limit_quota == Some(0) || body.rate_limit_window_ms == Some(0) {
            return Err(AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quota and window must be at least 1".into(),
            ));
        }
        let quota = body.rate_limit_quota.unwrap_or(s.rate_limit_quota);
        let window = body.rate_limit_window_ms.unwrap_or(s.rate_limit_window_ms);
        s.set_rate_limit(quota, window);
        if let Some(delay) = body.revocation_delay_ms {
            s.revocation_delay_ms = delay;
        }
        store_view(&app.base_url, s)
    };
    app.persist().await;
    Ok(Json(view))
}

async fn credentials(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
) -> AdminResult<Credentials> {
    let mut inner = app.inner.lock().await;
    let s = store_mut(&mut inner, &hash)?;
    let base = &app.base_url;
    Ok(Json(Credentials {
        store_hash: s.hash.clone(),
        api_accounts: s
            .api_accounts
            .iter()
            .map(|a| account_view(base, s, a))
            .collect(),
        legacy_accounts: s
            .legacy_accounts
            .iter()
            .map(|a| basic_view(base, s, a))
            .collect(),
        users: s.users.iter().map(|a| basic_view(base, s, a)).collect(),
    }))
}

async fn list_api_accounts(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
) -> AdminResult<Vec<ApiAccountView>> {
    let mut inner = app.inner.lock().await;
    let s = store_mut(&mut inner, &hash)?;
    Ok(Json(
        s.api_accounts
            .iter()
            .map(|a| account_view(&app.base_url, s, a))
            .collect(),
    ))
}

async fn create_api_account(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    Json(body): Json<NewApiAccount>,
) -> Result<(StatusCode, Json<ApiAccountView>), AdminError> {
    let view = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        let now = inner.now_secs();
        let s = inner
            .stores
            .get_mut(&hash)
            .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no store `{hash}`")))?;
        let a = s
            .create_api_account(&body.name, body.scopes, now, &mut inner.rng)?
            .clone();
        tracing::info!(store = %hash, client_id = %a.client_id, "API account created");
        account_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn delete_api_account(
    State(app): State<Arc<App>>,
    Path((hash, client_id)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    {
        let mut inner = app.inner.lock().await;
        store_mut(&mut inner, &hash)?.delete_api_account(&client_id)?;
    }
    tracing::info!(store = %hash, %client_id, "API account deleted");
    app.persist().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_scopes(
    State(app): State<Arc<App>>,
    Path((hash, client_id)): Path<(String, String)>,
    Json(body): Json<SetScopes>,
) -> AdminResult<ApiAccountView> {
    let view = {
        let mut inner = app.inner.lock().await;
        let s = store_mut(&mut inner, &hash)?;
        let a = s.set_scopes(&client_id, body.scopes)?.clone();
        account_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok(Json(view))
}

async fn list_basic(
    State(app): State<Arc<App>>,
    Path((hash, kind)): Path<(String, String)>,
) -> AdminResult<Vec<BasicAccountView>> {
    let user = is_user(&kind)?;
    let mut inner = app.inner.lock().await;
    let s = store_mut(&mut inner, &hash)?;
    let list = if user { &s.users } else { &s.legacy_accounts };
    Ok(Json(
        list.iter()
            .map(|a| basic_view(&app.base_url, s, a))
            .collect(),
    ))
}

async fn create_basic(
    State(app): State<Arc<App>>,
    Path((hash, kind)): Path<(String, String)>,
    Json(body): Json<NewBasicAccount>,
) -> Result<(StatusCode, Json<BasicAccountView>), AdminError> {
    let user = is_user(&kind)?;
    let view = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        let s = inner
            .stores
            .get_mut(&hash)
            .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no store `{hash}`")))?;
        let permissions = body
            .permissions
            .unwrap_or_else(|| Scopes::all(Access::Modify));
        let a = s
            .create_basic_account(user, &body.username, permissions, &mut inner.rng)?
            .clone();
        basic_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn delete_basic(
    State(app): State<Arc<App>>,
    Path((hash, kind, username)): Path<(String, String, String)>,
) -> Result<StatusCode, AdminError> {
    let user = is_user(&kind)?;
    {
        let mut inner = app.inner.lock().await;
        store_mut(&mut inner, &hash)?.delete_basic_account(user, &username)?;
    }
    app.persist().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn regenerate_basic(
    State(app): State<Arc<App>>,
    Path((hash, kind, username)): Path<(String, String, String)>,
) -> AdminResult<BasicAccountView> {
    let user = is_user(&kind)?;
    let view = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        let s = inner
            .stores
            .get_mut(&hash)
            .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no store `{hash}`")))?;
        let a = s
            .regenerate_basic_token(user, &username, &mut inner.rng)?
            .clone();
        tracing::info!(store = %hash, %username, "API token regenerated");
        basic_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok(Json(view))
}

async fn set_permissions(
    State(app): State<Arc<App>>,
    Path((hash, kind, username)): Path<(String, String, String)>,
    Json(body): Json<SetPermissions>,
) -> AdminResult<BasicAccountView> {
    let user = is_user(&kind)?;
    let view = {
        let mut inner = app.inner.lock().await;
        let s = store_mut(&mut inner, &hash)?;
        let a = s
            .set_permissions(user, &username, body.permissions)?
            .clone();
        basic_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok(Json(view))
}

async fn set_api_access(
    State(app): State<Arc<App>>,
    Path((hash, kind, username)): Path<(String, String, String)>,
    Json(body): Json<SetApiEnabled>,
) -> AdminResult<BasicAccountView> {
    if !is_user(&kind)? {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            "API access is switched on and off for users only".into(),
        ));
    }
    let view = {
        let mut inner = app.inner.lock().await;
        let s = store_mut(&mut inner, &hash)?;
        let a = s.set_api_enabled(&username, body.enabled)?.clone();
        basic_view(&app.base_url, s, &a)
    };
    app.persist().await;
    Ok(Json(view))
}

async fn list_tokens(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
) -> AdminResult<Vec<StorefrontTokenView>> {
    let mut inner = app.inner.lock().await;
    let now = inner.now_ms();
    let s = store_mut(&mut inner, &hash)?;
    Ok(Json(
        s.tokens
            .iter()
            .map(|t| {
                let state = t.state(now);
                StorefrontTokenView {
                    jti: t.jti.clone(),
                    kind: t.kind,
                    channel_ids: t.channel_ids.clone(),
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                    state,
                    accepted: matches!(state, TokenState::Live | TokenState::RevocationScheduled),
                    revoked_from_ms: t.revoked_from_ms,
                    sha256: t.sha256.clone(),
                }
            })
            .collect(),
    ))
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    Path((hash, jti)): Path<(String, String)>,
) -> AdminResult<RevokedToken> {
    let fresh = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        let now = inner.now_ms();
        let s = inner
            .stores
            .get_mut(&hash)
            .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no store `{hash}`")))?;
        let fresh = s.revoke_now(&jti, now).ok_or_else(|| {
            AdminError(StatusCode::NOT_FOUND, format!("no token with jti `{jti}`"))
        })?;
        if fresh {
            inner.counters.tokens_revoked += 1;
        }
        fresh
    };
    tracing::info!(store = %hash, %jti, "storefront token revoked by the admin");
    app.persist().await;
    Ok(Json(RevokedToken {
        jti,
        newly_revoked: fresh,
    }))
}

async fn counters(State(app): State<Arc<App>>) -> AdminResult<Counters> {
    Ok(Json(app.inner.lock().await.counters.clone()))
}

async fn reset_counters(State(app): State<Arc<App>>) -> StatusCode {
    app.inner.lock().await.counters = Counters::default();
    StatusCode::NO_CONTENT
}

async fn clock(State(app): State<Arc<App>>) -> AdminResult<ClockView> {
    let inner = app.inner.lock().await;
    Ok(Json(ClockView {
        now_ms: inner.now_ms(),
        offset_ms: inner.clock_offset_ms,
    }))
}

async fn set_clock(
    State(app): State<Arc<App>>,
    Json(body): Json<SetClock>,
) -> AdminResult<ClockView> {
    let view = {
        let mut inner = app.inner.lock().await;
        if let Some(offset) = body.offset_ms {
            inner.clock_offset_ms = offset;
        }
        if let Some(advance) = body.advance_ms {
            inner.clock_offset_ms += advance;
        }
        ClockView {
            now_ms: inner.now_ms(),
            offset_ms: inner.clock_offset_ms,
        }
    };
    app.persist().await;
    Ok(Json(view))
}

async fn list_faults(State(app): State<Arc<App>>) -> AdminResult<Vec<FaultView>> {
    Ok(Json(app.inner.lock().await.faults.list()))
}

async fn add_fault(
    State(app): State<Arc<App>>,
    Json(spec): Json<FaultSpec>,
) -> Result<(StatusCode, Json<FaultView>), AdminError> {
    let view = app
        .inner
        .lock()
        .await
        .faults
        .add(spec)
        .map_err(|e| AdminError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    tracing::info!(id = view.id, endpoint = %view.spec.endpoint, "fault set");
    Ok((StatusCode::CREATED, Json(view)))
}

async fn clear_faults(State(app): State<Arc<App>>) -> StatusCode {
    app.inner.lock().await.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<StatusCode, AdminError> {
    if app.inner.lock().await.faults.remove(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError(StatusCode::NOT_FOUND, format!("no fault {id}")))
    }
}
