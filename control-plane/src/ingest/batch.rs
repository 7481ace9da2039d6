//! The ingest writer: takes what [`Pending`] collected — after `batch_wait_ms`, at once when
//! it holds `batch_max` messages, or everything that arrived while the previous batch was
//! being written — and writes it in one transaction: the latest heartbeat and presence per
//! appliance (one statement), task events and results, configuration requests and reports.
//! QoS 1 messages are acknowledged to the broker only after that transaction commits.
//!
//! Overload: the consumer never waits to hand over a heartbeat or a status message. They
//! go into the pending batch's one entry per appliance, where a newer heartbeat replaces an
//! older one not yet written (counted in `hearth_heartbeats_superseded_total`). So past the
//! database's wall the batch grows to at most one row per appliance and each write stores
//! the newest heartbeat of every appliance heard from meanwhile: nothing queues seconds of
//! stale data, and `last_seen` stays fresh. Task events, results and configuration
//! requests and reports are never shed: past `ingest.queue` of them pending, the consumer
//! waits for the writer (the broker keeps the unacknowledged QoS 1 messages meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_protocol::{
    encode, ApplianceId, BootId, ConfigApplied, ConfigRequest, DownChannel, EventRef, Heartbeat, PresenceState,
    Receipt, Status, TaskEvent, TaskResult, Topic,
};
use rumqttc::{AsyncClient, Publish, QoS};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

use crate::config::IngestConfig;
use crate::db::presence::{self, ApplianceUpdate, Facts, HeartbeatRow, PresenceChange};
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
    /// The acknowledgement of each appliance's pending heartbeat, if sent at QoS 1.
    heartbeat_acks: HashMap<ApplianceId, Publish>,
    messages: usize,
    heartbeats: u64,
    /// Heartbeats replaced by a newer one of the same appliance before being written.
    superseded: u64,
}

impl Coalescer {
    /// Adds a message. Returns the acknowledgement of what it made redundant, which may be
    /// sent at once: that of a QoS 1 heartbeat replaced by this newer one.
    pub fn push(&mut self, inbound: Inbound) -> Option<Publish> {
        self.messages += 1;
        match inbound.msg {
            Ingested::Heartbeat(id, hb) => {
                self.heartbeats += 1;
                let u = self.entry(id);
                u.seen = true;
                let replaces = u.heartbeat.is_some();
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
                    metrics: Some(Facts::from(&hb)),
                });
                if replaces {
                    self.superseded += 1;
                }
                // The acknowledgement of the heartbeat this one replaces (if sent at QoS 1)
                // may go at once: should this batch be lost, the broker redelivers the newer
                // one, whose acknowledgement waits for the commit.
                let older = match inbound.ack {
                    Some(ack) => self.heartbeat_acks.insert(id, ack),
                    None => self.heartbeat_acks.remove(&id),
                };
                return older;
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
        self.acks.extend(inbound.ack);
        None
    }

