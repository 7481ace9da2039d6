//! The control plane's MQTT connection settings: mutual TLS with its service certificate,
//! a persistent session, packet limits from the protocol. The ingest's session and the
//! revocation's takeover connections are both built here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("setting `{setting}`: cannot read {path}: {source} (run `hearth-control-plane pki init` or set the path)")]
    Read { setting: &'static str, path: PathBuf, source: std::io::Error },
    #[error("MQTT TLS material is not usable: {0}")]
    Tls(#[from] hearth_protocol::tls::TlsError),
}

/// Connection options for the control plane's mutual-TLS MQTT session.
pub fn options(cfg: &Config) -> Result<MqttOptions, MqttSetupError> {
    let read = |setting: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| MqttSetupError::Read { setting, path: path.to_owned(), source })
    };
    let ca = cfg.mqtt_ca_cert();
    read("mqtt.ca_cert", &ca)?;
    let cert = read("mqtt.client_cert", &cfg.mqtt_client_cert())?;
    let key = read("mqtt.client_key", &cfg.mqtt_client_key())?;
    // The CA file is read again at each handshake: the broker's certificate changes CA when
    // a fleet CA rotation finishes, and a replica that has been up since then must follow.
    let tls = hearth_protocol::tls::mtls_client_config_reloading(&ca, &cert, &key)?;

    let mut opts = MqttOptions::new(cfg.mqtt_client_id(), cfg.mqtt.host.clone(), cfg.mqtt.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    // A clean session. Replicas share `up` traffic through a shared subscription, and a
    // broker keeps handing a disconnected member with a persistent session its share:
    // QoS 0 heartbeats dropped, QoS 1 messages queued for a replica that may never come back
    // under that client id (a killed pod's successor has another name), so one dead replica
    // made 1/N of the fleet's heartbeats vanish and appliances flap offline (found by the
    // fault suite, deploy/faults, `replica-kill`). With a clean session the broker forgets a
    // gone replica at once and the survivors get everything; what it held unacknowledged is
    // not lost: agents send task events, results and configuration reports again until the
    // control plane's receipt names them (docs/architecture.md, "Tasks").
    opts.set_clean_session(true);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s));
    let max = hearth_protocol::codec::MAX_PAYLOAD_BYTES + 1024;
    opts.set_max_packet_size(max, max);
    opts.set_inflight(100);
    // QoS 1 messages are acknowledged only once stored (see `batch`).
    opts.set_manual_acks(true);
    Ok(opts)
}
