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
use crate::assistant::{AssistantStatus, Mode};

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
    /// `ok` when both dependencies are (the assistant's model is not one: without it the
    /// rules answer).
    status: &'static str,
    database: &'static str,
    broker: &'static str,
    /// The support assistant's LLM: `mode` (`rules_only`, `llm`, `reduced`), `model`,
    /// `model_loaded` (the model is on the Ollama server), `reason` when reduced.
    assistant: AssistantStatus,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// PostgreSQL answers and the MQTT connection is up. The body also says whether the
/// assistant's model is loaded; that never makes the control plane unready.
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
    let assistant = s.domain.assistant.status();
    (status, Json(Readiness { status: up(ready), database: up(db_ok), broker: up(broker_ok), assistant }))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain; version=0.0.4", body = String))
)]
async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let assistant = s.domain.assistant.status();
    s.metrics.assistant_reduced_mode.set(i64::from(assistant.mode == Mode::Reduced));
    s.metrics.assistant_model_loaded.set(i64::from(assistant.model_loaded == Some(true)));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
