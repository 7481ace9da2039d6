//! The fleet across tenants: appliances with filters, counts per tenant, one appliance
//! with its history and tasks, revocation, and tasks on a customer's behalf.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApplianceId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, BadRequest, ForbiddenForRole, NotFound};
use super::super::shared::created;
use super::super::{AppState, RequestId};
use super::{limit, page, Timestamp};
use crate::db::appliances::{self, FleetAppliance, FleetFilter, TenantCounts};
use crate::db::audit::Recorder;
use crate::db::presence::{self, PresenceEvent};
use crate::db::tasks::{self, Task};
use crate::domain::tasks::{self as task_ops, NewTask};
use crate::domain::tenants::enforce_revocations;
use crate::revocation;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail))
        .routes(routes!(revoke))
        .routes(routes!(create_task))
        .routes(routes!(summary))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FleetQuery {
    /// Only this tenant's appliances.
    tenant: Option<TenantId>,
    /// `never_seen`, `online`, `offline` or `revoked`.
    status: Option<String>,
    /// Only appliances running this agent version.
    agent_version: Option<String>,
    /// Last seen before this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    last_seen_before: Option<Timestamp>,
    /// Last seen at or after this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    last_seen_after: Option<Timestamp>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<ApplianceId>,
}

#[derive(Debug, Serialize, ToSchema)]
struct FleetPage {
    /// In id order (oldest first).
    appliances: Vec<FleetAppliance>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<ApplianceId>,
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
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<Query<FleetQuery>, QueryRejection>,
) -> Result<ApiJson<FleetPage>, ApiError> {
    op.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    if let Some(st) = &q.status {
        if !matches!(st.as_str(), "never_seen" | "online" | "offline" | "revoked") {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status {st:?} is not one of never_seen, online, offline, revoked"),
            ));
        }
    }
    let filter = FleetFilter {
        tenant: q.tenant,
        status: q.status,
        agent_version: q.agent_version,
        last_seen_before: q.last_seen_before.map(|t| t.0),
        last_seen_after: q.last_seen_after.map(|t| t.0),
        after: q.after,
    };
    let mut rows = appliances::fleet(&s.domain.pool, &filter, limit + 1).await?;
    let next_after = page(&mut rows, limit, |a| a.appliance.id);
    Ok(ApiJson(FleetPage { appliances: rows, next_after }))
}

/// Appliance counts, in total and per tenant (a revoked appliance counts only as revoked).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FleetSummary)]
struct Summary {
    online: i64,
    offline: i64,
    never_seen: i64,
    revoked: i64,
    /// Every tenant's counts, by tenant name.
    tenants: Vec<TenantCounts>,
}

/// Online, offline, never seen and revoked appliances, in total and per tenant.
#[utoipa::path(
    get,
    path = "/api/v1/admin/fleet/summary",
    operation_id = "admin_fleet_summary",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The counts", body = Summary),
    )
)]
async fn summary(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<Summary>, ApiError> {
    op.require(Permission::Read)?;
    let tenants = appliances::counts_by_tenant(&s.domain.pool, None).await?;
    let sum = |f: fn(&TenantCounts) -> i64| tenants.iter().map(f).sum();
    Ok(ApiJson(Summary {
        online: sum(|c| c.online),
        offline: sum(|c| c.offline),
        never_seen: sum(|c| c.never_seen),
        revoked: sum(|c| c.revoked),
        tenants,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FleetApplianceDetail)]
struct Detail {
    #[serde(flatten)]
    appliance: FleetAppliance,
    /// The most recent presence transitions, oldest first.
    presence_history: Vec<PresenceEvent>,
    /// The most recent tasks, newest first.
    tasks: Vec<Task>,
}

const HISTORY: i64 = 20;
const RECENT_TASKS: i64 = 20;

/// One appliance of any tenant, with its presence history and recent tasks.
#[utoipa::path(
    get,
    path = "/api/v1/admin/appliances/{id}",
    operation_id = "admin_get_appliance",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The appliance", body = Detail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn detail(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<Detail>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    let appliance = appliances::fleet_get(&s.domain.pool, id).await?.ok_or(ApiError::NotFound("appliance"))?;
    let mut conn = s.domain.pool.acquire().await?;
    let presence_history = presence::history(&mut conn, appliance.tenant_id, id, HISTORY).await?;
    let tasks = tasks::list_for_appliance(&mut conn, appliance.tenant_id, id, RECENT_TASKS).await?;
    Ok(ApiJson(Detail { appliance, presence_history, tasks }))
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
    revocation::revoke_appliance(&s.domain.pool, Recorder::new(&op.actor(), Some(&rid.0)), id)
        .await?
        .ok_or(ApiError::NotFound("appliance"))?;
    enforce_revocations(&s.domain.revoker, &[id]).await;
    let appliance = appliances::fleet_get(&s.domain.pool, id).await?.ok_or(ApiError::NotFound("appliance"))?;
    Ok(ApiJson(appliance))
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
