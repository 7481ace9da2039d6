//! The fleet across tenants: appliances with filters, counts per tenant, one appliance
//! with its history and tasks, revocation, and tasks on a customer's behalf. The rules are
//! in [`crate::domain::appliances`] and [`crate::domain::tasks`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApplianceId, PlanId, TenantId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::appliances::LabelsBody;
use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::shared::created;
use super::super::{AppState, RequestId};
use super::Timestamp;
use crate::db::appliances::{FleetAppliance, FleetFilter};
use crate::db::audit::Recorder;
use crate::domain::appliances::{self, FleetApplianceDetail, FleetPage, FleetSummary, RegisteredAppliance};
use crate::domain::labels;
use crate::domain::tasks::{self as task_ops, NewTask};
use crate::model::FleetStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail))
        .routes(routes!(revoke))
        .routes(routes!(put_labels))
        .routes(routes!(reenroll))
        .routes(routes!(create_task))
        .routes(routes!(summary))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FleetQuery {
    /// Only this tenant's appliances.
    tenant: Option<TenantId>,
    /// Only appliances of tenants on this plan.
    plan: Option<PlanId>,
    /// Only appliances in this state (a revoked appliance is only `revoked`).
    #[param(inline)]
    status: Option<FleetStatus>,
    /// Only appliances running this agent version.
    agent_version: Option<String>,
    /// Last seen before this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    last_seen_before: Option<Timestamp>,
    /// Last seen at or after this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    last_seen_after: Option<Timestamp>,
    /// Only appliances carrying every one of these labels: `key=value,key=value`.
    labels: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<ApplianceId>,
}

/// List appliances across tenants, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/admin/appliances",
    operation_id = "admin_list_appliances",
    tag = "admin",
    security(("operator_token" = [])),
    params(FleetQuery),
    responses(
        (status = 200, description = "One page of appliances", body = FleetPage),
        (status = 400, response = BadRequest),
        (status = 422, description = "`invalid_body` (`labels` is not `key=value,…` or a label breaks the rules; \
                                      `details.param` is `labels`)", body = ErrorBody),
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<FleetQuery>, ApiError>,
) -> Result<ApiJson<FleetPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let labels = q.labels.as_deref().map(labels::parse_pairs).transpose()?.unwrap_or_default();
    let filter = FleetFilter {
        labels,
        tenant: q.tenant,
        plan: q.plan,
        status: q.status,
        agent_version: q.agent_version,
        last_seen_before: q.last_seen_before.map(|t| t.0),
        last_seen_after: q.last_seen_after.map(|t| t.0),
        after: q.after,
    };
    Ok(ApiJson(appliances::fleet(&s.domain, &filter, q.limit).await?))
}

/// Online, offline, never seen and revoked appliances, in total and per tenant.
#[utoipa::path(
    get,
    path = "/api/v1/admin/fleet/summary",
    operation_id = "admin_fleet_summary",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The counts", body = FleetSummary),
    )
)]
async fn summary(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<FleetSummary>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(appliances::fleet_summary(&s.domain).await?))
}

/// One appliance of any tenant, with its presence history and recent tasks.
#[utoipa::path(
    get,
    path = "/api/v1/admin/appliances/{id}",
    operation_id = "admin_get_appliance",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The appliance", body = FleetApplianceDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn detail(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<FleetApplianceDetail>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(appliances::fleet_detail(&s.domain, id).await?))
}

/// Revoke an appliance.
///
/// Its certificate goes on the CRL (the broker is told), its current connection is dropped,
/// and it gets no more tasks or configuration. Not reversible: a replacement is registered
/// and enrolled anew. Revoking a revoked appliance changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/admin/appliances/{id}/revoke",
    operation_id = "admin_revoke_appliance",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The revoked appliance", body = FleetAppliance),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn revoke(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<FleetAppliance>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    Ok(ApiJson(appliances::revoke(&s.domain, id, Recorder::new(&op.actor(), Some(&rid.0))).await?))
}

/// Replace all of an appliance's labels (operators' `fleet/` ones included).
#[utoipa::path(
    put,
    path = "/api/v1/admin/appliances/{id}/labels",
    operation_id = "admin_put_appliance_labels",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = LabelsBody,
    responses(
        (status = 200, description = "The appliance's labels", body = LabelsBody),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body` (a key or value breaks the rules, or too many labels; \
                                      `details.param` is `labels`)", body = ErrorBody),
    )
)]
async fn put_labels(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(body): ApiJson<LabelsBody>,
) -> Result<ApiJson<LabelsBody>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let labels =
        labels::set_for_operator(&s.domain.pool, id, &body.labels, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(ApiJson(LabelsBody { labels }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Reenroll {
    /// How long the token stays valid (default 24, at most 720).
    ttl_hours: Option<u32>,
}

/// A new enrollment token for an existing appliance.
///
/// The way back for an appliance that was offline past its certificate's expiry (or lost
/// its state directory): `hearth-agent enroll --force --token …` on the box gets a
/// certificate for the same appliance id, keeping its tenant, configuration and history,
/// and revokes the certificates it held before. Earlier unused tokens stop working. Shown
/// once; audited.
#[utoipa::path(
    post,
    path = "/api/v1/admin/appliances/{id}/enrollment-token",
    operation_id = "admin_reenroll_appliance",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = Reenroll,
    responses(
        (status = 201, description = "A token for `hearth-agent enroll --force`", body = RegisteredAppliance),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`appliance_revoked`: a revoked appliance is never enrolled again", body = ErrorBody),
        (status = 422, description = "`invalid_body`: `ttl_hours` is not 1 to 720; `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn reenroll(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(b): ApiJson<Reenroll>,
) -> Result<(StatusCode, ApiJson<RegisteredAppliance>), ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let token = appliances::reenroll(&s.domain.pool, id, b.ttl_hours, Recorder::new(&op.actor(), Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(token)))
}

/// Queue a catalog task on a customer's appliance.
///
/// Validated and queued exactly as the customer's own request would be (in the customer's
/// tenant transaction), audited as the operator.
#[utoipa::path(
    post,
    path = "/api/v1/admin/appliances/{id}/tasks",
    operation_id = "admin_create_task",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = NewTask,
    responses(
        (status = 202, description = "Queued", body = ref("#/components/schemas/TaskCreated"),
            headers(("Location" = String, description = "`/api/v1/tasks/{id}` of the new task"))),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`appliance_revoked`: the appliance has been revoked and runs no more tasks", body = ErrorBody),
        (status = 422, description = "`invalid_params`: the action or a parameter breaks the catalog; \
                                      `details` is `{\"param\", \"rule\"}`", body = ErrorBody),
    )
)]
async fn create_task(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(req): ApiJson<NewTask>,
) -> Result<Response, ApiError> {
    op.require(Permission::ActForCustomer)?;
    let Path(id) = id?;
    let task = task_ops::queue_for_customer(&s.domain, id, req, Recorder::new(&op.actor(), Some(&rid.0))).await?;
    Ok(created(task))
}
