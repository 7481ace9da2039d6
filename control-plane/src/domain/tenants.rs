//! Tenants (customer accounts) and their API keys: create, list, read, change (rename,
//! suspend, reactivate, plan), delete with its appliances revoked; keys issued, listed and
//! revoked. The operators' API, the customer's own API (keys) and the operator CLI all go
//! through these operations, so each rule (name length, audit action, waking the
//! dispatcher on a status change, revocation on delete) lives here once.

use hearth_protocol::{ApiKeyId, ApplianceId, PlanId, TenantId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::appliances as appliance_ops;
use super::{label, Invalid};
use crate::config::LimitsConfig;
use crate::db::audit::{snapshot, Recorder};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self as store, ApiKey, Changes, Tenant, TenantSummary};
use crate::db::users::{self, User};
use crate::db::{appliances, is_constraint, tenant_tx};
use crate::domain::Wake;
use crate::model::TenantStatus;
use crate::revocation::Revoker;

/// Longest tenant name (characters, once trimmed).
pub const NAME_MAX: usize = 200;
/// Longest API key label.
pub const KEY_NAME_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant not found")]
    NotFound,
    #[error("API key not found")]
    KeyNotFound,
    /// `plan_id` names no plan.
    #[error("there is no plan with this id")]
    UnknownPlan,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A failed write that names a plan: the plan's foreign key becomes [`TenantError::UnknownPlan`].
fn plan_error(e: sqlx::Error) -> TenantError {
    if is_constraint(&e, "tenants_plan_id_fkey") {
        TenantError::UnknownPlan
    } else {
        TenantError::Database(e)
    }
}

/// One tenant as operators see it: its plan, quotas, users and appliance counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The plan's name; `null`: the service's default quotas.
    pub plan: Option<String>,
    /// The quotas in force.
    pub quotas: Quotas,
    pub users: Vec<User>,
    /// The tenant's appliances by status.
    pub counts: Option<appliances::TenantCounts>,
}

/// A deleted tenant and its appliances.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeletedTenant)]
pub struct DeletedTenant {
    pub tenant: Tenant,
    /// Its appliances: revoked (their certificates are on the CRL) and deleted with it.
    pub revoked_appliances: Vec<ApplianceId>,
    /// Whether the new CRL was published and the appliances disconnected at once (if not,
    /// the failure is logged and the revocation still stands).
    #[serde(skip)]
    pub enforced: bool,
}

/// A newly issued API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub info: ApiKey,
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
}

