//! The operators' API under `/api/v1/admin`, authenticated with operator tokens
//! (`hearth_ot_…`) or the web console's session cookie (with its CSRF token on changes). Operators work across tenants, so these handlers run on the service
//! role; anything done to one tenant's own rows (tasks, API keys, users) still runs in that
//! tenant's transaction. Every change is audited with the operator and request id. The
//! rules are in `crate::domain`, shared with the customer API and the operator CLI.
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET/POST /tenants`, `GET/PATCH/DELETE /tenants/{id}` | read / admin | tenants (paging, search), status, plan |
//! | `GET/POST /tenants/{id}/keys`, `DELETE /tenants/{id}/keys/{key}` | read / admin | tenant API keys |
//! | `POST /tenants/{id}/users` | admin | a tenant user (the first owner) |
//! | `POST /tenants/{id}/appliances` | admin | register an appliance: enrollment token |
//! | `GET/POST /plans`, `PATCH /plans/{id}` | read / admin | plans and their quotas |
//! | `GET /appliances`, `GET /appliances/{id}` | read | fleet across tenants, one appliance with history and tasks |
//! | `GET /fleet/summary` | read | online/offline counts per tenant |
//! | `POST /appliances/{id}/revoke` | admin | revoke: CRL, broker reload, disconnect |
//! | `POST /appliances/{id}/tasks` | admin, support | a catalog task on the customer's behalf |
//! | `GET/POST /operators`, `DELETE /operators/{id}` | read / admin | operator tokens |
//! | `GET/POST /operator-accounts`, `DELETE /operator-accounts/{id}` | read / admin | operator accounts: the web console's sign-in (password, optional TOTP) |
//! | `GET /audit` | read | the audit trail, filtered |
//! | `GET/POST /pki/rotation`, `POST /pki/rotation/finish` | read / admin | the fleet CA's rotation |
//! | `GET/POST /rollouts`, `GET/PATCH /rollouts/{id}`, `POST /rollouts/{id}/{action}` | read / admin | fleet rollouts, pause/resume/approve/cancel |
//! | `GET /rollouts/{id}/executions`, `GET /rollouts/{id}/events` | read | a rollout's executions, its progress stream |
//! | `GET /artifacts` | read | signed agent builds (uploaded with the CLI) |
//! | `GET /tasks`, `GET /tasks/{id}` | read | tasks across tenants (filters, paging), one with its event log |
//! | `POST /tasks/{id}/cancel` | admin, support | cancel a task not yet sent |
//! | `GET /catalog` | read | the action catalog with its parameter schemas (the console's task form) |
//! | `GET /fleet/trend`, `GET /fleet/ingest` | read | counts per minute (sampled, 7 days), ingest counters and lag |
//! | `GET /appliances/{id}/config` | read | desired vs applied configuration, drift (secrets redacted) |
//! | `GET /audit.csv` | read | the audit trail as CSV, same filters as `/audit` |
//!
//! Each handler's `#[utoipa::path]` names its full path (`/api/v1/admin/…`), so the routers
//! are merged, not nested.

mod artifacts;
mod events;
mod fleet;
mod insight;
mod operator_accounts;
mod operators;
mod pki;
mod rollouts;
mod tasks;
mod tenants;

use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(tenants::router())
        .merge(fleet::router())
        .merge(operators::router())
        .merge(operator_accounts::router())
        .merge(pki::router())
        .merge(rollouts::router())
        .merge(artifacts::router())
        .merge(events::router())
        .merge(tasks::router())
        .merge(insight::router())
}

// One page-size rule for every list (`http::shared::page_size`).
use super::shared::page_size as limit;

/// RFC 3339 timestamps in query strings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
struct Timestamp(#[serde(with = "time::serde::rfc3339")] time::OffsetDateTime);
