//! The agent's settings (`agent.toml`): built-in defaults, then a TOML file, then
//! `HEARTH_AGENT_*` environment variables (`HEARTH_AGENT_STATE_DIR`,
//! `HEARTH_AGENT_HEARTBEAT_INTERVAL_S`, …), layered with figment as the control plane's
//! configuration is, then checked once by [`AgentConfig::validate`]. The settings are the
//! fields of [`AgentConfig`] and nothing else lists them. Every error names the setting and
//! where its value came from (the file or the environment variable); a key of the file or
//! a `HEARTH_AGENT_*` variable that names no setting is refused.
//!
//! Besides the connection settings there are those of catalog tasks and desired
//! configuration: where the installed `ansible/` directory is (`ansible_dir`, holding
//! `catalog.json`, `ansible.cfg`, `site.yml` and the playbooks), the root prefix playbooks
//! write under (`hearth_root`), whether they may manage services (`manage_services`), the
//! `ansible-playbook` command, the size bound of the outgoing spool and the longest a task
//! may run.
//!
//! Environment variables are text: an empty `HEARTH_AGENT_BROKER_HOST`,
//! `HEARTH_AGENT_BROKER_PORT` or `HEARTH_AGENT_LOCAL_DOMAINS` clears the override (the
//! file's too), `HEARTH_AGENT_LOCAL_DOMAINS` is a comma-separated list (`home,
//! example.test`), and `HEARTH_AGENT_MANAGE_SERVICES` takes `true`/`false`, `yes`/`no`,
//! `on`/`off` or `1`/`0`.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
use serde::de::{self, Deserializer, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Where `hearth-agent` looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hearth/agent.toml";

/// The prefix of every environment variable the agent reads.
pub const ENV_PREFIX: &str = "HEARTH_AGENT_";

/// Longest heartbeat interval accepted (one day).
pub const MAX_HEARTBEAT_INTERVAL_S: u64 = 86_400;

/// Smallest spool bound accepted: room for a few of the largest up messages (16 KiB).
pub const MIN_SPOOL_MAX_BYTES: u64 = 64 * 1024;

/// Longest task timeout accepted (one day).
pub const MAX_TASK_TIMEOUT_S: u64 = 86_400;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The agent's settings, each a field (its name is the TOML key and, upper-cased after
/// `HEARTH_AGENT_`, the environment variable). Construct with struct-update syntax over
/// [`Default`], or load with [`AgentConfig::load`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Holds the key, certificates and `state.toml` written by `hearth-agent enroll`.
    pub state_dir: PathBuf,
    /// Seconds between heartbeats (at least 1, at most one day).
    pub heartbeat_interval_s: u64,
    /// MQTT keep-alive in seconds (0 disables it, at most 65535).
    pub keep_alive_s: u64,
    /// First reconnect backoff cap in milliseconds (at least 1).
    pub backoff_initial_ms: u64,
    /// Largest reconnect backoff in milliseconds (at least `backoff_initial_ms`).
    pub backoff_max_ms: u64,
    /// The filesystem whose size and free space heartbeats report.
    pub root_fs_path: PathBuf,
    /// Overrides the broker host recorded at enrollment.
    #[serde(deserialize_with = "empty_is_none")]
    pub broker_host: Option<String>,
    /// Overrides the broker port recorded at enrollment.
    #[serde(deserialize_with = "empty_is_none")]
    pub broker_port: Option<u16>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// The installed `ansible/` directory: `catalog.json`, `ansible.cfg`, `site.yml` and the
    /// playbooks the catalog names.
    pub ansible_dir: PathBuf,
    /// The root prefix playbooks write under (`/` on an appliance, a sandbox in tests).
    pub hearth_root: PathBuf,
    /// Whether playbooks may start, stop and restart services and reboot (false in a
    /// sandbox).
    #[serde(deserialize_with = "lenient_bool")]
    pub manage_services: bool,
    /// The `ansible-playbook` command (a name looked up in `PATH`, or a path).
    pub ansible_playbook: PathBuf,
    /// Upper bound of the on-disk spool of task events, results and configuration reports
    /// (at least 64 KiB).
    pub spool_max_bytes: u64,
    /// Longest a playbook may run, whatever the task's deadline (1 s to one day).
    pub task_timeout_s: u64,
    /// Domains local host names must end in; `None` means the catalog's.
    #[serde(deserialize_with = "string_list")]
    pub local_domains: Option<Vec<String>>,
    /// The certificate is renewed once it has lived this share of its lifetime, in percent
    /// (10 to 95), less a jitter of up to 10 points fixed per appliance.
    pub renew_at_percent: u64,
    /// The control plane's base URL (`https://…`); overrides the one recorded at enrollment
    /// (enrollments made before it was recorded need it for agent updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Ed25519 public keys (base64) whose signatures the agent accepts on its own updates:
    /// a list, or a comma-separated string in the environment. None: updates are refused.
    #[serde(deserialize_with = "string_list")]
    pub update_public_keys: Option<Vec<String>>,
    /// How long a new version has, from its first start, to connect, have a heartbeat
    /// stored and pass its self-check before the previous version comes back (10 s to 1 h).
    pub update_health_window_s: u64,
    /// The largest agent build the agent downloads (at least 1 MiB).
    pub update_max_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/hearth-agent"),
            heartbeat_interval_s: 30,
            keep_alive_s: 30,
            backoff_initial_ms: 1000,
            backoff_max_ms: 60_000,
            root_fs_path: PathBuf::from("/"),
            broker_host: None,
            broker_port: None,
            log_format: LogFormat::Text,
            ansible_dir: PathBuf::from("/usr/share/hearth/ansible"),
            hearth_root: PathBuf::from("/"),
            manage_services: true,
            ansible_playbook: PathBuf::from("ansible-playbook"),
            spool_max_bytes: 1024 * 1024,
            task_timeout_s: 3600,
            local_domains: None,
            renew_at_percent: 67,
            api_url: None,
            update_public_keys: None,
            update_health_window_s: 300,
            update_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given configuration file does not exist.
    #[error("{}: configuration file not found", path.display())]
    NotFound { path: PathBuf },
    /// The file cannot be read or parsed, a value has the wrong type, or a key or variable
    /// names no setting: every problem found, each naming the setting and where its value
    /// came from, separated by `; `.
    #[error("{0}")]
    Load(String),
    /// A value (or a combination of values) is out of range; `origin` is where it came from
    /// (`None`: the default, or set in code).
    #[error("setting `{setting}`{}: {problem}", from_clause(origin))]
    Invalid { setting: &'static str, origin: Option<String>, problem: String },
}

/// ` (from <origin>)`, or nothing.
fn from_clause(origin: &Option<String>) -> String {
    origin.as_deref().map(|o| format!(" (from {o})")).unwrap_or_default()
}

impl AgentConfig {
    /// The heartbeat interval as a [`Duration`].
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_s)
    }

    /// The MQTT keep-alive as a [`Duration`].
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_s)
    }

    /// The task timeout cap as a [`Duration`].
    pub fn task_timeout(&self) -> Duration {
        Duration::from_secs(self.task_timeout_s)
    }

    /// `renew_at_percent` as a share of the certificate's lifetime.
    pub fn renew_share(&self) -> f64 {
        self.renew_at_percent as f64 / 100.0
    }

    /// The keys of `update_public_keys`, parsed.
    pub fn update_keys(&self) -> Result<Vec<hearth_protocol::artifact::VerifyingKey>, String> {
        self.update_public_keys
            .iter()
            .flatten()
            .map(|k| {
                hearth_protocol::artifact::public_key(k)
                    .map_err(|e| format!("{:?}: {e}", k.chars().take(16).collect::<String>()))
            })
            .collect()
    }

    /// The health window of an update as a [`Duration`].
    pub fn update_health_window(&self) -> Duration {
        Duration::from_secs(self.update_health_window_s)
    }

    /// Where the catalog is: `<ansible_dir>/catalog.json`.
    pub fn catalog_path(&self) -> PathBuf {
        self.ansible_dir.join("catalog.json")
    }

    /// Loads defaults → TOML file → the process environment, then [validates](Self::validate).
    ///
    /// Without `path`, [`DEFAULT_CONFIG_PATH`] is read if it exists; an explicit `path` must
    /// exist.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, Path::new(DEFAULT_CONFIG_PATH))
    }

    /// [`load`](Self::load) with another default file location.
    pub fn load_from(path: Option<&Path>, default_path: &Path) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) if !p.exists() => return Err(ConfigError::NotFound { path: p.to_path_buf() }),
            Some(p) => Some(p),
            None => Some(default_path).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(AgentConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment.merge(Env::prefixed(ENV_PREFIX));
        let config: AgentConfig = figment.extract().map_err(|e| {
            ConfigError::Load(e.into_iter().map(|e| describe(&figment, &e)).collect::<Vec<_>>().join("; "))
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { setting, origin: None, problem } => ConfigError::Invalid {
                setting,
                origin: origin_of(figment.find_metadata(setting), Some(setting)),
                problem,
            },
            e => e,
        })?;
        Ok(config)
    }

    /// Checks every setting and their combinations: once after loading, and for a
    /// configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, problem: String| ConfigError::Invalid { setting, origin: None, problem };
        let range = |setting: &'static str, value: u64, min: u64, max: u64| {
            if value < min {
                Err(invalid(setting, format!("must be at least {min}")))
            } else if value > max {
                Err(invalid(setting, format!("must be at most {max}")))
            } else {
                Ok(())
            }
        };
        range("heartbeat_interval_s", self.heartbeat_interval_s, 1, MAX_HEARTBEAT_INTERVAL_S)?;
        range("keep_alive_s", self.keep_alive_s, 0, u16::MAX.into())?;
        range("backoff_initial_ms", self.backoff_initial_ms, 1, u64::MAX)?;
        range("backoff_max_ms", self.backoff_max_ms, 1, u64::MAX)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid(
                "backoff_max_ms",
                format!("({}) must be at least backoff_initial_ms ({})", self.backoff_max_ms, self.backoff_initial_ms),
            ));
        }
        if self.broker_host.as_deref() == Some("") {
            return Err(invalid("broker_host", "must not be empty".into()));
        }
        if self.broker_port == Some(0) {
            return Err(invalid("broker_port", "must not be 0".into()));
        }
        range("spool_max_bytes", self.spool_max_bytes, MIN_SPOOL_MAX_BYTES, u64::MAX)?;
        range("task_timeout_s", self.task_timeout_s, 1, MAX_TASK_TIMEOUT_S)?;
        range("renew_at_percent", self.renew_at_percent, 10, 95)?;
        range("update_health_window_s", self.update_health_window_s, 10, 3600)?;
        range("update_max_bytes", self.update_max_bytes, 1024 * 1024, u64::MAX)?;
        if let Some(url) = &self.api_url {
            if !url.starts_with("https://") || url.len() <= "https://".len() {
                return Err(invalid("api_url", format!("{url:?} must be an https:// URL")));
            }
        }
        self.update_keys().map_err(|problem| invalid("update_public_keys", problem))?;
        if let Some(d) = &self.local_domains {
            check_domains(d).map_err(|problem| invalid("local_domains", problem))?;
        }
        for (setting, path) in [
            ("ansible_dir", &self.ansible_dir),
            ("hearth_root", &self.hearth_root),
            ("ansible_playbook", &self.ansible_playbook),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(setting, "must not be empty".into()));
            }
        }
        Ok(())
    }
}

