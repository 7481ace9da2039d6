//! Tenants, their API keys, their first users and their appliances' registration.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApplianceId, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::super::account::{check_label, IssuedKey, KeyList, NewKey, NewUser};
use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, BadRequest, ForbiddenForRole, NotFound};
use super::super::{AppState, RequestId};
use super::{limit, page};
use crate::db::audit::{snapshot, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, Changes, Tenant, TenantSummary};
use crate::db::users::{self, User};
use crate::db::{self, appliances, enrollment};
use crate::revocation;

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
    /// `active` or `suspended`.
    status: Option<String>,
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
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<ApiJson<TenantPage>, ApiError> {
    op.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    if let Some(st) = q.status.as_deref().filter(|st| !matches!(*st, "active" | "suspended")) {
        return Err(ApiError::bad_request("invalid_query", format!("status {st:?} is not one of active, suspended")));
    }
    let mut tenants = tenants::list(&s.domain.pool, q.q.as_deref(), q.status.as_deref(), q.after, limit + 1).await?;
    let next_after = page(&mut tenants, limit, |t| t.tenant.id);
    Ok(ApiJson(TenantPage { tenants, next_after }))
}

fn check_status(status: &str) -> Result<(), ApiError> {
    if matches!(status, "active" | "suspended") {
        Ok(())
    } else {
        Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: format!("status {status:?} is not one of active, suspended"),
            details: serde_json::json!({ "param": "status" }),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    /// 1 to 200 characters.
    name: String,
    /// A plan; absent or `null`: the service's default quotas.
    plan_id: Option<Uuid>,
}

fn unknown_plan(e: sqlx::Error) -> ApiError {
    if db::is_constraint(&e, "tenants_plan_id_fkey") {
        ApiError::Unprocessable {
            code: "unknown_plan",
            message: "there is no plan with this id".into(),
            details: serde_json::json!({ "param": "plan_id" }),
        }
    } else {
        ApiError::Database(e)
    }
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
    check_label("name", &b.name, 200)?;
    let mut tx = s.domain.pool.begin().await?;
    let tenant = tenants::insert(&mut tx, b.name.trim(), b.plan_id).await.map_err(unknown_plan)?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, Some(tenant.id), "tenant.create", ("tenant", tenant.id.to_string()), None, snapshot(&tenant))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(tenant)))
}

#[derive(Debug, Serialize, ToSchema)]
struct TenantDetail {
    #[serde(flatten)]
    tenant: Tenant,
    /// The plan's name; `null`: the service's default quotas.
    plan: Option<String>,
    /// The quotas in force.
    quotas: Quotas,
    users: Vec<User>,
    /// The tenant's appliances by status.
    counts: Option<appliances::TenantCounts>,
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
    let mut conn = s.domain.pool.acquire().await?;
    let tenant = tenants::get(&mut conn, id).await?.ok_or(ApiError::NotFound("tenant"))?;
    let (plan, quotas) = plans::quotas_for(&mut conn, id, s.domain.limits).await?;
    let users = users::list(&mut conn, id).await?;
    drop(conn);
    let counts = appliances::counts_by_tenant(&s.domain.pool, Some(id)).await?.into_iter().next();
    Ok(ApiJson(TenantDetail { tenant, plan, quotas, users, counts }))
}

/// Any subset of a tenant's fields; the rest stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantChanges {
    /// 1 to 200 characters.
    name: Option<String>,
    /// `active` or `suspended`: a suspended tenant's keys, sign-ins and appliances are refused.
    status: Option<String>,
    /// A plan id, or `null` for the service's default quotas; absent leaves it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    plan_id: Option<Option<Uuid>>,
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
    if let Some(n) = &b.name {
        check_label("name", n, 200)?;
    }
    if let Some(st) = &b.status {
        check_status(st)?;
    }
    let mut tx = s.domain.pool.begin().await?;
    let before = tenants::get(&mut tx, id).await?.ok_or(ApiError::NotFound("tenant"))?;
    let changes = Changes { name: b.name.map(|n| n.trim().to_string()), status: b.status, plan: b.plan_id };
    let after =
        tenants::update(&mut tx, id, &changes).await.map_err(unknown_plan)?.ok_or(ApiError::NotFound("tenant"))?;
    let action = match (before.status.as_str(), after.status.as_str()) {
        ("active", "suspended") => "tenant.suspend",
        ("suspended", "active") => "tenant.reactivate",
        _ => "tenant.update",
    };
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, Some(id), action, ("tenant", id.to_string()), snapshot(&before), snapshot(&after))
        .await?;
    tx.commit().await?;
    if action != "tenant.update" {
        // Suspension takes effect for queued work at once; a reactivated tenant's pending
        // tasks and configuration go out now.
        s.domain.wake.wake();
    }
    Ok(ApiJson(after))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeletedTenant)]
