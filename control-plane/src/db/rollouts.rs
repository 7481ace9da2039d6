//! Fleet rollouts and their executions. Reads and changes for a tenant run in its tenant
//! transaction and take its id; the advancer works on the service role, one rollout at a
//! time under that rollout's row lock ([`lock_active`]).

use hearth_protocol::{ApplianceId, PlanId, RolloutId, TaskId, TenantId};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::appliances::Labels;
use crate::model::{ExecutionState, RolloutState};

/// A rollout as stored (selector, payload and policy as JSON; `domain::rollouts` reads them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rollout {
    pub id: RolloutId,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub selector: Value,
    pub dynamic: bool,
    pub payload: Value,
    pub policy: Value,
    pub state: RolloutState,
    pub reason: Option<String>,
    pub waves_open: i32,
    pub wave_sizes: Vec<i32>,
    pub start_at: OffsetDateTime,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str =
    "id, tenant_id, name, selector, dynamic, payload, policy, state, reason, waves_open, wave_sizes, \
                       start_at, created_by, created_at, started_at, finished_at, updated_at";

/// What a new rollout stores.
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    pub tenant: Option<TenantId>,
    pub name: &'a str,
    pub selector: Value,
    pub dynamic: bool,
    pub payload: Value,
    pub policy: Value,
    pub start_at: Option<OffsetDateTime>,
    pub created_by: String,
}

pub async fn insert(conn: &mut PgConnection, r: NewRow<'_>) -> Result<Rollout, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO rollouts (id, tenant_id, name, selector, dynamic, payload, policy, start_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), $9)
         RETURNING {COLUMNS}"
    ))
    .bind(RolloutId::new())
    .bind(r.tenant)
    .bind(r.name)
    .bind(r.selector)
    .bind(r.dynamic)
    .bind(r.payload)
    .bind(r.policy)
    .bind(r.start_at)
    .bind(r.created_by)
    .fetch_one(conn)
    .await
}

pub use super::Scope;

pub async fn get(conn: &mut PgConnection, scope: Scope, id: RolloutId) -> Result<Option<Rollout>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(conn)
        .await
}

/// [`get`] locked for a change (waits for the advancer's round on it to end).
pub async fn get_for_update(
    conn: &mut PgConnection,
    scope: Scope,
    id: RolloutId,
) -> Result<Option<Rollout>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rollouts WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE"
    ))
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(conn)
    .await
}

/// One page, newest first, starting after the `after` rollout.
pub async fn list(
    conn: &mut PgConnection,
    scope: Scope,
    state: Option<RolloutState>,
    after: Option<RolloutId>,
    limit: i64,
) -> Result<Vec<Rollout>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rollouts
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2)
           AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM rollouts WHERE id = $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(scope.tenant())
    .bind(state)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Active rollouts of a tenant (its plan's limit counts them).
pub async fn count_active(conn: &mut PgConnection, tenant: TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM rollouts WHERE tenant_id = $1
           AND state IN ('scheduled', 'running', 'paused', 'waiting_for_approval')",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
}

/// Moves a rollout to `state`; a final state sets `finished_at`.
pub async fn set_state(
    conn: &mut PgConnection,
    id: RolloutId,
    state: RolloutState,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rollouts SET state = $2, reason = COALESCE($3, reason), updated_at = now(),
                finished_at = CASE WHEN $4 THEN now() ELSE finished_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(reason)
    .bind(state.is_final())
    .execute(conn)
    .await?;
    Ok(())
}

/// Changes what may change after creation (name, policy; payload only before the start).
pub async fn update(
    conn: &mut PgConnection,
    id: RolloutId,
    name: &str,
    policy: &Value,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rollouts SET name = $2, policy = $3, payload = $4, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(name)
        .bind(policy)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn open_waves(conn: &mut PgConnection, id: RolloutId, waves_open: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rollouts SET waves_open = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(waves_open)
        .execute(conn)
        .await?;
    Ok(())
}

/// The appliances a selector matches: every list is "any of", all of them together, and
/// revoked appliances or suspended tenants never match. `scope` (a tenant's rollout) keeps
/// it to that tenant's appliances whatever the selector says.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub scope: Option<TenantId>,
    pub tenants: Vec<TenantId>,
    pub plans: Vec<PlanId>,
    pub labels: Labels,
    pub agent_versions: Vec<String>,
    pub statuses: Vec<String>,
    pub appliances: Vec<ApplianceId>,
}

/// `WHERE` over `appliances a` for a [`Target`] bound as `$1`–`$7`.
const MATCHES: &str = "a.revoked_at IS NULL
       AND EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = a.tenant_id AND tn.status = 'active'
                   AND (cardinality($3::uuid[]) = 0 OR tn.plan_id = ANY($3)))
       AND ($1::uuid IS NULL OR a.tenant_id = $1)
       AND (cardinality($2::uuid[]) = 0 OR a.tenant_id = ANY($2))
       AND ($4::jsonb IS NULL OR a.labels @> $4)
       AND (cardinality($5::text[]) = 0 OR a.agent_version = ANY($5))
       AND (cardinality($6::text[]) = 0 OR a.status = ANY($6))
       AND (cardinality($7::uuid[]) = 0 OR a.id = ANY($7))";

