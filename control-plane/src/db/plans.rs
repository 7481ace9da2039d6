//! Plans: named sets of quotas assigned to tenants. The rate limiter reads a tenant's
//! effective quotas with [`quotas_for`]: its plan's, or the configured defaults
//! (`limits.*`) when it has none; the MQTT ingest's limiter reads those of every appliance
//! on a plan at once with [`mqtt_rates`] — so a plan change applies without a restart.

use hearth_protocol::{ApplianceId, PlanId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::config::LimitsConfig;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub quotas: Quotas,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The numbers the rate limiter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Quotas {
    /// Tenant API requests per minute, sustained…
    pub api_per_minute: i32,
    /// …and how many may come at once (the bucket's size).
    pub api_burst: i32,
    /// Support assistant messages per hour, and burst.
    pub assistant_per_hour: i32,
    pub assistant_burst: i32,
    /// MQTT messages ingested per appliance per minute, and burst.
    pub mqtt_per_minute: i32,
    pub mqtt_burst: i32,
    /// Fleet rollouts the tenant may have active at once (scheduled, running, paused or
    /// waiting for approval); default 5.
    #[serde(default = "Quotas::default_rollouts_active")]
    pub rollouts_active: i32,
    /// Webhook endpoints the tenant may register; default 10.
    #[serde(default = "Quotas::default_webhook_endpoints")]
    pub webhook_endpoints: i32,
}

impl From<LimitsConfig> for Quotas {
    fn from(l: LimitsConfig) -> Self {
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Quotas {
            api_per_minute: n(l.api_per_minute),
            api_burst: n(l.api_burst),
            assistant_per_hour: n(l.assistant_per_hour),
            assistant_burst: n(l.assistant_burst),
            mqtt_per_minute: n(l.mqtt_per_minute),
            mqtt_burst: n(l.mqtt_burst),
            rollouts_active: n(l.rollouts_active),
            webhook_endpoints: n(l.webhook_endpoints),
        }
    }
}

impl Quotas {
    fn default_rollouts_active() -> i32 {
        5
    }

    fn default_webhook_endpoints() -> i32 {
        10
    }

    /// The first quota that is not positive, for a clear refusal.
    pub fn invalid_field(&self) -> Option<&'static str> {
        [
            ("api_per_minute", self.api_per_minute),
            ("api_burst", self.api_burst),
            ("assistant_per_hour", self.assistant_per_hour),
            ("assistant_burst", self.assistant_burst),
            ("mqtt_per_minute", self.mqtt_per_minute),
            ("mqtt_burst", self.mqtt_burst),
            ("rollouts_active", self.rollouts_active),
            ("webhook_endpoints", self.webhook_endpoints),
        ]
        .into_iter()
        .find(|(_, v)| *v <= 0)
        .map(|(k, _)| k)
    }
}

const COLUMNS: &str = "id, name, api_per_minute, api_burst, assistant_per_hour, assistant_burst, mqtt_per_minute, \
                       mqtt_burst, rollouts_active, webhook_endpoints, created_at, updated_at";

pub async fn create(conn: &mut PgConnection, name: &str, q: &Quotas) -> Result<Plan, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO plans (id, name, api_per_minute, api_burst, assistant_per_hour, assistant_burst,
                            mqtt_per_minute, mqtt_burst, rollouts_active, webhook_endpoints)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(PlanId::new())
    .bind(name)
    .bind(q.api_per_minute)
    .bind(q.api_burst)
    .bind(q.assistant_per_hour)
    .bind(q.assistant_burst)
    .bind(q.mqtt_per_minute)
    .bind(q.mqtt_burst)
    .bind(q.rollouts_active)
    .bind(q.webhook_endpoints)
    .fetch_one(conn)
    .await
}

pub async fn update(conn: &mut PgConnection, id: PlanId, name: &str, q: &Quotas) -> Result<Option<Plan>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE plans SET name = $2, api_per_minute = $3, api_burst = $4, assistant_per_hour = $5,
                          assistant_burst = $6, mqtt_per_minute = $7, mqtt_burst = $8, rollouts_active = $9,
                          webhook_endpoints = $10, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(q.api_per_minute)
    .bind(q.api_burst)
    .bind(q.assistant_per_hour)
    .bind(q.assistant_burst)
    .bind(q.mqtt_per_minute)
    .bind(q.mqtt_burst)
    .bind(q.rollouts_active)
    .bind(q.webhook_endpoints)
    .fetch_optional(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: PlanId) -> Result<Option<Plan>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM plans WHERE id = $1")).bind(id).fetch_optional(conn).await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Plan>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM plans ORDER BY name")).fetch_all(pool).await
}

/// A plan's id by name (the CLI takes names).
pub async fn id_by_name(pool: &PgPool, name: &str) -> Result<Option<PlanId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM plans WHERE name = $1").bind(name).fetch_optional(pool).await
}

/// A tenant's effective quotas and the name of the plan they come from (`None`: defaults).
/// Works in a tenant transaction (RLS shows a tenant its own plan) and on the service pool.
pub async fn quotas_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    defaults: LimitsConfig,
) -> Result<(Option<String>, Quotas), sqlx::Error> {
    let row: Option<(String, Quotas)> = sqlx::query_as::<_, PlanQuotas>(
        "SELECT p.name, p.api_per_minute, p.api_burst, p.assistant_per_hour, p.assistant_burst, p.mqtt_per_minute,
                p.mqtt_burst, p.rollouts_active, p.webhook_endpoints
         FROM tenants t JOIN plans p ON p.id = t.plan_id WHERE t.id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?
    .map(|r| (r.name, r.quotas));
    Ok(match row {
        Some((name, q)) => (Some(name), q),
        None => (None, defaults.into()),
    })
}

/// The MQTT quotas (`mqtt_per_minute`, `mqtt_burst`) of every appliance whose tenant is on
/// a plan whose MQTT quotas differ from the defaults, in one query (the ingest's rate map,
/// `limits::ApplianceRates`; appliances left out get the defaults). On the service pool.
pub async fn mqtt_rates(pool: &PgPool, defaults: LimitsConfig) -> Result<Vec<(ApplianceId, i32, i32)>, sqlx::Error> {
    let d = Quotas::from(defaults);
    sqlx::query_as(
        "SELECT a.id, p.mqtt_per_minute, p.mqtt_burst
         FROM appliances a JOIN tenants t ON t.id = a.tenant_id JOIN plans p ON p.id = t.plan_id
         WHERE (p.mqtt_per_minute, p.mqtt_burst) <> ($1, $2)",
    )
    .bind(d.mqtt_per_minute)
    .bind(d.mqtt_burst)
    .fetch_all(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct PlanQuotas {
    name: String,
    #[sqlx(flatten)]
    quotas: Quotas,
}