/// Checks the local domains: each a non-empty DNS name without wildcards.
fn check_domains(domains: &[String]) -> Result<(), String> {
    if domains.is_empty() {
        return Err("must name at least one domain".into());
    }
    for d in domains {
        let name = d.trim_matches('.');
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            let shown: String = d.chars().take(64).collect();
            return Err(format!("{shown:?} is not a domain name"));
        }
    }
    Ok(())
}

/// Where a value of `setting` came from: `environment variable HEARTH_AGENT_…` or
/// `TOML file <path>`; `None` for a default.
fn origin_of(metadata: Option<&Metadata>, setting: Option<&str>) -> Option<String> {
    let metadata = metadata?;
    if metadata.name.contains("environment") {
        // Name the exact variable, not just "`HEARTH_AGENT_` environment variable(s)".
        return Some(match setting {
            Some(setting) => format!("environment variable {ENV_PREFIX}{}", setting.to_ascii_uppercase()),
            None => format!("environment variables {ENV_PREFIX}*"),
        });
    }
    match &metadata.source {
        Some(Source::File(file)) => Some(format!("{} {}", metadata.name, file.display())),
        _ => None,
    }
}

/// One figment error as "setting `x` (from …): problem", on one line.
fn describe(figment: &Figment, e: &figment::Error) -> String {
    if let figment::error::Kind::UnknownField(key, known) = &e.kind {
        // Raised for the key, not its value: find where the key was set.
        let from = from_clause(&origin_of(figment.find_metadata(key), Some(key)));
        return format!("`{key}`{from} is not a setting (the settings: {})", known.join(", "));
    }
    let problem = match &e.kind {
        figment::error::Kind::UnknownVariant(value, known) => format!("`{value}` is not one of {}", known.join(", ")),
        kind => one_line(&kind.to_string()),
    };
    let origin = origin_of(e.metadata.as_ref(), e.path.first().map(String::as_str));
    if e.path.is_empty() {
        format!("{}: {problem}", origin.as_deref().unwrap_or("configuration"))
    } else {
        format!("setting `{}`{}: {problem}", e.path.join("."), from_clause(&origin))
    }
}

