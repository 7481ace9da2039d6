//! Operator tokens, plans and the audit trail. The rules are in
//! [`crate::domain::operators`], [`crate::domain::plans`] and [`crate::domain::audit`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{OperatorId, PlanId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::{AppState, RequestId};
use super::{limit, Timestamp};
use crate::db::audit::{AuditRow, Filter, Recorder};
use crate::db::operators::OperatorToken;
use crate::db::plans::Plan;
use crate::domain::audit;
use crate::domain::next_page;
use crate::domain::operators::{self, IssuedOperator};
use crate::domain::plans::{self, NewPlan, PlanChanges};
use crate::model::{ActorKind, OperatorRole};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operators, create_operator))
        .routes(routes!(revoke_operator))
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(update_plan))
        .routes(routes!(list_audit))
}

#[derive(Debug, Serialize, ToSchema)]
struct OperatorList {
    /// Revoked ones too, oldest first; never the tokens themselves.
    operators: Vec<OperatorToken>,
}

/// The operator tokens.
#[utoipa::path(
    get,
    path = "/api/v1/admin/operators",
    operation_id = "admin_list_operators",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The operator tokens", body = OperatorList),
    )
)]
async fn list_operators(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<OperatorList>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(OperatorList { operators: operators::list(&s.domain.pool).await? }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOperator {
    /// A label, 1 to 100 characters.
    name: String,
    role: OperatorRole,
}

/// Issue an operator token; the token is in the answer, and only there.
#[utoipa::path(
    post,
    path = "/api/v1/admin/operators",
    operation_id = "admin_create_operator",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = NewOperator,
    responses(
        (status = 201, description = "The new operator token", body = IssuedOperator),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 422, description = "`invalid_body`: the name is empty or longer than 100 characters; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn create_operator(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(b): ApiJson<NewOperator>,
) -> Result<(StatusCode, ApiJson<IssuedOperator>), ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let issued = operators::create(&s.domain.pool, &b.name, b.role, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(issued)))
}

/// Revoke an operator token; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/operators/{id}",
    operation_id = "admin_revoke_operator",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = OperatorId, Path, description = "The operator token")),
    responses(
        (status = 200, description = "The revoked operator token", body = OperatorToken),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn revoke_operator(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<OperatorId>, PathRejection>,
) -> Result<ApiJson<OperatorToken>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    Ok(ApiJson(operators::revoke(&s.domain.pool, id, Recorder::new(&actor, Some(&rid.0))).await?))
}

#[derive(Debug, Serialize, ToSchema)]
struct PlanList {
    /// By name.
    plans: Vec<Plan>,
}

/// The plans and their quotas.
#[utoipa::path(
    get,
    path = "/api/v1/admin/plans",
    operation_id = "admin_list_plans",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The plans", body = PlanList),
    )
)]
async fn list_plans(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<PlanList>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(PlanList { plans: plans::list(&s.domain.pool).await? }))
}

/// Create a plan: a named set of quotas, each at least 1.
#[utoipa::path(
    post,
    path = "/api/v1/admin/plans",
    operation_id = "admin_create_plan",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = NewPlan,
    responses(
        (status = 201, description = "The new plan", body = Plan),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 409, description = "`plan_name_taken`: a plan with this name exists already", body = ErrorBody),
        (status = 422, description = "`invalid_body`: the name is empty or too long, or a quota is below 1; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn create_plan(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(b): ApiJson<NewPlan>,
) -> Result<(StatusCode, ApiJson<Plan>), ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    Ok((StatusCode::CREATED, ApiJson(plans::create(&s.domain.pool, b, Recorder::new(&actor, Some(&rid.0))).await?)))
}

/// Change a plan; tenants on it get the new quotas without a restart.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/plans/{id}",
    operation_id = "admin_update_plan",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = PlanId, Path, description = "The plan")),
    request_body = PlanChanges,
    responses(
        (status = 200, description = "The plan as changed", body = Plan),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`plan_name_taken`: a plan with this name exists already", body = ErrorBody),
        (status = 422, description = "`invalid_body`: the name is empty or too long, or a quota is below 1; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn update_plan(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<PlanId>, PathRejection>,
    ApiJson(b): ApiJson<PlanChanges>,
) -> Result<ApiJson<Plan>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    Ok(ApiJson(plans::update(&s.domain.pool, id, b, Recorder::new(&actor, Some(&rid.0))).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries about this tenant.
    tenant: Option<TenantId>,
    /// Only changes by this kind of actor.
    actor_kind: Option<ActorKind>,
    /// The actor's id (an operator token's, a user's, an API key's).
    actor_id: Option<String>,
    /// An action (`tenant.create`) or a prefix ending in `.` (`tenant.`).
    action: Option<String>,
    /// The changed thing's id.
    target_id: Option<String>,
    /// The `x-request-id` of the request that made the change.
    request_id: Option<String>,
    /// At or after this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    since: Option<Timestamp>,
    /// Before this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    until: Option<Timestamp>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_before` of the previous page.
    before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AuditPage {
    /// Newest first.
    entries: Vec<AuditRow>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

/// The audit trail, newest first, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    operation_id = "admin_list_audit",
    tag = "admin",
    security(("operator_token" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of audit entries", body = AuditPage),
        (status = 400, response = BadRequest),
    )
)]
async fn list_audit(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<AuditQuery>, ApiError>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    let filter = Filter {
        tenant: q.tenant,
        actor_kind: q.actor_kind,
        actor_id: q.actor_id,
        action: q.action,
        target_id: q.target_id,
        request_id: q.request_id,
        since: q.since.map(|t| t.0),
        until: q.until.map(|t| t.0),
        before_id: q.before,
    };
    let mut entries = audit::list(&s.domain.pool, &filter, limit + 1).await?;
    let next_before = next_page(&mut entries, limit, |e| e.id);
    Ok(ApiJson(AuditPage { entries, next_before }))
}
