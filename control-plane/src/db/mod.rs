//! PostgreSQL: the pools, migrations, and the tenant-scoped transaction every customer
//! request runs in. One module per aggregate; every function that touches customer data
//! takes the tenant id.
//!
//! Roles (migration 0004): the application never acts as the role it logs in with. Every
//! pooled connection assumes `hearth_service` (system paths; one explicit `service_access`
//! policy per table) as soon as it connects, and customer requests run in [`tenant_tx`],
//! which assumes `hearth_tenant` (rows of one tenant only) for the transaction. The login
//! role should be `NOINHERIT` and own nothing, so that without those steps it can read
//! nothing at all; only migrations run as the owner ([`connect_owner`]).

pub mod appliances;
pub mod artifacts;
pub mod audit;
pub mod certificates;
pub mod desired;
pub mod enrollment;
pub mod events;
pub mod operator_accounts;
pub mod operators;
pub mod plans;
pub mod presence;
pub mod revocations;
pub mod rollouts;
pub mod support;
pub mod tasks;
pub mod tenants;
pub mod users;
pub mod webhooks;

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
    #[error(
        "the database user cannot assume the role hearth_service at {target} ({source}); run the migrations \
         (`hearth-control-plane migrate` as the owner) and `GRANT hearth_service, hearth_tenant TO <user>`"
    )]
    ServiceRole { target: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The pool the control plane works with: every connection assumes `hearth_service`
/// (failing within `connect_timeout_s` if the server is not there).
pub async fn connect(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    let opts: PgConnectOptions = cfg.url.expose().parse().map_err(DbError::BadUrl)?;
    let target = target(&opts);
    let pool = service_pool_options(cfg.max_connections, Duration::from_secs(cfg.connect_timeout_s))
        .connect_with(opts)
        .await
        .map_err(|source| match &source {
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("42501") || db.code().as_deref() == Some("22023") =>
            {
                DbError::ServiceRole { target: target.clone(), source }
            }
            _ => DbError::Connect { target: target.clone(), source },
        })?;
    Ok(pool)
}

/// A connection as the login role itself, for migrations (run them as the tables' owner).
pub async fn connect_owner(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    let opts: PgConnectOptions = cfg.url.expose().parse().map_err(DbError::BadUrl)?;
    let target = target(&opts);
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(cfg.connect_timeout_s))
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

/// A service pool on the same server and database as `pool` (tests get a superuser pool
/// from `#[sqlx::test]` and run the control plane through this, as production does).
pub fn service_pool_like(pool: &PgPool, max_connections: u32) -> PgPool {
    service_pool_options(max_connections, Duration::from_secs(5)).connect_lazy_with((*pool.connect_options()).clone())
}

fn service_pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(acquire_timeout).after_connect(|conn, _| {
        Box::pin(async move {
            sqlx::query("SET ROLE hearth_service").execute(conn).await?;
            Ok(())
        })
    })
}

/// The server, without the password.
fn target(opts: &PgConnectOptions) -> String {
    format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"))
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// What in the server's configuration works against the control plane, one sentence each
/// (logged as warnings at start-up; nothing is refused). Today: autovacuum turned off,
/// for the server or for `appliances`. Every heartbeat updates its appliance's row; without
/// autovacuum the dead versions are never reclaimed, the table and its indexes bloat, and
/// the ingest's batch write cost PostgreSQL over ten times more per row (BENCHMARKS.md,
/// "Ingest on a database server of its own"). The table's setting is read as PostgreSQL
/// reads it (`off`, `false`, `0`, `no` all turn it off).
pub async fn server_warnings(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let (server_on, table_off): (bool, bool) = sqlx::query_as(
        "SELECT current_setting('autovacuum')::bool,
                COALESCE((SELECT NOT o.option_value::bool
                          FROM pg_class c, pg_options_to_table(c.reloptions) o
                          WHERE c.oid = 'appliances'::regclass AND o.option_name = 'autovacuum_enabled'), false)",
    )
    .fetch_one(pool)
    .await?;
    let mut warnings = Vec::new();
    if !server_on {
        warnings.push(
            "PostgreSQL runs with `autovacuum = off`: the appliances table, updated by every heartbeat, \
             bloats and heartbeat ingest gets over ten times dearer per row; turn it on (or VACUUM appliances \
             every few minutes)"
                .to_owned(),
        );
    }
    if table_off {
        warnings.push(
            "autovacuum is turned off for the appliances table (`autovacuum_enabled = false`), which \
             every heartbeat updates: it bloats and heartbeat ingest gets over ten times dearer per row; \
             `ALTER TABLE appliances RESET (autovacuum_enabled)`"
                .to_owned(),
        );
    }
    Ok(warnings)
}

/// Whose rows a read or change of a resource that operators and tenants share (rollouts,
/// webhook endpoints) may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Operators: every row.
    Fleet,
    /// A tenant: its own (inside its tenant transaction).
    Tenant(TenantId),
}

impl Scope {
    pub fn tenant(self) -> Option<TenantId> {
        match self {
            Scope::Fleet => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// Begins a transaction confined to `tenant` by row-level security: it assumes the role
/// `hearth_tenant` and sets `hearth.tenant_id`, both local to the transaction. Queries in
/// it still filter by tenant themselves; RLS is the second wall.
///
/// `BEGIN` and the two settings go in one simple-protocol round trip (the tenant API's
/// every request pays it). The tenant id is written into the statement's text, not bound:
/// it is a [`TenantId`], whose text is a UUID's hex digits and dashes, never caller input.
pub async fn tenant_tx(pool: &PgPool, tenant: TenantId) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(format!(
        "BEGIN; SELECT set_config('hearth.tenant_id', '{}', true), set_config('role', 'hearth_tenant', true)",
        tenant.as_uuid().hyphenated()
    ))
    .await
}

/// Whether `err` is a violation of the named constraint (mapped to 409 by the API).
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(name))
}
