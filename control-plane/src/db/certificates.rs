//! Every certificate issued to an appliance (`certificate_issues`): at enrollment and at
//! each renewal. The appliance's current certificate is also on its row
//! (`appliances.cert_serial`, `cert_not_after`).

use hearth_protocol::{ApplianceId, RenewalId, TenantId};
use sqlx::PgConnection;
use time::OffsetDateTime;

/// An appliance as a renewal sees it, locked until the transaction ends (two requests of
/// one appliance are decided one after the other).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Holder {
    pub tenant_id: TenantId,
    pub revoked: bool,
    pub tenant_suspended: bool,
}

pub async fn lock_holder(conn: &mut PgConnection, appliance: ApplianceId) -> Result<Option<Holder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.tenant_id, a.revoked_at IS NOT NULL AS revoked, t.status = 'suspended' AS tenant_suspended
         FROM appliances a JOIN tenants t ON t.id = a.tenant_id
         WHERE a.id = $1 FOR UPDATE OF a",
    )
    .bind(appliance)
    .fetch_optional(conn)
    .await
}

/// A certificate issued for one renewal.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Issued {
    pub serial: String,
    pub certificate_pem: String,
    pub not_after: OffsetDateTime,
    pub csr_sha256: Option<Vec<u8>>,
}

/// What was issued for `renewal`, if anything.
pub async fn for_renewal(
    conn: &mut PgConnection,
    appliance: ApplianceId,
    renewal: RenewalId,
) -> Result<Option<Issued>, sqlx::Error> {
    sqlx::query_as(
        "SELECT serial, certificate_pem, not_after, csr_sha256 FROM certificate_issues
         WHERE appliance_id = $1 AND renewal_id = $2",
    )
    .bind(appliance)
    .bind(renewal)
    .fetch_optional(conn)
    .await
}

/// When the appliance's last renewal was issued.
pub async fn last_renewal_at(
    conn: &mut PgConnection,
    appliance: ApplianceId,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT max(issued_at) FROM certificate_issues WHERE appliance_id = $1 AND renewal_id IS NOT NULL",
    )
    .bind(appliance)
    .fetch_one(conn)
    .await
}

/// Whether `serial` is a certificate issued to this appliance.
pub async fn is_own(conn: &mut PgConnection, appliance: ApplianceId, serial: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM certificate_issues WHERE appliance_id = $1 AND serial = $2)
             OR EXISTS (SELECT 1 FROM appliances WHERE id = $1 AND cert_serial = $2)",
    )
    .bind(appliance)
    .bind(serial)
    .fetch_one(conn)
    .await
}

/// Whether a certificate was ever issued to this appliance for this public key.
pub async fn key_was_certified(
    conn: &mut PgConnection,
    appliance: ApplianceId,
    public_key_sha256: &[u8],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM certificate_issues WHERE appliance_id = $1 AND public_key_sha256 = $2)",
    )
    .bind(appliance)
    .bind(public_key_sha256)
    .fetch_one(conn)
    .await
}

/// Appliances (not revoked) whose certificate expires within each of `within`, or has
/// expired: one count per window, in order.
pub async fn expiring(pool: &sqlx::PgPool, within: &[time::Duration]) -> Result<Vec<i64>, sqlx::Error> {
    let seconds: Vec<f64> = within.iter().map(|d| d.as_seconds_f64()).collect();
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM appliances
                 WHERE revoked_at IS NULL AND cert_not_after < now() + make_interval(secs => w))
         FROM unnest($1::float8[]) WITH ORDINALITY AS t(w, i) ORDER BY i",
    )
    .bind(seconds)
    .fetch_all(pool)
    .await
}

/// A certificate to record.
#[derive(Debug, Clone)]
pub struct NewIssue<'a> {
    pub appliance: ApplianceId,
    pub tenant: TenantId,
    pub renewal: Option<RenewalId>,
    pub serial: &'a str,
    pub public_key_sha256: &'a [u8],
    pub csr_sha256: Option<&'a [u8]>,
    pub certificate_pem: &'a str,
    pub not_after: OffsetDateTime,
    /// The signing CA's fingerprint (`pki::CaInfo::sha256`).
    pub issuer_sha256: &'a str,
}

