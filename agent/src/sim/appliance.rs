//! One simulated appliance: the agent's connection, presence, heartbeat and reconnect code
//! around an answering machine for tasks and configuration documents.
//!
//! Task events, task results and configuration reports are kept (in memory, not in a
//! spool) until the control plane's receipt names them ([`ReceiptKey`], the agent's), and
//! sent again after every reconnect and when no receipt came within the agent's
//! [`RECEIPT_TIMEOUT`] — as the agent does, since a broker PUBACK is not proof of delivery.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::bundle::BundleAppliance;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{
    decode, encode, BootId, Channel, ConfigApplied, ConfigDocument, DownChannel, Filesystem, Memory, Outcome,
    PresenceState, ProtocolVersion, Receipt, SessionId, TaskDispatch, TaskEvent, TaskEventKind, TaskResult, Topic,
    UpChannel,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::renewal::{self, SimRenewal};
use super::{FleetOptions, Stats};
use crate::backoff::{Backoff, ConnectTimeout, RECOVERY_WINDOW};
use crate::connection::{self, mqtt_options, ConnectionParams, REQUEST_CHANNEL_CAPACITY};
use crate::facts::Facts;
use crate::run::{RECEIPT_TIMEOUT, SPOOL_RETRY};
use crate::spool::ReceiptKey;

/// How long a leaving appliance waits for its disconnect to go out.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One simulated appliance, not yet connected.
#[derive(Debug)]
pub struct Simulated {
    identity: BundleAppliance,
    ca_pem: Arc<str>,
    opts: Arc<FleetOptions>,
    stats: Arc<Stats>,
    /// When to ask for a new certificate (`None`: only when told by a notice).
    renew_at: Option<Instant>,
}

/// A message kept until the control plane's receipt names it.
struct Unreceipted {
    key: ReceiptKey,
    topic: String,
    payload: Vec<u8>,
    /// When it was last handed to the client (`None`: not on this connection yet).
    sent: Option<Instant>,
}

/// The connected state of a running simulated appliance.
struct Live {
    client: AsyncClient,
    heartbeat_topic: String,
    facts: Facts,
    booted: Instant,
    seq: u64,
    connected: bool,
    applied_version: Option<u64>,
    /// When the next heartbeat is due (while connected).
    next_heartbeat: Instant,
    /// No heartbeat sent yet on this connection.
    fresh: bool,
    /// Sent, not yet receipted.
    unreceipted: Vec<Unreceipted>,
    rng: StdRng,
    renewal: SimRenewal,
    /// The identity in use (replaced when a renewal's new pair is accepted).
    params: ConnectionParams,
    serial: String,
}

impl Simulated {
    pub fn new(identity: BundleAppliance, ca_pem: Arc<str>, opts: Arc<FleetOptions>, stats: Arc<Stats>) -> Self {
        Self { identity, ca_pem, opts, stats, renew_at: None }
    }

    /// Asks for a new certificate at `at` (all due at once: a renewal storm).
    pub fn renewing_at(mut self, at: Option<Instant>) -> Self {
        self.renew_at = at;
        self
    }

