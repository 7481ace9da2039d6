//! The customer's own account: sign-in for tenant users, the account with its plan and
//! quotas, members (owners manage them) and API keys (owners issue and revoke them). The
//! rules are in [`crate::domain::accounts`] and [`crate::domain::tenants`] (keys).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApiKeyId, TenantId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{bearer, Caller, Owner, Source, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, OwnerForbidden, TenantForbidden};
use super::shared::{KeyList, NewKey};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::db::tenants::ApiKey;
use crate::db::users::User;
use crate::domain::accounts::{self, AccountView, NewUser, SignIn, SignedIn};
use crate::domain::tenants::{self, IssuedKey};

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
    /// The customer account to sign in to; needed only when the answer was
    /// `tenant_required` (the address has an account, with this password, in several).
    #[serde(default)]
    tenant_id: Option<TenantId>,
}

/// Sign in with an e-mail address and a password.
///
/// Returns a short-lived session token (`hearth_st_…`). A wrong password and an unknown
/// address answer alike. Failures are limited per source, per address from that source and
/// per address from everywhere (sources that signed in to it before are exempt); over a
/// limit the answer is `429 too_many_failures` before the password is even checked. An
/// address with accounts in several customer accounts signs in to the one whose password
/// matches; if it matches in several, the answer is `422 tenant_required` listing those,
/// and the caller signs in again with `tenant_id`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "account",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = SignedIn),
        (status = 400, response = BadRequest),
        (status = 401, description = "`invalid_credentials`: the e-mail address or the password is wrong", body = ErrorBody),
        (status = 403, description = "`tenant_suspended`: the customer account is suspended", body = ErrorBody),
        (status = 422, description = "`tenant_required`: the password matches accounts of this address in several \
                                      customer accounts; `details.tenants` lists them (`tenant_id`, `name`): send \
                                      one as `tenant_id`", body = ErrorBody),
        (status = 429, description = "`too_many_failures`: too many failed sign-ins from this source, or for this \
                                      address; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until a sign-in will be checked"))),
    )
)]
async fn login(
    State(s): State<AppState>,
    rid: RequestId,
    Source(source): Source,
    ApiJson(b): ApiJson<LoginBody>,
) -> Result<ApiJson<SignedIn>, ApiError> {
    let sign_in =
        SignIn { email: &b.email, password: &b.password, tenant: b.tenant_id, source, request_id: Some(&rid.0) };
    Ok(ApiJson(accounts::login(&s.domain, &s.credentials, sign_in).await?))
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
    let token = bearer(&headers).ok_or(ApiError::Unauthorized)?;
    accounts::logout(&s.domain.pool, token).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    accounts::change_password(&s.domain.pool, *tenant, *user, &b.current_password, &b.new_password, audit).await?;
    Ok(StatusCode::NO_CONTENT)
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
    Ok(ApiJson(accounts::account(&s.domain.pool, s.domain.limits, tenant).await?))
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
    Ok(ApiJson(UserList { users: accounts::list_users(&s.domain.pool, tenant).await? }))
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
        (status = 409, description = "`email_taken`: a member of this account has this e-mail address already \
                                      (other customer accounts' addresses never conflict)", body = ErrorBody),
        (status = 422, description = "`invalid_user`: the e-mail address is not one, or the password is too short", body = ErrorBody),
    )
)]
async fn create_user(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<User>), ApiError> {
    let user =
        accounts::create_user(&s.domain.pool, owner.tenant, b, Recorder::new(&owner.actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

/// Remove a member from the account (owners only); their sessions end.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "account",
    security(("session_token" = [])),
    params(("id" = UserId, Path, description = "The member")),
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
    id: Result<Path<UserId>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    accounts::delete_user(&s.domain.pool, owner.tenant, id, Recorder::new(&owner.actor, Some(&rid.0))).await?;
    Ok(StatusCode::NO_CONTENT)
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
    Ok(ApiJson(KeyList { keys: tenants::list_keys(&s.domain.pool, tenant).await? }))
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
    let audit = Recorder::new(&owner.actor, Some(&rid.0));
    Ok((StatusCode::CREATED, ApiJson(tenants::issue_key(&s.domain.pool, owner.tenant, &b.name, audit).await?)))
}

/// Revoke an API key (owners only); it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "account",
    security(("session_token" = [])),
    params(("id" = ApiKeyId, Path, description = "The API key")),
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
    id: Result<Path<ApiKeyId>, PathRejection>,
) -> Result<ApiJson<ApiKey>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(tenants::revoke_key(&s.domain.pool, owner.tenant, id, Recorder::new(&owner.actor, Some(&rid.0))).await?))
}