fn bind_target<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    t: &'q Target,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(t.scope)
        .bind(&t.tenants)
        .bind(&t.plans)
        .bind((!t.labels.is_empty()).then_some(Json(&t.labels)))
        .bind(&t.agent_versions)
        .bind(&t.statuses)
        .bind(&t.appliances)
}

/// How many appliances match now.
pub async fn count_matching(conn: &mut PgConnection, t: &Target) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = bind_target(sqlx::query_as(&format!("SELECT count(*) FROM appliances a WHERE {MATCHES}")), t)
        .fetch_one(conn)
        .await?;
    Ok(n)
}

/// Of `ids`, the appliances outside the tenant (for the tenant API's refusal).
pub async fn foreign_appliances(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[ApplianceId],
) -> Result<Vec<ApplianceId>, sqlx::Error> {
    // Runs on the tenant's transaction: other tenants' rows are invisible, so an id not seen
    // is foreign (or does not exist, which the tenant cannot tell apart).
    sqlx::query_scalar(
        "SELECT x FROM unnest($2::uuid[]) x WHERE NOT EXISTS (SELECT 1 FROM appliances a WHERE a.id = x AND a.tenant_id = $1)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Resolves the target into executions (in a stable shuffled order: waves spread over
/// tenants, not the oldest appliances first); returns how many matched.
pub async fn resolve(conn: &mut PgConnection, id: RolloutId, t: &Target) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = bind_target(
        sqlx::query_as(&format!(
            "WITH ins AS (
                 INSERT INTO rollout_executions (rollout_id, appliance_id, tenant_id, ordinal, wave)
                 SELECT $8, a.id, a.tenant_id, row_number() OVER (ORDER BY md5($8::text || a.id::text)), 0
                 FROM appliances a WHERE {MATCHES}
                 ON CONFLICT DO NOTHING RETURNING 1
             ) SELECT count(*) FROM ins"
        )),
        t,
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Assigns each execution its wave from the cumulative `sizes` and stores them.
pub async fn assign_waves(conn: &mut PgConnection, id: RolloutId, sizes: &[i32]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rollout_executions e
         SET wave = (SELECT min(i) - 1 FROM unnest($2::int4[]) WITH ORDINALITY AS s(n, i) WHERE e.ordinal <= s.n)
         WHERE e.rollout_id = $1",
    )
    .bind(id)
    .bind(sizes)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE rollouts SET wave_sizes = $2, started_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(sizes)
        .execute(conn)
        .await?;
    Ok(())
}

/// A dynamic rollout takes appliances that match now and were not targeted yet, into wave
/// `wave` (the open one); returns how many joined.
pub async fn join(conn: &mut PgConnection, id: RolloutId, t: &Target, wave: i32) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = bind_target(
        sqlx::query_as(&format!(
            "WITH base AS (SELECT COALESCE(max(ordinal), 0) AS o FROM rollout_executions WHERE rollout_id = $8),
             ins AS (
                 INSERT INTO rollout_executions (rollout_id, appliance_id, tenant_id, ordinal, wave)
                 SELECT $8, a.id, a.tenant_id, (SELECT o FROM base) + row_number() OVER (ORDER BY a.id), $9
                 FROM appliances a
                 WHERE {MATCHES}
                   AND NOT EXISTS (SELECT 1 FROM rollout_executions e WHERE e.rollout_id = $8 AND e.appliance_id = a.id)
                 ON CONFLICT DO NOTHING RETURNING 1
             ) SELECT count(*) FROM ins"
        )),
        t,
    )
    .bind(id)
    .bind(wave)
    .fetch_one(&mut *conn)
    .await?;
    if n > 0 {
        // The joiners belong to the open wave: it and every later one grow by them.
        sqlx::query(
            "UPDATE rollouts SET wave_sizes = (
                 SELECT array_agg(CASE WHEN i - 1 >= $2 THEN s + $3 ELSE s END ORDER BY i)
                 FROM unnest(wave_sizes) WITH ORDINALITY AS w(s, i)), updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(wave)
        .bind(n as i32)
        .execute(conn)
        .await?;
    }
    Ok(n)
}

