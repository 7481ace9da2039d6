//! Appliances: the tenant's list and detail (with presence history) and its Ansible
//! inventory; registration for a tenant (the one-time enrollment token); the operators'
//! fleet view across tenants (list, counts, detail with tasks); and revocation.
//!
//! Revoking is two steps: the database change ([`revoke_appliance`], [`delete_tenant`]:
//! one transaction, audited) and making it bite ([`enforce`]: a new CRL for the broker and
//! the appliances' connections dropped, by `crate::revocation::Revoker`). [`revoke`] does
//! both for an operator. A failed [`enforce`] is logged, not answered: the revocation
//! stands (ingest, dispatch and enrollment refuse the appliance) and the next CRL — every
//! start-up, every day, every revocation — carries it.

use std::collections::BTreeMap;

use hearth_protocol::{ApplianceId, TenantId};
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{label, next_page, Invalid, Services};
use crate::db::appliances::{self as store, Appliance, FleetAppliance, FleetFilter, TenantCounts, VersionCount};
use crate::db::audit::{snapshot, Recorder};
use crate::db::presence::{self, PresenceEvent};
use crate::db::revocations::{self, Revoked};
use crate::db::tasks::{self, Task};
use crate::db::tenants::{self, Tenant};
use crate::db::{self, enrollment, tenant_tx};
use crate::model::ApplianceStatus;
use crate::revocation::Revoker;

/// A page's size when the request does not say.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page.
pub const MAX_LIMIT: i64 = 1000;
/// How many presence transitions a detail view shows.
pub const HISTORY: i64 = 20;
/// How many tasks the operators' detail view shows.
pub const RECENT_TASKS: i64 = 20;
/// Longest appliance name, in characters.
pub const MAX_NAME: usize = 200;
/// How long an enrollment token stays valid unless the request says (hours).
pub const DEFAULT_TOKEN_TTL_HOURS: u32 = 24;
/// The longest an enrollment token may stay valid (hours: 30 days).
pub const MAX_TOKEN_TTL_HOURS: u32 = 720;

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("appliance not found")]
    NotFound,
    #[error("tenant not found")]
    TenantNotFound,
    /// A page size out of range (a query parameter).
    #[error("limit must be between 1 and {max}")]
    BadLimit { max: i64 },
    #[error("the tenant already has an appliance named {0:?}")]
    NameTaken(String),
    #[error("this appliance has been revoked; register a replacement instead")]
    Revoked,
    /// A field of the request breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One page of the tenant's appliances.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplianceList {
    pub appliances: Vec<Appliance>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<ApplianceId>,
}

/// One of the tenant's appliances with its recent presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplianceDetail {
    #[serde(flatten)]
    pub appliance: Appliance,
    /// The most recent presence transitions, oldest first.
    pub presence_history: Vec<PresenceEvent>,
}

/// The tenant's appliances as an Ansible dynamic inventory (`ansible-inventory --list`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Inventory {
    /// `{"children": ["hearth"]}`.
    pub all: InventoryGroup,
    /// Every appliance, by name; `hearth_online` is its child group.
    pub hearth: InventoryGroup,
    /// The appliances online now.
    pub hearth_online: InventoryGroup,
    /// One group per label, `label_<key>_<value>` (other characters as `_`).
    #[serde(flatten)]
    pub labels: BTreeMap<String, InventoryGroup>,
    #[serde(rename = "_meta")]
    pub meta: InventoryMeta,
}

/// An inventory group: its hosts and its child groups.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryMeta {
    /// Per appliance name.
    pub hostvars: BTreeMap<String, HostVars>,
}

/// One appliance's variables in the inventory.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostVars {
    pub hearth_appliance_id: ApplianceId,
    pub hearth_status: ApplianceStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub hearth_last_seen: Option<OffsetDateTime>,
    pub hearth_agent_version: Option<String>,
    /// The latest heartbeat's facts.
    #[schema(value_type = Option<Object>)]
    pub hearth_facts: Option<store::RawJson>,
}

/// A registered appliance and its one-time enrollment token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredAppliance {
    pub appliance_id: ApplianceId,
    /// One-time token for `hearth-agent enroll`: shown this once, stored only as a hash.
    pub enrollment_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// One page of appliances across tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetPage {
    /// In id order (oldest first).
    pub appliances: Vec<FleetAppliance>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<ApplianceId>,
}

