//! HTTP routes, and the pipeline every API request goes through first: counters, faults,
//! the store's rate limit, and the rate-limit headers.

pub mod admin;
pub mod graphql;
pub mod legacy;
pub mod rest;
pub mod storefront;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api_errors;
use crate::endpoints::{classify, Flavor, PROBES};
use crate::faults::{AfterCommit, EarlyAnswer, FaultPlan};
use crate::rate_limit::{Decision, RateStatus};
use crate::state::App;

/// Asks the connection loop to close one connection without answering. The server puts one
/// in every request's extensions; the pipeline uses it for the drop-after-commit fault.
#[derive(Clone)]
pub struct ConnectionKill(pub Arc<tokio::sync::Notify>);

pub fn router(app: Arc<App>) -> Router {
    let mut api = Router::new()
        .route("/stores/{hash}/v2/time", get(rest::v2_time))
        .route("/stores/{hash}/v2/store", get(rest::v2_store))
        .route(
            "/stores/{hash}/v3/storefront/api-token",
            get(rest::storefront_tokens_probe)
                .post(storefront::create_storefront)
                .delete(storefront::revoke),
        )
        .route(
            "/stores/{hash}/v3/storefront/api-token-private",
            post(storefront::create_private),
        )
        .route(
            "/stores/{hash}/v3/storefront/api-token-customer-impersonation",
            get(rest::impersonation_tokens_probe).post(storefront::create_impersonation),
        )
        .route("/{store}/graphql", post(graphql::query))
        .route(
            "/{store}/api/v2/{*rest}",
            axum::routing::any(legacy::handle),
        );
    for (i, (path, _, _)) in PROBES.iter().enumerate() {
        if [
            rest::STOREFRONT_TOKENS_PROBE,
            rest::IMPERSONATION_TOKENS_PROBE,
        ]
        .contains(path)
        {
            continue;
        }
        api = api.route(
            &format!("/stores/{{hash}}/{path}"),
            get(
                move |State(app): State<Arc<App>>, Path(hash): Path<String>, headers: HeaderMap| {
                    rest::probe_read(i, app, hash, headers)
                },
            )
            .post(
                move |State(app): State<Arc<App>>,
                      Path(hash): Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    rest::probe_write(i, app, hash, headers, body)
                },
            )
            .put(
                move |State(app): State<Arc<App>>,
                      Path(hash): Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    rest::probe_write(i, app, hash, headers, body)
                },
            ),
        );
    }
    api.fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), pipeline))
        .nest("/__admin", admin::router(app.clone()))
        .with_state(app)
}

async fn not_found(req: Request) -> Response {
    let flavor = classify(req.method().as_str(), req.uri().path())
        .map(|c| c.flavor)
        .unwrap_or(Flavor::V3);
    api_errors::for_flavor(flavor, 404, api_errors::NOT_FOUND)
}

pub fn set_rate_headers(headers: &mut HeaderMap, s: &RateStatus) {
    let pairs = [
        ("x-rate-limit-time-window-ms", s.window_ms.to_string()),
        ("x-rate-limit-time-reset-ms", s.reset_ms.to_string()),
        ("x-rate-limit-requests-quota", s.quota.to_string()),
        ("x-rate-limit-requests-left", s.left.to_string()),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_str(&value).expect("digits"));
    }
}

fn too_many(flavor: Flavor, status: Option<&RateStatus>) -> Response {
    let mut resp = api_errors::for_flavor(flavor, 429, api_errors::TOO_MANY_REQUESTS);
    if let Some(s) = status {
        set_rate_headers(resp.headers_mut(), s);
        resp.headers_mut().insert(
            "x-retry-after",
            HeaderValue::from_str(&s.retry_after_secs().to_string()).expect("digits"),
        );
    }
    resp
}

/// A gateway's own error page: plain text, none of the store's headers.
fn gateway_answer(status: u16) -> Response {
    let status =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Gateway Error")
    );
    (status, [("content-type", "text/plain")], text).into_response()
}

/// What the pipeline decided before the handler runs.
enum Before {
    NoStore,
    Early(EarlyAnswer, RateStatus),
    Limited(RateStatus),
    Handle(Option<RateStatus>, Option<AfterCommit>),
}

async fn pipeline(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(c) = classify(req.method().as_str(), req.uri().path()) else {
        return next.run(req).await;
    };
    let kill = req.extensions().get::<ConnectionKill>().cloned();
    let (before, latency_ms) = {
        let mut guard = app.inner.lock().await;
        let inner = &mut *guard;
        inner.counters.request(c.endpoint);
        let now = inner.now_ms();
        match inner.stores.get_mut(&c.store_hash) {
            None => (Before::NoStore, 0),
            Some(store) => {
                let plan = if inner.faults.is_empty() {
                    FaultPlan::default()
                } else {
                    inner.faults.decide(c.endpoint, &mut inner.fault_rng)
                };
                let before = if let Some(early) = plan.early {
                    Before::Early(early, store.window().peek(now))
                } else if c.endpoint.rate_limited() {
                    match store.window().take(now) {
                        Decision::Allowed(s) => Before::Handle(Some(s), plan.after_commit()),
                        Decision::Limited(s) => Before::Limited(s),
                    }
                } else {
                    Before::Handle(None, plan.after_commit())
                };
                (before, plan.latency_ms)
            }
        }
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let resp = match before {
        Before::NoStore => api_errors::for_flavor(c.flavor, 404, "Store not found"),
        Before::Early(EarlyAnswer::Status(status), _) => {
            api_errors::for_flavor(c.flavor, status, api_errors::reason(status))
        }
        Before::Early(EarlyAnswer::RateLimitStorm { with_headers }, s) => {
            too_many(c.flavor, with_headers.then_some(&s))
        }
        Before::Limited(s) => too_many(c.flavor, Some(&s)),
        Before::Handle(rate, after_commit) => {
            let mut resp = next.run(req).await.into_response();
            if let Some(s) = rate {
                set_rate_headers(resp.headers_mut(), &s);
            }
            if let Some(AfterCommit::Gateway { status, delay_ms }) = after_commit {
                tracing::info!(endpoint = %c.endpoint, status, delay_ms, "fault: a gateway answer after commit");
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                resp = gateway_answer(status);
            }
            if after_commit == Some(AfterCommit::Drop) {
                if let Some(kill) = kill {
                    {
                        let mut inner = app.inner.lock().await;
                        inner.counters.status("dropped");
                        inner.counters.connections_dropped += 1;
                    }
                    tracing::info!(endpoint = %c.endpoint, "fault: connection dropped after commit");
                    kill.0.notify_one();
                    std::future::pending::<()>().await;
                }
            }
            resp
        }
    };
    app.inner
        .lock()
        .await
        .counters
        .status(resp.status().as_str());
    resp
}
