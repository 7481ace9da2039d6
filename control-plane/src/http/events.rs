//! A tenant's events (`GET /api/v1/events`, read with a cursor) and alert rules. The rules
//! are in [`crate::domain::events`], shared with the operators' routes.

use axum::extract::State;
use hearth_protocol::api::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Tenant};
use super::error::{ApiError, ApiJson, ApiQuery, BadRequest, TenantForbidden};
use super::shared::events::{limit, EventQuery};
use super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::events::{self, AlertRules, EventPage, Reader};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get_rules, put_rules))
}

/// The tenant's events, oldest first, after a cursor.
///
/// Poll with `after` set to the previous page's `next`: nothing is skipped (an event gets
/// its position only once it committed, in order). The same events go to webhooks.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "list_events",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "One page of events", body = EventPage),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 422, description = "`invalid_body`: an unknown `type`, a negative `after`", body = ErrorBody),
    )
)]
async fn list(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    q: Result<ApiQuery<EventQuery>, ApiError>,
) -> Result<ApiJson<EventPage>, ApiError> {
    let ApiQuery(q) = q?;
    let limit = limit(q.limit)?;
    Ok(ApiJson(events::list(&s.domain.pool, Reader::Tenant(tenant), q.filter(), limit).await?))
}

/// The tenant's alert rules (the defaults until it sets its own).
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules",
    operation_id = "get_alert_rules",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The rules in force", body = AlertRules),
        (status = 403, response = TenantForbidden),
    )
)]
async fn get_rules(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<AlertRules>, ApiError> {
    Ok(ApiJson(events::rules(&s.domain.pool, tenant).await?))
}

/// Replace the tenant's alert rules.
#[utoipa::path(
    put,
    path = "/api/v1/alert-rules",
    operation_id = "put_alert_rules",
    tag = "events",
    security(("tenant_key" = []), ("session_token" = [])),
    request_body = AlertRules,
    responses(
        (status = 200, description = "The rules now in force", body = AlertRules),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 422, description = "`invalid_body`: a number of minutes out of range (`details.param`)",
         body = ErrorBody),
    )
)]
async fn put_rules(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ApiJson(rules): ApiJson<AlertRules>,
) -> Result<ApiJson<AlertRules>, ApiError> {
    let actor = caller.actor();
    Ok(ApiJson(events::set_rules(&s.domain.pool, tenant, rules, Recorder::new(&actor, Some(&rid.0))).await?))
}
