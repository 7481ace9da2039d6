//! Tenants and their API keys.
//!
//! Keys look like `hearth_tk_<43 base64url chars>` (256 random bits). Only their SHA-256
//! is stored, with a short prefix to recognise a leaked key; a fast hash is right for
//! secrets of this entropy, and it lets a request be authenticated with one indexed lookup.

use hearth_protocol::{ApiKeyId, PlanId, TenantId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::TenantStatus;
use crate::secret::Secret;
use crate::token;

pub const API_KEY_PREFIX: &str = "hearth_tk_";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub plan_id: Option<PlanId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, status, plan_id, created_at, updated_at";

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// `hearth_tk_` and the key's first six characters.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

const KEY_COLUMNS: &str = "id, name, prefix, created_at, created_by, revoked_at";

/// Creates a tenant (no key: issue one with [`issue_key`]).
pub async fn insert(conn: &mut PgConnection, name: &str, plan: Option<PlanId>) -> Result<Tenant, sqlx::Error> {
    sqlx::query_as(&format!("INSERT INTO tenants (id, name, plan_id) VALUES ($1, $2, $3) RETURNING {COLUMNS}"))
        .bind(TenantId::new())
        .bind(name)
        .bind(plan)
        .fetch_one(conn)
        .await
}

/// Creates a tenant with its first API key, returned once.
pub async fn create(pool: &PgPool, name: &str) -> Result<(Tenant, Secret<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant = insert(&mut tx, name, None).await?;
    let (_, key) = issue_key(&mut tx, tenant.id, "default", "system").await?;
    tx.commit().await?;
    Ok((tenant, key))
}

/// Issues an API key for `tenant`; the key is returned once. Works in a tenant transaction.
pub async fn issue_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
    created_by: &str,
) -> Result<(ApiKey, Secret<String>), sqlx::Error> {
    let key = token::generate(API_KEY_PREFIX);
    let id = ApiKeyId::new();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, name, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant)
    .bind(token::hash(key.expose()))
    .bind(token::display_prefix(key.expose()))
    .bind(name)
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok((row, key))
}

pub async fn list_keys(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"))
        .bind(tenant)
        .fetch_all(conn)
        .await
}

/// Revokes one key of `tenant`; `None` if the tenant has no such key.
pub async fn revoke_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ApiKeyId,
) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE tenant_id = $1 AND id = $2
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What an API key resolves to.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub tenant: TenantId,
    pub key_id: ApiKeyId,
    pub prefix: String,
    /// `false` while the tenant is suspended.
    pub active: bool,
}

/// The tenant an API key belongs to, if the key exists and is not revoked.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<KeyOwner>, sqlx::Error> {
    if !key.starts_with(API_KEY_PREFIX) {
        return Ok(None);
    }
    let row: Option<(TenantId, ApiKeyId, String, TenantStatus)> = sqlx::query_as(
        "SELECT k.tenant_id, k.id, k.prefix, t.status FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(token::hash(key))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(tenant, key_id, prefix, status)| KeyOwner {
        tenant,
        key_id,
        prefix,
        active: status == TenantStatus::Active,
    }))
}

pub async fn exists(pool: &PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(id).fetch_one(pool).await
}

pub async fn get(conn: &mut PgConnection, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// A tenant with its appliance counts, as operators list them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantSummary {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub tenant: Tenant,
    pub plan: Option<String>,
    pub appliances: i64,
    pub online: i64,
}

/// One page of tenants by id, optionally only those whose name contains `search`
/// (case-insensitive).
pub async fn list(
    pool: &PgPool,
    search: Option<&str>,
    status: Option<TenantStatus>,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<TenantSummary>, sqlx::Error> {
    let pattern = search.map(|s| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    sqlx::query_as(
        "SELECT t.id, t.name, t.status, t.plan_id, t.created_at, t.updated_at, p.name AS plan,
                count(a.id) AS appliances, count(a.id) FILTER (WHERE a.status = 'online') AS online
         FROM tenants t
         LEFT JOIN plans p ON p.id = t.plan_id
         LEFT JOIN appliances a ON a.tenant_id = t.id
         WHERE ($1::text IS NULL OR t.name ILIKE $1)
           AND ($2::text IS NULL OR t.status = $2)
           AND ($3::uuid IS NULL OR t.id > $3)
         GROUP BY t.id, p.name
         ORDER BY t.id LIMIT $4",
    )
    .bind(pattern)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What may change on a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    /// `Some(None)` removes the plan (the configured default quotas apply).
    pub plan: Option<Option<PlanId>>,
}

pub async fn update(conn: &mut PgConnection, id: TenantId, c: &Changes) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tenants SET name = COALESCE($2, name), status = COALESCE($3, status),
                plan_id = CASE WHEN $4 THEN $5 ELSE plan_id END, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&c.name)
    .bind(c.status)
    .bind(c.plan.is_some())
    .bind(c.plan.flatten())
    .fetch_optional(conn)
    .await
}

/// Deletes a tenant and, by cascade, its appliances, tasks, configuration, keys, users and
/// sessions. Revoke its appliances first (`db::revocations::revoke_tenant`).
pub async fn delete(conn: &mut PgConnection, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!("DELETE FROM tenants WHERE id = $1 RETURNING {COLUMNS}"))
        .bind(id)
        .fetch_optional(conn)
        .await
}
