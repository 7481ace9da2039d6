//! Webhook endpoints and their deliveries. A tenant's endpoints are read and changed in its
//! tenant transaction; fleet-wide endpoints (tenant NULL) by operators. Deliveries are
//! queued by the sequencer ([`super::events::sequence`]), claimed by each replica's
//! deliverer with `FOR UPDATE SKIP LOCKED` and a lease, and completed one by one.

use hearth_protocol::{ApplianceId, TenantId};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

pub use super::Scope;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant_id: Option<TenantId>,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_until: Option<OffsetDateTime>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<OffsetDateTime>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const ENDPOINT: &str =
    "id, tenant_id, url, description, event_types, secret_enc, previous_secret_enc, previous_until, \
                        enabled, disabled_reason, disabled_at, created_by, created_at, updated_at";

#[derive(Debug)]
pub struct NewEndpoint<'a> {
    pub id: Uuid,
    pub tenant: Option<TenantId>,
    pub url: &'a str,
    pub description: &'a str,
    pub event_types: &'a [String],
    pub secret_enc: &'a str,
    pub created_by: &'a str,
}

pub async fn insert(conn: &mut PgConnection, e: &NewEndpoint<'_>) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, secret_enc, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT}"
    ))
    .bind(e.id)
    .bind(e.tenant)
    .bind(e.url)
    .bind(e.description)
    .bind(e.event_types)
    .bind(e.secret_enc)
    .bind(e.created_by)
    .fetch_one(conn)
    .await
}

/// How many endpoints the tenant has (its plan bounds it).
pub async fn count(conn: &mut PgConnection, tenant: TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1").bind(tenant).fetch_one(conn).await
}

/// One endpoint in scope (a tenant's own; for operators, any), locked when `for_update`.
pub async fn get(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    for_update: bool,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2){lock}"
    ))
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(conn)
    .await
}

/// The endpoints in scope, oldest first. `fleet_only`: operators' fleet-wide ones only.
pub async fn list(conn: &mut PgConnection, scope: Scope, fleet_only: bool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND (NOT $2 OR tenant_id IS NULL)
         ORDER BY created_at, id"
    ))
    .bind(scope.tenant())
    .bind(fleet_only)
    .fetch_all(conn)
    .await
}

/// Stores an endpoint's changed fields (the caller validated them).
pub async fn save(conn: &mut PgConnection, e: &Endpoint) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, secret_enc = $5,
             previous_secret_enc = $6, previous_until = $7, enabled = $8, disabled_reason = $9, disabled_at = $10,
             updated_at = now()
         WHERE id = $1 RETURNING {ENDPOINT}"
    ))
    .bind(e.id)
    .bind(&e.url)
    .bind(&e.description)
    .bind(&e.event_types)
    .bind(&e.secret_enc)
    .bind(&e.previous_secret_enc)
    .bind(e.previous_until)
    .bind(e.enabled)
    .bind(&e.disabled_reason)
    .bind(e.disabled_at)
    .fetch_one(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(scope.tenant())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Disables an enabled endpoint with a reason; `false` if it was disabled already.
pub async fn disable(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
         WHERE id = $1 AND enabled RETURNING {ENDPOINT}"
    ))
    .bind(id)
    .bind(reason)
    .fetch_optional(conn)
    .await
}

/// One line of an endpoint's delivery log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub position: i64,
    pub state: String,
    pub attempts: i32,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// The endpoint's deliveries, newest first, before `before` (a delivery id).
pub async fn deliveries(
    conn: &mut PgConnection,
    endpoint: Uuid,
    state: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, e.id AS event_id, e.type AS event_type, d.position, d.state, d.attempts, d.last_attempt_at,
                d.last_status, d.last_latency_ms, d.last_error,
                CASE WHEN d.state = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
                d.delivered_at, d.created_at
         FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.state = $2) AND ($3::int8 IS NULL OR d.id < $3)
         ORDER BY d.id DESC LIMIT $4",
    )
    .bind(endpoint)
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Queues one delivery again, at once, whatever its state; `false` if the endpoint has no
/// such delivery.
pub async fn replay(conn: &mut PgConnection, endpoint: Uuid, delivery: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL
         WHERE id = $1 AND endpoint_id = $2",
    )
    .bind(delivery)
    .bind(endpoint)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub endpoint_id: Uuid,
    pub attempts: i32,
    pub url: String,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_until: Option<OffsetDateTime>,
    pub event_id: Uuid,
    pub position: i64,
    pub event_type: String,
    pub version: i32,
    pub event_tenant: Option<TenantId>,
    pub appliance_id: Option<ApplianceId>,
    pub data: Value,
    pub at: OffsetDateTime,
}

