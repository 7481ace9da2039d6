//! Tenants, their API keys, their first users and their appliances' registration. The
//! rules are in [`crate::domain::tenants`] and [`crate::domain::accounts`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApiKeyId, PlanId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, ForbiddenForRole, NotFound};
use super::super::shared::{KeyList, NewKey};
use super::super::{AppState, RequestId};
use super::limit;
use crate::db::audit::Recorder;
use crate::db::tenants::{ApiKey, Changes, Tenant, TenantSummary};
use crate::db::users::User;
use crate::domain::accounts::{self, NewUser};
use crate::domain::appliances::{self as appliance_ops, RegisteredAppliance};
use crate::domain::next_page;
use crate::domain::tenants::{self, DeletedTenant, IssuedKey, TenantDetail};
use crate::domain::Invalid;
use crate::model::TenantStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(detail, update, remove))
        .routes(routes!(list_keys, issue_key))
        .routes(routes!(revoke_key))
        .routes(routes!(create_user))
        .routes(routes!(create_appliance))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TenantQuery {
    /// Part of the name, case-insensitive.
    q: Option<String>,
    /// Only tenants in this state.
    status: Option<TenantStatus>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<TenantId>,
}

#[derive(Debug, Serialize, ToSchema)]
struct TenantPage {
    /// In id order.
    tenants: Vec<TenantSummary>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<TenantId>,
}

/// List tenants, a page at a time, optionally searched by name or filtered by status.
#[utoipa::path(
    get,
    path = "/api/v1/admin/tenants",
    operation_id = "admin_list_tenants",
    tag = "admin",
    security(("operator_token" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "One page of tenants with their appliance counts", body = TenantPage),
        (status = 400, response = BadRequest),
    )
)]
async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<TenantQuery>, ApiError>,
) -> Result<ApiJson<TenantPage>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    let mut tenants = tenants::list(&s.domain.pool, q.q.as_deref(), q.status, q.after, limit + 1).await?;
    let next_after = next_page(&mut tenants, limit, |t| t.tenant.id);
    Ok(ApiJson(TenantPage { tenants, next_after }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    /// 1 to 200 characters.
    name: String,
    /// A plan; absent or `null`: the service's default quotas.
    plan_id: Option<PlanId>,
}

/// Create a tenant (no key or user yet: issue them next).
#[utoipa::path(
    post,
    path = "/api/v1/admin/tenants",
    operation_id = "admin_create_tenant",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = NewTenant,
    responses(
        (status = 201, description = "The new tenant", body = Tenant),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 422, description = "`invalid_body` (the name is empty or longer than 200 characters) or \
                                      `unknown_plan` (there is no plan with this id); `details` is `{\"param\"}`",
            body = ErrorBody),
    )
)]
async fn create(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(b): ApiJson<NewTenant>,
) -> Result<(StatusCode, ApiJson<Tenant>), ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let tenant = tenants::create(&s.domain.pool, &b.name, b.plan_id, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(tenant)))
}

/// One tenant with its plan, quotas, users and appliance counts.
#[utoipa::path(
    get,
    path = "/api/v1/admin/tenants/{id}",
    operation_id = "admin_get_tenant",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant", body = TenantDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn detail(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<TenantId>, PathRejection>,
) -> Result<ApiJson<TenantDetail>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(tenants::detail(&s.domain.pool, s.domain.limits, id).await?))
}

/// Any subset of a tenant's fields; the rest stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantChanges {
    /// 1 to 200 characters.
    name: Option<String>,
    /// A suspended tenant's keys, sign-ins and appliances are refused.
    #[schema(value_type = Option<TenantStatus>)]
    status: Option<String>,
    /// A plan id, or `null` for the service's default quotas; absent leaves it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<PlanId>)]
    plan_id: Option<Option<PlanId>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Change a tenant: rename it, suspend or reactivate it, change its plan.
