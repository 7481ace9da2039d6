//! Desired configuration: applying the [`ConfigDocument`]s the control plane sends on
//! `down/config`, keeping the last applied one on disk and reporting [`ConfigApplied`].
//!
//! A document whose version is below the applied one is ignored; one equal to it is
//! reported again (so the control plane learns what is applied). A newer one is applied:
//! the agent applies its `agent` section itself (`heartbeat_interval_s`, picked up by the
//! heartbeat loop at once), then runs `<ansible_dir>/site.yml` with `{"config": <document>,
//! "hearth_root", "hearth_manage_services"}` through the same runner and queue as tasks. On
//! success the version and document are stored atomically in
//! `<state_dir>/config/applied.json` (mode 0600: the document may hold secrets, and it is
//! never logged) and `ConfigApplied {outcome: succeeded, message: <recap>}` is reported; on
//! failure the previous document stays applied (its `agent` section is restored) and the
//! failure is reported. At start-up the stored document's `agent` section is applied again
//! and its version is what the agent's `ConfigRequest` says it has.
//!
//! Secrets arrive sealed to the appliance's own key (`{"$sealed": …}`,
//! [`hearth_protocol::sealed`]): they are opened in memory, with `key.pem`, only for the
//! run (the playbook's `vars.json` in a private temporary directory, removed afterwards);
//! `applied.json` keeps the document as it arrived, sealed. A value that cannot be opened
//! fails the apply (the message names its path, never a value).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_protocol::sealed::{self, OpeningKey};
use hearth_protocol::{ApplianceId, ConfigApplied, ConfigDocument, Outcome, ProtocolVersion, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::MAX_HEARTBEAT_INTERVAL_S;
use crate::runner::Runner;
use crate::spool::Outbox;
use crate::state::{create_dir, sync_dir, write_atomic, StateError};

/// The file holding the last applied document, in the configuration directory.
pub const APPLIED_FILE: &str = "applied.json";
/// The playbook that applies a whole document, relative to the ansible directory.
pub const SITE_PLAYBOOK: &str = "site.yml";
/// Mode of `applied.json`.
pub const FILE_MODE: u32 = 0o600;

/// The stored configuration cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("applied configuration: {0}")]
    State(#[from] StateError),
    #[error("applied configuration: {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("applied configuration: {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// The last applied configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub version: u64,
    /// The document (it may hold secrets).
    pub document: Secret<Map<String, Value>>,
    /// The apply's recap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
}

/// `<state_dir>/config/applied.json`.
#[derive(Debug, Clone)]
pub struct AppliedStore {
    dir: PathBuf,
}

impl AppliedStore {
    /// Opens (creating, mode 0700) the configuration directory.
    pub fn open(dir: &Path) -> Result<Self, DesiredError> {
        create_dir(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(APPLIED_FILE)
    }

    /// The stored configuration, if any.
    pub fn load(&self) -> Result<Option<Applied>, DesiredError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                // serde_json's message can quote a value; name only the position.
                DesiredError::Parse {
                    path: path.clone(),
                    detail: format!("not a valid applied configuration (line {}, column {})", e.line(), e.column()),
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DesiredError::Io { path, source }),
        }
    }

    /// Stores `applied` atomically and durably (mode 0600).
    pub fn save(&self, applied: &Applied) -> Result<(), DesiredError> {
        let path = self.path();
        let bytes = serde_json::to_vec(applied)
            .map_err(|e| DesiredError::Parse { path: path.clone(), detail: e.to_string() })?;
        write_atomic(&path, &bytes, FILE_MODE)?;
        sync_dir(&self.dir)?;
        Ok(())
    }
}

/// The settings of a document's `agent` section the agent applies itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentSection {
    pub heartbeat_interval_s: Option<u64>,
}

