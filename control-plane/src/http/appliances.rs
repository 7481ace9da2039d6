//! The tenant's appliances. Every query runs in a tenant transaction (row-level
//! security) and filters by the tenant itself; the rules are in
//! [`crate::domain::appliances`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, ApiQuery, BadRequest, NotFound, TenantForbidden};
use super::{AppState, RequestId};
use crate::db::appliances::Labels;
use crate::db::audit::Recorder;
use crate::domain::appliances::{self, ApplianceDetail, ApplianceList};
use crate::domain::labels;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_appliances)).routes(routes!(get_appliance)).routes(routes!(put_labels))
}

/// An appliance's labels, as sent and answered.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    /// Key=value labels. Keys: 1 to 63 characters of a-z, 0-9, `.`, `_`, `-`, at most one
    /// `/`; values: 0 to 63 characters of A-Z, a-z, 0-9, `.`, `_`, `-`; at most 32.
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: Labels,
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

/// Replace the tenant's labels on one of its appliances.
///
/// Labels under `fleet/` are set by operators: they are kept, and sending one is refused.
/// Answers all of the appliance's labels.
#[utoipa::path(
    put,
    path = "/api/v1/appliances/{id}/labels",
    tag = "appliances",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    request_body = LabelsBody,
    responses(
        (status = 200, description = "The appliance's labels", body = LabelsBody),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 422, description = "`invalid_body` (a key or value breaks the rules, too many labels, or a key \
                                      under `fleet/`; `details.param` is `labels`)", body = ErrorBody),
    )
)]
async fn put_labels(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(body): ApiJson<LabelsBody>,
) -> Result<ApiJson<LabelsBody>, ApiError> {
    let Path(id) = id?;
    let actor = caller.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    let labels = labels::set_for_tenant(&s.domain.pool, tenant, id, &body.labels, audit).await?;
    Ok(ApiJson(LabelsBody { labels }))
}
