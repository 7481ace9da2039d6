//! Operators' sign-in to the web console (`/api/v1/console/…`): an operator account's name
//! and password (and TOTP code, where the account has one) open a session whose secret is
//! set as the `__Host-hearth_console` cookie (`HttpOnly`, `Secure`, `SameSite=Strict`) and
//! never appears in a body; the body carries the session's CSRF token, which the page keeps
//! in memory and sends as `X-CSRF-Token` with every change. The rules are in
//! [`crate::domain::operator_accounts`]; how a cookie authenticates a request, in
//! [`super::auth`].

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{console_cookie, console_cookie_clear, console_cookie_header, Caller, OperatorAuth, Source};
use super::error::{ApiError, ApiJson, BadRequest};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::db::operator_accounts as sessions;
use crate::domain::operator_accounts::{self as accounts, ConsoleSession, SignIn, TotpEnrollment};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(session))
        .routes(routes!(logout))
        .routes(routes!(change_password))
        .routes(routes!(begin_totp))
        .routes(routes!(confirm_totp))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConsoleLogin {
    /// The operator account's name.
    name: String,
    password: String,
    /// The current code of the account's authenticator app, when it has TOTP.
    #[serde(default)]
    totp: Option<String>,
}

/// Sign in to the web console with an operator account.
///
/// Sets the session cookie and returns the session's CSRF token. A wrong name and a wrong
/// password answer alike; failures are limited as customers' sign-ins are (per source, per
/// name from that source, per name from everywhere).
#[utoipa::path(
    post,
    path = "/api/v1/console/login",
    operation_id = "console_login",
    tag = "console",
    request_body = ConsoleLogin,
    responses(
        (status = 200, description = "Signed in: the `Set-Cookie` header carries the session, the body its CSRF token",
            body = ConsoleSession),
        (status = 400, response = BadRequest),
        (status = 401, description = "`invalid_credentials` (name or password wrong), `totp_required` (the account \
                                      has TOTP: send `totp`) or `invalid_totp` (wrong, expired or used code)",
            body = ErrorBody),
        (status = 429, description = "`too_many_failures`: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a sign-in will be checked"))),
    )
)]
async fn login(
    State(s): State<AppState>,
    rid: RequestId,
    Source(source): Source,
    ApiJson(b): ApiJson<ConsoleLogin>,
) -> Result<Response, ApiError> {
    let sign_in =
        SignIn { name: &b.name, password: &b.password, totp: b.totp.as_deref(), source, request_id: Some(&rid.0) };
    let opened = accounts::login(&s.domain, &s.credentials, sign_in).await?;
    let cookie = console_cookie_header(opened.secret.expose(), s.domain.auth.operator_session_ttl_s);
    Ok(([(header::SET_COOKIE, cookie), (header::CACHE_CONTROL, "no-store".into())], ApiJson(opened.session))
        .into_response())
}

/// The console session of this request's cookie: who is signed in, and the CSRF token.
#[utoipa::path(
    get,
    path = "/api/v1/console/session",
    operation_id = "console_session",
    tag = "console",
    security(("console_session" = [])),
    responses(
        (status = 200, description = "Signed in", body = ConsoleSession),
        (status = 401, description = "`unauthorized`: no valid console session", body = ErrorBody),
    )
)]
async fn session(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    // Only the cookie counts here: an operator token is not a console session.
    let secret = console_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    let (operator, expires_at) = sessions::authenticate(&s.domain.pool, secret).await?.ok_or(ApiError::Unauthorized)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], ApiJson(accounts::describe(operator, secret, expires_at)))
        .into_response())
}

