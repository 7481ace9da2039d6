//! The event log (`events`, the outbox), the sequencer that gives committed events their
//! position and queues their webhook deliveries, the alert sweeps and the alert rules.
//! Most events are written by the triggers of `0013_events.sql`; [`record`] writes the
//! ones that have no table of their own.

use hearth_protocol::{ApplianceId, TenantId};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// The advisory lock that lets one sequencer run at a time across replicas.
const SEQUENCER_LOCK: i64 = 0x6865_6172_7468_0001;

/// An event to write with [`record`].
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub tenant: Option<TenantId>,
    pub appliance: Option<ApplianceId>,
    pub data: Value,
}

/// Writes one event in the caller's transaction.
pub async fn record(conn: &mut PgConnection, e: &NewEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (type, tenant_id, appliance_id, data) VALUES ($1, $2, $3, $4)")
        .bind(e.kind)
        .bind(e.tenant)
        .bind(e.appliance)
        .bind(&e.data)
        .execute(conn)
        .await?;
    Ok(())
}

/// Numbers up to `limit` committed events that have no position yet, in insertion order,
/// and queues their deliveries to the enabled endpoints that want them, in one
/// transaction. Only one replica sequences at a time (an advisory lock; the others return
/// 0 at once), so positions become visible in increasing order. Returns how many events
/// were numbered.
pub async fn sequence(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(SEQUENCER_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(0);
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "WITH next AS (
             SELECT seq FROM events WHERE position IS NULL ORDER BY seq LIMIT $1 FOR UPDATE
         ),
         numbered AS (
             SELECT seq, nextval('event_position') AS pos FROM (SELECT seq FROM next ORDER BY seq) o
         )
         UPDATE events e SET position = n.pos FROM numbered n WHERE e.seq = n.seq
         RETURNING e.seq",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if seqs.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_seq, tenant_id, order_key, position)
         SELECT ep.id, e.seq, ep.tenant_id, e.appliance_id, e.position
         FROM events e
         JOIN webhook_endpoints ep ON ep.enabled
             AND (ep.tenant_id IS NULL OR ep.tenant_id = e.tenant_id)
             AND ('*' = ANY (ep.event_types) OR e.type = ANY (ep.event_types)
                  OR split_part(e.type, '.', 1) || '.*' = ANY (ep.event_types))
         WHERE e.seq = ANY ($1)
         ORDER BY e.position
         ON CONFLICT (endpoint_id, event_seq) DO NOTHING",
    )
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seqs.len() as u64)
}

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub position: i64,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub version: i32,
    pub tenant_id: Option<TenantId>,
    pub appliance_id: Option<ApplianceId>,
    pub data: Value,
    pub at: OffsetDateTime,
}

/// What a reader asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events after this position.
    pub after: i64,
    /// One type (`task.failed`) or a category (`task.*`).
    pub kind: Option<String>,
    pub appliance: Option<ApplianceId>,
    /// A tenant's events (a tenant reader always sets its own).
    pub tenant: Option<TenantId>,
}

/// Events past `f.after` in position order, at most `limit`.
pub async fn list(conn: &mut PgConnection, f: &Filter, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    let (exact, prefix) = match f.kind.as_deref() {
        Some(k) => match k.strip_suffix(".*") {
            Some(category) => (None, Some(format!("{category}."))),
            None => (Some(k.to_string()), None),
        },
        None => (None, None),
    };
    sqlx::query_as(
        "SELECT id, position, type, version, tenant_id, appliance_id, data, at FROM events
         WHERE position > $1
           AND ($2::text IS NULL OR type = $2)
           AND ($3::text IS NULL OR starts_with(type, $3))
           AND ($4::uuid IS NULL OR appliance_id = $4)
           AND ($5::uuid IS NULL OR tenant_id = $5)
         ORDER BY position LIMIT $6",
    )
    .bind(f.after)
    .bind(exact)
    .bind(prefix)
    .bind(f.appliance)
    .bind(f.tenant)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Deletes events older than `days` (their deliveries go with them); returns how many.
pub async fn purge(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM events WHERE at < now() - make_interval(days => $1)")
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// Writes `quota.exhausted` unless the same tenant and quota was told within the hour.
/// Returns whether it was written.
pub async fn quota_exhausted(pool: &PgPool, tenant: TenantId, quota: &str, data: &Value) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "WITH told AS (
             INSERT INTO quota_notices (tenant_id, quota) VALUES ($1, $2)
             ON CONFLICT (tenant_id, quota) DO UPDATE SET last_at = now()
                 WHERE quota_notices.last_at < now() - interval '1 hour'
             RETURNING 1
         )
         INSERT INTO events (type, tenant_id, data) SELECT 'quota.exhausted', $1, $3 FROM told",
    )
    .bind(tenant)
    .bind(quota)
    .bind(data)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// A tenant's alert rules as stored (`None`: the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredRules {
    pub offline_minutes: i32,
    pub drift_minutes: i32,
    pub task_failed: bool,
}

