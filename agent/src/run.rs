//! `hearth-agent run`: keep one MQTT connection to the broker, announce presence, send
//! heartbeats while connected, reconnect with backoff, run catalog tasks and apply the
//! desired configuration, and leave cleanly on shutdown.
//!
//! One task owns the rumqttc event loop (this function's): it decodes what arrives on the
//! appliance's down topics, queues tasks and configuration documents for the
//! [`Worker`](crate::tasks::Worker), and sends everything in the [spool](crate::spool),
//! oldest first, removing each message when its PUBACK arrives. The heartbeat ticker and the
//! worker are separate tasks; the ticker only hands messages to a cloned client and the
//! worker only appends to the spool, so nothing ever waits on the client's request channel
//! and a running playbook never stops the event loop from being polled.
//!
//! At start-up the agent loads its own installed catalog (`<ansible_dir>/catalog.json`; a
//! missing or invalid one is an error naming the path), the applied configuration and the
//! spool, and settles what an earlier run left in the task ledger. On every connect it
//! publishes `online`, subscribes to its down topics, sends a `ConfigRequest` with the
//! applied version, and resends the spool. On shutdown it stops taking tasks, stops a
//! running playbook (its task is reported failed, "agent shutting down", through the
//! spool), gives the spool a moment to drain, then publishes `offline` and disconnects.

use std::path::Path;
use std::time::Duration;

use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{
    decode, encode, ApplianceId, CertificateRenewal, Channel, ConfigDocument, DecodeError, DownChannel, EncodeError,
    PresenceState, RenewalNotice, RenewalOutcome, SessionId, TaskDispatch, Topic, UpChannel,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, ConnectTimeout};
use crate::config::{AgentConfig, ConfigError};
use crate::connection::{self, mqtt_options, status, ConnectionParams, REQUEST_CHANNEL_CAPACITY};
use crate::desired::{AppliedStore, Desired, DesiredError};
use crate::facts::FactsSource;
use crate::renewal::{self, CertificateFacts, Pending, RenewalError};
use crate::runner::Runner;
use crate::spool::{AckTracker, Outbox, Spool, SpoolError};
use crate::state::{State, StateError};
use crate::tasks::ledger::{Ledger, LedgerError};
use crate::tasks::{Job, Worker};
use crate::update::{self, download::Reach, gate::Gate, install::Updater};
use hearth_protocol::Receipt;

/// How long a clean shutdown may take (publishing `offline`, then disconnecting).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the spool to be acknowledged before disconnecting (what
/// is left is sent after the next start).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a shutdown waits for the worker to stop its playbook and report.
pub const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many spool messages may be on their way (sent, not acknowledged) at once.
pub const SPOOL_WINDOW: usize = 16;
/// How often the spool is offered to the client even when nothing happened (in case the
/// request channel was full the last time).
pub const SPOOL_RETRY: Duration = Duration::from_secs(5);

/// How long a message the broker acknowledged may wait for the control plane's receipt
/// before it is sent again.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many tasks and documents may wait for the worker.
pub const JOB_QUEUE_CAPACITY: usize = 256;

