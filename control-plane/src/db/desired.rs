//! Desired configuration rows: tenant defaults, per-appliance overrides with their desired
//! version, what was last pushed, and what the appliance applied.

use hearth_protocol::{ApplianceId, ConfigApplied, Outcome, TenantId};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// One appliance's configuration state (documents as stored: secrets sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApplianceConfig {
    pub defaults: Value,
    /// The layer fleet rollouts' configuration overlays merged into (between the two).
    pub rollout_overlay: Value,
    pub overrides: Value,
    pub desired_version: i64,
    pub applied_version: Option<i64>,
    pub last_apply_version: Option<i64>,
    pub last_apply_outcome: Option<String>,
    pub last_apply_message: Option<String>,
    pub last_apply_at: Option<OffsetDateTime>,
}

/// The last apply attempt, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastApply {
    pub version: i64,
    pub outcome: String,
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

impl ApplianceConfig {
    pub fn last_apply(&self) -> Option<LastApply> {
        Some(LastApply {
            version: self.last_apply_version?,
            outcome: self.last_apply_outcome.clone()?,
            message: self.last_apply_message.clone(),
            at: self.last_apply_at,
        })
    }
}

pub async fn tenant_defaults(conn: &mut PgConnection, tenant: TenantId) -> Result<Value, sqlx::Error> {
    let v: Option<Value> = sqlx::query_scalar("SELECT defaults FROM tenant_config WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    Ok(v.unwrap_or_else(|| Value::Object(Default::default())))
}

/// The appliance's configuration; `None` if the appliance is not the tenant's. An
/// appliance nobody configured yet has version 0 and empty overrides.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliance: ApplianceId,
) -> Result<Option<ApplianceConfig>, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(tc.defaults, '{}'::jsonb) AS defaults,
                COALESCE(c.rollout_overlay, '{}'::jsonb) AS rollout_overlay,
                COALESCE(c.overrides, '{}'::jsonb) AS overrides,
                COALESCE(c.desired_version, 0) AS desired_version,
                c.applied_version, c.last_apply_version, c.last_apply_outcome, c.last_apply_message, c.last_apply_at
         FROM appliances a
         LEFT JOIN appliance_config c ON c.appliance_id = a.id
         LEFT JOIN tenant_config tc ON tc.tenant_id = a.tenant_id
         WHERE a.tenant_id = $1 AND a.id = $2",
    )
    .bind(tenant)
    .bind(appliance)
    .fetch_optional(conn)
    .await
}

/// Replaces the appliance's overrides and bumps its desired version.
pub async fn set_overrides(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliance: ApplianceId,
    overrides: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO appliance_config (appliance_id, tenant_id, overrides, desired_version)
         VALUES ($2, $1, $3, 1)
         ON CONFLICT (appliance_id) DO UPDATE
         SET overrides = EXCLUDED.overrides, desired_version = appliance_config.desired_version + 1,
             pushed_version = NULL, updated_at = now()
         WHERE appliance_config.tenant_id = $1",
    )
    .bind(tenant)
    .bind(appliance)
    .bind(overrides)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the tenant's defaults and bumps every one of its appliances' desired version.
pub async fn set_defaults(conn: &mut PgConnection, tenant: TenantId, defaults: &Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_config (tenant_id, defaults) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET defaults = EXCLUDED.defaults, updated_at = now()",
    )
    .bind(tenant)
    .bind(defaults)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO appliance_config (appliance_id, tenant_id)
         SELECT id, tenant_id FROM appliances WHERE tenant_id = $1
         ON CONFLICT (appliance_id) DO UPDATE
         SET desired_version = appliance_config.desired_version + 1, pushed_version = NULL, updated_at = now()",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// A document to send down.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub appliance_id: ApplianceId,
    pub tenant_id: TenantId,
    pub desired_version: i64,
    pub defaults: Value,
    pub rollout_overlay: Value,
    pub overrides: Value,
    /// The key its secrets are sealed to (see [`super::appliances::set_sealing_key`]).
    pub sealing_key: Option<Vec<u8>>,
}

