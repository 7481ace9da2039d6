//! `GET /api/v1/inventory`: the tenant's appliances as an Ansible dynamic inventory
//! (`ansible-inventory -i ansible/inventory/hearth.py --list`).

use axum::extract::State;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Tenant;
use super::error::{ApiError, ApiJson, TenantForbidden};
use super::AppState;
use crate::db::{appliances, tenant_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_inventory))
}

/// The tenant's appliances as an Ansible dynamic inventory.
///
/// Groups `hearth` (every appliance) and `hearth_online`; `_meta.hostvars` has each
/// appliance's `hearth_appliance_id`, `hearth_status`, `hearth_last_seen`,
/// `hearth_agent_version` and `hearth_facts`.
#[utoipa::path(
    get,
    path = "/api/v1/inventory",
    tag = "inventory",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "`ansible-inventory --list` JSON", body = Object,
            example = json!({
                "all": {"children": ["hearth"]},
                "hearth": {"hosts": ["kitchen"], "children": ["hearth_online"]},
                "hearth_online": {"hosts": ["kitchen"]},
                "_meta": {"hostvars": {"kitchen": {"hearth_appliance_id": "0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e",
                    "hearth_status": "online", "hearth_last_seen": "2026-01-01T00:00:00Z",
                    "hearth_agent_version": "0.1.0", "hearth_facts": {}}}}
            })),
        (status = 403, response = TenantForbidden),
    )
)]

async fn get_inventory(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = appliances::list(&mut tx, tenant, after, 1000).await?;
        let done = page.len() < 1000;
        after = page.last().map(|a| a.id);
        all.extend(page);
        if done {
            break;
        }
    }
    tx.commit().await?;
    let mut hostvars = Map::new();
    let mut online = Vec::new();
    let mut hosts = Vec::new();
    for a in &all {
        hosts.push(a.name.clone());
        if a.status == "online" {
            online.push(a.name.clone());
        }
        hostvars.insert(
            a.name.clone(),
            json!({
                "hearth_appliance_id": a.id,
                "hearth_status": a.status,
                "hearth_last_seen": a.last_seen.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                "hearth_agent_version": a.agent_version,
                "hearth_facts": a.metrics,
            }),
        );
    }
    Ok(ApiJson(json!({
        "all": { "children": ["hearth"] },
        "hearth": { "hosts": hosts, "children": ["hearth_online"] },
        "hearth_online": { "hosts": online },
        "_meta": { "hostvars": hostvars },
    })))
}
