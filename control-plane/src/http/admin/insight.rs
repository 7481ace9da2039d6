//! What the operator console shows besides the fleet's lists: the fleet's trend (counts
//! sampled each minute), the ingest's health, an appliance's desired and applied
//! configuration, and the audit trail as CSV. All read-only; the rules are in
//! [`crate::domain::appliances`], [`crate::domain::desired`] and [`crate::domain::audit`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hearth_protocol::{ApplianceId, TenantId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, ApiQuery, BadRequest, NotFound};
use super::super::AppState;
use super::Timestamp;
use crate::db::audit::{AuditRow, Filter};
use crate::domain::appliances::{self, FleetTrend, IngestHealth};
use crate::domain::desired::{self, ConfigView};
use crate::domain::{audit, next_page};
use crate::model::ActorKind;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trend))
        .routes(routes!(ingest))
        .routes(routes!(config))
        .routes(routes!(audit_csv))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TrendQuery {
    /// Only this tenant's counts (default: the whole fleet).
    tenant: Option<TenantId>,
    /// How many hours back, 1 to 168 (default 6).
    hours: Option<u32>,
}

/// The fleet's online, offline, never-seen and revoked counts over time: one point per
/// minute, sampled by the control plane and kept for 7 days.
#[utoipa::path(
    get,
    path = "/api/v1/admin/fleet/trend",
    operation_id = "admin_fleet_trend",
    tag = "admin",
    security(("operator_token" = [])),
    params(TrendQuery),
    responses(
        (status = 200, description = "The counts, oldest first", body = FleetTrend),
        (status = 400, response = BadRequest),
        (status = 422, description = "`invalid_body`: `hours` is not 1 to 168; `details` is `{\"param\"}`",
            body = hearth_protocol::api::ErrorBody),
    )
)]
async fn trend(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<TrendQuery>, ApiError>,
) -> Result<ApiJson<FleetTrend>, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    Ok(ApiJson(appliances::fleet_trend(&s.domain, q.tenant, q.hours).await?))
}

/// The heartbeat ingest's health: this process's counters (two readings give heartbeats
/// per second) and how fresh the newest stored heartbeat is.
#[utoipa::path(
    get,
    path = "/api/v1/admin/fleet/ingest",
    operation_id = "admin_fleet_ingest",
    tag = "admin",
    security(("operator_token" = [])),
    responses((status = 200, description = "The counters", body = IngestHealth))
)]
async fn ingest(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<IngestHealth>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(appliances::ingest_health(&s.domain).await?))
}

/// Any tenant's appliance's desired configuration (secrets redacted), the version it
/// applied and whether it drifts.
#[utoipa::path(
    get,
    path = "/api/v1/admin/appliances/{id}/config",
    operation_id = "admin_get_appliance_config",
    tag = "admin",
    security(("operator_token" = [])),
    params(("id" = ApplianceId, Path, description = "The appliance")),
    responses(
        (status = 200, description = "Desired and applied configuration", body = ConfigView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn config(
    State(s): State<AppState>,
    op: OperatorAuth,
    id: Result<Path<ApplianceId>, PathRejection>,
) -> Result<ApiJson<ConfigView>, ApiError> {
    op.require(Permission::Read)?;
    let Path(id) = id?;
    Ok(ApiJson(desired::fleet_get(&s.domain, id).await?))
}

/// At most this many rows in one CSV export.
const CSV_MAX_ROWS: i64 = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditCsvQuery {
    /// Only entries about this tenant.
    tenant: Option<TenantId>,
    /// Only changes by this kind of actor.
    actor_kind: Option<ActorKind>,
    /// The actor's id (an operator token's, a user's, an API key's).
    actor_id: Option<String>,
    /// An action (`tenant.create`) or a prefix ending in `.` (`tenant.`).
    action: Option<String>,
    /// At or after this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    since: Option<Timestamp>,
    /// Before this time (RFC 3339).
    #[param(value_type = Option<time::OffsetDateTime>)]
    until: Option<Timestamp>,
}

/// The audit trail as CSV (newest first, the same filters as `GET /api/v1/admin/audit`, at
/// most 10,000 rows; a cell that a spreadsheet would run as a formula is prefixed with `'`).
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit.csv",
    operation_id = "admin_export_audit",
    tag = "admin",
    security(("operator_token" = [])),
    params(AuditCsvQuery),
    responses(
        (status = 200, description = "`id,at,tenant_id,actor_kind,actor_id,actor_name,action,target_kind,target_id,\
                                      request_id,before,after`, one row per entry", content_type = "text/csv",
            body = String),
        (status = 400, response = BadRequest),
    )
)]
async fn audit_csv(
    State(s): State<AppState>,
    op: OperatorAuth,
    q: Result<ApiQuery<AuditCsvQuery>, ApiError>,
) -> Result<Response, ApiError> {
    op.require(Permission::Read)?;
    let ApiQuery(q) = q?;
    let mut filter = Filter {
        tenant: q.tenant,
        actor_kind: q.actor_kind,
        actor_id: q.actor_id,
        action: q.action,
        since: q.since.map(|t| t.0),
        until: q.until.map(|t| t.0),
        ..Filter::default()
    };
    let mut out = String::from(
        "id,at,tenant_id,actor_kind,actor_id,actor_name,action,target_kind,target_id,request_id,before,after\r\n",
    );
    let mut left = CSV_MAX_ROWS;
    while left > 0 {
        let page = left.min(1000);
        let mut rows = audit::list(&s.domain.pool, &filter, page + 1).await?;
        let next = next_page(&mut rows, page, |e| e.id);
        left -= rows.len() as i64;
        for r in &rows {
            write_row(&mut out, r);
        }
        match next {
            Some(before) => filter.before_id = Some(before),
            None => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"hearth-audit.csv\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response())
}

fn write_row(out: &mut String, r: &AuditRow) {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let at = r.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let cells = [
        r.id.to_string(),
        at,
        r.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        r.actor_kind.to_string(),
        r.actor_id.clone().unwrap_or_default(),
        r.actor_name.clone().unwrap_or_default(),
        r.action.clone(),
        r.target_kind.clone(),
        r.target_id.clone().unwrap_or_default(),
        r.request_id.clone().unwrap_or_default(),
        json(&r.before),
        json(&r.after),
    ];
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(c));
    }
    out.push_str("\r\n");
}

/// One CSV cell (RFC 4180 quoting); a text a spreadsheet would take for a formula (`=`,
/// `+`, `-`, `@`, tab, CR at the start) gets a leading `'`.
fn csv_cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_cell("-1+1"), "'-1+1");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
