//! `hearth-control-plane serve`: the HTTP API, the MQTT ingest, the dispatcher and the
//! sweepers, each a named part under one supervisor and one cancellation token.
//!
//! Supervision: every part runs until the token is cancelled. If one stops before that —
//! returns, fails or panics — [`Running::wait`] logs an error naming it, cancels the token
//! so the others stop, and returns [`ServeError::PartStopped`]; `main` then exits non-zero
//! so systemd or Kubernetes restarts the process, rather than a replica living on without
//! its consumer or its HTTP server. At shutdown every part gets `http.shutdown_timeout_s`
//! to finish (in-flight requests, the writer's last batch); a part still running after that
//! is aborted and named in the log.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use hearth_protocol::api::BrokerAddress;
use sqlx::PgPool;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{run_sweeps, Dispatcher};
use crate::domain::{Services, Wake};
use crate::http::{app, AppState};
use crate::ingest::{self, ConsumerConfig, ConsumerLinks, WriterContext};
use crate::limits::{self, CredentialLimits, RateLimits};
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttSetupError};
use crate::pki::{self, PkiError, SharedCa};
use crate::presence::run_sweeper;
use crate::revocation::{RevocationError, Revoker};
use crate::ticker::Ticker;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("setting `pki.dir` (HEARTH_PKI__DIR): the CA cannot be loaded: {0}")]
    Ca(PkiError),
    #[error("setting `http.tls_cert`/`http.tls_key`: {0}")]
    HttpTls(String),
    #[error("setting `auth.trusted_proxies` (HEARTH_AUTH__TRUSTED_PROXIES): {0}")]
    TrustedProxies(String),
    #[error("setting `http.listen` (HEARTH_HTTP__LISTEN): cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Mqtt(#[from] MqttSetupError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("setting `pki.dir` (HEARTH_PKI__DIR): {0}")]
    Crl(#[from] RevocationError),
    #[error(transparent)]
    Assistant(#[from] crate::assistant::AssistantError),
    #[error("webhooks: {0}")]
    Webhooks(String),
    #[error("the {part} stopped unexpectedly: {reason}")]
    PartStopped { part: &'static str, reason: String },
}

/// How often the CRL is issued anew (it is valid for `pki::CRL_VALIDITY`).
/// How often the certificate expiry gauges are counted.
const CERTIFICATE_GAUGES_EVERY: Duration = Duration::from_secs(60);
const CRL_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens (useful with port 0).
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    parts: Parts,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
}

/// The named parts of a running control plane.
#[derive(Debug, Default)]
struct Parts {
    set: JoinSet<(&'static str, Result<(), ServeError>)>,
    handles: Vec<(&'static str, AbortHandle)>,
}

impl Parts {
    /// Runs `part` as `name`; a panic in it is caught and reported under that name.
    fn spawn<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = Result<(), ServeError>> + Send + 'static,
    {
        let handle = self.set.spawn(async move {
            let result = match AssertUnwindSafe(part).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Err(ServeError::PartStopped { part: name, reason: panic_message(&panic) }),
            };
            (name, result)
        });
        self.handles.push((name, handle));
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("panicked: {text}")
}

impl Running {
    /// The names of the parts, in start order.
    pub fn parts(&self) -> Vec<&'static str> {
        self.parts.handles.iter().map(|(n, _)| *n).collect()
    }

    /// Aborts one part as if it had died, for fault-injection tests; `false` if there is
    /// no part of that name.
    pub fn kill_part(&self, name: &str) -> bool {
        let found = self.parts.handles.iter().filter(|(n, _)| *n == name).inspect(|(_, h)| h.abort()).count();
        found > 0
    }

    /// Supervises the parts until they have all stopped. Returns `Ok` when they stopped
    /// because the shutdown token was cancelled, and [`ServeError::PartStopped`] (or the
    /// part's own error) when one stopped first; the others are then stopped too.
    pub async fn wait(mut self) -> Result<(), ServeError> {
        let mut result = Ok(());
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                None => tokio::select! {
                    joined = self.parts.set.join_next() => joined,
                    _ = self.shutdown.cancelled() => {
                        deadline = Some(tokio::time::Instant::now() + self.shutdown_timeout);
                        continue;
                    }
                },
                Some(at) => match tokio::time::timeout_at(at, self.parts.set.join_next()).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        let left: Vec<&str> =
                            self.parts.handles.iter().filter(|(_, h)| !h.is_finished()).map(|(n, _)| *n).collect();
                        tracing::error!(parts = ?left, timeout_s = self.shutdown_timeout.as_secs(), "parts still running after the shutdown timeout; aborting them");
                        self.parts.set.abort_all();
                        while self.parts.set.join_next().await.is_some() {}
                        break;
                    }
                },
            };
            let Some(joined) = next else { break };
            let (part, outcome) = match joined {
                Ok((part, outcome)) => (part, outcome),
                Err(e) => {
                    let part = self.parts.handles.iter().find(|(_, h)| h.id() == e.id()).map_or("part", |(n, _)| *n);
                    let reason = if e.is_cancelled() { "it was aborted".to_owned() } else { e.to_string() };
                    (part, Err(ServeError::PartStopped { part, reason }))
                }
            };
            // Shutdown was asked for: a part that ended did so because of it, even when its end
            // was seen before the cancellation was (both ready in the same poll).
            if self.shutdown.is_cancelled() {
                let timeout = self.shutdown_timeout;
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                if let Err(e) = outcome {
                    tracing::warn!(part, error = %e, "part ended with an error during shutdown");
                }
                continue;
            }
            // A part stopped on its own: the process is no longer whole.
            let error = match outcome {
                Ok(()) => ServeError::PartStopped { part, reason: "it returned".into() },
                Err(e) => e,
            };
            tracing::error!(part, error = %error, "a part of the control plane stopped unexpectedly; shutting down");
            if result.is_ok() {
                result = Err(error);
            }
            self.shutdown.cancel();
            deadline = Some(tokio::time::Instant::now() + self.shutdown_timeout);
        }
        result
    }
}

