//! A tenant's fleet rollouts over its own appliances: create, list, read, change, steer
//! (pause, resume, approve, cancel), their executions and a progress stream. The rules are
//! in [`crate::domain::rollouts`], shared with the operators' routes.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::RolloutId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, ApiQuery, BadRequest, NotFound, TenantForbidden};
use super::shared::rollouts::{self as shared, Action, ExecutionQuery, ListQuery, ProgressFrame};
use super::{AppState, RequestId};
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

/// Start a rollout over the tenant's own appliances.
///
/// The selector is kept to the tenant's appliances (naming another tenant, a plan or an
/// appliance that is not the tenant's is `422`); the plan's `rollouts_active` bounds how
/// many may be active at once.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts",
    operation_id = "create_rollout",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    request_body = NewRollout,
    responses(
        (status = 201, description = "Created (`scheduled`; the advancer starts it at `start_at`)", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, description = "`tenant_suspended`, `wrong_credential` (as every customer endpoint), or \
                                      `operator_only`: an `agent_update` payload (only an operator updates agents)",
         body = ErrorBody),
        (status = 409, description = "`rollout_limit`: the plan's active rollouts are all in use", body = ErrorBody),
        (status = 422, description = "`invalid_body` (`details.param` names the field: `selector…`, `policy…`, \
                                      `payload.config`, `name`), `invalid_params` (the task's action or a \
                                      parameter), `invalid_config` (the overlay)", body = ErrorBody),
    )
)]
async fn create(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ApiJson(new): ApiJson<NewRollout>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let v = rollouts::create_with(&s.domain, Who::Tenant(tenant), new, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(v)).into_response())
}

/// The tenant's rollouts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    operation_id = "list_rollouts",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of rollouts", body = RolloutPage),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    q: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<ApiJson<RolloutPage>, ApiError> {
    let ApiQuery(q) = q?;
    let limit = shared::limit(q.limit)?;
    Ok(ApiJson(rollouts::list(&s.domain.pool, Who::Tenant(tenant), q.state, q.after, limit).await?))
}

/// One rollout with its progress (per state and per wave).
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}",
    operation_id = "get_rollout",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<RolloutId>, PathRejection>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(rollouts::get(&s.domain.pool, Who::Tenant(tenant), id).await?))
}

/// Change a rollout's name or policy, or its payload before it started.
#[utoipa::path(
    patch,
    path = "/api/v1/rollouts/{id}",
    operation_id = "update_rollout",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    request_body = RolloutChanges,
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`rollout_started` (the payload or the waves of a started rollout), \
                                      `rollout_state` (a finished rollout)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_params` or `invalid_config`, as on creation",
            body = ErrorBody),
    )
)]
async fn update(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<RolloutId>, PathRejection>,
    ApiJson(changes): ApiJson<RolloutChanges>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    let Path(id) = id?;
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(rollouts::update(&s.domain.pool, &s.domain.tasks, Who::Tenant(tenant), id, changes, audit).await?))
}

/// Pause, resume, approve the next wave of, or cancel a rollout.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts/{id}/{action}",
    operation_id = "steer_rollout",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout"),
        ("action" = inline(Action), Path, description = "`pause`, `resume`, `approve` or `cancel`")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`rollout_state`: not possible in the rollout's state (e.g. resuming a \
                                      cancelled one)", body = ErrorBody),
    )
)]
async fn steer(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    path: Result<Path<(RolloutId, Action)>, PathRejection>,
) -> Result<ApiJson<RolloutView>, ApiError> {
    let Path((id, action)) = path?;
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(rollouts::steer(&s.domain.pool, Who::Tenant(tenant), id, action.into(), audit).await?))
}

/// A rollout's executions (one per targeted appliance), in the rollout's order.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}/executions",
    operation_id = "rollout_executions",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout"), ExecutionQuery),
    responses(
        (status = 200, description = "One page of executions", body = ExecutionPage),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn executions(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<RolloutId>, PathRejection>,
    q: Result<ApiQuery<ExecutionQuery>, ApiError>,
) -> Result<ApiJson<ExecutionPage>, ApiError> {
    let Path(id) = id?;
    let ApiQuery(q) = q?;
    let limit = shared::limit(q.limit)?;
    Ok(ApiJson(rollouts::executions(&s.domain.pool, Who::Tenant(tenant), id, q.state, q.after, limit).await?))
}

/// Follow a rollout's progress as server-sent events.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}/events",
    operation_id = "rollout_events",
    tag = "rollouts",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = RolloutId, Path, description = "The rollout")),
    responses(
        (status = 200, description = "`text/event-stream`: `progress` (the rollout, whenever it changes) and \
                                      `end` (`{\"reason\"}`)", content_type = "text/event-stream", body = ProgressFrame),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 429, description = "`too_many_streams`: the tenant has 20 streams open already; \
                                      `rate_limited`: the API limit (`X-RateLimit-Kind: api`)", body = ErrorBody),
    )
)]
async fn events(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<RolloutId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    shared::stream(s, Who::Tenant(tenant), id).await
}
