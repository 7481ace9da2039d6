//! Catalog tasks: the one place a task is created (deadline rule, catalog validation,
//! revoked appliances refused, audited), read with its event log, listed and cancelled.
//! The tenant API, operators acting for a customer and the support assistant all queue
//! through [`queue`] or [`queue_in`].

use hearth_protocol::catalog::{Catalog, Policy, Rejection};
use hearth_protocol::{ApplianceId, TaskId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::Services;
use crate::config::TasksConfig;
use crate::db::audit::{snapshot, Recorder};
use crate::db::tasks::{self as store, EventRow, Task};
use crate::db::{appliances, tenant_tx};
use crate::model::TaskStatus;

/// How many tasks an appliance's task list shows (newest first).
pub const LIST_LIMIT: i64 = 100;

/// A task as requested: a catalog action with its parameters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// A catalog action, e.g. `dns.record.add` (see `ansible/catalog.json`).
    pub action: String,
    /// The action's parameters, validated against the catalog.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Seconds the task may take from now (default `tasks.default_deadline_s`).
    pub deadline_s: Option<u64>,
}

/// One task with its event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    /// Every event the agent sent before its result is stored (events resent after a
    /// reconnect can arrive after the result).
    pub log_complete: bool,
    pub events: Vec<EventRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("appliance not found")]
    ApplianceNotFound,
    #[error("task not found")]
    TaskNotFound,
    #[error("this appliance has been revoked and can no longer run tasks")]
    ApplianceRevoked,
    #[error("deadline_s must be between 1 and {max}")]
    BadDeadline { max: u64 },
    /// The catalog refuses the action or a parameter.
    #[error("{}", .0.message)]
    Catalog(Rejection),
    #[error("the task is {0}; only a task not yet sent to the appliance can be cancelled")]
    NotCancellable(TaskStatus),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Queues a task on one of `tenant`'s appliances in a tenant transaction of its own, then
/// wakes the dispatcher.
pub async fn queue(
    svc: &Services,
    tenant: TenantId,
    appliance: ApplianceId,
    req: NewTask,
    audit: Recorder<'_>,
) -> Result<TaskId, TaskError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let action = req.action.clone();
    let id = queue_in(&mut tx, &svc.tasks, tenant, appliance, req, audit).await?;
    tx.commit().await?;
    svc.wake.wake();
    tracing::info!(task = %id, %appliance, %action, "task queued");
    Ok(id)
}

/// Queues a task for an operator acting on a customer's behalf: in the customer's tenant
/// transaction, exactly as the customer's own request would be.
pub async fn queue_for_customer(
    svc: &Services,
    appliance: ApplianceId,
    req: NewTask,
    audit: Recorder<'_>,
) -> Result<TaskId, TaskError> {
    let tenant = appliances::fleet_get(&svc.pool, appliance).await?.ok_or(TaskError::ApplianceNotFound)?.tenant_id;
    queue(svc, tenant, appliance, req, audit).await
}

/// [`queue`] inside the caller's tenant transaction (the support chat records its proposal's
/// outcome in the same one); the caller commits, then wakes the dispatcher.
pub async fn queue_in(
    tx: &mut PgConnection,
    cfg: &TasksConfig,
    tenant: TenantId,
    appliance: ApplianceId,
    req: NewTask,
    audit: Recorder<'_>,
) -> Result<TaskId, TaskError> {
    let deadline = req.deadline_s.unwrap_or(cfg.default_deadline_s);
    if deadline == 0 || deadline > cfg.max_deadline_s {
        return Err(TaskError::BadDeadline { max: cfg.max_deadline_s });
    }
    let (_, params) =
        Catalog::embedded().validate(&req.action, &req.params, &Policy::default()).map_err(TaskError::Catalog)?;
    let Some(id) = store::create(tx, tenant, appliance, &req.action, &params, deadline as f64).await? else {
        return Err(match appliances::get(tx, tenant, appliance).await? {
            Some(a) if a.revoked_at.is_some() => TaskError::ApplianceRevoked,
            _ => TaskError::ApplianceNotFound,
        });
    };
    let after = serde_json::json!({ "appliance_id": appliance, "action": req.action, "params": params });
    audit.record(tx, Some(tenant), "task.create", ("task", id.to_string()), None, Some(after)).await?;
    Ok(id)
}

/// One of the tenant's tasks with its event log.
pub async fn get(svc: &Services, tenant: TenantId, id: TaskId) -> Result<TaskDetail, TaskError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let task = store::get(&mut tx, tenant, id).await?.ok_or(TaskError::TaskNotFound)?;
    let events = store::events(&mut tx, tenant, id).await?;
    tx.commit().await?;
    let log_complete = task.events_expected.is_some_and(|n| events.len() as i64 >= n);
    Ok(TaskDetail { task, log_complete, events })
}

/// The appliance's most recent tasks (at most [`LIST_LIMIT`]), newest first.
pub async fn list(svc: &Services, tenant: TenantId, appliance: ApplianceId) -> Result<Vec<Task>, TaskError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    appliances::get(&mut tx, tenant, appliance).await?.ok_or(TaskError::ApplianceNotFound)?;
    let tasks = store::list_for_appliance(&mut tx, tenant, appliance, LIST_LIMIT).await?;
    tx.commit().await?;
    Ok(tasks)
}

/// Cancels a task that has not been sent yet, audited (`task.cancel`).
pub async fn cancel(svc: &Services, tenant: TenantId, id: TaskId, audit: Recorder<'_>) -> Result<Task, TaskError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    match store::cancel(&mut tx, tenant, id).await? {
        None => return Err(TaskError::TaskNotFound),
        Some(Err(status)) => return Err(TaskError::NotCancellable(status)),
        Some(Ok(())) => {}
    }
    let task = store::get(&mut tx, tenant, id).await?.ok_or(TaskError::TaskNotFound)?;
    audit.record(&mut tx, Some(tenant), "task.cancel", ("task", id.to_string()), None, snapshot(&task)).await?;
    tx.commit().await?;
    Ok(task)
}

/// One page of tasks across tenants (operators).
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetTaskPage {
    /// Newest first.
    pub tasks: Vec<store::FleetTask>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<TaskId>,
}

/// Tasks across tenants, newest first, filtered, a page of `limit` (operators; the service
/// role).
pub async fn fleet_list(
    svc: &Services,
    filter: &store::FleetTaskFilter,
    limit: i64,
) -> Result<FleetTaskPage, TaskError> {
    let mut tasks = store::fleet_list(&svc.pool, filter, limit + 1).await?;
    let next_before = super::next_page(&mut tasks, limit, |t| t.task.id);
    Ok(FleetTaskPage { tasks, next_before })
}

/// Any tenant's task with its event log (operators), read in the tenant's transaction.
pub async fn fleet_get(svc: &Services, id: TaskId) -> Result<(TenantId, TaskDetail), TaskError> {
    let tenant = store::tenant_of(&svc.pool, id).await?.ok_or(TaskError::TaskNotFound)?;
    Ok((tenant, get(svc, tenant, id).await?))
}

/// Cancels any tenant's task not yet sent (operators), audited as the operator.
pub async fn fleet_cancel(svc: &Services, id: TaskId, audit: Recorder<'_>) -> Result<Task, TaskError> {
    let tenant = store::tenant_of(&svc.pool, id).await?.ok_or(TaskError::TaskNotFound)?;
    cancel(svc, tenant, id, audit).await
}
