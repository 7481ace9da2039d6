//! The whole agent against a real Mosquitto (mutual TLS, certificates made here): a task
//! run while the broker is down is spooled and delivered after it comes back, tasks and
//! configuration arrive on down topics and are answered on up topics, a redelivered task
//! runs once, and a shutdown during a playbook reports it failed before going offline.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_agent::tasks::ledger::{Ledger, TaskState};
use hearth_agent::{AgentConfig, State};
use hearth_protocol::{
    encode, ApplianceId, Channel, ConfigDocument, DownChannel, Outcome, PresenceState, ProtocolVersion, TaskDispatch,
    TaskEventKind, TaskId, Topic, UpMessage,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::json;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{dispatch, require_ansible, Fixture, SLOW};

const WAIT: Duration = Duration::from_secs(60);

/// A CA, a broker certificate for 127.0.0.1 and client certificates.
struct Pki {
    dir: TempDir,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let issuer = Issuer::new(params, key);
        let pki = Pki { dir, ca_pem, issuer };
        let (cert, key) = pki.leaf("broker", &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("broker.pem"), cert).unwrap();
        std::fs::write(pki.path("broker.key"), key).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (certificate, key) PEMs.
    fn leaf(&self, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Mosquitto with persistence, so sessions and their queued messages survive a restart.
struct Broker {
    port: u16,
    conf: PathBuf,
    data: TempDir,
    child: Option<Child>,
}

impl Broker {
    fn new(pki: &Pki) -> Broker {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = data.path().display();
        let conf = data.path().join("mosquitto.conf");
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous false\npersistence true\n\
                 persistence_location {d}/\nuser {user}\nlog_dest file {d}/mosquitto.log\n\
                 log_type all\nconnection_messages true\nmax_packet_size 263168\n\
                 listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\nuse_identity_as_username true\n",
                pki.path("ca.pem").display(),
                pki.path("broker.pem").display(),
                pki.path("broker.key").display(),
            ),
        )
        .unwrap();
        Broker { port, conf, data, child: None }
    }

    fn start(&mut self) {
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (Mosquitto saves its persistence file) and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client standing in for the control plane: a persistent session subscribed to every
/// up topic; it reconnects by itself.
struct Observer {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    /// Received and not yet asked for, in arrival order.
    seen: Vec<UpMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    async fn connect(pki: &Pki, broker: &Broker) -> Observer {
        let (cert, key) = pki.leaf("observer", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let tls =
            hearth_protocol::tls::mtls_client_config(pki.ca_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap();
        let mut o = MqttOptions::new("observer", "127.0.0.1", broker.port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))))
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(300 * 1024, 300 * 1024);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
        let receipts = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Like the control plane: confirm what was "stored" with a receipt.
                        if let Some((topic, receipt)) = receipt_for(&p.topic, &p.payload) {
                            let _ = receipts.try_publish(topic, QoS::AtLeastOnce, false, receipt);
                        }
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe("hearth/v1/+/up/#", QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), subscribed.recv()).await.expect("subscribed in time");
        Observer { client, rx, seen: Vec::new(), task }
    }

    /// The first up message matching `want` not asked for yet, decoded; others are kept
    /// for later calls.
    async fn next(&mut self, what: &str, mut want: impl FnMut(&UpMessage) -> bool) -> UpMessage {
        if let Some(i) = self.seen.iter().position(&mut want) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (topic, payload) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
                .expect("observer running");
            let Ok(Topic { channel: Channel::Up(channel), .. }) = topic.parse::<Topic>() else {
                continue;
            };
            let message = UpMessage::decode(channel, &payload).unwrap();
            if want(&message) {
                return message;
            }
            if !matches!(message, UpMessage::Heartbeat(_)) {
                self.seen.push(message);
            }
        }
    }

    async fn result(&mut self, task: TaskId) -> hearth_protocol::TaskResult {
        match self.next("task result", |m| matches!(m, UpMessage::TaskResult(r) if r.task_id == task)).await {
            UpMessage::TaskResult(r) => r,
            _ => unreachable!(),
        }
    }

    async fn send(&self, topic: Topic, payload: Vec<u8>) {
        self.client.publish(topic.to_string(), QoS::AtLeastOnce, false, payload).await.unwrap();
    }
}

