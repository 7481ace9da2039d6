//! The rollout advancer. Every replica runs one; each round it takes the active rollouts
//! whose start time has come and advances each in a transaction of its own under the
//! rollout's row lock (`FOR UPDATE SKIP LOCKED`), so one rollout is advanced by exactly one
//! replica at a time and a restart continues from what is stored. One round of one
//! rollout:
//!
//! 1. at its start, resolve the target into executions and fix the wave sizes (a dynamic
//!    rollout then takes new matches into its open wave every round);
//! 2. end the executions whose task finished (or whose configuration version was
//!    reported), retrying failures and timeouts after a backoff while attempts remain;
//! 3. abort when the failure rate passes the threshold: what has not reached an appliance
//!    is cancelled;
//! 4. open the next wave once the open one passed its gate (or wait for an approval);
//! 5. start pending executions of open waves on online appliances inside their window, at
//!    most the rate allows and `tasks.rollout_batch` per round: a task each (sent by the
//!    dispatcher) or a new desired version with the overlay;
//! 6. succeed once every wave is open and every execution finished (never, for a dynamic
//!    rollout).
//!
//! A paused rollout gets steps 2 and 3 only (what was sent still finishes, and may abort it).
//! Every transition it makes is audited with the actor `system`.

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::{ApplianceId, TenantId};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use hearth_protocol::artifact::{AgentUpdate, UPDATE_ACTION};

use super::{parse_row, progress, Payload, Policy};
use crate::config::TasksConfig;
use crate::db::audit::{Actor, Recorder};
use crate::db::rollouts::{self as store, Rollout};
use crate::domain::desired::merge;
use crate::domain::Wake;
use crate::metrics::Metrics;
use crate::model::RolloutState;
use crate::ticker::Ticker;

/// Rollouts looked at per round.
const ROLLOUTS_PER_ROUND: i64 = 100;

/// Runs the advancer every `tasks.rollout_interval_ms` until shutdown.
pub async fn run(pool: PgPool, wake: Wake, cfg: TasksConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let every = Duration::from_millis(cfg.rollout_interval_ms);
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.tick().await {
        match round(&pool, &cfg, &metrics).await {
            Ok(0) => {}
            Ok(started) => {
                wake.wake();
                tracing::debug!(started, "rollout executions started");
            }
            Err(e) => tracing::warn!(error = %e, "rollout round failed; will retry"),
        }
    }
}

/// What one round did to one rollout.
#[derive(Debug, Default)]
struct Step {
    started: u64,
    /// The final state it moved the rollout to.
    finished: Option<RolloutState>,
}

/// One round over every due rollout; returns how many executions started.
pub async fn round(pool: &PgPool, cfg: &TasksConfig, metrics: &Metrics) -> Result<u64, sqlx::Error> {
    let mut started = 0;
    for id in store::due(pool, ROLLOUTS_PER_ROUND).await? {
        let mut tx = pool.begin().await?;
        let Some(r) = store::lock_active(&mut tx, id).await? else {
            continue;
        };
        let step = advance(&mut tx, r, cfg).await?;
        tx.commit().await?;
        started += step.started;
        metrics.rollout_executions_started.inc_by(step.started);
        if let Some(state) = step.finished {
            metrics.rollouts_finished.with_label_values(&[state.as_str()]).inc();
        }
    }
    Ok(started)
}

async fn audit(
    conn: &mut PgConnection,
    r: &Rollout,
    action: &str,
    after: serde_json::Value,
) -> Result<(), sqlx::Error> {
    Recorder::new(&Actor::system(), None)
        .record(conn, r.tenant_id, action, ("rollout", r.id.to_string()), None, Some(after))
        .await
}

