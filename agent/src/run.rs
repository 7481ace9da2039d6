//! `hearth-agent run`: keep one MQTT connection to the broker, announce presence, send
//! heartbeats while connected, reconnect with backoff, and leave cleanly on shutdown.
//!
//! One task owns the rumqttc event loop (this function's); the heartbeat ticker is a
//! separate task that only hands messages to a cloned client. Neither ever waits on the
//! client's request channel, so neither can block the other.

use std::time::Duration;

use hearth_protocol::{
    encode, ApplianceId, Channel, DownChannel, EncodeError, PresenceState, SessionId, Topic, TopicFilter, UpChannel,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::{AgentConfig, ConfigError};
use crate::connection::{self, last_will, mqtt_options, status, ConnectionParams, REQUEST_CHANNEL_CAPACITY};
use crate::facts::FactsSource;
use crate::state::{State, StateError};

/// How long a clean shutdown may take (publishing `offline`, then disconnecting).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot set up the MQTT connection: {0}")]
    Connection(#[from] connection::ConnectionError),
    #[error("cannot encode a status message: {0}")]
    Encode(#[from] EncodeError),
}

/// Runs the agent until `shutdown` is cancelled. Connection problems are retried forever;
/// only an unusable configuration or state directory is an error.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    let state = State::load(&config.state_dir)?;
    let params = ConnectionParams {
        appliance_id: state.appliance_id,
        host: config.broker_host.clone().unwrap_or(state.broker_host),
        port: config.broker_port.unwrap_or(state.broker_port),
        keep_alive: config.keep_alive(),
        ca_pem: state.ca_pem,
        cert_pem: state.cert_pem,
        key_pem: state.key_pem,
    };
    let session = SessionId::new();
    let (client, eventloop) = AsyncClient::new(mqtt_options(&params, session)?, REQUEST_CHANNEL_CAPACITY);
    info!(
        appliance = %params.appliance_id,
        broker = %format_args!("{}:{}", params.host, params.port),
        version = crate::VERSION,
        "starting"
    );

    let (connected_tx, connected_rx) = watch::channel(None);
    let stop_heartbeats = CancellationToken::new();
    // Stops the ticker however this function ends.
    let _stop_guard = stop_heartbeats.clone().drop_guard();
    let heartbeats = tokio::spawn(heartbeat_loop(Heartbeats {
        client: client.clone(),
        topic: Topic::new(params.appliance_id, UpChannel::Heartbeat).to_string(),
        interval: config.heartbeat_interval(),
        facts: FactsSource { root_fs_path: config.root_fs_path.clone(), ..FactsSource::default() },
        connected: connected_rx,
        stop: stop_heartbeats.clone(),
    }));

    let mut agent = Agent {
        id: params.appliance_id,
        status_topic: Topic::new(params.appliance_id, UpChannel::Status).to_string(),
        client,
        session,
        connected: false,
        generation: 0,
        connected_tx,
        stop_heartbeats,
        heartbeats: Some(heartbeats),
        backoff: Backoff::new(
            Duration::from_millis(config.backoff_initial_ms),
            Duration::from_millis(config.backoff_max_ms),
        ),
        rng: StdRng::from_entropy(),
    };
    agent.drive(eventloop, shutdown).await
}

/// The event loop owner's state.
struct Agent {
    id: ApplianceId,
    status_topic: String,
    client: AsyncClient,
    /// The session of the current (or next) connection; its last will carries it.
    session: SessionId,
    connected: bool,
    /// Counts connections, so the ticker notices a reconnect it did not see as a drop.
    generation: u64,
    connected_tx: watch::Sender<Option<u64>>,
    stop_heartbeats: CancellationToken,
    heartbeats: Option<JoinHandle<()>>,
    backoff: Backoff,
    rng: StdRng,
}

impl Agent {
    async fn drive(&mut self, mut eventloop: EventLoop, shutdown: CancellationToken) -> Result<(), RunError> {
        let mut first_attempt = true;
        let mut deadline: Option<Instant> = None;
        loop {
            if eventloop.network.is_none() {
                // About to (re)connect: a fresh session, and a last will that carries it.
                if !first_attempt {
                    self.session = SessionId::new();
                    eventloop.mqtt_options.set_last_will(last_will(self.id, self.session)?);
                }
                first_attempt = false;
            }
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled(), if deadline.is_none() => {
                            if !self.begin_shutdown().await {
                                return Ok(());
                            }
                            deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
                        }
                        _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                            warn!("the broker did not confirm the disconnect in time; closing the connection");
                            return Ok(());
                        }
                        event = &mut poll => break event,
                    }
                }
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => self.on_connected(ack.session_present)?,
                Ok(Event::Incoming(Incoming::Publish(p))) => on_message(self.id, &p.topic, p.payload.len()),
                Ok(Event::Outgoing(Outgoing::Disconnect)) if deadline.is_some() => {
                    info!("disconnected");
                    return Ok(());
                }
                Ok(other) => debug!(event = ?other, "mqtt"),
                Err(e) if deadline.is_some() => {
                    debug!(error = %e, "connection ended during shutdown");
                    return Ok(());
                }
                Err(e) => {
                    self.set_disconnected();
                    let delay = self.backoff.next_delay(&mut self.rng);
                    warn!(
                        error = %error_chain(&e),
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "broker connection failed"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn on_connected(&mut self, session_present: bool) -> Result<(), RunError> {
        self.connected = true;
        self.generation += 1;
        self.backoff.reset();
        let online = encode(&status(PresenceState::Online, self.session))?;
        if let Err(e) = self.client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, online) {
            warn!(error = %e, "cannot queue the online status");
        }
        if let Err(e) = self.client.try_subscribe(TopicFilter::Down(self.id).to_string(), QoS::AtLeastOnce) {
            warn!(error = %e, "cannot queue the subscription to down topics");
        }
        self.connected_tx.send_replace(Some(self.generation));
        info!(session = %self.session, session_present, "connected");
        Ok(())
    }

    fn set_disconnected(&mut self) {
        if self.connected {
            info!(session = %self.session, "disconnected from the broker");
        }
        self.connected = false;
        self.connected_tx.send_replace(None);
    }

    /// Stops heartbeats and, if connected, queues `offline` and a disconnect. Returns
    /// whether there is a disconnect to wait for.
    async fn begin_shutdown(&mut self) -> bool {
        info!("shutting down");
        self.connected_tx.send_replace(None);
        self.stop_heartbeats.cancel();
        // No heartbeat may follow the offline status (a heartbeat means "online").
        if let Some(handle) = self.heartbeats.take() {
            let _ = handle.await;
        }
        if !self.connected {
            return false;
        }
        let offline = match encode(&status(PresenceState::Offline, self.session)) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, "cannot encode the offline status; leaving it to the last will");
                return false;
            }
        };
        // If `offline` cannot be queued, do not disconnect cleanly: dropping the connection
        // makes the broker publish the last will, which says the same.
        if let Err(e) = self.client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, offline) {
            warn!(error = %e, "cannot queue the offline status; leaving it to the last will");
            return false;
        }
        if let Err(e) = self.client.try_disconnect() {
            warn!(error = %e, "cannot queue the disconnect");
            return false;
        }
        true
    }
}

