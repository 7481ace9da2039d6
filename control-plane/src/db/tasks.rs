//! Catalog tasks and their event logs. Customer reads and writes take the tenant; the
//! dispatcher, the ingest and the timeout sweep are system paths.

use hearth_protocol::{ApplianceId, TaskEvent, TaskId, TaskResult, TenantId};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::TaskStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub appliance_id: ApplianceId,
    pub action: String,
    pub params: Value,
    pub status: TaskStatus,
    pub message: Option<String>,
    /// Ansible's play recap, once finished.
    pub stats: Option<Value>,
    /// How many events the agent sent before its result (the log is complete at that many).
    pub events_expected: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub dispatched_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub task: Option<String>,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

const COLUMNS: &str = "id, appliance_id, action, params, status, message, stats, events_expected, created_at, \
                       deadline, dispatched_at, started_at, finished_at";

/// Queues a task for one of the tenant's appliances; `None` if the appliance is not the
/// tenant's or is revoked.
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliance: ApplianceId,
    action: &str,
    params: &Map<String, Value>,
    deadline_s: f64,
) -> Result<Option<TaskId>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO tasks (id, tenant_id, appliance_id, action, params, deadline)
         SELECT $1, tenant_id, id, $4, $5, now() + make_interval(secs => $6)
         FROM appliances WHERE id = $3 AND tenant_id = $2 AND revoked_at IS NULL
         RETURNING id",
    )
    .bind(TaskId::new())
    .bind(tenant)
    .bind(appliance)
    .bind(action)
    .bind(Value::Object(params.clone()))
    .bind(deadline_s)
    .fetch_optional(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: TaskId) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn events(conn: &mut PgConnection, tenant: TenantId, id: TaskId) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, kind, task, message, at FROM task_events WHERE tenant_id = $1 AND task_id = $2 ORDER BY seq",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(conn)
    .await
}

/// The appliance's most recent tasks, newest first.
pub async fn list_for_appliance(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliance: ApplianceId,
    limit: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND appliance_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(appliance)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The `per_appliance` most recent tasks of each of `appliances`, newest first per
/// appliance, in one query.
pub async fn recent_for_appliances(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliances: &[ApplianceId],
    per_appliance: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM (
           SELECT t.*, row_number() OVER (PARTITION BY appliance_id ORDER BY created_at DESC, id DESC) AS n
             FROM tasks t WHERE tenant_id = $1 AND appliance_id = ANY($2::uuid[])
         ) recent WHERE n <= $3 ORDER BY appliance_id, created_at DESC, id DESC"
    ))
    .bind(tenant)
    .bind(appliances.iter().map(|a| *a.as_uuid()).collect::<Vec<_>>())
    .bind(per_appliance)
    .fetch_all(conn)
    .await
}

/// Cancels a task that has not been sent yet. `Ok(Err(status))` when it is past that.
pub async fn cancel(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: TaskId,
) -> Result<Option<Result<(), TaskStatus>>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE tasks SET status = 'cancelled', finished_at = now(), message = 'cancelled before it was sent'
         WHERE tenant_id = $1 AND id = $2 AND status = 'queued'",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Some(Ok(())));
    }
    let status: Option<TaskStatus> = sqlx::query_scalar("SELECT status FROM tasks WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(status.map(Err))
}

/// A task ready to be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Dispatchable {
    pub id: TaskId,
    pub appliance_id: ApplianceId,
    pub action: String,
    pub params: Value,
    pub deadline: OffsetDateTime,
}

/// Locks up to `limit` queued tasks of online appliances that no other replica holds
/// (never for a revoked appliance or a suspended tenant).
pub async fn claim_dispatchable(conn: &mut PgConnection, limit: i64) -> Result<Vec<Dispatchable>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.appliance_id, t.action, t.params, t.deadline
         FROM tasks t JOIN appliances a ON a.id = t.appliance_id
         WHERE t.status = 'queued' AND a.status = 'online' AND t.deadline > now() AND a.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = t.tenant_id AND tn.status = 'active')
         ORDER BY t.created_at
         LIMIT $1
         FOR UPDATE OF t SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mark_dispatched(conn: &mut PgConnection, ids: &[TaskId]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tasks SET status = 'dispatched', dispatched_at = now() WHERE id = ANY($1) AND status = 'queued'",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `timed_out` every unfinished task past its deadline; returns how many.
pub async fn time_out(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE tasks SET status = 'timed_out', finished_at = now(),
                message = 'the task did not finish before its deadline'
         WHERE status IN ('queued', 'dispatched', 'running') AND deadline < now()",
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The most events stored for one task (seq 1 to this). Task events take nothing from an
/// appliance's MQTT allowance (see `ingest::consumer`), so this is what bounds what one
/// task can write; a playbook of the catalog sends a few dozen. Events past it are
/// receipted like the rest, so the agent stops sending them, and not stored.
pub const MAX_EVENTS_PER_TASK: i64 = 10_000;

/// Stores task events (once each; only for a task of the appliance that sent them, and at
/// most [`MAX_EVENTS_PER_TASK`] per task) and marks their tasks running. Returns how many
/// events were new.
pub async fn store_events(conn: &mut PgConnection, events: &[(ApplianceId, TaskEvent)]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut appliances = Vec::new();
    let mut tasks = Vec::new();
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    let mut messages = Vec::new();
    let mut ats = Vec::new();
    for (a, e) in events {
        appliances.push(*a.as_uuid());
        tasks.push(*e.task_id.as_uuid());
        seqs.push(i64::try_from(e.seq).unwrap_or(i64::MAX));
        kinds.push(serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default());
        names.push(e.task.clone());
        messages.push(e.message.clone());
        ats.push(e.at);
    }
    let (stored,): (i64,) = sqlx::query_as(
        "WITH ev AS (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                 AS t(appliance_id, task_id, seq, kind, task, message, at)
         ),
         ins AS (
             INSERT INTO task_events (task_id, seq, tenant_id, kind, task, message, at)
             SELECT ev.task_id, ev.seq, t.tenant_id, ev.kind, ev.task, ev.message, ev.at
             FROM ev JOIN tasks t ON t.id = ev.task_id AND t.appliance_id = ev.appliance_id
             WHERE ev.seq BETWEEN 0 AND $8
             ON CONFLICT (task_id, seq) DO NOTHING
             RETURNING task_id
         ),
         running AS (
             UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, now())
             WHERE id IN (SELECT task_id FROM ins) AND status IN ('queued', 'dispatched')
         )
         SELECT count(*) FROM ins",
    )
    .bind(appliances)
    .bind(tasks)
    .bind(seqs)
    .bind(kinds)
    .bind(names)
    .bind(messages)
    .bind(ats)
    .bind(MAX_EVENTS_PER_TASK)
    .fetch_one(conn)
    .await?;
    Ok(stored as u64)
}

