//! The customer's own account: sign-in for tenant users, the account with its plan and
//! quotas, members (owners manage them) and API keys (owners issue and revoke them).
//! Everything tenant-scoped runs in a tenant transaction and is audited in it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{bearer, Caller, Owner, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, OwnerForbidden, TenantForbidden};
use super::{AppState, RequestId};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, ApiKey};
use crate::db::users::{self, LoginRefusal, User, UserError, UserRole};
use crate::db::{self, tenant_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(change_password))
        .routes(routes!(account))
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(list_keys, issue_key))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
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

/// Sign in with an e-mail address and a password.
///
/// Returns a short-lived session token (`hearth_st_…`). After too many failures in a row
/// the account is locked for a while; a wrong password and an unknown address answer alike.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "account",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`invalid_credentials`: the e-mail address or the password is wrong", body = ErrorBody),
        (status = 403, description = "`tenant_suspended`: the customer account is suspended", body = ErrorBody),
        (status = 429, description = "`account_locked`: too many failed sign-ins; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until the account is unlocked"))),
    )
)]
async fn login(
    State(s): State<AppState>,
    rid: RequestId,
    ApiJson(b): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    match users::login(&s.domain.pool, &b.email, &b.password, &s.domain.auth).await? {
        Ok(session) => {
            let actor = Actor {
                kind: "tenant_user",
                id: Some(session.user.id.to_string()),
                name: Some(session.user.email.clone()),
            };
            let mut tx = tenant_tx(&s.domain.pool, session.user.tenant_id).await?;
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

/// Sign out: end the session whose token is sent.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "account",
    security(("session_token" = [])),
    responses(
        (status = 204, description = "Signed out; the token no longer works"),
    )
)]
async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers).filter(|t| t.starts_with(users::SESSION_PREFIX)).ok_or(ApiError::Unauthorized)?;
    if users::logout(&s.domain.pool, token).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    /// At least 12 characters.
    new_password: String,
}

/// Change the signed-in user's password.
///
/// Every session of the user ends, this one included: sign in again.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "account",
    security(("session_token" = [])),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Changed; every session of the user has ended"),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized` (no valid credential) or `invalid_credentials` (the current \
                                      password is wrong)", body = ErrorBody),
        (status = 403, description = "`user_required`: the credential is not a signed-in user's (an API key or \
                                      an operator token)", body = ErrorBody),
        (status = 422, description = "`invalid_user`: the new password is too short", body = ErrorBody),
    )
)]
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
    if !users::change_password(&s.domain.pool, *user, &b.current_password, &b.new_password).await? {
        return Err(ApiError::Refused {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            message: "the current password is wrong".into(),
        });
    }
    let mut tx = tenant_tx(&s.domain.pool, *tenant).await?;
    Recorder::new(&caller.actor(), Some(&rid.0))
        .record(&mut tx, Some(*tenant), "user.password_change", ("user", user.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
struct AccountView {
    tenant: tenants::Tenant,
    /// The plan's name; `null`: the service's default quotas.
    plan: Option<String>,
    /// The quotas in force.
    quotas: Quotas,
}

/// The account: the tenant, its plan and its quotas.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    tag = "account",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn account(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<AccountView>, ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let t = tenants::get(&mut tx, tenant).await?.ok_or(ApiError::NotFound("tenant"))?;
    let (plan, quotas) = plans::quotas_for(&mut tx, tenant, s.domain.limits).await?;
    tx.commit().await?;
    Ok(ApiJson(AccountView { tenant: t, plan, quotas }))
}

#[derive(Debug, Serialize, ToSchema)]
struct UserList {
    /// Oldest first.
    users: Vec<User>,
}

/// The account's members.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "account",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The members", body = UserList),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list_users(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<UserList>, ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let users = users::list(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(UserList { users }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    pub email: String,
    /// At least 12 characters.
    pub password: String,
    pub role: UserRole,
}

/// Add a member to the account (owners only).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "account",
    security(("session_token" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "The new member", body = User),
        (status = 400, response = BadRequest),
        (status = 403, response = OwnerForbidden),
        (status = 409, description = "`email_taken`: an account with this e-mail address exists already", body = ErrorBody),
        (status = 422, description = "`invalid_user`: the e-mail address is not one, or the password is too short", body = ErrorBody),
    )
)]
async fn create_user(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<User>), ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, owner.tenant).await?;
    let user = users::create(&mut tx, owner.tenant, &b.email, &b.password, b.role).await?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "user.create", ("user", user.id.to_string()), None, snapshot(&user))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

/// Remove a member from the account (owners only); their sessions end.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "account",
    security(("session_token" = [])),
    params(("id" = Uuid, Path, description = "The member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 403, response = OwnerForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`last_owner`: this is the account's last owner", body = ErrorBody),
    )
)]
async fn delete_user(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.domain.pool, owner.tenant).await?;
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

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyList {
    /// Revoked ones too, oldest first; never the keys themselves.
    pub keys: Vec<ApiKey>,
}

/// The account's API keys.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "account",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The API keys", body = KeyList),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list_keys(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<KeyList>, ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let keys = tenants::list_keys(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(KeyList { keys }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// A label, e.g. "home-assistant".
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IssuedKey {
    #[serde(flatten)]
    pub info: ApiKey,
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
}

/// A name or label: 1 to `max` characters once trimmed (what is stored).
pub(super) fn check_label(what: &'static str, name: &str, max: usize) -> Result<(), ApiError> {
    let n = name.trim().chars().count();
    if n == 0 || n > max {
        return Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: format!("{what} must be 1 to {max} characters"),
            details: serde_json::json!({ "param": what }),
        });
    }
    Ok(())
}

/// Issue an API key (owners only); the key is in the answer, and only there.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "account",
    security(("session_token" = [])),
    request_body = NewKey,
    responses(
        (status = 201, description = "The new key", body = IssuedKey),
        (status = 400, response = BadRequest),
        (status = 403, response = OwnerForbidden),
        (status = 422, description = "`invalid_body`: the name is empty or longer than 100 characters; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn issue_key(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(b): ApiJson<NewKey>,
) -> Result<(StatusCode, ApiJson<IssuedKey>), ApiError> {
    check_label("name", &b.name, 100)?;
    let mut tx = tenant_tx(&s.domain.pool, owner.tenant).await?;
    let (info, key) = tenants::issue_key(&mut tx, owner.tenant, b.name.trim(), &owner.actor.label()).await?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(IssuedKey { info, key: key.expose().clone() })))
}

/// Revoke an API key (owners only); it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "account",
    security(("session_token" = [])),
    params(("id" = Uuid, Path, description = "The API key")),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 400, response = BadRequest),
        (status = 403, response = OwnerForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn revoke_key(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<ApiKey>, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.domain.pool, owner.tenant).await?;
    let key = tenants::revoke_key(&mut tx, owner.tenant, id).await?.ok_or(ApiError::NotFound("API key"))?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(&mut tx, Some(owner.tenant), "api_key.revoke", ("api_key", id.to_string()), None, snapshot(&key))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(key))
}