/// Cancels the executions not started on appliances revoked since (they will never run it).
pub async fn cancel_revoked(conn: &mut PgConnection, id: RolloutId) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE rollout_executions e SET state = 'cancelled', message = 'the appliance was revoked', finished_at = now()
         FROM appliances a
         WHERE e.rollout_id = $1 AND e.state = 'pending' AND a.id = e.appliance_id AND a.revoked_at IS NOT NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Ends the in-progress executions of a task rollout whose task finished: retried (back to
/// `pending` after a backoff) while attempts remain for a failure or a timeout, otherwise
/// the task's final state. Returns how many changed.
pub async fn sync_tasks(
    conn: &mut PgConnection,
    id: RolloutId,
    max_attempts: i32,
    backoff_s: f64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE rollout_executions e
         SET state = CASE WHEN t.status IN ('failed', 'timed_out') AND e.attempts < $2 THEN 'pending' ELSE
                       CASE t.status WHEN 'cancelled' THEN 'cancelled' ELSE t.status END END,
             not_before = CASE WHEN t.status IN ('failed', 'timed_out') AND e.attempts < $2
                          THEN now() + make_interval(secs => least($3 * power(2, e.attempts - 1), 86400)) END,
             message = t.message,
             finished_at = CASE WHEN t.status IN ('failed', 'timed_out') AND e.attempts < $2 THEN NULL ELSE now() END
         FROM tasks t
         WHERE e.rollout_id = $1 AND e.state = 'in_progress' AND t.id = e.task_id
           AND t.status IN ('succeeded', 'failed', 'timed_out', 'rejected', 'cancelled')",
    )
    .bind(id)
    .bind(max_attempts)
    .bind(backoff_s)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// [`sync_tasks`] for a configuration rollout: an execution is over once the appliance
/// reported an apply of its version or later (succeeded if that version is applied), or
/// when its timeout passed without one.
pub async fn sync_configs(
    conn: &mut PgConnection,
    id: RolloutId,
    max_attempts: i32,
    backoff_s: f64,
    timeout_s: f64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "WITH outcome AS (
             SELECT e.appliance_id,
                    CASE WHEN c.applied_version >= e.config_version THEN 'succeeded'
                         WHEN c.last_apply_version >= e.config_version THEN 'failed'
                         WHEN e.started_at + make_interval(secs => $4) < now() THEN 'timed_out' END AS state,
                    CASE WHEN c.applied_version >= e.config_version THEN 'applied version ' || c.applied_version
                         WHEN c.last_apply_version >= e.config_version THEN c.last_apply_message
                         ELSE 'the appliance did not apply the configuration within the execution timeout' END AS message
             FROM rollout_executions e JOIN appliance_config c ON c.appliance_id = e.appliance_id
             WHERE e.rollout_id = $1 AND e.state = 'in_progress'
         )
         UPDATE rollout_executions e
         SET state = CASE WHEN o.state IN ('failed', 'timed_out') AND e.attempts < $2 THEN 'pending' ELSE o.state END,
             not_before = CASE WHEN o.state IN ('failed', 'timed_out') AND e.attempts < $2
                          THEN now() + make_interval(secs => least($3 * power(2, e.attempts - 1), 86400)) END,
             message = o.message,
             finished_at = CASE WHEN o.state IN ('failed', 'timed_out') AND e.attempts < $2 THEN NULL ELSE now() END
         FROM outcome o
         WHERE e.rollout_id = $1 AND e.appliance_id = o.appliance_id AND o.state IS NOT NULL",
    )
    .bind(id)
    .bind(max_attempts)
    .bind(backoff_s)
    .bind(timeout_s)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Executions per wave and state, with how many pending ones wait for their appliance to
/// come online.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Count {
    pub wave: i32,
    pub state: ExecutionState,
    pub n: i64,
    pub offline: i64,
}

pub async fn counts(conn: &mut PgConnection, id: RolloutId) -> Result<Vec<Count>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.wave, e.state, count(*) AS n,
                count(*) FILTER (WHERE e.state = 'pending' AND a.status <> 'online') AS offline
         FROM rollout_executions e JOIN appliances a ON a.id = e.appliance_id
         WHERE e.rollout_id = $1 GROUP BY e.wave, e.state ORDER BY e.wave",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Executions started within the last minute and within the last `recent_ms` (the rate
