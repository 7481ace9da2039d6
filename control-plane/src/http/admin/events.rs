//! Operators' events and webhooks: every tenant's events and the fleet's own (cursor,
//! filter by tenant), fleet-wide webhook endpoints (every tenant's events), and the same
//! steering of any tenant's endpoint (read, change, delete, rotate, delivery log, replay).
//! The rules are in [`crate::domain::events`] and [`crate::domain::webhooks`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::shared::events::{limit, AdminEventQuery, DeliveryQuery};
use super::super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::events::{self, EventPage, Reader};
use crate::domain::webhooks::{
    self, CreatedEndpoint, DeliveryPage, EndpointChanges, EndpointView, NewEndpointRequest, Owner, RotateRequest,
    RotatedSecret,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(rotate))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

/// Every event, fleet-wide (or one tenant's), oldest first, after a cursor.
#[utoipa::path(
    get,
    path = "/api/v1/admin/events",
    operation_id = "admin_list_events",
    tag = "admin",
    security(("operator_token" = [])),
    params(AdminEventQuery),
    responses(
        (status = 200, description = "One page of events", body = EventPage),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 422, description = "`invalid_body`: an unknown `type`, a negative `after`", body = ErrorBody),
    )
)]
async fn list_events(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<AdminEventQuery>, ApiError>,
) -> Result<ApiJson<EventPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    Ok(ApiJson(events::list(&s.domain.pool, Reader::Operator, q.filter(), limit).await?))
}

/// Register a fleet-wide webhook endpoint (every tenant's events that match, and the
/// fleet's own). The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/admin/webhooks",
    operation_id = "admin_create_webhook",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = NewEndpointRequest,
    responses(
        (status = 201, description = "Registered; the secret is in this answer only", body = CreatedEndpoint),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 422, description = "`invalid_body` (`details.param`: `url`, `event_types`, `description`), \
                                      `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn create(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(new): ApiJson<NewEndpointRequest>,
) -> Result<Response, ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let created =
        webhooks::create(s.domain.webhooks(), Owner::Operator, new, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(created)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EndpointQuery {
    /// Only the fleet-wide endpoints (not tenants').
    fleet_only: Option<bool>,
}

/// Every webhook endpoint: fleet-wide ones and tenants'.
#[utoipa::path(
    get,
    path = "/api/v1/admin/webhooks",
    operation_id = "admin_list_webhooks",
    tag = "admin",
    security(("operator_token" = [])),
    params(EndpointQuery),
    responses(
        (status = 200, description = "The endpoints (never their secrets)", body = [EndpointView]),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<EndpointQuery>, ApiError>,
) -> Result<ApiJson<Vec<EndpointView>>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    Ok(ApiJson(webhooks::list(&s.domain.pool, Owner::Operator, q.fleet_only.unwrap_or(false)).await?))
}

/// One webhook endpoint (fleet-wide or a tenant's).
#[utoipa::path(
    get,
    path = "/api/v1/admin/webhooks/{id}",
    operation_id = "admin_get_webhook",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn get(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(webhooks::get(&s.domain.pool, Owner::Operator, id).await?))
}

/// Change an endpoint (`enabled: true` re-enables a disabled one).
#[utoipa::path(
    patch,
    path = "/api/v1/admin/webhooks/{id}",
    operation_id = "admin_update_webhook",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    request_body = EndpointChanges,
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body`, as on registration", body = ErrorBody),
    )
)]
async fn update(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(changes): ApiJson<EndpointChanges>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(webhooks::update(s.domain.webhooks(), Owner::Operator, id, changes, audit).await?))
}

/// Delete an endpoint and its delivery log.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/webhooks/{id}",
    operation_id = "admin_delete_webhook",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn delete(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    webhooks::delete(&s.domain.pool, Owner::Operator, id, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret, shown once; the previous one keeps signing for the overlap.
#[utoipa::path(
    post,
    path = "/api/v1/admin/webhooks/{id}/rotate-secret",
    operation_id = "admin_rotate_webhook_secret",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint")),
    request_body = RotateRequest,
    responses(
        (status = 200, description = "The new secret, shown this once", body = RotatedSecret),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body` (`overlap_hours`), `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn rotate(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<ApiJson<RotatedSecret>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(webhooks::rotate(s.domain.webhooks(), Owner::Operator, id, req, audit).await?))
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/webhooks/{id}/deliveries",
    operation_id = "admin_list_webhook_deliveries",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint"), DeliveryQuery),
    responses(
        (status = 200, description = "One page of the log", body = DeliveryPage),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body`: an unknown `state`", body = ErrorBody),
    )
)]
async fn deliveries(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<Uuid>, PathRejection>,
    q: Result<ApiQuery<DeliveryQuery>, ApiError>,
) -> Result<ApiJson<DeliveryPage>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    Ok(ApiJson(webhooks::deliveries(&s.domain.pool, Owner::Operator, id, q.state.as_deref(), q.before, limit).await?))
}

/// Send one delivery again, at once.
#[utoipa::path(
    post,
    path = "/api/v1/admin/webhooks/{id}/deliveries/{delivery}/replay",
    operation_id = "admin_replay_webhook_delivery",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The endpoint"), ("delivery" = i64, Path, description = "The delivery")),
    responses(
        (status = 202, description = "Queued"),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn replay(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    path: Result<Path<(Uuid, i64)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    op.require(Permission::Manage)?;
    let Path((id, delivery)) = path?;
    let actor = op.actor();
    webhooks::replay(&s.domain.pool, Owner::Operator, id, delivery, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(StatusCode::ACCEPTED)
}
