//! Fleet rollouts: one change to many appliances, in waves, stopped by its own failures.
//!
//! A rollout carries a catalog task or a configuration overlay ([`Payload`]) to the
//! appliances a [`Selector`] matches, under a [`Policy`]. Operators create rollouts across
//! tenants; a tenant for its own appliances, within its plan's `rollouts_active`. Both go
//! through [`create`] (the same validation and audit). The advancer ([`advance`]) resolves
//! the target at the start time, opens waves past their gates, starts executions (a task
//! rollout's execution *is* a task, sent by the dispatcher like any other), and aborts on
//! the failure rate. Pause, resume, approve and cancel are here, each audited.

pub mod advance;
pub mod policy;

use hearth_protocol::catalog::{Catalog, Policy as CatalogPolicy, Rejection};
use hearth_protocol::{ApplianceId, PlanId, RolloutId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;

pub use self::policy::Policy;
use super::desired::{self, InvalidConfig};
use super::{label, labels, next_page, Invalid, Services};
use crate::config::{LimitsConfig, TasksConfig};
use crate::db::appliances::Labels;
use crate::db::audit::Recorder;
use crate::db::rollouts::{self as store, Execution, NewRow, Scope, Target};
use crate::db::{plans, tenant_tx};
use crate::model::{ExecutionState, FleetStatus, RolloutState};

const NAME_MAX: usize = 100;
/// At most this many ids in one selector list.
const LIST_MAX: usize = 1000;

/// Which appliances a rollout targets: each list is "any of" (empty: no condition), all
/// fields together. Revoked appliances and suspended tenants never match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Only these tenants' appliances (a tenant's own rollout: only its own id, or empty).
    #[serde(default)]
    pub tenants: Vec<TenantId>,
    /// Only appliances of tenants on these plans.
    #[serde(default)]
    pub plans: Vec<PlanId>,
    /// Only appliances carrying every one of these labels.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: Labels,
    /// Only appliances running one of these agent versions.
    #[serde(default)]
    pub agent_versions: Vec<String>,
    /// Only appliances in one of these states when they join (`revoked` is never targeted).
    #[serde(default)]
    pub statuses: Vec<FleetStatus>,
    /// Only these appliances.
    #[serde(default)]
    pub appliances: Vec<ApplianceId>,
}

/// A catalog task: the same validation as a single task's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPayload {
    /// A catalog action, e.g. `dns.forwarder.set`.
    pub action: String,
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// A new agent version for each appliance ([`crate::update`]-style self-update on the
/// agent): operators only. The control plane sends the version's signed builds (one per
/// architecture, resolved when the rollout is created or its payload changed); each agent
/// takes its own, checks it with the keys of its own configuration, installs it beside the
/// running one and commits only after its health gate — or rolls back and says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentUpdatePayload {
    /// The version to install (builds of it must have been uploaded).
    pub version: String,
    /// Install even where the running version is newer.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// The version's signed builds, filled in by the control plane (ignored on input).
    #[serde(default)]
    #[schema(value_type = Vec<Object>, read_only)]
    pub builds: Vec<hearth_protocol::artifact::SignedManifest>,
}

/// What a rollout carries: exactly one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// Run a catalog task on each appliance.
    Task(TaskPayload),
    /// Merge this overlay into each appliance's desired configuration (over the tenant's
    /// defaults, under the appliance's own overrides); done when the appliance reports the
    /// version applied. No secrets (they belong to a tenant's defaults or overrides).
    Config(Map<String, Value>),
    /// Update the agent itself (operators only).
    AgentUpdate(AgentUpdatePayload),
}

