//! Tasks across tenants (filtered, newest first), one task with its event log, cancelling a
//! task not yet sent, and the action catalog with its parameter schemas (what the operator
//! console generates its task form from). The rules are in [`crate::domain::tasks`]; a
//! task is read and cancelled in its tenant's transaction, exactly as the customer's own
//! request would be.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::catalog::{Catalog, Risk};
use hearth_protocol::{ApplianceId, TaskId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::{AppState, RequestId};
use super::limit;
use crate::db::audit::Recorder;
use crate::db::tasks::{FleetTaskFilter, Task};
use crate::domain::tasks::{self, FleetTaskPage, TaskDetail};
use crate::model::TaskStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(detail)).routes(routes!(cancel)).routes(routes!(catalog))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TaskQuery {
    /// Only this tenant's tasks.
    tenant: Option<TenantId>,
    /// Only this appliance's tasks.
    appliance: Option<ApplianceId>,
    /// Only tasks in this state.
    #[param(inline)]
    status: Option<TaskStatus>,
    /// An action (`dns.record.add`) or a prefix ending in `.` (`dns.`).
    action: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_before` of the previous page.
    before: Option<TaskId>,
}

/// Tasks across tenants, newest first, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/admin/tasks",
    operation_id = "admin_list_tasks",
    tag = "admin",
    security(("operator_token" = [])),
    params(TaskQuery),
    responses(
        (status = 200, description = "One page of tasks with their tenant's and appliance's names", body = FleetTaskPage),
        (status = 400, response = BadRequest),
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<TaskQuery>, ApiError>,
) -> Result<ApiJson<FleetTaskPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    let filter = FleetTaskFilter {
        tenant: q.tenant,
        appliance: q.appliance,
        status: q.status,
        action: q.action,
        before: q.before,
    };
    Ok(ApiJson(tasks::fleet_list(&s.domain, &filter, limit).await?))
}

/// A task of any tenant with its tenant.
#[derive(Debug, Serialize, ToSchema)]
struct FleetTaskDetail {
    tenant_id: TenantId,
    #[serde(flatten)]
    detail: TaskDetail,
}

/// One task of any tenant, with its event log (the Ansible output as it arrives).
#[utoipa::path(
    get,
    path = "/api/v1/admin/tasks/{id}",
    operation_id = "admin_get_task",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TaskId, Path, description = "The task")),
    responses(
        (status = 200, description = "The task and its events", body = FleetTaskDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn detail(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<FleetTaskDetail>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    let (tenant_id, detail) = tasks::fleet_get(&s.domain, id).await?;
    Ok(ApiJson(FleetTaskDetail { tenant_id, detail }))
}

/// Cancel a task of any tenant that has not yet been sent to its appliance (audited as the
/// operator, `task.cancel`).
#[utoipa::path(
    post,
    path = "/api/v1/admin/tasks/{id}/cancel",
    operation_id = "admin_cancel_task",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TaskId, Path, description = "The task")),
    responses(
        (status = 200, description = "The cancelled task", body = Task),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`task_not_cancellable`: the task was already sent to the appliance", body = ErrorBody),
    )
)]
async fn cancel(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<Task>, ApiError> {
    op.require(Permission::ActForCustomer)?;
    let Path(id) = id?;
    Ok(ApiJson(tasks::fleet_cancel(&s.domain, id, Recorder::new(&op.actor(), Some(&rid.0))).await?))
}

/// One catalog action as a client needs it to build a form.
#[derive(Debug, Serialize, ToSchema)]
struct CatalogAction {
    /// The action id, e.g. `dns.record.add`.
    id: String,
    description: String,
    /// `low` or `high` (high-risk actions always wait for a person's confirmation in chat).
    risk: String,
    /// JSON Schema of the parameters object (`type`, `required`, `properties` with `type`,
    /// `pattern`, `maxLength`, `enum`, `items`, `description`).
    #[schema(value_type = Object)]
    params: Value,
    /// Valid parameters for this action (a form's placeholder).
    #[schema(value_type = Object)]
    example_params: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
struct CatalogView {
    version: u32,
    /// Domains local host names must end in.
    local_domains: Vec<String>,
    actions: Vec<CatalogAction>,
}

/// The action catalog this control plane validates tasks against, with each action's
/// parameter schema. A task created from it is still validated on the server: a refusal is
/// `422 invalid_params` with `details.param` naming the field.
#[utoipa::path(
    get,
    path = "/api/v1/admin/catalog",
    operation_id = "admin_get_catalog",
    tag = "admin",
    security(("operator_token" = [])),
    responses((status = 200, description = "The catalog's actions", body = CatalogView))
)]
async fn catalog(op: OperatorAuth) -> Result<ApiJson<CatalogView>, ApiError> {
    op.require(Permission::Read)?;
    let c = Catalog::embedded();
    let actions = c
        .actions
        .iter()
        .map(|a| CatalogAction {
            id: a.id.clone(),
            description: a.description.clone(),
            risk: match a.risk {
                Risk::Low => "low",
                Risk::High => "high",
            }
            .to_owned(),
            params: a.params.clone(),
            example_params: a.example_params.clone(),
        })
        .collect();
    Ok(ApiJson(CatalogView { version: c.version, local_domains: c.local_domains.clone(), actions }))
}
