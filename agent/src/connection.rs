//! The agent's MQTT connection: settings (mutual TLS with the enrolled identity, client id =
//! appliance id, a persistent session, and a retained `offline` last will that carries the
//! connection's [`SessionId`]) and the pieces of its life every client of the broker that
//! acts as an appliance shares — the real agent ([`crate::run`]) and the fleet simulator
//! ([`crate::sim`]): what is sent on every connect ([`announce`]), the fresh session before
//! every reconnect ([`renew_session`]), what is forgotten when a connection drops
//! ([`forget_unsent`]), and the heartbeat publish ([`try_heartbeat`]).

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::codec::MAX_PAYLOAD_BYTES;
use hearth_protocol::tls::{mtls_client_config, TlsError};
use hearth_protocol::{
    encode, ApplianceId, ConfigRequest, EncodeError, PresenceState, ProtocolVersion, Secret, SessionId, Status, Topic,
    TopicFilter, UpChannel,
};
use rumqttc::{AsyncClient, ClientError, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS, Request};
use rumqttc::{TlsConfiguration, Transport};
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::facts::Facts;

/// Room for the fixed header, topic and packet id on top of the largest payload.
pub const PACKET_OVERHEAD: usize = 4 * 1024;

/// How many requests (publishes, subscribes) may wait for the event loop.
pub const REQUEST_CHANNEL_CAPACITY: usize = 64;

/// Could not build the connection settings.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot encode the last will: {0}")]
    Encode(#[from] EncodeError),
}

/// Everything needed to reach the broker as this appliance.
#[derive(Debug, Clone)]
pub struct ConnectionParams {
    pub appliance_id: ApplianceId,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub ca_pem: String,
    pub cert_pem: String,
    /// The appliance's private key (PEM).
    pub key_pem: Secret<String>,
}

/// A status message for this connection, stamped now.
pub fn status(state: PresenceState, session: SessionId) -> Status {
    Status { v: ProtocolVersion, state, session, at: OffsetDateTime::now_utc() }
}

/// The retained `offline` status the broker publishes if the connection `session` drops.
pub fn last_will(appliance_id: ApplianceId, session: SessionId) -> Result<LastWill, EncodeError> {
    let payload = encode(&status(PresenceState::Offline, session))?;
    Ok(LastWill::new(Topic::new(appliance_id, UpChannel::Status).to_string(), payload, QoS::AtLeastOnce, true))
}

/// The MQTT options for the first connection, with `session`'s last will. The TLS server
/// name is the broker host (a DNS name or an IP literal).
pub fn mqtt_options(params: &ConnectionParams, session: SessionId) -> Result<MqttOptions, ConnectionError> {
    let mut options = MqttOptions::new(params.appliance_id.to_string(), params.host.clone(), params.port);
    // The client id is never empty, so a persistent session is allowed; keep-alive is
    // validated by the configuration to be 0 or whole seconds.
    options
        .set_clean_session(false)
        .set_keep_alive(params.keep_alive)
        .set_max_packet_size(MAX_PAYLOAD_BYTES + PACKET_OVERHEAD, MAX_PAYLOAD_BYTES + PACKET_OVERHEAD)
        .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY)
        .set_transport(transport(params)?)
        .set_last_will(last_will(params.appliance_id, session)?);
    Ok(options)
}

/// Mutual TLS with the identity in `params` (also what a certificate renewal switches).
pub fn transport(params: &ConnectionParams) -> Result<Transport, ConnectionError> {
    let tls =
        mtls_client_config(params.ca_pem.as_bytes(), params.cert_pem.as_bytes(), params.key_pem.expose().as_bytes())?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))))
}

/// A new session for the next connection attempt, and the last will that carries it.
pub fn renew_session(options: &mut MqttOptions, appliance_id: ApplianceId) -> Result<SessionId, EncodeError> {
    let session = SessionId::new();
    options.set_last_will(last_will(appliance_id, session)?);
    Ok(session)
}

