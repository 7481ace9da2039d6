//! Appliances: identity (name, tenant, certificate) and latest state (presence, last
//! heartbeat). Reads for customers go through a tenant transaction ([`super::tenant_tx`]).

use std::collections::BTreeMap;

use hearth_protocol::{ApplianceId, PlanId, TenantId};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::{ApplianceStatus, FleetStatus};

/// An appliance as the tenant API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Appliance {
    pub id: ApplianceId,
    pub name: String,
    pub status: ApplianceStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub status_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub agent_version: Option<String>,
    /// The latest heartbeat's facts (uptime, load, memory, root filesystem, boot, seq).
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<RawJson>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub metrics_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub enrolled_at: Option<OffsetDateTime>,
    /// Set once the appliance is revoked: its certificate no longer works at the broker.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The serial (hex) of its latest certificate (the agent renews it by itself)…
    pub cert_serial: Option<String>,
    /// …and when that certificate expires.
    #[serde(with = "time::serde::rfc3339::option")]
    pub cert_not_after: Option<OffsetDateTime>,
    /// Key=value labels (keys under `fleet/` are set by operators only).
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: Json<Labels>,
}

/// An appliance's labels, by key.
pub type Labels = BTreeMap<String, String>;

/// A JSON document read from a `jsonb` column and answered as it was stored: checked, not
/// built into a tree and written out again (the tenant list carries a hundred of them).
pub type RawJson = Json<Box<serde_json::value::RawValue>>;

const COLUMNS: &str = "id, name, status, status_since, last_seen, agent_version, metrics, metrics_at, created_at, \
                       enrolled_at, revoked_at, cert_serial, cert_not_after, labels";

/// One page of a tenant's appliances in id order (ids are time-ordered: oldest first),
/// starting after `after`.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: Option<ApplianceId>,
    limit: i64,
) -> Result<Vec<Appliance>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM appliances WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: ApplianceId) -> Result<Option<Appliance>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM appliances WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Registers an appliance (not yet enrolled).
pub async fn create(conn: &mut PgConnection, tenant: TenantId, name: &str) -> Result<ApplianceId, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO appliances (id, tenant_id, name) VALUES ($1, $2, $3) RETURNING id")
        .bind(ApplianceId::new())
        .bind(tenant)
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Online appliances across all tenants (the `hearth_appliances_online` gauge).
pub async fn count_online(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM appliances WHERE status = 'online'").fetch_one(pool).await
}

/// An appliance as operators see it: with its tenant.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FleetAppliance {
    pub tenant_id: TenantId,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub appliance: Appliance,
}

/// Filters of the operators' fleet view; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct FleetFilter {
    pub tenant: Option<TenantId>,
    /// Appliances of tenants on this plan.
    pub plan: Option<PlanId>,
    /// A revoked appliance is only `revoked`, whatever its last presence.
    pub status: Option<FleetStatus>,
    pub agent_version: Option<String>,
    pub last_seen_before: Option<OffsetDateTime>,
    pub last_seen_after: Option<OffsetDateTime>,
    /// Appliances carrying every one of these labels (empty: no filter).
    pub labels: Labels,
    pub after: Option<ApplianceId>,
}

/// One page of appliances across tenants, in id order. Runs on the service pool.
pub async fn fleet(pool: &PgPool, f: &FleetFilter, limit: i64) -> Result<Vec<FleetAppliance>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT tenant_id, {COLUMNS} FROM appliances
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR ($2 = 'revoked' AND revoked_at IS NOT NULL)
                OR ($2 <> 'revoked' AND status = $2 AND revoked_at IS NULL))
           AND ($3::text IS NULL OR agent_version = $3)
           AND ($4::timestamptz IS NULL OR last_seen < $4)
           AND ($5::timestamptz IS NULL OR last_seen >= $5)
           AND ($6::uuid IS NULL OR id > $6)
           AND ($8::jsonb IS NULL OR labels @> $8)
           AND ($9::uuid IS NULL OR tenant_id IN (SELECT id FROM tenants WHERE plan_id = $9))
         ORDER BY id LIMIT $7"
    ))
    .bind(f.tenant)
    .bind(f.status)
    .bind(&f.agent_version)
    .bind(f.last_seen_before)
    .bind(f.last_seen_after)
    .bind(f.after)
    .bind(limit)
    .bind((!f.labels.is_empty()).then_some(Json(&f.labels)))
    .bind(f.plan)
    .fetch_all(pool)
    .await
}

