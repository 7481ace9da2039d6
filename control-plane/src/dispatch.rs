//! The dispatcher: sends queued tasks and due configuration documents to online
//! appliances. Every replica runs one; rows are claimed with `FOR UPDATE SKIP LOCKED` and
//! marked sent in the same transaction, so each goes out once however many replicas run.
//! It wakes when a task is created, when an appliance comes online or asks for its
//! configuration, and every second.
//!
//! Configuration secrets leave here sealed to the appliance's own key
//! (`secrets::for_appliance`), so what the broker queues for an offline appliance (QoS 1,
//! persistent session, on disk with persistence) holds no secret in clear. An appliance
//! without a sealing key gets its secrets in clear, at QoS 0 only: the broker does not
//! queue QoS 0 for offline clients, and the agent asks for its configuration on every
//! connect (`up/config/request`), which sends it again.

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::{
    encode, ConfigApplied, ConfigDocument, DownChannel, Outcome, ProtocolVersion, TaskDispatch, Topic,
};
use rumqttc::{AsyncClient, QoS};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::audit::{Actor, Recorder};
use crate::db::{desired, tasks};
use crate::domain::desired::layered;
use crate::domain::desired::secrets::{self, SecretKey};
use crate::domain::Wake;
use crate::metrics::Metrics;
use crate::ticker::Ticker;
use hearth_protocol::sealed::SealingKey;

const BATCH: i64 = 100;

#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub client: AsyncClient,
    pub wake: Wake,
    pub metrics: Arc<Metrics>,
    pub secrets: Option<SecretKey>,
}

/// A configuration version pushed this long ago and neither applied nor reported failed is
/// pushed again ([`desired::repush_unanswered`]). Longer than an apply takes (the agent runs
/// `site.yml`; a version sent again while it is still being applied is applied twice, which
/// the playbooks allow), short enough that a lost document does not wait for the
/// appliance's next connection.
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(180);

