//! The ingest writer: collects messages for up to `batch_wait_ms` or `batch_max` messages
//! and writes them in one transaction — the latest heartbeat and presence per appliance
//! (one statement), task events and results, configuration requests and reports. QoS 1
//! messages are acknowledged to the broker only after that transaction commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_protocol::{
    encode, ApplianceId, ConfigApplied, ConfigRequest, DownChannel, EventRef, Heartbeat, PresenceState, Receipt,
    Status, TaskEvent, TaskResult, Topic,
};
use rumqttc::{AsyncClient, Publish, QoS};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::IngestConfig;
use crate::db::presence::{self, ApplianceUpdate, HeartbeatRow, PresenceChange};
use crate::db::{desired, tasks};
use crate::metrics::Metrics;

/// A decoded message the writer persists.
#[derive(Debug, Clone)]
pub enum Ingested {
    Heartbeat(ApplianceId, Heartbeat),
    Status(ApplianceId, Status),
    TaskEvent(ApplianceId, TaskEvent),
    TaskResult(ApplianceId, TaskResult),
    ConfigRequest(ApplianceId, ConfigRequest),
    ConfigApplied(ApplianceId, ConfigApplied),
}

/// A message and, for QoS 1, the publish to acknowledge once it is stored.
#[derive(Debug)]
pub struct Inbound {
    pub msg: Ingested,
    pub ack: Option<Publish>,
}

/// What a batch of messages adds up to, in arrival order.
#[derive(Debug, Default)]
pub struct Coalescer {
    updates: HashMap<ApplianceId, ApplianceUpdate>,
    events: Vec<(ApplianceId, TaskEvent)>,
    results: Vec<(ApplianceId, TaskResult)>,
    config_requests: Vec<(ApplianceId, Option<u64>)>,
    config_applied: Vec<(ApplianceId, ConfigApplied)>,
    acks: Vec<Publish>,
    messages: usize,
    heartbeats: u64,
}

impl Coalescer {
    pub fn push(&mut self, inbound: Inbound) {
        self.messages += 1;
        self.acks.extend(inbound.ack);
        match inbound.msg {
            Ingested::Heartbeat(id, hb) => {
                self.heartbeats += 1;
                let u = self.entry(id);
                u.seen = true;
                // A heartbeat proves the appliance online; keep an "online" we already have
                // from a status message, since it names the connection.
                if !matches!(u.presence, Some(PresenceChange { online: true, .. })) {
                    u.presence = Some(PresenceChange { online: true, session: None, reason: "heartbeat" });
                }
                u.heartbeat = Some(HeartbeatRow {
                    agent_version: hb.agent_version.clone(),
                    boot_id: hb.boot_id,
                    seq: hb.seq,
                    sent_at: hb.sent_at,
                    metrics: serde_json::json!({
                        "uptime_s": hb.uptime_s,
                        "load": hb.load,
                        "memory": hb.memory,
                        "root_fs": hb.root_fs,
                        "boot_id": hb.boot_id,
                        "seq": hb.seq,
                        "utc_offset_s": hb.utc_offset_s,
                    }),
                });
            }
            Ingested::Status(id, st) => match st.state {
                PresenceState::Online => {
                    let u = self.entry(id);
                    u.seen = true;
                    u.presence =
                        Some(PresenceChange { online: true, session: Some(st.session), reason: "status_message" });
                }
                PresenceState::Offline => {
                    self.entry(id).presence =
                        Some(PresenceChange { online: false, session: Some(st.session), reason: "status_message" });
                }
                PresenceState::Unknown => {}
            },
            Ingested::TaskEvent(id, e) => self.events.push((id, e)),
            Ingested::TaskResult(id, r) => self.results.push((id, r)),
            Ingested::ConfigRequest(id, r) => self.config_requests.push((id, r.applied_version)),
            Ingested::ConfigApplied(id, r) => self.config_applied.push((id, r)),
        }
    }

