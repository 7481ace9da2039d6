//! Operator accounts (the web console's sign-in: name, role, argon2id password, optional
//! TOTP) and their sessions (`hearth_oc_<43 chars>` in a cookie, SHA-256 stored). Service
//! role only; the rules are in `crate::domain::operator_accounts`.

use hearth_protocol::OperatorId;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::db::operators::Operator;
use crate::model::OperatorRole;
use crate::secret::Secret;
use crate::token;

/// The console session cookie's value starts with this.
pub const SESSION_PREFIX: &str = "hearth_oc_";
pub const NAME_KEY: &str = "operator_accounts_name_key";

/// An operator account as listed (never its password or TOTP key).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OperatorAccount {
    pub id: OperatorId,
    pub name: String,
    pub role: OperatorRole,
    /// Whether a TOTP code is asked for at sign-in.
    pub totp_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, name, role, totp_enabled, created_at, created_by, last_login_at, disabled_at";

/// What a sign-in checks.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: OperatorId,
    pub name: String,
    pub role: OperatorRole,
    pub password_hash: String,
    pub totp_sealed: Option<String>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
}

pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    role: OperatorRole,
    password_hash: &str,
    created_by: &str,
) -> Result<OperatorAccount, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO operator_accounts (id, name, role, password_hash, created_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(OperatorId::new())
    .bind(name)
    .bind(role)
    .bind(password_hash)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<OperatorAccount>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM operator_accounts ORDER BY created_at, id")).fetch_all(pool).await
}

/// Disables an account (its sessions end); `None` if there is no such account.
pub async fn disable(conn: &mut PgConnection, id: OperatorId) -> Result<Option<OperatorAccount>, sqlx::Error> {
    let row = sqlx::query_as(&format!(
        "UPDATE operator_accounts SET disabled_at = COALESCE(disabled_at, now()) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM operator_sessions WHERE account_id = $1").bind(id).execute(conn).await?;
    Ok(row)
}

/// The credentials of an enabled account named `name`.
pub async fn credentials_by_name(pool: &PgPool, name: &str) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, password_hash, totp_sealed, totp_enabled, totp_last_step
         FROM operator_accounts WHERE name = $1 AND disabled_at IS NULL",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// The credentials of an enabled account.
pub async fn credentials(pool: &PgPool, id: OperatorId) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, password_hash, totp_sealed, totp_enabled, totp_last_step
         FROM operator_accounts WHERE id = $1 AND disabled_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Records that a TOTP code of `step` was used, unless a code of that step or a later one
/// was used already (then `false`: a replay, even by a racing request).
pub async fn use_totp_step(pool: &PgPool, id: OperatorId, step: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE operator_accounts SET totp_last_step = $2
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(id)
    .bind(step)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Stores a new (not yet enabled) TOTP key, sealed.
pub async fn set_pending_totp(pool: &PgPool, id: OperatorId, sealed: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operator_accounts SET totp_sealed = $2, totp_enabled = false, totp_last_step = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(sealed)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn enable_totp(pool: &PgPool, id: OperatorId, step: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operator_accounts SET totp_enabled = true, totp_last_step = $2 WHERE id = $1")
        .bind(id)
        .bind(step)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets the password hash and ends every session of the account but `keep` (the caller's).
pub async fn set_password(
    pool: &PgPool,
    id: OperatorId,
    password_hash: &str,
    keep: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE operator_accounts SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM operator_sessions WHERE account_id = $1 AND token_hash IS DISTINCT FROM $2")
        .bind(id)
        .bind(keep.map(token::hash))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A console session.
#[derive(Debug)]
pub struct Session {
    pub token: Secret<String>,
    pub expires_at: OffsetDateTime,
}

/// Opens a session of the account valid `ttl_s` seconds (its password, and code, checked).
pub async fn open_session(pool: &PgPool, id: OperatorId, ttl_s: u64) -> Result<Session, sqlx::Error> {
    let secret = token::generate(SESSION_PREFIX);
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE operator_accounts SET last_login_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
    let expires_at: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO operator_sessions (token_hash, account_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING expires_at",
    )
    .bind(token::hash(secret.expose()))
    .bind(id)
    .bind(ttl_s as f64)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM operator_sessions WHERE account_id = $1 AND expires_at < now()")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Session { token: secret, expires_at })
}

/// The operator behind a valid session of an enabled account, and when the session ends.
pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Option<(Operator, OffsetDateTime)>, sqlx::Error> {
    if !secret.starts_with(SESSION_PREFIX) {
        return Ok(None);
    }
    let row: Option<(OperatorId, String, OperatorRole, OffsetDateTime)> = sqlx::query_as(
        "SELECT a.id, a.name, a.role, s.expires_at
         FROM operator_sessions s JOIN operator_accounts a ON a.id = s.account_id
         WHERE s.token_hash = $1 AND s.expires_at > now() AND a.disabled_at IS NULL",
    )
    .bind(token::hash(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, name, role, expires_at)| (Operator { id, name, role }, expires_at)))
}

/// Ends a session (sign-out); whether there was one.
pub async fn logout(pool: &PgPool, secret: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM operator_sessions WHERE token_hash = $1")
        .bind(token::hash(secret))
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}