/// What a message on a down topic was, for the log.
fn down_kind(channel: DownChannel) -> &'static str {
    match channel {
        DownChannel::Config => "config",
        DownChannel::Task => "task",
        DownChannel::Cert => "cert",
    }
}

/// Handles one incoming message. Nothing here can fail or panic; payloads are not logged.
fn on_message(own: ApplianceId, topic: &str, len: usize) {
    let shown: String = topic.chars().take(hearth_protocol::topic::MAX_TOPIC_LEN).collect();
    match topic.parse::<Topic>() {
        Ok(t) if t.appliance != own => {
            warn!(topic = %shown, "ignoring a message addressed to another appliance")
        }
        Ok(Topic { channel: Channel::Down(c), .. }) => info!(
            kind = down_kind(c),
            bytes = len,
            "received a {} message; this agent version does not handle it yet",
            down_kind(c)
        ),
        Ok(_) => warn!(topic = %shown, "ignoring a message on an up topic"),
        Err(e) => {
            warn!(topic = %shown, error = %e, "ignoring a message on a topic outside the scheme")
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = cause.source();
    }
    s
}

/// The heartbeat ticker's inputs.
struct Heartbeats {
    client: AsyncClient,
    topic: String,
    interval: Duration,
    facts: FactsSource,
    /// `Some(generation)` while connected.
    connected: watch::Receiver<Option<u64>>,
    stop: CancellationToken,
}

/// Sends a heartbeat right after each connect and then every interval while connected.
async fn heartbeat_loop(mut hb: Heartbeats) {
    let mut seq: u64 = 0;
    loop {
        let generation = loop {
            if let Some(g) = *hb.connected.borrow_and_update() {
                break g;
            }
            tokio::select! {
                _ = hb.stop.cancelled() => return,
                changed = hb.connected.changed() => if changed.is_err() { return },
            }
        };
        // The first tick is immediate.
        let mut ticker = tokio::time::interval(hb.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = hb.stop.cancelled() => return,
                changed = hb.connected.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *hb.connected.borrow() != Some(generation) {
                        break;
                    }
                }
                _ = ticker.tick() => send_heartbeat(&hb, &mut seq),
            }
        }
    }
}