/// Appliance counts, in total and per tenant (a revoked appliance counts only as revoked).
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    pub online: i64,
    pub offline: i64,
    pub never_seen: i64,
    pub revoked: i64,
    /// Not revoked, with a certificate that expires within 7 days or has expired: the ones
    /// whose renewal is late (an agent renews at about 2/3 of the lifetime).
    pub certificates_expiring: i64,
    /// Appliances (not revoked) per agent version, most common first (`null`: no heartbeat
    /// yet): what a rollout's `selector.agent_versions` picks from.
    pub agent_versions: Vec<VersionCount>,
    /// Every tenant's counts, by tenant name.
    pub tenants: Vec<TenantCounts>,
    /// The support assistant's LLM: `mode` is `reduced` while it is configured but the
    /// rules answer instead (the model missing, Ollama unreachable, its last answer
    /// unusable).
    pub assistant: crate::assistant::AssistantStatus,
}

/// One appliance of any tenant with its presence history and recent tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetApplianceDetail {
    #[serde(flatten)]
    pub appliance: FleetAppliance,
    /// The most recent presence transitions, oldest first.
    pub presence_history: Vec<PresenceEvent>,
    /// The most recent tasks, newest first.
    pub tasks: Vec<Task>,
}

/// A page size: default [`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`].
fn page_size(limit: Option<i64>) -> Result<i64, ApplianceError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApplianceError::BadLimit { max: MAX_LIMIT })
    }
}

/// One page of the tenant's appliances, oldest first, after `after`.
pub async fn list(
    svc: &Services,
    tenant: TenantId,
    after: Option<ApplianceId>,
    limit: Option<i64>,
) -> Result<ApplianceList, ApplianceError> {
    let limit = page_size(limit)?;
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let mut appliances = store::list(&mut tx, tenant, after, limit + 1).await?;
    tx.commit().await?;
    let next_after = next_page(&mut appliances, limit, |a| a.id);
    Ok(ApplianceList { appliances, next_after })
}

/// One of the tenant's appliances with its last [`HISTORY`] presence transitions.
pub async fn get(svc: &Services, tenant: TenantId, id: ApplianceId) -> Result<ApplianceDetail, ApplianceError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let appliance = store::get(&mut tx, tenant, id).await?.ok_or(ApplianceError::NotFound)?;
    let presence_history = presence::history(&mut tx, tenant, id, HISTORY).await?;
    tx.commit().await?;
    Ok(ApplianceDetail { appliance, presence_history })
}

/// Every one of the tenant's appliances as an Ansible inventory: group `hearth` (all, by
/// name) with child group `hearth_online`, a group per label, and each one's id, status,
/// last seen, agent version and facts as host variables.
pub async fn inventory(svc: &Services, tenant: TenantId) -> Result<Inventory, ApplianceError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store::list(&mut tx, tenant, after, MAX_LIMIT).await?;
        let done = (page.len() as i64) < MAX_LIMIT;
        after = page.last().map(|a| a.id);
        all.extend(page);
        if done {
            break;
        }
    }
    tx.commit().await?;
    let mut hostvars = BTreeMap::new();
    let mut online = Vec::new();
    let mut hosts = Vec::new();
    let mut labels: BTreeMap<String, InventoryGroup> = BTreeMap::new();
    for a in all {
        hosts.push(a.name.clone());
        for (k, v) in a.labels.0.iter() {
            let group = labels.entry(label_group(k, v)).or_insert(InventoryGroup { hosts: None, children: None });
            group.hosts.get_or_insert_with(Vec::new).push(a.name.clone());
        }
        if a.status == ApplianceStatus::Online {
            online.push(a.name.clone());
        }
        hostvars.insert(
            a.name,
            HostVars {
                hearth_appliance_id: a.id,
                hearth_status: a.status,
                hearth_last_seen: a.last_seen,
                hearth_agent_version: a.agent_version,
                hearth_facts: a.metrics,
            },
        );
    }
    Ok(Inventory {
        all: InventoryGroup { hosts: None, children: Some(vec!["hearth".into()]) },
        hearth: InventoryGroup { hosts: Some(hosts), children: Some(vec!["hearth_online".into()]) },
        hearth_online: InventoryGroup { hosts: Some(online), children: None },
        labels,
        meta: InventoryMeta { hostvars },
    })
}

