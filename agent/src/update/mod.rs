//! The agent updates itself: keep the old version, switch, prove the new one healthy within
//! a window, commit — or bring the old one back by itself and say why.
//!
//! Everything lives in `update/` in the state directory (the only place the hardened
//! systemd unit lets the agent write to besides what playbooks manage):
//!
//! - `slots/a/hearth-agent`, `slots/b/hearth-agent`: two slots for downloaded builds, beside
//!   the *installed* binary (the one the Debian package or the quickstart put in place, and
//!   the one systemd starts). A new build goes into the slot not in use, so the running
//!   version and the one before it are always on disk.
//! - `downloads/<sha256>.part`: a download in progress (resumed with a range request).
//! - `update.toml` ([`UpdateState`]): which binary is current, the trial in progress (the
//!   intent: from which slot to which, for which task, how many starts so far), and the
//!   last update's outcome until it has been reported.
//!
//! The pieces:
//! - [`install`]: the `agent.update` task — check the signed manifest with the keys of the
//!   agent's own configuration, download ([`download`]), check the bytes, install into the
//!   free slot, record the trial, and restart into it.
//! - [`launch`]: what the installed binary does first at every start — pick the binary to
//!   run, count the starts of a trial, roll back when the new version has started too often
//!   or missed its window (a build that cannot even start ends in the old version), notice a
//!   package upgraded by hand, and `exec` the slot's binary.
//! - [`gate`]: in the new version, the health gate: connected, a heartbeat of this version
//!   stored by the control plane, self-check passed — then commit; else, when the window
//!   passes, roll back and restart into the previous binary.

pub mod download;
pub mod gate;
pub mod install;
pub mod launch;

use std::fs;
use std::path::{Path, PathBuf};

use hearth_protocol::TaskId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::state::{self, StateError};

/// The update directory inside the state directory.
pub const UPDATE_DIR: &str = "update";
const STATE_FILE: &str = "update.toml";
const SLOTS_DIR: &str = "slots";
const DOWNLOADS_DIR: &str = "downloads";
/// The binary's name inside a slot.
pub const BINARY_NAME: &str = "hearth-agent";
/// How many times a new version may be started without committing before the previous
/// version comes back (a crash loop ends in the old version, not in a dead appliance).
pub const MAX_STARTS: u32 = 3;
const STATE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// Which binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The binary the package (or the quickstart) installed: the one that is started.
    #[default]
    Installed,
    A,
    B,
}

impl Slot {
    /// The slot a new build goes to: never the one in use.
    pub fn free(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::Installed | Slot::B => Slot::A,
        }
    }

    fn dir_name(self) -> Option<&'static str> {
        match self {
            Slot::Installed => None,
            Slot::A => Some("a"),
            Slot::B => Some("b"),
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name().unwrap_or("installed"))
    }
}

/// A switch to a new version that has not committed yet: the intent, written before the
/// restart into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// The `agent.update` task it belongs to.
    pub task_id: TaskId,
    pub from: Slot,
    pub from_version: String,
    pub to: Slot,
    pub version: String,
    /// Task events sent so far (the next is `events + 1`).
    pub events: u64,
    /// Starts of the new version so far (counted by [`launch`]).
    pub starts: u32,
    /// The first start of the new version: the health window runs from there.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_start: Option<OffsetDateTime>,
    pub window_s: u64,
}

impl Trial {
    /// When the health window closes (`None` before the first start).
    pub fn deadline(&self) -> Option<OffsetDateTime> {
        self.first_start.map(|t| t + time::Duration::seconds(self.window_s as i64))
    }
}

/// How the last update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Committed,
    RolledBack { reason: String },
}

/// The last update's outcome, kept until its task has been reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub task_id: TaskId,
    pub version: String,
    pub from_version: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub events: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// How long the new version took to commit, in seconds.
    #[serde(default)]
    pub took_s: u64,
}

/// `update/update.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateState {
    pub current: Slot,
    /// The version the current slot holds (`None` for the installed binary: its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// The installed binary's file (device, inode, size, modification time) when a slot
    /// became current: a package upgraded by hand changes it, and then the installed binary
    /// runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_id: Option<String>,
    /// The installed binary's path, recorded at each start: restarts go through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
}

impl UpdateState {
    /// The update task this state still has to finish (the trial's, or an outcome not yet
    /// reported): task recovery leaves it to the update.
    pub fn task_in_flight(&self) -> Option<TaskId> {
        self.trial.as_ref().map(|t| t.task_id).or(self.finished.as_ref().map(|f| f.task_id))
    }

