//! The certificate renewal worker: takes the renewal requests the MQTT consumer routes to it,
//! decides each one (`domain::certificates`), answers on the appliance's `down/cert` and then
//! acknowledges the request.
//!
//! An answer waits for room in the MQTT client (at most [`ANSWER_WAIT`]) rather than being
//! dropped: in a renewal storm the worker signs faster than the client's in-flight window
//! lets answers out, and a dropped answer costs the appliance a two-minute wait and the
//! control plane a second signature lookup. The consumer never waits for this worker (its
//! queue is unbounded, and bounded in practice by the broker's in-flight window), so this
//! wait cannot close a circle. An answer still not handed over after [`ANSWER_WAIT`] is
//! counted `unanswered`; the agent asks again with the same renewal id and gets the same
//! certificate.

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::{encode, CertificateRenewal, DownChannel, ProtocolVersion, Topic};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{certificates, Services};
use crate::ingest::RenewalRequest;
use crate::metrics::Metrics;

/// Runs until `shutdown` or until the consumer is gone.
pub async fn run_renewals(
    svc: Services,
    client: AsyncClient,
    mut requests: mpsc::UnboundedReceiver<RenewalRequest>,
    acks: mpsc::UnboundedSender<rumqttc::Publish>,
    shutdown: CancellationToken,
) {
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = requests.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let outcome = certificates::renew(&svc, r.appliance, &r.request).await;
        let retry_later = matches!(outcome, Err(certificates::RenewalRefused::Unavailable(_)));
        let answer = CertificateRenewal {
            v: ProtocolVersion,
            renewal: r.request.renewal,
            outcome: certificates::answer(&svc, &outcome),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = hand_over(&client, &svc.metrics, Topic::new(r.appliance, DownChannel::Cert), &answer) => {}
        }
        // A failure of ours is not acknowledged: the broker redelivers the request when our
        // session resumes, and the agent asks again anyway. An answer that could not be sent
        // is (holding the request would hold one of the broker's in-flight slots for us).
        if let (Some(p), false) = (r.ack, retry_later) {
            let _ = acks.send(p);
        }
    }
}

/// How long an answer waits for room in the MQTT client.
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);

async fn hand_over(client: &AsyncClient, metrics: &Arc<Metrics>, topic: Topic, answer: &CertificateRenewal) {
    let outcome = match encode(answer) {
        Ok(bytes) => {
            match tokio::time::timeout(ANSWER_WAIT, client.publish(topic.to_string(), QoS::AtLeastOnce, false, bytes))
                .await
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no room in the MQTT client for {} s", ANSWER_WAIT.as_secs())),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = outcome {
        metrics.certificate_renewals.with_label_values(&["unanswered"]).inc();
        tracing::warn!(%topic, error = %e, "a certificate renewal answer was not sent; the agent asks again");
    }
}