    fn entry(&mut self, id: ApplianceId) -> &mut ApplianceUpdate {
        self.updates.entry(id).or_insert_with(|| ApplianceUpdate { id, heartbeat: None, presence: None, seen: false })
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Messages that are never shed nor coalesced: task events and results, configuration
    /// requests and reports.
    pub fn kept(&self) -> usize {
        self.events.len() + self.results.len() + self.config_requests.len() + self.config_applied.len()
    }

    /// Heartbeats taken in (superseded ones included) and of those, superseded.
    pub fn heartbeats(&self) -> (u64, u64) {
        (self.heartbeats, self.superseded)
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
        !self.acks.is_empty() || !self.heartbeat_acks.is_empty()
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

/// The batch being collected, shared by the consumer (which adds to it) and the writer
/// (which takes all of it at once).
#[derive(Debug)]
pub struct Pending {
    state: Mutex<PendingState>,
    /// Wakes the writer: a batch was started or filled, or the consumer is gone. Not every
    /// message: at 10,000 heartbeats/s a wake each was a cross-thread wake-up each, to find
    /// the batch not due yet.
    added: Notify,
    /// Wakes the consumer: the writer took the batch (room for kept messages).
    taken: Notify,
    /// Kept messages (see [`Coalescer::kept`]) pending before the consumer waits.
    keep_max: usize,
    /// Messages that make a batch due before its wait is over (`ingest.batch_max`).
    batch_max: usize,
}

#[derive(Debug, Default)]
struct PendingState {
    batch: Coalescer,
    /// When the batch's first message arrived.
    since: Option<tokio::time::Instant>,
    closed: bool,
}

impl Pending {
    pub fn new(keep_max: usize, batch_max: usize) -> Arc<Pending> {
        Arc::new(Pending {
            state: Mutex::new(PendingState::default()),
            added: Notify::new(),
            taken: Notify::new(),
            keep_max: keep_max.max(1),
            batch_max: batch_max.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // A panic while holding the lock leaves a consistent batch (push and take do not
        // panic halfway); go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message. A heartbeat or a status message never waits; a kept message waits
    /// while `keep_max` of them are pending. Returns the acknowledgement of a QoS 1
    /// heartbeat this message superseded, to send at once.
    pub async fn push(&self, inbound: Inbound) -> Option<Publish> {
        let kept = !matches!(inbound.msg, Ingested::Heartbeat(..) | Ingested::Status(..));
        if kept {
            loop {
                let taken = self.taken.notified();
                {
                    let s = self.lock();
                    if s.batch.kept() < self.keep_max || s.closed {
                        break;
                    }
                }
                taken.await;
            }
        }
        let (redundant, wake) = {
            let mut s = self.lock();
            let started = s.since.is_none();
            s.since.get_or_insert_with(tokio::time::Instant::now);
            let redundant = s.batch.push(inbound);
            // The writer waits for the first message, then for the batch's wait to end or
            // for it to be full (`next`): only those two wake it.
            (redundant, started || s.batch.messages() == self.batch_max)
        };
        if wake {
            self.added.notify_one();
        }
        redundant
    }

    /// No more messages: the writer writes what is pending and returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.added.notify_one();
    }

    /// Waits until a batch is due — `wait` after its first message, or `batch_max`
    /// messages, or the consumer gone — and takes it; `None` once closed and empty.
    async fn next(&self, wait: Duration) -> Option<Coalescer> {
        let deadline = loop {
            {
                let s = self.lock();
                match s.since {
                    Some(since) => break since + wait,
                    None if s.closed => return None,
                    None => {}
                }
            }
            self.added.notified().await;
        };
        loop {
            {
                let s = self.lock();
                if s.batch.messages() >= self.batch_max || s.closed {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.added.notified() => {}
            }
        }
        let batch = {
            let mut s = self.lock();
            s.since = None;
            std::mem::take(&mut s.batch)
        };
        self.taken.notify_one();
        Some(batch)
    }
}

/// Runs until the consumer closes `pending` and what it left is written. Each batch is
/// everything pending when it is due: under load, what arrived while the previous one was
/// being written (at most one heartbeat row per appliance), so the batch grows with the
/// backlog instead of a queue.
pub async fn run_writer(pending: Arc<Pending>, ctx: WriterContext) {
    let wait = Duration::from_millis(ctx.cfg.batch_wait_ms);
    let mut schedule = MetricsSchedule::new(Duration::from_secs(ctx.cfg.metrics_every_s));
    while let Some(batch) = pending.next(wait).await {
        flush(&ctx, batch, &mut schedule).await;
    }
    tracing::debug!("ingest writer drained");
}

/// Heartbeat-only batches are retried a few times, then dropped (the next heartbeat or the
/// sweeper corrects the state). Anything else is retried until the database is back: the
/// broker keeps unacknowledged QoS 1 messages meanwhile.
const RETRIES: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Which heartbeats' metrics are written: an appliance's first one this writer sees, the
/// first after a reboot, an agent restart (its sequence starts again) or an agent update,
/// and then one at most every `every`; the others
/// go without (the statement keeps the stored metrics and their `metrics_at`). Each replica
/// keeps its own schedule, so with several the metrics are at most fresher.
#[derive(Debug)]
pub struct MetricsSchedule {
    every: Duration,
    /// When each appliance's metrics were last written, and from which heartbeat.
    written: HashMap<ApplianceId, Written>,
    pruned: Instant,
}

impl MetricsSchedule {
    pub fn new(every: Duration) -> MetricsSchedule {
        MetricsSchedule { every, written: HashMap::new(), pruned: Instant::now() }
    }

    /// Takes out the metrics not due at `now`; returns what to [`Self::record`] once the
    /// batch is stored.
    pub fn plan(&self, updates: &mut [ApplianceUpdate], now: Instant) -> Vec<(ApplianceId, Written)> {
        let mut due = Vec::new();
        for u in updates {
            let Some(hb) = u.heartbeat.as_mut() else { continue };
            let fresh = self.written.get(&u.id).is_some_and(|w| {
                now.saturating_duration_since(w.at) < self.every
                    && w.boot == hb.boot_id
                    && w.seq < hb.seq
                    && w.version == hb.agent_version
            });
            if fresh {
                hb.metrics = None;
            } else if hb.metrics.is_some() {
                due.push((u.id, Written { at: now, boot: hb.boot_id, seq: hb.seq, version: hb.agent_version.clone() }));
            }
        }
        due
    }

    pub fn record(&mut self, due: Vec<(ApplianceId, Written)>, now: Instant) {
        self.written.extend(due);
        // Forget appliances not written for a while (deleted, or heard by another replica).
        if now.saturating_duration_since(self.pruned) > self.every.max(Duration::from_secs(60)) {
            let keep = self.every * 2;
            self.written.retain(|_, w| now.saturating_duration_since(w.at) < keep);
            self.pruned = now;
        }
    }
}

/// The heartbeat whose metrics were last written for an appliance.
#[derive(Debug, Clone)]
pub struct Written {
    at: Instant,
    boot: BootId,
    seq: u64,
    version: String,
}

async fn flush(ctx: &WriterContext, batch: Coalescer, schedule: &mut MetricsSchedule) {
    let mut updates = batch.appliance_updates();
    let due = schedule.plan(&mut updates, Instant::now());
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        match write(&ctx.pool, &batch, &updates).await {
            Ok(outcome) => {
                let m = &ctx.metrics;
                m.ingest_batch_seconds.observe(started.elapsed().as_secs_f64());
                m.ingest_batch_size.observe(updates.len() as f64);
                schedule.record(due, started);
                m.heartbeats_ingested.inc_by(batch.heartbeats);
                m.heartbeats_superseded.inc_by(batch.superseded);
                m.presence_transitions.inc_by(outcome.presence.transitions);
                m.task_events_stored.inc_by(outcome.events);
                let unknown = (updates.len() as u64).saturating_sub(outcome.presence.updated);
                if unknown > 0 {
                    m.ingest_unknown_appliances.inc_by(unknown);
                    tracing::debug!(unknown, "batch named appliances that do not exist");
                }
                send_receipts(&ctx.client, &batch);
                for p in batch.acks.into_iter().chain(batch.heartbeat_acks.into_values()) {
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

struct Stored {
    presence: presence::BatchOutcome,
    events: u64,
}

async fn write(pool: &PgPool, batch: &Coalescer, updates: &[ApplianceUpdate]) -> Result<Stored, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let presence = presence::write_batch(&mut *tx, updates).await?;
    let events = tasks::store_events(&mut tx, &batch.events).await?;
    tasks::store_results(&mut tx, &batch.results).await?;
    desired::applied(&mut tx, &batch.config_applied).await?;
    desired::requested(&mut tx, &batch.config_requests).await?;
    tx.commit().await?;
    Ok(Stored { presence, events })
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

    fn event(task: hearth_protocol::TaskId, seq: u64) -> TaskEvent {
        TaskEvent {
            v: ProtocolVersion,
            task_id: task,
            seq,
            kind: hearth_protocol::TaskEventKind::TaskOk,
            task: None,
            message: String::new(),
            at: time::OffsetDateTime::now_utc(),
        }
    }

    fn qos1(topic: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, Vec::new())
    }

    #[tokio::test]
    async fn pending_coalesces_heartbeats_without_waiting_and_holds_back_only_kept_messages() {
        let (a, b) = (ApplianceId::new(), ApplianceId::new());
        let pending = Pending::new(2, 1_000_000);
        // No writer: heartbeats never wait, however many; each appliance keeps its newest.
        for seq in 1..=1000 {
            for id in [a, b] {
                let ack = pending.push(Inbound { msg: Ingested::Heartbeat(id, hb(seq)), ack: None }).await;
                assert!(ack.is_none());
            }
        }
        // A QoS 1 heartbeat makes the one it replaces redundant: its acknowledgement comes back
        // to be sent at once; the newest one's waits for the commit.
        let first = qos1("first");
        assert!(pending.push(Inbound { msg: Ingested::Heartbeat(a, hb(1001)), ack: Some(first) }).await.is_none());
        let older = pending.push(Inbound { msg: Ingested::Heartbeat(a, hb(1002)), ack: Some(qos1("second")) }).await;
        assert_eq!(older.map(|p| p.topic), Some("first".to_string()));

        // Kept messages: two fit, the third waits for the writer to take the batch.
        let task = hearth_protocol::TaskId::new();
        for seq in 1..=2 {
            pending.push(Inbound { msg: Ingested::TaskEvent(a, event(task, seq)), ack: None }).await;
        }
        let third = pending.push(Inbound { msg: Ingested::TaskEvent(a, event(task, 3)), ack: None });
        tokio::pin!(third);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut third).await.is_err(), "waits at the cap");

        let batch = pending.next(Duration::from_millis(1)).await.expect("a batch");
        assert_eq!(batch.heartbeats(), (2002, 2000), "all taken in, all but the newest of each superseded");
        assert_eq!(batch.kept(), 2);
        let updates = batch.appliance_updates();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates.iter().find(|u| u.id == a).and_then(|u| u.heartbeat.as_ref()).map(|h| h.seq), Some(1002));
        assert_eq!(updates.iter().find(|u| u.id == b).and_then(|u| u.heartbeat.as_ref()).map(|h| h.seq), Some(1000));
        assert!(batch.must_not_drop(), "the newest QoS 1 heartbeat's acknowledgement waits for the commit");

        // Taking the batch made room: the third event goes in.
        tokio::time::timeout(Duration::from_secs(1), &mut third).await.expect("room after the take");
        pending.close();
        let rest = pending.next(Duration::from_secs(60)).await.expect("what was left");
        assert_eq!(rest.kept(), 1);
        assert!(pending.next(Duration::from_secs(60)).await.is_none(), "closed and empty");
    }

    #[tokio::test]
    async fn a_full_batch_is_due_at_once_and_a_partial_one_after_its_wait() {
        let pending = Pending::new(10, 3);
        let writer = {
            let pending = pending.clone();
            tokio::spawn(async move { pending.next(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        for seq in 1..=3 {
            pending.push(Inbound { msg: Ingested::Heartbeat(ApplianceId::new(), hb(seq)), ack: None }).await;
        }
        let full = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("woken when full").unwrap();
        assert_eq!(full.expect("a batch").messages(), 3);

        pending.push(Inbound { msg: Ingested::Heartbeat(ApplianceId::new(), hb(4)), ack: None }).await;
        let started = Instant::now();
        let partial = pending.next(Duration::from_millis(50)).await.expect("a batch");
        assert_eq!(partial.messages(), 1);
        assert!(started.elapsed() >= Duration::from_millis(40), "taken after its wait, not at once");
    }

    #[test]
    fn metrics_are_written_at_most_every_interval_and_at_once_after_a_restart() {
        let a = ApplianceId::new();
        let t0 = Instant::now();
        let mut schedule = MetricsSchedule::new(Duration::from_secs(60));
        let update = |h: Heartbeat| {
            let mut c = Coalescer::default();
            c.push(msg(Ingested::Heartbeat(a, h)));
            c.appliance_updates()
        };
        let first = hb(1);
        let boot = first.boot_id;
        let mut u = update(first);
        let due = schedule.plan(&mut u, t0);
        assert!(u[0].heartbeat.as_ref().unwrap().metrics.is_some(), "the first heartbeat's metrics are written");
        schedule.record(due, t0);

        let with_boot = |seq: u64| Heartbeat { boot_id: boot, ..hb(seq) };
        let mut u = update(with_boot(2));
        assert!(schedule.plan(&mut u, t0 + Duration::from_secs(30)).is_empty());
        let h = u[0].heartbeat.as_ref().unwrap();
        assert!(h.metrics.is_none(), "not due: only the heartbeat itself is written");
        assert_eq!(h.seq, 2);

        let mut u = update(with_boot(3));
        let due = schedule.plan(&mut u, t0 + Duration::from_secs(61));
        assert!(u[0].heartbeat.as_ref().unwrap().metrics.is_some(), "due again after the interval");
        schedule.record(due, t0 + Duration::from_secs(61));

        // A reboot, an agent restart and an agent update each write at once.
        for h in [hb(4), with_boot(1), Heartbeat { agent_version: "0.2.0".into(), ..with_boot(5) }] {
            let mut u = update(h);
            assert_eq!(schedule.plan(&mut u, t0 + Duration::from_secs(62)).len(), 1);
            assert!(u[0].heartbeat.as_ref().unwrap().metrics.is_some());
        }
        // Every heartbeat, with no interval.
        let mut every = MetricsSchedule::new(Duration::ZERO);
        let mut u = update(with_boot(6));
        let due = every.plan(&mut u, t0);
        every.record(due, t0);
        let mut u = update(with_boot(7));
        assert_eq!(every.plan(&mut u, t0).len(), 1);
    }
}
