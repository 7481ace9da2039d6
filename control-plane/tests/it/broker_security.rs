//! The shipped broker configuration, checked through a real Mosquitto: mutual TLS is
//! required, and an appliance can touch only its own topics.

use std::time::Duration;

use hearth_control_plane::pki::files;
use hearth_protocol::{ApplianceId, DownChannel, Topic, TopicFilter, UpChannel};

use crate::support::mqtt::{connect, control_plane_options, options, Probe};
use crate::support::*;

async fn as_appliance(pki: &Pki, broker: &Broker, id: ApplianceId) -> Probe {
    let (cert, key) = pki.appliance_cert(id);
    connect(options(broker, &id.to_string(), &pki.read(files::CA_CERT), Some((cert.as_bytes(), key.as_bytes()))))
        .await
        .expect("appliance connects")
}

async fn as_control_plane(pki: &Pki, broker: &Broker) -> Probe {
    connect(control_plane_options(pki, broker, "cp-probe")).await.expect("control plane connects")
}

#[tokio::test]
async fn an_appliance_cannot_publish_as_another() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let (a, b) = (ApplianceId::new(), ApplianceId::new());
    let mut cp = as_control_plane(&pki, &broker).await;
    assert!(!cp
        .subscribe(&TopicFilter::AllUp.shared("hearth-cp"))
        .await
        .contains(&rumqttc::SubscribeReasonCode::Failure));
    let appliance_a = as_appliance(&pki, &broker, a).await;

    let forged = Topic::new(b, UpChannel::Heartbeat).to_string();
    let forged_status = Topic::new(b, UpChannel::Status).to_string();
    let own = Topic::new(a, UpChannel::Heartbeat).to_string();
    appliance_a.publish(&forged, b"forged".to_vec()).await;
    appliance_a.publish(&forged_status, b"forged".to_vec()).await;
    // Publishing to a down topic (pretending to be the control plane) is refused too.
    appliance_a.publish(&Topic::new(a, DownChannel::Task).to_string(), b"forged".to_vec()).await;
    appliance_a.publish(&own, b"marker".to_vec()).await;

    // Messages from one client arrive in order: once the marker is here, the forged ones
    // would have been too.
    let got = cp.drain(Duration::from_millis(1500)).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, [own.as_str()], "only the appliance's own topic gets through");
}

#[tokio::test]
async fn an_appliance_reads_only_its_own_down_topics() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let (a, b) = (ApplianceId::new(), ApplianceId::new());
    let cp = as_control_plane(&pki, &broker).await;
    let mut appliance_a = as_appliance(&pki, &broker, a).await;

    let codes = appliance_a.subscribe(&TopicFilter::Down(a).to_string()).await;
    assert!(!codes.contains(&rumqttc::SubscribeReasonCode::Failure), "{codes:?}");
    for filter in
        [TopicFilter::Down(b).to_string(), "hearth/v1/+/down/#".into(), "#".into(), TopicFilter::AllUp.to_string()]
    {
        // Mosquitto may grant the subscription and filter deliveries by the ACL, or
        // refuse it; either way nothing of another appliance's may arrive (checked below).
        appliance_a.subscribe(&filter).await;
    }

    cp.publish(&Topic::new(b, DownChannel::Task).to_string(), b"for b".to_vec()).await;
    cp.publish(&Topic::new(b, UpChannel::Heartbeat).to_string(), b"b's up".to_vec()).await;
    let mine = Topic::new(a, DownChannel::Task).to_string();
    cp.publish(&mine, b"for a".to_vec()).await;

    let got = appliance_a.drain(Duration::from_millis(1500)).await;
    assert_eq!(got, [(mine, b"for a".to_vec())], "a sees only its own down messages");
}

#[tokio::test]
async fn clients_without_a_fleet_certificate_cannot_connect() {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let ca = pki.read(files::CA_CERT);

    let err = connect(options(&broker, "anonymous", &ca, None)).await.err().expect("no certificate is refused");
    assert!(!err.is_empty());

    // A certificate from another CA, even with a valid-looking appliance id.
    let other = Pki::new();
    let (cert, key) = other.appliance_cert(ApplianceId::new());
    let err = connect(options(&broker, "stranger", &ca, Some((cert.as_bytes(), key.as_bytes()))))
        .await
        .err()
        .expect("a foreign CA is refused");
    assert!(!err.is_empty());

    // The broker itself must present a certificate from the fleet CA: a client trusting
    // another CA refuses to talk to it.
    let (cert, key) = pki.appliance_cert(ApplianceId::new());
    let err =
        connect(options(&broker, "wrong-trust", &other.read(files::CA_CERT), Some((cert.as_bytes(), key.as_bytes()))))
            .await
            .err()
            .expect("broker certificate not trusted");
    assert!(!err.is_empty());

    // And the real thing works.
    let (cert, key) = pki.appliance_cert(ApplianceId::new());
    assert!(connect(options(&broker, "ok", &ca, Some((cert.as_bytes(), key.as_bytes())))).await.is_ok());
}