/// limit's windows: read from the rows, so every replica's starts count). `recent_ms` is
/// shorter than the round interval (see `advance`): rounds are one interval apart, so a
/// window of exactly one interval would count the previous round's starts or not by
/// sub-millisecond jitter.
pub async fn started_recently(
    conn: &mut PgConnection,
    id: RolloutId,
    recent_ms: f64,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE started_at > now() - make_interval(secs => $2 / 1000.0))
         FROM rollout_executions
         WHERE rollout_id = $1 AND started_at > now() - interval '1 minute'",
    )
    .bind(id)
    .bind(recent_ms)
    .fetch_one(conn)
    .await
}

/// Up to `limit` pending executions that may start now: in an open wave, past any retry
/// wait, the appliance online (not revoked, tenant active) and inside the window.
pub async fn startable(
    conn: &mut PgConnection,
    id: RolloutId,
    waves_open: i32,
    window: Option<(i32, i32)>,
    limit: i64,
) -> Result<Vec<(ApplianceId, TenantId)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.appliance_id, e.tenant_id
         FROM rollout_executions e JOIN appliances a ON a.id = e.appliance_id
         WHERE e.rollout_id = $1 AND e.state = 'pending' AND e.wave < $2
           AND (e.not_before IS NULL OR e.not_before <= now())
           AND a.status = 'online' AND a.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = e.tenant_id AND tn.status = 'active')
           AND ($3::int IS NULL OR (
                 WITH h AS (SELECT extract(hour FROM (now() AT TIME ZONE 'UTC')
                                   + make_interval(secs => COALESCE((a.metrics->>'utc_offset_s')::int, 0)))::int AS hour)
                 SELECT CASE WHEN $3 < $4 THEN h.hour >= $3 AND h.hour < $4 ELSE h.hour >= $3 OR h.hour < $4 END FROM h))
         ORDER BY e.wave, e.ordinal
         LIMIT $5",
    )
    .bind(id)
    .bind(waves_open)
    .bind(window.map(|w| w.0))
    .bind(window.map(|w| w.1))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Starts executions of a task rollout: one task each (tagged with the rollout, deadline
/// the execution timeout), the executions `in_progress` with their task. Returns how many.
pub async fn start_tasks(
    conn: &mut PgConnection,
    id: RolloutId,
    appliances: &[ApplianceId],
    action: &str,
    params: &Value,
    timeout_s: f64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "WITH picked AS (
             SELECT e.appliance_id, e.tenant_id, gen_random_uuid() AS task_id
             FROM rollout_executions e
             WHERE e.rollout_id = $1 AND e.appliance_id = ANY($2) AND e.state = 'pending'
         ),
         tasks_in AS (
             INSERT INTO tasks (id, tenant_id, appliance_id, action, params, deadline, rollout_id)
             SELECT task_id, tenant_id, appliance_id, $3, $4, now() + make_interval(secs => $5), $1 FROM picked
         )
         UPDATE rollout_executions e
         SET state = 'in_progress', task_id = p.task_id, attempts = e.attempts + 1, started_at = now(),
             not_before = NULL, message = NULL, finished_at = NULL
         FROM picked p WHERE e.rollout_id = $1 AND e.appliance_id = p.appliance_id",
    )
    .bind(id)
    .bind(appliances)
    .bind(action)
    .bind(params)
    .bind(timeout_s)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// The configuration rows of appliances a configuration rollout starts on (created if the
