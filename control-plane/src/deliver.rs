//! The webhook deliverer, one per replica: claims due deliveries (each by one replica, under
//! a lease), `POST`s each event signed per the Standard Webhooks specification, and records
//! the outcome — delivered, retried on a backoff of about a day, or given up (the endpoint
//! disabled and its owner told). A slow or dead receiver holds only its own slots: at most
//! `per_endpoint_concurrency` requests per endpoint, each bounded by `timeout_ms`; ingest
//! never waits on any of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WebhooksConfig;
use crate::db::events::{self as event_store, NewEvent};
use crate::db::webhooks::{self as store, AttemptResult, Claimed};
use crate::domain::desired::secrets::SecretKey;
use crate::domain::events::{public_id, EventView};
use crate::domain::webhooks::target::{self, Allow};
use crate::domain::webhooks::{sign, signing_secrets};
use crate::metrics::Metrics;

/// After the n-th failed attempt, the next comes this much later (±20 %); after the last,
/// the delivery is given up: 11 attempts over about 23 hours.
const SCHEDULE_S: [u64; 10] = [5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800, 28_800];
/// At most this much of a response body is read (and the start of it kept in the log).
const BODY_MAX: usize = 4096;
const ERROR_KEEP: usize = 300;
/// Without anything new, look again this often.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The delay before the attempt after `failed` failed ones, or `None`: give up.
pub fn backoff(failed: u32, scale: f64) -> Option<Duration> {
    let base = *SCHEDULE_S.get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Some(Duration::from_secs_f64(base as f64 * scale * jitter))
}

/// Resolves a receiver's host and keeps only the addresses it may have: the connection goes
/// to a checked address, so a name cannot be pointed at the operator's network between the
/// check and the request.
struct CheckedResolver(Allow);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> =
                all.iter().filter(|a| target::check_address(a.ip(), allow).is_ok()).copied().collect();
            if ok.is_empty() {
                let shown: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!("{host} resolves to no public address ({})", shown.join(", ")).into());
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client every delivery uses: the system's trusted roots, no redirects, the
/// checked resolver, the timeout.
pub fn client(cfg: &WebhooksConfig) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("webhook TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let timeout = Duration::from_millis(cfg.timeout_ms);
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(CheckedResolver(Allow::from(cfg))))
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Hearth-Webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(cfg.per_endpoint_concurrency as usize)
        .build()
        .context("webhook HTTP client")
}

/// What one deliverer needs.
#[derive(Debug)]
pub struct Deliverer {
    pub pool: PgPool,
    pub key: Option<SecretKey>,
    pub cfg: WebhooksConfig,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
    /// Woken by the sequencer when deliveries were queued.
    pub wake: Arc<Notify>,
}