/// A multi-line message (a TOML syntax error quotes the line and points at the column) as
/// one line: the text lines, without the quoted source.
fn one_line(message: &str) -> String {
    // `  |`, `2 | the line`, `  |    ^`
    let quoted =
        |l: &str| l.split_once('|').is_some_and(|(n, _)| n.trim().is_empty() || n.trim().parse::<u64>().is_ok());
    message.lines().map(str::trim).filter(|l| !l.is_empty() && !quoted(l)).collect::<Vec<_>>().join(": ")
}

/// `Option<T>` of a string or a number, where an empty (or blank) string is `None`: how an
/// environment variable clears an override.
fn empty_is_none<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OrNone(PhantomData))
}

/// [`empty_is_none`]'s visitor: `None` for nothing or a blank string, else `T` from the value.
struct OrNone<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OrNone<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value, or an empty string for none")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim().is_empty() {
            return Ok(None);
        }
        T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(Some)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(Some)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(Some)
    }
}

/// The local domains: a list, or (as an environment variable says it) a comma-separated
/// string; an empty string is `None`.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Domains;
    impl<'de> Visitor<'de> for Domains {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings, or a comma-separated string of them")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            Ok(Some(v.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect()))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Some)
        }
    }
    d.deserialize_option(Domains)
}

