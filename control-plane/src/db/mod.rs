//! PostgreSQL: the pool, migrations, and the tenant-scoped transaction every customer
//! request runs in. One module per aggregate; every function that touches customer data
//! takes the tenant id.

pub mod appliances;
pub mod desired;
pub mod enrollment;
pub mod presence;
pub mod tasks;
pub mod tenants;

use std::time::Duration;

use hearth_protocol::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::DatabaseConfig;

/// The embedded migrations (`control-plane/migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("setting `database.url` (HEARTH_DATABASE__URL) is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects (failing within `connect_timeout_s` if the server is not there).
pub async fn connect(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    let opts: PgConnectOptions = cfg.url.expose().parse().map_err(DbError::BadUrl)?;
    // Name the server without the password.
    let target = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
    PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(Duration::from_secs(cfg.connect_timeout_s))
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Begins a transaction confined to `tenant` by row-level security: it assumes the role
/// `hearth_tenant` and sets `hearth.tenant_id`, both local to the transaction. Queries in
/// it still filter by tenant themselves; RLS is the second wall.
pub async fn tenant_tx(pool: &PgPool, tenant: TenantId) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('hearth.tenant_id', $1, true), set_config('role', 'hearth_tenant', true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Whether `err` is a violation of the named constraint (mapped to 409 by the API).
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(name))
}
