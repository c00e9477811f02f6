//! Liveness, readiness and Prometheus metrics: platform routes outside `/api/v1`, no token.
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shared::Store;

/// The process-wide metrics recorder, installed on first use (tests start many servers in
/// one process; a recorder can be installed only once).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, and then ours just renders empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(store)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(store): State<Store>) -> Response {
    match store.health.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "database": store.health.backend()}))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            let body = shared::ErrorBody::new(
                shared::ErrorCode::Unavailable,
                "the database is not reachable",
            );
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics_text() -> Response {
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