/// Claims up to `limit` due deliveries for one attempt each: at most `per_endpoint` per
/// endpoint less what this replica has in flight for it (`busy`), the oldest first, only
/// the oldest pending one of each appliance per endpoint (order), only of enabled
/// endpoints. Each is leased for `lease` so no other replica takes it meanwhile.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    per_endpoint: i32,
    busy: &[(Uuid, i32)],
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let busy_ids: Vec<Uuid> = busy.iter().map(|(e, _)| *e).collect();
    let busy_n: Vec<i32> = busy.iter().map(|(_, n)| *n).collect();
    sqlx::query_as(
        "WITH cand AS (
             SELECT d.id FROM webhook_endpoints ep
             LEFT JOIN UNNEST($3::uuid[], $4::int4[]) AS b(endpoint_id, n) ON b.endpoint_id = ep.id
             CROSS JOIN LATERAL (
                 SELECT d.id FROM webhook_deliveries d
                 WHERE d.endpoint_id = ep.id AND d.state = 'pending' AND d.next_attempt_at <= now()
                   AND (d.lease_until IS NULL OR d.lease_until < now())
                   AND NOT EXISTS (
                       SELECT 1 FROM webhook_deliveries p
                       WHERE p.endpoint_id = d.endpoint_id AND p.order_key = d.order_key
                         AND p.state = 'pending' AND p.position < d.position)
                 ORDER BY d.next_attempt_at, d.position
                 LIMIT GREATEST($2 - COALESCE(b.n, 0), 0)
             ) d
             WHERE ep.enabled
             LIMIT $1
         ),
         locked AS (
             -- By primary key: never a scan of every pending delivery.
             SELECT d.id FROM webhook_deliveries d
             WHERE d.id = ANY (ARRAY(SELECT id FROM cand))
               AND d.state = 'pending' AND (d.lease_until IS NULL OR d.lease_until < now())
             FOR UPDATE OF d SKIP LOCKED
         ),
         leased AS (
             UPDATE webhook_deliveries d SET lease_until = now() + make_interval(secs => $5),
                 attempts = d.attempts + 1, last_attempt_at = now()
             FROM locked WHERE d.id = locked.id
             RETURNING d.id, d.endpoint_id, d.attempts, d.event_seq
         )
         SELECT l.id, l.endpoint_id, l.attempts, ep.url, ep.secret_enc, ep.previous_secret_enc, ep.previous_until,
                e.id AS event_id, e.position, e.type AS event_type, e.version, e.tenant_id AS event_tenant,
                e.appliance_id, e.data, e.at
         FROM leased l JOIN webhook_endpoints ep ON ep.id = l.endpoint_id JOIN events e ON e.seq = l.event_seq
         ORDER BY e.position",
    )
    // Planned with its parameters each time (an unnamed statement): a generic plan cannot
    // see the per-endpoint LIMIT nor how many deliveries are due after a storm.
    .persistent(false)
    .bind(limit)
    .bind(per_endpoint)
    .bind(busy_ids)
    .bind(busy_n)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub status: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

/// Marks a delivery delivered.
pub async fn delivered(pool: &PgPool, id: i64, r: &AttemptResult) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), lease_until = NULL,
             last_status = $2, last_latency_ms = $3, last_error = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(r.status)
    .bind(r.latency_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Schedules the next attempt of a delivery after `after`.
pub async fn retry(pool: &PgPool, id: i64, r: &AttemptResult, after: std::time::Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $4), lease_until = NULL,
             last_status = $2, last_latency_ms = $3, last_error = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(r.status)
    .bind(r.latency_ms)
    .bind(after.as_secs_f64())
    .bind(&r.error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a delivery failed for good (in the caller's transaction, which disables its
/// endpoint).
pub async fn failed(conn: &mut PgConnection, id: i64, r: &AttemptResult) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', lease_until = NULL,
             last_status = $2, last_latency_ms = $3, last_error = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(r.status)
    .bind(r.latency_ms)
    .bind(&r.error)
    .execute(conn)
    .await?;
    Ok(())
}
