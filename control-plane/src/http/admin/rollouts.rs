//! Operators' fleet rollouts, across tenants: create (a selector over tenants, plans,
//! labels, agent versions, statuses and appliances), list, read, change, steer, their
//! executions and a progress stream. Operators see and steer tenants' own rollouts too.
//! The rules are in [`crate::domain::rollouts`], shared with the tenant's routes.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::RolloutId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::shared::rollouts::{self as shared, Action, ExecutionQuery, ListQuery, ProgressFrame};
use super::super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::rollouts::{self, ExecutionPage, NewRollout, RolloutChanges, RolloutPage, RolloutView, Who};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update))
        .routes(routes!(steer))
        .routes(routes!(executions))
        .routes(routes!(events))
}

/// Start a rollout over any tenants' appliances.
#[utoipa::path(
    post,
    path = "/api/v1/admin/rollouts",
    operation_id = "admin_create_rollout",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = NewRollout,
    responses(
        (status = 201, description = "Created (`scheduled`; the advancer starts it at `start_at`)", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 422, description = "`invalid_body` (`details.param` names the field: `selector…`, `policy…`, \
                                      `payload.config`, `name`), `invalid_params` (the task's action or a \
                                      parameter), `invalid_config` (the overlay)", body = ErrorBody),
    )
)]
async fn create(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(new): ApiJson<NewRollout>,
) -> Result<Response, ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let v = rollouts::create_with(&s.domain, Who::Operator, new, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(v)).into_response())
}

/// Every rollout (operators' and tenants'), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/rollouts",
    operation_id = "admin_list_rollouts",
    tag = "admin",
    security(("operator_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of rollouts", body = RolloutPage),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<ApiJson<RolloutPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let limit = shared::limit(q.limit)?;
    Ok(ApiJson(rollouts::list(&s.domain.pool, Who::Operator, q.state, q.after, limit).await?))
}

/// One rollout with its progress (per state and per wave).
#[utoipa::path(
    get,
    path = "/api/v1/admin/rollouts/{id}",
    operation_id = "admin_get_rollout",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn get(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<RolloutId>, PathRejection>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(rollouts::get(&s.domain.pool, Who::Operator, id).await?))
}

/// Change a rollout's name or policy, or its payload before it started.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/rollouts/{id}",
    operation_id = "admin_update_rollout",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    request_body = RolloutChanges,
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`rollout_started` (the payload or the waves of a started rollout), \
                                      `rollout_state` (a finished rollout)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_params` or `invalid_config`, as on creation",
            body = ErrorBody),
    )
)]
async fn update(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<RolloutId>, PathRejection>,
    ApiJson(changes): ApiJson<RolloutChanges>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(rollouts::update(&s.domain.pool, &s.domain.tasks, Who::Operator, id, changes, audit).await?))
}

/// Pause, resume, approve the next wave of, or cancel a rollout.
#[utoipa::path(
    post,
    path = "/api/v1/admin/rollouts/{id}/{action}",
    operation_id = "admin_steer_rollout",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout"),
        ("action" = inline(Action), Path, description = "`pause`, `resume`, `approve` or `cancel`")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`rollout_state`: not possible in the rollout's state (e.g. resuming a \
                                      cancelled one)", body = ErrorBody),
    )
)]
async fn steer(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    path: Result<Path<(RolloutId, Action)>, PathRejection>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    op.require(Permission::Manage)?;
    let Path((id, action)) = path?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(rollouts::steer(&s.domain.pool, Who::Operator, id, action.into(), audit).await?))
}

/// A rollout's executions (one per targeted appliance), in the rollout's order.
#[utoipa::path(
    get,
    path = "/api/v1/admin/rollouts/{id}/executions",
    operation_id = "admin_rollout_executions",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout"), ExecutionQuery),
    responses(
        (status = 200, description = "One page of executions", body = ExecutionPage),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn executions(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<RolloutId>, PathRejection>,
    q: Result<ApiQuery<ExecutionQuery>, ApiError>,
) -> Result<ApiJson<ExecutionPage>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    let ApiQuery(q) = q?;
    let limit = shared::limit(q.limit)?;
    Ok(ApiJson(rollouts::executions(&s.domain.pool, Who::Operator, id, q.state, q.after, limit).await?))
}

/// Follow a rollout's progress as server-sent events.
#[utoipa::path(
    get,
    path = "/api/v1/admin/rollouts/{id}/events",
    operation_id = "admin_rollout_events",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    responses(
        (status = 200, description = "`text/event-stream`: `progress` (the rollout, whenever it changes) and \
                                      `end` (`{\"reason\"}`)", content_type = "text/event-stream", body = ProgressFrame),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn events(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<RolloutId>, PathRejection>,
) -> Result<Response, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    shared::stream(s, Who::Operator, id).await
}