/// appliance has none yet), locked: `(appliance, current overlay)`.
pub async fn lock_overlays(
    conn: &mut PgConnection,
    appliances: &[(ApplianceId, TenantId)],
) -> Result<Vec<(ApplianceId, Value)>, sqlx::Error> {
    let ids: Vec<_> = appliances.iter().map(|a| a.0).collect();
    let tenants: Vec<_> = appliances.iter().map(|a| a.1).collect();
    sqlx::query(
        "INSERT INTO appliance_config (appliance_id, tenant_id)
         SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT (appliance_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&tenants)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "SELECT appliance_id, rollout_overlay FROM appliance_config WHERE appliance_id = ANY($1)
         ORDER BY appliance_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await
}

/// Stores new overlays (a new desired version each, so the dispatcher sends them) and
/// starts those executions with the version to wait for. Returns how many.
pub async fn start_configs(
    conn: &mut PgConnection,
    id: RolloutId,
    overlays: &[(ApplianceId, Value)],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<_> = overlays.iter().map(|o| o.0).collect();
    let docs: Vec<_> = overlays.iter().map(|o| o.1.clone()).collect();
    let r = sqlx::query(
        "WITH bumped AS (
             UPDATE appliance_config c SET rollout_overlay = n.overlay, desired_version = c.desired_version + 1,
                    updated_at = now()
             FROM unnest($2::uuid[], $3::jsonb[]) AS n(appliance_id, overlay)
             WHERE c.appliance_id = n.appliance_id
             RETURNING c.appliance_id, c.desired_version
         )
         UPDATE rollout_executions e
         SET state = 'in_progress', config_version = b.desired_version, attempts = e.attempts + 1,
             started_at = now(), not_before = NULL, message = NULL, finished_at = NULL
         FROM bumped b WHERE e.rollout_id = $1 AND e.appliance_id = b.appliance_id AND e.state = 'pending'",
    )
    .bind(id)
    .bind(&ids)
    .bind(&docs)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Stops what has not reached an appliance: pending executions, and the rollout's tasks not
/// yet sent (their executions too), become `cancelled`. Returns how many executions.
pub async fn cancel_unstarted(conn: &mut PgConnection, id: RolloutId, why: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "WITH cancelled_tasks AS (
             UPDATE tasks SET status = 'cancelled', finished_at = now(), message = $2
             WHERE rollout_id = $1 AND status = 'queued'
             RETURNING id
         )
         UPDATE rollout_executions SET state = 'cancelled', message = $2, finished_at = now()
         WHERE rollout_id = $1 AND (state = 'pending'
             OR (state = 'in_progress' AND task_id IN (SELECT id FROM cancelled_tasks)))",
    )
    .bind(id)
    .bind(why)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Active rollouts due for a look (started, or whose start time has come; paused ones too,
/// whose finished executions are still counted), oldest first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<RolloutId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM rollouts
         WHERE state IN ('scheduled', 'running', 'paused', 'waiting_for_approval') AND start_at <= now()
         ORDER BY start_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Locks one active rollout for this replica; `None` if another replica holds it or it is
/// no longer active.
pub async fn lock_active(conn: &mut PgConnection, id: RolloutId) -> Result<Option<Rollout>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rollouts
         WHERE id = $1 AND state IN ('scheduled', 'running', 'paused', 'waiting_for_approval')
         FOR UPDATE SKIP LOCKED"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One appliance's execution, as the API lists them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Execution {
    pub appliance_id: ApplianceId,
    pub tenant_id: TenantId,
    pub wave: i32,
    pub state: ExecutionState,
    pub attempts: i32,
    /// The current attempt's task (task rollouts).
    pub task_id: Option<TaskId>,
    /// The desired version it waits for (configuration rollouts).
    pub config_version: Option<i64>,
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Whether the appliance is online now (a pending execution of an offline one waits).
    pub online: bool,
    /// An agent update's last step so far: `received`, `downloaded`, `switched`, then
    /// `committed` or `rolled_back` (the message says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_step: Option<String>,
}

/// One page of a rollout's executions in wave order, after the `after` appliance.
pub async fn executions(
    conn: &mut PgConnection,
    id: RolloutId,
    state: Option<ExecutionState>,
    after: Option<i32>,
    limit: i64,
) -> Result<Vec<(i32, Execution)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        ordinal: i32,
        #[sqlx(flatten)]
        e: Execution,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.ordinal, e.appliance_id, e.tenant_id, e.wave, e.state, e.attempts, e.task_id, e.config_version,
                e.message, e.not_before, e.started_at, e.finished_at, a.status = 'online' AS online,
                (SELECT te.kind FROM task_events te JOIN tasks t ON t.id = te.task_id
                 WHERE te.task_id = e.task_id AND t.action = 'agent.update'
                   AND te.kind IN ('received', 'downloaded', 'switched', 'committed', 'rolled_back')
                 ORDER BY te.seq DESC LIMIT 1) AS update_step
         FROM rollout_executions e JOIN appliances a ON a.id = e.appliance_id
         WHERE e.rollout_id = $1 AND ($2::text IS NULL OR e.state = $2) AND ($3::int IS NULL OR e.ordinal > $3)
         ORDER BY e.ordinal LIMIT $4",
    )
    .bind(id)
    .bind(state)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.ordinal, r.e)).collect())
}
