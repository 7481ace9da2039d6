//! Catalog tasks: create (validated against the catalog), read with the event log, list,
//! cancel. The rules are in [`crate::domain::tasks`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApplianceId, TaskId};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, TenantForbidden};
use super::shared::{created, TaskCreated};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::db::tasks::Task;
use crate::domain::tasks::{self, NewTask, TaskDetail};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_task, list_tasks)).routes(routes!(get_task)).routes(routes!(cancel_task))
}

/// Queue a catalog task on an appliance.
#[utoipa::path(
    post,
    path = "/api/v1/appliances/{id}/tasks",
    tag = "tasks",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = NewTask,
    responses(
        (status = 202, description = "Queued", body = TaskCreated,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}` of the new task"))),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`appliance_revoked`: the appliance was revoked and runs no more tasks",
            body = ErrorBody),
        (status = 422, description = "`invalid_params`: the action or a parameter breaks the catalog; \
                                      `details` is `{\"param\", \"rule\"}`", body = ErrorBody),
    )
)]

async fn create_task(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(req): ApiJson<NewTask>,
) -> Result<Response, ApiError> {
    let Path(appliance) = id?;
    let id = tasks::queue(&s.domain, tenant, appliance, req, Recorder::new(&caller.actor(), Some(&rid.0))).await?;
    Ok(created(id))
}

/// One task with its event log.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = TaskId, Path, description = "The task")),
    responses(
        (status = 200, description = "The task and its events", body = TaskDetail),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get_task(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<TaskDetail>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(tasks::get(&s.domain, tenant, id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
struct TaskList {
    /// The most recent 100, newest first.
    tasks: Vec<Task>,
}

/// An appliance's tasks.
#[utoipa::path(
    get,
    path = "/api/v1/appliances/{id}/tasks",
    tag = "tasks",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The appliance's tasks", body = TaskList),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]

async fn list_tasks(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<TaskList>, ApiError> {
    let Path(appliance) = id?;
    Ok(ApiJson(TaskList { tasks: tasks::list(&s.domain, tenant, appliance).await? }))
}

/// Cancel a task that has not yet been sent to the appliance.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = TaskId, Path, description = "The task")),
    responses(
        (status = 200, description = "The cancelled task", body = Task),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`task_not_cancellable`: the task was already sent to the appliance", body = ErrorBody),
    )
)]
async fn cancel_task(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<Task>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(tasks::cancel(&s.domain, tenant, id, Recorder::new(&caller.actor(), Some(&rid.0))).await?))
}
