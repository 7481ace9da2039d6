//! Plans: named sets of quotas, each at least 1, with unique names; created, listed and
//! changed (tenants on a plan get its new quotas without a restart), each change audited.
//! The admin API and the operator CLI both go through these operations.

use hearth_protocol::PlanId;
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{label, Invalid};
use crate::db::audit::{snapshot, Recorder};
use crate::db::is_constraint;
use crate::db::plans::{self as store, Plan, Quotas};

/// Longest plan name.
pub const NAME_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan not found")]
    NotFound,
    #[error("a plan with this name exists already")]
    NameTaken,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A write that names a plan: its unique name's violation becomes [`PlanError::NameTaken`].
fn name_error(e: sqlx::Error) -> PlanError {
    if is_constraint(&e, "plans_name_key") {
        PlanError::NameTaken
    } else {
        PlanError::Database(e)
    }
}

/// A new plan.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    /// 1 to 100 characters, unique.
    pub name: String,
    #[serde(flatten)]
    pub quotas: Quotas,
}

/// Any subset of a plan's fields; the rest stay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub api_per_minute: Option<i32>,
    pub api_burst: Option<i32>,
    pub assistant_per_hour: Option<i32>,
    pub assistant_burst: Option<i32>,
    pub mqtt_per_minute: Option<i32>,
    pub mqtt_burst: Option<i32>,
    pub rollouts_active: Option<i32>,
    pub webhook_endpoints: Option<i32>,
}

/// Every quota must be at least 1.
fn check_quotas(q: &Quotas) -> Result<(), Invalid> {
    match q.invalid_field() {
        Some(field) => Err(Invalid::new(field, format!("{field} must be at least 1"))),
        None => Ok(()),
    }
}

/// Every plan, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Plan>, PlanError> {
    Ok(store::list(pool).await?)
}

/// Creates a plan, audited (`plan.create`).
pub async fn create(pool: &PgPool, new: NewPlan, audit: Recorder<'_>) -> Result<Plan, PlanError> {
    let name = label("name", &new.name, NAME_MAX)?;
    check_quotas(&new.quotas)?;
    let mut tx = pool.begin().await?;
    let plan = store::create(&mut tx, name, &new.quotas).await.map_err(name_error)?;
    audit.record(&mut tx, None, "plan.create", ("plan", plan.id.to_string()), None, snapshot(&plan)).await?;
    tx.commit().await?;
    Ok(plan)
}

/// Changes a plan's name or quotas, audited (`plan.update`).
pub async fn update(pool: &PgPool, id: PlanId, changes: PlanChanges, audit: Recorder<'_>) -> Result<Plan, PlanError> {
    let mut tx = pool.begin().await?;
    let before = store::get(&mut tx, id).await?.ok_or(PlanError::NotFound)?;
    let q = before.quotas;
    let quotas = Quotas {
        api_per_minute: changes.api_per_minute.unwrap_or(q.api_per_minute),
        api_burst: changes.api_burst.unwrap_or(q.api_burst),
        assistant_per_hour: changes.assistant_per_hour.unwrap_or(q.assistant_per_hour),
        assistant_burst: changes.assistant_burst.unwrap_or(q.assistant_burst),
        mqtt_per_minute: changes.mqtt_per_minute.unwrap_or(q.mqtt_per_minute),
        mqtt_burst: changes.mqtt_burst.unwrap_or(q.mqtt_burst),
        rollouts_active: changes.rollouts_active.unwrap_or(q.rollouts_active),
        webhook_endpoints: changes.webhook_endpoints.unwrap_or(q.webhook_endpoints),
    };
    check_quotas(&quotas)?;
    let name = changes.name.as_deref().unwrap_or(&before.name);
    let name = label("name", name, NAME_MAX)?;
    let after = store::update(&mut tx, id, name, &quotas).await.map_err(name_error)?.ok_or(PlanError::NotFound)?;
    audit.record(&mut tx, None, "plan.update", ("plan", id.to_string()), snapshot(&before), snapshot(&after)).await?;
    tx.commit().await?;
    Ok(after)
}