/// The receipt the control plane would send for an up message, and where.
fn receipt_for(topic: &str, payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let Ok(Topic { appliance, channel: Channel::Up(channel) }) = topic.parse::<Topic>() else {
        return None;
    };
    let mut receipt = hearth_protocol::Receipt::default();
    match UpMessage::decode(channel, payload).ok()? {
        UpMessage::TaskEvent(e) => receipt.events.push(hearth_protocol::EventRef { task_id: e.task_id, seq: e.seq }),
        UpMessage::TaskResult(r) => receipt.results.push(r.task_id),
        UpMessage::ConfigApplied(r) => receipt.config_applied.push(r.version),
        _ => return None,
    }
    let topic = Topic::new(appliance, hearth_protocol::DownChannel::Receipt).to_string();
    Some((topic, hearth_protocol::encode(&receipt).ok()?))
}

fn spool_files(state: &Path) -> usize {
    std::fs::read_dir(state.join("spool"))
        .map(|d| {
            d.filter(|e| e.as_ref().map(|e| e.file_name().to_string_lossy().ends_with(".json")).unwrap_or(false))
                .count()
        })
        .unwrap_or(0)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "not {what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_agent_runs_tasks_and_applies_configuration_over_mqtt() {
    require_ansible();
    let _turn = SLOW.lock().await;
    let fx = Fixture::new();
    let pki = Pki::new();
    let mut broker = Broker::new(&pki);

    // The observer's session (and subscription) exists before the agent's first message.
    broker.start();
    drop(Observer::connect(&pki, &broker).await);
    broker.stop();

    let id = ApplianceId::new();
    let (cert, key) = pki.leaf(&id.to_string(), &[], ExtendedKeyUsagePurpose::ClientAuth);
    State {
        dir: fx.state.clone(),
        appliance_id: id,
        broker_host: "127.0.0.1".into(),
        broker_port: broker.port,
        enrolled_at: OffsetDateTime::now_utc(),
        api_url: None,
        key_pem: key.into(),
        cert_pem: cert,
        ca_pem: pki.ca_pem.clone(),
    }
    .save()
    .unwrap();

    // A task received before a restart, run while the broker is down.
    let offline = dispatch("test.write", json!({"name": "offline"}), WAIT * 5);
    let ledger = Ledger::open(&fx.state.join("tasks")).unwrap();
    ledger.record_received(&offline).unwrap();

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(hearth_agent::run(
        AgentConfig {
            state_dir: fx.state.clone(),
            heartbeat_interval_s: 1,
            backoff_initial_ms: 100,
            backoff_max_ms: 300,
            ansible_dir: fx.ansible.clone(),
            hearth_root: fx.root.clone(),
            manage_services: false,
            ..Default::default()
        },
        shutdown.clone(),
    ));
    eventually("the offline task done", || {
        ledger.get(offline.task_id).unwrap().is_some_and(|r| r.state == TaskState::Done)
    })
    .await;
    let spooled = spool_files(&fx.state);
    assert!(spooled >= 3, "events and the result wait in the spool: {spooled}");

    // The broker comes back: the spool is delivered and acknowledged.
    broker.start();
    let mut obs = Observer::connect(&pki, &broker).await;
    let mut seqs = Vec::new();
    let result = loop {
        match obs
            .next("offline task messages", |m| match m {
                UpMessage::TaskEvent(e) => e.task_id == offline.task_id,
                UpMessage::TaskResult(r) => r.task_id == offline.task_id,
                _ => false,
            })
            .await
        {
            UpMessage::TaskEvent(e) => seqs.push(e.seq),
            UpMessage::TaskResult(r) => break r,
            _ => unreachable!(),
        }
    };
    assert_eq!(result.outcome, Outcome::Succeeded, "{:?}", result.message);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "in order, oldest first");
    assert!(seqs.len() >= 2);
    eventually("the spool acknowledged", || spool_files(&fx.state) == 0).await;
    let request = obs.next("config request", |m| matches!(m, UpMessage::ConfigRequest(_))).await;
    assert_eq!(
        request,
        UpMessage::ConfigRequest(hearth_protocol::ConfigRequest { v: ProtocolVersion, applied_version: None })
    );

    // A task sent now runs; sent again, it is answered without running.
    let online = dispatch("test.write", json!({"name": "online"}), WAIT * 5);
    let task_topic = Topic::new(id, DownChannel::Task);
    obs.send(task_topic, encode(&online).unwrap()).await;
    let first = obs.result(online.task_id).await;
    assert_eq!(first.outcome, Outcome::Succeeded, "{:?}", first.message);
    obs.send(task_topic, encode(&online).unwrap()).await;
    let second = obs.result(online.task_id).await;
    assert_eq!(second, first);
    assert_eq!(fx.runs(), ["offline False", "online False"]);

    // An off-catalog task is rejected, garbage is dropped.
    obs.send(task_topic, b"{\"v\":1,\"nonsense\":true}".to_vec()).await;
    let off: TaskDispatch = dispatch("users.add", json!({"username": "alice"}), WAIT);
    obs.send(task_topic, encode(&off).unwrap()).await;
    assert_eq!(obs.result(off.task_id).await.outcome, Outcome::Rejected);

    // Configuration: applied, stored and reported.
    let doc = ConfigDocument {
        v: ProtocolVersion,
        version: 1,
        document: json!({"agent": {"heartbeat_interval_s": 2}, "motd": "hello"}).as_object().cloned().unwrap(),
    };
    obs.send(Topic::new(id, DownChannel::Config), encode(&doc).unwrap()).await;
    let applied = obs.next("config applied", |m| matches!(m, UpMessage::ConfigApplied(_))).await;
    let UpMessage::ConfigApplied(applied) = applied else { unreachable!() };
    assert_eq!((applied.version, applied.outcome), (1, Outcome::Succeeded), "{applied:?}");
    assert!(fx.state.join("config/applied.json").exists());

    // The broker goes away in the middle of a task: nothing is lost, every event and the
    // result arrive (some perhaps twice), and the spool ends empty.
    let flaky = dispatch("test.write", json!({"name": "flaky"}), WAIT * 5);
    obs.send(task_topic, encode(&flaky).unwrap()).await;
    obs.next(
        "the flaky task started",
        |m| matches!(m, UpMessage::TaskEvent(e) if e.task_id == flaky.task_id && e.kind == TaskEventKind::Started),
    )
    .await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.start();
    let mut seqs = std::collections::BTreeSet::from([2]); // Started, taken above
    let result = loop {
        match obs
            .next("flaky task messages", |m| match m {
                UpMessage::TaskEvent(e) => e.task_id == flaky.task_id,
                UpMessage::TaskResult(r) => r.task_id == flaky.task_id,
                _ => false,
            })
            .await
        {
            UpMessage::TaskEvent(e) => {
                seqs.insert(e.seq);
            }
            UpMessage::TaskResult(r) => break r,
            _ => unreachable!(),
        }
    };
    assert_eq!(result.outcome, Outcome::Succeeded, "{:?}", result.message);
    let last = *seqs.last().unwrap();
    assert_eq!(seqs, (1..=last).collect(), "no event lost");
    assert!(last >= 8, "{seqs:?}");
    eventually("the spool acknowledged after the broker restart", || spool_files(&fx.state) == 0).await;

    // Shutdown during a playbook: the task is reported failed before `offline`.
    let slow = dispatch("test.slow", json!({}), WAIT * 5);
    obs.send(task_topic, encode(&slow).unwrap()).await;
    obs.next(
        "the slow task started",
        |m| matches!(m, UpMessage::TaskEvent(e) if e.task_id == slow.task_id && e.kind == TaskEventKind::TaskStarted),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    shutdown.cancel();
    let r = obs.result(slow.task_id).await;
    assert_eq!((r.outcome, r.message.as_deref()), (Outcome::Failed, Some("agent shutting down")));
    let offline_status =
        obs.next("offline status", |m| matches!(m, UpMessage::Status(s) if s.state == PresenceState::Offline)).await;
    assert!(matches!(offline_status, UpMessage::Status(_)));
    tokio::time::timeout(Duration::from_secs(30), agent).await.expect("the agent stops").unwrap().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(15), "{:?}", stopping.elapsed());
    assert_eq!(spool_files(&fx.state), 0, "drained before disconnecting");
    broker.stop();
}