impl Deliverer {
    /// Runs until `shutdown`; attempts in flight then finish (each bounded by the timeout).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let me = Arc::new(self);
        let lease = Duration::from_millis(me.cfg.timeout_ms) * 3 + Duration::from_secs(30);
        let mut busy: HashMap<Uuid, i32> = HashMap::new();
        let mut running: JoinSet<()> = JoinSet::new();
        // Which endpoint each attempt is for, so its slot is given back even if it panicked.
        let mut endpoint_of: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        let mut failures = 0u32;
        loop {
            let room = me.cfg.concurrency as i64 - running.len() as i64;
            if room > 0 && !shutdown.is_cancelled() {
                let held: Vec<(Uuid, i32)> = busy.iter().map(|(k, v)| (*k, *v)).collect();
                match store::claim(&me.pool, room, me.cfg.per_endpoint_concurrency as i32, &held, lease).await {
                    Ok(claimed) => {
                        failures = 0;
                        for c in claimed {
                            let endpoint = c.endpoint_id;
                            *busy.entry(endpoint).or_default() += 1;
                            let me = me.clone();
                            let handle = running.spawn(async move { me.attempt(c).await });
                            endpoint_of.insert(handle.id(), endpoint);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "cannot claim webhook deliveries");
                    }
                }
                me.metrics.webhook_in_flight.set(running.len() as i64);
            }
            let pause = if failures > 0 { Duration::from_secs(u64::from(failures.min(5))) } else { IDLE_POLL };
            tokio::select! {
                done = running.join_next_with_id(), if !running.is_empty() => {
                    // A panicked attempt leaves its lease to expire; it is tried again then.
                    let id = match done {
                        Some(Ok((id, ()))) => Some(id),
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "a webhook attempt panicked");
                            Some(e.id())
                        }
                        None => None,
                    };
                    if let Some(endpoint) = id.and_then(|id| endpoint_of.remove(&id)) {
                        if let Some(n) = busy.get_mut(&endpoint) {
                            *n -= 1;
                            if *n <= 0 {
                                busy.remove(&endpoint);
                            }
                        }
                    }
                    me.metrics.webhook_in_flight.set(running.len() as i64);
                }
                _ = me.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
            if shutdown.is_cancelled() && running.is_empty() {
                return Ok(());
            }
        }
    }

    /// One attempt of one delivery, and its outcome stored.
    async fn attempt(&self, c: Claimed) {
        let started = Instant::now();
        let sent = self.send(&c).await;
        let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (status, error) = match &sent {
            Ok((s, _)) if (200..300).contains(s) => (Some(i32::from(*s)), None),
            Ok((s, body)) => (Some(i32::from(*s)), Some(format!("HTTP {s}: {}", body.as_deref().unwrap_or("")))),
            Err(e) => (None, Some(e.clone())),
        };
        let result = AttemptResult { status, latency_ms, error: error.map(|e| cut(&e, ERROR_KEEP)) };
        let outcome = match sent {
            Ok((s, _)) if (200..300).contains(&s) => {
                store::delivered(&self.pool, c.id, &result).await.map(|_| "delivered")
            }
            Ok((410, _)) => self.give_up(&c, &result, "the receiver answered 410 Gone".into()).await.map(|_| "gone"),
            _ => {
                let failed = u32::try_from(c.attempts).unwrap_or(u32::MAX);
                match backoff(failed, self.cfg.retry_scale) {
                    Some(after) => store::retry(&self.pool, c.id, &result, after).await.map(|_| "retried"),
                    None => {
                        let why = format!(
                            "{} attempts over about a day failed; the last: {}",
                            c.attempts,
                            result.error.as_deref().unwrap_or("no answer")
                        );
                        self.give_up(&c, &result, why).await.map(|_| "failed")
                    }
                }
            }
        };
        match outcome {
            Ok(o) => self.metrics.webhook_attempts.with_label_values(&[o]).inc(),
            // The lease expires and the delivery is tried again.
            Err(e) => tracing::warn!(delivery = c.id, error = %e, "cannot record a webhook attempt"),
        }
    }

    /// Gives a delivery up and disables its endpoint with `reason`, telling the owner
    /// (`webhook.endpoint_disabled`), in one transaction.
    async fn give_up(&self, c: &Claimed, result: &AttemptResult, reason: String) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        store::failed(&mut tx, c.id, result).await?;
        if let Some(ep) = store::disable(&mut tx, c.endpoint_id, &reason).await? {
            tracing::warn!(endpoint = %ep.id, reason, "webhook endpoint disabled");
            let data = serde_json::json!({ "endpoint_id": ep.id, "url": ep.url, "reason": reason });
            event_store::record(
                &mut tx,
                &NewEvent { kind: "webhook.endpoint_disabled", tenant: ep.tenant_id, appliance: None, data },
            )
            .await?;
        }
        tx.commit().await
    }

    /// Sends one event: the HTTP status and the start of the body, or why nothing came back.
    async fn send(&self, c: &Claimed) -> Result<(u16, Option<String>), String> {
        let key = self.key.as_ref().ok_or("no secrets.key is configured to open the endpoint's secret")?;
        let url = reqwest::Url::parse(&c.url).map_err(|e| format!("invalid URL: {e}"))?;
        if let Some(ip) = target::literal_ip(&url) {
            target::check_address(ip, Allow::from(&self.cfg))?;
        }
        let secrets =
            signing_secrets(key, c.endpoint_id, &c.secret_enc, c.previous_secret_enc.as_deref(), c.previous_until)
                .map_err(|e| e.to_string())?;
        let event = EventView {
            id: public_id(c.event_id),
            position: c.position,
            kind: c.event_type.clone(),
            version: c.version,
            timestamp: c.at,
            tenant_id: c.event_tenant,
            appliance_id: c.appliance_id,
            data: c.data.clone(),
        };
        let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let signature = sign::header(&refs, &event.id, ts, &body);
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status().as_u16();
        let mut resp = resp;
        let mut kept = Vec::new();
        while kept.len() < BODY_MAX {
            match resp.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(BODY_MAX - kept.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&kept).trim().to_string();
        Ok((status, (!text.is_empty()).then_some(text)))
    }
}

/// A request error with its cause chain (reqwest's own message alone says little).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_about_a_day_then_gives_up() {
        assert!(backoff(0, 1.0).is_none());
        let total: f64 = (1..=10).map(|n| backoff(n, 1.0).unwrap().as_secs_f64()).sum();
        assert!((0.8 * 80_000.0..1.2 * 90_000.0).contains(&total), "{total}");
        assert!(backoff(11, 1.0).is_none());
        let first = backoff(1, 1.0).unwrap().as_secs_f64();
        assert!((4.0..=6.0).contains(&first), "{first}");
    }
}