impl Payload {
    fn kind(&self) -> &'static str {
        match self {
            Payload::Task(_) => "task",
            Payload::Config(_) => "config",
            Payload::AgentUpdate(_) => "agent_update",
        }
    }

    /// An agent update's builds, looked up for its version; refused for a tenant.
    async fn resolve(mut self, conn: &mut PgConnection, who: Who) -> Result<Payload, RolloutError> {
        if let Payload::AgentUpdate(u) = &mut self {
            if matches!(who, Who::Tenant(_)) {
                return Err(RolloutError::OperatorOnly);
            }
            u.builds = crate::domain::artifacts::signed_builds(conn, &u.version).await?;
            if u.builds.is_empty() {
                return Err(Invalid::new(
                    "payload.agent_update.version",
                    format!("no build of version {} has been uploaded (`artifact upload`)", u.version),
                )
                .into());
            }
        }
        Ok(self)
    }
}

/// A new rollout.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// 1 to 100 characters.
    pub name: String,
    #[serde(default)]
    pub selector: Selector,
    /// Keep taking appliances that match later (enrolled, labelled, upgraded), like a
    /// continuous job; such a rollout runs until cancelled.
    #[serde(default)]
    pub dynamic: bool,
    pub payload: Payload,
    #[serde(default)]
    pub policy: Policy,
    /// Start no earlier than this (RFC 3339; default now).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_at: Option<OffsetDateTime>,
}

/// Any of these; the rest stay. The payload may change only before the rollout started,
/// the waves only before it started.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutChanges {
    pub name: Option<String>,
    pub payload: Option<Payload>,
    /// Replaces the whole policy (fields left out take their defaults): once the rollout
    /// started, send its `waves` unchanged.
    pub policy: Option<Policy>,
}

/// Executions of one wave, by state.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    /// Pending because the appliance is offline (it starts when the appliance returns).
    pub pending_offline: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    pub timed_out: i64,
    pub cancelled: i64,
}

impl Counts {
    fn add(&mut self, c: &store::Count) {
        self.total += c.n;
        match c.state {
            ExecutionState::Pending => {
                self.pending += c.n;
                self.pending_offline += c.offline;
            }
            ExecutionState::InProgress => self.in_progress += c.n,
            ExecutionState::Succeeded => self.succeeded += c.n,
            ExecutionState::Failed => self.failed += c.n,
            ExecutionState::Rejected => self.rejected += c.n,
            ExecutionState::TimedOut => self.timed_out += c.n,
            ExecutionState::Cancelled => self.cancelled += c.n,
        }
    }

    /// Succeeded, failed, rejected or timed out.
    pub fn finished(&self) -> i64 {
        self.succeeded + self.failures()
    }

    pub fn failures(&self) -> i64 {
        self.failed + self.rejected + self.timed_out
    }
}

/// One wave: its size and its executions by state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaveProgress {
    /// 0, 1, …
    pub wave: i32,
    pub open: bool,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Progress {
    #[serde(flatten)]
    pub total: Counts,
    pub waves: Vec<WaveProgress>,
}

/// A rollout with its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RolloutView {
    pub id: RolloutId,
    /// The tenant whose rollout it is; absent for an operator's (which may span tenants).
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub selector: Selector,
    pub dynamic: bool,
    pub payload: Payload,
    pub policy: Policy,
    pub state: RolloutState,
    /// Why it was aborted (or cancelled).
    pub reason: Option<String>,
    pub waves_open: i32,
    /// Cumulative executions per wave, fixed when the target was resolved.
    pub wave_sizes: Vec<i32>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub progress: Progress,
}

/// One page of rollouts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutPage {
    pub rollouts: Vec<RolloutView>,
    pub next_after: Option<RolloutId>,
}

