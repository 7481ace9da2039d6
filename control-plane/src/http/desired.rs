//! Desired configuration: the tenant's defaults and each appliance's overrides, with the
//! applied version, the last apply's outcome and drift. The rules are in
//! [`crate::domain::desired`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, TenantForbidden};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::desired::{self, ConfigView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config, put_config)).routes(routes!(get_defaults, put_defaults))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    /// A configuration document (see docs/configuration.md). A secret is written as
    /// `{"$secret": "value"}`; `{"$secret": "[redacted]"}` keeps the stored one.
    document: Value,
}

#[derive(Debug, Serialize, ToSchema)]
struct DefaultsView {
    /// Secrets shown as `{"$secret": "[redacted]"}`.
    document: Value,
}

/// An appliance's desired configuration, applied version and drift.
#[utoipa::path(
    get,
    path = "/api/v1/appliances/{id}/config",
    tag = "config",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The desired configuration", body = ConfigView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get_config(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<ConfigView>, ApiError> {
    let Path(appliance) = id?;
    Ok(ApiJson(desired::get(&s.domain, tenant, appliance).await?))
}

/// Replace an appliance's overrides (merged over the tenant's defaults).
#[utoipa::path(
    put,
    path = "/api/v1/appliances/{id}/config",
    tag = "config",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = DocumentBody,
    responses(
        (status = 200, description = "The new desired configuration", body = ConfigView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_config` (the merged document breaks the schema, or a secret is malformed; \
                                      `details` is `{\"path\", \"rule\"}`) or `secrets_unavailable` (the document has a \
                                      secret but `secrets.key` is not configured)", body = ErrorBody),
    )
)]
async fn put_config(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(body): ApiJson<DocumentBody>,
) -> Result<ApiJson<ConfigView>, ApiError> {
    let Path(appliance) = id?;
    let actor = caller.actor();
    Ok(ApiJson(desired::put(&s.domain, tenant, appliance, &body.document, Recorder::new(&actor, Some(&rid.0))).await?))
}

/// The tenant's configuration defaults.
#[utoipa::path(
    get,
    path = "/api/v1/config/defaults",
    tag = "config",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The defaults", body = DefaultsView),
        (status = 403, response = TenantForbidden),
    )
)]
async fn get_defaults(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<DefaultsView>, ApiError> {
    Ok(ApiJson(DefaultsView { document: desired::defaults(&s.domain, tenant).await? }))
}

/// Replace the tenant's configuration defaults (every appliance's base).
#[utoipa::path(
    put,
    path = "/api/v1/config/defaults",
    tag = "config",
    security(("tenant_key" = []), ("session_token" = [])),
    request_body = DocumentBody,
    responses(
        (status = 200, description = "The new defaults", body = DefaultsView),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 422, description = "`invalid_config` (the merged document breaks the schema, or a secret is malformed; \
                                      `details` is `{\"path\", \"rule\"}`) or `secrets_unavailable` (the document has a \
                                      secret but `secrets.key` is not configured)", body = ErrorBody),
    )
)]
async fn put_defaults(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ApiJson(body): ApiJson<DocumentBody>,
) -> Result<ApiJson<DefaultsView>, ApiError> {
    let actor = caller.actor();
    let document =
        desired::put_defaults(&s.domain, tenant, &body.document, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok(ApiJson(DefaultsView { document }))
}
