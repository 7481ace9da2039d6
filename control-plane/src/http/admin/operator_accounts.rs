//! Operator accounts (the web console's sign-in). The rules are in
//! [`crate::domain::operator_accounts`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::OperatorId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, BadRequest, ForbiddenForRole, NotFound};
use super::super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::db::operator_accounts::OperatorAccount;
use crate::domain::operator_accounts::{self as accounts, CreatedAccount};
use crate::model::OperatorRole;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_accounts, create_account)).routes(routes!(disable_account))
}

#[derive(Debug, Serialize, ToSchema)]
struct OperatorAccountList {
    /// Disabled ones too, oldest first; never passwords or TOTP keys.
    accounts: Vec<OperatorAccount>,
}

/// The operator accounts (who may sign in to the web console).
#[utoipa::path(
    get,
    path = "/api/v1/admin/operator-accounts",
    operation_id = "admin_list_operator_accounts",
    tag = "admin",
    security(("operator_token" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The operator accounts", body = OperatorAccountList),
    )
)]
async fn list_accounts(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<OperatorAccountList>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(OperatorAccountList { accounts: accounts::list(&s.domain.pool).await? }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOperatorAccount {
    /// The sign-in name, 1 to 100 characters, unique.
    name: String,
    role: OperatorRole,
    /// At least 12 characters; leave it out and the control plane chooses one (in the
    /// answer, once).
    #[serde(default)]
    password: Option<String>,
}

/// Create an operator account.
#[utoipa::path(
    post,
    path = "/api/v1/admin/operator-accounts",
    operation_id = "admin_create_operator_account",
    tag = "admin",
    security(("operator_token" = []), ("console_session" = [])),
    request_body = NewOperatorAccount,
    responses(
        (status = 201, description = "The new account (with its password if the control plane chose it)",
            body = CreatedAccount),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 409, description = "`operator_name_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_body` (the name; `details.param`) or `invalid_password` (too short)",
            body = ErrorBody),
    )
)]
async fn create_account(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(b): ApiJson<NewOperatorAccount>,
) -> Result<(StatusCode, ApiJson<CreatedAccount>), ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    let created = accounts::create(&s.domain.pool, &b.name, b.role, b.password.as_deref(), audit).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// Disable an operator account: it cannot sign in, and its sessions end at once.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/operator-accounts/{id}",
    operation_id = "admin_disable_operator_account",
    tag = "admin",
    security(("operator_token" = []), ("console_session" = [])),
    params(("id" = OperatorId, Path, description = "The operator account")),
    responses(
        (status = 200, description = "The disabled account", body = OperatorAccount),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn disable_account(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<OperatorId>, PathRejection>,
) -> Result<ApiJson<OperatorAccount>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    Ok(ApiJson(accounts::disable(&s.domain.pool, id, Recorder::new(&actor, Some(&rid.0))).await?))
}