/// One page of a rollout's executions, in the rollout's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage {
    pub executions: Vec<Execution>,
    /// Pass as `after` for the next page.
    pub next_after: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The catalog refuses the task's action or a parameter.
    #[error("{}", .0.message)]
    Catalog(Rejection),
    /// The configuration overlay breaks a rule.
    #[error("payload.config.{0}")]
    Config(InvalidConfig),
    #[error("the rollout is {state}; {action} is not possible now")]
    State { state: RolloutState, action: &'static str },
    #[error("the rollout has started: its {what} can no longer change (create a new rollout)")]
    Started { what: &'static str },
    #[error("the plan allows {max} active rollouts; finish or cancel one first")]
    Limit { max: i32 },
    #[error("only an operator can roll out an agent update")]
    OperatorOnly,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who acts on rollouts: an operator (every rollout) or a tenant (its own).
#[derive(Debug, Clone, Copy)]
pub enum Who {
    Operator,
    Tenant(TenantId),
}

impl Who {
    fn scope(self) -> Scope {
        match self {
            Who::Operator => Scope::Fleet,
            Who::Tenant(t) => Scope::Tenant(t),
        }
    }

    fn tenant(self) -> Option<TenantId> {
        match self {
            Who::Operator => None,
            Who::Tenant(t) => Some(t),
        }
    }

    /// The transaction its changes run in (a tenant's: row-level security).
    async fn begin(self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match self {
            Who::Operator => pool.begin().await,
            Who::Tenant(t) => tenant_tx(pool, t).await,
        }
    }
}

impl Selector {
    /// Checks the selector; a tenant's must not name anything but its own.
    fn check(&self, who: Who) -> Result<(), Invalid> {
        let long = [
            ("selector.tenants", self.tenants.len()),
            ("selector.plans", self.plans.len()),
            ("selector.agent_versions", self.agent_versions.len()),
            ("selector.appliances", self.appliances.len()),
        ];
        if let Some((param, _)) = long.iter().find(|(_, n)| *n > LIST_MAX) {
            return Err(Invalid::new(param, format!("{param} holds at most {LIST_MAX} entries")));
        }
        labels::validate(&self.labels).map_err(|e| Invalid::new("selector.labels", e.message))?;
        if self.statuses.contains(&FleetStatus::Revoked) {
            return Err(Invalid::new("selector.statuses", "revoked appliances cannot be targeted"));
        }
        if self.agent_versions.iter().any(|v| v.is_empty() || v.len() > 64) {
            return Err(Invalid::new("selector.agent_versions", "an agent version is 1 to 64 characters"));
        }
        if let Who::Tenant(t) = who {
            if self.tenants.iter().any(|x| *x != t) {
                return Err(Invalid::new("selector.tenants", "a tenant's rollout can target only its own appliances"));
            }
            if !self.plans.is_empty() {
                return Err(Invalid::new("selector.plans", "plans select across tenants: operators only"));
            }
        }
        Ok(())
    }

    /// The selector as a storage filter, kept to `scope`'s tenant when it has one.
    pub fn target(&self, scope: Option<TenantId>) -> Target {
        Target {
            scope,
            tenants: self.tenants.clone(),
            plans: self.plans.clone(),
            labels: self.labels.clone(),
            agent_versions: self.agent_versions.clone(),
            statuses: self.statuses.iter().map(|s| s.as_str().to_string()).collect(),
            appliances: self.appliances.clone(),
        }
    }
}

/// A secret in an overlay: refused (a rollout's overlay is stored as given, for every
/// tenant it reaches; secrets are sealed per tenant in its defaults or overrides).
fn has_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$secret") || m.values().any(has_secret),
        Value::Array(a) => a.iter().any(has_secret),
        _ => false,
    }
}

impl Payload {
    /// Checks the payload (the catalog's validator, or the configuration rules) and returns
    /// it normalised (a task's parameters as the catalog returns them).
    fn check(self) -> Result<Payload, RolloutError> {
        match self {
            Payload::Task(t) => {
                let (_, params) = Catalog::embedded()
                    .validate(&t.action, &t.params, &CatalogPolicy::default())
                    .map_err(RolloutError::Catalog)?;
                Ok(Payload::Task(TaskPayload { action: t.action, params }))
            }
            Payload::Config(overlay) => {
                if overlay.is_empty() {
                    return Err(Invalid::new("payload.config", "the configuration overlay is empty").into());
                }
                let doc = Value::Object(overlay);
                if has_secret(&doc) {
                    return Err(Invalid::new(
                        "payload.config",
                        "a rollout's overlay cannot hold secrets; put them in the tenant's defaults or the \
                         appliance's overrides",
                    )
                    .into());
                }
                desired::validate(&doc, &CatalogPolicy::default()).map_err(RolloutError::Config)?;
                let Value::Object(overlay) = doc else { unreachable!("built as an object above") };
                Ok(Payload::Config(overlay))
            }
            Payload::AgentUpdate(u) => {
                hearth_protocol::artifact::Version::parse(&u.version)
                    .map_err(|e| Invalid::new("payload.agent_update.version", e.to_string()))?;
                Ok(Payload::AgentUpdate(AgentUpdatePayload { builds: Vec::new(), ..u }))
            }
        }
    }
}

