//! The control plane's configuration: built-in defaults, then a TOML file (`--config`),
//! then environment variables prefixed `HEARTH_` with `__` between levels
//! (`HEARTH_DATABASE__URL`, `HEARTH_MQTT__PORT`, …). Every error names the setting, where
//! its value came from and what to do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::pki::files;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub pki: PkiConfig,
    pub presence: PresenceConfig,
    pub ingest: IngestConfig,
    pub tasks: TasksConfig,
    pub secrets: SecretsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub assistant: crate::assistant::AssistantConfig,
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
}

/// Events and their webhook delivery (docs/architecture.md, "Events and webhooks").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long one delivery attempt may take, connection included.
    #[serde(default = "WebhooksConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests one replica sends to one endpoint at once.
    #[serde(default = "WebhooksConfig::default_per_endpoint_concurrency")]
    pub per_endpoint_concurrency: u32,
    /// Requests one replica has in flight in all.
    #[serde(default = "WebhooksConfig::default_concurrency")]
    pub concurrency: u32,
    /// Development only: `http://` URLs to a loopback address are accepted.
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// Receivers in private, loopback and link-local ranges are accepted (an on-premises
    /// receiver, tests). Off: such addresses are refused after DNS resolution.
    #[serde(default)]
    pub allow_private: bool,
    /// Events older than this are deleted (with their delivery log).
    #[serde(default = "WebhooksConfig::default_retention_days")]
    pub retention_days: u32,
    /// Scale of the retry schedule (1.0: 5 s … 8 h, about a day in all); tests shrink it.
    #[serde(default = "WebhooksConfig::default_retry_scale")]
    pub retry_scale: f64,
}

impl WebhooksConfig {
    fn default_timeout_ms() -> u64 {
        10_000
    }
    fn default_per_endpoint_concurrency() -> u32 {
        4
    }
    fn default_concurrency() -> u32 {
        64
    }
    fn default_retention_days() -> u32 {
        30
    }
    fn default_retry_scale() -> f64 {
        1.0
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: Self::default_timeout_ms(),
            per_endpoint_concurrency: Self::default_per_endpoint_concurrency(),
            concurrency: Self::default_concurrency(),
            allow_http_loopback: false,
            allow_private: false,
            retention_days: Self::default_retention_days(),
            retry_scale: Self::default_retry_scale(),
        }
    }
}

/// Signed agent builds (`hearth-control-plane artifact …`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Ed25519 public keys (base64, the `.pub` file `artifact keygen` writes) whose
    /// signatures are accepted on upload. Empty: no build can be uploaded. Agents carry
    /// their own list (`update_public_keys`) and check again.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// The largest build accepted, in bytes.
    #[serde(default = "ArtifactsConfig::default_max_bytes")]
    pub max_bytes: u64,
}

impl ArtifactsConfig {
    fn default_max_bytes() -> u64 {
        64 << 20
    }