/// A `bool` from `true`/`false`, or (as an environment variable may say it) `yes`/`no`,
/// `on`/`off`, `1`/`0`.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Lenient;
    impl Visitor<'_> for Lenient {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 | 1 => Ok(v == 1),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(Lenient)
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use figment::Jail;

    use super::*;

    /// Loads `file` (written as `agent.toml` in the jail's directory, the current directory
    /// meanwhile) and `env`, with nothing else in the environment.
    #[allow(clippy::result_large_err)] // the jail's closure returns a figment::Error
    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let mut out = None;
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(k, v);
            }
            if let Some(text) = file {
                jail.create_file("agent.toml", text)?;
            }
            let path = file.map(|_| Path::new("agent.toml"));
            out = Some(AgentConfig::load_from(path, Path::new("/nonexistent/agent.toml")));
            Ok(())
        });
        out.expect("the jail ran")
    }

    fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        load(Some(text), &[])
    }

    fn from_env(env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        load(None, env)
    }

    #[test]
    fn defaults() {
        let c = AgentConfig::default();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/hearth-agent"));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(30));
        assert_eq!((c.keep_alive_s, c.backoff_initial_ms, c.backoff_max_ms), (30, 1000, 60_000));
        assert_eq!(c.root_fs_path, PathBuf::from("/"));
        assert_eq!((c.broker_host, c.broker_port, c.log_format), (None, None, LogFormat::Text));
        assert!(AgentConfig::default().validate().is_ok());
        assert_eq!(from_env(&[]).unwrap(), AgentConfig::default());
    }

    #[test]
    fn file_then_env_overlay() {
        let env = [
            ("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "7"),
            ("HEARTH_AGENT_LOG_FORMAT", "json"),
            ("HEARTH_AGENT_BROKER_PORT", "8883"),
            ("PATH", "/usr/bin"),
            ("HEARTH_OTHER", "x"),
        ];
        let file = "state_dir = \"/srv/a\"\nheartbeat_interval_s = 5\nbroker_host = \"mqtt.example\"\n";
        let c = load(Some(file), &env).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.heartbeat_interval_s, 7);
        assert_eq!(c.broker_host.as_deref(), Some("mqtt.example"));
        assert_eq!(c.broker_port, Some(8883));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.keep_alive_s, 30);
    }

    #[test]
    #[allow(clippy::result_large_err)] // the jail's closure returns a figment::Error
    fn default_path_is_optional_but_explicit_path_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.toml");
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = AgentConfig::load_from(None, &missing).unwrap();
            assert_eq!(c, AgentConfig::default());

            let err = AgentConfig::load_from(Some(&missing), &missing).unwrap_err();
            assert_eq!(err.to_string(), format!("{}: configuration file not found", missing.display()));

            std::fs::write(&missing, "keep_alive_s = 10\n").unwrap();
            let c = AgentConfig::load_from(None, &missing).unwrap();
            assert_eq!(c.keep_alive_s, 10);
            Ok(())
        });
    }

    #[test]
    fn file_errors_name_the_setting() {
        let err = from_toml("heartbeat_interval_s = 0").unwrap_err();
        assert_eq!(err.to_string(), "setting `heartbeat_interval_s` (from TOML file agent.toml): must be at least 1");

        let err = from_toml("backoff_initial_ms = 0").unwrap_err();
        assert_eq!(err.to_string(), "setting `backoff_initial_ms` (from TOML file agent.toml): must be at least 1");

        let err = from_toml("keep_alive_s = 70000").unwrap_err();
        assert_eq!(err.to_string(), "setting `keep_alive_s` (from TOML file agent.toml): must be at most 65535");

        // Unknown keys are refused, with the list of settings.
        let err = from_toml("state_dir = \"/x\"\nheartbeat_intervall_s = 3").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "`heartbeat_intervall_s` (from TOML file agent.toml) is not a setting \
                 (the settings: state_dir, heartbeat_interval_s, "
            ),
            "{msg}"
        );

        let err = from_toml("heartbeat_interval_s = \"ten\"").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("setting `heartbeat_interval_s` (from TOML file agent.toml): "), "{msg}");
        assert!(msg.contains("ten"), "{msg}");

        let err = from_toml("log_format = \"xml\"").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("setting `log_format` (from TOML file agent.toml): "), "{msg}");
        assert!(msg.contains("xml"), "{msg}");

        // A syntax error: where it is, on one line.
        let err = from_toml("state_dir = \"/x\"\nheartbeat_interval_s = ").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("TOML file agent.toml: "), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let err = from_toml("backoff_initial_ms = 5000\nbackoff_max_ms = 100").unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting `backoff_max_ms` (from TOML file agent.toml): (100) must be at least backoff_initial_ms (5000)"
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err = from_env(&[("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "abc")]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "setting `heartbeat_interval_s` (from environment variable HEARTH_AGENT_HEARTBEAT_INTERVAL_S): "
            ),
            "{err}"
        );
        assert!(err.contains("abc"), "{err}");

        let err = from_env(&[("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "0")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting `heartbeat_interval_s` (from environment variable HEARTH_AGENT_HEARTBEAT_INTERVAL_S): \
             must be at least 1"
        );

        let err = from_env(&[("HEARTH_AGENT_BACKOFF_MAX_MS", "-1")]).unwrap_err().to_string();
        assert!(
            err.starts_with("setting `backoff_max_ms` (from environment variable HEARTH_AGENT_BACKOFF_MAX_MS): "),
            "{err}"
        );

        let err = from_env(&[("HEARTH_AGENT_BROKER_PORT", "70000")]).unwrap_err().to_string();
        assert!(
            err.starts_with("setting `broker_port` (from environment variable HEARTH_AGENT_BROKER_PORT): "),
            "{err}"
        );
        assert!(err.contains("70000"), "{err}");

        let err = from_env(&[("HEARTH_AGENT_BROKER_PORT", "0")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting `broker_port` (from environment variable HEARTH_AGENT_BROKER_PORT): must not be 0"
        );

        let err = from_env(&[("HEARTH_AGENT_LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(err.starts_with("setting `log_format` (from environment variable HEARTH_AGENT_LOG_FORMAT): "), "{err}");
        assert!(err.contains("xml") && err.contains("json"), "{err}");

        let err = from_env(&[("HEARTH_AGENT_STAT_DIR", "/x")]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "`stat_dir` (from environment variable HEARTH_AGENT_STAT_DIR) is not a setting \
                 (the settings: state_dir, "
            ),
            "{err}"
        );
    }

    #[test]
    fn task_settings() {
        let c = AgentConfig::default();
        assert_eq!(c.ansible_dir, PathBuf::from("/usr/share/hearth/ansible"));
        assert_eq!(c.catalog_path(), PathBuf::from("/usr/share/hearth/ansible/catalog.json"));
        assert_eq!(c.hearth_root, PathBuf::from("/"));
        assert!(c.manage_services);
        assert_eq!(c.ansible_playbook, PathBuf::from("ansible-playbook"));
        assert_eq!((c.spool_max_bytes, c.task_timeout_s), (1024 * 1024, 3600));
        assert_eq!(c.local_domains, None);

        let c = from_toml(
            "ansible_dir = \"/a\"\nhearth_root = \"/sandbox\"\nmanage_services = false\n\
             spool_max_bytes = 100000\ntask_timeout_s = 60\nlocal_domains = [\"example.test\"]\n",
        )
        .unwrap();
        assert_eq!(c.ansible_dir, PathBuf::from("/a"));
        assert_eq!(c.hearth_root, PathBuf::from("/sandbox"));
        assert!(!c.manage_services);
        assert_eq!((c.spool_max_bytes, c.task_timeout_s), (100_000, 60));
        assert_eq!(c.local_domains, Some(vec!["example.test".to_string()]));

        let c = from_env(&[
            ("HEARTH_AGENT_ANSIBLE_DIR", "/opt/ansible"),
            ("HEARTH_AGENT_MANAGE_SERVICES", "false"),
            ("HEARTH_AGENT_ANSIBLE_PLAYBOOK", "/usr/local/bin/ansible-playbook"),
            ("HEARTH_AGENT_TASK_TIMEOUT_S", "120"),
            ("HEARTH_AGENT_LOCAL_DOMAINS", "home, example.test"),
        ])
        .unwrap();
        assert_eq!(c.ansible_dir, PathBuf::from("/opt/ansible"));
        assert!(!c.manage_services);
        assert_eq!(c.ansible_playbook, PathBuf::from("/usr/local/bin/ansible-playbook"));
        assert_eq!(c.task_timeout_s, 120);
        assert_eq!(c.local_domains, Some(vec!["home".to_string(), "example.test".to_string()]));
        let c = load(Some("local_domains = [\"home\"]"), &[("HEARTH_AGENT_LOCAL_DOMAINS", "")]).unwrap();
        assert_eq!(c.local_domains, None);

        for (text, expected) in [("no", false), ("off", false), ("0", false), ("yes", true), ("ON", true), ("1", true)]
        {
            let c = from_env(&[("HEARTH_AGENT_MANAGE_SERVICES", text)]).unwrap();
            assert_eq!(c.manage_services, expected, "{text}");
        }
        let err = from_env(&[("HEARTH_AGENT_MANAGE_SERVICES", "maybe")]).unwrap_err().to_string();
        assert!(
            err.starts_with("setting `manage_services` (from environment variable HEARTH_AGENT_MANAGE_SERVICES): "),
            "{err}"
        );
        assert!(err.contains("true or false"), "{err}");

        let err = from_toml("spool_max_bytes = 10").unwrap_err();
        assert_eq!(err.to_string(), "setting `spool_max_bytes` (from TOML file agent.toml): must be at least 65536");
        let err = from_toml("task_timeout_s = 0").unwrap_err();
        assert_eq!(err.to_string(), "setting `task_timeout_s` (from TOML file agent.toml): must be at least 1");
        let err = from_toml("local_domains = [\"*.x\"]").unwrap_err();
        assert!(err.to_string().starts_with("setting `local_domains` (from TOML file agent.toml): "), "{err}");
        let err = from_env(&[("HEARTH_AGENT_LOCAL_DOMAINS", " , ")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting `local_domains` (from environment variable HEARTH_AGENT_LOCAL_DOMAINS): \
             must name at least one domain"
        );
    }

    #[test]
    fn env_can_clear_broker_override() {
        let file = "broker_host = \"h\"\nbroker_port = 1\n";
        let c = load(Some(file), &[]).unwrap();
        assert_eq!((c.broker_host.as_deref(), c.broker_port), (Some("h"), Some(1)));
        let c = load(Some(file), &[("HEARTH_AGENT_BROKER_HOST", ""), ("HEARTH_AGENT_BROKER_PORT", "")]).unwrap();
        assert_eq!((c.broker_host, c.broker_port), (None, None));
        // An empty host in the file means no override too.
        assert_eq!(from_toml("broker_host = \"\"").unwrap().broker_host, None);
    }

    #[test]
    fn validate_catches_values_set_in_code() {
        let c = AgentConfig { heartbeat_interval_s: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "setting `heartbeat_interval_s`: must be at least 1");
        let c = AgentConfig { broker_host: Some(String::new()), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "setting `broker_host`: must not be empty");
    }
}