/// Creates a tenant (no key or user yet), audited (`tenant.create`).
pub async fn create(
    pool: &PgPool,
    name: &str,
    plan: Option<PlanId>,
    audit: Recorder<'_>,
) -> Result<Tenant, TenantError> {
    let mut tx = pool.begin().await?;
    let tenant = create_in(&mut tx, name, plan, audit).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// [`create`] in the caller's transaction (the CLI issues the first key in the same one).
pub async fn create_in(
    conn: &mut PgConnection,
    name: &str,
    plan: Option<PlanId>,
    audit: Recorder<'_>,
) -> Result<Tenant, TenantError> {
    let name = label("name", name, NAME_MAX)?;
    let tenant = store::insert(conn, name, plan).await.map_err(plan_error)?;
    audit
        .record(conn, Some(tenant.id), "tenant.create", ("tenant", tenant.id.to_string()), None, snapshot(&tenant))
        .await?;
    Ok(tenant)
}

/// One page of tenants by id with their appliance counts, optionally only those whose name
/// contains `search` (case-insensitive) or in one state; at most `limit`.
pub async fn list(
    pool: &PgPool,
    search: Option<&str>,
    status: Option<TenantStatus>,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<TenantSummary>, TenantError> {
    Ok(store::list(pool, search, status, after, limit).await?)
}

/// One tenant with its plan, quotas (`defaults` without a plan), users and appliance counts.
pub async fn detail(pool: &PgPool, defaults: LimitsConfig, id: TenantId) -> Result<TenantDetail, TenantError> {
    let mut conn = pool.acquire().await?;
    let tenant = store::get(&mut conn, id).await?.ok_or(TenantError::NotFound)?;
    let (plan, quotas) = plans::quotas_for(&mut conn, id, defaults).await?;
    let users = users::list(&mut conn, id).await?;
    drop(conn);
    let counts = appliances::counts_by_tenant(pool, Some(id)).await?.into_iter().next();
    Ok(TenantDetail { tenant, plan, quotas, users, counts })
}

/// Changes a tenant's name, state or plan, audited as `tenant.suspend`, `tenant.reactivate`
/// or `tenant.update`. A change of state wakes the dispatcher: suspension takes effect for
/// queued work at once, and a reactivated tenant's pending tasks and configuration go out.
pub async fn update(
    pool: &PgPool,
    wake: &Wake,
    id: TenantId,
    changes: Changes,
    audit: Recorder<'_>,
) -> Result<Tenant, TenantError> {
    let name = changes.name.as_deref().map(|n| label("name", n, NAME_MAX).map(str::to_owned)).transpose()?;
    let changes = Changes { name, ..changes };
    let mut tx = pool.begin().await?;
    let before = store::get(&mut tx, id).await?.ok_or(TenantError::NotFound)?;
    let after = store::update(&mut tx, id, &changes).await.map_err(plan_error)?.ok_or(TenantError::NotFound)?;
    let action = match (before.status, after.status) {
        (TenantStatus::Active, TenantStatus::Suspended) => "tenant.suspend",
        (TenantStatus::Suspended, TenantStatus::Active) => "tenant.reactivate",
        _ => "tenant.update",
    };
    audit.record(&mut tx, Some(id), action, ("tenant", id.to_string()), snapshot(&before), snapshot(&after)).await?;
    tx.commit().await?;
    if before.status != after.status {
        wake.wake();
    }
    Ok(after)
}

/// Deletes a tenant with everything it owns. Its appliances are revoked first and the
/// revocation is made to bite (CRL, disconnection), so a deleted customer's boxes cannot
/// connect again; the audit trail keeps the tenant's entries.
pub async fn delete(
    pool: &PgPool,
    revoker: &Revoker,
    id: TenantId,
    audit: Recorder<'_>,
) -> Result<DeletedTenant, TenantError> {
    let (tenant, revoked) = appliance_ops::delete_tenant(pool, audit, id).await?.ok_or(TenantError::NotFound)?;
    let enforced = appliance_ops::enforce(revoker, &revoked).await;
    Ok(DeletedTenant { tenant, revoked_appliances: revoked, enforced })
}

/// A tenant's API keys, revoked ones too, oldest first (never the keys themselves).
pub async fn list_keys(pool: &PgPool, tenant: TenantId) -> Result<Vec<ApiKey>, TenantError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    store::get(&mut tx, tenant).await?.ok_or(TenantError::NotFound)?;
    let keys = store::list_keys(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(keys)
}

/// Issues an API key named `name` for `tenant` in its tenant transaction, audited
/// (`api_key.issue`); the key is returned this once.
pub async fn issue_key(
    pool: &PgPool,
    tenant: TenantId,
    name: &str,
    audit: Recorder<'_>,
) -> Result<IssuedKey, TenantError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let issued = issue_key_in(&mut tx, tenant, name, audit).await?;
    tx.commit().await?;
    Ok(issued)
}

/// [`issue_key`] in the caller's transaction.
pub async fn issue_key_in(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
    audit: Recorder<'_>,
) -> Result<IssuedKey, TenantError> {
    let name = label("name", name, KEY_NAME_MAX)?;
    store::get(conn, tenant).await?.ok_or(TenantError::NotFound)?;
    let (info, key) = store::issue_key(conn, tenant, name, &audit.actor.label()).await?;
    audit.record(conn, Some(tenant), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info)).await?;
    Ok(IssuedKey { info, key: key.expose().clone() })
}

/// Revokes one of `tenant`'s API keys (it stops working at once), audited (`api_key.revoke`).
pub async fn revoke_key(
    pool: &PgPool,
    tenant: TenantId,
    id: ApiKeyId,
    audit: Recorder<'_>,
) -> Result<ApiKey, TenantError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let key = store::revoke_key(&mut tx, tenant, id).await?.ok_or(TenantError::KeyNotFound)?;
    audit.record(&mut tx, Some(tenant), "api_key.revoke", ("api_key", id.to_string()), None, snapshot(&key)).await?;
    tx.commit().await?;
    Ok(key)
}