/// An appliance's tenant and labels, the row locked for [`set_labels`]; `None` if there is
/// no such appliance (of `tenant`, when given).
pub async fn labels_for_update(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    id: ApplianceId,
) -> Result<Option<(TenantId, Labels)>, sqlx::Error> {
    let row: Option<(TenantId, Json<Labels>)> = sqlx::query_as(
        "SELECT tenant_id, labels FROM appliances WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(t, j)| (t, j.0)))
}

/// Replaces an appliance's labels.
pub async fn set_labels(conn: &mut PgConnection, id: ApplianceId, labels: &Labels) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appliances SET labels = $2 WHERE id = $1").bind(id).bind(Json(labels)).execute(conn).await?;
    Ok(())
}

/// One appliance of any tenant (operators).
pub async fn fleet_get(pool: &PgPool, id: ApplianceId) -> Result<Option<FleetAppliance>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT tenant_id, {COLUMNS} FROM appliances WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Online, offline, never seen and revoked counts for one tenant.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantCounts {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub online: i64,
    pub offline: i64,
    pub never_seen: i64,
    pub revoked: i64,
    /// Not revoked, with a certificate that expires within 7 days (or has expired).
    pub certificates_expiring: i64,
}

/// Counts per tenant, every tenant (with zeros) or only `tenant`, by tenant name.
pub async fn counts_by_tenant(pool: &PgPool, tenant: Option<TenantId>) -> Result<Vec<TenantCounts>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id AS tenant_id, t.name AS tenant_name,
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'online') AS online,
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'offline') AS offline,
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'never_seen') AS never_seen,
                count(a.id) FILTER (WHERE a.revoked_at IS NOT NULL) AS revoked,
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.cert_not_after < now() + interval '7 days')
                    AS certificates_expiring
         FROM tenants t LEFT JOIN appliances a ON a.tenant_id = t.id
         WHERE $1::uuid IS NULL OR t.id = $1
         GROUP BY t.id ORDER BY t.name, t.id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Appliances (not revoked) per agent version, most common first; `version` is `None` for
/// those that never sent a heartbeat.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VersionCount {
    pub version: Option<String>,
    pub appliances: i64,
}

pub async fn counts_by_agent_version(pool: &PgPool) -> Result<Vec<VersionCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT agent_version AS version, count(*) AS appliances FROM appliances WHERE revoked_at IS NULL
         GROUP BY agent_version ORDER BY count(*) DESC, agent_version",
    )
    .fetch_all(pool)
    .await
}

/// An appliance registered and enrolled at once (bulk provisioning for load tests).
#[derive(Debug, Clone)]
pub struct EnrolledRow {
    pub id: ApplianceId,
    pub tenant: TenantId,
    pub name: String,
    pub cert_serial: String,
    pub cert_not_after: OffsetDateTime,
}

