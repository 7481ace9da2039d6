//! Who can connect to the broker as whom, with a third-party client (`mosquitto_sub`,
//! `mosquitto_pub`) against the shipped configuration: on the public listener a client's
//! id is its certificate's CN, so an appliance can take over neither the control plane's
//! session nor another appliance's; the internal listener accepts only the service CA.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hearth_control_plane::pki::{files, CONTROL_PLANE_CN};
use hearth_protocol::{ApplianceId, DownChannel, Topic, TopicFilter};
use rumqttc::{QoS, SubscribeReasonCode};
use sqlx::PgPool;

use crate::support::mqtt::{self, connect, control_plane_options, options, service_options};
use crate::support::*;

/// A client certificate and key written to files, as a third-party client takes them.
struct CertFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn new(cert: &str, key: &str) -> CertFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (write(dir.path(), "cert.pem", cert), write(dir.path(), "key.pem", key));
        CertFiles { _dir: dir, cert, key }
    }

    fn appliance(pki: &Pki, id: ApplianceId) -> CertFiles {
        let (cert, key) = pki.appliance_cert(id);
        CertFiles::new(&cert, &key)
    }
}

/// Runs `mosquitto_sub` for `seconds` (or until it has `count` messages) with a persistent
/// session (`-c`) and QoS 1; fails the test if the client is not installed.
async fn mosquitto_sub(pki: &Pki, port: u16, creds: &CertFiles, client_id: &str, topic: &str, seconds: u32) -> Output {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", client_id, "-c", "-q", "1", "-v"])
        .args(["-t", topic, "-W", &seconds.to_string()])
        .arg("--cafile")
        .arg(pki.path(files::CA_CERT))
        .arg("--cert")
        .arg(&creds.cert)
        .arg("--key")
        .arg(&creds.key);
    tokio::task::spawn_blocking(move || {
        cmd.output().expect("mosquitto_sub must be installed (apt-get install mosquitto-clients)")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The broker's log lines saying a client took an existing client id over.
fn takeovers(broker: &Broker, client_id: &str) -> usize {
    broker.log().lines().filter(|l| l.contains(&format!("Client {client_id} already connected"))).count()
}

/// Whether the broker logged a connection whose client id is `client_id`.
fn connected_as(broker: &Broker, client_id: &str) -> bool {
    broker.log().lines().any(|l| l.contains("New client connected") && l.contains(&format!(" as {client_id} ")))
}

/// Finding 1: an appliance connecting with the control plane's client id used to close the
/// control plane's connection (and `/readyz` reported the broker unavailable).
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_appliance_cannot_knock_the_control_plane_off_the_broker(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let config = test_config(&pki, &broker);
    let cp_id = config.mqtt_client_id();
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let ready = || async {
        let r = cp.http.get(format!("{}/readyz", cp.url)).send().await.ok()?;
        (r.status() == 200).then_some(())
    };
    eventually(Duration::from_secs(10), "the control plane ready", ready).await;

    // Watch readiness through the whole attack.
    let unready = Arc::new(AtomicBool::new(false));
    let watch = {
        let (http, url, unready) = (cp.http.clone(), format!("{}/readyz", cp.url), unready.clone());
        tokio::spawn(async move {
            loop {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => unready.store(true, Ordering::SeqCst),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let (t, key) = tenant(&pool, "acme").await;
    let (attacker, _) = appliance(&pool, t, "attacker").await;
    let creds = CertFiles::appliance(&pki, attacker);
    let out = mosquitto_sub(&pki, broker.port, &creds, &cp_id, "x", 3).await;
    // On the internal listener its certificate is not even accepted.
    let out_internal = mosquitto_sub(&pki, broker.service_port, &creds, &cp_id, "x", 2).await;
    watch.abort();

    assert_eq!(takeovers(&broker, &cp_id), 0, "the control plane's session was taken over:\n{}", broker.log());
    assert!(!unready.load(Ordering::SeqCst), "/readyz reported unavailable during the attack");
    // The appliance was let in (it is a valid appliance), under its own id only.
    assert!(connected_as(&broker, &attacker.to_string()), "{}\n{}", text(&out), broker.log());
    assert!(!out_internal.status.success(), "{}", text(&out_internal));
    assert_eq!(metric(&cp.metrics().await, "hearth_mqtt_connected"), Some(1.0));
    // And its subscription still delivers: an appliance's status reaches the database.
    let (victim, _) = appliance(&pool, t, "box").await;
    let _online = mqtt::appliance_online(&pki, &broker, victim).await;
    wait_status(&cp, &key, victim, "online").await;
}

/// Finding 2: an appliance connecting with another appliance's id (persistent session) used
/// to disconnect it and consume the QoS 1 messages queued for it.
#[tokio::test]
async fn an_appliance_cannot_take_over_another_appliances_session() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let (attacker, victim) = (ApplianceId::new(), ApplianceId::new());
    let creds = CertFiles::appliance(&pki, attacker);
    let cp = connect(control_plane_options(&pki, &broker, "cp-probe")).await.expect("control plane connects");
    let down = Topic::new(victim, DownChannel::Task).to_string();

    // The victim has a persistent session and is offline: a QoS 1 message waits for it.
    drop(mqtt::appliance_online(&pki, &broker, victim).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cp.publish(&down, b"queued".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The attacker resumes "its" session with the victim's id and waits for the message.
    let out =
        mosquitto_sub(&pki, broker.port, &creds, &victim.to_string(), &TopicFilter::Down(victim).to_string(), 3).await;
    assert!(out.stdout.is_empty(), "the attacker received the victim's messages: {}", text(&out));

    // The victim comes back and gets what was queued for it.
    let mut back = mqtt::appliance_online(&pki, &broker, victim).await;
    assert_eq!(
        back.next_on(&down, Duration::from_secs(5)).await.as_deref(),
        Some(&b"queued"[..]),
        "the message queued for the victim is gone:\n{}",
        broker.log()
    );
    assert!(connected_as(&broker, &attacker.to_string()), "{}\n{}", text(&out), broker.log());

    // While it is online, the same attack does not disconnect it: it keeps receiving on the
    // same connection.
    let out = mosquitto_sub(&pki, broker.port, &creds, &victim.to_string(), "x", 2).await;
    assert!(out.stdout.is_empty(), "{}", text(&out));
    cp.publish(&down, b"after".to_vec()).await;
    assert_eq!(back.next_on(&down, Duration::from_secs(5)).await.as_deref(), Some(&b"after"[..]));
    assert_eq!(takeovers(&broker, &victim.to_string()), 0, "{}", broker.log());
}

/// The internal listener trusts the service CA only: no appliance certificate, and no fleet
/// CA certificate at all (even one naming the control plane), gets in; the service
/// certificate does not get in on the public listener either.
#[tokio::test]
async fn only_the_service_ca_reaches_the_internal_listener() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let ca = pki.read(files::CA_CERT);

    let (cert, key) = pki.appliance_cert(ApplianceId::new());
    let refused = connect(service_options(&broker, "hearth-cp-x", &ca, Some((cert.as_bytes(), key.as_bytes())))).await;
    assert!(refused.is_err(), "an appliance certificate reached the internal listener");

    let (cert, key) = fleet_ca_certificate(&pki, CONTROL_PLANE_CN);
    let refused = connect(service_options(&broker, "hearth-cp-x", &ca, Some((cert.as_bytes(), key.as_bytes())))).await;
    assert!(refused.is_err(), "a fleet CA certificate reached the internal listener");

    let (cert, key) = (pki.read(files::CONTROL_PLANE_CERT), pki.read(files::CONTROL_PLANE_KEY));
    let refused = connect(options(&broker, "hearth-cp-x", &ca, Some((&cert, &key)))).await;
    assert!(refused.is_err(), "the service certificate reached the public listener");

    connect(control_plane_options(&pki, &broker, "hearth-cp-x")).await.expect("the control plane connects");
}

/// Finding 7, the broker's side: Mosquitto's ACL file does not check SUBSCRIBE, so it
/// grants a subscription to another appliance's topics (QoS 1) and filters on delivery:
/// nothing of the other appliance's ever arrives, queued or live.
#[tokio::test]
async fn a_refused_subscription_is_granted_but_delivers_nothing() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let (a, b) = (ApplianceId::new(), ApplianceId::new());
    let cp = connect(control_plane_options(&pki, &broker, "cp-probe")).await.expect("control plane connects");
    let (cert, key) = pki.appliance_cert(a);
    let mut opts = options(&broker, &a.to_string(), &pki.read(files::CA_CERT), Some((cert.as_bytes(), key.as_bytes())));
    opts.set_clean_session(false);
    let mut probe = connect(opts).await.expect("appliance connects");
    probe.subscribe(&TopicFilter::Down(a).to_string()).await;

    let codes = probe.subscribe(&TopicFilter::Down(b).to_string()).await;
    assert_eq!(
        codes,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "the shipped broker grants refused subscriptions; the security section of the architecture says so"
    );
    let theirs = Topic::new(b, DownChannel::Task).to_string();
    let mine = Topic::new(a, DownChannel::Task).to_string();
    cp.publish(&theirs, b"for b".to_vec()).await;
    cp.publish(&mine, b"marker".to_vec()).await;
    let got = probe.drain(Duration::from_millis(1500)).await;
    assert_eq!(got, [(mine, b"marker".to_vec())], "nothing of b's arrives");
}

/// A client certificate from the fleet CA with any CN (the CA never issues such a
/// certificate; this checks the broker would not trust it on the internal listener anyway).
fn fleet_ca_certificate(pki: &Pki, cn: &str) -> (String, String) {
    let read = |name: &str| std::fs::read_to_string(pki.path(name)).expect("pki file");
    let ca_key = rcgen::KeyPair::from_pem(&read(files::CA_KEY)).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(files::CA_CERT), ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (params.signed_by(&key, &issuer).expect("sign").pem(), key.serialize_pem())
}