async fn advance(conn: &mut PgConnection, mut r: Rollout, cfg: &TasksConfig) -> Result<Step, sqlx::Error> {
    let (selector, payload, policy) = parse_row(&r);
    let target = selector.target(r.tenant_id);
    // Paused before its start: nothing to look at yet.
    if r.state == RolloutState::Paused && r.started_at.is_none() {
        return Ok(Step::default());
    }

    // 1. The target.
    if r.state == RolloutState::Scheduled {
        let n = store::resolve(conn, r.id, &target).await?;
        let mut sizes: Vec<i32> =
            policy.wave_sizes(n as u64).into_iter().map(|s| i32::try_from(s).unwrap_or(i32::MAX)).collect();
        if sizes.is_empty() && r.dynamic {
            sizes.push(0);
        }
        store::assign_waves(conn, r.id, &sizes).await?;
        audit(conn, &r, "rollout.start", serde_json::json!({ "targets": n, "wave_sizes": sizes })).await?;
        if sizes.is_empty() {
            let why = "no appliance matched the selector when the rollout started";
            store::set_state(conn, r.id, RolloutState::Succeeded, Some(why)).await?;
            audit(conn, &r, "rollout.succeeded", serde_json::json!({ "reason": why })).await?;
            return Ok(Step { started: 0, finished: Some(RolloutState::Succeeded) });
        }
        store::open_waves(conn, r.id, 1).await?;
        store::set_state(conn, r.id, RolloutState::Running, None).await?;
        audit(conn, &r, "rollout.wave_opened", serde_json::json!({ "wave": 0, "size": sizes[0] })).await?;
        tracing::info!(rollout = %r.id, targets = n, waves = sizes.len(), "rollout started");
        r.state = RolloutState::Running;
        r.waves_open = 1;
        r.wave_sizes = sizes;
    } else if r.dynamic && r.waves_open > 0 && r.state != RolloutState::Paused {
        let joined = store::join(conn, r.id, &target, r.waves_open - 1).await?;
        if joined > 0 {
            tracing::info!(rollout = %r.id, joined, "appliances joined a dynamic rollout");
            if let Some(fresh) = store::get(conn, store::Scope::Fleet, r.id).await? {
                r.wave_sizes = fresh.wave_sizes;
            }
        }
    }

    // 2. Finished executions (a paused rollout's too: what was sent still finishes).
    store::cancel_revoked(conn, r.id).await?;
    let attempts = 1 + policy.retries.max as i32;
    let backoff = policy.retries.backoff_s as f64;
    match payload {
        Payload::Task(_) | Payload::AgentUpdate(_) => store::sync_tasks(conn, r.id, attempts, backoff).await?,
        Payload::Config(_) => store::sync_configs(conn, r.id, attempts, backoff, policy.timeout_s() as f64).await?,
    };
    let counts = store::counts(conn, r.id).await?;
    let progress = progress(&r, &counts);
    let total = &progress.total;

    // 3. Abort.
    if let Some(reason) = policy.abort_reason(total.finished() as u64, total.failures() as u64) {
        let cancelled = store::cancel_unstarted(conn, r.id, "the rollout was aborted before this started").await?;
        store::set_state(conn, r.id, RolloutState::Aborted, Some(&reason)).await?;
        audit(conn, &r, "rollout.aborted", serde_json::json!({ "reason": reason, "cancelled": cancelled })).await?;
        tracing::warn!(rollout = %r.id, %reason, cancelled, "rollout aborted");
        return Ok(Step { started: 0, finished: Some(RolloutState::Aborted) });
    }

    // 4. The gate.
    let waves = r.wave_sizes.len() as i32;
    if r.state == RolloutState::Running && r.waves_open < waves {
        let open = &progress.waves[(r.waves_open - 1) as usize].counts;
        let over = (open.finished() + open.cancelled) as u64;
        if policy.gate_passed(open.total as u64, over) {
            if policy.gate.approval {
                store::set_state(conn, r.id, RolloutState::WaitingForApproval, None).await?;
                audit(conn, &r, "rollout.waiting_for_approval", serde_json::json!({ "next_wave": r.waves_open }))
                    .await?;
                r.state = RolloutState::WaitingForApproval;
            } else {
                store::open_waves(conn, r.id, r.waves_open + 1).await?;
                let size = r.wave_sizes[r.waves_open as usize] - r.wave_sizes[(r.waves_open - 1) as usize];
                audit(conn, &r, "rollout.wave_opened", serde_json::json!({ "wave": r.waves_open, "size": size }))
                    .await?;
                r.waves_open += 1;
            }
        }
    }

    // 5. Start what may start.
    let mut started = 0;
    let starting = matches!(r.state, RolloutState::Running | RolloutState::WaitingForApproval);
    if starting && total.pending > 0 {
        let mut budget = cfg.rollout_batch as i64;
        if let Some(rate) = policy.rate_per_minute(total.succeeded as u64) {
            let rate = i64::try_from(rate).unwrap_or(i64::MAX);
            // Spread over the minute: a round's share per round, unless some replica started
            // executions within the last three quarters of an interval (the previous round,
            // one interval ago, is not counted; another replica's round in between is), and
            // never above the minute's.
            let interval = cfg.rollout_interval_ms as f64;
            let per_round = ((rate as f64 * interval / 60_000.0).ceil() as i64).max(1);
            let (minute, recent) = store::started_recently(conn, r.id, interval * 0.75).await?;
            budget = budget.min(per_round - recent).min(rate - minute);
        }
        if budget > 0 {
            let window = policy.window.map(|w| (w.start_hour as i32, w.end_hour as i32));
            let ready = store::startable(conn, r.id, r.waves_open, window, budget).await?;
            if !ready.is_empty() {
                started = start(conn, &r, &payload, &policy, &ready).await?;
            }
        }
    }

    // 6. Done.
    let mut step = Step { started, finished: None };
    let all_over = total.pending == 0 && total.in_progress == 0 && started == 0;
    if !r.dynamic && r.waves_open >= waves && all_over && r.state == RolloutState::Running {
        let reason = (total.failures() > 0)
            .then(|| format!("{} of {} executions did not succeed", total.failures(), total.total));
        store::set_state(conn, r.id, RolloutState::Succeeded, reason.as_deref()).await?;
        audit(
            conn,
            &r,
            "rollout.succeeded",
            serde_json::json!({ "succeeded": total.succeeded, "failures": total.failures() }),
        )
        .await?;
        tracing::info!(rollout = %r.id, succeeded = total.succeeded, failures = total.failures(), "rollout finished");
        step.finished = Some(RolloutState::Succeeded);
    }
    Ok(step)
}