/// An inventory group name for a label: `label_<key>_<value>`, every character Ansible does
/// not allow in a group name (anything but ASCII letters, digits and `_`) as `_`.
fn label_group(key: &str, value: &str) -> String {
    format!("label_{key}_{value}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// Registers an appliance for a tenant (not yet enrolled) with a one-time enrollment token
/// valid `ttl_hours` (default [`DEFAULT_TOKEN_TTL_HOURS`], at most
/// [`MAX_TOKEN_TTL_HOURS`]), audited (`appliance.create`). The name (trimmed, 1 to
/// [`MAX_NAME`] characters) is unique within the tenant.
pub async fn register(
    pool: &PgPool,
    tenant: TenantId,
    name: &str,
    ttl_hours: Option<u32>,
    audit: Recorder<'_>,
) -> Result<RegisteredAppliance, ApplianceError> {
    let name = label("name", name, MAX_NAME)?;
    let ttl = token_ttl(ttl_hours)?;
    let mut tx = pool.begin().await?;
    tenants::get(&mut tx, tenant).await?.ok_or(ApplianceError::TenantNotFound)?;
    let (appliance_id, token, expires_at) = enrollment::register(&mut tx, tenant, name, ttl).await.map_err(|e| {
        if db::is_constraint(&e, "appliances_tenant_name_key") {
            ApplianceError::NameTaken(name.to_string())
        } else {
            ApplianceError::Database(e)
        }
    })?;
    let after = serde_json::json!({
        "name": name,
        "enrollment_token_expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).ok(),
    });
    audit
        .record(&mut tx, Some(tenant), "appliance.create", ("appliance", appliance_id.to_string()), None, Some(after))
        .await?;
    tx.commit().await?;
    Ok(RegisteredAppliance { appliance_id, enrollment_token: token.expose().clone(), expires_at })
}

/// How long an enrollment token lives: `ttl_hours` (default [`DEFAULT_TOKEN_TTL_HOURS`]),
/// 1 to [`MAX_TOKEN_TTL_HOURS`].
fn token_ttl(ttl_hours: Option<u32>) -> Result<time::Duration, ApplianceError> {
    let ttl = ttl_hours.unwrap_or(DEFAULT_TOKEN_TTL_HOURS);
    if !(1..=MAX_TOKEN_TTL_HOURS).contains(&ttl) {
        return Err(Invalid::new("ttl_hours", format!("ttl_hours must be between 1 and {MAX_TOKEN_TTL_HOURS}")).into());
    }
    Ok(time::Duration::hours(i64::from(ttl)))
}

/// A fresh enrollment token for an appliance that exists (an operator's way back for an
/// appliance that was offline past its certificate's expiry, or whose state directory was
/// lost): `hearth-agent enroll --force` with it gets a certificate for the same appliance
/// id, so its tenant, configuration and history stay. Earlier unused tokens stop working,
/// and enrolling revokes every other certificate the appliance still holds. Refused for a
/// revoked appliance. Audited as `appliance.reenroll`.
pub async fn reenroll(
    pool: &PgPool,
    id: ApplianceId,
    ttl_hours: Option<u32>,
    audit: Recorder<'_>,
) -> Result<RegisteredAppliance, ApplianceError> {
    let ttl = token_ttl(ttl_hours)?;
    let appliance = store::fleet_get(pool, id).await?.ok_or(ApplianceError::NotFound)?;
    if appliance.appliance.revoked_at.is_some() {
        return Err(ApplianceError::Revoked);
    }
    let tenant = appliance.tenant_id;
    let mut tx = pool.begin().await?;
    let (token, expires_at) = enrollment::issue_token(&mut tx, tenant, id, ttl).await?;
    let after = serde_json::json!({
        "enrollment_token_expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).ok(),
        "cert_serial": appliance.appliance.cert_serial,
    });
    audit.record(&mut tx, Some(tenant), "appliance.reenroll", ("appliance", id.to_string()), None, Some(after)).await?;
    tx.commit().await?;
    Ok(RegisteredAppliance { appliance_id: id, enrollment_token: token.expose().clone(), expires_at })
}

/// One page of appliances across tenants, filtered (operators; the service role).
pub async fn fleet(svc: &Services, filter: &FleetFilter, limit: Option<i64>) -> Result<FleetPage, ApplianceError> {
    let limit = page_size(limit)?;
    let mut appliances = store::fleet(&svc.pool, filter, limit + 1).await?;
    let next_after = next_page(&mut appliances, limit, |a| a.appliance.id);
    Ok(FleetPage { appliances, next_after })
}

/// Online, offline, never seen and revoked appliances, in total and per tenant.
pub async fn fleet_summary(svc: &Services) -> Result<FleetSummary, ApplianceError> {
    let tenants = store::counts_by_tenant(&svc.pool, None).await?;
    let sum = |f: fn(&TenantCounts) -> i64| tenants.iter().map(f).sum();
    Ok(FleetSummary {
        online: sum(|c| c.online),
        offline: sum(|c| c.offline),
        never_seen: sum(|c| c.never_seen),
        revoked: sum(|c| c.revoked),
        certificates_expiring: sum(|c| c.certificates_expiring),
        agent_versions: store::counts_by_agent_version(&svc.pool).await?,
        tenants,
        assistant: svc.assistant.status(),
    })
}

/// One appliance of any tenant with its last [`HISTORY`] presence transitions and its
/// [`RECENT_TASKS`] most recent tasks.
pub async fn fleet_detail(svc: &Services, id: ApplianceId) -> Result<FleetApplianceDetail, ApplianceError> {
    let appliance = store::fleet_get(&svc.pool, id).await?.ok_or(ApplianceError::NotFound)?;
    let mut conn = svc.pool.acquire().await?;
    let presence_history = presence::history(&mut conn, appliance.tenant_id, id, HISTORY).await?;
    let tasks = tasks::list_for_appliance(&mut conn, appliance.tenant_id, id, RECENT_TASKS).await?;
    Ok(FleetApplianceDetail { appliance, presence_history, tasks })
}

/// Revokes an appliance for an operator: recorded ([`revoke_appliance`]), then enforced
/// ([`enforce`]). Revoking a revoked appliance changes nothing. Returns it as revoked.
pub async fn revoke(svc: &Services, id: ApplianceId, audit: Recorder<'_>) -> Result<FleetAppliance, ApplianceError> {
    revoke_appliance(&svc.pool, audit, id).await?.ok_or(ApplianceError::NotFound)?;
    enforce(&svc.revoker, &[id]).await;
    store::fleet_get(&svc.pool, id).await?.ok_or(ApplianceError::NotFound)
}

/// Makes committed revocations bite (`Revoker::enforce`: a new CRL, the broker told, the
/// appliances disconnected). A failure is logged, not returned: the revocation stands and
/// the next CRL carries it. Returns whether it bit.
pub async fn enforce(revoker: &Revoker, revoked: &[ApplianceId]) -> bool {
    match revoker.enforce(revoked).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "revocation recorded, but the CRL could not be published");
            false
        }
    }
}

