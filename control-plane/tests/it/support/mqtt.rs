//! Raw MQTT clients for tests: connect with any certificate (or none) and watch what
//! arrives.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use hearth_control_plane::pki::files;
use hearth_protocol::*;

use super::{Broker, Pki};

/// A connected test client and the messages it receives.
pub struct Probe {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pub suback: mpsc::UnboundedReceiver<Vec<rumqttc::SubscribeReasonCode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for the broker's public listener (the appliances').
pub fn options(broker: &Broker, id: &str, ca: &[u8], cert_key: Option<(&[u8], &[u8])>) -> MqttOptions {
    options_on(broker.port, id, ca, cert_key)
}

/// Options for the broker's internal listener (the control plane's).
pub fn service_options(broker: &Broker, id: &str, ca: &[u8], cert_key: Option<(&[u8], &[u8])>) -> MqttOptions {
    options_on(broker.service_port, id, ca, cert_key)
}

/// The control plane's own identity (service CA certificate) on the internal listener.
pub fn control_plane_options(pki: &Pki, broker: &Broker, id: &str) -> MqttOptions {
    let (cert, key) = (pki.read(files::CONTROL_PLANE_CERT), pki.read(files::CONTROL_PLANE_KEY));
    service_options(broker, id, &pki.read(files::CA_CERT), Some((&cert, &key)))
}

fn options_on(port: u16, id: &str, ca: &[u8], cert_key: Option<(&[u8], &[u8])>) -> MqttOptions {
    let tls = match cert_key {
        Some((cert, key)) => hearth_protocol::tls::mtls_client_config(ca, cert, key).expect("tls"),
        None => hearth_protocol::tls::client_config(ca).expect("tls"),
    };
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// Connects and returns once the broker accepted the connection, or the error it gave.
pub async fn connect(opts: MqttOptions) -> Result<Probe, String> {
    let (client, mut eventloop) = AsyncClient::new(opts, 32);
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => return Ok(()),
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Err(format!("refused: {:?}", a.code)),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    first?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (stx, suback) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    let _ = stx.send(s.return_codes);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Ok(Probe { client, rx, suback, task })
}

impl Probe {
    pub async fn subscribe(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
        tokio::time::timeout(Duration::from_secs(5), self.suback.recv()).await.expect("suback in time").expect("suback")
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("publish");
    }

    /// The next message on `topic`, skipping others, within `timeout`.
    pub async fn next_on(&mut self, topic: &str, timeout: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(timeout, async {
            while let Some((t, p)) = self.rx.recv().await {
                if t == topic {
                    return Some(p);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Every message that arrives within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(window, async {
            while let Some(m) = self.rx.recv().await {
                out.push(m);
            }
        })
        .await;
        out
    }
}

/// An appliance played by the test: connects with its certificate, announces itself
/// online and listens on its down topics.
pub async fn appliance_online(pki: &Pki, broker: &Broker, id: ApplianceId) -> Probe {
    let (cert, key) = pki.appliance_cert(id);
    appliance_online_as(pki, broker, id, (&cert, &key)).await
}

/// [`appliance_online`] with a given certificate and key (PEM).
pub async fn appliance_online_as(pki: &Pki, broker: &Broker, id: ApplianceId, cert_key: (&str, &str)) -> Probe {
    let (cert, key) = cert_key;
    let mut opts = options(broker, &id.to_string(), &pki.read(files::CA_CERT), Some((cert.as_bytes(), key.as_bytes())));
    opts.set_clean_session(false);
    let mut probe = connect(opts).await.expect("appliance connects");
    probe.subscribe(&TopicFilter::Down(id).to_string()).await;
    let online = Status {
        v: ProtocolVersion,
        state: PresenceState::Online,
        session: SessionId::new(),
        at: time::OffsetDateTime::now_utc(),
    };
    probe.publish(&Topic::new(id, UpChannel::Status).to_string(), encode(&online).expect("encode")).await;
    probe
}
