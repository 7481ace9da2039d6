//! Reading the audit trail (it is written by every other operation, in the transaction of
//! the change it records: `db::audit::Recorder`).

use sqlx::PgPool;

use crate::db::audit::{self as store, AuditRow, Filter};

/// Entries matching `filter`, newest first, at most `limit`.
pub async fn list(pool: &PgPool, filter: &Filter, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    store::list(pool, filter, limit).await
}