/// Revokes one appliance in one transaction, audited (`appliance.revoke`) the first time;
/// `None` if there is no such appliance. Follow with [`enforce`] (or `Revoker::enforce`).
pub async fn revoke_appliance(
    pool: &PgPool,
    audit: Recorder<'_>,
    id: ApplianceId,
) -> Result<Option<Revoked>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(r) = revocations::revoke(&mut tx, None, id, "revoked by an operator").await? else {
        return Ok(None);
    };
    if r.newly {
        let after = serde_json::json!({ "certificate_serial": r.serial });
        audit
            .record(&mut tx, Some(r.tenant), "appliance.revoke", ("appliance", id.to_string()), None, Some(after))
            .await?;
    }
    tx.commit().await?;
    Ok(Some(r))
}

/// Deletes a tenant and everything it owns, revoking its appliances first (their serials
/// stay on the CRL), audited (`tenant.delete`; the trail outlives the tenant). Returns the
/// deleted tenant and its revoked appliances; follow with [`enforce`] (or
/// `Revoker::enforce`).
pub async fn delete_tenant(
    pool: &PgPool,
    audit: Recorder<'_>,
    id: TenantId,
) -> Result<Option<(Tenant, Vec<ApplianceId>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(before) = tenants::get(&mut tx, id).await? else { return Ok(None) };
    let revoked = revocations::revoke_tenant(&mut tx, id, "tenant deleted").await?;
    tenants::delete(&mut tx, id).await?;
    let after = serde_json::json!({ "revoked_appliances": revoked });
    audit
        .record(&mut tx, Some(id), "tenant.delete", ("tenant", id.to_string()), snapshot(&before), Some(after))
        .await?;
    tx.commit().await?;
    Ok(Some((before, revoked)))
}

