//! Operator tokens, plans and the audit trail.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::super::account::check_label;
use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, BadRequest, ForbiddenForRole, NotFound};
use super::super::{AppState, RequestId};
use super::{limit, Timestamp};
use crate::db;
use crate::db::audit::{self, snapshot, AuditRow, Filter, Recorder};
use crate::db::operators::{self, OperatorToken, Role};
use crate::db::plans::{self, Plan, Quotas};

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
    role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
struct IssuedOperator {
    #[serde(flatten)]
    info: OperatorToken,
    /// The token itself: shown this once, stored only as a hash.
    token: String,
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
    check_label("name", &b.name, 100)?;
    let actor = op.actor();
    let mut tx = s.domain.pool.begin().await?;
    let (info, token) = operators::create(&mut tx, b.name.trim(), b.role, &actor.label()).await?;
    Recorder::new(&actor, Some(&rid.0))
        .record(&mut tx, None, "operator.issue", ("operator", info.id.to_string()), None, snapshot(&info))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(IssuedOperator { info, token: token.expose().clone() })))
}

/// Revoke an operator token; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/operators/{id}",
    operation_id = "admin_revoke_operator",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The operator token")),
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
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<OperatorToken>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let mut tx = s.domain.pool.begin().await?;
    let revoked = operators::revoke(&mut tx, id).await?.ok_or(ApiError::NotFound("operator"))?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, None, "operator.revoke", ("operator", id.to_string()), None, snapshot(&revoked))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(revoked))
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPlan {
    /// 1 to 100 characters, unique.
    name: String,
    #[serde(flatten)]
    quotas: Quotas,
}

fn check_quotas(q: &Quotas) -> Result<(), ApiError> {
    match q.invalid_field() {
        Some(field) => Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: format!("{field} must be at least 1"),
            details: serde_json::json!({ "param": field }),
        }),
        None => Ok(()),
    }
}

fn plan_name_taken(e: sqlx::Error) -> ApiError {
    if db::is_constraint(&e, "plans_name_key") {
        ApiError::Conflict { code: "plan_name_taken", message: "a plan with this name exists already".into() }
    } else {
        ApiError::Database(e)
    }
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
    check_label("name", &b.name, 100)?;
    check_quotas(&b.quotas)?;
    let mut tx = s.domain.pool.begin().await?;
    let plan = plans::create(&mut tx, b.name.trim(), &b.quotas).await.map_err(plan_name_taken)?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, None, "plan.create", ("plan", plan.id.to_string()), None, snapshot(&plan))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(plan)))
}

/// Any subset of a plan's fields; the rest stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlanChanges {
    name: Option<String>,
    api_per_minute: Option<i32>,
    api_burst: Option<i32>,
    assistant_per_hour: Option<i32>,
    assistant_burst: Option<i32>,
    mqtt_per_minute: Option<i32>,
    mqtt_burst: Option<i32>,
}

/// Change a plan; tenants on it get the new quotas without a restart.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/plans/{id}",
    operation_id = "admin_update_plan",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = Uuid, Path, description = "The plan")),
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
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(b): ApiJson<PlanChanges>,
) -> Result<ApiJson<Plan>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let mut tx = s.domain.pool.begin().await?;
    let before = plans::get(&mut tx, id).await?.ok_or(ApiError::NotFound("plan"))?;
    let q = before.quotas;
    let quotas = Quotas {
        api_per_minute: b.api_per_minute.unwrap_or(q.api_per_minute),
        api_burst: b.api_burst.unwrap_or(q.api_burst),
        assistant_per_hour: b.assistant_per_hour.unwrap_or(q.assistant_per_hour),
        assistant_burst: b.assistant_burst.unwrap_or(q.assistant_burst),
        mqtt_per_minute: b.mqtt_per_minute.unwrap_or(q.mqtt_per_minute),
        mqtt_burst: b.mqtt_burst.unwrap_or(q.mqtt_burst),
    };
    check_quotas(&quotas)?;
    let name = b.name.unwrap_or_else(|| before.name.clone());
    check_label("name", &name, 100)?;
    let after = plans::update(&mut tx, id, name.trim(), &quotas)
        .await
        .map_err(plan_name_taken)?
        .ok_or(ApiError::NotFound("plan"))?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, None, "plan.update", ("plan", id.to_string()), snapshot(&before), snapshot(&after))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(after))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries about this tenant.
    tenant: Option<TenantId>,
    /// `operator`, `tenant_key`, `tenant_user`, `assistant`, `cli`, `system`.
    actor_kind: Option<String>,
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
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    op.require(Permission::Read)?;
    let Query(q) = q?;
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
    let next_before = super::page(&mut entries, limit, |e| e.id);
    Ok(ApiJson(AuditPage { entries, next_before }))
}