    /// Runs until `stop`; connection problems are retried with the agent's backoff.
    pub async fn run(self, stop: CancellationToken) {
        Stats::inc(&self.stats.started);
        let id = self.identity.id;
        let params = ConnectionParams {
            appliance_id: id,
            host: self.opts.host.clone(),
            port: self.opts.port,
            keep_alive: self.opts.keep_alive,
            ca_pem: self.ca_pem.to_string(),
            cert_pem: self.identity.cert_pem.clone(),
            key_pem: self.identity.key_pem.clone(),
        };
        let mut session = SessionId::new();
        let options = match mqtt_options(&params, session) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(appliance = %id, error = %e, "cannot build the connection settings");
                return;
            }
        };
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let mut live = Live {
            client,
            heartbeat_topic: Topic::new(id, UpChannel::Heartbeat).to_string(),
            facts: synthetic_facts(),
            booted: Instant::now(),
            seq: 0,
            connected: false,
            applied_version: None,
            next_heartbeat: Instant::now(),
            fresh: true,
            unreceipted: Vec::new(),
            rng: StdRng::from_entropy(),
            renewal: SimRenewal::Idle(self.renew_at),
            serial: renewal::serial_of(&params.cert_pem),
            params,
        };
        let mut backoff = Backoff::new(self.opts.backoff_initial, self.opts.backoff_max)
            .with_recovery(self.opts.backoff_recovery_max, RECOVERY_WINDOW);
        let mut timeout = ConnectTimeout::new(self.opts.connect_timeout, self.opts.connect_timeout_max);
        let mut first_attempt = true;
        let mut retry = tokio::time::interval(SPOOL_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if eventloop.network.is_none() {
                if !first_attempt {
                    match connection::renew_session(&mut eventloop.mqtt_options, id) {
                        Ok(s) => session = s,
                        Err(e) => {
                            tracing::error!(appliance = %id, error = %e, "cannot encode the last will");
                            return;
                        }
                    }
                }
                first_attempt = false;
                eventloop.network_options.set_connection_timeout(timeout.secs());
                Stats::inc(&self.stats.connect_attempts);
            }
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    let due = live.next_heartbeat;
                    let waiting = live.connected && !live.unreceipted.is_empty();
                    let renew = live.renewal.next_ask().filter(|_| live.connected);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break None,
                        _ = tokio::time::sleep_until(due), if live.connected => self.heartbeat(&mut live),
                        _ = tokio::time::sleep_until(renew.unwrap_or(due)), if renew.is_some() => {
                            live.renewal.ask(&live.client, id, &live.serial, &self.stats);
                        }
                        _ = retry.tick(), if waiting => self.resend(&mut live),
                        event = &mut poll => break Some(event),
                    }
                }
            };
            let Some(event) = event else {
                self.leave(&mut live, &mut eventloop, session).await;
                return;
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    live.connected = true;
                    backoff.connected(Instant::now());
                    timeout.connected();
                    if let Some(renewed) = live.renewal.on_connected(&self.stats) {
                        // The broker accepted the new pair: it is this appliance's now.
                        live.serial = renewal::serial_of(&renewed.cert_pem);
                        live.params = renewed;
                    }
                    Stats::inc(&self.stats.connected);
                    self.stats.online.fetch_add(1, Relaxed);
                    if let Err(e) = connection::announce(&live.client, id, session, live.applied_version) {
                        tracing::warn!(appliance = %id, error = %e, "cannot announce");
                    }
                    // Like the agent: a heartbeat right after connecting, and everything
                    // not yet receipted sent again.
                    live.next_heartbeat = Instant::now();
                    live.fresh = true;
                    for u in &mut live.unreceipted {
                        u.sent = None;
                    }
                    self.resend(&mut live);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => self.on_message(&mut live, &p.topic, &p.payload),
                Ok(Event::Outgoing(Outgoing::Publish(0))) => Stats::inc(&self.stats.heartbeats_written),
                Ok(Event::Outgoing(Outgoing::Disconnect)) if live.renewal.is_switching() => {
                    // Closed cleanly (no last will): connect again at once with the new pair.
                    eventloop.clean();
                    if live.connected {
                        self.stats.online.fetch_sub(1, Relaxed);
                    }
                    live.connected = false;
                    connection::forget_unsent(&mut eventloop);
                    match live.renewal.next_transport() {
                        Some(t) => {
                            eventloop.mqtt_options.set_transport(t);
                        }
                        None => Stats::inc(&self.stats.renewals_failed),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if live.connected {
                        self.stats.online.fetch_sub(1, Relaxed);
                    } else if matches!(e, rumqttc::ConnectionError::NetworkTimeout) {
                        timeout.timed_out();
                        Stats::inc(&self.stats.connect_timeouts);
                    }
                    live.connected = false;
                    Stats::inc(&self.stats.connection_errors);
                    if live.renewal.on_connection_error(&self.stats) {
                        tracing::warn!(appliance = %id, error = %crate::error_chain(&e), "the broker refused the renewed certificate");
                        match connection::transport(&live.params) {
                            Ok(t) => {
                                eventloop.mqtt_options.set_transport(t);
                            }
                            Err(e) => {
                                tracing::error!(appliance = %id, error = %e, "cannot go back to the current certificate");
                                return;
                            }
                        }
                    }
                    connection::forget_unsent(&mut eventloop);
                    let delay = backoff.next_delay(Instant::now(), &mut live.rng);
                    tracing::debug!(appliance = %id, error = %crate::error_chain(&e), ?delay, "broker connection failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn heartbeat(&self, live: &mut Live) {
        live.facts.uptime_s = live.booted.elapsed().as_secs();
        let next = live.seq + 1;
        match connection::try_heartbeat(&live.client, &live.heartbeat_topic, &live.facts, next) {
            Ok(()) => {
                live.seq = next;
                Stats::inc(&self.stats.heartbeats_queued);
            }
            Err(_) => Stats::inc(&self.stats.heartbeats_skipped),
        }
        let interval = self.opts.heartbeat_interval.as_secs_f64();
        // The first interval after a connect is drawn from [0, interval) so that a fleet
        // that connected in a short ramp spreads its heartbeats evenly; then ± jitter.
        let secs = if std::mem::take(&mut live.fresh) {
            live.rng.gen_range(0.0..interval)
        } else {
            let j = self.opts.jitter;
            interval * if j > 0.0 { live.rng.gen_range(1.0 - j..1.0 + j) } else { 1.0 }
        };
        live.next_heartbeat = Instant::now() + Duration::from_secs_f64(secs);
    }

    fn on_message(&self, live: &mut Live, topic: &str, payload: &[u8]) {
        let id = self.identity.id;
        let channel = match topic.parse::<Topic>() {
            Ok(Topic { appliance, channel: Channel::Down(c) }) if appliance == id => c,
            _ => {
                tracing::warn!(appliance = %id, "ignoring a message on a topic that is not this appliance's");
                return;
            }
        };
        match channel {
            DownChannel::Task => match decode::<TaskDispatch>(payload) {
                Ok(d) => self.answer_task(live, d),
                Err(e) => {
                    tracing::warn!(appliance = %id, reason = e.reason(), "dropping a task that cannot be decoded")
                }
            },
            DownChannel::Config => match decode::<ConfigDocument>(payload) {
                Ok(doc) => {
                    let report = ConfigApplied {
                        v: ProtocolVersion,
                        version: doc.version,
                        outcome: Outcome::Succeeded,
                        message: None,
                        at: OffsetDateTime::now_utc(),
                    };
                    if self.publish(live, UpChannel::ConfigApplied, &report) {
                        live.applied_version = Some(doc.version);
                        Stats::inc(&self.stats.configs_applied);
                    }
                }
                Err(e) => {
                    tracing::warn!(appliance = %id, reason = e.reason(), "dropping a configuration that cannot be decoded")
                }
            },
            DownChannel::Receipt => match decode::<Receipt>(payload) {
                Ok(r) => {
                    Stats::inc(&self.stats.receipts);
                    let keys = ReceiptKey::all_in(&r);
                    live.unreceipted.retain(|u| !keys.contains(&u.key));
                }
                Err(e) => {
                    tracing::warn!(appliance = %id, reason = e.reason(), "dropping a receipt that cannot be decoded")
                }
            },
            DownChannel::Cert => {
                if live.renewal.on_answer(payload, &live.params, &self.stats) {
                    if let Err(e) = live.client.try_disconnect() {
                        tracing::warn!(appliance = %id, error = %e, "cannot disconnect to switch certificates");
                        live.renewal = SimRenewal::Done;
                        Stats::inc(&self.stats.renewals_failed);
                    }
                }
            }
            DownChannel::CertRenew => live.renewal.on_notice(id, payload),
        }
    }

    /// Whether this appliance is one of the `task_failure_share` that fail their tasks
    /// (by a hash of its id: the same ones on every run).
    fn fails_tasks(&self) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.identity.id.as_uuid().hash(&mut h);
        (h.finish() % 10_000) < (self.opts.task_failure_share * 10_000.0).round() as u64
    }

    /// Reports a task as the agent would, without running anything: `received` then
    /// `succeeded` if the catalog accepts it (`failed` on an appliance that
    /// [`Self::fails_tasks`]), `rejected` with its reason otherwise.
    fn answer_task(&self, live: &mut Live, d: TaskDispatch) {
        let catalog = Catalog::embedded();
        let policy = Policy::with_local_domains(catalog.local_domains.clone());
        let now = OffsetDateTime::now_utc();
        let (outcome, message, events) = match catalog.validate(&d.action, &d.params, &policy) {
            Ok(_) => {
                let event = TaskEvent {
                    v: ProtocolVersion,
                    task_id: d.task_id,
                    seq: 1,
                    kind: TaskEventKind::Received,
                    task: None,
                    message: "accepted by a simulated appliance".into(),
                    at: now,
                };
                self.publish(live, UpChannel::TaskEvent(d.task_id), &event);
                if self.fails_tasks() {
                    (Outcome::Failed, "simulated failure".to_string(), 1)
                } else {
                    (Outcome::Succeeded, "simulated: nothing was run".to_string(), 1)
                }
            }
            Err(rejection) => (Outcome::Rejected, rejection.message, 0),
        };
        let result = TaskResult {
            v: ProtocolVersion,
            task_id: d.task_id,
            outcome,
            message: Some(message),
            stats: None,
            events,
            at: now,
        };
        if self.publish(live, UpChannel::TaskResult(d.task_id), &result) {
            let counter = match outcome {
                Outcome::Succeeded => &self.stats.tasks_succeeded,
                Outcome::Failed => &self.stats.tasks_failed,
                _ => &self.stats.tasks_rejected,
            };
            Stats::inc(counter);
        }
    }

    /// Sends a QoS 1 message on one of this appliance's up topics and keeps it until its
    /// receipt (it goes out on the next connection if the client cannot take it now).
    fn publish<T: hearth_protocol::Payload>(&self, live: &mut Live, channel: UpChannel, msg: &T) -> bool {
        let topic = Topic::new(self.identity.id, channel).to_string();
        let payload = match encode(msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(appliance = %self.identity.id, error = %e, "cannot encode a message");
                return false;
            }
        };
        let Some(key) = ReceiptKey::of(&topic, &payload) else {
            return false;
        };
        live.unreceipted.push(Unreceipted { key, topic, payload, sent: None });
        self.resend(live);
        true
    }

    /// Hands the client what is not receipted and was never sent on this connection or
    /// waited longer than [`RECEIPT_TIMEOUT`] for its receipt.
    fn resend(&self, live: &mut Live) {
        if !live.connected {
            return;
        }
        let now = Instant::now();
        for u in &mut live.unreceipted {
            if u.sent.is_some_and(|t| now.duration_since(t) < RECEIPT_TIMEOUT) {
                continue;
            }
            if live.client.try_publish(u.topic.as_str(), QoS::AtLeastOnce, false, u.payload.clone()).is_err() {
                break;
            }
            u.sent = Some(now);
        }
    }
    /// Leaves like the agent: `offline` for this session, then a clean disconnect.
    async fn leave(&self, live: &mut Live, eventloop: &mut EventLoop, session: SessionId) {
        if !live.connected {
            return;
        }
        self.stats.online.fetch_sub(1, Relaxed);
        live.connected = false;
        let status_topic = Topic::new(self.identity.id, UpChannel::Status).to_string();
        let queued = encode(&connection::status(PresenceState::Offline, session))
            .map_err(|e| e.to_string())
            .and_then(|b| live.client.try_publish(status_topic, QoS::AtLeastOnce, true, b).map_err(|e| e.to_string()))
            .and_then(|()| live.client.try_disconnect().map_err(|e| e.to_string()));
        if queued.is_err() {
            return;
        }
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, async {
            while let Ok(ev) = eventloop.poll().await {
                match ev {
                    Event::Outgoing(Outgoing::Disconnect) => break,
                    // Written to the connection before the stop, but not yet reported when
                    // the run loop left: the control plane counts it, so count it here too.
                    Event::Outgoing(Outgoing::Publish(0)) => Stats::inc(&self.stats.heartbeats_written),
                    _ => {}
                }
            }
        })
        .await;
    }
}

/// Plausible facts for a small appliance, with a boot id of its own.
fn synthetic_facts() -> Facts {
    Facts {
        boot_id: BootId::new(),
        uptime_s: 0,
        load: [0.05, 0.03, 0.01],
        memory: Memory { total_bytes: 2 << 30, available_bytes: 1 << 30 },
        root_fs: Filesystem { total_bytes: 32 << 30, available_bytes: 20 << 30 },
        utc_offset_s: None,
    }
}