/// Reads `document.agent`; a value out of range or of the wrong type is logged and ignored.
pub fn agent_section(document: &Map<String, Value>) -> AgentSection {
    let Some(agent) = document.get("agent") else {
        return AgentSection::default();
    };
    let Some(agent) = agent.as_object() else {
        warn!("the configuration's agent section is not an object; ignoring it");
        return AgentSection::default();
    };
    let heartbeat_interval_s = match agent.get("heartbeat_interval_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s) if (1..=MAX_HEARTBEAT_INTERVAL_S).contains(&s) => Some(s),
            _ => {
                warn!(
                    "agent.heartbeat_interval_s must be a whole number from 1 to {MAX_HEARTBEAT_INTERVAL_S}; ignoring it"
                );
                None
            }
        },
    };
    AgentSection { heartbeat_interval_s }
}

/// The applied configuration and the live settings it drives.
#[derive(Debug)]
pub struct Desired {
    store: AppliedStore,
    applied: Option<Applied>,
    /// The heartbeat interval from `agent.toml`, used when no document sets one.
    default_heartbeat: Duration,
    heartbeat: watch::Sender<Duration>,
    applied_version: watch::Sender<Option<u64>>,
    /// This appliance's id and key, which open the sealed secrets sent to it.
    opening: Option<(ApplianceId, OpeningKey)>,
}

impl Desired {
    /// Loads the stored configuration and applies its `agent` section. A stored file that
    /// cannot be read is logged and treated as absent (the control plane sends the document
    /// again when asked).
    pub fn load(store: AppliedStore, default_heartbeat: Duration) -> Self {
        let applied = match store.load() {
            Ok(a) => a,
            Err(e) => {
                error!(error = %e, "cannot read the applied configuration; starting without one");
                None
            }
        };
        let (heartbeat, _) = watch::channel(default_heartbeat);
        let (applied_version, _) = watch::channel(applied.as_ref().map(|a| a.version));
        let desired = Self { store, applied, default_heartbeat, heartbeat, applied_version, opening: None };
        desired.apply_agent_section(desired.applied.as_ref().map(|a| a.document.expose()));
        if let Some(v) = desired.applied_version() {
            info!(version = v, "loaded the applied configuration");
        }
        desired
    }

    /// Opens sealed secrets with `key` (the appliance's `key.pem`), sealed to `appliance`.
    pub fn with_opening_key(mut self, appliance: ApplianceId, key: OpeningKey) -> Self {
        self.opening = Some((appliance, key));
        self
    }

    /// The document to apply: sealed secrets opened (held in memory only).
    fn open(&self, document: &Map<String, Value>) -> Result<Secret<Map<String, Value>>, String> {
        if sealed::count(document) == 0 {
            return Ok(Secret::new(document.clone()));
        }
        let Some((appliance, key)) = &self.opening else {
            return Err("the document holds sealed secrets but this agent has no key to open them".into());
        };
        sealed::open_document(key, *appliance, document).map_err(|e| e.to_string())
    }

    /// The heartbeat interval in effect, live.
    pub fn heartbeat_interval(&self) -> watch::Receiver<Duration> {
        self.heartbeat.subscribe()
    }

    /// The applied version, live.
    pub fn applied_version_watch(&self) -> watch::Receiver<Option<u64>> {
        self.applied_version.subscribe()
    }