/// Starts these executions: a task each, or the overlay merged into each appliance's
/// rollout layer with a new desired version.
async fn start(
    conn: &mut PgConnection,
    r: &Rollout,
    payload: &Payload,
    policy: &Policy,
    ready: &[(ApplianceId, TenantId)],
) -> Result<u64, sqlx::Error> {
    match payload {
        Payload::Task(t) => {
            let ids: Vec<_> = ready.iter().map(|a| a.0).collect();
            let params = Value::Object(t.params.clone());
            store::start_tasks(conn, r.id, &ids, &t.action, &params, policy.timeout_s() as f64).await
        }
        Payload::AgentUpdate(u) => {
            let ids: Vec<_> = ready.iter().map(|a| a.0).collect();
            let params = serde_json::to_value(AgentUpdate {
                version: u.version.clone(),
                builds: u.builds.clone(),
                allow_downgrade: u.allow_downgrade,
            })
            .unwrap_or_default();
            store::start_tasks(conn, r.id, &ids, UPDATE_ACTION, &params, policy.timeout_s() as f64).await
        }
        Payload::Config(overlay) => {
            let overlay = Value::Object(overlay.clone());
            let current = store::lock_overlays(conn, ready).await?;
            let merged: Vec<_> = current.into_iter().map(|(a, layer)| (a, merge(&layer, &overlay))).collect();
            store::start_configs(conn, r.id, &merged).await
        }
    }
}