/// Records an issued certificate and makes it the appliance's current one.
pub async fn record(conn: &mut PgConnection, c: &NewIssue<'_>) -> Result<(), sqlx::Error> {
    record_issue(&mut *conn, c).await?;
    sqlx::query(
        "UPDATE appliances SET cert_serial = $2, cert_not_after = $3, cert_issuer_sha256 = $4, renewal_asked_at = NULL
         WHERE id = $1",
    )
    .bind(c.appliance)
    .bind(c.serial)
    .bind(c.not_after)
    .bind(c.issuer_sha256)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records an issued certificate in the appliance's history only.
pub async fn record_issue(conn: &mut PgConnection, c: &NewIssue<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificate_issues
             (serial, appliance_id, tenant_id, renewal_id, public_key_sha256, csr_sha256, certificate_pem, not_after,
              issuer_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.serial)
    .bind(c.appliance)
    .bind(c.tenant)
    .bind(c.renewal)
    .bind(c.public_key_sha256)
    .bind(c.csr_sha256)
    .bind(c.certificate_pem)
    .bind(c.not_after)
    .bind(c.issuer_sha256)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the appliance's certificates that are still valid and that it is not using
/// (`in_use`: the serial it said it is connected with, one of its own), so that a new one
/// never leaves an earlier, unused one valid. Returns the serials put on the list.
pub async fn supersede_unused(
    conn: &mut PgConnection,
    appliance: ApplianceId,
    in_use: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason)
         SELECT serial, appliance_id, tenant_id, 'superseded' FROM certificate_issues
         WHERE appliance_id = $1 AND serial <> $2 AND not_after > now()
         ON CONFLICT (serial) DO NOTHING
         RETURNING serial",
    )
    .bind(appliance)
    .bind(in_use)
    .fetch_all(conn)
    .await
}

/// Before the first CA rotation: every certificate without a recorded issuer was signed by
/// the only fleet CA there was, `first_sha256`.
pub async fn name_first_ca(conn: &mut PgConnection, first_sha256: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE certificate_issues SET issuer_sha256 = $1 WHERE issuer_sha256 IS NULL")
        .bind(first_sha256)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE appliances SET cert_issuer_sha256 = $1 WHERE cert_issuer_sha256 IS NULL AND cert_serial IS NOT NULL",
    )
    .bind(first_sha256)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many appliances (enrolled, not revoked) hold a certificate from the CA `signing_sha256`,
/// and how many still hold one from another CA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ByCa {
    pub on_signing: i64,
    pub on_other: i64,
    /// Of `on_other`, those online now (they are being asked to renew).
    pub on_other_online: i64,
}

pub async fn count_by_ca(pool: &sqlx::PgPool, signing_sha256: &str) -> Result<ByCa, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE cert_issuer_sha256 = $1) AS on_signing,
                count(*) FILTER (WHERE cert_issuer_sha256 IS DISTINCT FROM $1) AS on_other,
                count(*) FILTER (WHERE cert_issuer_sha256 IS DISTINCT FROM $1 AND status = 'online') AS on_other_online
         FROM appliances WHERE revoked_at IS NULL AND cert_serial IS NOT NULL",
    )
    .bind(signing_sha256)
    .fetch_one(pool)
    .await
}

/// An appliance that still depends on a CA other than the signing one.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Dependent {
    pub id: ApplianceId,
    pub tenant_id: TenantId,
    pub name: String,
    pub status: crate::model::ApplianceStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cert_not_after: Option<OffsetDateTime>,
}

/// Up to `limit` appliances (not revoked) whose certificate is not from `signing_sha256`.
pub async fn dependents(pool: &sqlx::PgPool, signing_sha256: &str, limit: i64) -> Result<Vec<Dependent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, name, status, cert_not_after FROM appliances
         WHERE revoked_at IS NULL AND cert_serial IS NOT NULL AND cert_issuer_sha256 IS DISTINCT FROM $1
         ORDER BY tenant_id, name LIMIT $2",
    )
    .bind(signing_sha256)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Picks up to `limit` online appliances whose certificate is not from `signing_sha256` and
/// that were not asked to renew in the last `again_after_s` seconds, marks them asked now
/// and returns them. Replicas running this at once get different appliances.
pub async fn ask_to_renew(
    pool: &sqlx::PgPool,
    signing_sha256: &str,
    limit: i64,
    again_after_s: f64,
) -> Result<Vec<ApplianceId>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE appliances SET renewal_asked_at = now()
         WHERE id IN (
             SELECT a.id FROM appliances a JOIN tenants t ON t.id = a.tenant_id
             WHERE a.revoked_at IS NULL AND a.status = 'online' AND a.cert_serial IS NOT NULL
               AND t.status <> 'suspended'
               AND a.cert_issuer_sha256 IS DISTINCT FROM $1
               AND (a.renewal_asked_at IS NULL OR a.renewal_asked_at < now() - make_interval(secs => $3))
             ORDER BY a.renewal_asked_at NULLS FIRST
             LIMIT $2
             FOR UPDATE OF a SKIP LOCKED)
         RETURNING id",
    )
    .bind(signing_sha256)
    .bind(limit)
    .bind(again_after_s)
    .fetch_all(pool)
    .await
}
