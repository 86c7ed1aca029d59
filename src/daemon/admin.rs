//! The admin server: `/healthz`, `/readyz`, `/metrics` (OpenMetrics text) and `/v1/status` (the
//! JSON of `status --json`), on a TCP address or a unix socket. Off unless `[admin]` is set.
//!
//! Invariant: read-only. Nothing here writes to Vault or changes what the daemon does; the
//! endpoints carry names, versions and times, never a secret.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use super::metrics::Metrics;
use super::Health;
use crate::app::{exit, App, Failure};
use crate::config::AdminConfig;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read: the running configuration (swapped on reload), the metrics and the
/// loop's health.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) app: watch::Receiver<Arc<App>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .with_state(shared)
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let recovered = shared.health.recovered.load(Ordering::Relaxed);
    let reachable = shared.health.vault_reachable.load(Ordering::Relaxed);
    match (recovered, reachable) {
        (true, true) => (StatusCode::OK, "ready\n").into_response(),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: start-up recovery is not done\n",
        )
            .into_response(),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Vault was unreachable in the last pass\n",
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    let app = shared.app.borrow().clone();
    let rows = crate::standing::status_rows(&app, None).await;
    let body = serde_json::to_string_pretty(&rows).expect("rows serialise");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Bind the configured address (a failure stops the start-up) and serve in the background.
pub(crate) async fn start(
    listen: &AdminConfig,
    shared: Shared,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let app = router(shared);
    match listen {
        AdminConfig::Listen(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::new(
                    exit::CONFIG,
                    format!("admin.listen: cannot listen on {addr}: {e}"),
                )
            })?;
            tracing::info!(address = %addr, "admin server listening");
            Ok(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin server stopped");
                }
            }))
        }
        AdminConfig::Socket(path) => {
            // A socket left by a previous run would make the bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
                Failure::new(
                    exit::CONFIG,
                    format!("admin.socket: cannot listen on {}: {e}", path.display()),
                )
            })?;
            tracing::info!(socket = %path.display(), "admin server listening");
            Ok(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin server stopped");
                }
            }))
        }
    }
}
