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
//! | `POST /api/v1/auth/login`, `…/logout`, `…/password` | tenant user | sign in (short-lived token), out, change password |
//! | `GET /api/v1/account`, `GET/POST/DELETE /api/v1/users…`, `…/keys…` | tenant (owner for changes) | the account, its plan and quotas, members, API keys |
//! | `POST/GET /api/v1/support/conversations…`, `…/messages`, `…/proposals/{id}/confirm`, `…/events` | tenant | the support chat (see [`support`]) |
//! | `GET/PUT /api/v1/support/settings` | tenant (owner to change) | whether low-risk proposals wait for confirmation |
//! | `GET /support` | anyone (the page signs in) | the customers' chat page |
//! | `GET /home` | anyone (the page signs in) | the customers' home page: appliances, tasks, configuration, account (see [`home`]) |
//! | `GET /console` | anyone (the page signs in an operator) | the operator console (see [`console`]) |
//! | `POST /api/v1/console/login`, `GET …/session`, `POST …/logout`, `…/password`, `…/totp…` | operator account | the web console's sign-in: a session cookie, its CSRF token, password and TOTP (see [`console_session`]) |
//! | `/api/v1/admin/…` | operator token | tenants, plans, keys, operators, fleet, revocation, audit (see [`admin`]) |
//! | `GET /agent/v1/artifacts/{sha256}` | an appliance's client certificate (HTTPS listener only) | an agent build's bytes, in ranges (see [`agent`]) |
//! | `GET /agent/v1/self` | an appliance's client certificate (HTTPS listener only) | what is stored about the calling appliance |
//!
//! Every response carries `x-request-id` (the caller's, if it sent a sane one); the audit
//! trail records it with every change.
//! | `GET /api/openapi.json`, `GET /docs` | anyone | this API's OpenAPI document, and a page showing it |

mod account;
pub mod admin;
mod agent;
mod appliances;
pub mod auth;
pub mod client_cert;
mod console;
mod console_session;
mod desired;
mod enroll;
pub mod error;
mod events;
mod health;
mod home;
mod inventory;
pub mod openapi;
mod ratelimit;
mod rollouts;
mod shared;
pub mod support;
mod tasks;
mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::domain::Services;
use crate::limits::{CredentialLimits, RateLimits};
use crate::metrics::Metrics;

/// What handlers share: the domain's services, and what only the HTTP side needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Everything the domain operations need (pool, dispatcher, configuration, PKI, …).
    pub domain: Services,
    pub metrics: Arc<Metrics>,
    /// Set by the MQTT loop while connected (for `/readyz`).
    pub mqtt_connected: Arc<AtomicBool>,
    /// Per-tenant rate limits.
    pub rate_limits: Arc<RateLimits>,
    /// Bad-credential limits (per source, credential and address), before any lookup.
    pub credentials: Arc<CredentialLimits>,
    /// `auth.trusted_proxies`: peers whose `X-Forwarded-For` names the source.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Cancelled at shutdown (ends long-lived responses such as event streams).
    pub shutdown: CancellationToken,
    /// Support chat event streams open per tenant.
    pub streams: Arc<support::StreamSlots>,
    /// A request still running after this is stopped with `503 timeout`.
    pub request_timeout: Duration,
}

/// Every route with its OpenAPI description. A new resource's router is merged here.
fn api_router() -> OpenApiRouter<AppState> {
    openapi::base()
        .merge(health::router())
        .merge(openapi::router())
        .merge(enroll::router())
        .merge(appliances::router())
        .merge(tasks::router())
        .merge(rollouts::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(desired::router())
        .merge(inventory::router())
        .merge(account::router())
        .merge(console_session::router())
        .merge(support::router())
        .merge(admin::router())
        .merge(console::router())
        .merge(home::router())
        // Outside `/api/v1`: authenticated by the appliance's client certificate alone.
        .merge(agent::router())
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let (router, _document) = api_router().split_for_parts();
    router
        .fallback(error::not_found)
        // What `ApiJson` reads at most; over it, `413 payload_too_large`.
        .layer(DefaultBodyLimit::max(error::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), ratelimit::enforce))
        .layer(middleware::from_fn_with_state(state.request_timeout, timeout))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(state)
}

/// An error answer to a request that carried a body says `Connection: close`. A refusal
/// often comes before the body was read (a wrong credential, a rate limit, a body too
/// large), and the server cannot reuse a connection with unread body bytes on it: without
/// the header a client would send its next request on a connection about to close, and a
/// non-idempotent one (POST, PATCH) fails instead of being retried.
async fn close_after_refused_body(req: Request, next: Next) -> Response {
    // HTTP/2 has no connection header (a stream is reset instead).
    let http1 = req.version() <= Version::HTTP_11;
    let has_body = req.headers().get(header::TRANSFER_ENCODING).is_some()
        || req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let mut response = next.run(req).await;
    if http1 && has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request's id: the caller's `x-request-id` if it is short and plain, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestId>().cloned().unwrap_or_else(|| RequestId(uuid::Uuid::now_v7().to_string())))
    }
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Stops a request that runs longer than `http.request_timeout_ms`: its future is dropped
/// (an open transaction rolls back) and the caller gets `503 timeout`. Work a handler
/// handed to a task of its own (the support assistant's answer) still completes.
async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>`: cloning it costs no allocation on every request.
    let route = req.extensions().get::<MatchedPath>().cloned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let route = route.as_ref().map_or("unmatched", |p| p.as_str());
            tracing::warn!(%route, limit_ms = limit.as_millis() as u64, "request timed out");
            error::ApiError::Timeout(limit).into_response()
        }
    }
}

/// Counts every request by method, route template and status.
async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
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
    metrics.http_duration.with_label_values(&[method, route]).observe(start.elapsed().as_secs_f64());
    metrics.http_requests.with_label_values(&[method, route, response.status().as_str()]).inc();
    response
}