/// Subdirectories of the state directory.
pub const TASKS_DIR: &str = "tasks";
pub const SPOOL_DIR: &str = "spool";
pub const CONFIG_DIR: &str = "config";

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
    /// The installed catalog is missing or invalid.
    #[error("{}: {detail}", path.display())]
    Catalog { path: std::path::PathBuf, detail: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Desired(#[from] DesiredError),
    #[error("certificate renewal: {0}")]
    Renewal(#[from] RenewalError),
    #[error("{}: the certificate cannot be read: {detail}", path.display())]
    Certificate { path: std::path::PathBuf, detail: String },
}

/// Loads the agent's own installed catalog.
pub fn load_catalog(path: &Path) -> Result<Catalog, RunError> {
    let bytes = std::fs::read(path).map_err(|e| RunError::Catalog {
        path: path.to_path_buf(),
        detail: format!("cannot read the action catalog: {e}"),
    })?;
    Catalog::from_json(&bytes)
        .map_err(|e| RunError::Catalog { path: path.to_path_buf(), detail: format!("invalid action catalog: {e}") })
}

/// Runs the agent until `shutdown` is cancelled. Connection problems are retried forever;
/// only an unusable configuration, state directory or catalog is an error.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    // A renewal the broker accepted before the agent stopped becomes the identity now.
    renewal::finish(&config.state_dir)?;
    let state = State::load(&config.state_dir)?;
    // The control plane over HTTPS as this appliance (agent updates and their health gate).
    let control_plane =
        Reach { api_url: config.api_url.clone().or_else(|| state.api_url.clone()), identity: state.clone() };
    // Stops the agent on a signal, or when an agent update has installed a new version to
    // restart into.
    let shutdown = shutdown.child_token();
    let catalog = load_catalog(&config.catalog_path())?;
    let policy =
        Policy::with_local_domains(config.local_domains.clone().unwrap_or_else(|| catalog.local_domains.clone()));
    let ledger = Ledger::open(&config.state_dir.join(TASKS_DIR))?;
    let spool = Spool::open(&config.state_dir.join(SPOOL_DIR), config.spool_max_bytes)?;
    if !spool.is_empty() {
        info!(messages = spool.len(), bytes = spool.bytes(), "spool holds messages from an earlier run");
    }
    let outbox = Outbox::new(state.appliance_id, spool);
    let mut desired =
        Desired::load(AppliedStore::open(&config.state_dir.join(CONFIG_DIR))?, config.heartbeat_interval());
    // The key configuration secrets are sealed to: the enrollment key, kept as
    // sealing-key.pem when a certificate renewal replaced key.pem.
    let sealing_key = renewal::sealing_key(&config.state_dir)?.unwrap_or_else(|| state.key_pem.clone());
    match hearth_protocol::sealed::OpeningKey::from_pkcs8_pem(sealing_key.expose()) {
        Ok(key) => desired = desired.with_opening_key(state.appliance_id, key),
        Err(e) => warn!(error = %e, "the appliance key cannot open sealed configuration secrets"),
    }
    let heartbeat_interval = desired.heartbeat_interval();
    let applied_version = desired.applied_version_watch();
    let worker = Worker {
        catalog,
        policy,
        runner: Runner {
            ansible_playbook: config.ansible_playbook.clone(),
            ansible_dir: config.ansible_dir.clone(),
            hearth_root: config.hearth_root.clone(),
            manage_services: config.manage_services,
        },
        ledger: ledger.clone(),
        outbox: outbox.clone(),
        desired,
        task_timeout: config.task_timeout(),
        updater: Some(Updater {
            layout: update::Layout::new(&config.state_dir),
            keys: config.update_keys().unwrap_or_default(),
            window_s: config.update_health_window_s,
            max_bytes: config.update_max_bytes,
            control_plane: control_plane.clone(),
            restart: shutdown.clone(),
        }),
    };
    let recovered = worker.recover()?;
    if !recovered.is_empty() {
        info!(tasks = recovered.len(), "running tasks received before the agent stopped");
    }
    // How the last agent update ended (committed, or rolled back), if not reported yet.
    update::gate::report_finished(&config.state_dir, &ledger, &outbox);

    let certificate = CertificateFacts::read(&state.cert_pem)
        .map_err(|detail| RunError::Certificate { path: config.state_dir.join(crate::state::CERT_FILE), detail })?;
    let pending_renewal = Pending::load(&config.state_dir)?;
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
        serial = %certificate.serial,
        not_after = %certificate.not_after,
        renew_from = %certificate.due_at(config.renew_share(), params.appliance_id),
        "certificate"
    );
    info!(
        appliance = %params.appliance_id,
        broker = %format_args!("{}:{}", params.host, params.port),
        version = crate::VERSION,
        ansible_dir = %config.ansible_dir.display(),
        "starting"
    );

    let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE_CAPACITY);
    let stop_worker = CancellationToken::new();
    // Stops the worker (and its playbook) however this function ends.
    let _stop_worker_guard = stop_worker.clone().drop_guard();
    let worker = tokio::spawn(worker.run(recovered.into_iter().map(Job::Task).collect(), jobs_rx, stop_worker.clone()));

    let (connected_tx, connected_rx) = watch::channel(None);
    let stop_heartbeats = CancellationToken::new();
    // Stops the ticker however this function ends.
    let _stop_guard = stop_heartbeats.clone().drop_guard();
    let heartbeats = tokio::spawn(heartbeat_loop(Heartbeats {
        client: client.clone(),
        topic: Topic::new(params.appliance_id, UpChannel::Heartbeat).to_string(),
        interval: heartbeat_interval,
        facts: FactsSource { root_fs_path: config.root_fs_path.clone(), ..FactsSource::default() },
        connected: connected_rx,
        stop: stop_heartbeats.clone(),
    }));

    // A new version on trial: its health gate.
    let gate = update::gate::this_trial(&config.state_dir).map(|trial| {
        Gate {
            state_dir: config.state_dir.clone(),
            trial,
            control_plane,
            ansible_playbook: config.ansible_playbook.clone(),
            connected: connected_tx.subscribe(),
            ledger: ledger.clone(),
            outbox: outbox.clone(),
        }
        .spawn()
    });

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
        connect_timeout: ConnectTimeout::default(),
        rng: StdRng::from_entropy(),
        outbox,
        tracker: AckTracker::default(),
        ledger,
        jobs: Some(jobs_tx),
        applied_version,
        stop_worker,
        worker: Some(worker),
        phase: Phase::Running,
        renewal: Renewal {
            state_dir: config.state_dir.clone(),
            share: config.renew_share(),
            params,
            certificate,
            pending: pending_renewal,
            asked_at: None,
            not_before: None,
            early: None,
            switch: Switch::None,
        },
    };
    let result = agent.drive(eventloop, shutdown).await;
    if let Some(gate) = gate {
        gate.abort();
    }
    result
}

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutting down: waiting (until then) for the spool to be acknowledged.
    Draining(Instant),
    /// Shutting down: `offline` and the disconnect are queued; waiting (until then) for
    /// the disconnect to go out.
    Disconnecting(Instant),
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
    connect_timeout: ConnectTimeout,
    rng: StdRng,
    outbox: Outbox,
    tracker: AckTracker,
    ledger: Ledger,
    /// `None` once shutting down: no new tasks are taken.
    jobs: Option<mpsc::Sender<Job>>,
    applied_version: watch::Receiver<Option<u64>>,
    stop_worker: CancellationToken,
    worker: Option<JoinHandle<()>>,
    phase: Phase,
    renewal: Renewal,
}

