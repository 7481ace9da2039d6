//! The tenant's appliances. Every query runs in a tenant transaction (row-level
//! security) and filters by the tenant itself.

use axum::extract::{Query, State};
use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Tenant;
use super::error::{ApiError, ApiJson, BadRequest, NotFound, TenantForbidden};
use super::AppState;
use crate::db::appliances::{self, Appliance};
use crate::db::presence::{self, PresenceEvent};
use crate::db::tenant_tx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_appliances)).routes(routes!(get_appliance))
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
const HISTORY: i64 = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<ApplianceId>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ApplianceList {
    appliances: Vec<Appliance>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<ApplianceId>,
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
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<ApplianceList>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let appliances = appliances::list(&mut tx, tenant, q.after, limit + 1).await?;
    tx.commit().await?;
    let mut appliances = appliances;
    let next_after = if appliances.len() as i64 > limit {
        appliances.truncate(limit as usize);
        appliances.last().map(|a| a.id)
    } else {
        None
    };
    Ok(ApiJson(ApplianceList { appliances, next_after }))
}

#[derive(Debug, Serialize, ToSchema)]
struct ApplianceDetail {
    #[serde(flatten)]
    appliance: Appliance,
    /// The most recent presence transitions, oldest first.
    presence_history: Vec<PresenceEvent>,
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
    id: Result<axum::extract::Path<ApplianceId>, axum::extract::rejection::PathRejection>,
) -> Result<ApiJson<ApplianceDetail>, ApiError> {
    let axum::extract::Path(id) = id?;
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let appliance = appliances::get(&mut tx, tenant, id).await?.ok_or(ApiError::NotFound("appliance"))?;
    let presence_history = presence::history(&mut tx, tenant, id, HISTORY).await?;
    tx.commit().await?;
    Ok(ApiJson(ApplianceDetail { appliance, presence_history }))
}