    /// The trusted keys (checked by [`Config::validate`]).
    pub fn keys(&self) -> Vec<hearth_protocol::artifact::VerifyingKey> {
        self.public_keys.iter().filter_map(|k| hearth_protocol::artifact::public_key(k).ok()).collect()
    }
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig { public_keys: Vec::new(), max_bytes: Self::default_max_bytes() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// How long a tenant user's sign-in token is valid.
    pub session_ttl_s: u64,
    /// How long an operator's console session (cookie) is valid.
    pub operator_session_ttl_s: u64,
    /// Failed sign-ins for one address from one source after which that source must wait
    /// (each of these is answered 401; the next attempt, 429)…
    pub max_failed_logins: u32,
    /// …and how long that source's failures take to be forgotten entirely (one more try
    /// every `lockout_s / max_failed_logins` seconds once at the limit). Other sources are
    /// not affected, so a stranger cannot lock the customer out.
    pub lockout_s: u64,
    /// Failed sign-ins for one address from every source together (sources that signed in
    /// to it before are exempt): a burst, then this many per minute. Slows a spread-out
    /// guesser; never a long lock.
    pub account_failures_burst: u32,
    pub account_failures_per_minute: u32,
    /// Failed credentials (API keys, sessions, operator tokens, sign-ins) from one source
    /// address (IPv6: its /64): a burst, then this many per minute.
    pub source_failures_burst: u32,
    pub source_failures_per_minute: u32,
    /// Failures of one presented bearer credential (the same wrong or revoked key sent
    /// again and again, from anywhere): a burst, then this many per minute.
    pub credential_failures_burst: u32,
    pub credential_failures_per_minute: u32,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-For` names the source
    /// address; every other peer is the source itself. Empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
}

impl AuthConfig {
    /// `trusted_proxies` as networks (validated at load; a plain address is a /32 or /128).
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{p:?} is neither an IP address nor a CIDR range"))
            })
            .collect()
    }
}

/// The quotas of a tenant without a plan (a plan's own numbers win; see `db::plans`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub api_per_minute: u32,
    pub api_burst: u32,
    pub assistant_per_hour: u32,
    pub assistant_burst: u32,
    pub mqtt_per_minute: u32,
    pub mqtt_burst: u32,
    /// Fleet rollouts a tenant may have active at once.
    pub rollouts_active: u32,
    /// Webhook endpoints a tenant may register.
    pub webhook_endpoints: u32,
    /// How often a tenant's quotas are read again from its plan, and the MQTT ingest's
    /// rates of appliances on a plan (seconds): a plan change applies within this time,
    /// without a restart.
    pub refresh_s: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// How long a task may take from creation to result, unless the request says otherwise.
    pub default_deadline_s: u64,
    pub max_deadline_s: u64,
    /// How often each replica's rollout advancer looks at active rollouts (milliseconds);
    /// it also wakes when a rollout is created or steered.
    pub rollout_interval_ms: u64,
    /// At most this many executions one rollout starts per round.
    pub rollout_batch: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32 random bytes, base64 (`openssl rand -base64 32`): seals secrets in configuration
    /// documents at rest. Without it, documents holding secrets are refused.
    pub key: Option<Secret<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host/db`. Required.
    pub url: Secret<String>,
    pub max_connections: u32,
    pub connect_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Serve HTTPS with `tls_cert`/`tls_key` (default: `api.crt`/`api.key` in the PKI
    /// directory). Turn off only behind a TLS-terminating proxy.
    pub tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The longest a request may take before it is stopped with `503 timeout` (its
    /// transaction rolled back). Must exceed `assistant.timeout_ms`. Long-lived responses
    /// (event streams) are bounded by their own limits once they have started.
    pub request_timeout_ms: u64,
    /// At shutdown, how long in-flight requests get to finish before the listener stops
    /// (the same for HTTP and HTTPS).
    pub shutdown_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker the control plane connects to: its internal listener, which trusts only
    /// the service CA and lets the control plane choose its client ids (default 8884).
    pub host: String,
    pub port: u16,
    /// Stable per replica so the broker keeps its session (default: `hearth-cp-<hostname>`).
    pub client_id: Option<String>,
    /// Replicas in one group share the `up` traffic.
    pub share_group: String,
    pub keep_alive_s: u64,
    /// Defaults: `ca.crt` (which signed the broker's server certificate),
    /// `control-plane.crt`, `control-plane.key` (from the service CA) in the PKI directory.
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The broker address handed to enrolling appliances: the public listener, where the
    /// client id is bound to the certificate (host default: `host`; port default 8883).
    pub public_host: Option<String>,
    pub public_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiConfig {
    /// Where `pki init` wrote the CA and the service certificates.
    pub dir: PathBuf,
    /// How long an appliance certificate is valid, in days (fractions allowed: tests use
    /// minutes). Agents renew at 57–67 % of it, so an appliance survives being offline for
    /// a third of it; 90 days survive a month off (the reasoning and the renewal storm's
    /// figures are in BENCHMARKS.md).
    pub appliance_cert_days: f64,
    /// At most one renewed certificate per appliance per this many seconds; more requests
    /// are refused `too_frequent` (a flood signs nothing).
    pub renewal_min_interval_s: f64,
    /// Run (with `sh -c`) after the CRL (`crl.pem` in `dir`) is rewritten, so the broker
    /// picks it up, e.g. `kill -HUP $(cat /run/mosquitto/mosquitto.pid)`. Unset: the broker
    /// reads the new list when it next starts (revoked appliances are still disconnected
    /// at once and ignored by the control plane).
    pub crl_reload_command: Option<String>,
    /// Where the CRL is written (default `crl.pem` in `dir`); the broker's `crlfile`.
    pub crl_file: Option<PathBuf>,
    /// During a CA rotation, each connected appliance still on the retiring CA is asked to
    /// renew within this many seconds (at a moment of its own in that window)…
    pub rotation_renew_within_s: u32,
    /// …and at most this many appliances are asked per second (asked again if they have
    /// not renewed an hour, or twice the window, later).
    pub rotation_notices_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// An appliance not heard from for this long is marked offline by the sweeper.
    /// Keep it at least three agent heartbeat intervals.
    pub offline_after_s: f64,
    pub sweep_interval_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A batch is written when it holds this many messages…
    pub batch_max: usize,
    /// …or when its first message has waited this long.
    pub batch_wait_ms: u64,
    /// Messages buffered between the MQTT loop and the writer.
    pub queue: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseConfig { url: Secret::new(String::new()), max_connections: 10, connect_timeout_s: 5 },
            http: HttpConfig {
                listen: ([127, 0, 0, 1], 8443).into(),
                tls: true,
                tls_cert: None,
                tls_key: None,
                request_timeout_ms: 30_000,
                shutdown_timeout_s: 10,
            },
            mqtt: MqttConfig {
                host: "localhost".into(),
                port: crate::broker_config::DEFAULT_SERVICE_PORT,
                client_id: None,
                share_group: "hearth-cp".into(),
                keep_alive_s: 30,
                ca_cert: None,
                client_cert: None,
                client_key: None,
                public_host: None,
                public_port: crate::broker_config::DEFAULT_PUBLIC_PORT,
            },
            pki: PkiConfig {
                dir: PathBuf::from("/etc/hearth/pki"),
                appliance_cert_days: 90.0,
                renewal_min_interval_s: 60.0,
                crl_reload_command: None,
                crl_file: None,
                rotation_renew_within_s: 900,
                rotation_notices_per_s: 20.0,
            },
            presence: PresenceConfig { offline_after_s: 90.0, sweep_interval_s: 10.0 },
            ingest: IngestConfig { batch_max: 500, batch_wait_ms: 50, queue: 10_000 },
            tasks: TasksConfig {
                default_deadline_s: 3600,
                max_deadline_s: 86_400,
                rollout_interval_ms: 1000,
                rollout_batch: 500,
            },
            secrets: SecretsConfig { key: None },
            auth: AuthConfig {
                session_ttl_s: 3600,
                operator_session_ttl_s: 28_800,
                max_failed_logins: 5,
                lockout_s: 900,
                account_failures_burst: 50,
                account_failures_per_minute: 10,
                source_failures_burst: 30,
                source_failures_per_minute: 10,
                credential_failures_burst: 3,
                credential_failures_per_minute: 1,
                trusted_proxies: Vec::new(),
            },
            limits: LimitsConfig {
                api_per_minute: 600,
                api_burst: 100,
                assistant_per_hour: 60,
                assistant_burst: 5,
                mqtt_per_minute: 120,
                mqtt_burst: 30,
                rollouts_active: 5,
                webhook_endpoints: 10,
                refresh_s: 10,
            },
            log: LogConfig { format: "text".into() },
            assistant: Default::default(),
            artifacts: Default::default(),
            webhooks: Default::default(),
        }
    }
}

/// A configuration mistake, described so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0}: not found")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Parse(String),
    #[error("setting `{setting}` ({env}): {problem}")]
    Invalid { setting: &'static str, env: &'static str, problem: String },
}

impl Config {
    /// Defaults, then `file` (if given), then the `HEARTH_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed("HEARTH_").split("__"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only HEARTH_ variables that name a section are ours (HEARTH_API_URL and friends
        // in `.hearth/dev.env` are for people and scripts). The sections are the fields of
        // `Config`, so a new section cannot be forgotten here.
        let sections: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().map(|k| format!("{}.", k.to_ascii_uppercase())).collect(),
            _ => Vec::new(),
        };
        let env = env.filter(move |k| {
            let k = k.as_str().to_ascii_uppercase();
            sections.iter().any(|s| k.starts_with(s))
        });
        let config: Config = fig
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(e.into_iter().map(|e| describe(&e)).collect::<Vec<_>>().join("; ")))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.into() });
        if self.database.url.expose().is_empty() {
            return invalid(
                "database.url",
                "HEARTH_DATABASE__URL",
                "is required, e.g. postgres://hearth@127.0.0.1/hearth",
            );
        }
        if !self.database.url.expose().starts_with("postgres://")
            && !self.database.url.expose().starts_with("postgresql://")
        {
            return invalid("database.url", "HEARTH_DATABASE__URL", "must be a postgres:// URL");
        }
        if self.presence.offline_after_s <= 0.0 || self.presence.sweep_interval_s <= 0.0 {
            return invalid(
                "presence.offline_after_s / presence.sweep_interval_s",
                "HEARTH_PRESENCE__…",
                "must be positive numbers of seconds",
            );
        }
        if !(self.pki.appliance_cert_days * 86_400.0 >= 120.0 && self.pki.appliance_cert_days <= 3650.0) {
            return invalid(
                "pki.appliance_cert_days",
                "HEARTH_PKI__APPLIANCE_CERT_DAYS",
                "must be at least two minutes (0.0014) and at most 3650 days",
            );
        }
        if !(self.pki.renewal_min_interval_s >= 0.0 && self.pki.renewal_min_interval_s.is_finite()) {
            return invalid(
                "pki.renewal_min_interval_s",
                "HEARTH_PKI__RENEWAL_MIN_INTERVAL_S",
                "must be a non-negative number of seconds",
            );
        }
        if !(self.pki.rotation_notices_per_s > 0.0 && self.pki.rotation_notices_per_s <= 10_000.0) {
            return invalid(
                "pki.rotation_notices_per_s",
                "HEARTH_PKI__ROTATION_NOTICES_PER_S",
                "must be more than 0 and at most 10000",
            );
        }
        if self.pki.rotation_renew_within_s > 86_400 {
            return invalid(
                "pki.rotation_renew_within_s",
                "HEARTH_PKI__ROTATION_RENEW_WITHIN_S",
                "must be at most 86400 (a day)",
            );
        }
        if self.http.request_timeout_ms < 100 {
            return invalid("http.request_timeout_ms", "HEARTH_HTTP__REQUEST_TIMEOUT_MS", "must be at least 100");
        }
        if self.http.request_timeout_ms <= self.assistant.timeout_ms {
            return invalid(
                "http.request_timeout_ms",
                "HEARTH_HTTP__REQUEST_TIMEOUT_MS",
                "must be longer than assistant.timeout_ms, or every slow answer of the assistant would time out",
            );
        }
        if self.http.shutdown_timeout_s == 0 || self.http.shutdown_timeout_s > 300 {
            return invalid("http.shutdown_timeout_s", "HEARTH_HTTP__SHUTDOWN_TIMEOUT_S", "must be 1 to 300 seconds");
        }
        if self.ingest.batch_max == 0 || self.ingest.queue == 0 {
            return invalid("ingest.batch_max / ingest.queue", "HEARTH_INGEST__…", "must be at least 1");
        }
        if let Some(key) = &self.secrets.key {
            crate::domain::desired::secrets::SecretKey::from_base64(key.expose()).map_err(|e| {
                ConfigError::Invalid { setting: "secrets.key", env: "HEARTH_SECRETS__KEY", problem: e.to_string() }
            })?;
        }
        if self.tasks.default_deadline_s == 0 || self.tasks.default_deadline_s > self.tasks.max_deadline_s {
            return invalid(
                "tasks.default_deadline_s",
                "HEARTH_TASKS__DEFAULT_DEADLINE_S",
                "must be at least 1 and at most tasks.max_deadline_s",
            );
        }
        for k in &self.artifacts.public_keys {
            if let Err(e) = hearth_protocol::artifact::public_key(k) {
                return invalid("artifacts.public_keys", "HEARTH_ARTIFACTS__PUBLIC_KEYS", &e.to_string());
            }
        }
        let w = &self.webhooks;
        if !(100..=60_000).contains(&w.timeout_ms) {
            return invalid("webhooks.timeout_ms", "HEARTH_WEBHOOKS__TIMEOUT_MS", "must be between 100 and 60000");
        }
        if !(1..=64).contains(&w.per_endpoint_concurrency) || !(1..=1024).contains(&w.concurrency) {
            return invalid(
                "webhooks.per_endpoint_concurrency / webhooks.concurrency",
                "HEARTH_WEBHOOKS__…",
                "must be 1 to 64 per endpoint and 1 to 1024 in all",
            );
        }
        if !(1..=3650).contains(&w.retention_days) {
            return invalid("webhooks.retention_days", "HEARTH_WEBHOOKS__RETENTION_DAYS", "must be 1 to 3650 days");
        }
        if !(w.retry_scale > 0.0 && w.retry_scale <= 10.0) {
            return invalid("webhooks.retry_scale", "HEARTH_WEBHOOKS__RETRY_SCALE", "must be above 0 and at most 10");
        }
        if self.artifacts.max_bytes == 0 || self.artifacts.max_bytes > 1 << 30 {
            return invalid("artifacts.max_bytes", "HEARTH_ARTIFACTS__MAX_BYTES", "must be between 1 and 1073741824");
        }
        if self.tasks.rollout_interval_ms == 0 {
            return invalid("tasks.rollout_interval_ms", "HEARTH_TASKS__ROLLOUT_INTERVAL_MS", "must be at least 1");
        }
        if self.tasks.rollout_batch == 0 {
            return invalid("tasks.rollout_batch", "HEARTH_TASKS__ROLLOUT_BATCH", "must be at least 1");
        }
        let a = &self.auth;
        for (setting, env, value) in [
            ("auth.session_ttl_s", "HEARTH_AUTH__SESSION_TTL_S", a.session_ttl_s),
            ("auth.operator_session_ttl_s", "HEARTH_AUTH__OPERATOR_SESSION_TTL_S", a.operator_session_ttl_s),
            ("auth.max_failed_logins", "HEARTH_AUTH__MAX_FAILED_LOGINS", a.max_failed_logins.into()),
            ("auth.lockout_s", "HEARTH_AUTH__LOCKOUT_S", a.lockout_s),
            ("auth.account_failures_burst", "HEARTH_AUTH__ACCOUNT_FAILURES_BURST", a.account_failures_burst.into()),
            (
                "auth.account_failures_per_minute",
                "HEARTH_AUTH__ACCOUNT_FAILURES_PER_MINUTE",
                a.account_failures_per_minute.into(),
            ),
            ("auth.source_failures_burst", "HEARTH_AUTH__SOURCE_FAILURES_BURST", a.source_failures_burst.into()),
            (
                "auth.source_failures_per_minute",
                "HEARTH_AUTH__SOURCE_FAILURES_PER_MINUTE",
                a.source_failures_per_minute.into(),
            ),
            (
                "auth.credential_failures_burst",
                "HEARTH_AUTH__CREDENTIAL_FAILURES_BURST",
                a.credential_failures_burst.into(),
            ),
            (
                "auth.credential_failures_per_minute",
                "HEARTH_AUTH__CREDENTIAL_FAILURES_PER_MINUTE",
                a.credential_failures_per_minute.into(),
            ),
        ] {
            if value == 0 {
                return invalid(setting, env, "must be at least 1");
            }
        }
        if let Err(problem) = a.trusted_networks() {
            return invalid("auth.trusted_proxies", "HEARTH_AUTH__TRUSTED_PROXIES", &problem);
        }
        let l = &self.limits;
        if [
            l.api_per_minute,
            l.api_burst,
            l.assistant_per_hour,
            l.assistant_burst,
            l.mqtt_per_minute,
            l.mqtt_burst,
            l.rollouts_active,
            l.webhook_endpoints,
            l.refresh_s,
        ]
        .contains(&0)
        {
            return invalid("limits.*", "HEARTH_LIMITS__…", "every quota must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return invalid("log.format", "HEARTH_LOG__FORMAT", "must be `text` or `json`");
        }
        if let Err(crate::assistant::AssistantError::InvalidSetting { setting, env, problem }) =
            self.assistant.validate()
        {
            return Err(ConfigError::Invalid { setting, env, problem });
        }
        Ok(())
    }

    pub fn mqtt_ca_cert(&self) -> PathBuf {
        // The trust bundle (both CAs during a rotation); a PKI made before it had only ca.crt.
        self.mqtt.ca_cert.clone().unwrap_or_else(|| {
            let bundle = self.pki.dir.join(files::CA_BUNDLE);
            if bundle.exists() {
                bundle
            } else {
                self.pki.dir.join(files::CA_CERT)
            }
        })
    }
    pub fn mqtt_client_cert(&self) -> PathBuf {
        self.mqtt.client_cert.clone().unwrap_or_else(|| self.pki.dir.join(files::CONTROL_PLANE_CERT))
    }
    pub fn mqtt_client_key(&self) -> PathBuf {
        self.mqtt.client_key.clone().unwrap_or_else(|| self.pki.dir.join(files::CONTROL_PLANE_KEY))
    }
    pub fn crl_file(&self) -> PathBuf {
        self.pki.crl_file.clone().unwrap_or_else(|| self.pki.dir.join(files::CRL))
    }
    pub fn http_tls_cert(&self) -> PathBuf {
        self.http.tls_cert.clone().unwrap_or_else(|| self.pki.dir.join(files::API_CERT))
    }
    pub fn http_tls_key(&self) -> PathBuf {
        self.http.tls_key.clone().unwrap_or_else(|| self.pki.dir.join(files::API_KEY))
    }
    /// `pki.appliance_cert_days` as a duration.
    pub fn appliance_cert_lifetime(&self) -> time::Duration {
        time::Duration::seconds_f64(self.pki.appliance_cert_days * 86_400.0)
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt.client_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            format!("hearth-cp-{}", if host.is_empty() { "local" } else { &host })
        })
    }
    /// The key sealing configuration secrets, if configured (validated at load).
    pub fn secret_key(&self) -> Option<crate::domain::desired::secrets::SecretKey> {
        self.secrets.key.as_ref().and_then(|k| crate::domain::desired::secrets::SecretKey::from_base64(k.expose()).ok())
    }
    pub fn offline_after(&self) -> Duration {
        Duration::from_secs_f64(self.presence.offline_after_s)
    }
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs_f64(self.presence.sweep_interval_s)
    }
}

