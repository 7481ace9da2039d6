//! Webhook endpoints: a tenant's for its own events, an operator's fleet-wide ones. Register
//! (URL and event types checked, the plan's `webhook_endpoints` respected, the `whsec_`
//! secret shown once and stored encrypted), list, read, change (re-enabling resumes the
//! queue), delete, rotate the secret (the previous one signs too for an overlap), the
//! delivery log and a replay. Every change audited. Delivery itself is `crate::deliver`.

pub mod sign;
pub mod target;

use hearth_protocol::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use self::target::Allow;
use super::desired::secrets::{SecretError, SecretKey};
use super::events::{self, is_pattern};
use super::{next_page, Invalid};
use crate::config::LimitsConfig;
use crate::db::audit::{snapshot, Recorder};
use crate::db::webhooks::{self as store, DeliveryRow, Endpoint, NewEndpoint, Scope};
use crate::db::{plans, tenant_tx};

const DESCRIPTION_MAX: usize = 200;
const TYPES_MAX: usize = 50;
/// How long the previous secret still signs after a rotation, by default and at most.
const OVERLAP_DEFAULT_HOURS: u32 = 24;
const OVERLAP_MAX_HOURS: u32 = 24 * 7;

/// Whose endpoint: an operator's (fleet-wide; operators also see tenants' endpoints) or a
/// tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Operator,
    Tenant(TenantId),
}

impl Owner {
    fn scope(self) -> Scope {
        match self {
            Owner::Operator => Scope::Fleet,
            Owner::Tenant(t) => Scope::Tenant(t),
        }
    }

    fn tenant(self) -> Option<TenantId> {
        match self {
            Owner::Operator => None,
            Owner::Tenant(t) => Some(t),
        }
    }

    async fn begin(self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match self {
            Owner::Operator => pool.begin().await,
            Owner::Tenant(t) => tenant_tx(pool, t).await,
        }
    }
}

/// What the endpoint operations need from the running service.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub pool: &'a PgPool,
    /// `None`: `secrets.key` is not configured, and no endpoint can be registered.
    pub key: Option<&'a SecretKey>,
    pub allow: Allow,
    /// Quotas of tenants without a plan.
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpointRequest {
    /// Where to `POST` events: `https://…` (see "Safe by default").
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Event types (`task.failed`), categories (`task.*`) or `*` for every event.
    pub event_types: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint (its queue resumes where it stopped; events of
    /// the time it was disabled were not queued, read them with `GET …/events?after=`);
    /// `false` pauses it (events are no longer queued for it).
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the previous secret still signs, in hours (default 24, at most 168).
    pub overlap_hours: Option<u32>,
}

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: Uuid,
    /// `null`: an operator's fleet-wide endpoint.
    pub tenant_id: Option<TenantId>,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (410 from the receiver, failures for a day, by hand).
    pub disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// During a rotation: until then the previous secret signs too.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_until: Option<OffsetDateTime>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        let rotating = e.previous_until.filter(|u| *u > OffsetDateTime::now_utc());
        EndpointView {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            previous_secret_until: rotating,
            created_by: e.created_by,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new endpoint with its secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    pub endpoint: EndpointView,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it. Not shown again.
    pub secret: String,
}

/// A rotated secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then deliveries carry the previous secret's signature too.
    #[serde(with = "time::serde::rfc3339")]
    pub previous_secret_until: OffsetDateTime,
}

/// One line of the delivery log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub position: i64,
    /// `pending` (waiting for its next attempt), `delivered`, `failed` (gave up).
    pub state: String,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The receiver's HTTP status (none: no answer).
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    /// What went wrong (timeout, connection refused, the status and the start of the body).
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> Self {
        DeliveryView {
            id: d.id,
            event_id: events::public_id(d.event_id),
            event_type: d.event_type,
            position: d.position,
            state: d.state,
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_latency_ms: d.last_latency_ms,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Older deliveries: pass as `before`.
    pub next_before: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("no such delivery for this endpoint")]
    DeliveryNotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the plan allows {limit} webhook endpoints and all are in use")]
    Limit { limit: i64 },
    #[error("webhook secrets are stored encrypted and this control plane has no `secrets.key` configured")]
    NoKey,
    #[error("a stored webhook secret cannot be decrypted (wrong secrets.key?)")]
    Secret,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<SecretError> for WebhookError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NoKey => WebhookError::NoKey,
            _ => WebhookError::Secret,
        }
    }
}