struct Deleted {
    tenant: Tenant,
    /// Its appliances: revoked (their certificates are on the CRL) and deleted with it.
    revoked_appliances: Vec<ApplianceId>,
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
        (status = 200, description = "The deleted tenant and its revoked appliances", body = Deleted),
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
) -> Result<ApiJson<Deleted>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let (tenant, revoked) = revocation::delete_tenant(&s.domain.pool, Recorder::new(&op.actor(), Some(&rid.0)), id)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    after_revocation(&s, &revoked).await;
    Ok(ApiJson(Deleted { tenant, revoked_appliances: revoked }))
}

/// Makes a committed revocation bite ([`revocation::Revoker::enforce`]); a failure is
/// logged, not answered: the revocation stands and the next CRL carries it.
pub(super) async fn after_revocation(s: &AppState, revoked: &[ApplianceId]) {
    if let Err(e) = s.domain.revoker.enforce(revoked).await {
        tracing::error!(error = %e, "revocation recorded, but the CRL could not be published");
    }
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
    let mut conn = s.domain.pool.acquire().await?;
    tenants::get(&mut conn, id).await?.ok_or(ApiError::NotFound("tenant"))?;
    Ok(ApiJson(KeyList { keys: tenants::list_keys(&mut conn, id).await? }))
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
    check_label("name", &b.name, 100)?;
    let mut tx = s.domain.pool.begin().await?;
    tenants::get(&mut tx, id).await?.ok_or(ApiError::NotFound("tenant"))?;
    let actor = op.actor();
    let (info, key) = tenants::issue_key(&mut tx, id, b.name.trim(), &actor.label()).await?;
    Recorder::new(&actor, Some(&rid.0))
        .record(&mut tx, Some(id), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(IssuedKey { info, key: key.expose().clone() })))
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
        ("key" = Uuid, Path, description = "The API key"),
    ),
    responses(
        (status = 200, description = "The revoked key", body = tenants::ApiKey),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 404, response = NotFound),
    )
)]
async fn revoke_key(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ids: Result<Path<(TenantId, Uuid)>, PathRejection>,
) -> Result<ApiJson<tenants::ApiKey>, ApiError> {
    op.require(Permission::Manage)?;
    let Path((id, key)) = ids?;
    let mut tx = s.domain.pool.begin().await?;
    let revoked = tenants::revoke_key(&mut tx, id, key).await?.ok_or(ApiError::NotFound("API key"))?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, Some(id), "api_key.revoke", ("api_key", key.to_string()), None, snapshot(&revoked))
        .await?;
    tx.commit().await?;
    Ok(ApiJson(revoked))
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
        (status = 409, description = "`email_taken`: an account with this e-mail address exists already", body = ErrorBody),
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
    let mut tx = s.domain.pool.begin().await?;
    tenants::get(&mut tx, id).await?.ok_or(ApiError::NotFound("tenant"))?;
    let user = users::create(&mut tx, id, &b.email, &b.password, b.role).await?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(&mut tx, Some(id), "user.create", ("user", user.id.to_string()), None, snapshot(&user))
        .await?;
    tx.commit().await?;
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

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RegisteredAppliance)]
struct Registered {
    appliance_id: ApplianceId,
    /// One-time token for `hearth-agent enroll`: shown this once, stored only as a hash.
    enrollment_token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
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
        (status = 201, description = "Registered; enroll it with the token", body = Registered),
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
) -> Result<(StatusCode, ApiJson<Registered>), ApiError> {
    op.require(Permission::Manage)?;
    let Path(tenant) = id?;
    check_label("name", &b.name, 200)?;
    let ttl = b.ttl_hours.unwrap_or(24);
    if !(1..=720).contains(&ttl) {
        return Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: "ttl_hours must be between 1 and 720".into(),
            details: serde_json::json!({ "param": "ttl_hours" }),
        });
    }
    let mut tx = s.domain.pool.begin().await?;
    tenants::get(&mut tx, tenant).await?.ok_or(ApiError::NotFound("tenant"))?;
    let (appliance_id, token, expires_at) =
        enrollment::register(&mut tx, tenant, b.name.trim(), time::Duration::hours(i64::from(ttl))).await.map_err(
            |e| {
                if db::is_constraint(&e, "appliances_tenant_name_key") {
                    ApiError::Conflict {
                        code: "appliance_name_taken",
                        message: format!("the tenant already has an appliance named {:?}", b.name.trim()),
                    }
                } else {
                    ApiError::Database(e)
                }
            },
        )?;
    Recorder::new(&op.actor(), Some(&rid.0))
        .record(
            &mut tx,
            Some(tenant),
            "appliance.create",
            ("appliance", appliance_id.to_string()),
            None,
            Some(serde_json::json!({
                "name": b.name.trim(),
                "enrollment_token_expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).ok(),
            })),
        )
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(Registered { appliance_id, enrollment_token: token.expose().clone(), expires_at }),
    ))
}