fn spawn_pki_watch(
    parts: &mut Parts,
    revoker: Arc<Revoker>,
    api: Option<crate::rotation::ApiCertificate>,
    token: CancellationToken,
) {
    parts.spawn("PKI watch", async move {
        crate::rotation::watch_pki(revoker, api, token).await;
        Ok(())
    });
}

/// Starts everything; returns once the HTTP listener is bound.
pub async fn start(config: &Config, pool: PgPool, shutdown: CancellationToken) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    // A PKI made before CA rotation existed has no trust bundle yet; a read-only PKI
    // directory (a mounted secret) keeps using ca.crt.
    if let Err(e) = pki::ensure_bundle(&config.pki.dir) {
        tracing::warn!(error = %e, "cannot write the CA bundle; CA rotation needs a writable `pki.dir`");
    }
    let ca = Arc::new(SharedCa::load(&config.pki.dir).map_err(ServeError::Ca)?);
    match crate::db::server_warnings(&pool).await {
        Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!("{w}")),
        Err(e) => tracing::warn!(error = %e, "could not read PostgreSQL's settings"),
    }
    let connected = Arc::new(AtomicBool::new(false));
    let mut parts = Parts::default();

    // Rate limits, shared by the ingest and the HTTP layer. The MQTT rates of appliances on
    // a plan are read before the consumer starts, then every `limits.refresh_s`; idle
    // tenants' and appliances' limiters and stale quotas are dropped every minute.
    let rate_limits = Arc::new(RateLimits::new(config.limits));
    match rate_limits.mqtt_rates.refresh(&pool).await {
        Ok(n) => tracing::debug!(appliances = n, "MQTT rates of appliances on a plan read"),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the MQTT rates of appliances on a plan; defaults until the next refresh")
        }
    }
    parts.spawn("MQTT rate refresher", {
        let (limits, pool, token) = (rate_limits.clone(), pool.clone(), shutdown.clone());
        async move {
            limits::keep_mqtt_rates_fresh(limits, pool, token).await;
            Ok(())
        }
    });
    let credentials = Arc::new(CredentialLimits::new(&config.auth));
    parts.spawn("rate limiter eviction", {
        let (limits, credentials, token) = (rate_limits.clone(), credentials.clone(), shutdown.clone());
        async move {
            let mut ticker = Ticker::after(Duration::from_secs(60), token);
            while ticker.tick().await {
                let evicted = limits.evict() + credentials.evict();
                tracing::debug!(evicted, "idle rate limiters evicted");
            }
            Ok(())
        }
    });

    // MQTT: consumer → pending batch (coalesced per appliance) → writer; the writer's acks go back to the consumer; the
    // dispatcher publishes through the same client.
    let opts = mqtt::options(config)?;
    let (client, eventloop) = rumqttc::AsyncClient::new(opts, 1024);
    let pending = ingest::Pending::new(config.ingest.queue, config.ingest.batch_max);
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
    // Unbounded so the consumer never waits for the renewal worker, which waits for room in
    // the MQTT client the consumer drains (a bounded queue would close that circle). What it
    // holds is bounded upstream: a QoS 1 request is acknowledged only once answered, and the
    // broker keeps at most `max_inflight_messages` unacknowledged ones in flight to us; QoS 0
    // requests go through each appliance's MQTT limit first (a flood is dropped there).
    let (renewal_tx, renewal_rx) = tokio::sync::mpsc::unbounded_channel();
    let wake = Wake::default();
    parts.spawn("MQTT consumer", {
        let consumer = ConsumerConfig { share_group: config.mqtt.share_group.clone() };
        let links = ConsumerLinks {
            pending: pending.clone(),
            acks: ack_rx,
            metrics: metrics.clone(),
            connected: connected.clone(),
            limits: rate_limits.clone(),
            renewals: renewal_tx,
        };
        let (client, token) = (client.clone(), shutdown.clone());
        async move {
            ingest::run_consumer(client, eventloop, consumer, links, token).await;
            Ok(())
        }
    });
    parts.spawn("ingest writer", {
        let ctx = WriterContext {
            pool: pool.clone(),
            metrics: metrics.clone(),
            cfg: config.ingest.clone(),
            acks: ack_tx.clone(),
            dispatcher: wake.clone(),
            client: client.clone(),
        };
        async move {
            ingest::run_writer(pending, ctx).await;
            Ok(())
        }
    });
    parts.spawn("dispatcher", {
        let dispatcher = Dispatcher {
            pool: pool.clone(),
            client: client.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
            secrets: config.secret_key(),
        };
        let token = shutdown.clone();
        async move {
            dispatcher.run(token).await;
            Ok(())
        }
    });
    parts.spawn("rollout advancer", {
        let (pool, wake, cfg, token) = (pool.clone(), wake.clone(), config.tasks.clone(), shutdown.clone());
        let metrics = metrics.clone();
        async move {
            crate::domain::rollouts::advance::run(pool, wake, cfg, metrics, token).await;
            Ok(())
        }
    });
    parts.spawn("presence sweeper", {
        let (pool, metrics, token, connected) = (pool.clone(), metrics.clone(), shutdown.clone(), connected.clone());
        let (after, every) = (config.offline_after(), config.sweep_interval());
        async move {
            run_sweeper(pool, metrics, after, every, connected, token).await;
            Ok(())
        }
    });
    parts.spawn("fleet sampler", {
        let (pool, token) = (pool.clone(), shutdown.clone());
        async move {
            crate::domain::appliances::run_fleet_sampler(pool, token).await;
            Ok(())
        }
    });
    parts.spawn("dispatch sweeps (task timeouts, configuration re-push)", {
        let (pool, metrics, wake, token) = (pool.clone(), metrics.clone(), wake.clone(), shutdown.clone());
        let every = config.sweep_interval();
        async move {
            run_sweeps(pool, metrics, wake, every, token).await;
            Ok(())
        }
    });

    // Revocation: a fresh CRL now (the broker may hold an old one) and every day.
    let revoker = Arc::new(Revoker::new(config, pool.clone(), ca.clone())?);
    revoker.publish_crl().await?;
    parts.spawn("CRL refresher", {
        let (revoker, token) = (revoker.clone(), shutdown.clone());
        async move {
            let mut ticker = Ticker::after(CRL_REFRESH, token);
            while ticker.tick().await {
                if let Err(e) = revoker.publish_crl().await {
                    tracing::error!(error = %e, "could not issue the daily CRL");
                }
            }
            Ok(())
        }
    });

    // Certificates nearing expiry, for /metrics (a renewal that is late shows here first).
    parts.spawn("certificate expiry gauges", {
        let (pool, metrics, token) = (pool.clone(), metrics.clone(), shutdown.clone());
        async move {
            let windows =
                [("1d", time::Duration::days(1)), ("7d", time::Duration::days(7)), ("30d", time::Duration::days(30))];
            let mut ticker = Ticker::new(CERTIFICATE_GAUGES_EVERY, token);
            while ticker.tick().await {
                let within: Vec<_> = windows.iter().map(|(_, d)| *d).collect();
                match crate::db::certificates::expiring(&pool, &within).await {
                    Ok(counts) => {
                        for ((label, _), n) in windows.iter().zip(counts) {
                            metrics.certificates_expiring.with_label_values(&[label]).set(n);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not count the certificates nearing expiry"),
                }
            }
            Ok(())
        }
    });

    // Events: the sequencer, the alert rules, retention; webhook delivery.
    let delivery_wake = Arc::new(tokio::sync::Notify::new());
    parts.spawn("event sequencer", {
        let (pool, wake, metrics, token) = (pool.clone(), delivery_wake.clone(), metrics.clone(), shutdown.clone());
        async move {
            crate::events::sequencer(pool, wake, metrics, token).await;
            Ok(())
        }
    });
    parts.spawn("alert sweeper", {
        let (pool, token) = (pool.clone(), shutdown.clone());
        // A certificate is warned about when a renewal is clearly late: within a week of
        // its end, or the last quarter of a shorter lifetime.
        let within = std::cmp::min(time::Duration::days(7), config.appliance_cert_lifetime() / 4);
        async move {
            crate::events::alert_sweeper(pool, within, token).await;
            Ok(())
        }
    });
    parts.spawn("event retention", {
        let (pool, days, token) = (pool.clone(), config.webhooks.retention_days, shutdown.clone());
        async move {
            crate::events::retention(pool, days, token).await;
            Ok(())
        }
    });
    parts.spawn("webhook deliverer", {
        let deliverer = crate::deliver::Deliverer {
            pool: pool.clone(),
            key: config.secret_key(),
            cfg: config.webhooks.clone(),
            http: crate::deliver::client(&config.webhooks).map_err(|e| ServeError::Webhooks(e.to_string()))?,
            metrics: metrics.clone(),
            wake: delivery_wake,
        };
        let token = shutdown.clone();
        async move { deliverer.run(token).await.map_err(|e| ServeError::Webhooks(e.to_string())) }
    });

    // HTTP.
    let domain = Services {
        pool,
        wake,
        tasks: config.tasks.clone(),
        auth: config.auth.clone(),
        limits: config.limits,
        revoker,
        ca,
        broker: BrokerAddress {
            host: config.mqtt.public_host.clone().unwrap_or_else(|| config.mqtt.host.clone()),
            port: config.mqtt.public_port,
        },
        appliance_cert_lifetime: config.appliance_cert_lifetime(),
        renewal_min_interval: std::time::Duration::from_secs_f64(config.pki.renewal_min_interval_s),
        secrets: config.secret_key(),
        assistant: Arc::new(crate::assistant::Assistant::new(&config.assistant)?),
        assistant_config: config.assistant.clone(),
        metrics: metrics.clone(),
        webhooks: config.webhooks.clone(),
    };
    // Whether the assistant's model is on the Ollama server: at start, then periodically
    // (for /readyz, /metrics and the fleet summary; answers update it too).
    if config.assistant.ollama_url.is_some() {
        parts.spawn("assistant model check", {
            let (assistant, token) = (domain.assistant.clone(), shutdown.clone());
            async move {
                let mut ticker = Ticker::new(crate::assistant::status::CHECK_EVERY, token);
                while ticker.tick().await {
                    assistant.check_model().await;
                }
                Ok(())
            }
        });
    }
    parts.spawn("CA rotation notices", {
        let (pool, revoker, client) = (domain.pool.clone(), domain.revoker.clone(), client.clone());
        let (pki, token) = (config.pki.clone(), shutdown.clone());
        async move {
            crate::rotation::ask_to_renew(pool, revoker, client, pki, token).await;
            Ok(())
        }
    });
    parts.spawn("certificate renewals", {
        let (svc, token) = (domain.clone(), shutdown.clone());
        async move {
            crate::renewal::run_renewals(svc, client, renewal_rx, ack_tx, token).await;
            Ok(())
        }
    });
    let revoker = domain.revoker.clone();
    let state = AppState {
        domain,
        metrics: metrics.clone(),
        mqtt_connected: connected,
        rate_limits: rate_limits.clone(),
        credentials: credentials.clone(),
        trusted_proxies: config.auth.trusted_networks().map_err(ServeError::TrustedProxies)?.into(),
        shutdown: shutdown.clone(),
        streams: Default::default(),
        request_timeout: Duration::from_millis(config.http.request_timeout_ms),
    };
    let router = app(state);
    let addr = config.http.listen;
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;

    let shutdown_timeout = Duration::from_secs(config.http.shutdown_timeout_s);
    if config.http.tls {
        let read =
            |p: std::path::PathBuf| std::fs::read(&p).map_err(|e| ServeError::HttpTls(format!("{}: {e}", p.display())));
        let cert = read(config.http_tls_cert())?;
        let key = read(config.http_tls_key())?;
        // Client certificates are asked for (appliances authenticate `/agent/v1/…` with
        // theirs) but not required; trusted: the fleet CAs in force, both during a rotation.
        let ca_bundle = revoker.ca().get().chain_pem().to_owned();
        let tls = crate::http::client_cert::server_config(&cert, &key, ca_bundle.as_bytes())
            .map_err(|e| ServeError::HttpTls(e.to_string()))?;
        let handle = axum_server::Handle::new();
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
        let api = crate::rotation::ApiCertificate {
            config: tls.clone(),
            cert: config.http_tls_cert(),
            key: config.http_tls_key(),
            served: (cert, ca_bundle),
        };
        spawn_pki_watch(&mut parts, revoker, Some(api), shutdown.clone());
        let acceptor = crate::http::client_cert::Acceptor::new(axum_server::tls_rustls::RustlsAcceptor::new(tls));
        let server = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle.clone());
        let token = shutdown.clone();
        parts.spawn("HTTPS server", async move {
            // At shutdown, in-flight requests get `shutdown_timeout` (as on the plain listener);
            // `serve` returns once they are done.
            let trigger = async move {
                token.cancelled().await;
                handle.graceful_shutdown(Some(shutdown_timeout));
                std::future::pending::<()>().await
            };
            tokio::select! {
                served = server.serve(router.into_make_service_with_connect_info::<SocketAddr>()) => served.map_err(ServeError::Http),
                () = trigger => Ok(()),
            }
        });
    } else {
        spawn_pki_watch(&mut parts, revoker, None, shutdown.clone());
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| ServeError::Bind { addr, source })?;
        let token = shutdown.clone();
        parts.spawn("HTTP server", async move {
            // Graceful: in-flight requests finish, bounded by the supervisor's shutdown timeout.
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        });
    }
    tracing::info!(%http_addr, tls = config.http.tls, "HTTP API listening");
    Ok(Running { http_addr, metrics, parts, shutdown, shutdown_timeout })
}
