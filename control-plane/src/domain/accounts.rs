//! A customer's account as its people use it: sign-in (audited `auth.login`, behind the
//! bad-credential limits of [`crate::limits::CredentialLimits`]), sign-out,
//! password change, the account with its plan and quotas, and its members (created by an
//! owner or an operator, removed by an owner — never the last owner). Everything
//! tenant-scoped runs in a tenant transaction and is audited in it.

use std::net::IpAddr;

use hearth_protocol::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::config::LimitsConfig;
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, Tenant};
use crate::db::users::{self as store, Candidate, User, UserError};
use crate::db::{is_constraint, tenant_tx};
use crate::domain::Services;
use crate::limits::{CredentialLimits, TooManyFailures};
use crate::model::{TenantStatus, UserRole};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A sign-in with an unknown address or a wrong password (they answer alike).
    #[error("the e-mail address or the password is wrong")]
    InvalidCredentials,
    /// Too many failures (from this source, for this address from this source, or for this
    /// address from everywhere): refused before the password was hashed.
    #[error("too many failed attempts; try again in {} s", .0.retry_after_s())]
    TooManyFailures(TooManyFailures),
    /// The password is right for accounts of this address in several tenants: sign in
    /// again naming one of them.
    #[error("this address has an account in several customer accounts; choose one with `tenant_id`")]
    TenantRequired(Vec<TenantChoice>),
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
    /// The address is taken in this tenant (other tenants' addresses never conflict).
    #[error("a member of this account has this e-mail address already")]
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
            UserError::Database(d) if is_constraint(&d, store::EMAIL_KEY) => AccountError::EmailTaken,
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

/// A customer account the signing-in person may choose (their password matched there).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantChoice {
    pub tenant_id: TenantId,
    pub name: String,
}

/// Who is signing in, from where.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    pub email: &'a str,
    pub password: &'a str,
    /// The customer account, needed only when the password matches in several.
    pub tenant: Option<TenantId>,
    /// The source address (bad-credential limits).
    pub source: IpAddr,
    pub request_id: Option<&'a str>,
}

/// Checks the password and opens a session, audited in the user's tenant (`auth.login`).
///
/// The bad-credential limits are checked first, before any query or hashing; a failure
/// (unknown address or wrong password, which answer alike) feeds them, a success clears
/// this source's failures for the address. Every attempt that gets past the limits costs
/// one argon2 verification per account with the address (in `tenant` when given), and one
/// against a dummy hash when there is none, so an unknown address costs what a known one
/// does. An address in several tenants signs in to the one whose password matches; only
/// if it matches in several is the caller asked to choose (`TenantRequired`, naming just
/// those), so someone without the password learns nothing about other tenants.
pub async fn login(svc: &Services, limits: &CredentialLimits, sign_in: SignIn<'_>) -> Result<SignedIn, AccountError> {
    let SignIn { email, password, tenant, source, request_id } = sign_in;
    if let Err(t) = limits.check_sign_in(source, email) {
        svc.metrics.credential_refusals.with_label_values(&[t.scope.as_str()]).inc();
        return Err(AccountError::TooManyFailures(t));
    }
    let candidates = store::candidates(&svc.pool, email, tenant).await?;
    let verifications = svc.metrics.password_verifications.clone();
    let verify = |phc: String| {
        verifications.inc();
        async move { store::verify_password(password, &phc).await }
    };
    let matched: Vec<Candidate> = if candidates.is_empty() {
        verify(store::dummy_hash().await).await;
        Vec::new()
    } else {
        let checks = futures::future::join_all(candidates.iter().map(|c| verify(c.password_hash.clone()))).await;
        candidates.into_iter().zip(checks).filter_map(|(c, ok)| ok.then_some(c)).collect()
    };
    let candidate = match <[Candidate; 1]>::try_from(matched) {
        Ok([one]) => one,
        Err(matched) if matched.is_empty() => {
            limits.sign_in_failed(source, email);
            return Err(AccountError::InvalidCredentials);
        }
        Err(matched) => {
            limits.signed_in(source, email);
            let choices = matched
                .into_iter()
                .map(|c| TenantChoice { tenant_id: c.user.tenant_id, name: c.tenant_name })
                .collect();
            return Err(AccountError::TenantRequired(choices));
        }
    };
    limits.signed_in(source, email);
    if candidate.tenant_status != TenantStatus::Active {
        return Err(AccountError::TenantSuspended);
    }
    let user = candidate.user;
    let session = store::open_session(&svc.pool, &user, svc.auth.session_ttl_s).await?;
    let actor = Actor::tenant_user(user.id, &user.email);
    let mut tx = tenant_tx(&svc.pool, user.tenant_id).await?;
    Recorder::new(&actor, request_id)
        .record(&mut tx, Some(user.tenant_id), "auth.login", ("user", user.id.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(SignedIn { token: session.token.expose().clone(), expires_at: session.expires_at, user })
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
