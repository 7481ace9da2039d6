//! The API's one error type. Every error is `{"error": {"code", "message"}}` with a stable
//! code; details of 5xx errors are logged with the request, never sent.
//!
//! Domain errors (`crate::domain::*::…Error`) become an `ApiError` here, each mapped once to a
//! status and a stable code, so a handler just writes `?`.
//!
//! The error responses endpoints share are declared once here for the OpenAPI document
//! ([`Unauthorized`], [`NotFound`], [`BadRequest`], [`Internal`], [`Unavailable`], and the
//! 403s of the credential extractors: [`TenantForbidden`], [`OwnerForbidden`],
//! [`ForbiddenForRole`]). `500`, `503`, `401` (where a credential is needed) and `429` (on
//! customer operations) are added to every operation by `openapi::document`, and so are
//! [`PayloadTooLarge`], [`UnsupportedMediaType`] and [`InvalidText`] (what [`ApiJson`] and
//! [`ApiQuery`], the only body and query extractors, refuse); a handler lists
//! the others it returns as `(status = 404, response = NotFound)`, and codes only one
//! endpoint returns inline, with `body = ErrorBody`.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_protocol::api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;

use crate::db::users::UserError;
use crate::domain::accounts::AccountError;
use crate::domain::appliances::ApplianceError;
use crate::domain::ca_rotation::RotationError;
use crate::domain::desired::secrets::SecretError;
use crate::domain::desired::DesiredError;
use crate::domain::enrollment::EnrollError;
use crate::domain::events::EventError;
use crate::domain::operator_accounts::OperatorAccountError;
use crate::domain::operators::OperatorError;
use crate::domain::plans::PlanError;
use crate::domain::rollouts::RolloutError;
use crate::domain::support::SupportError;
use crate::domain::tasks::TaskError;
use crate::domain::tenants::TenantError;
use crate::domain::webhooks::WebhookError;
use crate::domain::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Refused { status: StatusCode, code: &'static str, message: String },
    /// 409 with `details` (what is in the way).
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String, details: serde_json::Value },
    /// 422: the request is well-formed but breaks a rule; `details` says which.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String, details: serde_json::Value },
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// 429 `too_many_failures`: a bad-credential limit refused the credential or sign-in
    /// before it was checked; the response carries `Retry-After`.
    #[error("too many failed attempts")]
    TooManyFailures(crate::limits::TooManyFailures),
    /// The request took longer than `http.request_timeout_s` and was stopped.
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// 422 `invalid_text`: a string holds U+0000, which PostgreSQL cannot store.
    pub fn invalid_text(param: String) -> Self {
        ApiError::Unprocessable {
            code: "invalid_text",
            message: format!("{param} contains a NUL character (U+0000), which cannot be stored"),
            details: serde_json::json!({ "param": param }),
        }
    }

    /// 413 `payload_too_large`: the body is over [`MAX_BODY_BYTES`].
    pub fn payload_too_large() -> Self {
        ApiError::Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("the request body is larger than {} MiB", MAX_BODY_BYTES / (1024 * 1024)),
        }
    }

    /// 415 `unsupported_media_type`: a body that is not declared as JSON.
    pub fn unsupported_media_type() -> Self {
        ApiError::Refused {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "send the body as JSON with `Content-Type: application/json`".into(),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            ApiError::Unprocessable { details, .. } | ApiError::ConflictWith { details, .. } => Some(details.clone()),
            _ => None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid credential as `Authorization: Bearer …`: a tenant API key (hearth_tk_…), a sign-in token (hearth_st_…) or an operator token (hearth_ot_…)".into(),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message.clone()),
            ApiError::Conflict { code, message } | ApiError::ConflictWith { code, message, .. } => {
                (StatusCode::CONFLICT, code, message.clone())
            }
            ApiError::Refused { status, code, message } => (*status, code, message.clone()),
            ApiError::Unprocessable { code, message, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code, message.clone()),
            ApiError::Unavailable(what) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{what} is unavailable"))
            }
            ApiError::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {limit:?} and was stopped; nothing half-done was kept, try again"),
            ),
            ApiError::TooManyFailures(t) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many failed attempts; try again in {} s", t.retry_after_s()),
            ),
            ApiError::Database(_) | ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message, details: self.details() } };
        let mut r = (status, Json(body)).into_response();
        if let ApiError::TooManyFailures(t) = &self {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, t.retry_after_s().into());
        }
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(),
            _ => ApiError::bad_request("invalid_body", r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

// Domain errors, each mapped once to a status and a stable code.

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::Unprocessable {
            code: "invalid_body",
            message: e.message,
            details: serde_json::json!({ "param": e.param }),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let message = e.to_string();
        match e {
            TaskError::ApplianceNotFound => ApiError::NotFound("appliance"),
            TaskError::TaskNotFound => ApiError::NotFound("task"),
            TaskError::ApplianceRevoked => ApiError::Conflict { code: "appliance_revoked", message },
            TaskError::BadDeadline { .. } => ApiError::bad_request("invalid_body", message),
            TaskError::Catalog(r) => ApiError::Unprocessable {
                code: "invalid_params",
                message,
                details: serde_json::json!({ "param": r.param, "rule": r.rule }),
            },
            TaskError::NotCancellable(_) => ApiError::Conflict { code: "task_not_cancellable", message },
            TaskError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        let message = e.to_string();
        match e {
            RolloutError::NotFound => ApiError::NotFound("rollout"),
            RolloutError::Invalid(e) => e.into(),
            RolloutError::Catalog(r) => ApiError::Unprocessable {
                code: "invalid_params",
                message,
                details: serde_json::json!({ "param": r.param, "rule": r.rule }),
            },
            RolloutError::Config(e) => ApiError::Unprocessable {
                code: "invalid_config",
                message,
                details: serde_json::json!({ "path": format!("payload.config.{}", e.path), "rule": e.rule }),
            },
            RolloutError::State { .. } => ApiError::Conflict { code: "rollout_state", message },
            RolloutError::Started { .. } => ApiError::Conflict { code: "rollout_started", message },
            RolloutError::Limit { .. } => ApiError::Conflict { code: "rollout_limit", message },
            RolloutError::OperatorOnly => {
                ApiError::Refused { status: StatusCode::FORBIDDEN, code: "operator_only", message }
            }
            RolloutError::Database(e) => ApiError::Database(e),
        }
    }
}

// domain::events and domain::webhooks

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(e) => e.into(),
            EventError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let message = e.to_string();
        match e {
            WebhookError::NotFound => ApiError::NotFound("webhook endpoint"),
            WebhookError::DeliveryNotFound => ApiError::NotFound("delivery"),
            WebhookError::Invalid(e) => e.into(),
            WebhookError::Limit { limit } => ApiError::Unprocessable {
                code: "webhook_limit",
                message,
                details: serde_json::json!({ "param": "webhook_endpoints", "limit": limit }),
            },
            WebhookError::NoKey => {
                ApiError::Unprocessable { code: "secrets_unavailable", message, details: serde_json::json!({}) }
            }
            WebhookError::Secret => ApiError::Internal(message),
            WebhookError::Database(e) => ApiError::Database(e),
        }
    }
}

