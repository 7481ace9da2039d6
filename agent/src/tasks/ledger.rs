//! The task ledger: one file per task id in `<state_dir>/tasks/`, so that a task is run at
//! most once, whatever the broker redelivers and however the agent stops.
//!
//! A record is written (atomically, mode 0600) when the task arrives (`received`, holding
//! the dispatch so a task queued when the agent stopped still runs after a restart), moves
//! to `running` just before `ansible-playbook` starts, and to `done` with the final
//! [`TaskResult`] (the dispatch, which may hold secrets, is then dropped). `reported`
//! becomes true once the result is in the spool.
//!
//! A task id already in the ledger is never run again: a `done` one is answered with its
//! stored result; one found `running` at start-up (the agent died during the run) is
//! finished as failed with [`RESTARTED_MESSAGE`].

use std::fs;
use std::path::{Path, PathBuf};

use hearth_protocol::{TaskDispatch, TaskId, TaskResult};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::warn;

use crate::state::{create_dir, sync_dir, write_atomic, StateError};

/// The result message of a task that was running when the agent stopped.
pub const RESTARTED_MESSAGE: &str = "the agent restarted while the task was running";

/// Mode of ledger files (a received task's parameters may hold a password).
pub const FILE_MODE: u32 = 0o600;

/// A ledger that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("task ledger: {0}")]
    State(#[from] StateError),
    #[error("task ledger: {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("task ledger: {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Recorded, not started.
    Received,
    /// `ansible-playbook` was (about to be) started.
    Running,
    /// Finished; the result is stored.
    Done,
}

/// One task's record.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub task_id: TaskId,
    pub state: TaskState,
    pub action: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The dispatch, kept until the task is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<TaskDispatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Whether the result was put in the spool.
    #[serde(default)]
    pub reported: bool,
}

impl std::fmt::Debug for Record {
    /// Leaves out the parameters (they may hold secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("task_id", &self.task_id)
            .field("state", &self.state)
            .field("action", &self.action)
            .field("received_at", &self.received_at)
            .field("outcome", &self.result.as_ref().map(|r| r.outcome))
            .field("reported", &self.reported)
            .finish_non_exhaustive()
    }
}

/// The ledger directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_path_buf(), source }
}

impl Ledger {
    /// Opens (creating, mode 0700) the ledger in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        create_dir(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: TaskId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The record of `id`, if there is one.
    pub fn get(&self, id: TaskId) -> Result<Option<Record>, LedgerError> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| LedgerError::Parse { path, detail: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes `record` durably.
    pub fn put(&self, record: &Record) -> Result<(), LedgerError> {
        let path = self.path(record.task_id);
        let bytes =
            serde_json::to_vec(record).map_err(|e| LedgerError::Parse { path: path.clone(), detail: e.to_string() })?;
        write_atomic(&path, &bytes, FILE_MODE)?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Records a newly arrived task as `received`, unless its id is known already. Returns
    /// whether it was new.
    pub fn record_received(&self, dispatch: &TaskDispatch) -> Result<bool, LedgerError> {
        if self.path(dispatch.task_id).exists() {
            return Ok(false);
        }
        self.put(&Record {
            task_id: dispatch.task_id,
            state: TaskState::Received,
            action: dispatch.action.clone(),
            received_at: OffsetDateTime::now_utc(),
            dispatch: Some(dispatch.clone()),
            result: None,
            reported: false,
        })?;
        Ok(true)
    }

    /// Every record; unreadable files are logged and skipped.
    pub fn all(&self) -> Result<Vec<Record>, LedgerError> {
        let mut records = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let item = item.map_err(io_err(&self.dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").and_then(|n| n.parse::<TaskId>().ok()) else {
                if name.starts_with('.') {
                    let _ = fs::remove_file(item.path()); // an unfinished write
                }
                continue;
            };
            match self.get(id) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "skipping an unreadable task record"),
            }
        }
        records.sort_by_key(|r| r.received_at);
        Ok(records)
    }

    /// Removes `done` and reported records received before `before`.
    pub fn prune(&self, before: OffsetDateTime) -> Result<usize, LedgerError> {
        let mut removed = 0;
        for r in self.all()? {
            if r.state == TaskState::Done && r.reported && r.received_at < before {
                let path = self.path(r.task_id);
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use hearth_protocol::{Outcome, ProtocolVersion};

    use super::*;

    fn dispatch() -> TaskDispatch {
        TaskDispatch {
            v: ProtocolVersion,
            task_id: TaskId::new(),
            action: "users.add".into(),
            params: serde_json::json!({"username": "alice"}).as_object().cloned().unwrap_or_default(),
            deadline: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn received_once_then_done() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&tmp.path().join("tasks")).unwrap();
        let d = dispatch();
        assert!(ledger.record_received(&d).unwrap());
        assert!(!ledger.record_received(&d).unwrap(), "a duplicate is not new");
        let mut r = ledger.get(d.task_id).unwrap().unwrap();
        assert_eq!(r.state, TaskState::Received);
        assert_eq!(r.dispatch.as_ref(), Some(&d));
        r.state = TaskState::Done;
        r.dispatch = None;
        r.result = Some(TaskResult {
            v: ProtocolVersion,
            task_id: d.task_id,
            outcome: Outcome::Succeeded,
            message: None,
            stats: None,
            events: 0,
            at: OffsetDateTime::now_utc(),
        });
        ledger.put(&r).unwrap();
        assert_eq!(ledger.all().unwrap(), vec![r.clone()]);
        assert!(!format!("{r:?}").contains("alice"));

        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(ledger.path(d.task_id)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        assert_eq!(ledger.prune(OffsetDateTime::now_utc()).unwrap(), 0, "not reported yet");
        r.reported = true;
        ledger.put(&r).unwrap();
        assert_eq!(ledger.prune(r.received_at).unwrap(), 0, "too recent");
        assert_eq!(ledger.prune(OffsetDateTime::now_utc()).unwrap(), 1);
        assert!(ledger.all().unwrap().is_empty());
    }
}