    pub fn applied_version(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.version)
    }

    pub fn applied(&self) -> Option<&Applied> {
        self.applied.as_ref()
    }

    fn apply_agent_section(&self, document: Option<&Map<String, Value>>) {
        let section = document.map(agent_section).unwrap_or_default();
        let interval = section.heartbeat_interval_s.map_or(self.default_heartbeat, Duration::from_secs);
        self.heartbeat.send_if_modified(|current| {
            let changed = *current != interval;
            if changed {
                info!(heartbeat_interval_s = interval.as_secs(), "heartbeat interval changed");
                *current = interval;
            }
            changed
        });
    }

    /// Handles one document (see the module documentation). Returns the report it put in
    /// the spool, if any.
    pub async fn handle(
        &mut self,
        doc: ConfigDocument,
        runner: &Runner,
        deadline: Instant,
        cancel: &CancellationToken,
        outbox: &Outbox,
    ) -> Option<ConfigApplied> {
        let version = doc.version;
        if let Some(applied) = &self.applied {
            if version < applied.version {
                debug!(version, applied = applied.version, "ignoring an older configuration");
                return None;
            }
            if version == applied.version {
                debug!(version, "configuration already applied; reporting it again");
                let message = applied.message.clone();
                return Some(report(outbox, version, Outcome::Succeeded, message));
            }
        }
        info!(version, "applying configuration");
        let opened = match self.open(&doc.document) {
            Ok(d) => d,
            Err(problem) => {
                error!(version, error = %problem, "configuration cannot be applied");
                return Some(report(outbox, version, Outcome::Failed, Some(problem)));
            }
        };
        self.apply_agent_section(Some(&doc.document));
        let report_ = runner
            .run(
                SITE_PLAYBOOK,
                "config",
                Value::Object(opened.expose().clone()),
                deadline,
                cancel,
                // Configuration runs have no event topic; task names can carry values: kinds only.
                &mut |e| debug!(kind = ?e.kind, "configuration run"),
            )
            .await;
        let outcome = report_.outcome();
        let message = report_.message();
        if outcome == Outcome::Succeeded {
            let applied = Applied {
                version,
                document: Secret::new(doc.document),
                message: Some(message.clone()),
                applied_at: OffsetDateTime::now_utc(),
            };
            match self.store.save(&applied) {
                Ok(()) => {
                    self.applied = Some(applied);
                    self.applied_version.send_replace(Some(version));
                    info!(version, recap = %message, "configuration applied");
                    return Some(report(outbox, version, Outcome::Succeeded, Some(message)));
                }
                Err(e) => {
                    error!(version, error = %e, "configuration applied but it cannot be recorded");
                    self.apply_agent_section(self.applied.as_ref().map(|a| a.document.expose()));
                    let message = format!("the configuration was applied but cannot be recorded: {e}");
                    return Some(report(outbox, version, Outcome::Failed, Some(message)));
                }
            }
        }
        warn!(version, ?outcome, "configuration apply failed; keeping the previous one");
        self.apply_agent_section(self.applied.as_ref().map(|a| a.document.expose()));
        Some(report(outbox, version, outcome, Some(message)))
    }
}

/// Puts a [`ConfigApplied`] in the spool (a failure to do so is logged) and returns it.
fn report(outbox: &Outbox, version: u64, outcome: Outcome, message: Option<String>) -> ConfigApplied {
    let applied = ConfigApplied { v: ProtocolVersion, version, outcome, message, at: OffsetDateTime::now_utc() };
    if let Err(e) = outbox.config_applied(&applied) {
        error!(version, error = %e, "cannot spool the configuration report");
    }
    applied
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn agent_section_is_lenient() {
        assert_eq!(agent_section(&doc(json!({}))), AgentSection::default());
        assert_eq!(
            agent_section(&doc(json!({"agent": {"heartbeat_interval_s": 5}}))),
            AgentSection { heartbeat_interval_s: Some(5) }
        );
        for bad in [json!(0), json!(-1), json!("5"), json!(1.5), json!(86_401)] {
            assert_eq!(agent_section(&doc(json!({"agent": {"heartbeat_interval_s": bad}}))), AgentSection::default());
        }
        assert_eq!(agent_section(&doc(json!({"agent": 3}))), AgentSection::default());
    }

    #[test]
    fn store_round_trip_and_startup() {
        let tmp = tempfile::tempdir().unwrap();
        let store = AppliedStore::open(&tmp.path().join("config")).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let d = Desired::load(store.clone(), Duration::from_secs(30));
        assert_eq!(*d.heartbeat_interval().borrow(), Duration::from_secs(30));
        assert_eq!(*d.applied_version_watch().borrow(), None);

        let applied = Applied {
            version: 4,
            document: Secret::new(doc(json!({"agent": {"heartbeat_interval_s": 7}, "x": {"$secret": "s3cret"}}))),
            message: Some("ok=1".into()),
            applied_at: OffsetDateTime::now_utc(),
        };
        store.save(&applied).unwrap();
        assert!(!format!("{applied:?}").contains("s3cret"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let d = Desired::load(store.clone(), Duration::from_secs(30));
        assert_eq!(*d.heartbeat_interval().borrow(), Duration::from_secs(7));
        assert_eq!(*d.applied_version_watch().borrow(), Some(4));
        assert_eq!(d.applied(), Some(&applied));

        std::fs::write(store.path(), "{\"version\": \"s3cret\"").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
