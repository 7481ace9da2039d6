//! `hearth-control-plane serve`: the HTTP API, the MQTT ingest and the presence sweeper,
//! all stopped by one cancellation token.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hearth_protocol::api::BrokerAddress;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Dispatcher, Wake};
use crate::domain::Services;
use crate::http::{app, AppState};
use crate::ingest::{self, ConsumerConfig, ConsumerLinks, MqttSetupError, WriterContext};
use crate::limits::{self, RateLimits};
use crate::metrics::Metrics;
use crate::pki::{CertificateAuthority, PkiError};
use crate::presence::run_sweeper;
use crate::revocation::{RevocationError, Revoker};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("setting `pki.dir` (HEARTH_PKI__DIR): the CA cannot be loaded: {0}")]
    Ca(PkiError),
    #[error("setting `http.tls_cert`/`http.tls_key`: {0}")]
    HttpTls(String),
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
}

/// How often the CRL is issued anew (it is valid for `pki::CRL_VALIDITY`).
const CRL_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens (useful with port 0).
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    tasks: JoinSet<Result<(), ServeError>>,
}

impl Running {
    /// Waits until every part has stopped (after the shutdown token is cancelled).
    pub async fn wait(mut self) -> Result<(), ServeError> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => tracing::error!(error = %e, "a control plane task panicked"),
            }
        }
        result
    }
}

/// Starts everything; returns once the HTTP listener is bound.
pub async fn start(config: &Config, pool: PgPool, shutdown: CancellationToken) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    let ca = Arc::new(CertificateAuthority::load(&config.pki.dir).map_err(ServeError::Ca)?);
    let connected = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();

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
    tasks.spawn({
        let (limits, pool, token) = (rate_limits.clone(), pool.clone(), shutdown.clone());
        async move {
            limits::keep_mqtt_rates_fresh(limits, pool, token).await;
            Ok(())
        }
    });
    tasks.spawn({
        let (limits, token) = (rate_limits.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
                let evicted = limits.evict();
                tracing::debug!(evicted, "idle rate limiters evicted");
            }
        }
    });

    // MQTT: consumer → channel → writer; the writer's acks go back to the consumer; the
    // dispatcher publishes through the same client.
    let opts = ingest::mqtt_options(config)?;
    let (client, eventloop) = rumqttc::AsyncClient::new(opts, 1024);
    let (tx, rx) = tokio::sync::mpsc::channel(config.ingest.queue);
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
    let wake = Wake::default();
    tasks.spawn({
        let consumer = ConsumerConfig { share_group: config.mqtt.share_group.clone() };
        let links = ConsumerLinks {
            tx,
            acks: ack_rx,
            metrics: metrics.clone(),
            connected: connected.clone(),
            limits: rate_limits.clone(),
        };
        let (client, token) = (client.clone(), shutdown.clone());
        async move {
            ingest::run_consumer(client, eventloop, consumer, links, token).await;
            Ok(())
        }
    });
    tasks.spawn({
        let ctx = WriterContext {
            pool: pool.clone(),
            metrics: metrics.clone(),
            cfg: config.ingest.clone(),
            acks: ack_tx,
            dispatcher: wake.clone(),
            client: client.clone(),
        };
        async move {
            ingest::run_writer(rx, ctx).await;
            Ok(())
        }
    });
    tasks.spawn({
        let dispatcher = Dispatcher {
            pool: pool.clone(),
            client,
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
    tasks.spawn({
        let (pool, metrics, token) = (pool.clone(), metrics.clone(), shutdown.clone());
        let (after, every) = (config.offline_after(), config.sweep_interval());
        async move {
            run_sweeper(pool, metrics, after, every, token).await;
            Ok(())
        }
    });

    // Revocation: a fresh CRL now (the broker may hold an old one) and every day.
    let revoker = Arc::new(Revoker::new(config, pool.clone(), ca.clone())?);
    revoker.publish_crl().await?;
    tasks.spawn({
        let (revoker, token) = (revoker.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(CRL_REFRESH) => {}
                }
                if let Err(e) = revoker.publish_crl().await {
                    tracing::error!(error = %e, "could not issue the daily CRL");
                }
            }
        }
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
            port: config.mqtt.public_port.unwrap_or(config.mqtt.port),
        },
        appliance_cert_days: config.pki.appliance_cert_days,
        secrets: config.secret_key(),
        assistant: Arc::new(crate::assistant::Assistant::new(&config.assistant)?),
        assistant_config: config.assistant.clone(),
        metrics: metrics.clone(),
    };
    let state = AppState {
        domain,
        metrics: metrics.clone(),
        mqtt_connected: connected,
        rate_limits: rate_limits.clone(),
        shutdown: shutdown.clone(),
        streams: Default::default(),
    };
    let router = app(state);
    let addr = config.http.listen;
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;

    if config.http.tls {
        let read =
            |p: std::path::PathBuf| std::fs::read(&p).map_err(|e| ServeError::HttpTls(format!("{}: {e}", p.display())));
        let cert = read(config.http_tls_cert())?;
        let key = read(config.http_tls_key())?;
        let tls = hearth_protocol::tls::server_config(&cert, &key).map_err(|e| ServeError::HttpTls(e.to_string()))?;
        let handle = axum_server::Handle::new();
        let server =
            axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)))
                .handle(handle.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            handle.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            Ok(())
        });
        tasks.spawn(async move { server.serve(router.into_make_service()).await.map_err(ServeError::Http) });
    } else {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| ServeError::Bind { addr, source })?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        });
    }
    tracing::info!(%http_addr, tls = config.http.tls, "HTTP API listening");
    Ok(Running { http_addr, metrics, tasks })
}
