//! `GET /api/v1/inventory`: the tenant's appliances as an Ansible dynamic inventory
//! (`ansible-inventory -i ansible/inventory/hearth.py --list`), built by
//! [`crate::domain::appliances::inventory`].

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Tenant;
use super::error::{ApiError, ApiJson, TenantForbidden};
use super::AppState;
use crate::domain::appliances::{self, Inventory};

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
        (status = 200, description = "`ansible-inventory --list` JSON", body = Inventory,
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
async fn get_inventory(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<Inventory>, ApiError> {
    Ok(ApiJson(appliances::inventory(&s.domain, tenant).await?))
}
