//! A trivial subscriber that only counts: it reads every `up` message the broker delivers
//! (with the control plane's identity, which the ACL lets read them) and, for heartbeats,
//! how long after their `sent_at` they arrived. With the control plane not consuming, that
//! is the broker's own ceiling for the simulated traffic on this machine.

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::tls::mtls_client_config;
use hearth_protocol::{decode, Heartbeat, Secret, TopicFilter};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SimError;

/// Where and as whom the counter connects.
#[derive(Debug, Clone)]
pub struct CountOptions {
    pub host: String,
    pub port: u16,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Secret<String>,
    /// Ignore this long after the first heartbeat (the fleet's connection ramp)…
    pub skip: Duration,
    /// …then count for this long and return.
    pub window: Duration,
}

/// What the counter saw in its window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CountReport {
    pub window_s: f64,
    /// Every `up` message delivered in the window.
    pub messages: u64,
    pub heartbeats: u64,
    pub heartbeats_per_s: f64,
    /// Heartbeats that could not be decoded.
    pub undecodable: u64,
    /// From the heartbeat's `sent_at` to its arrival here.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Heartbeats delivered over the whole run, window or not.
    pub heartbeats_total: u64,
}

/// Counts until the window is over (or `stop`).
pub async fn run_counter(opts: CountOptions, stop: CancellationToken) -> Result<CountReport, SimError> {
    let tls = mtls_client_config(opts.ca_pem.as_bytes(), opts.cert_pem.as_bytes(), opts.key_pem.expose().as_bytes())
        .map_err(|e| SimError::Invalid(format!("the counter's TLS material: {e}")))?;
    let mut mqtt = MqttOptions::new(format!("hearth-bench-count-{}", uuid::Uuid::new_v4()), opts.host, opts.port);
    mqtt.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    let (client, mut eventloop) = AsyncClient::new(mqtt, 16);
    let filter = TopicFilter::AllUp.to_string();
    let heartbeat_suffix = "/up/heartbeat";

    let mut report = CountReport::default();
    let mut latencies: Vec<f64> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let end = first.map(|f| f + opts.skip + opts.window);
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(end.unwrap_or_else(Instant::now)), if end.is_some() => break,
            e = eventloop.poll() => e,
        };
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            break;
        }
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                failures = 0;
                client
                    .try_subscribe(filter.clone(), QoS::AtMostOnce)
                    .map_err(|e| SimError::Invalid(format!("cannot subscribe: {e}")))?;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let is_heartbeat = p.topic.ends_with(heartbeat_suffix);
                if is_heartbeat {
                    report.heartbeats_total += 1;
                }
                let f = *first.get_or_insert(now);
                if now < f + opts.skip {
                    continue;
                }
                report.messages += 1;
                if !is_heartbeat {
                    continue;
                }
                report.heartbeats += 1;
                match decode::<Heartbeat>(&p.payload) {
                    Ok(hb) => {
                        let ms = (OffsetDateTime::now_utc() - hb.sent_at).as_seconds_f64() * 1000.0;
                        latencies.push(ms);
                    }
                    Err(_) => report.undecodable += 1,
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    return Err(SimError::Invalid(format!("the counter cannot reach the broker: {e}")));
                }
                tracing::warn!(error = %e, "counter connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    report.window_s = opts.window.as_secs_f64();
    report.heartbeats_per_s = report.heartbeats as f64 / report.window_s.max(f64::MIN_POSITIVE);
    latencies.sort_by(f64::total_cmp);
    report.latency_p50_ms = percentile(&latencies, 0.50);
    report.latency_p99_ms = percentile(&latencies, 0.99);
    report.latency_max_ms = latencies.last().copied().unwrap_or(0.0);
    let _ = client.try_disconnect();
    Ok(report)
}

/// The `q` quantile of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