// domain::support
impl From<SupportError> for ApiError {
    fn from(e: SupportError) -> Self {
        let message = e.to_string();
        match e {
            SupportError::ConversationNotFound => ApiError::NotFound("conversation"),
            SupportError::ProposalNotFound => ApiError::NotFound("proposal"),
            SupportError::ApplianceNotFound => ApiError::NotFound("appliance"),
            SupportError::EmptyMessage => ApiError::bad_request("invalid_body", message),
            SupportError::MessageTooLong { length, max } => ApiError::Unprocessable {
                code: "message_too_long",
                message,
                details: serde_json::json!({ "max": max, "length": length }),
            },
            SupportError::ConversationFull => ApiError::Conflict { code: "conversation_full", message },
            SupportError::ProposalNotPending(_) => ApiError::Conflict { code: "proposal_not_pending", message },
            SupportError::Task(e) => e.into(),
            SupportError::Assistant(_) | SupportError::AnswerFailed(_) => ApiError::Internal(message),
            SupportError::Database(e) => ApiError::Database(e),
        }
    }
}

// domain::appliances, domain::enrollment, domain::desired

impl From<ApplianceError> for ApiError {
    fn from(e: ApplianceError) -> Self {
        let message = e.to_string();
        match e {
            ApplianceError::NotFound => ApiError::NotFound("appliance"),
            ApplianceError::TenantNotFound => ApiError::NotFound("tenant"),
            ApplianceError::BadLimit { .. } => ApiError::bad_request("invalid_query", message),
            ApplianceError::NameTaken(_) => ApiError::Conflict { code: "appliance_name_taken", message },
            ApplianceError::Revoked => ApiError::Conflict { code: "appliance_revoked", message },
            ApplianceError::Invalid(e) => e.into(),
            ApplianceError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        let message = e.to_string();
        match e {
            RotationError::InProgress { .. } => ApiError::Conflict { code: "rotation_in_progress", message },
            RotationError::NotRotating => ApiError::Conflict { code: "rotation_not_started", message },
            RotationError::Dependents { count, appliances } => ApiError::ConflictWith {
                code: "appliances_depend_on_retiring_ca",
                message,
                details: serde_json::json!({ "count": count, "appliances": appliances }),
            },
            RotationError::NotWritable { .. } => ApiError::Conflict { code: "pki_not_writable", message },
            RotationError::Pki(e) => ApiError::Internal(e.to_string()),
            RotationError::Database(e) => ApiError::Database(e),
        }
    }
}

// domain::tenants, domain::accounts, domain::operators, domain::plans

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        let message = e.to_string();
        match e {
            TenantError::NotFound => ApiError::NotFound("tenant"),
            TenantError::KeyNotFound => ApiError::NotFound("API key"),
            TenantError::UnknownPlan => ApiError::Unprocessable {
                code: "unknown_plan",
                message,
                details: serde_json::json!({ "param": "plan_id" }),
            },
            TenantError::Invalid(e) => e.into(),
            TenantError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let message = e.to_string();
        let refused = |status, code| ApiError::Refused { status, code, message: message.clone() };
        match e {
            AccountError::InvalidCredentials | AccountError::WrongPassword => {
                refused(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            AccountError::TooManyFailures(t) => ApiError::TooManyFailures(t),
            AccountError::TenantRequired(tenants) => ApiError::Unprocessable {
                code: "tenant_required",
                message,
                details: serde_json::json!({ "param": "tenant_id", "tenants": tenants }),
            },
            AccountError::TenantSuspended => refused(StatusCode::FORBIDDEN, "tenant_suspended"),
            AccountError::NoSession => ApiError::Unauthorized,
            AccountError::TenantNotFound => ApiError::NotFound("tenant"),
            AccountError::UserNotFound => ApiError::NotFound("user"),
            AccountError::LastOwner => ApiError::Conflict { code: "last_owner", message },
            AccountError::EmailTaken => ApiError::Conflict { code: "email_taken", message },
            AccountError::User(e) => e.into(),
            AccountError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        let message = e.to_string();
        let refused = |status, code| ApiError::Refused { status, code, message: message.clone() };
        match e {
            EnrollError::TokenInvalid => refused(StatusCode::UNAUTHORIZED, "enrollment_token_invalid"),
            EnrollError::TokenUsed => refused(StatusCode::CONFLICT, "enrollment_token_used"),
            EnrollError::TokenExpired => refused(StatusCode::GONE, "enrollment_token_expired"),
            EnrollError::ApplianceRevoked => refused(StatusCode::FORBIDDEN, "appliance_revoked"),
            EnrollError::TenantSuspended => refused(StatusCode::FORBIDDEN, "tenant_suspended"),
            EnrollError::CsrTooLarge { .. } | EnrollError::InvalidCsr(_) => {
                ApiError::bad_request("invalid_csr", message)
            }
            EnrollError::Pki(_) => ApiError::Internal(message),
            EnrollError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::WeakPassword | UserError::BadEmail(_) => {
                ApiError::Unprocessable { code: "invalid_user", message: e.to_string(), details: serde_json::json!({}) }
            }
            UserError::Database(e) if crate::db::is_constraint(&e, crate::db::users::EMAIL_KEY) => ApiError::Conflict {
                code: "email_taken",
                message: "a member of this account has this e-mail address already".into(),
            },
            UserError::Database(e) => ApiError::Database(e),
            UserError::Hash(e) => ApiError::Internal(e),
        }
    }
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::NotFound => ApiError::NotFound("operator"),
            OperatorError::Invalid(e) => e.into(),
            OperatorError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<OperatorAccountError> for ApiError {
    fn from(e: OperatorAccountError) -> Self {
        let message = e.to_string();
        let refused = |status, code| ApiError::Refused { status, code, message: message.clone() };
        match e {
            OperatorAccountError::InvalidCredentials | OperatorAccountError::WrongPassword => {
                refused(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            OperatorAccountError::TotpRequired => refused(StatusCode::UNAUTHORIZED, "totp_required"),
            OperatorAccountError::InvalidTotp => refused(StatusCode::UNAUTHORIZED, "invalid_totp"),
            OperatorAccountError::TooManyFailures(t) => ApiError::TooManyFailures(t),
            OperatorAccountError::NoPendingTotp => ApiError::Conflict { code: "no_pending_totp", message },
            OperatorAccountError::NoSecretsKey => ApiError::Conflict { code: "secrets_key_required", message },
            OperatorAccountError::NotFound => ApiError::NotFound("operator account"),
            OperatorAccountError::NameTaken => ApiError::Conflict { code: "operator_name_taken", message },
            OperatorAccountError::Invalid(e) => e.into(),
            OperatorAccountError::Password(UserError::WeakPassword) => ApiError::Unprocessable {
                code: "invalid_password",
                message,
                details: serde_json::json!({ "param": "password" }),
            },
            OperatorAccountError::Password(e) => e.into(),
            OperatorAccountError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        let message = e.to_string();
        match e {
            PlanError::NotFound => ApiError::NotFound("plan"),
            PlanError::NameTaken => ApiError::Conflict { code: "plan_name_taken", message },
            PlanError::Invalid(e) => e.into(),
            PlanError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<DesiredError> for ApiError {
    fn from(e: DesiredError) -> Self {
        let message = e.to_string();
        match e {
            DesiredError::ApplianceNotFound => ApiError::NotFound("appliance"),
            DesiredError::Invalid(e) => ApiError::Unprocessable {
                code: "invalid_config",
                message,
                details: serde_json::json!({ "path": e.path, "rule": e.rule }),
            },
            DesiredError::Secret(SecretError::NoKey) => {
                ApiError::Unprocessable { code: "secrets_unavailable", message, details: serde_json::json!({}) }
            }
            DesiredError::Secret(SecretError::BadSecret { path } | SecretError::NothingToKeep { path }) => {
                ApiError::Unprocessable {
                    code: "invalid_config",
                    message,
                    details: serde_json::json!({ "path": path, "rule": "secret" }),
                }
            }
            DesiredError::Secret(_) => ApiError::Internal(message),
            DesiredError::Database(e) => ApiError::Database(e),
        }
    }
}

/// The largest request body accepted (`http::app` sets it as the body limit): a larger one
/// is `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The JSON body extractor every handler uses; its rejections are [`ApiError`]s:
///
/// - `415 unsupported_media_type`: the body is not declared `application/json` (or
///   `application/…+json`);
/// - `413 payload_too_large`: the body is larger than [`MAX_BODY_BYTES`];
/// - `422 invalid_text`: a string anywhere in the document (a key or a value, at any depth)
///   holds U+0000, which PostgreSQL cannot store in `text`; `details.param` names where;
/// - `400 invalid_body`: the JSON is malformed or does not fit the type.
///
/// So no handler ever receives text PostgreSQL would refuse.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
            _ => ApiError::bad_request("invalid_body", r.body_text()),
        })?;
        if let Some(param) = nul_in_json(&bytes) {
            return Err(ApiError::invalid_text(param));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// The query string extractor every handler uses: `422 invalid_text` for a `%00` in a
/// parameter's name or value (`details.param` names it), `400 invalid_query` for a
/// malformed one.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(param) = nul_in_query(parts.uri.query().unwrap_or("")) {
            return Err(ApiError::invalid_text(param));
        }
        let Query(value) = Query::<T>::try_from_uri(&parts.uri)?;
        Ok(ApiQuery(value))
    }
}

/// `application/json` or `application/<anything>+json`, parameters (`; charset=…`) aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json") && sub.len() > 5)
}

/// Where a JSON document holds U+0000 in a key or a string value, as a path
/// (`params.servers[1]`; `.` for the document itself). JSON can only carry U+0000 escaped,
/// so a document without `\u0000` is not parsed twice.
fn nul_in_json(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    // A malformed document is left to the typed parse, which says what is wrong with it.
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    nul_in_value(&value, "")
}

fn nul_in_value(v: &serde_json::Value, path: &str) -> Option<String> {
    let shown = |p: &str| if p.is_empty() { ".".to_owned() } else { p.to_owned() };
    match v {
        serde_json::Value::String(s) => s.contains('\0').then(|| shown(path)),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_in_value(item, &format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.contains('\0') {
                Some(child.replace('\0', "\\u0000"))
            } else {
                nul_in_value(item, &child)
            }
        }),
        _ => None,
    }
}

/// The name of the first query parameter whose name or value holds `%00` (U+0000 once
/// decoded; a URI cannot carry it raw, and `%25` decodes to `%`, so `%2500` is not one).
fn nul_in_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        pair.contains("%00").then(|| name.replace("%00", "\\u0000"))
    })
}

/// 401 `unauthorized`: the tenant API key is missing or invalid.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`unauthorized`: the credentials are missing or invalid",
    example = json!({"error": {"code": "unauthorized", "message": "send a tenant API key as `Authorization: Bearer hearth_tk_…`"}})
)]
pub struct Unauthorized(#[allow(dead_code)] ErrorBody);

/// 404 `not_found`: no such resource for this tenant (another tenant's ids answer the same).
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`not_found`: no such resource, or it belongs to another tenant (indistinguishable on purpose)",
    example = json!({"error": {"code": "not_found", "message": "appliance not found"}})
)]
pub struct NotFound(#[allow(dead_code)] ErrorBody);

/// 400: the request cannot be read.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`invalid_body` (the JSON body is malformed or has unknown fields), `invalid_path` (an id in the \
                   path is not a canonical UUID) or `invalid_query` (a query parameter is malformed or out of range)",
    example = json!({"error": {"code": "invalid_path", "message": "Invalid URL: invalid appliance id: \"x\" is not a UUID"}})
)]
pub struct BadRequest(#[allow(dead_code)] ErrorBody);

/// 413 `payload_too_large`: the body is over the limit.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`payload_too_large`: the request body is larger than 2 MiB",
    example = json!({"error": {"code": "payload_too_large", "message": "the request body is larger than 2 MiB"}})
)]
pub struct PayloadTooLarge(#[allow(dead_code)] ErrorBody);

/// 415 `unsupported_media_type`: the body is not declared as JSON.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`",
    example = json!({"error": {"code": "unsupported_media_type", "message": "send the body as JSON with `Content-Type: application/json`"}})
)]
pub struct UnsupportedMediaType(#[allow(dead_code)] ErrorBody);

/// 422 `invalid_text`: a string of the body or the query holds U+0000.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = INVALID_TEXT,
    example = json!({"error": {"code": "invalid_text", "message": "email contains a NUL character (U+0000), which cannot be stored", "details": {"param": "email"}}})
)]
pub struct InvalidText(#[allow(dead_code)] ErrorBody);

/// How the OpenAPI document describes `invalid_text`, alone or after an operation's own 422s.
pub const INVALID_TEXT: &str = "`invalid_text`: a string of the body or the query (a key or a value) holds a NUL \
                                character (U+0000), which cannot be stored; `details.param` names it";

/// 403 from a customer endpoint (an API key or a signed-in user of the tenant).
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`tenant_suspended` (the customer account is suspended) or `wrong_credential` (an operator \
                   token was sent to a customer endpoint)",
    example = json!({"error": {"code": "tenant_suspended", "message": "this customer account is suspended; contact the service operator"}})
)]
pub struct TenantForbidden(#[allow(dead_code)] ErrorBody);

/// 403 from an endpoint only a signed-in owner of the account may use.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`owner_required` (the caller is not a signed-in owner: API keys, members and operators may \
                   not do this) or `tenant_suspended` (the customer account is suspended)",
    example = json!({"error": {"code": "owner_required", "message": "only a signed-in owner of the account may do this"}})
)]
pub struct OwnerForbidden(#[allow(dead_code)] ErrorBody);

/// 403 `forbidden_for_role`: the operator's role does not allow this change.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`forbidden_for_role`: the operator's role does not allow this (`support` may only read and \
                   create tasks, `viewer` may only read); `csrf_failed`: sent with the console's session cookie \
                   but without its `X-CSRF-Token`",
    example = json!({"error": {"code": "forbidden_for_role", "message": "the operator role `viewer` may not do this"}})
)]
pub struct ForbiddenForRole(#[allow(dead_code)] ErrorBody);

/// 429 `rate_limited`: the customer account's API request limit (its plan's quota).
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`rate_limited`: too many requests for this customer account's plan, or `too_many_failures`: too \
                   many failed credentials from this source address (the credential was not checked); `Retry-After` \
                   says when to try again, `X-RateLimit-Kind` which limit fired (`api`), `X-RateLimit-Policy` the quota and \
                   `X-RateLimit-Remaining` what is left (every tenant response carries these three)",
    headers(
        ("Retry-After" = u64, description = "Seconds until a request will be accepted"),
        ("X-RateLimit-Kind" = String, description = "Which limit decided: `api`"),
        ("X-RateLimit-Policy" = String, description = "The quota, e.g. `600 per minute, burst 100`"),
        ("X-RateLimit-Remaining" = u32, description = "Requests that may still come at once"),
    ),
    example = json!({"error": {"code": "rate_limited", "message": "too many requests: this account's api limit is 600 per minute, burst 100; try again in 1 s"}})
)]
pub struct RateLimited(#[allow(dead_code)] ErrorBody);

/// 429 `too_many_failures`: the bad-credential limits refused the credential unchecked.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`too_many_failures`: too many failed credentials from this source address (or this very \
                   credential failed too often); it was not checked. `Retry-After` says when to try again",
    headers(("Retry-After" = u64, description = "Seconds until a credential from this source will be checked")),
    example = json!({"error": {"code": "too_many_failures", "message": "too many failed attempts; try again in 6 s"}})
)]
pub struct TooManyFailures(#[allow(dead_code)] ErrorBody);

/// 500 `internal`: logged on the server with the request; no details are sent.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`internal`: something went wrong on the server; details are logged, never sent",
    example = json!({"error": {"code": "internal", "message": "something went wrong on our side; it has been logged"}})
)]
pub struct Internal(#[allow(dead_code)] ErrorBody);

/// 503: the request timed out, or something it needs is down.
#[derive(Debug, utoipa::ToResponse)]
#[response(
    description = "`timeout` (the request took longer than the server's request timeout and was stopped; its \
                   transaction was rolled back) or `unavailable` (a service it needs, such as the database, is \
                   down); try again later",
    example = json!({"error": {"code": "timeout", "message": "the request took longer than 30s and was stopped; nothing half-done was kept, try again"}})
)]
pub struct Unavailable(#[allow(dead_code)] ErrorBody);

/// Fallback for unknown routes: the same JSON error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}
