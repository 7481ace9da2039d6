//! The control plane's Prometheus metrics: one registry, served at `/metrics`. Labels are
//! bounded: route templates (never raw paths), message kinds, error reasons.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub mqtt_messages: IntCounterVec,
    pub mqtt_decode_errors: IntCounterVec,
    pub mqtt_connected: IntGauge,
    pub heartbeats_ingested: IntCounter,
    pub ingest_unknown_appliances: IntCounter,
    pub ingest_batch_size: Histogram,
    pub ingest_batch_seconds: Histogram,
    pub ingest_batch_errors: IntCounter,
    pub ingest_messages_dropped: IntCounter,
    pub presence_transitions: IntCounter,
    pub task_events_stored: IntCounter,
    pub tasks_dispatched: IntCounter,
    /// Rollout executions started (tasks created or configuration versions bumped), and
    /// rollouts the advancer ended, by final state (`succeeded`, `aborted`).
    pub rollout_executions_started: IntCounter,
    pub rollouts_finished: IntCounterVec,
    pub tasks_timed_out: IntCounter,
    pub configs_pushed: IntCounter,
    pub certificate_renewals: IntCounterVec,
    pub certificates_expiring: IntGaugeVec,
    pub sweeper_offline: IntCounter,
    pub appliances_online: IntGauge,
    pub http_requests: IntCounterVec,
    pub rate_limited: IntCounterVec,
    /// Bearer credentials looked up in PostgreSQL, by kind (`api_key`, `session`,
    /// `operator_token`), and argon2 password verifications: what the bad-credential
    /// limits save.
    pub credential_lookups: IntCounterVec,
    pub password_verifications: IntCounter,
    /// Credentials and sign-ins refused by a bad-credential limit, by scope (`source`,
    /// `credential`, `account_source`, `account`).
    pub credential_refusals: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Support assistant answers by backend (`rules`, `ollama`) and whether the LLM had
    /// failed (`degraded`), and how long they took.
    pub assistant_answers: IntCounterVec,
    pub assistant_duration: HistogramVec,
    /// 1 while an LLM is configured but the rules answer instead (the model is missing,
    /// unreachable, or its last answer was unusable); set at each scrape.
    pub assistant_reduced_mode: IntGauge,
    /// 1 while the configured model is on the Ollama server; set at each scrape.
    pub assistant_model_loaded: IntGauge,
    /// Bytes of agent builds sent to appliances (`GET /agent/v1/artifacts/{sha256}`).
    pub artifact_bytes_served: IntCounter,
    /// Events given their position (and their deliveries queued) by this replica.
    pub events_sequenced: IntCounter,
    /// Webhook delivery attempts by outcome: `delivered`, `retried`, `failed` (gave up),
    /// `gone` (410: the endpoint is disabled).
    pub webhook_attempts: IntCounterVec,
    /// Webhook requests this replica has in flight.
    pub webhook_in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let seconds = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let http_duration = HistogramVec::new(
            HistogramOpts::new("hearth_http_request_duration_seconds", "HTTP request latency by route template.")
                .buckets(seconds.clone()),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let assistant_duration = HistogramVec::new(
            HistogramOpts::new(
                "hearth_assistant_request_duration_seconds",
                "How long the support assistant took to answer, by the backend that answered.",
            )
            .buckets(vec![0.0005, 0.005, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0]),
            &["backend"],
        )?;
        registry.register(Box::new(assistant_duration.clone()))?;
        Ok(Metrics {
            assistant_answers: counter_vec(
                "hearth_assistant_answers_total",
                "Support assistant answers by backend (rules, ollama) and degraded (true: the LLM failed and the \
                 rules answered).",
                &["backend", "degraded"],
            )?,
            assistant_duration,
            assistant_reduced_mode: gauge(
                "hearth_assistant_reduced_mode",
                "1 while the support assistant's LLM is configured but the rules answer instead (model missing, \
                 Ollama unreachable, or the last answer unusable).",
            )?,
            assistant_model_loaded: gauge(
                "hearth_assistant_model_loaded",
                "1 while the support assistant's configured model is on the Ollama server.",
            )?,
            artifact_bytes_served: counter(
                "hearth_artifact_bytes_served_total",
                "Bytes of agent builds sent to appliances (whole downloads and ranges).",
            )?,
            events_sequenced: counter(
                "hearth_events_sequenced_total",
                "Events given their cursor position (and their webhook deliveries queued) by this replica.",
            )?,
            webhook_attempts: counter_vec(
                "hearth_webhook_attempts_total",
                "Webhook delivery attempts by outcome: delivered, retried, failed (gave up, the endpoint disabled), \
                 gone (the receiver answered 410).",
                &["outcome"],
            )?,
            webhook_in_flight: gauge("hearth_webhook_in_flight", "Webhook requests this replica has in flight.")?,
            mqtt_messages: counter_vec(
                "hearth_mqtt_messages_total",
                "MQTT messages received, by payload kind.",
                &["kind"],
            )?,
            mqtt_decode_errors: counter_vec(
                "hearth_mqtt_decode_errors_total",
                "MQTT messages dropped because their topic or payload was refused, by kind and reason.",
                &["kind", "reason"],
            )?,
            mqtt_connected: gauge("hearth_mqtt_connected", "1 while the MQTT connection to the broker is up.")?,
            heartbeats_ingested: counter("hearth_heartbeats_ingested_total", "Heartbeats written to PostgreSQL.")?,
            ingest_unknown_appliances: counter(
                "hearth_ingest_unknown_appliances_total",
                "Batched updates refused: appliance ids that do not exist (deleted, never registered), revoked appliances and suspended tenants' appliances.",
            )?,
            ingest_batch_size: histogram(
                "hearth_ingest_batch_size",
                "Appliances written per ingest batch.",
                vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0],
            )?,
            ingest_batch_seconds: histogram("hearth_ingest_batch_seconds", "Time to write one ingest batch.", seconds)?,
            ingest_batch_errors: counter(
                "hearth_ingest_batch_errors_total",
                "Ingest batch writes that failed (and were retried).",
            )?,
            ingest_messages_dropped: counter(
                "hearth_ingest_messages_dropped_total",
                "Messages given up on after the database kept failing.",
            )?,
            presence_transitions: counter(
                "hearth_presence_transitions_total",
                "Online/offline transitions recorded by ingest.",
            )?,
            task_events_stored: counter("hearth_task_events_stored_total", "Task events stored (each once).")?,
            tasks_dispatched: counter("hearth_tasks_dispatched_total", "Tasks sent to appliances.")?,
            rollout_executions_started: counter(
                "hearth_rollout_executions_started_total",
                "Rollout executions started (a task created or a configuration version bumped).",
            )?,
            rollouts_finished: counter_vec(
                "hearth_rollouts_finished_total",
                "Rollouts the advancer ended, by final state (succeeded, aborted).",
                &["state"],
            )?,
            tasks_timed_out: counter("hearth_tasks_timed_out_total", "Tasks that passed their deadline unfinished.")?,
            configs_pushed: counter(
                "hearth_configs_pushed_total",
                "Desired configuration documents sent to appliances.",
            )?,
            certificates_expiring: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "hearth_appliance_certificates_expiring",
                        "Appliances (not revoked) whose certificate expires within the window or has expired.",
                    ),
                    &["within"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            certificate_renewals: counter_vec(
                "hearth_certificate_renewals_total",
                "Certificate renewal requests by outcome (issued, reissued, or the refusal's code).",
                &["outcome"],
            )?,
            sweeper_offline: counter(
                "hearth_presence_sweeper_offline_total",
                "Appliances marked offline for missed heartbeats.",
            )?,
            appliances_online: gauge("hearth_appliances_online", "Appliances online, across all tenants.")?,
            rate_limited: counter_vec(
                "hearth_rate_limited_total",
                "Requests refused by a rate limit, by limit kind (api, assistant, mqtt).",
                &["kind"],
            )?,
            credential_lookups: counter_vec(
                "hearth_credential_lookups_total",
                "Bearer credentials looked up, by kind (api_key, session, operator_token, console_session).",
                &["kind"],
            )?,
            password_verifications: counter(
                "hearth_password_verifications_total",
                "argon2 password verifications of sign-ins, dummy ones (unknown addresses) included.",
            )?,
            credential_refusals: counter_vec(
                "hearth_credential_refusals_total",
                "Credentials and sign-ins refused for too many failures, by scope (source, credential, \
                 account_source, account), before any lookup or hashing.",
                &["scope"],
            )?,
            http_requests: counter_vec(
                "hearth_http_requests_total",
                "HTTP requests by method, route template and status.",
                &["method", "route", "status"],
            )?,
            http_duration,
            registry,
        })
    }

    /// The registry in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered metric families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
