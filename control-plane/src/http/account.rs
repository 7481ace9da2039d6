//! The customer's own account: sign-in for tenant users, the account with its plan and
//! quotas, members (owners manage them) and API keys (owners issue and revoke them).
//! Everything tenant-scoped runs in a tenant transaction and is audited in it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::auth::{Caller, Owner, Tenant};
use super::error::{ApiError, ApiJson};
use super::{AppState, RequestId};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, ApiKey};
use crate::db::users::{self, LoginRefusal, User, UserError, UserRole};
use crate::db::{self, tenant_tx};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/password", post(change_password))
        .route("/api/v1/account", get(account))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{id}", delete(delete_user))
        .route("/api/v1/keys", get(list_keys).post(issue_key))
        .route("/api/v1/keys/{id}", delete(revoke_key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct LoginResponse {
    /// `hearth_st_…`: send as `Authorization: Bearer …`.
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    user: User,
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::WeakPassword | UserError::BadEmail(_) => {
                ApiError::Unprocessable { code: "invalid_user", message: e.to_string(), details: serde_json::json!({}) }
            }
            UserError::Database(e) if db::is_constraint(&e, "tenant_users_email_key") => ApiError::Conflict {
                code: "email_taken",
                message: "an account with this e-mail address exists already".into(),
            },
            UserError::Database(e) => ApiError::Database(e),
            UserError::Hash(e) => ApiError::Internal(e),
        }
    }
}

async fn login(
    State(s): State<AppState>,
    rid: RequestId,
    ApiJson(b): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    match users::login(&s.pool, &b.email, &b.password, &s.auth).await? {
        Ok(session) => {
            let actor = Actor {
                kind: "tenant_user",
                id: Some(session.user.id.to_string()),
                name: Some(session.user.email.clone()),
            };
            let mut tx = tenant_tx(&s.pool, session.user.tenant_id).await?;
            Recorder::new(&actor, Some(&rid.0))
                .record(
                    &mut tx,
                    Some(session.user.tenant_id),
                    "auth.login",
                    ("user", session.user.id.to_string()),
                    None,
                    None,
                )
                .await?;
            tx.commit().await?;
            let body = LoginResponse {
                token: session.token.expose().clone(),
                expires_at: session.expires_at,
                user: session.user,
            };
            Ok(ApiJson(body).into_response())
        }
        Err(LoginRefusal::BadCredentials) => Err(ApiError::Refused {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            message: "the e-mail address or the password is wrong".into(),
        }),
        Err(LoginRefusal::Locked(until)) => {
            let wait = (until - OffsetDateTime::now_utc()).whole_seconds().max(1);
            let mut r = ApiError::Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "account_locked",
                message: format!("too many failed sign-ins; this account is locked for {wait} more seconds"),
            }
            .into_response();
            r.headers_mut().insert(RETRY_AFTER, wait.into());
            Ok(r)
        }
        Err(LoginRefusal::TenantSuspended) => Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            code: "tenant_suspended",
            message: "this customer account is suspended; contact the service operator".into(),
        }),
    }
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(users::SESSION_PREFIX))
        .ok_or(ApiError::Unauthorized)?;
    if users::logout(&s.pool, token).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the signed-in user's password; every session of theirs ends (sign in again).
async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    rid: RequestId,
    ApiJson(b): ApiJson<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let Caller::TenantUser { tenant, user, .. } = &caller else {
        return Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            code: "user_required",
            message: "only a signed-in user can change their password".into(),
        });
    };
    if !users::change_password(&s.pool, *user, &b.current_password, &b.new_password).await? {
        return Err(ApiError::Refused {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            message: "the current password is wrong".into(),
        });
    }
    let mut tx = tenant_tx(&s.pool, *tenant).await?;
    Recorder::new(&caller.actor(), Some(&rid.0))
        .record(&mut tx, Some(*tenant), "user.password_change", ("user", user.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct AccountView {
    tenant: tenants::Tenant,
    /// The plan's name; `null`: the service's default quotas.
    plan: Option<String>,
    quotas: Quotas,
}

async fn account(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<AccountView>, ApiError> {
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let t = tenants::get(&mut tx, tenant).await?.ok_or(ApiError::NotFound("tenant"))?;
    let (plan, quotas) = plans::quotas_for(&mut tx, tenant, s.limits).await?;
    tx.commit().await?;
    Ok(ApiJson(AccountView { tenant: t, plan, quotas }))
}

#[derive(Debug, Serialize)]
struct UserList {
    users: Vec<User>,
}

async fn list_users(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<UserList>, ApiError> {
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let users = users::list(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(UserList { users }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    pub email: String,
    /// At least 12 characters.
    pub password: String,
    pub role: UserRole,
}

async fn create_user(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<User>), ApiError> {
    let mut tx = tenant_tx(&s.pool, owner.tenant).await?;
    let user = users::create(&mut tx, owner.tenant, &b.email, &b.password, b.role).await?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "user.create", ("user", user.id.to_string()), None, snapshot(&user))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

async fn delete_user(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.pool, owner.tenant).await?;
    let user = users::delete(&mut tx, owner.tenant, id).await?.ok_or(ApiError::NotFound("user"))?;
    if user.role == "owner" && users::count_owners(&mut tx, owner.tenant).await? == 0 {
        return Err(ApiError::Conflict {
            code: "last_owner",
            message: "this is the account's last owner; make another member an owner first".into(),
        });
    }
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "user.delete", ("user", id.to_string()), snapshot(&user), None)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub(super) struct KeyList {
    pub keys: Vec<ApiKey>,
}

async fn list_keys(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<KeyList>, ApiError> {
    let mut tx = tenant_tx(&s.pool, tenant).await?;
    let keys = tenants::list_keys(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(KeyList { keys }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// A label, e.g. "home-assistant".
    pub name: String,
}

#[derive(Debug, Serialize)]
pub(super) struct IssuedKey {
    #[serde(flatten)]
    pub info: ApiKey,
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
}

pub(super) fn check_label(what: &'static str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: format!("{what} must be 1 to 100 characters"),
            details: serde_json::json!({ "param": what }),
        });
    }
    Ok(())
}

async fn issue_key(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(b): ApiJson<NewKey>,
) -> Result<(StatusCode, ApiJson<IssuedKey>), ApiError> {
    check_label("name", &b.name)?;
    let mut tx = tenant_tx(&s.pool, owner.tenant).await?;
    let (info, key) = tenants::issue_key(&mut tx, owner.tenant, &b.name, &owner.actor.label()).await?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(IssuedKey { info, key: key.expose().clone() })))
}

async fn revoke_key(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<ApiKey>, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.pool, owner.tenant).await?;
    let key = tenants::revoke_key(&mut tx, owner.tenant, id).await?.ok_or(ApiError::NotFound("API key"))?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "api_key.revoke", ("api_key", id.to_string()), None, snapshot(&key))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(key))
}