/// Inserts `rows` marked enrolled, in one statement; `issuer_sha256` signed every certificate.
pub async fn create_enrolled(pool: &PgPool, rows: &[EnrolledRow], issuer_sha256: &str) -> Result<u64, sqlx::Error> {
    let ids: Vec<_> = rows.iter().map(|r| *r.id.as_uuid()).collect();
    let tenants: Vec<_> = rows.iter().map(|r| *r.tenant.as_uuid()).collect();
    let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
    let serials: Vec<_> = rows.iter().map(|r| r.cert_serial.as_str()).collect();
    let not_after: Vec<_> = rows.iter().map(|r| r.cert_not_after).collect();
    let r = sqlx::query(
        "INSERT INTO appliances (id, tenant_id, name, enrolled_at, cert_serial, cert_not_after, cert_issuer_sha256)
         SELECT id, tenant_id, name, now(), serial, not_after, $6
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
             AS t(id, tenant_id, name, serial, not_after)",
    )
    .bind(ids)
    .bind(tenants)
    .bind(names)
    .bind(serials)
    .bind(not_after)
    .bind(issuer_sha256)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Records the key configuration secrets are sealed to for `appliance` (a SEC1 P-256
/// point), or forgets it (`None`: its secrets take the QoS 0 fallback). The one place that
/// writes it: enrollment today, certificate renewal with a new key later.
pub async fn set_sealing_key(
    conn: &mut PgConnection,
    appliance: ApplianceId,
    key: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appliances SET sealing_key = $2 WHERE id = $1").bind(appliance).bind(key).execute(conn).await?;
    Ok(())
}

/// An appliance as its own certificate-authenticated requests see it (`/agent/v1/…`):
/// what is stored about it, and whether it may still be served.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    pub id: ApplianceId,
    pub status: ApplianceStatus,
    pub agent_version: Option<String>,
    pub last_seen: Option<OffsetDateTime>,
    pub revoked: bool,
    pub tenant_suspended: bool,
    /// The certificate it called with (by serial) is on the revocation list.
    pub certificate_revoked: bool,
}

/// The appliance `id` calling with the certificate whose serial is `serial_hex`; `None` if
/// there is no such appliance (deleted, or never registered). Runs on the service pool,
/// scoped by the id the certificate names.
pub async fn caller(pool: &PgPool, id: ApplianceId, serial_hex: &str) -> Result<Option<Caller>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, a.status, a.agent_version, a.last_seen, a.revoked_at IS NOT NULL AS revoked,
                t.status = 'suspended' AS tenant_suspended,
                EXISTS (SELECT 1 FROM certificate_revocations r WHERE r.serial = $2) AS certificate_revoked
         FROM appliances a JOIN tenants t ON t.id = a.tenant_id
         WHERE a.id = $1",
    )
    .bind(id)
    .bind(serial_hex)
    .fetch_optional(pool)
    .await
}

/// Records every tenant's counts for the current minute (one aggregate query over the
/// appliances; a second call in the same minute changes nothing) and forgets samples older
/// than `keep`. Returns how many tenants were sampled.
pub async fn sample_counts(pool: &PgPool, keep: time::Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "INSERT INTO fleet_samples (at, tenant_id, online, offline, never_seen, revoked)
         SELECT date_trunc('minute', now()), t.id,
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'online'),
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'offline'),
                count(a.id) FILTER (WHERE a.revoked_at IS NULL AND a.status = 'never_seen'),
                count(a.id) FILTER (WHERE a.revoked_at IS NOT NULL)
         FROM tenants t LEFT JOIN appliances a ON a.tenant_id = t.id
         GROUP BY t.id
         ON CONFLICT (tenant_id, at) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM fleet_samples WHERE at < now() - make_interval(secs => $1)")
        .bind(keep.as_seconds_f64())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// The fleet's counts at one sampled minute (summed over tenants, or one tenant's).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TrendPoint {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub online: i64,
    pub offline: i64,
    pub never_seen: i64,
    pub revoked: i64,
}

/// The sampled counts since `since`, oldest first, summed over tenants or for `tenant`.
pub async fn trend(
    pool: &PgPool,
    tenant: Option<TenantId>,
    since: OffsetDateTime,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, sum(online)::int8 AS online, sum(offline)::int8 AS offline,
                sum(never_seen)::int8 AS never_seen, sum(revoked)::int8 AS revoked
         FROM fleet_samples WHERE at >= $1 AND ($2::uuid IS NULL OR tenant_id = $2)
         GROUP BY at ORDER BY at",
    )
    .bind(since)
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// How fresh the newest heartbeat is: seconds since the most recent `last_seen` of an
/// online appliance (`None` when none is online).
pub async fn newest_heartbeat_age(pool: &PgPool) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - max(last_seen))::float8 FROM appliances
         WHERE status = 'online' AND revoked_at IS NULL",
    )
    .fetch_one(pool)
    .await
}
