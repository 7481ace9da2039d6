//! A customer's account as its people use it: sign-in (audited `auth.login`), sign-out,
//! password change, the account with its plan and quotas, and its members (created by an
//! owner or an operator, removed by an owner — never the last owner). Everything
//! tenant-scoped runs in a tenant transaction and is audited in it.

use hearth_protocol::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::config::{AuthConfig, LimitsConfig};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, Tenant};
use crate::db::users::{self as store, LoginRefusal, User, UserError};
use crate::db::{is_constraint, tenant_tx};
use crate::model::UserRole;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A sign-in with an unknown address or a wrong password (they answer alike).
    #[error("the e-mail address or the password is wrong")]
    InvalidCredentials,
    /// Too many failed sign-ins in a row.
    #[error("too many failed sign-ins; this account is locked for {wait_s} more seconds")]
    Locked { wait_s: i64 },
    #[error("this customer account is suspended; contact the service operator")]
    TenantSuspended,
    /// The session to end does not exist (or the token is not a session token).
    #[error("no such session")]
    NoSession,
    /// A password change whose current password is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("this is the account's last owner; make another member an owner first")]
    LastOwner,
    #[error("an account with this e-mail address exists already")]
    EmailTaken,
    /// The e-mail address or the password breaks a rule, or hashing failed.
    #[error(transparent)]
    User(UserError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<UserError> for AccountError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Database(d) if is_constraint(&d, "tenant_users_email_key") => AccountError::EmailTaken,
            UserError::Database(d) => AccountError::Database(d),
            other => AccountError::User(other),
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LoginResponse)]
pub struct SignedIn {
    /// `hearth_st_…`: send as `Authorization: Bearer …`.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub user: User,
}

/// The account: the tenant, its plan and its quotas.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub tenant: Tenant,
    /// The plan's name; `null`: the service's default quotas.
    pub plan: Option<String>,
    /// The quotas in force.
    pub quotas: Quotas,
}

/// A new member of an account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    /// At least 12 characters.
    pub password: String,
    pub role: UserRole,
}

/// Checks the password and opens a session, audited in the user's tenant (`auth.login`,
/// by the user under `request_id`). After too many failures in a row the account is locked
/// for a while; a wrong password and an unknown address answer alike.
pub async fn login(
    pool: &PgPool,
    cfg: &AuthConfig,
    email: &str,
    password: &str,
    request_id: Option<&str>,
) -> Result<SignedIn, AccountError> {
    let session = match store::login(pool, email, password, cfg).await? {
        Ok(session) => session,
        Err(LoginRefusal::BadCredentials) => return Err(AccountError::InvalidCredentials),
        Err(LoginRefusal::Locked(until)) => {
            let wait_s = (until - OffsetDateTime::now_utc()).whole_seconds().max(1);
            return Err(AccountError::Locked { wait_s });
        }
        Err(LoginRefusal::TenantSuspended) => return Err(AccountError::TenantSuspended),
    };
    let user = &session.user;
    let actor = Actor::tenant_user(user.id, &user.email);
    let mut tx = tenant_tx(pool, user.tenant_id).await?;
    Recorder::new(&actor, request_id)
        .record(&mut tx, Some(user.tenant_id), "auth.login", ("user", user.id.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(SignedIn { token: session.token.expose().clone(), expires_at: session.expires_at, user: session.user })
}

/// Ends the session whose token is `token`.
pub async fn logout(pool: &PgPool, token: &str) -> Result<(), AccountError> {
    if !token.starts_with(store::SESSION_PREFIX) || !store::logout(pool, token).await? {
        return Err(AccountError::NoSession);
    }
    Ok(())
}

/// Changes a signed-in user's own password after checking the current one, audited
/// (`user.password_change`); every session of the user ends.
pub async fn change_password(
    pool: &PgPool,
    tenant: TenantId,
    user: UserId,
    current: &str,
    new: &str,
    audit: Recorder<'_>,
) -> Result<(), AccountError> {
    if !store::change_password(pool, user, current, new).await? {
        return Err(AccountError::WrongPassword);
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    audit.record(&mut tx, Some(tenant), "user.password_change", ("user", user.to_string()), None, None).await?;
    tx.commit().await?;
    Ok(())
}

/// The account: the tenant, its plan and the quotas in force (`defaults` without a plan).
pub async fn account(pool: &PgPool, defaults: LimitsConfig, tenant: TenantId) -> Result<AccountView, AccountError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let t = tenants::get(&mut tx, tenant).await?.ok_or(AccountError::TenantNotFound)?;
    let (plan, quotas) = plans::quotas_for(&mut tx, tenant, defaults).await?;
    tx.commit().await?;
    Ok(AccountView { tenant: t, plan, quotas })
}

/// The account's members, oldest first.
pub async fn list_users(pool: &PgPool, tenant: TenantId) -> Result<Vec<User>, AccountError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let users = store::list(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(users)
}

/// Adds a member to `tenant`, audited (`user.create`).
pub async fn create_user(
    pool: &PgPool,
    tenant: TenantId,
    new: NewUser,
    audit: Recorder<'_>,
) -> Result<User, AccountError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    tenants::get(&mut tx, tenant).await?.ok_or(AccountError::TenantNotFound)?;
    let user = store::create(&mut tx, tenant, &new.email, &new.password, new.role).await?;
    audit.record(&mut tx, Some(tenant), "user.create", ("user", user.id.to_string()), None, snapshot(&user)).await?;
    tx.commit().await?;
    Ok(user)
}

/// Removes a member (their sessions end with them), audited (`user.delete`); the account's
/// last owner cannot be removed.
pub async fn delete_user(pool: &PgPool, tenant: TenantId, id: UserId, audit: Recorder<'_>) -> Result<(), AccountError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let user = store::delete(&mut tx, tenant, id).await?.ok_or(AccountError::UserNotFound)?;
    if user.role == UserRole::Owner && store::count_owners(&mut tx, tenant).await? == 0 {
        return Err(AccountError::LastOwner);
    }
    audit.record(&mut tx, Some(tenant), "user.delete", ("user", id.to_string()), snapshot(&user), None).await?;
    tx.commit().await?;
    Ok(())
}
