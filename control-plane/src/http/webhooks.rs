//! A tenant's webhook endpoints for its own events: register (the secret shown once),
//! list, read, change, delete, rotate the secret, the delivery log and a replay. The rules
//! are in [`crate::domain::webhooks`], shared with the operators' routes.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, ApiQuery, BadRequest, NotFound, TenantForbidden};
use super::shared::events::{limit, DeliveryQuery};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::webhooks::{
    self, CreatedEndpoint, DeliveryPage, EndpointChanges, EndpointView, NewEndpointRequest, Owner, RotateRequest,
    RotatedSecret,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(rotate))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

/// Register a webhook endpoint for the tenant's events.
///
/// The answer holds the endpoint's `whsec_` secret, shown this once: verify each delivery's
/// `webhook-signature` with it (Standard Webhooks).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    request_body = NewEndpointRequest,
    responses(
        (status = 201, description = "Registered; the secret is in this answer only", body = CreatedEndpoint),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 422, description = "`invalid_body` (`details.param`: `url` — not https, a private address; \
                                      `event_types` — an unknown type; `description`), `webhook_limit` (the \
                                      plan's `webhook_endpoints` are all in use), `secrets_unavailable` (no \
                                      `secrets.key` on the control plane)", body = ErrorBody),
    )
)]
async fn create(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ApiJson(new): ApiJson<NewEndpointRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    let created = webhooks::create(s.domain.webhooks(), Owner::Tenant(tenant), new, audit).await?;
    Ok((StatusCode::CREATED, ApiJson(created)).into_response())
}

/// The tenant's webhook endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The endpoints (never their secrets)", body = [EndpointView]),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<Vec<EndpointView>>, ApiError> {
    Ok(ApiJson(webhooks::list(&s.domain.pool, Owner::Tenant(tenant), false).await?))
}

/// One webhook endpoint, with why it was disabled if it was.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(webhooks::get(&s.domain.pool, Owner::Tenant(tenant), id).await?))
}

/// Change an endpoint: URL, description, event types; `enabled: true` re-enables a
/// disabled one (its queue resumes).
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    operation_id = "update_webhook",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    request_body = EndpointChanges,
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body`, as on registration", body = ErrorBody),
    )
)]
async fn update(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(changes): ApiJson<EndpointChanges>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    let Path(id) = id?;
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(webhooks::update(s.domain.webhooks(), Owner::Tenant(tenant), id, changes, audit).await?))
}

/// Delete an endpoint and its delivery log.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn delete(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let actor = caller.actor();
    webhooks::delete(&s.domain.pool, Owner::Tenant(tenant), id, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret for the endpoint, shown once; the previous one keeps signing for the
/// overlap (both signatures are sent), so the receiver can switch when it likes.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/rotate-secret",
    operation_id = "rotate_webhook_secret",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    request_body = RotateRequest,
    responses(
        (status = 200, description = "The new secret, shown this once", body = RotatedSecret),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body` (`overlap_hours`), `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn rotate(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<ApiJson<RotatedSecret>, ApiError> {
    let Path(id) = id?;
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(webhooks::rotate(s.domain.webhooks(), Owner::Tenant(tenant), id, req, audit).await?))
}

/// The endpoint's delivery log, newest first: state, attempts, the last status code,
/// latency and error, the next attempt.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint"), DeliveryQuery),
    responses(
        (status = 200, description = "One page of the log", body = DeliveryPage),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body`: an unknown `state`", body = ErrorBody),
    )
)]
async fn deliveries(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<Uuid>, PathRejection>,
    q: Result<ApiQuery<DeliveryQuery>, ApiError>,
) -> Result<ApiJson<DeliveryPage>, ApiError> {
    let Path(id) = id?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    let page =
        webhooks::deliveries(&s.domain.pool, Owner::Tenant(tenant), id, q.state.as_deref(), q.before, limit).await?;
    Ok(ApiJson(page))
}

/// Send one delivery again, at once (a delivered one too: the receiver de-duplicates by
/// `webhook-id`).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/deliveries/{delivery}/replay",
    operation_id = "replay_webhook_delivery",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint"), ("delivery" = i64, Path, description = "The delivery")),
    responses(
        (status = 202, description = "Queued"),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn replay(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<(Uuid, i64)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((id, delivery)) = path?;
    let actor = caller.actor();
    webhooks::replay(&s.domain.pool, Owner::Tenant(tenant), id, delivery, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(StatusCode::ACCEPTED)
}
