//! The MQTT consumer: the one task that owns the control plane's rumqttc event loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_protocol::{ApplianceId, CertificateRequest, Channel, Topic, TopicFilter, UpChannel, UpMessage};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Inbound, Ingested, Pending};
use crate::limits::{Decision, LimitKind, RateLimits};
use crate::metrics::Metrics;

/// What the consumer needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub share_group: String,
}

/// The consumer's connections to the rest of the control plane.
#[derive(Debug)]
pub struct ConsumerLinks {
    /// Decoded messages for the writer (closed when the consumer stops).
    pub pending: Arc<Pending>,
    /// Publishes the writer has stored and that may now be acknowledged.
    pub acks: mpsc::UnboundedReceiver<rumqttc::Publish>,
    pub metrics: Arc<Metrics>,
    /// `/readyz` reads it.
    pub connected: Arc<AtomicBool>,
    /// Each appliance's MQTT limit (see [`Throttle`]).
    pub limits: Arc<RateLimits>,
    /// Certificate renewal requests, for the renewal worker (it acknowledges them).
    pub renewals: mpsc::UnboundedSender<RenewalRequest>,
}

/// An appliance's certificate renewal request, with the publish to acknowledge once it is
/// answered.
#[derive(Debug)]
pub struct RenewalRequest {
    pub appliance: ApplianceId,
    pub request: CertificateRequest,
    pub ack: Option<rumqttc::Publish>,
}

/// Where a decoded message goes: the batching writer, or the renewal worker (a renewal is
/// rare, signs a certificate and answers at once: it does not belong in a batch).
#[derive(Debug)]
enum Routed {
    Writer(Ingested),
    Renewal(ApplianceId, CertificateRequest),
}