pub async fn rules(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<StoredRules>, sqlx::Error> {
    sqlx::query_as("SELECT offline_minutes, drift_minutes, task_failed FROM alert_rules WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await
}

pub async fn set_rules(conn: &mut PgConnection, tenant: TenantId, r: StoredRules) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_rules (tenant_id, offline_minutes, drift_minutes, task_failed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET offline_minutes = $2, drift_minutes = $3, task_failed = $4,
             updated_at = now()",
    )
    .bind(tenant)
    .bind(r.offline_minutes)
    .bind(r.drift_minutes)
    .bind(r.task_failed)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one alert sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub raised: u64,
    pub resolved: u64,
}

/// One pass of the alert rules, idempotent and safe from every replica at once (an alert
/// is a row of `alerts`, inserted once): raises `alert.appliance_offline` for appliances
/// offline longer than their tenant's `offline_minutes`, `alert.config_drift` for online
/// appliances whose configuration has not converged for `drift_minutes`,
/// `certificate.expiring` for certificates ending within `expiring_within`; resolves the
/// alerts whose cause went away with `alert.resolved`.
pub async fn sweep_alerts(
    pool: &PgPool,
    default_offline_minutes: i32,
    default_drift_minutes: i32,
    expiring_within: time::Duration,
) -> Result<Swept, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let offline = sqlx::query(
        "WITH cand AS (
             SELECT a.id, a.tenant_id, a.name, a.status_since FROM appliances a
             JOIN tenants t ON t.id = a.tenant_id AND t.status = 'active'
             LEFT JOIN alert_rules r ON r.tenant_id = a.tenant_id
             WHERE a.status = 'offline' AND a.revoked_at IS NULL
               AND a.status_since < now() - make_interval(mins => COALESCE(r.offline_minutes, $1))
         ),
         opened AS (
             INSERT INTO alerts (appliance_id, kind, tenant_id)
             SELECT id, 'appliance_offline', tenant_id FROM cand
             ON CONFLICT (appliance_id, kind) DO NOTHING
             RETURNING appliance_id
         )
         INSERT INTO events (type, tenant_id, appliance_id, data)
         SELECT 'alert.appliance_offline', c.tenant_id, c.id,
                jsonb_build_object('appliance_id', c.id, 'name', c.name, 'since', c.status_since)
         FROM cand c JOIN opened o ON o.appliance_id = c.id",
    )
    .bind(default_offline_minutes)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let drift = sqlx::query(
        "WITH cand AS (
             SELECT c.appliance_id, c.tenant_id, a.name, c.drift_since, c.desired_version, c.applied_version,
                    c.last_apply_outcome, c.last_apply_message
             FROM appliance_config c
             JOIN appliances a ON a.id = c.appliance_id
             JOIN tenants t ON t.id = c.tenant_id AND t.status = 'active'
             LEFT JOIN alert_rules r ON r.tenant_id = c.tenant_id
             WHERE c.drift_since < now() - make_interval(mins => COALESCE(r.drift_minutes, $1))
               AND a.status = 'online' AND a.revoked_at IS NULL
         ),
         opened AS (
             INSERT INTO alerts (appliance_id, kind, tenant_id)
             SELECT appliance_id, 'config_drift', tenant_id FROM cand
             ON CONFLICT (appliance_id, kind) DO NOTHING
             RETURNING appliance_id
         )
         INSERT INTO events (type, tenant_id, appliance_id, data)
         SELECT 'alert.config_drift', c.tenant_id, c.appliance_id,
                jsonb_build_object('appliance_id', c.appliance_id, 'name', c.name, 'since', c.drift_since,
                                   'desired_version', c.desired_version, 'applied_version', c.applied_version,
                                   'last_outcome', c.last_apply_outcome, 'message', c.last_apply_message)
         FROM cand c JOIN opened o ON o.appliance_id = c.appliance_id",
    )
    .bind(default_drift_minutes)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let expiring = sqlx::query(
        "WITH cand AS (
             SELECT a.id, a.tenant_id, a.name, a.cert_serial, a.cert_not_after FROM appliances a
             WHERE a.revoked_at IS NULL AND a.cert_serial IS NOT NULL
               AND a.cert_not_after < now() + make_interval(secs => $1)
         ),
         opened AS (
             INSERT INTO alerts (appliance_id, kind, tenant_id, subject)
             SELECT id, 'certificate_expiring', tenant_id, cert_serial FROM cand
             ON CONFLICT (appliance_id, kind) DO NOTHING
             RETURNING appliance_id
         )
         INSERT INTO events (type, tenant_id, appliance_id, data)
         SELECT 'certificate.expiring', c.tenant_id, c.id,
                jsonb_build_object('appliance_id', c.id, 'name', c.name, 'serial', c.cert_serial,
                                   'not_after', c.cert_not_after)
         FROM cand c JOIN opened o ON o.appliance_id = c.id",
    )
    .bind(expiring_within.as_seconds_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // An offline alert is resolved once the appliance is back (or revoked); a drift alert
    // once the configuration converged; an expiry warning once the certificate changed.
    // Resolving never raises: an appliance that goes off again gets a new alert only after
    // another full `offline_minutes`.
    let resolved = sqlx::query(
        "WITH gone AS (
             DELETE FROM alerts al USING appliances a
             WHERE al.appliance_id = a.id AND al.kind <> 'certificate_expiring' AND (
                 (al.kind = 'appliance_offline' AND (a.status = 'online' OR a.revoked_at IS NOT NULL))
                 OR (al.kind = 'config_drift' AND (a.revoked_at IS NOT NULL OR NOT EXISTS (
                     SELECT 1 FROM appliance_config c WHERE c.appliance_id = a.id AND c.drift_since IS NOT NULL)))
             )
             RETURNING al.appliance_id, al.tenant_id, al.kind, al.opened_at, a.name
         )
         INSERT INTO events (type, tenant_id, appliance_id, data)
         SELECT 'alert.resolved', tenant_id, appliance_id,
                jsonb_build_object('appliance_id', appliance_id, 'name', name, 'alert', 'alert.' || kind,
                                   'opened_at', opened_at)
         FROM gone",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // A renewed (or revoked) certificate's warning is closed quietly: certificate.renewed
    // already told.
    sqlx::query(
        "DELETE FROM alerts al USING appliances a
         WHERE al.appliance_id = a.id AND al.kind = 'certificate_expiring'
           AND (a.cert_serial IS DISTINCT FROM al.subject OR a.revoked_at IS NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Swept { raised: offline + drift + expiring, resolved })
}