fn parse_row(r: &store::Rollout) -> (Selector, Payload, Policy) {
    // Stored by this module from these types; a row that no longer reads (a later format)
    // shows as empty rather than failing the whole list.
    let selector = serde_json::from_value(r.selector.clone()).unwrap_or_default();
    let payload = serde_json::from_value(r.payload.clone()).unwrap_or(Payload::Config(Map::new()));
    let policy = serde_json::from_value(r.policy.clone()).unwrap_or_default();
    (selector, payload, policy)
}

/// The progress of a rollout from its counts.
pub fn progress(r: &store::Rollout, counts: &[store::Count]) -> Progress {
    let mut total = Counts::default();
    let mut waves: Vec<WaveProgress> = (0..r.wave_sizes.len() as i32)
        .map(|w| WaveProgress { wave: w, open: w < r.waves_open, counts: Counts::default() })
        .collect();
    for c in counts {
        total.add(c);
        if let Some(w) = waves.get_mut(c.wave as usize) {
            w.counts.add(c);
        }
    }
    Progress { total, waves }
}

async fn view(conn: &mut PgConnection, r: store::Rollout) -> Result<RolloutView, sqlx::Error> {
    let counts = store::counts(conn, r.id).await?;
    let progress = progress(&r, &counts);
    let (selector, payload, policy) = parse_row(&r);
    Ok(RolloutView {
        id: r.id,
        tenant_id: r.tenant_id,
        name: r.name,
        selector,
        dynamic: r.dynamic,
        payload,
        policy,
        state: r.state,
        reason: r.reason,
        waves_open: r.waves_open,
        wave_sizes: r.wave_sizes,
        created_by: r.created_by,
        start_at: r.start_at,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        updated_at: r.updated_at,
        progress,
    })
}

/// Creates a rollout, checked in full (name, selector, payload, policy, a target that is not
/// empty, the tenant's plan limit) before anything is stored; audited (`rollout.create`).
pub async fn create(
    pool: &PgPool,
    tasks: &TasksConfig,
    limits: LimitsConfig,
    who: Who,
    new: NewRollout,
    audit: Recorder<'_>,
) -> Result<RolloutView, RolloutError> {
    let name = label("name", &new.name, NAME_MAX)?.to_string();
    new.selector.check(who)?;
    let payload = new.payload.check()?;
    let policy = new.policy.validate(tasks)?;
    let mut tx = who.begin(pool).await?;
    let payload = payload.resolve(&mut tx, who).await?;
    if let Who::Tenant(t) = who {
        let foreign = store::foreign_appliances(&mut tx, t, &new.selector.appliances).await?;
        if let Some(a) = foreign.first() {
            return Err(Invalid::new(
                "selector.appliances",
                format!("appliance {a} is not one of this tenant's appliances"),
            )
            .into());
        }
        let (_, quotas) = plans::quotas_for(&mut tx, t, limits).await?;
        if store::count_active(&mut tx, t).await? >= quotas.rollouts_active as i64 {
            drop(tx);
            let e = RolloutError::Limit { max: quotas.rollouts_active };
            let limit = i64::from(quotas.rollouts_active);
            super::events::quota_exhausted(pool, t, "rollouts_active", limit, &e.to_string()).await;
            return Err(e);
        }
    }
    if !new.dynamic && store::count_matching(&mut tx, &new.selector.target(who.tenant())).await? == 0 {
        return Err(Invalid::new("selector", "the selector matches no appliance (revoked ones never match)").into());
    }
    let row = store::insert(
        &mut tx,
        NewRow {
            tenant: who.tenant(),
            name: &name,
            selector: serde_json::to_value(&new.selector).unwrap_or_default(),
            dynamic: new.dynamic,
            payload: serde_json::to_value(&payload).unwrap_or_default(),
            policy: serde_json::to_value(&policy).unwrap_or_default(),
            start_at: new.start_at,
            created_by: audit.actor.label(),
        },
    )
    .await?;
    let v = view(&mut tx, row).await?;
    let after = serde_json::json!({
        "name": v.name, "selector": v.selector, "dynamic": v.dynamic, "payload": v.payload, "policy": v.policy,
        "start_at": v.start_at.to_string(),
    });
    audit.record(&mut tx, v.tenant_id, "rollout.create", ("rollout", v.id.to_string()), None, Some(after)).await?;
    tx.commit().await?;
    tracing::info!(rollout = %v.id, kind = payload.kind(), "rollout created");
    Ok(v)
}

