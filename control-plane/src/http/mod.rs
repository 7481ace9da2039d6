//! The HTTP API (axum). `app(state)` is the whole router so tests can drive it in-process
//! or over a real socket; each resource has its own `router()`, an `OpenApiRouter` whose
//! routes are registered with `routes!(handler)` so that every route served is described in
//! the OpenAPI document (`GET /api/openapi.json`, browsable at `GET /docs`; see [`openapi`]).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /healthz` | anyone | the process is up |
//! | `GET /readyz` | anyone | PostgreSQL answers and the MQTT connection is up |
//! | `GET /metrics` | scraper | Prometheus text format |
//! | `POST /api/v1/enroll` | an appliance with a one-time token | certificate for its CSR |
//! | `GET /api/v1/appliances` | tenant API key | the tenant's appliances |
//! | `GET /api/v1/appliances/{id}` | tenant API key | one appliance, with its presence history |
//! | `POST/GET /api/v1/appliances/{id}/tasks` | tenant API key | create a catalog task / list tasks |
//! | `GET /api/v1/tasks/{id}`, `POST …/cancel` | tenant API key | a task with its event log / cancel it |
//! | `GET/PUT /api/v1/appliances/{id}/config` | tenant API key | desired configuration, applied version, drift |
//! | `GET/PUT /api/v1/config/defaults` | tenant API key | the tenant's configuration defaults |
//! | `GET /api/v1/inventory` | tenant API key | the appliances as an Ansible dynamic inventory |
//! | `GET /api/openapi.json`, `GET /docs` | anyone | this API's OpenAPI document, and a page showing it |

mod appliances;
pub mod auth;
mod desired;
mod enroll;
pub mod error;
mod health;
mod inventory;
pub mod openapi;
mod tasks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hearth_protocol::api::BrokerAddress;
use sqlx::PgPool;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;

use crate::config::TasksConfig;
use crate::desired::secrets::SecretKey;
use crate::metrics::Metrics;
use crate::pki::CertificateAuthority;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    pub ca: Arc<CertificateAuthority>,
    /// The broker address handed to enrolling appliances.
    pub broker: BrokerAddress,
    pub appliance_cert_days: i64,
    /// Set by the MQTT loop while connected (for `/readyz`).
    pub mqtt_connected: Arc<AtomicBool>,
    /// Wakes the dispatcher (a task was queued, a configuration changed).
    pub dispatcher: Arc<Notify>,
    /// Seals configuration secrets; `None` when `secrets.key` is not configured.
    pub secrets: Option<SecretKey>,
    pub tasks: TasksConfig,
}

/// Every route with its OpenAPI description. A new resource's router is merged here.
fn api_router() -> OpenApiRouter<AppState> {
    openapi::base()
        .merge(health::router())
        .merge(openapi::router())
        .merge(enroll::router())
        .merge(appliances::router())
        .merge(tasks::router())
        .merge(desired::router())
        .merge(inventory::router())
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let (router, _document) = api_router().split_for_parts();
    router
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .with_state(state)
}

/// Counts every request by method, route template and status.
async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(req).await;
    metrics.http_duration.with_label_values(&[method, &route]).observe(start.elapsed().as_secs_f64());
    metrics.http_requests.with_label_values(&[method, &route, response.status().as_str()]).inc();
    response
}
