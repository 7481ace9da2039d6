//! Tenant users (owners and members) and their sign-in sessions.
//!
//! Passwords are stored as argon2id PHC strings (hashed and verified off the async
//! runtime). An address is unique within a tenant ([`EMAIL_KEY`]); the same address may
//! have accounts in several tenants. The sign-in rules (which accounts, how many tries) are
//! in `domain::accounts`; here are the queries: [`candidates`] and [`open_session`], whose
//! `hearth_st_…` token (SHA-256 stored) is valid for `auth.session_ttl_s`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hearth_protocol::{TenantId, UserId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::{TenantStatus, UserRole};
use crate::secret::Secret;
use crate::token;

pub const SESSION_PREFIX: &str = "hearth_st_";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

/// A tenant user as listed (never the password hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: UserRole,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, tenant_id, email, role, created_at, last_login_at";

/// The unique index that keeps an address once per tenant.
pub const EMAIL_KEY: &str = "tenant_users_tenant_email_key";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("{0:?} is not an e-mail address")]
    BadEmail(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks the rules a new password must meet.
pub fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(UserError::WeakPassword);
    }
    Ok(())
}

fn check_email(email: &str) -> Result<String, UserError> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.matches('@').count() == 1;
    if ok {
        Ok(e.to_string())
    } else {
        Err(UserError::BadEmail(email.to_string()))
    }
}

/// argon2id with the crate's defaults (19 MiB, 2 passes), on a blocking thread.
pub async fn hash_password(password: &str) -> Result<String, UserError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|e| UserError::Hash(e.to_string()))?
    .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (argon2id, on a blocking thread).
pub async fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password, verified against when there is no account, so an unknown
/// address costs the same as a wrong password.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub async fn dummy_hash() -> String {
    if let Some(h) = DUMMY_HASH.get() {
        return h.clone();
    }
    let h = hash_password(&uuid::Uuid::new_v4().to_string()).await.unwrap_or_default();
    DUMMY_HASH.get_or_init(|| h).clone()
}

/// Creates a user of `tenant`. Works in a tenant transaction or on the service pool.
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
    password: &str,
    role: UserRole,
) -> Result<User, UserError> {
    let email = check_email(email)?;
    check_password(password)?;
    let hash = hash_password(password).await?;
    Ok(sqlx::query_as(&format!(
        "INSERT INTO tenant_users (id, tenant_id, email, role, password_hash) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    ))
    .bind(UserId::new())
    .bind(tenant)
    .bind(email)
    .bind(role)
    .bind(hash)
    .fetch_one(conn)
    .await?)
}

pub async fn list(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenant_users WHERE tenant_id = $1 ORDER BY created_at, id"))
        .bind(tenant)
        .fetch_all(conn)
        .await
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenant_users WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Deletes a user (and so their sessions).
pub async fn delete(conn: &mut PgConnection, tenant: TenantId, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("DELETE FROM tenant_users WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Owners left in the tenant (the last one cannot be removed).
pub async fn count_owners(conn: &mut PgConnection, tenant: TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM tenant_users WHERE tenant_id = $1 AND role = 'owner'")
        .bind(tenant)
        .fetch_one(conn)
        .await
}

/// An account a sign-in may be for: the user, its password hash and its tenant.
#[derive(Debug, sqlx::FromRow)]
pub struct Candidate {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
    pub tenant_name: String,
    pub tenant_status: TenantStatus,
}

/// The accounts with address `email` (case-insensitive), in `tenant` only when given, oldest
/// first. Runs on the service pool: the tenant is not known until the accounts are found.
pub async fn candidates(pool: &PgPool, email: &str, tenant: Option<TenantId>) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.tenant_id, u.email, u.role, u.created_at, u.last_login_at, u.password_hash,
                t.name AS tenant_name, t.status AS tenant_status
         FROM tenant_users u JOIN tenants t ON t.id = u.tenant_id
         WHERE lower(u.email) = lower($1) AND ($2::uuid IS NULL OR u.tenant_id = $2)
         ORDER BY u.created_at, u.id",
    )
    .bind(email.trim())
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// A successful sign-in.
#[derive(Debug)]
pub struct Session {
    pub token: Secret<String>,
    pub expires_at: OffsetDateTime,
}

/// Opens a session of `user` valid `ttl_s` seconds (the password was checked).
pub async fn open_session(pool: &PgPool, user: &User, ttl_s: u64) -> Result<Session, sqlx::Error> {
    let secret = token::generate(SESSION_PREFIX);
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE tenant_users SET last_login_at = now() WHERE id = $1").bind(user.id).execute(&mut *tx).await?;
    let expires_at: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO user_sessions (token_hash, user_id, tenant_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(token::hash(secret.expose()))
    .bind(user.id)
    .bind(user.tenant_id)
    .bind(ttl_s as f64)
    .fetch_one(&mut *tx)
    .await?;
    // Expired sessions of this user go when a new one starts.
    sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND expires_at < now()")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Session { token: secret, expires_at })
}

/// The user behind a session token, if it is valid and their tenant is active.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub id: UserId,
    pub tenant: TenantId,
    pub email: String,
    pub role: UserRole,
    pub tenant_active: bool,
}

pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Option<SessionUser>, sqlx::Error> {
    if !secret.starts_with(SESSION_PREFIX) {
        return Ok(None);
    }
    let row: Option<(UserId, TenantId, String, UserRole, TenantStatus)> = sqlx::query_as(
        "SELECT u.id, u.tenant_id, u.email, u.role, t.status
         FROM user_sessions s JOIN tenant_users u ON u.id = s.user_id JOIN tenants t ON t.id = u.tenant_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token::hash(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, tenant, email, role, status)| SessionUser {
        id,
        tenant,
        email,
        role,
        tenant_active: status == TenantStatus::Active,
    }))
}

/// Ends a session (sign-out).
pub async fn logout(pool: &PgPool, secret: &str) -> Result<bool, sqlx::Error> {
    let r =
        sqlx::query("DELETE FROM user_sessions WHERE token_hash = $1").bind(token::hash(secret)).execute(pool).await?;
    Ok(r.rows_affected() > 0)
}

/// Changes a user's own password after checking the current one; ends every session of theirs.
pub async fn change_password(pool: &PgPool, user: UserId, current: &str, new: &str) -> Result<bool, UserError> {
    check_password(new)?;
    let phc: Option<String> = sqlx::query_scalar("SELECT password_hash FROM tenant_users WHERE id = $1")
        .bind(user)
        .fetch_optional(pool)
        .await?;
    let Some(phc) = phc else { return Ok(false) };
    if !verify_password(current, &phc).await {
        return Ok(false);
    }
    let hash = hash_password(new).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE tenant_users SET password_hash = $2 WHERE id = $1")
        .bind(user)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM user_sessions WHERE user_id = $1").bind(user).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}
