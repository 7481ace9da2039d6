//! Liveness, readiness and the metrics endpoint.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    database: &'static str,
    broker: &'static str,
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&s.pool)).await,
        Ok(Ok(_))
    );
    let broker_ok = s.mqtt_connected.load(Ordering::Relaxed);
    let up = |ok| if ok { "ok" } else { "unavailable" };
    let ready = db_ok && broker_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: up(ready), database: up(db_ok), broker: up(broker_ok) }))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