/// Reads from the broker until `shutdown`, sending decoded messages to the writer and
/// acknowledging what it stored.
pub async fn run_consumer(
    client: AsyncClient,
    mut eventloop: EventLoop,
    cfg: ConsumerConfig,
    mut links: ConsumerLinks,
    shutdown: CancellationToken,
) {
    let filter = TopicFilter::AllUp.shared(&cfg.share_group);
    let mut delay = Duration::from_millis(500);
    let metrics = links.metrics.clone();
    let connected = links.connected.clone();
    let set_connected = |up: bool| {
        connected.store(up, Ordering::Relaxed);
        metrics.mqtt_connected.set(i64::from(up));
    };
    let mut throttle = Throttle::new(links.limits.clone(), &links.metrics);
    let mut pending_acks: std::collections::VecDeque<rumqttc::Publish> = Default::default();
    // Set on every connect until the subscription is in the client's request queue. After a
    // broker outage that queue can be full (receipts and dispatches handed over meanwhile);
    // a subscription dropped then would leave us connected and deaf, so it is retried every
    // turn until it fits (Mosquitto does not keep shared subscriptions across its restart).
    let mut subscribe_due = false;
    loop {
        if subscribe_due {
            match client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                Ok(()) => subscribe_due = false,
                Err(e) => tracing::debug!(error = %e, "subscription waits for room in the request queue"),
            }
        }
        // Hand stored messages' acknowledgements to the client; what does not fit in its
        // request queue waits for the next turn.
        while let Ok(p) = links.acks.try_recv() {
            pending_acks.push_back(p);
        }
        while let Some(p) = pending_acks.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            pending_acks.pop_front();
        }
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(p) = links.acks.recv() => {
                pending_acks.push_back(p);
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(session_present = ack.session_present, "connected to the MQTT broker");
                set_connected(true);
                delay = Duration::from_millis(500);
                subscribe_due = true;
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                    tracing::error!(%filter, "the broker refused our subscription; check its ACL for the control plane identity");
                } else {
                    tracing::info!(%filter, "subscribed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let ack = (p.qos != QoS::AtMostOnce).then(|| p.clone());
                // The limit comes before the payload is decoded and before the channel, so
                // an appliance's excess costs a topic parse and two hash lookups, and never
                // reaches the writer or PostgreSQL.
                let msg = decode_topic(&p.topic, &links.metrics)
                    .filter(|&(appliance, channel)| throttle.admit(appliance, channel))
                    .and_then(|(appliance, channel)| {
                        decode_payload(&p.topic, appliance, channel, &p.payload, &links.metrics)
                    });
                match msg {
                    // Heartbeats and status messages coalesce per appliance and never wait;
                    // past `ingest.queue` pending task events, results and configuration
                    // messages, this waits for the writer rather than drop them.
                    Some(Routed::Writer(msg)) => {
                        if let Some(p) = links.pending.push(Inbound { msg, ack }).await {
                            pending_acks.push_back(p);
                        }
                    }
                    // Never waits: the renewal worker waits for room in the client this
                    // loop drains (see the queue in `serve`).
                    Some(Routed::Renewal(appliance, request)) => {
                        if links.renewals.send(RenewalRequest { appliance, request, ack }).is_err() {
                            break;
                        }
                    }
                    // Refused and throttled messages are acknowledged at once: redelivery
                    // would not help.
                    None => {
                        if let Some(p) = ack {
                            pending_acks.push_back(p);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                set_connected(false);
                // Unacknowledged messages will be redelivered on the resumed session.
                pending_acks.clear();
                tracing::warn!(error = %e, retry_in = ?delay, "MQTT connection lost");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Leave cleanly so the broker keeps our session for the next start.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    set_connected(false);
    links.pending.close();
    tracing::info!("MQTT consumer stopped");
}

/// Which bucket a message on this channel takes a token from, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowance {
    /// The appliance's MQTT allowance (`mqtt_per_minute`/`mqtt_burst`), dropped over it:
    /// what the appliance sends of its own accord and sends again anyway — heartbeats (the
    /// next one carries the same facts), configuration requests (asked again on the next
    /// connection, and the dispatcher sends a changed configuration anyway) and certificate
    /// requests (asked again until answered).
    Messages,
    /// A bucket of its own for status messages (`online`, `offline`, the broker's last
    /// will): [`crate::limits::PRESENCE_RATE`], far more than an agent sends (one or two
    /// per connection), dropped over it. Presence is what the fleet view shows: a dropped
    /// `offline` left an appliance "online" until the sweeper noticed
    /// (`presence.offline_after`), so status must not compete with heartbeats; but an
    /// appliance can publish status over and over on one connection, and each transition
    /// is a row and an event, so it is bounded all the same.
    Presence,
    /// None: task events, task results and configuration reports. They answer a task or a
    /// configuration the control plane sent, the agent keeps each spooled until the receipt
    /// for it arrives (so a dropped one would come back, into the same limit), and counting
    /// them would let a long task drain the allowance and drop the heartbeats that keep the
    /// appliance online. They are bounded where they are stored instead: only the
    /// appliance's own tasks' events, once per (task, seq), at most
    /// `db::tasks::MAX_EVENTS_PER_TASK` per task.
    Unlimited,
}

fn allowance(channel: UpChannel) -> Allowance {
    match channel {
        UpChannel::Heartbeat | UpChannel::ConfigRequest | UpChannel::CertRequest => Allowance::Messages,
        UpChannel::Status => Allowance::Presence,
        UpChannel::TaskEvent(_) | UpChannel::TaskResult(_) | UpChannel::ConfigApplied => Allowance::Unlimited,
    }
}

/// How often a throttled appliance is logged at most.
const THROTTLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The per-appliance MQTT limits as the consumer applies them: a message takes a token from
/// the bucket its channel's [`allowance`] names ([`RateLimits::check_mqtt`] or
/// [`RateLimits::check_presence`], no database access); over the limit it is counted in
/// `hearth_rate_limited_total{kind="mqtt"}` and dropped, and the appliance is logged at most
/// once per [`THROTTLE_LOG_EVERY`]. Task traffic passes without touching a bucket.
struct Throttle {
    limits: Arc<RateLimits>,
    dropped: prometheus::IntCounter,
    /// When each throttled appliance was last logged (only those of the last minute or two).
    logged: HashMap<ApplianceId, Instant>,
    pruned: Instant,
}

impl Throttle {
    fn new(limits: Arc<RateLimits>, metrics: &Metrics) -> Self {
        let dropped = metrics.rate_limited.with_label_values(&[LimitKind::Mqtt.as_str()]);
        Throttle { limits, dropped, logged: HashMap::new(), pruned: Instant::now() }
    }

    /// Whether a message of `appliance` on `channel` goes on to be decoded and ingested.
    fn admit(&mut self, appliance: ApplianceId, channel: UpChannel) -> bool {
        let decision = match allowance(channel) {
            Allowance::Messages => self.limits.check_mqtt(&appliance),
            Allowance::Presence => self.limits.check_presence(&appliance),
            Allowance::Unlimited => return true,
        };
        if decision.allowed() {
            return true;
        }
        self.dropped.inc();
        self.log(appliance, &decision);
        false
    }

    fn log(&mut self, appliance: ApplianceId, decision: &Decision) {
        let now = Instant::now();
        if self.logged.get(&appliance).is_some_and(|at| now.duration_since(*at) < THROTTLE_LOG_EVERY) {
            return;
        }
        if now.duration_since(self.pruned) >= THROTTLE_LOG_EVERY {
            self.logged.retain(|_, at| now.duration_since(*at) < THROTTLE_LOG_EVERY);
            self.pruned = now;
        }
        self.logged.insert(appliance, now);
        tracing::warn!(
            %appliance,
            limit = %decision.policy(),
            "appliance over an MQTT rate limit: its heartbeats, configuration and certificate requests \
             (or, over the presence limit, its status messages) are dropped until it slows down \
             (logged at most once a minute per appliance)"
        );
    }
}

/// Decodes one publish; counts and drops anything that is not a valid up message.
#[cfg(test)]
fn decode(topic: &str, payload: &[u8], metrics: &Metrics) -> Option<Routed> {
    let (appliance, channel) = decode_topic(topic, metrics)?;
    decode_payload(topic, appliance, channel, payload, metrics)
}

fn refuse(metrics: &Metrics, topic: &str, kind: &str, reason: &str, detail: &dyn std::fmt::Display) {
    metrics.mqtt_decode_errors.with_label_values(&[kind, reason]).inc();
    tracing::debug!(topic = %topic.chars().take(160).collect::<String>(), %detail, "dropped an MQTT message");
}

/// The appliance and up channel of a publish's topic; counts and refuses any other topic.
fn decode_topic(topic: &str, metrics: &Metrics) -> Option<(ApplianceId, UpChannel)> {
    let parsed: Topic = match topic.parse() {
        Ok(t) => t,
        Err(e) => {
            refuse(metrics, topic, "topic", "bad_topic", &e);
            return None;
        }
    };
    let Channel::Up(channel) = parsed.channel else {
        refuse(metrics, topic, "topic", "not_up", &"a down topic reached the consumer");
        return None;
    };
    Some((parsed.appliance, channel))
}

/// Decodes the payload of an up message on `topic`; counts and refuses one that is not
/// valid.
fn decode_payload(
    topic: &str,
    appliance: ApplianceId,
    channel: UpChannel,
    payload: &[u8],
    metrics: &Metrics,
) -> Option<Routed> {
    let msg = match UpMessage::decode(channel, payload) {
        Ok(m) => m,
        Err(e) => {
            refuse(metrics, topic, channel.payload_kind(), e.reason(), &e);
            return None;
        }
    };
    metrics.mqtt_messages.with_label_values(&[msg.kind()]).inc();
    Some(Routed::Writer(match msg {
        UpMessage::Heartbeat(hb) => Ingested::Heartbeat(appliance, hb),
        UpMessage::Status(st) => Ingested::Status(appliance, st),
        UpMessage::TaskEvent(e) => Ingested::TaskEvent(appliance, e),
        UpMessage::TaskResult(r) => Ingested::TaskResult(appliance, r),
        UpMessage::ConfigRequest(r) => Ingested::ConfigRequest(appliance, r),
        UpMessage::ConfigApplied(r) => Ingested::ConfigApplied(appliance, r),
        UpMessage::CertRequest(r) => return Some(Routed::Renewal(appliance, r)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_protocol::{ApplianceId, UpChannel};

    #[test]
    fn bad_messages_are_counted_by_kind_and_reason() {
        let m = Metrics::new().unwrap();
        let a = ApplianceId::new();
        let hb_topic = Topic::new(a, UpChannel::Heartbeat).to_string();
        assert!(decode("hearth/v1/nope/up/heartbeat", b"{}", &m).is_none());
        assert!(decode(&hb_topic, b"{not json", &m).is_none());
        assert!(decode(&hb_topic, &vec![b'x'; 10_000], &m).is_none());
        let get = |k: &str, r: &str| m.mqtt_decode_errors.with_label_values(&[k, r]).get();
        assert_eq!(get("topic", "bad_topic"), 1);
        assert_eq!(get("heartbeat", "malformed"), 1);
        assert_eq!(get("heartbeat", "too_large"), 1);
    }

    #[test]
    fn over_the_limit_what_the_appliance_sends_unasked_is_dropped_and_presence_and_answers_are_kept() {
        let m = Metrics::new().unwrap();
        let limits = Arc::new(RateLimits::new(crate::config::Config::default().limits));
        let (a, b) = (ApplianceId::new(), ApplianceId::new());
        limits.mqtt_rates.replace([(a, crate::limits::Rate::from_quota(60, 2))]);
        let mut t = Throttle::new(limits.clone(), &m);
        let task = hearth_protocol::TaskId::new();

        // A long task and its presence messages take nothing from the allowance…
        for _ in 0..50 {
            assert!(t.admit(a, UpChannel::TaskEvent(task)));
        }
        for channel in [UpChannel::Status, UpChannel::TaskResult(task), UpChannel::ConfigApplied, UpChannel::Status] {
            assert!(t.admit(a, channel), "{channel:?} is kept");
        }
        // …so the heartbeats after it still get the whole burst.
        assert!(t.admit(a, UpChannel::Heartbeat));
        assert!(t.admit(a, UpChannel::ConfigRequest), "takes the last token");
        // The bucket is empty now: what the appliance sends unasked is dropped…
        for channel in [UpChannel::Heartbeat, UpChannel::ConfigRequest, UpChannel::CertRequest, UpChannel::Heartbeat] {
            assert!(!t.admit(a, channel), "{channel:?} is dropped");
        }
        // …and status messages (the last will among them), task traffic and configuration
        // reports still pass.
        for channel in
            [UpChannel::Status, UpChannel::TaskEvent(task), UpChannel::TaskResult(task), UpChannel::ConfigApplied]
        {
            assert!(t.admit(a, channel), "{channel:?} is kept");
        }
        // Status messages have a bucket of their own: an appliance publishing them in a loop
        // is stopped at it, without touching its heartbeats' allowance.
        let presence = crate::limits::PRESENCE_RATE.burst as usize;
        let admitted = (0..presence + 10).filter(|_| t.admit(b, UpChannel::Status)).count();
        assert_eq!(admitted, presence, "b's whole presence bucket, then nothing");
        assert!(
            t.admit(b, UpChannel::Heartbeat),
            "b's heartbeats are not touched by it: another appliance, another bucket"
        );
        assert_eq!(m.rate_limited.with_label_values(&["mqtt"]).get(), 4 + 10);
        assert_eq!(t.logged.len(), 2, "one log line per throttled appliance");
    }
}
