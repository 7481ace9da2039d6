//! The agent's settings (`agent.toml`): defaults, then a TOML file, then `HEARTH_AGENT_*`
//! environment variables. Every error names the setting and where its value came from.
//!
//! Besides the connection settings there are those of catalog tasks and desired
//! configuration: where the installed `ansible/` directory is (`ansible_dir`, holding
//! `catalog.json`, `ansible.cfg`, `site.yml` and the playbooks), the root prefix playbooks
//! write under (`hearth_root`), whether they may manage services (`manage_services`), the
//! `ansible-playbook` command, the size bound of the outgoing spool and the longest a task
//! may run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

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

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("must be \"text\" or \"json\"".into()),
        }
    }
}

/// The agent's settings. Construct with struct-update syntax over [`Default`], or load with
/// [`AgentConfig::load`].
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
    pub broker_host: Option<String>,
    /// Overrides the broker port recorded at enrollment.
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
    pub manage_services: bool,
    /// The `ansible-playbook` command (a name looked up in `PATH`, or a path).
    pub ansible_playbook: PathBuf,
    /// Upper bound of the on-disk spool of task events, results and configuration reports
    /// (at least 64 KiB).
    pub spool_max_bytes: u64,
    /// Longest a playbook may run, whatever the task's deadline (1 s to one day).
    pub task_timeout_s: u64,
    /// Domains local host names must end in; `None` means the catalog's.
    pub local_domains: Option<Vec<String>>,
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
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given configuration file does not exist.
    #[error("{}: configuration file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// A value in the file is out of range.
    #[error("{}: {setting} {problem}", path.display())]
    File { path: PathBuf, setting: &'static str, problem: String },
    /// An environment variable holds a bad value.
    #[error("{var}={value:?}: {problem}")]
    Env { var: String, value: String, problem: String },
    /// An environment variable with the agent's prefix that names no setting.
    #[error("{var}: unknown setting (known: {known})")]
    UnknownEnv { var: String, known: String },
    /// A value set in code (or a combination of values) is out of range.
    #[error("{setting} {problem}")]
    Value { setting: &'static str, problem: String },
}

/// Every setting's name, for the list of known environment variables.
const SETTINGS: &[&str] = &[
    "state_dir",
    "heartbeat_interval_s",
    "keep_alive_s",
    "backoff_initial_ms",
    "backoff_max_ms",
    "root_fs_path",
    "broker_host",
    "broker_port",
    "log_format",
    "ansible_dir",
    "hearth_root",
    "manage_services",
    "ansible_playbook",
    "spool_max_bytes",
    "task_timeout_s",
    "local_domains",
];

/// The file's view: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    state_dir: Option<PathBuf>,
    heartbeat_interval_s: Option<u64>,
    keep_alive_s: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    root_fs_path: Option<PathBuf>,
    broker_host: Option<String>,
    broker_port: Option<u16>,
    log_format: Option<LogFormat>,
    ansible_dir: Option<PathBuf>,
    hearth_root: Option<PathBuf>,
    manage_services: Option<bool>,
    ansible_playbook: Option<PathBuf>,
    spool_max_bytes: Option<u64>,
    task_timeout_s: Option<u64>,
    local_domains: Option<Vec<String>>,
}

