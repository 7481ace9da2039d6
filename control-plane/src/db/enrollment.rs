//! One-time enrollment tokens: `hearth_et_<43 chars>`, SHA-256 stored, with an expiry.

use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use super::appliances;
use crate::secret::Secret;
use crate::token;

pub const TOKEN_PREFIX: &str = "hearth_et_";

/// Registers an appliance and returns its id with a fresh token (shown once).
pub async fn create_appliance(
    pool: &PgPool,
    tenant: TenantId,
    name: &str,
    ttl: Duration,
) -> Result<(ApplianceId, Secret<String>, OffsetDateTime), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let out = register(&mut tx, tenant, name, ttl).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`create_appliance`] in the caller's transaction.
pub async fn register(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    name: &str,
    ttl: Duration,
) -> Result<(ApplianceId, Secret<String>, OffsetDateTime), sqlx::Error> {
    let id = appliances::create(&mut *conn, tenant, name).await?;
    let (token, expires_at) = issue_token(conn, tenant, id, ttl).await?;
    Ok((id, token, expires_at))
}

/// A fresh one-time token for an existing appliance (shown once); its earlier unused tokens
/// stop working.
pub async fn issue_token(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: ApplianceId,
    ttl: Duration,
) -> Result<(Secret<String>, OffsetDateTime), sqlx::Error> {
    sqlx::query("DELETE FROM enrollment_tokens WHERE appliance_id = $1 AND used_at IS NULL")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let token = token::generate(TOKEN_PREFIX);
    let expires_at: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO enrollment_tokens (token_hash, tenant_id, appliance_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(token::hash(token.expose()))
    .bind(tenant)
    .bind(id)
    .bind(ttl.as_seconds_f64())
    .fetch_one(conn)
    .await?;
    Ok((token, expires_at))
}

/// Why a token cannot be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Used,
    Expired,
    /// The appliance was revoked.
    Revoked,
    /// Its tenant is suspended.
    Suspended,
}

/// A redeemed token: the appliance to issue a certificate for.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub appliance: ApplianceId,
    pub tenant: TenantId,
}

/// Consumes the token if it is unused and unexpired. The check and the consumption are one
/// statement, so two concurrent enrollments with one token cannot both succeed. Runs in the
/// caller's transaction: if issuing the certificate then fails, the token stays unused.
pub async fn redeem(conn: &mut sqlx::PgConnection, token: &str) -> Result<Result<Claim, Refusal>, sqlx::Error> {
    let hash = token::hash(token);
    let claimed: Option<(ApplianceId, TenantId)> = sqlx::query_as(
        "UPDATE enrollment_tokens e SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
           AND EXISTS (SELECT 1 FROM appliances a JOIN tenants t ON t.id = a.tenant_id
                       WHERE a.id = e.appliance_id AND a.revoked_at IS NULL AND t.status = 'active')
         RETURNING appliance_id, tenant_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((appliance, tenant)) = claimed {
        return Ok(Ok(Claim { appliance, tenant }));
    }
    let why: Option<(bool, bool, bool)> = sqlx::query_as(
        "SELECT e.used_at IS NOT NULL, a.revoked_at IS NOT NULL, t.status <> 'active'
         FROM enrollment_tokens e JOIN appliances a ON a.id = e.appliance_id JOIN tenants t ON t.id = a.tenant_id
         WHERE e.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Err(match why {
        None => Refusal::Unknown,
        Some((true, _, _)) => Refusal::Used,
        Some((_, true, _)) => Refusal::Revoked,
        Some((_, _, true)) => Refusal::Suspended,
        Some(_) => Refusal::Expired,
    }))
}

/// Records the issued certificate on the appliance.
pub async fn record_certificate(
    conn: &mut sqlx::PgConnection,
    claim: Claim,
    serial_hex: &str,
    not_after: OffsetDateTime,
    issuer_sha256: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appliances SET enrolled_at = now(), cert_serial = $3, cert_not_after = $4, cert_issuer_sha256 = $5,
                               renewal_asked_at = NULL
         WHERE id = $1 AND tenant_id = $2",
    )
    .bind(claim.appliance)
    .bind(claim.tenant)
    .bind(serial_hex)
    .bind(not_after)
    .bind(issuer_sha256)
    .execute(conn)
    .await?;
    Ok(())
}
