//! Desired configuration: the tenant's defaults and each appliance's overrides, with the
//! applied version, the last apply's outcome and drift.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::catalog::Policy;
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
use crate::db::desired::{self as store, LastApply};
use crate::db::tenant_tx;
use crate::desired::secrets::{self, SecretError};
use crate::desired::{merge, validate};

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

#[derive(Debug, Serialize, ToSchema)]
struct ConfigView {
    /// 0 until the appliance is configured.
    desired_version: i64,
    /// Tenant defaults merged with this appliance's overrides (secrets redacted).
    desired: Value,
    /// This appliance's own overrides (secrets redacted).
    overrides: Value,
    /// The last version the appliance applied successfully.
    applied_version: Option<i64>,
    last_apply: Option<LastApply>,
    /// The appliance does not yet run the desired version.
    drift: bool,
}

fn secret_error(e: SecretError) -> ApiError {
    match e {
        SecretError::NoKey => ApiError::Unprocessable {
            code: "secrets_unavailable",
            message: e.to_string(),
            details: serde_json::json!({}),
        },
        SecretError::BadSecret { ref path } | SecretError::NothingToKeep { ref path } => ApiError::Unprocessable {
            code: "invalid_config",
            message: e.to_string(),
            details: serde_json::json!({ "path": path, "rule": "secret" }),
        },
        other => ApiError::Internal(other.to_string()),
    }
}

fn check(doc: &Value) -> Result<(), ApiError> {
    validate(doc, &Policy::default()).map_err(|e| ApiError::Unprocessable {
        code: "invalid_config",
        message: e.to_string(),
        details: serde_json::json!({ "path": e.path, "rule": e.rule }),
    })
}

async fn view(s: &AppState, tenant: hearth_protocol::TenantId, appliance: ApplianceId) -> Result<ConfigView, ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let c = store::get(&mut tx, tenant, appliance).await?.ok_or(ApiError::NotFound("appliance"))?;
    tx.commit().await?;
    Ok(ConfigView {
        desired_version: c.desired_version,
        desired: secrets::redact(&merge(&c.defaults, &c.overrides)),
        overrides: secrets::redact(&c.overrides),
        applied_version: c.applied_version,
        last_apply: c.last_apply(),
        drift: c.desired_version > 0 && c.applied_version != Some(c.desired_version),
    })
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
    Ok(ApiJson(view(&s, tenant, appliance).await?))
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
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let current = store::get(&mut tx, tenant, appliance).await?.ok_or(ApiError::NotFound("appliance"))?;
    check(&merge(&current.defaults, &body.document))?;
    let sealed = secrets::seal(&body.document, &current.overrides, tenant, s.domain.secrets.as_ref(), "")
        .map_err(secret_error)?;
    store::set_overrides(&mut tx, tenant, appliance, &sealed).await?;
    // Secrets appear in the trail as `[redacted]`, like everywhere else.
    Recorder::new(&caller.actor(), Some(&rid.0))
        .record(
            &mut tx,
            Some(tenant),
            "config.update",
            ("appliance", appliance.to_string()),
            Some(secrets::redact(&current.overrides)),
            Some(secrets::redact(&sealed)),
        )
        .await?;
    tx.commit().await?;
    s.domain.wake.wake();
    tracing::info!(%appliance, "desired configuration changed");
    Ok(ApiJson(view(&s, tenant, appliance).await?))
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
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let defaults = store::tenant_defaults(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(DefaultsView { document: secrets::redact(&defaults) }))
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
    check(&body.document)?;
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let previous = store::tenant_defaults(&mut tx, tenant).await?;
    let sealed =
        secrets::seal(&body.document, &previous, tenant, s.domain.secrets.as_ref(), "").map_err(secret_error)?;
    store::set_defaults(&mut tx, tenant, &sealed).await?;
    Recorder::new(&caller.actor(), Some(&rid.0))
        .record(
            &mut tx,
            Some(tenant),
            "config.defaults_update",
            ("tenant", tenant.to_string()),
            Some(secrets::redact(&previous)),
            Some(secrets::redact(&sealed)),
        )
        .await?;
    tx.commit().await?;
    s.domain.wake.wake();
    Ok(ApiJson(DefaultsView { document: secrets::redact(&sealed) }))
}