/// The certificate in use and its renewal (see [`crate::renewal`]).
struct Renewal {
    state_dir: std::path::PathBuf,
    share: f64,
    /// The identity in use.
    params: ConnectionParams,
    certificate: CertificateFacts,
    pending: Option<Pending>,
    /// When the pending request was last sent.
    asked_at: Option<time::OffsetDateTime>,
    /// No request before then (after a refusal).
    not_before: Option<time::OffsetDateTime>,
    /// Renew from then on, though not yet due: the control plane asked (a CA rotation).
    early: Option<time::OffsetDateTime>,
    switch: Switch,
}

/// Switching to a renewed pair: disconnect cleanly, reconnect with the new pair; a connection
/// the broker accepts commits it, a failed one rolls back to the old pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    None,
    /// The disconnect is queued.
    Disconnecting,
    /// Connecting with the new pair.
    Connecting,
}

impl Agent {
    async fn drive(&mut self, mut eventloop: EventLoop, shutdown: CancellationToken) -> Result<(), RunError> {
        let mut first_attempt = true;
        let mut retry = tokio::time::interval(SPOOL_RETRY);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut renewal_check = tokio::time::interval(renewal::check_every(&self.renewal.certificate));
        renewal_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if eventloop.network.is_none() {
                // About to (re)connect: a fresh session, and a last will that carries it.
                if !first_attempt {
                    self.session = connection::renew_session(&mut eventloop.mqtt_options, self.id)?;
                }
                first_attempt = false;
                eventloop.network_options.set_connection_timeout(self.connect_timeout.secs());
            }
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    let phase_deadline = match self.phase {
                        Phase::Running => None,
                        Phase::Draining(t) | Phase::Disconnecting(t) => Some(t),
                    };
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled(), if self.phase == Phase::Running => {
                            if !self.begin_shutdown().await {
                                return Ok(());
                            }
                        }
                        _ = tokio::time::sleep_until(phase_deadline.unwrap_or_else(Instant::now)), if phase_deadline.is_some() => {
                            if let Phase::Disconnecting(_) = self.phase {
                                warn!("the broker did not confirm the disconnect in time; closing the connection");
                                return Ok(());
                            }
                            debug!("the spool did not drain in time; it will be sent after the next start");
                            if !self.start_disconnect() {
                                return Ok(());
                            }
                        }
                        _ = self.outbox.appended() => self.flush_spool(),
                        _ = retry.tick() => {
                            let overdue = self.tracker.expire(RECEIPT_TIMEOUT);
                            if overdue > 0 {
                                info!(messages = overdue, "no receipt from the control plane in time; sending again");
                            }
                            self.flush_spool();
                        }
                        _ = renewal_check.tick() => self.maybe_renew(),
                        event = &mut poll => break event,
                    }
                }
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => self.on_connected(ack.session_present)?,
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if !self.on_message(&p.topic, &p.payload) {
                        return Ok(());
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    if !self.on_puback(ack.pkid) {
                        return Ok(());
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => self.tracker.on_outgoing_publish(pkid),
                Ok(Event::Outgoing(Outgoing::Disconnect)) if matches!(self.phase, Phase::Disconnecting(_)) => {
                    info!("disconnected");
                    return Ok(());
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if self.renewal.switch == Switch::Disconnecting => {
                    // Close at once (the broker has the DISCONNECT: no last will) and connect
                    // again with the new pair.
                    eventloop.clean();
                    self.set_disconnected();
                    connection::forget_unsent(&mut eventloop);
                    self.tracker.reset();
                    match self.renewal.pending.as_ref().map(|p| self.renewal.params_with(p)) {
                        Some(Ok(new)) => {
                            eventloop.mqtt_options.set_transport(new);
                            self.renewal.switch = Switch::Connecting;
                            info!("reconnecting with the renewed certificate");
                        }
                        other => {
                            if let Some(Err(e)) = other {
                                warn!(error = %e, "the renewed certificate cannot be used; keeping the current one");
                            }
                            self.renewal.switch = Switch::None;
                            self.renewal.discard();
                            self.renewal.not_before = Some(time::OffsetDateTime::now_utc() + renewal::RETRY_AFTER);
                        }
                    }
                }
                Ok(other) => debug!(event = ?other, "mqtt"),
                Err(e) if self.phase != Phase::Running => {
                    debug!(error = %e, "connection ended during shutdown");
                    return Ok(());
                }
                Err(e) => {
                    if !self.connected && matches!(e, rumqttc::ConnectionError::NetworkTimeout) {
                        // Still in the broker's queue when the timeout came: wait longer
                        // next time (see backoff::ConnectTimeout).
                        self.connect_timeout.timed_out();
                    }
                    self.set_disconnected();
                    if self.renewal.switch == Switch::Connecting {
                        warn!(
                            error = %crate::error_chain(&e),
                            "the broker did not accept the renewed certificate; going back to the current one"
                        );
                        self.renewal.switch = Switch::None;
                        self.renewal.discard();
                        self.renewal.not_before = Some(time::OffsetDateTime::now_utc() + renewal::RETRY_AFTER);
                        eventloop.mqtt_options.set_transport(connection::transport(&self.renewal.params)?);
                    }
                    // rumqttc keeps unacknowledged publishes to resend on the next
                    // connection; the spool is resent instead (everything unacknowledged,
                    // oldest first), and the status, config request and heartbeats are
                    // made afresh. Dropping them here keeps packet ids and spool entries
                    // matched (see AckTracker).
                    // Events rumqttc buffered before the error (a publish it numbered but
                    // could not write, acknowledgements read in the same batch) would be
                    // delivered after the reconnect and shift the packet-id mapping; only
                    // incoming messages are kept (unacknowledged ones are redelivered
                    // anyway). A held-back colliding publish goes too: the spool resends it.
                    connection::forget_unsent(&mut eventloop);
                    self.tracker.reset();
                    let delay = self.backoff.next_delay(Instant::now(), &mut self.rng);
                    warn!(
                        error = %crate::error_chain(&e),
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "broker connection failed"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            self.stop_tasks().await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn on_connected(&mut self, session_present: bool) -> Result<(), RunError> {
        if self.renewal.switch == Switch::Connecting {
            self.renewal.switch = Switch::None;
            self.renewal.commit()?;
        }
        self.connected = true;
        self.generation += 1;
        self.backoff.connected(Instant::now());
        self.connect_timeout.connected();
        self.tracker.reset();
        let applied_version = *self.applied_version.borrow();
        let announced = connection::announce(&self.client, self.id, self.session, applied_version)?;
        // Both publishes are QoS 1 and take packet ids; neither is a spool entry.
        if announced.online {
            self.tracker.queued(None);
        }
        if announced.config_request {
            self.tracker.queued(None);
        }
        self.connected_tx.send_replace(Some(self.generation));
        info!(session = %self.session, session_present, ?applied_version, "connected");
        self.flush_spool();
        // An answer may have been lost with the last connection: ask again at once.
        self.renewal.asked_at = None;
        self.maybe_renew();
        Ok(())
    }

    /// Asks for a renewed certificate when it is due (and again when no answer came in
    /// time), or switches to one that was answered before the agent restarted.
    fn maybe_renew(&mut self) {
        if !self.connected || self.phase != Phase::Running || self.renewal.switch != Switch::None {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let due = self.renewal.certificate.due_at(self.renewal.share, self.id);
        let due = self.renewal.early.map_or(due, |early| early.min(due));
        if self.renewal.pending.is_none() && now < due {
            return;
        }
        if self.renewal.not_before.is_some_and(|t| now < t) {
            return;
        }
        if self.renewal.pending.is_none() {
            match Pending::create(&self.renewal.state_dir) {
                Ok(p) => {
                    info!(renewal = %p.renewal, not_after = %self.renewal.certificate.not_after, "renewing the certificate");
                    self.renewal.pending = Some(p);
                }
                Err(e) => {
                    warn!(error = %e, "cannot prepare a certificate renewal; trying again later");
                    self.renewal.not_before = Some(now + renewal::RETRY_AFTER);
                    return;
                }
            }
        }
        let Some(pending) = &self.renewal.pending else { return };
        if pending.issued.is_some() {
            self.start_switch();
            return;
        }
        if self.renewal.asked_at.is_some_and(|t| now - t < renewal::ANSWER_TIMEOUT) {
            return;
        }
        let request = pending.request(&self.renewal.certificate.serial);
        let topic = Topic::new(self.id, UpChannel::CertRequest).to_string();
        match encode(&request).map(|bytes| self.client.try_publish(topic, QoS::AtLeastOnce, false, bytes)) {
            Ok(Ok(())) => {
                self.tracker.queued(None);
                self.renewal.asked_at = Some(now);
                debug!(renewal = %request.renewal, "certificate renewal requested");
            }
            Ok(Err(e)) => debug!(error = %e, "the request channel is full; asking for the renewal later"),
            Err(e) => warn!(error = %e, "cannot encode the renewal request"),
        }
    }

    /// A `down/cert` answer arrived.
    fn on_cert(&mut self, payload: &[u8]) {
        let answer: CertificateRenewal = match decode(payload) {
            Ok(a) => a,
            Err(e) => {
                warn!(reason = e.reason(), error = %describe(&e), "dropping a certificate answer that cannot be decoded");
                return;
            }
        };
        let Some(pending) = self.renewal.pending.as_mut().filter(|p| p.renewal == answer.renewal) else {
            debug!(renewal = %answer.renewal, "ignoring an answer to a renewal this agent is not waiting for");
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        match answer.outcome {
            RenewalOutcome::Issued { certificate_pem, ca_chain_pem, serial, not_after } => {
                match pending.accept(self.id, &certificate_pem, &ca_chain_pem) {
                    Ok(()) => {
                        info!(%serial, %not_after, "renewed certificate received; switching to it");
                        self.start_switch();
                    }
                    Err(e) => {
                        warn!(error = %e, "refusing the renewed certificate; keeping the current one");
                        self.renewal.discard();
                        self.renewal.not_before = Some(now + renewal::RETRY_AFTER);
                    }
                }
            }
            RenewalOutcome::Refused { code, message } => {
                warn!(%code, %message, "the control plane refused the certificate renewal");
                // A request it cannot use is made anew; otherwise the same one is asked
                // again later (the answer then is the same certificate).
                let (forget, wait) = match code.as_str() {
                    "invalid_csr" | "same_key" => (true, renewal::RETRY_AFTER),
                    "revoked" | "tenant_suspended" => (false, renewal::REFUSED_RETRY_AFTER),
                    _ => (false, renewal::RETRY_AFTER),
                };
                if forget {
                    self.renewal.discard();
                }
                self.renewal.asked_at = None;
                self.renewal.not_before = Some(now + wait);
            }
            RenewalOutcome::Unknown => warn!("ignoring a certificate answer of an unknown kind"),
        }
    }

    /// A `down/cert/renew` notice arrived: renew within the time it gives, at a moment fixed
    /// by this appliance's id (see [`renewal::notice_delay`]), through the usual request.
    fn on_renewal_notice(&mut self, payload: &[u8]) {
        let notice: RenewalNotice = match decode(payload) {
            Ok(n) => n,
            Err(e) => {
                warn!(reason = e.reason(), error = %describe(&e), "dropping a renewal notice that cannot be decoded");
                return;
            }
        };
        if self.renewal.pending.is_some() {
            debug!(reason = ?notice.reason, "renewal notice while a renewal is under way; nothing more to do");
            return;
        }
        let at = time::OffsetDateTime::now_utc() + renewal::notice_delay(self.id, notice.within_s);
        let at = self.renewal.early.map_or(at, |early| early.min(at));
        info!(reason = ?notice.reason, renew_at = %at, "the control plane asked for a certificate renewal");
        self.renewal.early = Some(at);
        self.maybe_renew();
    }

    /// Disconnects cleanly so the next connection uses the renewed pair (see [`Switch`]).
    fn start_switch(&mut self) {
        if self.phase != Phase::Running || !self.connected {
            return;
        }
        match self.client.try_disconnect() {
            Ok(()) => self.renewal.switch = Switch::Disconnecting,
            Err(e) => debug!(error = %e, "the request channel is full; switching certificates later"),
        }
    }

    fn set_disconnected(&mut self) {
        if self.connected {
            info!(session = %self.session, "disconnected from the broker");
        }
        self.connected = false;
        self.connected_tx.send_replace(None);
    }

    /// Hands the oldest spool messages not yet on their way to the client, up to
    /// [`SPOOL_WINDOW`] unacknowledged at once.
    fn flush_spool(&mut self) {
        if !self.connected || matches!(self.phase, Phase::Disconnecting(_)) {
            return;
        }
        let spool = self.outbox.lock();
        for entry in spool.iter() {
            if self.tracker.in_flight() >= SPOOL_WINDOW {
                break;
            }
            if self.tracker.is_queued(entry.id) {
                continue;
            }
            match self.client.try_publish(entry.topic.as_str(), QoS::AtLeastOnce, false, entry.payload.clone()) {
                Ok(()) => self.tracker.queued(Some(entry.id)),
                Err(e) => {
                    debug!(error = %e, "the request channel is full; sending the rest of the spool later");
                    break;
                }
            }
        }
    }

    /// A PUBACK arrived: the entry now waits for its receipt; send more. Returns false when
    /// the agent should stop (shutting down and the disconnect could not be queued).
    fn on_puback(&mut self, pkid: u16) -> bool {
        self.tracker.on_puback(pkid);
        self.flush_spool();
        true
    }

    /// The control plane stored what the receipt names: drop it from the spool. Returns
    /// false when the agent should stop (shutting down and the disconnect could not be
    /// queued).
    fn on_receipt(&mut self, payload: &[u8]) -> bool {
        let receipt: Receipt = match decode(payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(reason = e.reason(), error = %describe(&e), "dropping a receipt that cannot be decoded");
                return true;
            }
        };
        match self.outbox.lock().remove_receipted(&receipt) {
            Ok(ids) => {
                debug!(messages = ids.len(), "receipt");
                self.tracker.receipted(&ids);
            }
            Err(e) => warn!(error = %e, "cannot remove receipted messages from the spool"),
        }
        self.flush_spool();
        if matches!(self.phase, Phase::Draining(_)) && self.outbox.lock().is_empty() {
            return self.start_disconnect();
        }
        true
    }

    /// Returns false when the agent should stop (see [`Agent::on_receipt`]).
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        match route(self.id, topic, payload.len()) {
            Some(DownChannel::Task) => self.on_task(payload),
            Some(DownChannel::Config) => self.on_config(payload),
            Some(DownChannel::Receipt) => return self.on_receipt(payload),
            Some(DownChannel::Cert) => self.on_cert(payload),
            Some(DownChannel::CertRenew) => self.on_renewal_notice(payload),
            None => {}
        }
        true
    }

    /// A task arrived: record it, then queue it for the worker (unless shutting down: it
    /// then runs after the next start, from the ledger).
    fn on_task(&mut self, payload: &[u8]) {
        let dispatch: TaskDispatch = match decode(payload) {
            Ok(d) => d,
            Err(e) => {
                warn!(reason = e.reason(), error = %describe(&e), "dropping a task message that cannot be decoded");
                return;
            }
        };
        let id = dispatch.task_id;
        match self.ledger.record_received(&dispatch) {
            Ok(true) => info!(task = %id, action = %dispatch.action, "task received"),
            Ok(false) => info!(task = %id, "task delivered again"),
            Err(e) => warn!(task = %id, error = %e, "cannot record the task on arrival"),
        }
        let Some(jobs) = &self.jobs else {
            info!(task = %id, "shutting down; the task will run after the agent starts again");
            return;
        };
        match jobs.try_send(Job::Task(dispatch)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                error!(task = %id, "the task queue is full; the task will run after the agent restarts")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!(task = %id, "the worker has stopped; the task will run after the agent restarts")
            }
        }
    }

    /// A configuration document arrived: queue it for the worker. Its contents are never
    /// logged.
    fn on_config(&mut self, payload: &[u8]) {
        let doc: ConfigDocument = match decode(payload) {
            Ok(d) => d,
            Err(e) => {
                warn!(reason = e.reason(), error = %describe(&e), "dropping a configuration message that cannot be decoded");
                return;
            }
        };
        let version = doc.version;
        let Some(jobs) = &self.jobs else {
            return;
        };
        match jobs.try_send(Job::Config(doc)) {
            Ok(()) => debug!(version, "configuration received"),
            Err(_) => warn!(version, "cannot queue the configuration; it is asked for again on the next connect"),
        }
    }

    /// Stops taking tasks and stops the worker (a running playbook is killed and its task
    /// reported failed through the spool).
    async fn stop_tasks(&mut self) {
        self.jobs = None;
        self.stop_worker.cancel();
        if let Some(handle) = self.worker.take() {
            if tokio::time::timeout(WORKER_STOP_TIMEOUT, handle).await.is_err() {
                warn!("the task worker did not stop in time");
            }
        }
    }

    /// Stops heartbeats and tasks and, if connected, starts draining the spool. Returns
    /// whether there is anything left to wait for.
    async fn begin_shutdown(&mut self) -> bool {
        info!("shutting down");
        self.connected_tx.send_replace(None);
        self.stop_heartbeats.cancel();
        // No heartbeat may follow the offline status (a heartbeat means "online").
        if let Some(handle) = self.heartbeats.take() {
            let _ = handle.await;
        }
        self.stop_tasks().await;
        if !self.connected {
            return false;
        }
        self.phase = Phase::Draining(Instant::now() + DRAIN_TIMEOUT);
        self.flush_spool();
        if self.outbox.lock().is_empty() {
            return self.start_disconnect();
        }
        true
    }

    /// Queues `offline` and a disconnect. Returns whether there is a disconnect to wait for.
    fn start_disconnect(&mut self) -> bool {
        self.phase = Phase::Disconnecting(Instant::now() + SHUTDOWN_TIMEOUT);
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
        self.tracker.queued(None);
        if let Err(e) = self.client.try_disconnect() {
            warn!(error = %e, "cannot queue the disconnect");
            return false;
        }
        true
    }
}

impl Renewal {
    /// The identity in use with the pending renewal's key, certificate and CA bundle.
    fn params_with(&self, pending: &Pending) -> Result<rumqttc::Transport, RunError> {
        let (cert, ca) = pending.issued.clone().ok_or(RenewalError::BadAnswer("no certificate yet".into()))?;
        let params =
            ConnectionParams { cert_pem: cert, ca_pem: ca, key_pem: pending.key_pem.clone(), ..self.params.clone() };
        Ok(connection::transport(&params)?)
    }

    /// The broker accepted the new pair: it becomes the identity in use.
    fn commit(&mut self) -> Result<(), RunError> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        let Some((cert, ca)) = pending.issued.clone() else { return Ok(()) };
        let certificate = CertificateFacts::read(&cert).map_err(RenewalError::BadAnswer)?;
        self.params =
            ConnectionParams { cert_pem: cert, ca_pem: ca, key_pem: pending.key_pem.clone(), ..self.params.clone() };
        pending.commit(&self.state_dir)?;
        info!(
            serial = %certificate.serial,
            not_after = %certificate.not_after,
            renew_from = %certificate.due_at(self.share, self.params.appliance_id),
            "certificate renewed"
        );
        self.certificate = certificate;
        self.asked_at = None;
        self.not_before = None;
        self.early = None;
        Ok(())
    }

    /// Forgets the pending renewal; the identity in use stays.
    fn discard(&mut self) {
        if let Some(p) = self.pending.take() {
            if let Err(e) = p.discard() {
                warn!(error = %e, "cannot remove the discarded renewal");
            }
        }
        self.asked_at = None;
    }
}

/// A decode error for the log: a malformed payload's detail can quote its values (which
/// may be secrets), so only its kind is named.
fn describe(e: &DecodeError) -> String {
    match e {
        DecodeError::Malformed { kind, .. } => {
            format!("{kind} payload is not valid JSON of the expected shape")
        }
        other => other.to_string(),
    }
}

/// What a message on a down topic was, for the log.
fn down_kind(channel: DownChannel) -> &'static str {
    match channel {
        DownChannel::Config => "config",
        DownChannel::Task => "task",
        DownChannel::Cert => "cert",
        DownChannel::CertRenew => "cert/renew",
        DownChannel::Receipt => "receipt",
    }
}

/// Which of this appliance's down channels `topic` is; anything else is logged and
/// ignored. Nothing here can fail or panic; payloads are not logged.
fn route(own: ApplianceId, topic: &str, len: usize) -> Option<DownChannel> {
    let shown: String = topic.chars().take(hearth_protocol::topic::MAX_TOPIC_LEN).collect();
    match topic.parse::<Topic>() {
        Ok(t) if t.appliance != own => {
            warn!(topic = %shown, "ignoring a message addressed to another appliance");
            None
        }
        Ok(Topic { channel: Channel::Down(c), .. }) => {
            debug!(kind = down_kind(c), bytes = len, "message received");
            Some(c)
        }
        Ok(_) => {
            warn!(topic = %shown, "ignoring a message on an up topic");
            None
        }
        Err(e) => {
            warn!(topic = %shown, error = %e, "ignoring a message on a topic outside the scheme");
            None
        }
    }
}

/// The heartbeat ticker's inputs.
struct Heartbeats {
    client: AsyncClient,
    topic: String,
    /// The interval in effect; the desired configuration can change it at any time.
    interval: watch::Receiver<Duration>,
    facts: FactsSource,
    /// `Some(generation)` while connected.
    connected: watch::Receiver<Option<u64>>,
    stop: CancellationToken,
}

/// A ticker whose first tick is after `period` (or immediate when `now`).
fn ticker(period: Duration, now: bool) -> tokio::time::Interval {
    let period = period.max(Duration::from_secs(1));
    let start = if now { Instant::now() } else { Instant::now() + period };
    let mut t = tokio::time::interval_at(start, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Sends a heartbeat right after each connect and then every interval while connected; a
/// new interval takes effect at once (the next heartbeat is one new interval away).
async fn heartbeat_loop(mut hb: Heartbeats) {
    let mut seq: u64 = 0;
    let mut interval_open = true;
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
        let mut period = *hb.interval.borrow_and_update();
        let mut ticks = ticker(period, true);
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
                changed = hb.interval.changed(), if interval_open => {
                    if changed.is_err() {
                        interval_open = false;
                        continue;
                    }
                    let new = *hb.interval.borrow_and_update();
                    if new != period {
                        period = new;
                        ticks = ticker(period, false);
                        debug!(interval_s = period.as_secs(), "heartbeat interval changed");
                    }
                }
                _ = ticks.tick() => send_heartbeat(&hb, &mut seq),
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
    match connection::try_heartbeat(&hb.client, &hb.topic, &facts, next) {
        Ok(()) => *seq = next,
        Err(e) => warn!(error = %e, "skipping this heartbeat"),
    }
}

#[cfg(test)]
mod tests {
    use hearth_protocol::Secret;
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn messages_never_panic() {
        let me = ApplianceId::new();
        assert_eq!(route(me, &Topic::new(me, DownChannel::Task).to_string(), 10), Some(DownChannel::Task));
        assert_eq!(route(me, &Topic::new(ApplianceId::new(), DownChannel::Config).to_string(), 10,), None);
        assert_eq!(route(me, &Topic::new(me, UpChannel::Heartbeat).to_string(), 10), None);
        assert_eq!(route(me, "garbage/ü/\u{0}", 0), None);
        assert_eq!(route(me, &"x".repeat(10_000), 0), None);
    }

    #[tokio::test]
    async fn run_without_enrollment_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let config = AgentConfig { state_dir: tmp.path().to_path_buf(), ..Default::default() };
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().starts_with("not enrolled: "), "{err}");

        let config = AgentConfig { heartbeat_interval_s: 0, ..Default::default() };
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "setting `heartbeat_interval_s`: must be at least 1");
    }

    #[tokio::test]
    async fn a_missing_or_invalid_catalog_is_a_clear_startup_error() {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("state");
        State {
            dir: state_dir.clone(),
            appliance_id: ApplianceId::new(),
            broker_host: "localhost".into(),
            broker_port: 8883,
            enrolled_at: OffsetDateTime::now_utc(),
            api_url: None,
            key_pem: Secret::new("k".into()),
            cert_pem: "c".into(),
            ca_pem: "a".into(),
        }
        .save()
        .unwrap();
        let ansible_dir = tmp.path().join("ansible");
        let config = AgentConfig { state_dir, ansible_dir: ansible_dir.clone(), ..Default::default() };
        let catalog = ansible_dir.join("catalog.json");

        let err = run(config.clone(), CancellationToken::new()).await.unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{}: cannot read the action catalog: ", catalog.display())),
            "{err}"
        );

        std::fs::create_dir_all(&ansible_dir).unwrap();
        std::fs::write(&catalog, "{\"version\": 1}").unwrap();
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: invalid action catalog: ", catalog.display())), "{err}");
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
            interval: watch::channel(Duration::from_secs(10)).1,
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

    #[tokio::test(start_paused = true)]
    async fn heartbeat_interval_changes_at_runtime() {
        let options = rumqttc::MqttOptions::new("test", "localhost", 1883);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, rx) = watch::channel(Some(1));
        let (interval_tx, interval_rx) = watch::channel(Duration::from_secs(10));
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat_loop(Heartbeats {
            client,
            topic: "t".into(),
            interval: interval_rx,
            facts: FactsSource::default(),
            connected: rx,
            stop: stop.clone(),
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(queued_seqs(&mut eventloop), [1]);
        interval_tx.send_replace(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(queued_seqs(&mut eventloop), [2, 3], "every 2 s from the change");
        interval_tx.send_replace(Duration::from_secs(100));
        tokio::time::sleep(Duration::from_secs(99)).await;
        assert_eq!(queued_seqs(&mut eventloop), Vec::<u64>::new());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(queued_seqs(&mut eventloop), [4]);
        drop(tx);
        task.await.unwrap();
    }
}
