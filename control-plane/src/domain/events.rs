//! Events: what the fleet tells people (docs/architecture.md, "Events and webhooks"). The
//! types and their data ([`payloads`]), reading them with a cursor (a tenant its own,
//! operators the fleet's), and the tenants' alert rules.

use hearth_protocol::{ApplianceId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::Invalid;
use crate::db::audit::{snapshot, Recorder};
use crate::db::events::{self as store, EventRow, Filter, StoredRules};
use crate::db::tenant_tx;

/// Every event type, each with its data type in [`payloads`].
pub const TYPES: &[&str] = &[
    "appliance.online",
    "appliance.offline",
    "task.succeeded",
    "task.failed",
    "task.timed_out",
    "task.rejected",
    "task.cancelled",
    "config.applied",
    "config.failed",
    "certificate.renewed",
    "certificate.expiring",
    "rollout.started",
    "rollout.resumed",
    "rollout.wave_started",
    "rollout.paused",
    "rollout.waiting_for_approval",
    "rollout.succeeded",
    "rollout.aborted",
    "rollout.cancelled",
    "tenant.suspended",
    "tenant.resumed",
    "quota.exhausted",
    "webhook.endpoint_disabled",
    "alert.appliance_offline",
    "alert.config_drift",
    "alert.task_failed",
    "alert.resolved",
];

/// Whether `pattern` names event types: `*`, a type, or a category (`task.*`).
pub fn is_pattern(pattern: &str) -> bool {
    pattern == "*"
        || TYPES.contains(&pattern)
        || pattern.strip_suffix(".*").is_some_and(|c| TYPES.iter().any(|t| t.split('.').next() == Some(c)))
}

/// The id an event goes by in the API and in webhooks (`webhook-id`): `evt_` + 32 hex.
pub fn public_id(id: uuid::Uuid) -> String {
    format!("evt_{}", id.simple())
}

/// One event, as the API lists it and as a webhook delivers it (the body of the `POST`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// `evt_…`, also the `webhook-id` header: the key to de-duplicate by (a delivery is at
    /// least once).
    pub id: String,
    /// The cursor: `GET /api/v1/events?after=<position>` continues after this event.
    pub position: i64,
    /// The event type, e.g. `appliance.offline` (see the `webhooks` section).
    #[serde(rename = "type")]
    pub kind: String,
    /// The version of `data`'s shape for this type (1).
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The tenant (`null`: a fleet-wide event, for operators).
    pub tenant_id: Option<TenantId>,
    pub appliance_id: Option<ApplianceId>,
    /// The type's data (see the `webhooks` section of this document).
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        EventView {
            id: public_id(r.id),
            position: r.position,
            kind: r.kind,
            version: r.version,
            timestamp: r.at,
            tenant_id: r.tenant_id,
            appliance_id: r.appliance_id,
            data: r.data,
        }
    }
}

/// One page of events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Where to continue from (`after=`): the last event's position, or the `after` asked
    /// for when there was nothing new (poll with it again).
    pub next: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who reads: a tenant (its own events, in its tenant transaction) or an operator (every
/// event, or one tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Operator,
    Tenant(TenantId),
}

/// Events after `filter.after`, oldest first.
pub async fn list(pool: &PgPool, reader: Reader, mut filter: Filter, limit: i64) -> Result<EventPage, EventError> {
    if let Some(k) = &filter.kind {
        if !(is_pattern(k) && k != "*") {
            return Err(
                Invalid::new("type", format!("unknown event type {k:?} (a type, or a category as `task.*`)")).into()
            );
        }
    }
    if filter.after < 0 {
        return Err(Invalid::new("after", "after is a position, 0 or more").into());
    }
    let rows = match reader {
        Reader::Operator => store::list(&mut *pool.acquire().await?, &filter, limit).await?,
        Reader::Tenant(t) => {
            filter.tenant = Some(t);
            let mut tx = tenant_tx(pool, t).await?;
            let rows = store::list(&mut tx, &filter, limit).await?;
            tx.commit().await?;
            rows
        }
    };
    let next = rows.last().map_or(filter.after, |r| r.position);
    Ok(EventPage { events: rows.into_iter().map(EventView::from).collect(), next })
}

