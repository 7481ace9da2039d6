//! `GET /api/v1/inventory`: the tenant's appliances as an Ansible dynamic inventory
//! (`ansible-inventory -i ansible/inventory/hearth.py --list`).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::auth::Tenant;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::db::{appliances, tenant_tx};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/inventory", get(inventory))
}

async fn inventory(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<Value>, ApiError> {
    let mut tx = tenant_tx(&s.pool, tenant).await?;
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