fn check_types(types: &[String]) -> Result<Vec<String>, Invalid> {
    if types.is_empty() {
        return Err(Invalid::new("event_types", "event_types needs at least one type, category (`task.*`) or `*`"));
    }
    if types.len() > TYPES_MAX {
        return Err(Invalid::new("event_types", format!("event_types holds at most {TYPES_MAX} entries")));
    }
    if let Some(bad) = types.iter().find(|t| !is_pattern(t)) {
        return Err(Invalid::new(
            "event_types",
            format!("unknown event type {bad:?}; known types: {}", events::TYPES.join(", ")),
        ));
    }
    let mut v = types.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

fn check_description(d: &str) -> Result<String, Invalid> {
    if d.chars().count() > DESCRIPTION_MAX {
        return Err(Invalid::new("description", format!("description is at most {DESCRIPTION_MAX} characters")));
    }
    Ok(d.trim().to_string())
}

fn seal(key: &SecretKey, endpoint: Uuid, secret: &str) -> Result<String, WebhookError> {
    Ok(key.seal_text(&endpoint.to_string(), secret)?)
}

/// The secrets that sign a delivery now: the current one, and the previous one during a
/// rotation's overlap.
pub fn signing_secrets(
    key: &SecretKey,
    endpoint: Uuid,
    current: &str,
    previous: Option<&str>,
    previous_until: Option<OffsetDateTime>,
) -> Result<Vec<String>, WebhookError> {
    let aad = endpoint.to_string();
    let mut v = vec![key.open_text(&aad, current)?];
    if let (Some(p), Some(until)) = (previous, previous_until) {
        if until > OffsetDateTime::now_utc() {
            v.push(key.open_text(&aad, p)?);
        }
    }
    Ok(v)
}

/// Registers an endpoint, audited (`webhook.create`). A tenant's count is bounded by its
/// plan's `webhook_endpoints` (the refusal also tells `quota.exhausted`).
pub async fn create(
    cx: Context<'_>,
    owner: Owner,
    new: NewEndpointRequest,
    audit: Recorder<'_>,
) -> Result<CreatedEndpoint, WebhookError> {
    let key = cx.key.ok_or(WebhookError::NoKey)?;
    let url = target::check_url(new.url.trim(), cx.allow).map_err(|m| Invalid::new("url", m))?;
    let types = check_types(&new.event_types)?;
    let description = check_description(&new.description)?;
    let mut tx = owner.begin(cx.pool).await?;
    if let Owner::Tenant(t) = owner {
        let (_, quotas) = plans::quotas_for(&mut tx, t, cx.limits).await?;
        let limit = i64::from(quotas.webhook_endpoints);
        if store::count(&mut tx, t).await? >= limit {
            drop(tx);
            let e = WebhookError::Limit { limit };
            events::quota_exhausted(cx.pool, t, "webhook_endpoints", limit, &e.to_string()).await;
            return Err(e);
        }
    }
    let id = Uuid::now_v7();
    let secret = sign::new_secret();
    let sealed = seal(key, id, &secret)?;
    let actor = audit.actor.label();
    let e = store::insert(
        &mut tx,
        &NewEndpoint {
            id,
            tenant: owner.tenant(),
            url: url.as_str(),
            description: &description,
            event_types: &types,
            secret_enc: &sealed,
            created_by: &actor,
        },
    )
    .await?;
    let view = EndpointView::from(e);
    audit.record(&mut tx, owner.tenant(), "webhook.create", ("webhook", id.to_string()), None, snapshot(&view)).await?;
    tx.commit().await?;
    Ok(CreatedEndpoint { endpoint: view, secret })
}

/// The owner's endpoints (operators: every endpoint, or only the fleet-wide ones).
pub async fn list(pool: &PgPool, owner: Owner, fleet_only: bool) -> Result<Vec<EndpointView>, WebhookError> {
    let mut tx = owner.begin(pool).await?;
    let v = store::list(&mut tx, owner.scope(), fleet_only).await?;
    tx.commit().await?;
    Ok(v.into_iter().map(EndpointView::from).collect())
}

pub async fn get(pool: &PgPool, owner: Owner, id: Uuid) -> Result<EndpointView, WebhookError> {
    let mut tx = owner.begin(pool).await?;
    let e = store::get(&mut tx, owner.scope(), id, false).await?.ok_or(WebhookError::NotFound)?;
    tx.commit().await?;
    Ok(e.into())
}

/// Changes an endpoint, audited (`webhook.update`).
pub async fn update(
    cx: Context<'_>,
    owner: Owner,
    id: Uuid,
    changes: EndpointChanges,
    audit: Recorder<'_>,
) -> Result<EndpointView, WebhookError> {
    let url = match &changes.url {
        Some(u) => Some(target::check_url(u.trim(), cx.allow).map_err(|m| Invalid::new("url", m))?),
        None => None,
    };
    let types = changes.event_types.as_deref().map(check_types).transpose()?;
    let description = changes.description.as_deref().map(check_description).transpose()?;
    let mut tx = owner.begin(cx.pool).await?;
    let mut e = store::get(&mut tx, owner.scope(), id, true).await?.ok_or(WebhookError::NotFound)?;
    let before = EndpointView::from(e.clone());
    if let Some(u) = url {
        e.url = u.to_string();
    }
    if let Some(t) = types {
        e.event_types = t;
    }
    if let Some(d) = description {
        e.description = d;
    }
    match changes.enabled {
        Some(true) if !e.enabled => {
            e.enabled = true;
            e.disabled_reason = None;
            e.disabled_at = None;
        }
        Some(false) if e.enabled => {
            e.enabled = false;
            e.disabled_reason = Some(format!("disabled by {}", audit.actor.label()));
            e.disabled_at = Some(OffsetDateTime::now_utc());
        }
        _ => {}
    }
    let after = EndpointView::from(store::save(&mut tx, &e).await?);
    audit
        .record(
            &mut tx,
            e.tenant_id,
            "webhook.update",
            ("webhook", id.to_string()),
            snapshot(&before),
            snapshot(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes an endpoint and its delivery log, audited (`webhook.delete`).
pub async fn delete(pool: &PgPool, owner: Owner, id: Uuid, audit: Recorder<'_>) -> Result<(), WebhookError> {
    let mut tx = owner.begin(pool).await?;
    let e = store::get(&mut tx, owner.scope(), id, true).await?.ok_or(WebhookError::NotFound)?;
    store::delete(&mut tx, owner.scope(), id).await?;
    audit
        .record(
            &mut tx,
            e.tenant_id,
            "webhook.delete",
            ("webhook", id.to_string()),
            snapshot(&EndpointView::from(e)),
            None,
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new secret; the previous one keeps signing for the overlap. Audited
/// (`webhook.rotate_secret`, without either secret).
pub async fn rotate(
    cx: Context<'_>,
    owner: Owner,
    id: Uuid,
    req: RotateRequest,
    audit: Recorder<'_>,
) -> Result<RotatedSecret, WebhookError> {
    let key = cx.key.ok_or(WebhookError::NoKey)?;
    let hours = req.overlap_hours.unwrap_or(OVERLAP_DEFAULT_HOURS);
    if hours > OVERLAP_MAX_HOURS {
        return Err(Invalid::new("overlap_hours", format!("overlap_hours is at most {OVERLAP_MAX_HOURS}")).into());
    }
    let mut tx = owner.begin(cx.pool).await?;
    let mut e = store::get(&mut tx, owner.scope(), id, true).await?.ok_or(WebhookError::NotFound)?;
    let secret = sign::new_secret();
    let until = OffsetDateTime::now_utc() + time::Duration::hours(i64::from(hours));
    e.previous_secret_enc = Some(std::mem::replace(&mut e.secret_enc, seal(key, id, &secret)?));
    e.previous_until = Some(until);
    let after = EndpointView::from(store::save(&mut tx, &e).await?);
    audit
        .record(&mut tx, e.tenant_id, "webhook.rotate_secret", ("webhook", id.to_string()), None, snapshot(&after))
        .await?;
    tx.commit().await?;
    Ok(RotatedSecret { secret, previous_secret_until: until })
}

/// The endpoint's delivery log, newest first.
pub async fn deliveries(
    pool: &PgPool,
    owner: Owner,
    id: Uuid,
    state: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<DeliveryPage, WebhookError> {
    if let Some(s) = state {
        if !matches!(s, "pending" | "delivered" | "failed") {
            return Err(Invalid::new("state", "state is pending, delivered or failed").into());
        }
    }
    let mut tx = owner.begin(pool).await?;
    store::get(&mut tx, owner.scope(), id, false).await?.ok_or(WebhookError::NotFound)?;
    let mut rows = store::deliveries(&mut tx, id, state, before, limit + 1).await?;
    tx.commit().await?;
    let next_before = next_page(&mut rows, limit, |d| d.id);
    Ok(DeliveryPage { deliveries: rows.into_iter().map(DeliveryView::from).collect(), next_before })
}

/// Sends one delivery again, at once (whatever its state), audited (`webhook.replay`).
pub async fn replay(
    pool: &PgPool,
    owner: Owner,
    id: Uuid,
    delivery: i64,
    audit: Recorder<'_>,
) -> Result<(), WebhookError> {
    let mut tx = owner.begin(pool).await?;
    let e = store::get(&mut tx, owner.scope(), id, false).await?.ok_or(WebhookError::NotFound)?;
    if !store::replay(&mut tx, id, delivery).await? {
        return Err(WebhookError::DeliveryNotFound);
    }
    audit
        .record(
            &mut tx,
            e.tenant_id,
            "webhook.replay",
            ("webhook", id.to_string()),
            None,
            Some(serde_json::json!({"delivery": delivery})),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
