//! Liveness, readiness and the metrics endpoint.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Each is `ok` or `unavailable`.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ok` when both dependencies are.
    status: &'static str,
    database: &'static str,
    broker: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// PostgreSQL answers and the MQTT connection is up.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the body says which dependency is `unavailable`", body = Readiness),
    )
)]
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&s.domain.pool)).await,
        Ok(Ok(_))
    );
    let broker_ok = s.mqtt_connected.load(Ordering::Relaxed);
    let up = |ok| if ok { "ok" } else { "unavailable" };
    let ready = db_ok && broker_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: up(ready), database: up(db_ok), broker: up(broker_ok) }))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain; version=0.0.4", body = String))
)]
async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