/// Records final results (only for unfinished tasks of the appliance that sent them).
pub async fn store_results(conn: &mut PgConnection, results: &[(ApplianceId, TaskResult)]) -> Result<u64, sqlx::Error> {
    if results.is_empty() {
        return Ok(0);
    }
    let appliances: Vec<_> = results.iter().map(|(a, _)| *a.as_uuid()).collect();
    let tasks: Vec<_> = results.iter().map(|(_, r)| *r.task_id.as_uuid()).collect();
    let statuses: Vec<_> = results.iter().map(|(_, r)| TaskStatus::from_outcome(r.outcome).as_str()).collect();
    let messages: Vec<_> = results.iter().map(|(_, r)| r.message.clone()).collect();
    let stats: Vec<_> = results.iter().map(|(_, r)| r.stats.and_then(|s| serde_json::to_value(s).ok())).collect();
    let events: Vec<_> = results.iter().map(|(_, r)| i64::try_from(r.events).unwrap_or(i64::MAX)).collect();
    let r = sqlx::query(
        "WITH r AS (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::int8[])
                 AS t(appliance_id, task_id, status, message, stats, events)
         )
         UPDATE tasks t SET status = r.status, message = r.message, stats = r.stats, events_expected = r.events,
                finished_at = now(), started_at = COALESCE(t.started_at, now())
         FROM r
         WHERE t.id = r.task_id AND t.appliance_id = r.appliance_id
           AND t.status IN ('queued', 'dispatched', 'running')",
    )
    .bind(appliances)
    .bind(tasks)
    .bind(statuses)
    .bind(messages)
    .bind(stats)
    .bind(events)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// A task of any tenant, with the names an operator reads it by.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FleetTask {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub task: Task,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub appliance_name: String,
}

/// Filters for [`fleet_list`]; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct FleetTaskFilter {
    pub tenant: Option<TenantId>,
    pub appliance: Option<ApplianceId>,
    pub status: Option<TaskStatus>,
    /// Exact action, or a prefix ending in `.` (`dns.` matches `dns.record.add`, …).
    pub action: Option<String>,
    /// Tasks older than this one (paging backwards from the newest; ids are time-ordered).
    pub before: Option<TaskId>,
}

/// Tasks across tenants, newest first (operators; the service role).
pub async fn fleet_list(pool: &PgPool, f: &FleetTaskFilter, limit: i64) -> Result<Vec<FleetTask>, sqlx::Error> {
    let action_like = f.action.as_ref().map(|a| if a.ends_with('.') { format!("{a}%") } else { a.clone() });
    sqlx::query_as(
        "SELECT t.id, t.appliance_id, t.action, t.params, t.status, t.message, t.stats, t.events_expected,
                t.created_at, t.deadline, t.dispatched_at, t.started_at, t.finished_at,
                t.tenant_id, te.name AS tenant_name, a.name AS appliance_name
         FROM tasks t JOIN tenants te ON te.id = t.tenant_id JOIN appliances a ON a.id = t.appliance_id
         WHERE ($1::uuid IS NULL OR t.tenant_id = $1)
           AND ($2::uuid IS NULL OR t.appliance_id = $2)
           AND ($3::text IS NULL OR t.status = $3)
           AND ($4::text IS NULL OR t.action LIKE $4)
           AND ($5::uuid IS NULL OR t.id < $5)
         ORDER BY t.id DESC LIMIT $6",
    )
    .bind(f.tenant)
    .bind(f.appliance)
    .bind(f.status)
    .bind(action_like)
    .bind(f.before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The tenant a task belongs to (operators find a task by its id alone).
pub async fn tenant_of(pool: &PgPool, id: TaskId) -> Result<Option<TenantId>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM tasks WHERE id = $1").bind(id).fetch_optional(pool).await
}
