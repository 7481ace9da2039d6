//! Catalog tasks: create (validated against the catalog), read with the event log, list,
//! cancel.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{ApplianceId, TaskId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, Internal, NotFound, TenantForbidden, Unauthorized};
use super::{AppState, RequestId};
use crate::db::audit::{snapshot, Recorder};
use crate::db::tasks::{self, EventRow, Task};
use crate::db::{appliances, tenant_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_task, list_tasks)).routes(routes!(get_task)).routes(routes!(cancel_task))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTask {
    /// A catalog action, e.g. `dns.record.add` (see `ansible/catalog.json`).
    pub(super) action: String,
    /// The action's parameters, validated against the catalog.
    #[serde(default)]
    pub(super) params: Map<String, Value>,
    /// Seconds the task may take from now (default `tasks.default_deadline_s`).
    pub(super) deadline_s: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct TaskCreated {
    id: TaskId,
    /// Always `queued`.
    status: &'static str,
}

/// Queue a catalog task on an appliance.
#[utoipa::path(
    post,
    path = "/api/v1/appliances/{id}/tasks",
    tag = "tasks",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = CreateTask,
    responses(
        (status = 202, description = "Queued", body = TaskCreated,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}` of the new task"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`appliance_revoked`: the appliance was revoked and runs no more tasks",
            body = ErrorBody),
        (status = 422, description = "`invalid_params`: the action or a parameter breaks the catalog; \
                                      `details` is `{\"param\", \"rule\"}`", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]

async fn create_task(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    let Path(appliance) = id?;
    queue(&s, tenant, appliance, req, Recorder::new(&caller.actor(), Some(&rid.0))).await
}

/// Validates a task against the catalog and queues it on one of `tenant`'s appliances, in a
/// tenant transaction, audited (`task.create`). The tenant API and operators acting for a
/// customer both come here.
pub(super) async fn queue(
    s: &AppState,
    tenant: TenantId,
    appliance: ApplianceId,
    req: CreateTask,
    audit: Recorder<'_>,
) -> Result<Response, ApiError> {
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let action = req.action.clone();
    let id = queue_in(&mut tx, s, tenant, appliance, req, audit).await?;
    tx.commit().await?;
    s.dispatcher.notify_one();
    tracing::info!(task = %id, %appliance, %action, "task queued");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/tasks/{id}"))],
        ApiJson(TaskCreated { id, status: "queued" }),
    )
        .into_response())
}

/// [`queue`] inside the caller's tenant transaction (the support chat records its proposal's
/// outcome in the same one); the caller commits, then wakes the dispatcher.
pub(super) async fn queue_in(
    tx: &mut PgConnection,
    s: &AppState,
    tenant: TenantId,
    appliance: ApplianceId,
    req: CreateTask,
    audit: Recorder<'_>,
) -> Result<TaskId, ApiError> {
    let deadline = req.deadline_s.unwrap_or(s.tasks.default_deadline_s);
    if deadline == 0 || deadline > s.tasks.max_deadline_s {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("deadline_s must be between 1 and {}", s.tasks.max_deadline_s),
        ));
    }
    let (_, params) = Catalog::embedded().validate(&req.action, &req.params, &Policy::default()).map_err(|r| {
        ApiError::Unprocessable {
            code: "invalid_params",
            message: r.message.clone(),
            details: serde_json::json!({ "param": r.param, "rule": r.rule }),
        }
    })?;
    let Some(id) = tasks::create(tx, tenant, appliance, &req.action, &params, deadline as f64).await? else {
        return Err(match appliances::get(tx, tenant, appliance).await? {
            Some(a) if a.revoked_at.is_some() => ApiError::Conflict {
                code: "appliance_revoked",
                message: "this appliance has been revoked and can no longer run tasks".into(),
            },
            _ => ApiError::NotFound("appliance"),
        });
    };
    let after = serde_json::json!({ "appliance_id": appliance, "action": req.action, "params": params });
    audit.record(tx, Some(tenant), "task.create", ("task", id.to_string()), None, Some(after)).await?;
    Ok(id)
}

#[derive(Debug, Serialize, ToSchema)]
struct TaskDetail {
    #[serde(flatten)]
    task: Task,
    /// Every event the agent sent before its result is stored (events resent after a
    /// reconnect can arrive after the result).
    log_complete: bool,
    events: Vec<EventRow>,
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
        (status = 401, response = Unauthorized),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    )
)]
async fn get_task(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<TaskDetail>, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let task = tasks::get(&mut tx, tenant, id).await?.ok_or(ApiError::NotFound("task"))?;
    let events = tasks::events(&mut tx, tenant, id).await?;
    tx.commit().await?;
    let log_complete = task.events_expected.is_some_and(|n| events.len() as i64 >= n);
    Ok(ApiJson(TaskDetail { task, log_complete, events }))
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
        (status = 401, response = Unauthorized),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    )
)]

async fn list_tasks(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<TaskList>, ApiError> {
    let Path(appliance) = id?;
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    appliances::get(&mut tx, tenant, appliance).await?.ok_or(ApiError::NotFound("appliance"))?;
    let tasks = tasks::list_for_appliance(&mut tx, tenant, appliance, 100).await?;
    tx.commit().await?;
    Ok(ApiJson(TaskList { tasks }))
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
        (status = 401, response = Unauthorized),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`task_not_cancellable`: the task was already sent to the appliance", body = ErrorBody),
        (status = 500, response = Internal),
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
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    match tasks::cancel(&mut tx, tenant, id).await? {
        None => return Err(ApiError::NotFound("task")),
        Some(Err(status)) => {
            return Err(ApiError::Conflict {
                code: "task_not_cancellable",
                message: format!("the task is {status}; only a task not yet sent to the appliance can be cancelled"),
            })
        }
        Some(Ok(())) => {}
    }
    let task = tasks::get(&mut tx, tenant, id).await?.ok_or(ApiError::NotFound("task"))?;
    Recorder::new(&caller.actor(), Some(&rid.0))
        .record(&mut tx, Some(tenant), "task.cancel", ("task", id.to_string()), None, snapshot(&task))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(task))
}
