//! Tenants and their API keys.
//!
//! Keys look like `hearth_tk_<43 base64url chars>` (256 random bits). Only their SHA-256
//! is stored; a fast hash is right for secrets of this entropy, and it lets a request be
//! authenticated with one indexed lookup.

use hearth_protocol::TenantId;
use sqlx::PgPool;

use crate::secret::Secret;
use crate::token;

pub const API_KEY_PREFIX: &str = "hearth_tk_";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: time::OffsetDateTime,
}

/// Creates a tenant with its first API key, returned once.
pub async fn create(pool: &PgPool, name: &str) -> Result<(Tenant, Secret<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant: Tenant =
        sqlx::query_as("INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at")
            .bind(TenantId::new())
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let key = token::generate(API_KEY_PREFIX);
    sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, prefix) VALUES ($1, $2, $3, $4)")
        .bind(uuid::Uuid::now_v7())
        .bind(tenant.id)
        .bind(token::hash(key.expose()))
        .bind(token::display_prefix(key.expose()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((tenant, key))
}

/// The tenant an API key belongs to, if the key exists and is not revoked.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<TenantId>, sqlx::Error> {
    if !key.starts_with(API_KEY_PREFIX) {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(token::hash(key))
        .fetch_optional(pool)
        .await
}

pub async fn exists(pool: &PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(id).fetch_one(pool).await
}
