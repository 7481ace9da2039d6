//! The tenant's appliances. Every query runs in a tenant transaction (row-level
//! security) and filters by the tenant itself; the rules are in
//! [`crate::domain::appliances`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hearth_protocol::ApplianceId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Tenant;
use super::error::{ApiError, ApiJson, ApiQuery, BadRequest, NotFound, TenantForbidden};
use super::AppState;
use crate::domain::appliances::{self, ApplianceDetail, ApplianceList};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_appliances)).routes(routes!(get_appliance))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<ApplianceId>,
}

/// List the tenant's appliances, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/appliances",
    tag = "appliances",
    security(("tenant_key" = []), ("session_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of appliances", body = ApplianceList),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list_appliances(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<ApiJson<ApplianceList>, ApiError> {
    let ApiQuery(q) = query?;
    Ok(ApiJson(appliances::list(&s.domain, tenant, q.after, q.limit).await?))
}

/// One appliance, with its recent presence history.
#[utoipa::path(
    get,
    path = "/api/v1/appliances/{id}",
    tag = "appliances",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "The appliance", body = ApplianceDetail),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get_appliance(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<ApplianceDetail>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(appliances::get(&s.domain, tenant, id).await?))
}