/// A tenant's alert rules (docs/architecture.md, "Alert rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// `alert.appliance_offline` once an appliance has been offline this long (minutes,
    /// 1–10080; default 10). Shorter outages give no alert.
    pub offline_minutes: i32,
    /// `alert.config_drift` once an online appliance's configuration has not converged for
    /// this long (minutes, 1–10080; default 30).
    pub drift_minutes: i32,
    /// `alert.task_failed` for every failed or timed-out task (default on).
    pub task_failed: bool,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules { offline_minutes: 10, drift_minutes: 30, task_failed: true }
    }
}

impl From<StoredRules> for AlertRules {
    fn from(r: StoredRules) -> Self {
        AlertRules { offline_minutes: r.offline_minutes, drift_minutes: r.drift_minutes, task_failed: r.task_failed }
    }
}

pub async fn rules(pool: &PgPool, tenant: TenantId) -> Result<AlertRules, EventError> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let r = store::rules(&mut tx, tenant).await?.map(AlertRules::from).unwrap_or_default();
    tx.commit().await?;
    Ok(r)
}

/// Replaces a tenant's alert rules, audited (`alert_rules.update`).
pub async fn set_rules(
    pool: &PgPool,
    tenant: TenantId,
    rules: AlertRules,
    audit: Recorder<'_>,
) -> Result<AlertRules, EventError> {
    for (param, v) in [("offline_minutes", rules.offline_minutes), ("drift_minutes", rules.drift_minutes)] {
        if !(1..=10_080).contains(&v) {
            return Err(Invalid::new(param, format!("{param} must be 1 to 10080 minutes (a week)")).into());
        }
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let before = store::rules(&mut tx, tenant).await?.map(AlertRules::from).unwrap_or_default();
    let stored = StoredRules {
        offline_minutes: rules.offline_minutes,
        drift_minutes: rules.drift_minutes,
        task_failed: rules.task_failed,
    };
    store::set_rules(&mut tx, tenant, stored).await?;
    audit
        .record(
            &mut tx,
            Some(tenant),
            "alert_rules.update",
            ("tenant", tenant.to_string()),
            snapshot(&before),
            snapshot(&rules),
        )
        .await?;
    tx.commit().await?;
    Ok(rules)
}

/// Tells `quota.exhausted` (at most once an hour per tenant and quota). Errors are logged,
/// not returned: the refusal the caller is about to give matters more than the notice.
pub async fn quota_exhausted(pool: &PgPool, tenant: TenantId, quota: &str, limit: i64, message: &str) {
    let data = serde_json::json!({ "quota": quota, "limit": limit, "message": message });
    if let Err(e) = store::quota_exhausted(pool, tenant, quota, &data).await {
        tracing::warn!(%tenant, quota, error = %e, "cannot record quota.exhausted");
    }
}

/// The data of each event type, version 1. Documented in the OpenAPI document's
/// `webhooks` section; [`payloads::check`] reads a stored event's data into its type.
pub mod payloads {
    use hearth_protocol::{ApplianceId, RolloutId, TaskId, TenantId};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;
    use utoipa::ToSchema;

    /// `appliance.online`, `appliance.offline`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct PresenceData {
        pub appliance_id: ApplianceId,
        pub name: String,
        /// `status_message` (the agent said so, or its last will), `heartbeat`,
        /// `missed_heartbeats` (the sweeper), `revoked`.
        pub reason: String,
    }

    /// `task.*` and `alert.task_failed`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct TaskData {
        pub task_id: TaskId,
        pub appliance_id: ApplianceId,
        pub appliance_name: String,
        pub action: String,
        /// The task's final status.
        pub status: String,
        pub message: Option<String>,
        /// The rollout the task belongs to, if any.
        pub rollout_id: Option<RolloutId>,
    }

    /// `config.applied`, `config.failed`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct ConfigData {
        pub appliance_id: ApplianceId,
        /// The version the appliance tried.
        pub version: i64,
        pub desired_version: i64,
        pub message: Option<String>,
    }

    /// `certificate.renewed`, `certificate.expiring`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct CertificateData {
        pub appliance_id: ApplianceId,
        pub serial: String,
        /// RFC 3339.
        pub not_after: String,
        /// The appliance's name (`certificate.expiring`).
        pub name: Option<String>,
    }

    /// `rollout.*`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct RolloutData {
        pub rollout_id: RolloutId,
        pub name: String,
        pub state: String,
        /// Waves open so far (the wave that started, for `rollout.wave_started`).
        pub wave: i32,
        pub waves: i32,
        pub reason: Option<String>,
    }

    /// `tenant.suspended`, `tenant.resumed`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct TenantData {
        pub tenant_id: TenantId,
        pub name: String,
    }

    /// `quota.exhausted`: a request was refused by the plan's quota.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct QuotaData {
        /// The quota's name in the plan, e.g. `webhook_endpoints`, `rollouts_active`.
        pub quota: String,
        pub limit: i64,
        pub message: String,
    }

    /// `webhook.endpoint_disabled`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct EndpointDisabledData {
        pub endpoint_id: uuid::Uuid,
        pub url: String,
        pub reason: String,
    }

    /// `alert.appliance_offline`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct OfflineAlertData {
        pub appliance_id: ApplianceId,
        pub name: String,
        /// RFC 3339: offline since.
        pub since: String,
    }

    /// `alert.config_drift`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct DriftAlertData {
        pub appliance_id: ApplianceId,
        pub name: String,
        /// RFC 3339: not converged since.
        pub since: String,
        pub desired_version: i64,
        pub applied_version: Option<i64>,
        /// The last attempt's outcome and message, if it tried.
        pub last_outcome: Option<String>,
        pub message: Option<String>,
    }

    /// `alert.resolved`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct ResolvedData {
        pub appliance_id: ApplianceId,
        pub name: String,
        /// The alert's type, e.g. `alert.appliance_offline`.
        pub alert: String,
        /// RFC 3339.
        pub opened_at: String,
    }

    /// The data type's schema name for each event type (the `webhooks` section).
    pub fn schema_of(kind: &str) -> Option<&'static str> {
        Some(match kind.split('.').next()? {
            "appliance" => "PresenceData",
            "task" => "TaskData",
            "config" => "ConfigData",
            "certificate" => "CertificateData",
            "rollout" => "RolloutData",
            "tenant" => "TenantData",
            "quota" => "QuotaData",
            "webhook" => "EndpointDisabledData",
            "alert" => match kind {
                "alert.appliance_offline" => "OfflineAlertData",
                "alert.config_drift" => "DriftAlertData",
                "alert.task_failed" => "TaskData",
                "alert.resolved" => "ResolvedData",
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Reads `data` into the type of `kind`; the error names what does not fit.
    pub fn check(kind: &str, data: &Value) -> Result<(), String> {
        fn read<T: serde::de::DeserializeOwned>(data: &Value) -> Result<(), String> {
            serde_json::from_value::<T>(data.clone()).map(|_| ()).map_err(|e| e.to_string())
        }
        match schema_of(kind).ok_or_else(|| format!("unknown event type {kind}"))? {
            "PresenceData" => read::<PresenceData>(data),
            "TaskData" => read::<TaskData>(data),
            "ConfigData" => read::<ConfigData>(data),
            "CertificateData" => read::<CertificateData>(data),
            "RolloutData" => read::<RolloutData>(data),
            "TenantData" => read::<TenantData>(data),
            "QuotaData" => read::<QuotaData>(data),
            "EndpointDisabledData" => read::<EndpointDisabledData>(data),
            "OfflineAlertData" => read::<OfflineAlertData>(data),
            "DriftAlertData" => read::<DriftAlertData>(data),
            "ResolvedData" => read::<ResolvedData>(data),
            other => Err(format!("no reader for {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_data_type_and_patterns_are_checked() {
        for t in TYPES {
            assert!(payloads::schema_of(t).is_some(), "{t}");
        }
        assert!(is_pattern("*") && is_pattern("task.*") && is_pattern("appliance.offline"));
        assert!(!is_pattern("task.exploded") && !is_pattern("nothing.*") && !is_pattern(""));
    }
}