pub async fn get(pool: &PgPool, who: Who, id: RolloutId) -> Result<RolloutView, RolloutError> {
    let mut tx = who.begin(pool).await?;
    let r = store::get(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    let v = view(&mut tx, r).await?;
    tx.commit().await?;
    Ok(v)
}

/// Rollouts, newest first, optionally in one state.
pub async fn list(
    pool: &PgPool,
    who: Who,
    state: Option<RolloutState>,
    after: Option<RolloutId>,
    limit: i64,
) -> Result<RolloutPage, RolloutError> {
    let mut tx = who.begin(pool).await?;
    let mut rows = store::list(&mut tx, who.scope(), state, after, limit + 1).await?;
    let next_after = next_page(&mut rows, limit, |r| r.id);
    let mut rollouts = Vec::with_capacity(rows.len());
    for r in rows {
        rollouts.push(view(&mut tx, r).await?);
    }
    tx.commit().await?;
    Ok(RolloutPage { rollouts, next_after })
}

/// A rollout's executions, a page at a time, optionally in one state.
pub async fn executions(
    pool: &PgPool,
    who: Who,
    id: RolloutId,
    state: Option<ExecutionState>,
    after: Option<i32>,
    limit: i64,
) -> Result<ExecutionPage, RolloutError> {
    let mut tx = who.begin(pool).await?;
    store::get(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    let mut rows = store::executions(&mut tx, id, state, after, limit + 1).await?;
    tx.commit().await?;
    let next_after = next_page(&mut rows, limit, |r| r.0);
    Ok(ExecutionPage { executions: rows.into_iter().map(|r| r.1).collect(), next_after })
}

/// What an operator or a tenant asks of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    Pause,
    Resume,
    Approve,
    Cancel,
}

impl Steer {
    fn name(self) -> &'static str {
        match self {
            Steer::Pause => "pause",
            Steer::Resume => "resume",
            Steer::Approve => "approve",
            Steer::Cancel => "cancel",
        }
    }
}