/// The dispatcher's sweeps, every `every`: marks `timed_out` the unfinished tasks past their
/// deadline (queued ones that never reached an appliance, and sent ones whose result never
/// came), and marks for sending again the configuration versions pushed more than
/// [`UNANSWERED_AFTER`] ago that were never answered (waking the dispatcher to send them).
/// Every replica runs them; both updates are idempotent, and the dispatcher's claim sends
/// each configuration once.
pub async fn run_sweeps(pool: PgPool, metrics: Arc<Metrics>, wake: Wake, every: Duration, shutdown: CancellationToken) {
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.tick().await {
        match tasks::time_out(&pool).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.tasks_timed_out.inc_by(n);
                tracing::info!(tasks = n, "tasks timed out");
            }
            Err(e) => tracing::warn!(error = %e, "task timeout sweep failed"),
        }
        match desired::repush_unanswered(&pool, UNANSWERED_AFTER).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(appliances = n, "configuration versions never answered are sent again");
                wake.wake();
            }
            Err(e) => tracing::warn!(error = %e, "configuration re-push sweep failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DispatchError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Keep going while full batches come back.
            loop {
                match self.dispatch_tasks().await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "task dispatch failed; will retry");
                        break;
                    }
                }
            }
            if let Err(e) = self.push_configs().await {
                tracing::warn!(error = %e, "configuration push failed; will retry");
            }
        }
    }

    /// Hands one message to the MQTT client without waiting. Never `publish().await` here:
    /// this runs inside a transaction holding row locks, and while the broker is away the
    /// client's request queue fills; waiting on it would hold the locks the ingest writer
    /// needs, the writer would stop taking messages, the consumer would stop polling, and the
    /// queue would never drain. A full queue ends the batch instead: what was not handed over
    /// stays queued (or due) and goes out on a later round.
    fn hand_over(&self, topic: String, qos: QoS, bytes: Vec<u8>) -> bool {
        match self.client.try_publish(topic, qos, false, bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "MQTT request queue full; the rest of this batch waits for the next round");
                false
            }
        }
    }

    async fn dispatch_tasks(&self) -> Result<usize, DispatchError> {
        let mut tx = self.pool.begin().await?;
        let due = tasks::claim_dispatchable(&mut tx, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut sent = Vec::with_capacity(due.len());
        for t in &due {
            let msg = TaskDispatch {
                v: ProtocolVersion,
                task_id: t.id,
                action: t.action.clone(),
                params: t.params.as_object().cloned().unwrap_or_default(),
                deadline: t.deadline,
            };
            let bytes = match encode(&msg) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(task = %t.id, error = %e, "task cannot be encoded; left queued");
                    continue;
                }
            };
            let topic = Topic::new(t.appliance_id, DownChannel::Task).to_string();
            if !self.hand_over(topic, QoS::AtLeastOnce, bytes) {
                break;
            }
            sent.push(t.id);
        }
        tasks::mark_dispatched(&mut tx, &sent).await?;
        tx.commit().await?;
        self.metrics.tasks_dispatched.inc_by(sent.len() as u64);
        tracing::debug!(tasks = sent.len(), "dispatched");
        Ok(sent.len())
    }

    async fn push_configs(&self) -> Result<(), DispatchError> {
        let mut tx = self.pool.begin().await?;
        let due = desired::claim_pending(&mut tx, BATCH).await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut sent = Vec::with_capacity(due.len());
        // Versions that cannot be sent are recorded as a failed apply attempt, so the API's
        // `last_apply` says why the appliance stays behind, and they are not retried every
        // second (a new version, or a restart with the right `secrets.key`, sends again).
        let mut unsendable = Vec::new();
        let mut refuse = |c: &desired::Pending, problem: String| {
            tracing::error!(appliance = %c.appliance_id, error = %problem, "configuration not sent");
            unsendable.push((
                c.appliance_id,
                ConfigApplied {
                    v: ProtocolVersion,
                    version: c.desired_version.max(0) as u64,
                    outcome: Outcome::Failed,
                    message: Some(format!("the control plane could not send this version: {problem}")),
                    at: time::OffsetDateTime::now_utc(),
                },
            ));
        };
        for c in &due {
            let merged = layered(&c.defaults, &c.rollout_overlay, &c.overrides);
            let sealing = match c.sealing_key.as_deref().map(SealingKey::from_sec1_bytes).transpose() {
                Ok(k) => k,
                Err(e) => {
                    refuse(c, format!("the appliance's sealing key: {e}"));
                    sent.push((c.appliance_id, c.desired_version));
                    continue;
                }
            };
            let out = match secrets::for_appliance(
                &merged,
                c.tenant_id,
                self.secrets.as_ref(),
                c.appliance_id,
                sealing.as_ref(),
            ) {
                Ok(out) => out,
                Err(e) => {
                    refuse(c, e.to_string());
                    sent.push((c.appliance_id, c.desired_version));
                    continue;
                }
            };
            // Decrypting secrets for an appliance is reading them: audited.
            if out.secrets > 0 {
                Recorder::new(&Actor::system(), None)
                    .record(
                        &mut tx,
                        Some(c.tenant_id),
                        "config.secret_read",
                        ("appliance", c.appliance_id.to_string()),
                        None,
                        Some(serde_json::json!({
                            "version": c.desired_version,
                            "secrets": out.secrets,
                            "sealed": !out.in_clear,
                        })),
                    )
                    .await?;
            }
            // Never queue a clear secret at the broker: QoS 0 is dropped for an offline client.
            let qos = if out.in_clear { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let document = match out.document {
                serde_json::Value::Object(m) => m,
                _ => Default::default(),
            };
            let msg = ConfigDocument { v: ProtocolVersion, version: c.desired_version.max(0) as u64, document };
            let bytes = match encode(&msg) {
                Ok(b) => b,
                Err(e) => {
                    refuse(c, e.to_string());
                    sent.push((c.appliance_id, c.desired_version));
                    continue;
                }
            };
            let topic = Topic::new(c.appliance_id, DownChannel::Config).to_string();
            if !self.hand_over(topic, qos, bytes) {
                break;
            }
            sent.push((c.appliance_id, c.desired_version));
            self.metrics.configs_pushed.inc();
        }
        desired::mark_pushed(&mut tx, &sent).await?;
        desired::applied(&mut tx, &unsendable).await?;
        tx.commit().await?;
        Ok(())
    }
}
