//! The certificate renewal worker: takes the renewal requests the MQTT consumer routes to it,
//! decides each one (`domain::certificates`), answers on the appliance's `down/cert` and then
//! acknowledges the request.
//!
//! Answers are handed to the MQTT client with `try_publish`, never waiting: the consumer
//! that polls the client may itself be waiting to hand this worker the next request. An
//! answer that does not fit is dropped (counted as `unanswered`); the agent asks again with
//! the same renewal id and gets the same certificate.

use std::sync::Arc;

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
    mut requests: mpsc::Receiver<RenewalRequest>,
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
        hand_over(&client, &svc.metrics, Topic::new(r.appliance, DownChannel::Cert), &answer);
        // A failure of ours is not acknowledged: the broker redelivers the request when our
        // session resumes, and the agent asks again anyway.
        if let (Some(p), false) = (r.ack, retry_later) {
            let _ = acks.send(p);
        }
    }
}

fn hand_over(client: &AsyncClient, metrics: &Arc<Metrics>, topic: Topic, answer: &CertificateRenewal) {
    let outcome = encode(answer).map_err(|e| e.to_string()).and_then(|bytes| {
        client.try_publish(topic.to_string(), QoS::AtLeastOnce, false, bytes).map_err(|e| e.to_string())
    });
    if let Err(e) = outcome {
        metrics.certificate_renewals.with_label_values(&["unanswered"]).inc();
        tracing::warn!(%topic, error = %e, "a certificate renewal answer was not sent; the agent asks again");
    }
}