/// Which of the messages [`announce`] queues were handed to the client (a `false` was
/// logged: the request channel was full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The retained `online` status (QoS 1).
    pub online: bool,
    /// The subscription to the appliance's down topics.
    pub subscribed: bool,
    /// The [`ConfigRequest`] (QoS 1).
    pub config_request: bool,
}

/// What an appliance sends on every connect, in this order: `online` for `session`
/// (retained), the subscription to its down topics, and a request for its desired
/// configuration saying which version it has applied.
pub fn announce(
    client: &AsyncClient,
    appliance_id: ApplianceId,
    session: SessionId,
    applied_version: Option<u64>,
) -> Result<Announced, EncodeError> {
    let online = encode(&status(PresenceState::Online, session))?;
    let request = encode(&ConfigRequest { v: ProtocolVersion, applied_version })?;
    let status_topic = Topic::new(appliance_id, UpChannel::Status).to_string();
    let online = match client.try_publish(status_topic, QoS::AtLeastOnce, true, online) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot queue the online status");
            false
        }
    };
    let subscribed = match client.try_subscribe(TopicFilter::Down(appliance_id).to_string(), QoS::AtLeastOnce) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot queue the subscription to down topics");
            false
        }
    };
    let request_topic = Topic::new(appliance_id, UpChannel::ConfigRequest).to_string();
    let config_request = match client.try_publish(request_topic, QoS::AtLeastOnce, false, request) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot queue the configuration request");
            false
        }
    };
    Ok(Announced { online, subscribed, config_request })
}

/// After a connection error: forget the publishes rumqttc kept to resend on the next
/// connection (everything that matters is resent by its owner, and the status, the
/// configuration request and heartbeats are made afresh), and the events it buffered before
/// the error except incoming publishes (unacknowledged ones are redelivered anyway), so that
/// packet ids numbered for the dead connection never show up on the next one.
pub fn forget_unsent(eventloop: &mut EventLoop) {
    eventloop.pending.retain(|r| !matches!(r, Request::Publish(_)));
    eventloop.state.events.retain(|e| matches!(e, Event::Incoming(Incoming::Publish(_))));
    eventloop.state.collision = None;
}

/// The QoS heartbeats travel at: a lost one is replaced by the next.
pub const HEARTBEAT_QOS: QoS = QoS::AtMostOnce;

/// A heartbeat that could not be handed to the client.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("cannot encode a heartbeat: {0}")]
    Encode(#[from] EncodeError),
    #[error("cannot queue a heartbeat: {0}")]
    Queue(#[from] ClientError),
}

/// Hands heartbeat number `seq` with `facts`, stamped now, to the client (never waits).
pub fn try_heartbeat(client: &AsyncClient, topic: &str, facts: &Facts, seq: u64) -> Result<(), HeartbeatError> {
    let payload = encode(&facts.heartbeat(seq, OffsetDateTime::now_utc()))?;
    client.try_publish(topic, HEARTBEAT_QOS, false, payload)?;
    debug!(seq, "heartbeat");
    Ok(())
}

#[cfg(test)]
mod tests {
    use hearth_protocol::decode;

    use super::*;

    #[test]
    fn last_will_is_retained_offline_status_for_the_session() {
        let id = ApplianceId::new();
        let session = SessionId::new();
        let will = last_will(id, session).unwrap();
        assert_eq!(will.topic, Topic::new(id, UpChannel::Status).to_string());
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert!(will.retain);
        let status: Status = decode(&will.message).unwrap();
        assert_eq!((status.state, status.session), (PresenceState::Offline, session));
    }

    #[test]
    fn bad_certificates_are_reported() {
        let params = ConnectionParams {
            appliance_id: ApplianceId::new(),
            host: "localhost".into(),
            port: 8883,
            keep_alive: Duration::from_secs(30),
            ca_pem: "not a pem".into(),
            cert_pem: String::new(),
            key_pem: Secret::new("hidden".into()),
        };
        let err = mqtt_options(&params, SessionId::new()).unwrap_err();
        assert!(err.to_string().starts_with("TLS: "), "{err}");
        assert!(!format!("{params:?}").contains("hidden"));
    }
}