/// Pauses, resumes, approves the next wave of, or cancels a rollout; audited
/// (`rollout.pause|resume|approve|cancel`). Cancelling stops what has not reached an
/// appliance (pending executions, tasks not yet sent); a cancelled rollout stays cancelled.
pub async fn steer(
    pool: &PgPool,
    who: Who,
    id: RolloutId,
    what: Steer,
    audit: Recorder<'_>,
) -> Result<RolloutView, RolloutError> {
    let mut tx = who.begin(pool).await?;
    let r = store::get_for_update(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    let refuse = || RolloutError::State { state: r.state, action: what.name() };
    let before = serde_json::json!({ "state": r.state, "waves_open": r.waves_open });
    match what {
        Steer::Pause => {
            if !matches!(r.state, RolloutState::Scheduled | RolloutState::Running | RolloutState::WaitingForApproval) {
                return Err(refuse());
            }
            store::set_state(&mut tx, id, RolloutState::Paused, None).await?;
        }
        Steer::Resume => {
            if r.state != RolloutState::Paused {
                return Err(refuse());
            }
            // Back to where the advancer picks it up: a rollout that never started waits
            // for its start again; a started one runs and re-checks its gate.
            let state = if r.started_at.is_none() { RolloutState::Scheduled } else { RolloutState::Running };
            store::set_state(&mut tx, id, state, None).await?;
        }
        Steer::Approve => {
            if r.state != RolloutState::WaitingForApproval {
                return Err(refuse());
            }
            store::open_waves(&mut tx, id, r.waves_open + 1).await?;
            store::set_state(&mut tx, id, RolloutState::Running, None).await?;
        }
        Steer::Cancel => {
            if r.state.is_final() {
                return Err(refuse());
            }
            let why = format!("cancelled by {}", audit.actor.label());
            store::cancel_unstarted(&mut tx, id, &why).await?;
            store::set_state(&mut tx, id, RolloutState::Cancelled, Some(&why)).await?;
        }
    }
    let r = store::get(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    let after = serde_json::json!({ "state": r.state, "waves_open": r.waves_open });
    let action = format!("rollout.{}", what.name());
    audit.record(&mut tx, r.tenant_id, &action, ("rollout", id.to_string()), Some(before), Some(after)).await?;
    let v = view(&mut tx, r).await?;
    tx.commit().await?;
    Ok(v)
}

/// Changes a rollout's name or policy, or (before it started) its payload; audited
/// (`rollout.update`). A finished rollout does not change.
pub async fn update(
    pool: &PgPool,
    tasks: &TasksConfig,
    who: Who,
    id: RolloutId,
    changes: RolloutChanges,
    audit: Recorder<'_>,
) -> Result<RolloutView, RolloutError> {
    let name = changes.name.as_deref().map(|n| label("name", n, NAME_MAX)).transpose()?.map(str::to_string);
    let payload = changes.payload.map(Payload::check).transpose()?;
    let policy = changes.policy.map(|p| p.validate(tasks)).transpose()?;
    let mut tx = who.begin(pool).await?;
    let r = store::get_for_update(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    if r.state.is_final() {
        return Err(RolloutError::State { state: r.state, action: "a change" });
    }
    let payload = match payload {
        Some(p) => Some(p.resolve(&mut tx, who).await?),
        None => None,
    };
    let (_, old_payload, old_policy) = parse_row(&r);
    let started = r.started_at.is_some();
    if started && payload.as_ref().is_some_and(|p| *p != old_payload) {
        return Err(RolloutError::Started { what: "payload (its action, parameters or overlay)" });
    }
    if started && policy.as_ref().is_some_and(|p| p.waves != old_policy.waves) {
        return Err(RolloutError::Started { what: "waves" });
    }
    let before = serde_json::json!({ "name": r.name, "payload": old_payload, "policy": old_policy });
    let name = name.unwrap_or(r.name.clone());
    let payload = payload.unwrap_or(old_payload);
    let policy = policy.unwrap_or(old_policy);
    let after = serde_json::json!({ "name": name, "payload": payload, "policy": policy });
    store::update(
        &mut tx,
        id,
        &name,
        &serde_json::to_value(&policy).unwrap_or_default(),
        &serde_json::to_value(&payload).unwrap_or_default(),
    )
    .await?;
    audit
        .record(&mut tx, r.tenant_id, "rollout.update", ("rollout", id.to_string()), Some(before), Some(after))
        .await?;
    let r = store::get(&mut tx, who.scope(), id).await?.ok_or(RolloutError::NotFound)?;
    let v = view(&mut tx, r).await?;
    tx.commit().await?;
    Ok(v)
}

/// [`create`] with the services' configuration.
pub async fn create_with(
    svc: &Services,
    who: Who,
    new: NewRollout,
    audit: Recorder<'_>,
) -> Result<RolloutView, RolloutError> {
    create(&svc.pool, &svc.tasks, svc.limits, who, new, audit).await
}