/// Sign out of the console: the session ends and the cookie is removed.
#[utoipa::path(
    post,
    path = "/api/v1/console/logout",
    operation_id = "console_logout",
    tag = "console",
    security(("console_session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "`unauthorized`: no valid console session", body = ErrorBody),
        (status = 403, description = "`csrf_failed`: the X-CSRF-Token header is missing or wrong", body = ErrorBody),
    )
)]
async fn logout(State(s): State<AppState>, _op: ConsoleOperator, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(secret) = console_cookie(&headers) {
        accounts::logout(&s.domain.pool, secret).await?;
    }
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, console_cookie_clear())]).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConsolePassword {
    current_password: String,
    /// At least 12 characters.
    new_password: String,
}

/// Change the signed-in operator's password; every other session of the account ends.
#[utoipa::path(
    post,
    path = "/api/v1/console/password",
    operation_id = "console_change_password",
    tag = "console",
    security(("console_session" = [])),
    request_body = ConsolePassword,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized` or `invalid_credentials` (the current password is wrong)",
            body = ErrorBody),
        (status = 403, description = "`csrf_failed`", body = ErrorBody),
        (status = 422, description = "`invalid_password`: the new password is too short", body = ErrorBody),
    )
)]
async fn change_password(
    State(s): State<AppState>,
    op: ConsoleOperator,
    rid: RequestId,
    headers: HeaderMap,
    ApiJson(b): ApiJson<ConsolePassword>,
) -> Result<StatusCode, ApiError> {
    let secret = console_cookie(&headers).ok_or(ApiError::Unauthorized)?;
    let actor = op.0.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    accounts::change_password(&s.domain.pool, op.0 .0.id, &b.current_password, &b.new_password, secret, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start TOTP for the signed-in operator: a new key, shown this once. It is asked for at
/// sign-in only after a code from it is confirmed.
#[utoipa::path(
    post,
    path = "/api/v1/console/totp",
    operation_id = "console_begin_totp",
    tag = "console",
    security(("console_session" = [])),
    responses(
        (status = 200, description = "The key, to be confirmed with a code", body = TotpEnrollment),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`csrf_failed`", body = ErrorBody),
        (status = 409, description = "`secrets_key_required`: the control plane has no `secrets.key` to seal the \
                                      key with", body = ErrorBody),
    )
)]
async fn begin_totp(State(s): State<AppState>, op: ConsoleOperator) -> Result<Response, ApiError> {
    let enrollment = accounts::begin_totp(&s.domain, &op.0 .0).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], ApiJson(enrollment)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpCode {
    /// Six digits from the authenticator app.
    code: String,
}

/// Confirm TOTP with a code from the new key: from now on sign-in asks for a code.
#[utoipa::path(
    post,
    path = "/api/v1/console/totp/confirm",
    operation_id = "console_confirm_totp",
    tag = "console",
    security(("console_session" = [])),
    request_body = TotpCode,
    responses(
        (status = 204, description = "TOTP is on"),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`, or `invalid_totp` (wrong or expired code)", body = ErrorBody),
        (status = 403, description = "`csrf_failed`", body = ErrorBody),
        (status = 409, description = "`no_pending_totp`: ask for a key first", body = ErrorBody),
    )
)]
async fn confirm_totp(
    State(s): State<AppState>,
    op: ConsoleOperator,
    rid: RequestId,
    ApiJson(b): ApiJson<TotpCode>,
) -> Result<StatusCode, ApiError> {
    let actor = op.0.actor();
    accounts::confirm_totp(&s.domain, &op.0 .0, &b.code, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An operator signed in with the console's cookie (not an operator token: these routes
/// are about the account behind the session).
struct ConsoleOperator(OperatorAuth);

impl axum::extract::FromRequestParts<AppState> for ConsoleOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        if super::auth::bearer(&parts.headers).is_some() || console_cookie(&parts.headers).is_none() {
            return Err(ApiError::Unauthorized);
        }
        match Caller::resolve(parts, state).await? {
            Caller::Operator(op) => Ok(ConsoleOperator(OperatorAuth(op))),
            _ => Err(ApiError::Unauthorized),
        }
    }
}