    fn entry(&mut self, id: ApplianceId) -> &mut ApplianceUpdate {
        self.updates.entry(id).or_insert_with(|| ApplianceUpdate { id, heartbeat: None, presence: None, seen: false })
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The presence/heartbeat part of the batch, one entry per appliance, in id order (the
    /// order row locks are taken in).
    pub fn appliance_updates(&self) -> Vec<ApplianceUpdate> {
        let mut v: Vec<_> = self.updates.values().cloned().collect();
        v.sort_by_key(|u| u.id);
        v
    }

    /// Whether losing this batch would lose something only the appliance knew (anything
    /// sent at QoS 1).
    fn must_not_drop(&self) -> bool {
        !self.acks.is_empty()
    }
}

/// What the writer needs besides the messages.
#[derive(Debug, Clone)]
pub struct WriterContext {
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    pub cfg: IngestConfig,
    /// Acknowledgements for the MQTT loop to send once a batch is stored.
    pub acks: mpsc::UnboundedSender<Publish>,
    /// Wakes the dispatcher when an appliance came online or asked for its configuration.
    pub dispatcher: crate::domain::Wake,
    /// Sends receipts to appliances (never waits: see [`send_receipts`]).
    pub client: AsyncClient,
}

/// Runs until every sender is dropped and the channel is drained.
pub async fn run_writer(mut rx: mpsc::Receiver<Inbound>, ctx: WriterContext) {
    let wait = Duration::from_millis(ctx.cfg.batch_wait_ms);
    while let Some(first) = rx.recv().await {
        let mut batch = Coalescer::default();
        batch.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.messages() < ctx.cfg.batch_max {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => batch.push(m),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        flush(&ctx, batch).await;
    }
    tracing::debug!("ingest writer drained");
}

/// Heartbeat-only batches are retried a few times, then dropped (the next heartbeat or the
/// sweeper corrects the state). Anything else is retried until the database is back: the
/// broker keeps unacknowledged QoS 1 messages meanwhile.
const RETRIES: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

async fn flush(ctx: &WriterContext, batch: Coalescer) {
    let updates = batch.appliance_updates();
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        match write(&ctx.pool, &batch, &updates).await {
            Ok(outcome) => {
                let m = &ctx.metrics;
                m.ingest_batch_seconds.observe(started.elapsed().as_secs_f64());
                m.ingest_batch_size.observe(updates.len() as f64);
                m.heartbeats_ingested.inc_by(batch.heartbeats);
                m.presence_transitions.inc_by(outcome.presence.transitions);
                m.task_events_stored.inc_by(outcome.events);
                let unknown = (updates.len() as u64).saturating_sub(outcome.presence.updated);
                if unknown > 0 {
                    m.ingest_unknown_appliances.inc_by(unknown);
                    tracing::debug!(unknown, "batch named appliances that do not exist");
                }
                send_receipts(&ctx.client, &batch);
                for p in batch.acks {
                    // The MQTT loop is gone only at shutdown; the broker redelivers then.
                    let _ = ctx.acks.send(p);
                }
                if outcome.presence.transitions > 0 || !batch.config_requests.is_empty() {
                    ctx.dispatcher.wake();
                }
                return;
            }
            Err(e) => {
                ctx.metrics.ingest_batch_errors.inc();
                let delay = match RETRIES.get(attempt) {
                    Some(d) => *d,
                    None if batch.must_not_drop() => MAX_RETRY_DELAY,
                    None => {
                        ctx.metrics.ingest_messages_dropped.inc_by(batch.messages() as u64);
                        tracing::error!(error = %e, messages = batch.messages(), "heartbeat batch failed after retries; dropped");
                        return;
                    }
                };
                tracing::warn!(error = %e, attempt, retry_in = ?delay, "ingest batch failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Tells each appliance what of its task events, results and configuration reports this
/// batch stored (or found stored already, or ignored as not its own): the agent keeps them
/// spooled until then. A receipt that does not fit the client's queue is skipped; the agent
/// sends those messages again later and they are receipted then.
fn send_receipts(client: &AsyncClient, batch: &Coalescer) {
    let mut receipts: HashMap<ApplianceId, Receipt> = HashMap::new();
    for (a, e) in &batch.events {
        receipts.entry(*a).or_default().events.push(EventRef { task_id: e.task_id, seq: e.seq });
    }
    for (a, r) in &batch.results {
        receipts.entry(*a).or_default().results.push(r.task_id);
    }
    for (a, r) in &batch.config_applied {
        receipts.entry(*a).or_default().config_applied.push(r.version);
    }
    for (appliance, receipt) in receipts {
        let topic = Topic::new(appliance, DownChannel::Receipt).to_string();
        match encode(&receipt) {
            Ok(bytes) => {
                if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, bytes) {
                    tracing::debug!(%appliance, error = %e, "receipt skipped; the agent will resend");
                }
            }
            Err(e) => tracing::warn!(%appliance, error = %e, "receipt too large; the agent will resend"),
        }
    }
}

struct Written {
    presence: presence::BatchOutcome,
    events: u64,
}

async fn write(pool: &PgPool, batch: &Coalescer, updates: &[ApplianceUpdate]) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let presence = presence::write_batch(&mut *tx, updates).await?;
    let events = tasks::store_events(&mut tx, &batch.events).await?;
    tasks::store_results(&mut tx, &batch.results).await?;
    desired::applied(&mut tx, &batch.config_applied).await?;
    desired::requested(&mut tx, &batch.config_requests).await?;
    tx.commit().await?;
    Ok(Written { presence, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_protocol::{BootId, Filesystem, Memory, ProtocolVersion, SessionId};

    fn hb(seq: u64) -> Heartbeat {
        Heartbeat {
            v: ProtocolVersion,
            sent_at: time::OffsetDateTime::now_utc(),
            boot_id: BootId::new(),
            seq,
            agent_version: "0.1.0".into(),
            uptime_s: 1,
            load: [0.0; 3],
            memory: Memory { total_bytes: 2, available_bytes: 1 },
            root_fs: Filesystem { total_bytes: 2, available_bytes: 1 },
            utc_offset_s: None,
        }
    }

    fn status(state: PresenceState, session: SessionId) -> Status {
        Status { v: ProtocolVersion, state, session, at: time::OffsetDateTime::now_utc() }
    }

    fn msg(m: Ingested) -> Inbound {
        Inbound { msg: m, ack: None }
    }

    #[test]
    fn coalesces_per_appliance_last_word_wins() {
        let (a, b) = (ApplianceId::new(), ApplianceId::new());
        let s = SessionId::new();
        let mut c = Coalescer::default();
        c.push(msg(Ingested::Status(a, status(PresenceState::Online, s))));
        c.push(msg(Ingested::Heartbeat(a, hb(1))));
        c.push(msg(Ingested::Heartbeat(a, hb(2))));
        c.push(msg(Ingested::Heartbeat(b, hb(7))));
        c.push(msg(Ingested::Status(b, status(PresenceState::Offline, s))));
        assert_eq!(c.messages(), 5);
        assert_eq!(c.heartbeats, 3);
        assert!(!c.must_not_drop());
        let updates = c.appliance_updates();
        assert_eq!(updates.len(), 2);
        let ua = updates.iter().find(|u| u.id == a).unwrap();
        assert_eq!(ua.heartbeat.as_ref().unwrap().seq, 2);
        // The heartbeat did not erase the session named by the status message.
        assert_eq!(ua.presence, Some(PresenceChange { online: true, session: Some(s), reason: "status_message" }));
        let ub = updates.iter().find(|u| u.id == b).unwrap();
        assert_eq!(ub.presence.map(|p| p.online), Some(false));
        assert!(ub.seen);
        assert!(updates.windows(2).all(|w| w[0].id < w[1].id), "sorted by id for lock order");
    }
}
