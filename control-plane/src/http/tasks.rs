//! Catalog tasks: create (validated against the catalog), read with the event log, list,
//! cancel.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{ApplianceId, TaskId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson};
use super::{AppState, RequestId};
use crate::db::audit::{snapshot, Recorder};
use crate::db::tasks::{self, EventRow, Task};
use crate::db::{appliances, tenant_tx};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/appliances/{id}/tasks", post(create).get(list))
        .route("/api/v1/tasks/{id}", get(detail))
        .route("/api/v1/tasks/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTask {
    action: String,
    #[serde(default)]
    params: Map<String, Value>,
    /// Seconds the task may take from now (default `tasks.default_deadline_s`).
    deadline_s: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Created {
    id: TaskId,
    status: &'static str,
}

async fn create(
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
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let Some(id) = tasks::create(&mut tx, tenant, appliance, &req.action, &params, deadline as f64).await? else {
        return Err(match appliances::get(&mut tx, tenant, appliance).await? {
            Some(a) if a.revoked_at.is_some() => ApiError::Conflict {
                code: "appliance_revoked",
                message: "this appliance has been revoked and can no longer run tasks".into(),
            },
            _ => ApiError::NotFound("appliance"),
        });
    };
    let after = serde_json::json!({ "appliance_id": appliance, "action": req.action, "params": params });
    audit.record(&mut tx, Some(tenant), "task.create", ("task", id.to_string()), None, Some(after)).await?;
    tx.commit().await?;
    s.dispatcher.notify_one();
    tracing::info!(task = %id, %appliance, action = %req.action, "task queued");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/tasks/{id}"))],
        ApiJson(Created { id, status: "queued" }),
    )
        .into_response())
}

#[derive(Debug, Serialize)]
struct Detail {
    #[serde(flatten)]
    task: Task,
    /// Every event the agent sent before its result is stored (events resent after a
    /// reconnect can arrive after the result).
    log_complete: bool,
    events: Vec<EventRow>,
}

async fn detail(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<TaskId>, PathRejection>,
) -> Result<ApiJson<Detail>, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let task = tasks::get(&mut tx, tenant, id).await?.ok_or(ApiError::NotFound("task"))?;
    let events = tasks::events(&mut tx, tenant, id).await?;
    tx.commit().await?;
    let log_complete = task.events_expected.is_some_and(|n| events.len() as i64 >= n);
    Ok(ApiJson(Detail { task, log_complete, events }))
}

#[derive(Debug, Serialize)]
struct List {
    tasks: Vec<Task>,
}

async fn list(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<List>, ApiError> {
    let Path(appliance) = id?;
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    appliances::get(&mut tx, tenant, appliance).await?.ok_or(ApiError::NotFound("appliance"))?;
    let tasks = tasks::list_for_appliance(&mut tx, tenant, appliance, 100).await?;
    tx.commit().await?;
    Ok(ApiJson(List { tasks }))
}

async fn cancel(
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
