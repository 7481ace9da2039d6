//! Certificate renewal for a simulated appliance, the agent's protocol without its disk
//! state: a fresh key and request ([`renewal::new_key_and_request`]), asked again with the
//! same renewal id when no answer came within [`renewal::ANSWER_TIMEOUT`] or after a
//! reconnect; an issued certificate is switched to with one clean disconnect and a
//! reconnect with the new pair, and goes back to the old pair if the broker refuses it.
//!
//! A simulated appliance renews once: at the fleet's `renew_after`, or after a
//! `down/cert/renew` notice at the moment the agent would pick
//! ([`renewal::notice_delay`]). The switch time (from the disconnect to the new CONNACK)
//! is what a household would see as the appliance's gap.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hearth_protocol::{
    decode, encode, ApplianceId, CertificateRenewal, CertificateRequest, ProtocolVersion, RenewalId, RenewalNotice,
    RenewalOutcome, Secret, Topic, UpChannel,
};
use rumqttc::{AsyncClient, QoS, Transport};
use tokio::time::Instant;

use super::Stats;
use crate::connection::{self, ConnectionParams};
use crate::renewal::{self, CertificateFacts};

/// Where a simulated appliance is in its one renewal.
#[derive(Debug)]
pub(super) enum SimRenewal {
    /// Nothing asked yet; due at this moment (`None`: only when a notice comes).
    Idle(Option<Instant>),
    /// Asked; waiting for the answer (`sent`: when the request last went out).
    Asked { request: CertificateRequest, key_pem: Secret<String>, sent: Option<Instant> },
    /// Issued; disconnecting, then connecting with `next`.
    Switching { next: Box<ConnectionParams>, since: Instant },
    /// Connected with the new pair, refused, or given up.
    Done,
}

impl SimRenewal {
    /// When [`SimRenewal::ask`] has something to do next (while connected).
    pub(super) fn next_ask(&self) -> Option<Instant> {
        match self {
            SimRenewal::Idle(due) => *due,
            SimRenewal::Asked { sent: None, .. } => Some(Instant::now()),
            SimRenewal::Asked { sent: Some(t), .. } => Some(*t + answer_timeout()),
            SimRenewal::Switching { .. } | SimRenewal::Done => None,
        }
    }

    /// Makes the key and request when due, and (re)sends the request.
    pub(super) fn ask(&mut self, client: &AsyncClient, id: ApplianceId, current_serial: &str, stats: &Stats) {
        if let SimRenewal::Idle(Some(due)) = *self {
            if Instant::now() < due {
                return;
            }
            match renewal::new_key_and_request() {
                Ok((key_pem, csr_pem)) => {
                    let request = CertificateRequest {
                        v: ProtocolVersion,
                        renewal: RenewalId::new(),
                        csr_pem,
                        current_serial: current_serial.to_owned(),
                    };
                    *self = SimRenewal::Asked { request, key_pem: Secret::new(key_pem), sent: None };
                }
                Err(e) => {
                    tracing::warn!(appliance = %id, error = %e, "cannot make a key and request");
                    *self = SimRenewal::Done;
                    return;
                }
            }
        }
        let SimRenewal::Asked { request, sent, .. } = self else { return };
        let topic = Topic::new(id, UpChannel::CertRequest).to_string();
        let queued = encode(&*request)
            .map_err(|e| e.to_string())
            .and_then(|b| client.try_publish(topic, QoS::AtLeastOnce, false, b).map_err(|e| e.to_string()));
        match queued {
            Ok(()) => {
                Stats::inc(&stats.renewals_asked);
                *sent = Some(Instant::now());
            }
            // The request queue is full: the next heartbeat tick tries again.
            Err(e) => tracing::debug!(appliance = %id, error = %e, "cannot ask for a renewal yet"),
        }
    }

    /// Connected: a switch is complete (the new identity is returned), or a reconnect may
    /// have lost the answer (asked again at once).
    pub(super) fn on_connected(&mut self, stats: &Stats) -> Option<ConnectionParams> {
        match std::mem::replace(self, SimRenewal::Done) {
            SimRenewal::Switching { next, since } => {
                let gap = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                stats.renewal_switch_max_ms.fetch_max(gap, Relaxed);
                Stats::inc(&stats.renewed);
                Some(*next)
            }
            SimRenewal::Asked { request, key_pem, .. } => {
                *self = SimRenewal::Asked { request, key_pem, sent: None };
                None
            }
            other => {
                *self = other;
                None
            }
        }
    }

    /// `down/cert`: an issued certificate starts the switch (the caller disconnects when
    /// this returns true); a refusal ends this appliance's renewal.
    pub(super) fn on_answer(&mut self, payload: &[u8], current: &ConnectionParams, stats: &Stats) -> bool {
        let id = current.appliance_id;
        let answer: CertificateRenewal = match decode(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(appliance = %id, reason = e.reason(), "dropping a renewal answer that cannot be decoded");
                return false;
            }
        };
        let SimRenewal::Asked { request, key_pem, .. } = self else { return false };
        if request.renewal != answer.renewal {
            return false;
        }
        match answer.outcome {
            RenewalOutcome::Issued { certificate_pem, ca_chain_pem, .. } => {
                Stats::inc(&stats.renewals_issued);
                let next = ConnectionParams {
                    cert_pem: certificate_pem,
                    ca_pem: ca_chain_pem,
                    key_pem: key_pem.clone(),
                    ..current.clone()
                };
                *self = SimRenewal::Switching { next: Box::new(next), since: Instant::now() };
                true
            }
            RenewalOutcome::Refused { code, message } => {
                tracing::warn!(appliance = %id, %code, %message, "renewal refused");
                Stats::inc(&stats.renewals_refused);
                *self = SimRenewal::Done;
                false
            }
            RenewalOutcome::Unknown => false,
        }
    }

    /// `down/cert/renew`: renew at the moment the agent would.
    pub(super) fn on_notice(&mut self, id: ApplianceId, payload: &[u8]) {
        let notice: RenewalNotice = match decode(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(appliance = %id, reason = e.reason(), "dropping a renewal notice that cannot be decoded");
                return;
            }
        };
        if let SimRenewal::Idle(due) = self {
            let delay = renewal::notice_delay(id, notice.within_s).unsigned_abs();
            let at = Instant::now() + delay;
            *due = Some(due.map_or(at, |d| d.min(at)));
        }
    }

    /// The transport for the new pair, once the disconnect of a switch went out.
    pub(super) fn next_transport(&mut self) -> Option<Transport> {
        let SimRenewal::Switching { next, .. } = self else { return None };
        match connection::transport(next) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(appliance = %next.appliance_id, error = %e, "the renewed certificate cannot be used");
                *self = SimRenewal::Done;
                None
            }
        }
    }

    /// The broker refused the new pair: back to the old one (counted), renewal over.
    pub(super) fn on_connection_error(&mut self, stats: &Stats) -> bool {
        if matches!(self, SimRenewal::Switching { .. }) {
            Stats::inc(&stats.renewals_failed);
            *self = SimRenewal::Done;
            return true;
        }
        false
    }

    pub(super) fn is_switching(&self) -> bool {
        matches!(self, SimRenewal::Switching { .. })
    }
}

/// The serial of the certificate in `cert_pem` (empty if it cannot be read: the control
/// plane then refuses the request, which the figures show).
pub(super) fn serial_of(cert_pem: &str) -> String {
    CertificateFacts::read(cert_pem).map(|f| f.serial).unwrap_or_default()
}

fn answer_timeout() -> Duration {
    renewal::ANSWER_TIMEOUT.unsigned_abs()
}