/// One figment error as "setting `a.b` (from HEARTH_A__B): problem".
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let source = match &e.metadata {
        // Name the exact variable, not just "HEARTH_ environment variable(s)".
        Some(m) if m.name.contains("environment") => {
            format!(" (from environment variable HEARTH_{})", e.path.join("__").to_ascii_uppercase())
        }
        Some(m) => match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        },
        None => String::new(),
    };
    if key.is_empty() {
        format!("{}{source}", e.kind)
    } else {
        format!("setting `{key}`{source}: {}", e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // figment::Error is large; this is a test helper.
    #[allow(clippy::result_large_err)]
    fn with_env(vars: &[(&str, &str)], file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(Config::load_from(file, Env::prefixed("HEARTH_").split("__")));
            Ok(())
        });
        out.expect("jail ran")
    }

    #[test]
    fn env_overrides_defaults_and_nests() {
        let c = with_env(
            &[
                ("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db"),
                ("HEARTH_MQTT__PORT", "18883"),
                ("HEARTH_API_URL", "https://ignored"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.mqtt.port, 18883);
        assert_eq!(c.database.url.expose(), "postgres://x@127.0.0.1/db");
        assert_eq!(c.ingest.batch_max, 500);
    }

    #[test]
    fn every_section_is_read_from_the_environment() {
        let c = with_env(
            &[
                ("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db"),
                ("HEARTH_SECRETS__KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                ("HEARTH_TASKS__DEFAULT_DEADLINE_S", "60"),
                ("HEARTH_AUTH__LOCKOUT_S", "5"),
                ("HEARTH_LIMITS__API_BURST", "7"),
            ],
            None,
        )
        .unwrap();
        assert!(c.secrets.key.is_some());
        assert_eq!((c.tasks.default_deadline_s, c.auth.lockout_s, c.limits.api_burst), (60, 5, 7));
    }

    #[test]
    fn errors_name_the_setting() {
        let err = with_env(&[], None).unwrap_err().to_string();
        assert!(err.contains("database.url") && err.contains("HEARTH_DATABASE__URL"), "{err}");

        let err = with_env(&[("HEARTH_DATABASE__URL", "postgres://x@y/z"), ("HEARTH_MQTT__PORT", "eighty")], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.port") && err.contains("HEARTH_MQTT__PORT"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cp.toml");
        std::fs::write(&file, "[database]\nurl = \"postgres://a@b/c\"\n[http]\nlisten = \"nowhere\"\n").unwrap();
        let err = with_env(&[], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("http.listen") && err.contains("cp.toml"), "{err}");

        std::fs::write(&file, "[database]\nurl = \"postgres://a@b/c\"\nurll = 1\n").unwrap();
        let err = with_env(&[], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = with_env(
            &[
                ("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db"),
                ("HEARTH_AUTH__TRUSTED_PROXIES", "[10.0.0.0/8, \"::1\"]"),
            ],
            None,
        )
        .unwrap();
        let nets = c.auth.trusted_networks().unwrap();
        assert!(nets[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));

        let err = with_env(
            &[("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db"), ("HEARTH_AUTH__TRUSTED_PROXIES", "[nowhere]")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.trusted_proxies") && err.contains("nowhere"), "{err}");
        let err = with_env(
            &[("HEARTH_DATABASE__URL", "postgres://x@127.0.0.1/db"), ("HEARTH_AUTH__SOURCE_FAILURES_BURST", "0")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.source_failures_burst"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = with_env(&[("HEARTH_DATABASE__URL", "postgres://u:hunter2@h/d")], None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