    /// Ends the trial in the previous binary, with the reason.
    pub fn roll_back(&mut self, reason: String) {
        if let Some(trial) = self.trial.take() {
            tracing::warn!(version = %trial.version, back_to = %trial.from_version, %reason, "rolling back the agent update");
            self.current = trial.from;
            self.current_version = (trial.from != Slot::Installed).then(|| trial.from_version.clone());
            self.finished = Some(Finished {
                task_id: trial.task_id,
                version: trial.version,
                from_version: trial.from_version,
                outcome: Outcome::RolledBack { reason },
                events: trial.events,
                at: OffsetDateTime::now_utc(),
                took_s: 0,
            });
        }
    }

    /// Keeps the trial's version.
    pub fn commit(&mut self) {
        if let Some(trial) = self.trial.take() {
            let took_s = trial.first_start.map(|t| (OffsetDateTime::now_utc() - t).whole_seconds().max(0) as u64);
            self.current = trial.to;
            self.current_version = Some(trial.version.clone());
            self.finished = Some(Finished {
                task_id: trial.task_id,
                version: trial.version,
                from_version: trial.from_version,
                outcome: Outcome::Committed,
                events: trial.events,
                at: OffsetDateTime::now_utc(),
                took_s: took_s.unwrap_or(0),
            });
        }
    }
}

/// Where the update's files are.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(state_dir: &Path) -> Layout {
        Layout { dir: state_dir.join(UPDATE_DIR) }
    }

    /// The binary of `slot` (`None` for the installed one).
    pub fn binary(&self, slot: Slot) -> Option<PathBuf> {
        slot.dir_name().map(|d| self.dir.join(SLOTS_DIR).join(d).join(BINARY_NAME))
    }

    pub fn slots_dir(&self) -> PathBuf {
        self.dir.join(SLOTS_DIR)
    }

    pub fn downloads_dir(&self) -> PathBuf {
        self.dir.join(DOWNLOADS_DIR)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The update state (the default one when there has never been an update).
    pub fn load(&self) -> Result<UpdateState, UpdateError> {
        let path = self.state_path();
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| UpdateError::Parse { path, detail: e.message().to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateState::default()),
            Err(source) => Err(StateError::Io { path, source }.into()),
        }
    }

    /// Writes the update state atomically.
    pub fn save(&self, s: &UpdateState) -> Result<(), UpdateError> {
        state::create_dir(&self.dir)?;
        let path = self.state_path();
        let text = toml::to_string(s).map_err(|e| UpdateError::Parse { path: path.clone(), detail: e.to_string() })?;
        state::write_atomic(&path, text.as_bytes(), STATE_MODE)?;
        state::sync_dir(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial() -> Trial {
        Trial {
            task_id: TaskId::new(),
            from: Slot::Installed,
            from_version: "1.0.0".into(),
            to: Slot::A,
            version: "1.1.0".into(),
            events: 3,
            starts: 1,
            first_start: Some(OffsetDateTime::now_utc()),
            window_s: 300,
        }
    }

    #[test]
    fn round_trip_commit_and_roll_back() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        assert_eq!(layout.load().unwrap(), UpdateState::default());

        let mut s = UpdateState { trial: Some(trial()), ..Default::default() };
        let task = s.trial.as_ref().unwrap().task_id;
        layout.save(&s).unwrap();
        assert_eq!(layout.load().unwrap(), s);
        assert_eq!(s.task_in_flight(), Some(task));

        let mut committed = s.clone();
        committed.commit();
        assert_eq!(committed.current, Slot::A);
        assert_eq!(committed.current_version.as_deref(), Some("1.1.0"));
        assert_eq!(committed.finished.as_ref().unwrap().outcome, Outcome::Committed);
        layout.save(&committed).unwrap();
        assert_eq!(layout.load().unwrap(), committed);

        s.roll_back("crashed".into());
        assert_eq!(s.current, Slot::Installed);
        assert_eq!(s.current_version, None);
        assert_eq!(s.finished.as_ref().unwrap().outcome, Outcome::RolledBack { reason: "crashed".into() });
        assert_eq!(s.task_in_flight(), Some(task));
        layout.save(&s).unwrap();
        assert_eq!(layout.load().unwrap(), s);
    }

    #[test]
    fn slots_alternate_and_never_take_the_one_in_use() {
        assert_eq!(Slot::Installed.free(), Slot::A);
        assert_eq!(Slot::A.free(), Slot::B);
        assert_eq!(Slot::B.free(), Slot::A);
        let layout = Layout::new(Path::new("/s"));
        assert_eq!(layout.binary(Slot::Installed), None);
        assert_eq!(layout.binary(Slot::B).unwrap(), Path::new("/s/update/slots/b/hearth-agent"));
    }
}