/// How the heartbeat ingest is doing, for the operator console: this process's counters
/// since it started (a client turns two readings into rates) and how fresh the newest
/// stored heartbeat is.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestHealth {
    /// Heartbeats written to PostgreSQL by this process since it started.
    pub heartbeats_ingested: u64,
    /// Ingest batches written, and the seconds they took in all.
    pub batches: u64,
    pub batch_seconds: f64,
    pub batch_errors: u64,
    /// Messages dropped because the ingest queue was full.
    pub messages_dropped: u64,
    /// Heartbeats from appliances the control plane does not know.
    pub unknown_appliances: u64,
    /// Seconds since the newest heartbeat of an online appliance was stored (`null`: none
    /// is online). With appliances beating every N seconds, much more than N is lag.
    pub newest_heartbeat_age_s: Option<f64>,
    /// When this was read (the server's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

pub async fn ingest_health(svc: &Services) -> Result<IngestHealth, ApplianceError> {
    let m = &svc.metrics;
    Ok(IngestHealth {
        heartbeats_ingested: m.heartbeats_ingested.get(),
        batches: m.ingest_batch_seconds.get_sample_count(),
        batch_seconds: m.ingest_batch_seconds.get_sample_sum(),
        batch_errors: m.ingest_batch_errors.get(),
        messages_dropped: m.ingest_messages_dropped.get(),
        unknown_appliances: m.ingest_unknown_appliances.get(),
        newest_heartbeat_age_s: store::newest_heartbeat_age(&svc.pool).await?,
        at: OffsetDateTime::now_utc(),
    })
}

/// The fleet's counts, one point per sampled minute (see [`run_fleet_sampler`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetTrend {
    /// Oldest first, summed over tenants (or the one tenant asked for).
    pub points: Vec<store::TrendPoint>,
}

/// How far back a trend may reach (samples are kept this long).
pub const TREND_KEEP_HOURS: u32 = 24 * 7;

/// The last `hours` of sampled counts (1 to [`TREND_KEEP_HOURS`], default 6).
pub async fn fleet_trend(
    svc: &Services,
    tenant: Option<TenantId>,
    hours: Option<u32>,
) -> Result<FleetTrend, ApplianceError> {
    let hours = hours.unwrap_or(6);
    if !(1..=TREND_KEEP_HOURS).contains(&hours) {
        return Err(ApplianceError::Invalid(Invalid::new(
            "hours",
            format!("hours must be between 1 and {TREND_KEEP_HOURS}"),
        )));
    }
    let since = OffsetDateTime::now_utc() - time::Duration::hours(i64::from(hours));
    Ok(FleetTrend { points: store::trend(&svc.pool, tenant, since).await? })
}

/// Samples every tenant's counts once a minute into `fleet_samples` (the console's trend),
/// keeping [`TREND_KEEP_HOURS`]; stops at shutdown.
pub async fn run_fleet_sampler(pool: PgPool, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticker = crate::ticker::Ticker::new(std::time::Duration::from_secs(60), shutdown);
    let keep = time::Duration::hours(i64::from(TREND_KEEP_HOURS));
    while ticker.tick().await {
        if let Err(e) = store::sample_counts(&pool, keep).await {
            tracing::warn!(error = %e, "sampling the fleet's counts failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_size(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(matches!(page_size(Some(0)), Err(ApplianceError::BadLimit { max: MAX_LIMIT })));
        assert!(page_size(Some(MAX_LIMIT + 1)).is_err());
    }

    #[test]
    fn a_page_cut_names_the_next_cursor() {
        let ids: Vec<ApplianceId> = (0..3).map(|_| ApplianceId::new()).collect();
        let mut rows = ids.clone();
        assert_eq!(next_page(&mut rows, 2, |a| *a), Some(ids[1]));
        assert_eq!(rows.len(), 2);
        let mut rows = ids.clone();
        assert_eq!(next_page(&mut rows, 3, |a| *a), None);
    }
}