/// Locks up to `limit` configurations of online appliances that are due to be sent (never
/// for a revoked appliance or a suspended tenant).
///
/// This runs every second, and most of the time nothing is due, so its cost follows the due
/// configurations and never the fleet, whatever the planner's statistics say. One query
/// joining `appliance_config` to `appliances` let the planner start from the appliances
/// whenever the statistics said few were online (taken before a fleet came online, or
/// before `appliance_config` was ever analyzed): it then walked every online appliance to
/// find none due, 11,300 buffer hits and 5 ms a call at 10,000 online appliances, every
/// second. So, two steps:
/// - the due ids, from the partial index `appliance_config_push_idx` (one buffer when none is
///   due, the common case, which ends here);
/// - those rows locked, each appliance looked up by id in a `LATERAL … OFFSET 0` subquery,
///   which the planner cannot turn into a scan of `appliances`: about two buffers per due
///   row.
///
/// `SKIP LOCKED` never waits, so the order of the locks does not matter, and each
/// configuration sent is marked pushed, so the next round claims the others.
pub async fn claim_pending(conn: &mut PgConnection, limit: i64) -> Result<Vec<Pending>, sqlx::Error> {
    let due: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT appliance_id FROM appliance_config WHERE pushed_version IS NULL OR pushed_version < desired_version",
    )
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT c.appliance_id, c.tenant_id, c.desired_version, COALESCE(tc.defaults, '{}'::jsonb) AS defaults,
                c.rollout_overlay, c.overrides, a.sealing_key
         FROM appliance_config c
         CROSS JOIN LATERAL (
             SELECT a.sealing_key FROM appliances a
             WHERE a.id = c.appliance_id AND a.status = 'online' AND a.revoked_at IS NULL
             OFFSET 0
         ) a
         LEFT JOIN tenant_config tc ON tc.tenant_id = c.tenant_id
         WHERE c.appliance_id = ANY($1) AND (c.pushed_version IS NULL OR c.pushed_version < c.desired_version)
           AND EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = c.tenant_id AND tn.status = 'active')
         LIMIT $2
         FOR UPDATE OF c SKIP LOCKED",
    )
    .bind(due)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mark_pushed(conn: &mut PgConnection, sent: &[(ApplianceId, i64)]) -> Result<(), sqlx::Error> {
    let ids: Vec<_> = sent.iter().map(|(a, _)| *a.as_uuid()).collect();
    let versions: Vec<_> = sent.iter().map(|(_, v)| *v).collect();
    sqlx::query(
        "UPDATE appliance_config c SET pushed_version = s.version, pushed_at = now()
         FROM UNNEST($1::uuid[], $2::int8[]) AS s(id, version) WHERE c.appliance_id = s.id",
    )
    .bind(ids)
    .bind(versions)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks for sending again the versions pushed more than `after` ago that the appliance
/// neither applied nor reported failing (the document or the request that asked for it was
/// lost with a connection); returns how many. An appliance that is offline gets it on its
/// next connection, as it would anyway.
pub async fn repush_unanswered(pool: &PgPool, after: std::time::Duration) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE appliance_config SET pushed_version = NULL
         WHERE pushed_version IS NOT NULL AND last_apply_version IS DISTINCT FROM pushed_version
           AND pushed_version = desired_version
           AND pushed_at < now() - make_interval(secs => $1)",
    )
    .bind(after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Appliances asked for their configuration, saying which version they have applied: the
/// ones behind are sent it again (an appliance of a tenant with defaults but no row yet
/// gets one).
pub async fn requested(conn: &mut PgConnection, requests: &[(ApplianceId, Option<u64>)]) -> Result<(), sqlx::Error> {
    if requests.is_empty() {
        return Ok(());
    }
    let ids: Vec<_> = requests.iter().map(|(a, _)| *a.as_uuid()).collect();
    let applied: Vec<_> = requests.iter().map(|(_, v)| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))).collect();
    sqlx::query(
        "INSERT INTO appliance_config (appliance_id, tenant_id)
         SELECT a.id, a.tenant_id FROM appliances a JOIN tenant_config tc ON tc.tenant_id = a.tenant_id
         WHERE a.id = ANY($1)
         ON CONFLICT (appliance_id) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE appliance_config c SET pushed_version = NULL
         FROM UNNEST($1::uuid[], $2::int8[]) AS r(id, applied)
         WHERE c.appliance_id = r.id AND c.desired_version > r.applied",
    )
    .bind(&ids)
    .bind(applied)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records apply reports: every attempt as `last_apply_*`, successes also as `applied_version`.
pub async fn applied(conn: &mut PgConnection, reports: &[(ApplianceId, ConfigApplied)]) -> Result<(), sqlx::Error> {
    if reports.is_empty() {
        return Ok(());
    }
    let ids: Vec<_> = reports.iter().map(|(a, _)| *a.as_uuid()).collect();
    let versions: Vec<_> = reports.iter().map(|(_, r)| i64::try_from(r.version).unwrap_or(i64::MAX)).collect();
    let ok: Vec<_> = reports.iter().map(|(_, r)| r.outcome == Outcome::Succeeded).collect();
    let outcomes: Vec<_> =
        reports.iter().map(|(_, r)| crate::model::TaskStatus::from_outcome(r.outcome).as_str()).collect();
    let messages: Vec<_> = reports.iter().map(|(_, r)| r.message.clone()).collect();
    let ats: Vec<_> = reports.iter().map(|(_, r)| r.at).collect();
    sqlx::query(
        "UPDATE appliance_config c SET
             applied_version = CASE WHEN r.ok THEN GREATEST(r.version, COALESCE(c.applied_version, 0)) ELSE c.applied_version END,
             last_apply_version = r.version, last_apply_outcome = r.outcome,
             last_apply_message = r.message, last_apply_at = r.at
         FROM UNNEST($1::uuid[], $2::int8[], $3::bool[], $4::text[], $5::text[], $6::timestamptz[])
             AS r(id, version, ok, outcome, message, at)
         WHERE c.appliance_id = r.id",
    )
    .bind(ids)
    .bind(versions)
    .bind(ok)
    .bind(outcomes)
    .bind(messages)
    .bind(ats)
    .execute(conn)
    .await?;
    Ok(())
}