/// Collects facts and hands one heartbeat to the client; `seq` advances only if it was
/// handed over.
fn send_heartbeat(hb: &Heartbeats, seq: &mut u64) {
    let facts = match hb.facts.collect() {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot collect facts; skipping this heartbeat");
            return;
        }
    };
    let next = seq.saturating_add(1);
    let payload = match encode(&facts.heartbeat(next, OffsetDateTime::now_utc())) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot encode a heartbeat; skipping it");
            return;
        }
    };
    match hb.client.try_publish(&hb.topic, QoS::AtMostOnce, false, payload) {
        Ok(()) => {
            *seq = next;
            debug!(seq = next, "heartbeat");
        }
        Err(e) => warn!(error = %e, "cannot queue a heartbeat; skipping it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_panic() {
        let me = ApplianceId::new();
        on_message(me, &Topic::new(me, DownChannel::Task).to_string(), 10);
        on_message(me, &Topic::new(ApplianceId::new(), DownChannel::Config).to_string(), 10);
        on_message(me, &Topic::new(me, UpChannel::Heartbeat).to_string(), 10);
        on_message(me, "garbage/ü/\u{0}", 0);
        on_message(me, &"x".repeat(10_000), 0);
    }

    #[tokio::test]
    async fn run_without_enrollment_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let config = AgentConfig { state_dir: tmp.path().to_path_buf(), ..Default::default() };
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().starts_with("not enrolled: "), "{err}");

        let config = AgentConfig { heartbeat_interval_s: 0, ..Default::default() };
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "heartbeat_interval_s must be at least 1");
    }

    /// The sequence numbers of the heartbeats queued on the client since the last call.
    fn queued_seqs(eventloop: &mut EventLoop) -> Vec<u64> {
        eventloop.clean();
        eventloop
            .pending
            .drain(..)
            .filter_map(|r| match r {
                rumqttc::Request::Publish(p) => {
                    Some(hearth_protocol::decode::<hearth_protocol::Heartbeat>(&p.payload).unwrap().seq)
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_only_while_connected_and_seq_counts_handed_over() {
        let options = rumqttc::MqttOptions::new("test", "localhost", 1883);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat_loop(Heartbeats {
            client,
            topic: "t".into(),
            interval: Duration::from_secs(10),
            facts: FactsSource::default(),
            connected: rx,
            stop: stop.clone(),
        }));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(queued_seqs(&mut eventloop), Vec::<u64>::new(), "nothing while disconnected");

        tx.send_replace(Some(1));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(queued_seqs(&mut eventloop), [1], "one right after connecting");
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(queued_seqs(&mut eventloop), [2, 3], "then one per interval");

        tx.send_replace(None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(queued_seqs(&mut eventloop), Vec::<u64>::new());

        // A reconnect the ticker sees only as a new generation also restarts the ticker.
        tx.send_replace(Some(2));
        tokio::time::sleep(Duration::from_millis(1)).await;
        tx.send_replace(Some(3));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(queued_seqs(&mut eventloop), [4, 5]);

        stop.cancel();
        task.await.unwrap();
    }
}
