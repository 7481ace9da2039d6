//! The fleet across tenants: appliances with filters, counts per tenant, one appliance
//! with its history and tasks, revocation, and tasks on a customer's behalf.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hearth_protocol::{ApplianceId, TenantId};
use serde::{Deserialize, Serialize};

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson};
use super::super::tasks::{self as task_api, CreateTask};
use super::super::{AppState, RequestId};
use super::tenants::after_revocation;
use super::{limit, page, Timestamp};
use crate::db::appliances::{self, FleetAppliance, FleetFilter, TenantCounts};
use crate::db::audit::{snapshot, Recorder};
use crate::db::presence::{self, PresenceEvent};
use crate::db::revocations;
use crate::db::tasks::{self, Task};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/appliances", get(list))
        .route("/appliances/{id}", get(detail))
        .route("/appliances/{id}/revoke", post(revoke))
        .route("/appliances/{id}/tasks", post(create_task))
        .route("/fleet/summary", get(summary))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<TenantId>,
    /// `never_seen`, `online`, `offline` or `revoked`.
    status: Option<String>,
    agent_version: Option<String>,
    last_seen_before: Option<Timestamp>,
    last_seen_after: Option<Timestamp>,
    limit: Option<i64>,
    after: Option<ApplianceId>,
}

#[derive(Debug, Serialize)]
struct FleetPage {
    appliances: Vec<FleetAppliance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<ApplianceId>,
}

async fn list(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<ApiJson<FleetPage>, ApiError> {
    op.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    if let Some(st) = &q.status {
        if !matches!(st.as_str(), "never_seen" | "online" | "offline" | "revoked") {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status {st:?} is not one of never_seen, online, offline, revoked"),
            ));
        }
    }
    let filter = FleetFilter {
        tenant: q.tenant,
        status: q.status,
        agent_version: q.agent_version,
        last_seen_before: q.last_seen_before.map(|t| t.0),
        last_seen_after: q.last_seen_after.map(|t| t.0),
        after: q.after,
    };
    let mut rows = appliances::fleet(&s.pool, &filter, limit + 1).await?;
    let next_after = page(&mut rows, limit, |a| a.appliance.id);
    Ok(ApiJson(FleetPage { appliances: rows, next_after }))
}

#[derive(Debug, Serialize)]
struct Summary {
    online: i64,
    offline: i64,
    never_seen: i64,
    revoked: i64,
    tenants: Vec<TenantCounts>,
}

async fn summary(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<Summary>, ApiError> {
    op.require(Permission::Read)?;
    let tenants = appliances::counts_by_tenant(&s.pool).await?;
    let sum = |f: fn(&TenantCounts) -> i64| tenants.iter().map(f).sum();
    Ok(ApiJson(Summary {
        online: sum(|c| c.online),
        offline: sum(|c| c.offline),
        never_seen: sum(|c| c.never_seen),
        revoked: sum(|c| c.revoked),
        tenants,
    }))
}

#[derive(Debug, Serialize)]
struct Detail {
    #[serde(flatten)]
    appliance: FleetAppliance,
    presence_history: Vec<PresenceEvent>,
    /// The most recent tasks, newest first.
    tasks: Vec<Task>,
}

const HISTORY: i64 = 20;
const RECENT_TASKS: i64 = 20;

async fn detail(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<Detail>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    let appliance = appliances::fleet_get(&s.pool, id).await?.ok_or(ApiError::NotFound("appliance"))?;
    let mut conn = s.pool.acquire().await?;
    let presence_history = presence::history(&mut conn, appliance.tenant_id, id, HISTORY).await?;
    let tasks = tasks::list_for_appliance(&mut conn, appliance.tenant_id, id, RECENT_TASKS).await?;
    Ok(ApiJson(Detail { appliance, presence_history, tasks }))
}

/// Revokes an appliance: its certificate goes on the CRL (the broker is told), its current
/// connection is dropped, and it gets no more tasks or configuration. Not reversible: a
/// replacement is registered and enrolled anew.
async fn revoke(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<FleetAppliance>, ApiError> {
    op.require(Permission::Manage)?;
    let Path(id) = id?;
    let mut tx = s.pool.begin().await?;
    let revoked = revocations::revoke(&mut tx, None, id, "revoked by an operator")
        .await?
        .ok_or(ApiError::NotFound("appliance"))?;
    if revoked.newly {
        Recorder::new(&op.actor(), Some(&rid.0))
            .record(
                &mut tx,
                Some(revoked.tenant),
                "appliance.revoke",
                ("appliance", id.to_string()),
                None,
                snapshot(&serde_json::json!({ "certificate_serial": revoked.serial })),
            )
            .await?;
    }
    tx.commit().await?;
    after_revocation(&s, &[id]).await;
    let appliance = appliances::fleet_get(&s.pool, id).await?.ok_or(ApiError::NotFound("appliance"))?;
    Ok(ApiJson(appliance))
}

/// A catalog task on a customer's appliance, validated and queued exactly as the customer's
/// own request would be (in the customer's tenant transaction), audited as the operator.
async fn create_task(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    id: Result<Path<ApplianceId>, PathRejection>,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    op.require(Permission::ActForCustomer)?;
    let Path(id) = id?;
    let tenant = appliances::fleet_get(&s.pool, id).await?.ok_or(ApiError::NotFound("appliance"))?.tenant_id;
    task_api::queue(&s, tenant, id, req, Recorder::new(&op.actor(), Some(&rid.0))).await
}