/// Checks one numeric setting on its own; `Err` is the problem, phrased to follow the
/// setting's name.
fn check_number(setting: &str, value: u64) -> Result<(), String> {
    match setting {
        "heartbeat_interval_s" if value < 1 => Err("must be at least 1".into()),
        "heartbeat_interval_s" if value > MAX_HEARTBEAT_INTERVAL_S => {
            Err(format!("must be at most {MAX_HEARTBEAT_INTERVAL_S}"))
        }
        "keep_alive_s" if value > u64::from(u16::MAX) => Err(format!("must be at most {}", u16::MAX)),
        "backoff_initial_ms" | "backoff_max_ms" if value < 1 => Err("must be at least 1".into()),
        "broker_port" if value == 0 => Err("must not be 0".into()),
        "spool_max_bytes" if value < MIN_SPOOL_MAX_BYTES => Err(format!("must be at least {MIN_SPOOL_MAX_BYTES}")),
        "task_timeout_s" if value < 1 => Err("must be at least 1".into()),
        "task_timeout_s" if value > MAX_TASK_TIMEOUT_S => Err(format!("must be at most {MAX_TASK_TIMEOUT_S}")),
        _ => Ok(()),
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

/// Parses a boolean setting's text.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
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

    /// Where the catalog is: `<ansible_dir>/catalog.json`.
    pub fn catalog_path(&self) -> PathBuf {
        self.ansible_dir.join("catalog.json")
    }

    /// Loads defaults → TOML file → the process environment.
    ///
    /// Without `path`, [`DEFAULT_CONFIG_PATH`] is read if it exists; an explicit `path` must
    /// exist.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, Path::new(DEFAULT_CONFIG_PATH), std::env::vars_os())
    }

    /// [`load`](Self::load) with the default file location and the environment injected.
    pub fn load_from<I, K, V>(path: Option<&Path>, default_path: &Path, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut config = Self::default();
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::NotFound { path: p.to_path_buf() });
                }
                config.apply_file(p)?;
            }
            None if default_path.exists() => config.apply_file(default_path)?,
            None => {}
        }
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Overlays the settings present in the TOML file at `path`.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        self.apply_toml(path, &text)
    }

    /// Overlays the settings present in `text`; `path` is used only in errors.
    pub fn apply_toml(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let layer: FileLayer = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), detail: toml_error(text, &e) })?;
        let number = |setting: &'static str, value: Option<u64>| -> Result<Option<u64>, ConfigError> {
            if let Some(v) = value {
                check_number(setting, v).map_err(|problem| ConfigError::File {
                    path: path.to_path_buf(),
                    setting,
                    problem,
                })?;
            }
            Ok(value)
        };
        let hb = number("heartbeat_interval_s", layer.heartbeat_interval_s)?;
        let ka = number("keep_alive_s", layer.keep_alive_s)?;
        let bi = number("backoff_initial_ms", layer.backoff_initial_ms)?;
        let bm = number("backoff_max_ms", layer.backoff_max_ms)?;
        number("broker_port", layer.broker_port.map(u64::from))?;
        let sm = number("spool_max_bytes", layer.spool_max_bytes)?;
        let tt = number("task_timeout_s", layer.task_timeout_s)?;
        if let Some(d) = &layer.local_domains {
            check_domains(d).map_err(|problem| ConfigError::File {
                path: path.to_path_buf(),
                setting: "local_domains",
                problem,
            })?;
        }

        if let Some(v) = layer.state_dir {
            self.state_dir = v;
        }
        if let Some(v) = hb {
            self.heartbeat_interval_s = v;
        }
        if let Some(v) = ka {
            self.keep_alive_s = v;
        }
        if let Some(v) = bi {
            self.backoff_initial_ms = v;
        }
        if let Some(v) = bm {
            self.backoff_max_ms = v;
        }
        if let Some(v) = layer.root_fs_path {
            self.root_fs_path = v;
        }
        if let Some(v) = layer.broker_host {
            self.broker_host = Some(v).filter(|h| !h.is_empty());
        }
        if let Some(v) = layer.broker_port {
            self.broker_port = Some(v);
        }
        if let Some(v) = layer.log_format {
            self.log_format = v;
        }
        if let Some(v) = layer.ansible_dir {
            self.ansible_dir = v;
        }
        if let Some(v) = layer.hearth_root {
            self.hearth_root = v;
        }
        if let Some(v) = layer.manage_services {
            self.manage_services = v;
        }
        if let Some(v) = layer.ansible_playbook {
            self.ansible_playbook = v;
        }
        if let Some(v) = sm {
            self.spool_max_bytes = v;
        }
        if let Some(v) = tt {
            self.task_timeout_s = v;
        }
        if let Some(v) = layer.local_domains {
            self.local_domains = Some(v);
        }
        Ok(())
    }

    /// Overlays `HEARTH_AGENT_<SETTING>` variables from `env`; other variables are ignored,
    /// an unknown `HEARTH_AGENT_*` variable is an error. An empty broker host or port
    /// clears the override.
    pub fn apply_env<I, K, V>(&mut self, env: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        for (key, value) in env {
            let Some(key) = key.as_ref().to_str() else {
                continue;
            };
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let setting = name.to_ascii_lowercase();
            let Some(value) = value.as_ref().to_str() else {
                return Err(ConfigError::Env {
                    var: key.to_string(),
                    value: value.as_ref().to_string_lossy().into_owned(),
                    problem: "not valid UTF-8".into(),
                });
            };
            let bad = |problem: String| ConfigError::Env {
                var: key.to_string(),
                value: value.chars().take(64).collect(),
                problem,
            };
            let number = |what: &str| -> Result<u64, ConfigError> {
                let v: u64 = value.trim().parse().map_err(|_| bad(format!("not a whole number of {what}")))?;
                check_number(&setting, v).map_err(&bad)?;
                Ok(v)
            };
            match setting.as_str() {
                "state_dir" => self.state_dir = PathBuf::from(value),
                "heartbeat_interval_s" => self.heartbeat_interval_s = number("seconds")?,
                "keep_alive_s" => self.keep_alive_s = number("seconds")?,
                "backoff_initial_ms" => self.backoff_initial_ms = number("milliseconds")?,
                "backoff_max_ms" => self.backoff_max_ms = number("milliseconds")?,
                "root_fs_path" => self.root_fs_path = PathBuf::from(value),
                "broker_host" => self.broker_host = Some(value.trim().to_string()).filter(|h| !h.is_empty()),
                "broker_port" if value.trim().is_empty() => self.broker_port = None,
                "broker_port" => {
                    let port: u16 = value.trim().parse().map_err(|_| bad("not a port number (1-65535)".into()))?;
                    check_number("broker_port", port.into()).map_err(&bad)?;
                    self.broker_port = Some(port);
                }
                "log_format" => self.log_format = value.trim().parse().map_err(&bad)?,
                "ansible_dir" => self.ansible_dir = PathBuf::from(value),
                "hearth_root" => self.hearth_root = PathBuf::from(value),
                "manage_services" => self.manage_services = parse_bool(value).map_err(&bad)?,
                "ansible_playbook" => self.ansible_playbook = PathBuf::from(value),
                "spool_max_bytes" => self.spool_max_bytes = number("bytes")?,
                "task_timeout_s" => self.task_timeout_s = number("seconds")?,
                "local_domains" if value.trim().is_empty() => self.local_domains = None,
                "local_domains" => {
                    let domains: Vec<String> =
                        value.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
                    check_domains(&domains).map_err(&bad)?;
                    self.local_domains = Some(domains);
                }
                _ => {
                    return Err(ConfigError::UnknownEnv {
                        var: key.to_string(),
                        known: SETTINGS
                            .iter()
                            .map(|s| format!("{ENV_PREFIX}{}", s.to_ascii_uppercase()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        Ok(())
    }

    /// Checks every setting and their combinations (for a config built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let numbers = [
            ("heartbeat_interval_s", self.heartbeat_interval_s),
            ("keep_alive_s", self.keep_alive_s),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("spool_max_bytes", self.spool_max_bytes),
            ("task_timeout_s", self.task_timeout_s),
        ];
        for (setting, value) in numbers {
            check_number(setting, value).map_err(|problem| ConfigError::Value { setting, problem })?;
        }
        if let Some(port) = self.broker_port {
            check_number("broker_port", port.into())
                .map_err(|problem| ConfigError::Value { setting: "broker_port", problem })?;
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(ConfigError::Value {
                setting: "backoff_max_ms",
                problem: format!(
                    "({}) must be at least backoff_initial_ms ({})",
                    self.backoff_max_ms, self.backoff_initial_ms
                ),
            });
        }
        if self.broker_host.as_deref() == Some("") {
            return Err(ConfigError::Value { setting: "broker_host", problem: "must not be empty".into() });
        }
        if let Some(d) = &self.local_domains {
            check_domains(d).map_err(|problem| ConfigError::Value { setting: "local_domains", problem })?;
        }
        for (setting, path) in [
            ("ansible_dir", &self.ansible_dir),
            ("hearth_root", &self.hearth_root),
            ("ansible_playbook", &self.ansible_playbook),
        ] {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::Value { setting, problem: "must not be empty".into() });
            }
        }
        Ok(())
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A one-line description of a TOML error, with its line number.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).map_or(0, |s| s.matches('\n').count()) + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        let mut c = AgentConfig::default();
        c.apply_toml(Path::new("agent.toml"), text)?;
        c.validate()?;
        Ok(c)
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
    }

    #[test]
    fn file_then_env_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "state_dir = \"/srv/a\"\nheartbeat_interval_s = 5\nbroker_host = \"mqtt.example\"\n")
            .unwrap();
        let env = [
            ("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "7"),
            ("HEARTH_AGENT_LOG_FORMAT", "json"),
            ("HEARTH_AGENT_BROKER_PORT", "8883"),
            ("PATH", "/usr/bin"),
            ("HEARTH_OTHER", "x"),
        ];
        let c = AgentConfig::load_from(Some(&path), Path::new("/nonexistent"), env).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.heartbeat_interval_s, 7);
        assert_eq!(c.broker_host.as_deref(), Some("mqtt.example"));
        assert_eq!(c.broker_port, Some(8883));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.keep_alive_s, 30);
    }

    #[test]
    fn default_path_is_optional_but_explicit_path_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.toml");
        let c = AgentConfig::load_from(None, &missing, NO_ENV).unwrap();
        assert_eq!(c, AgentConfig::default());

        let err = AgentConfig::load_from(Some(&missing), &missing, NO_ENV).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: configuration file not found", missing.display()));

        std::fs::write(&missing, "keep_alive_s = 10\n").unwrap();
        let c = AgentConfig::load_from(None, &missing, NO_ENV).unwrap();
        assert_eq!(c.keep_alive_s, 10);
    }

    #[test]
    fn file_errors_name_the_setting() {
        let err = from_toml("heartbeat_interval_s = 0").unwrap_err();
        assert_eq!(err.to_string(), "agent.toml: heartbeat_interval_s must be at least 1");

        let err = from_toml("backoff_initial_ms = 0").unwrap_err();
        assert_eq!(err.to_string(), "agent.toml: backoff_initial_ms must be at least 1");

        let err = from_toml("keep_alive_s = 70000").unwrap_err();
        assert_eq!(err.to_string(), "agent.toml: keep_alive_s must be at most 65535");

        let err = from_toml("state_dir = \"/x\"\nheartbeat_intervall_s = 3").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("agent.toml: line 2: unknown field `heartbeat_intervall_s`"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let err = from_toml("heartbeat_interval_s = \"ten\"").unwrap_err();
        assert!(err.to_string().starts_with("agent.toml: line 1: "), "{err}");

        let err = from_toml("log_format = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");

        let err = from_toml("backoff_initial_ms = 5000\nbackoff_max_ms = 100").unwrap_err();
        assert_eq!(err.to_string(), "backoff_max_ms (100) must be at least backoff_initial_ms (5000)");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let mut c = AgentConfig::default();
        let err = c.apply_env([("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "abc")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_HEARTBEAT_INTERVAL_S=\"abc\": not a whole number of seconds");

        let err = c.apply_env([("HEARTH_AGENT_HEARTBEAT_INTERVAL_S", "0")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_HEARTBEAT_INTERVAL_S=\"0\": must be at least 1");

        let err = c.apply_env([("HEARTH_AGENT_BACKOFF_MAX_MS", "-1")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_BACKOFF_MAX_MS=\"-1\": not a whole number of milliseconds");

        let err = c.apply_env([("HEARTH_AGENT_BROKER_PORT", "70000")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_BROKER_PORT=\"70000\": not a port number (1-65535)");

        let err = c.apply_env([("HEARTH_AGENT_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_LOG_FORMAT=\"xml\": must be \"text\" or \"json\"");

        let err = c.apply_env([("HEARTH_AGENT_STAT_DIR", "/x")]).unwrap_err();
        assert!(
            err.to_string().starts_with("HEARTH_AGENT_STAT_DIR: unknown setting (known: HEARTH_AGENT_STATE_DIR, "),
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

        let mut c = AgentConfig::default();
        c.apply_env([
            ("HEARTH_AGENT_ANSIBLE_DIR", "/opt/ansible"),
            ("HEARTH_AGENT_MANAGE_SERVICES", "false"),
            ("HEARTH_AGENT_ANSIBLE_PLAYBOOK", "/usr/local/bin/ansible-playbook"),
            ("HEARTH_AGENT_TASK_TIMEOUT_S", "120"),
            ("HEARTH_AGENT_LOCAL_DOMAINS", "home, example.test"),
        ])
        .unwrap();
        assert_eq!(c.ansible_dir, PathBuf::from("/opt/ansible"));
        assert!(!c.manage_services);
        assert_eq!(c.task_timeout_s, 120);
        assert_eq!(c.local_domains, Some(vec!["home".to_string(), "example.test".to_string()]));
        c.apply_env([("HEARTH_AGENT_LOCAL_DOMAINS", "")]).unwrap();
        assert_eq!(c.local_domains, None);

        let err = from_toml("spool_max_bytes = 10").unwrap_err();
        assert_eq!(err.to_string(), "agent.toml: spool_max_bytes must be at least 65536");
        let err = from_toml("task_timeout_s = 0").unwrap_err();
        assert_eq!(err.to_string(), "agent.toml: task_timeout_s must be at least 1");
        let err = from_toml("local_domains = [\"*.x\"]").unwrap_err();
        assert!(err.to_string().starts_with("agent.toml: local_domains "), "{err}");
        let err = AgentConfig::default().apply_env([("HEARTH_AGENT_MANAGE_SERVICES", "maybe")]).unwrap_err();
        assert_eq!(err.to_string(), "HEARTH_AGENT_MANAGE_SERVICES=\"maybe\": must be true or false");
    }

    #[test]
    fn env_can_clear_broker_override() {
        let mut c = AgentConfig { broker_host: Some("h".into()), broker_port: Some(1), ..Default::default() };
        c.apply_env([("HEARTH_AGENT_BROKER_HOST", ""), ("HEARTH_AGENT_BROKER_PORT", "")]).unwrap();
        assert_eq!((c.broker_host, c.broker_port), (None, None));
    }

    #[test]
    fn validate_catches_values_set_in_code() {
        let c = AgentConfig { heartbeat_interval_s: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "heartbeat_interval_s must be at least 1");
        let c = AgentConfig { broker_host: Some(String::new()), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "broker_host must not be empty");
    }
}
