//! Appliance revocation and the certificate revocation list's contents.
//!
//! Revoking marks the appliance (`revoked_at`: no more tasks, configuration or ingest) and
//! records its certificate serial in `certificate_revocations`, which has no foreign keys
//! so that the list still names the certificate after the appliance or its tenant is
//! deleted. Each CRL issued takes the next number from `crl_state` and a this-update
//! strictly later than the previous one's.

use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::pki::RevokedCertificate;

/// What revoking an appliance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub appliance: ApplianceId,
    pub tenant: TenantId,
    /// The certificate serial put on the list (`None`: it never enrolled).
    pub serial: Option<String>,
    /// `false` if it was revoked already.
    pub newly: bool,
}

/// Revokes one appliance (`tenant` given: only if it belongs to that tenant).
pub async fn revoke(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    appliance: ApplianceId,
    reason: &str,
) -> Result<Option<Revoked>, sqlx::Error> {
    let row: Option<(TenantId, Option<String>, bool, bool)> = sqlx::query_as(
        "WITH target AS (
             SELECT id, tenant_id, cert_serial, revoked_at IS NULL AS newly, status = 'online' AS was_online
             FROM appliances WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE
         ), upd AS (
             UPDATE appliances a SET revoked_at = COALESCE(a.revoked_at, now()), status = CASE
                 WHEN a.status = 'online' THEN 'offline' ELSE a.status END,
                 status_since = CASE WHEN a.status = 'online' THEN now() ELSE a.status_since END
             FROM target WHERE a.id = target.id RETURNING a.id
         )
         SELECT tenant_id, cert_serial, newly, was_online FROM target",
    )
    .bind(appliance)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant, serial, newly, was_online)) = row else { return Ok(None) };
    if was_online {
        // Ingest refuses a revoked appliance's messages (its last will too): record the
        // transition here.
        sqlx::query(
            "INSERT INTO presence_events (tenant_id, appliance_id, status, reason) VALUES ($1, $2, 'offline', 'revoked')",
        )
        .bind(tenant)
        .bind(appliance)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(serial) = &serial {
        sqlx::query(
            "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (serial) DO NOTHING",
        )
        .bind(serial)
        .bind(appliance)
        .bind(tenant)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    }
    // Every other certificate it still holds (one renewed and not yet switched to, say).
    sqlx::query(
        "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason)
         SELECT serial, appliance_id, tenant_id, $2 FROM certificate_issues WHERE appliance_id = $1 AND not_after > now()
         ON CONFLICT (serial) DO NOTHING",
    )
    .bind(appliance)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(Some(Revoked { appliance, tenant, serial, newly }))
}

/// Revokes every appliance of a tenant (before the tenant is deleted).
pub async fn revoke_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    reason: &str,
) -> Result<Vec<ApplianceId>, sqlx::Error> {
    let ids: Vec<ApplianceId> = sqlx::query_scalar(
        "WITH upd AS (
             UPDATE appliances SET revoked_at = COALESCE(revoked_at, now()) WHERE tenant_id = $1
             RETURNING id, tenant_id, cert_serial
         ), ins AS (
             INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason)
             SELECT cert_serial, id, tenant_id, $2 FROM upd WHERE cert_serial IS NOT NULL
             UNION
             SELECT serial, appliance_id, tenant_id, $2 FROM certificate_issues
             WHERE tenant_id = $1 AND not_after > now()
             ON CONFLICT (serial) DO NOTHING
         )
         SELECT id FROM upd",
    )
    .bind(tenant)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

/// The next CRL's number and this-update, and everything it must list (revoked
/// certificates not expired for more than a day). Takes the
/// `crl_state` row lock until the caller's transaction ends, so concurrent issuers
/// (replicas) get distinct numbers.
pub async fn next_crl(conn: &mut PgConnection) -> Result<(u64, OffsetDateTime, Vec<RevokedCertificate>), sqlx::Error> {
    let (number, this_update): (i64, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO crl_state (id, number, this_update) VALUES (true, 1, date_trunc('second', now()))
         ON CONFLICT (id) DO UPDATE SET number = crl_state.number + 1,
             this_update = GREATEST(date_trunc('second', now()), crl_state.this_update + interval '1 second')
         RETURNING number, this_update",
    )
    .fetch_one(&mut *conn)
    .await?;
    // A certificate past its expiry is refused by TLS anyway, so it leaves the list a day
    // after (a clock a little behind still finds it listed): the list does not grow with
    // every renewal forever. A serial with no recorded certificate (issued before they were
    // recorded) stays listed.
    let revoked: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "SELECT r.serial, r.revoked_at FROM certificate_revocations r
         LEFT JOIN certificate_issues i ON i.serial = r.serial
         WHERE i.not_after IS NULL OR i.not_after > now() - interval '1 day'
         ORDER BY r.revoked_at, r.serial",
    )
    .fetch_all(&mut *conn)
    .await?;
    let revoked =
        revoked.into_iter().map(|(serial_hex, revoked_at)| RevokedCertificate { serial_hex, revoked_at }).collect();
    Ok((number as u64, this_update, revoked))
}