///
/// A suspended tenant's API keys, sign-ins and appliances are refused at once.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/tenants/{id}",
    operation_id = "admin_update_tenant",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    request_body = TenantChanges,
    responses(
        (status = 200, description = "The tenant as changed", body = Tenant),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body` (the name is empty or too long, or the status is not \
                                      `active` or `suspended`) or `unknown_plan` (there is no plan with this id); \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn update(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TenantId>, PathRejection>,
    ApiJson(b): ApiJson<TenantChanges>,
) -> Result<ApiJson<Tenant>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    // A bad status is a 422 naming the field (as a rule of the body, not a malformed body).
    let status = b
        .status
        .map(|st| st.parse::<TenantStatus>().map_err(|e| Invalid::new("status", format!("status {e}"))))
        .transpose()?;
    let changes = Changes { name: b.name, status, plan: b.plan_id };
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(tenants::update(&s.domain.pool, &s.domain.wake, id, changes, audit).await?))
}

/// Delete a tenant with everything it owns.
///
/// Its appliances are revoked first — their certificates go on the CRL and their connections
/// are dropped — so a deleted customer's boxes cannot connect again. The audit trail keeps
/// the tenant's entries.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/tenants/{id}",
    operation_id = "admin_delete_tenant",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The deleted tenant and its revoked appliances", body = DeletedTenant),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn remove(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TenantId>, PathRejection>,
) -> Result<ApiJson<DeletedTenant>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    Ok(ApiJson(tenants::delete(&s.domain.pool, &s.domain.revoker, id, Recorder::new(&actor, Some(&rid.0))).await?))
}

/// A tenant's API keys (never the keys themselves).
#[utoipa::path(
    get,
    path = "/api/v1/admin/tenants/{id}/keys",
    operation_id = "admin_list_tenant_keys",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant's API keys", body = KeyList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn list_keys(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<TenantId>, PathRejection>,
) -> Result<ApiJson<KeyList>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(KeyList { keys: tenants::list_keys(&s.domain.pool, id).await? }))
}

/// Issue an API key for a tenant; the key is in the answer, and only there.
#[utoipa::path(
    post,
    path = "/api/v1/admin/tenants/{id}/keys",
    operation_id = "admin_issue_tenant_key",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    request_body = NewKey,
    responses(
        (status = 201, description = "The new key", body = IssuedKey),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body`: the name is empty or longer than 100 characters; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn issue_key(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TenantId>, PathRejection>,
    ApiJson(b): ApiJson<NewKey>,
) -> Result<(StatusCode, ApiJson<IssuedKey>), ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let issued = tenants::issue_key(&s.domain.pool, id, &b.name, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(issued)))
}

/// Revoke one of a tenant's API keys; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/tenants/{id}/keys/{key}",
    operation_id = "admin_revoke_tenant_key",
    tag = "admin",
    security(("operator_token" = [])),
    params(
        ("id" = TenantId, Path, description = "The tenant"),
        ("key" = ApiKeyId, Path, description = "The API key"),
    ),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn revoke_key(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ids: Result<Path<(TenantId, ApiKeyId)>, PathRejection>,
) -> Result<ApiJson<ApiKey>, ApiError> {
    op.require(Permission::Manage)?;
    let Path((id, key)) = ids?;
    let actor = op.actor();
    Ok(ApiJson(tenants::revoke_key(&s.domain.pool, id, key, Recorder::new(&actor, Some(&rid.0))).await?))
}

/// Create a user of a tenant (typically its first owner).
#[utoipa::path(
    post,
    path = "/api/v1/admin/tenants/{id}/users",
    operation_id = "admin_create_tenant_user",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    request_body = NewUser,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`email_taken`: a member of this tenant has this e-mail address already", body = ErrorBody),
        (status = 422, description = "`invalid_user`: the e-mail address is not one, or the password is too short", body = ErrorBody),
    )
)]
async fn create_user(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TenantId>, PathRejection>,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<User>), ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let actor = op.actor();
    let user = accounts::create_user(&s.domain.pool, id, b, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAppliance {
    /// 1 to 200 characters, unique within the tenant.
    name: String,
    /// How long the enrollment token stays valid (default 24, at most 720).
    ttl_hours: Option<u32>,
}

/// Register an appliance for a tenant: returns its one-time enrollment token.
#[utoipa::path(
    post,
    path = "/api/v1/admin/tenants/{id}/appliances",
    operation_id = "admin_register_appliance",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = TenantId, Path, description = "The tenant")),
    request_body = NewAppliance,
    responses(
        (status = 201, description = "Registered; enroll it with the token", body = RegisteredAppliance),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
        (status = 409, description = "`appliance_name_taken`: the tenant already has an appliance with this name", body = ErrorBody),
        (status = 422, description = "`invalid_body`: the name is empty or too long, or `ttl_hours` is not 1 to 720; \
                                      `details` is `{\"param\"}`", body = ErrorBody),
    )
)]
async fn create_appliance(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<TenantId>, PathRejection>,
    ApiJson(b): ApiJson<NewAppliance>,
) -> Result<(StatusCode, ApiJson<RegisteredAppliance>), ApiError> {
    op.require(Permission::Manage)?;
    let Path(tenant) = id?;
    let registered =
        appliance_ops::register(&s.domain.pool, tenant, &b.name, b.ttl_hours, Recorder::new(&op.actor(), Some(&rid.0)))
            .await?;
    Ok((StatusCode::CREATED, ApiJson(registered)))
}
