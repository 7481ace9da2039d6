//! The health gate of a new version on trial, and the report of how an update ended.
//!
//! The gate commits the new version once it (1) is connected to the broker, (2) passes its
//! self-check (the state directory is writable, `ansible-playbook` runs), and (3) sees, over
//! HTTPS with its client certificate, that the control plane has stored a heartbeat of this
//! version newer than when the gate began. A watchdog thread — independent of the async
//! runtime, so a wedged runtime cannot stop it — rolls back and restarts into the previous
//! binary when the window closes first, naming the step that was still missing.
//!
//! [`report_finished`] turns the outcome in `update.toml` into the task's last event and its
//! result (committed → succeeded; rolled back → failed, with the reason), in whichever
//! binary runs next.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_protocol::{Outcome as TaskOutcome, ProtocolVersion, TaskEvent, TaskEventKind};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::download::Reach;
use super::launch;
use super::{Layout, Outcome, Trial};
use crate::spool::Outbox;
use crate::tasks::ledger::{Ledger, TaskState};

/// How often the gate asks the control plane for the stored heartbeat.
const POLL: Duration = Duration::from_secs(2);

/// The trial this very process is, if it is one: the trial's slot binary, running the
/// trial's version.
pub fn this_trial(state_dir: &Path) -> Option<Trial> {
    let layout = Layout::new(state_dir);
    let trial = layout.load().ok()?.trial?;
    let exe = std::env::current_exe().and_then(|p| p.canonicalize()).ok()?;
    let slot = layout.binary(trial.to)?.canonicalize().ok()?;
    (exe == slot && trial.version == crate::VERSION).then_some(trial)
}

/// What the gate is waiting for, shared with the watchdog.
#[derive(Debug)]
struct Progress {
    waiting_for: String,
    /// Committed or rolled back: the other side stays still.
    decided: bool,
}

/// The health gate of one trial.
#[derive(Debug)]
pub struct Gate {
    pub state_dir: PathBuf,
    pub trial: Trial,
    pub control_plane: Reach,
    pub ansible_playbook: PathBuf,
    /// `Some(generation)` while connected to the broker.
    pub connected: watch::Receiver<Option<u64>>,
    pub ledger: Ledger,
    pub outbox: Outbox,
}

impl Gate {
    /// Starts the watchdog thread and the gate itself.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let deadline = self
            .trial
            .deadline()
            .unwrap_or_else(|| OffsetDateTime::now_utc() + time::Duration::seconds(self.trial.window_s as i64));
        let progress =
            Arc::new(Mutex::new(Progress { waiting_for: "a connection to the broker".into(), decided: false }));
        info!(version = %self.trial.version, %deadline, "on trial: waiting for the health gate");
        let watched = progress.clone();
        let state_dir = self.state_dir.clone();
        let (version, window_s) = (self.trial.version.clone(), self.trial.window_s);
        std::thread::Builder::new()
            .name("update-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                if OffsetDateTime::now_utc() < deadline {
                    continue;
                }
                let mut p = watched.lock().unwrap_or_else(|e| e.into_inner());
                if p.decided {
                    return;
                }
                p.decided = true;
                let reason = format!(
                    "version {version} did not pass its health gate within {window_s} s: still waiting for {}",
                    p.waiting_for
                );
                let err = launch::roll_back_and_restart(&state_dir, reason);
                error!(error = %err, "cannot restart into the previous version; exiting");
                std::process::exit(75);
            })
            .map(drop)
            .unwrap_or_else(|e| error!(error = %e, "cannot start the update watchdog"));
        tokio::spawn(self.run(progress))
    }

    async fn run(mut self, progress: Arc<Mutex<Progress>>) {
        let started = std::time::Instant::now();
        let set = |what: String| progress.lock().unwrap_or_else(|e| e.into_inner()).waiting_for = what;
        if self.connected.wait_for(Option::is_some).await.is_err() {
            return;
        }
        set("its self-check".into());
        if let Err(problem) = self_check(&self.state_dir, &self.ansible_playbook).await {
            self.roll_back_now(&progress, format!("version {} failed its self-check: {problem}", self.trial.version));
            return;
        }
        let cp = match self.control_plane.client() {
            Ok(cp) => cp,
            Err(e) => {
                let reason = format!("version {} cannot reach the control plane: {e}", self.trial.version);
                self.roll_back_now(&progress, reason);
                return;
            }
        };
        set(format!("the control plane to store a heartbeat of version {}", self.trial.version));
        let mut baseline: Option<Option<OffsetDateTime>> = None;
        loop {
            match cp.appliance_self().await {
                Ok(s) => match baseline {
                    None => baseline = Some(s.last_seen),
                    Some(before) => {
                        if s.agent_version.as_deref() == Some(crate::VERSION) && s.last_seen > before {
                            break;
                        }
                    }
                },
                Err(e) => {
                    warn!(error = %e, "health gate: cannot read the stored heartbeat");
                    set(format!(
                        "the control plane to store a heartbeat of version {} (last error: {e})",
                        self.trial.version
                    ));
                }
            }
            tokio::time::sleep(POLL).await;
        }
        {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            if p.decided {
                return;
            }
            p.decided = true;
            let layout = Layout::new(&self.state_dir);
            let mut st = match layout.load() {
                Ok(s) => s,
                Err(e) => {
                    drop(p);
                    self.roll_back_now(&progress, format!("cannot read the update state to commit: {e}"));
                    return;
                }
            };
            st.commit();
            if let Err(e) = layout.save(&st) {
                error!(error = %e, "cannot record the commit; the next start rolls back");
                return;
            }
        }
        info!(version = crate::VERSION, took_s = started.elapsed().as_secs(), "agent update committed");
        report_finished(&self.state_dir, &self.ledger, &self.outbox);
    }

    /// Rolls back now (a check failed for certain) and restarts into the previous binary.
    fn roll_back_now(&self, progress: &Mutex<Progress>, reason: String) {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        if p.decided {
            return;
        }
        p.decided = true;
        let err = launch::roll_back_and_restart(&self.state_dir, reason);
        error!(error = %err, "cannot restart into the previous version; exiting");
        std::process::exit(75);
    }
}

/// The new version's own check: it can write its state and run playbooks.
async fn self_check(state_dir: &Path, ansible_playbook: &Path) -> Result<(), String> {
    let probe = state_dir.join(".update-self-check");
    crate::state::write_atomic(&probe, b"ok\n", 0o600)
        .map_err(|e| format!("the state directory is not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    let run = tokio::process::Command::new(ansible_playbook)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("`{} --version` exited with {s}", ansible_playbook.display())),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", ansible_playbook.display())),
        Err(_) => Err(format!("`{} --version` did not finish within 60 s", ansible_playbook.display())),
    }
}

/// Reports the outcome `update.toml` holds (if any) as the update task's last event and
/// result, then forgets it.
pub fn report_finished(state_dir: &Path, ledger: &Ledger, outbox: &Outbox) {
    let layout = Layout::new(state_dir);
    let Ok(mut st) = layout.load() else { return };
    let Some(f) = st.finished.take() else { return };
    let (kind, outcome, message) = match &f.outcome {
        Outcome::Committed => (
            TaskEventKind::Committed,
            TaskOutcome::Succeeded,
            format!(
                "version {} committed (was {}): connected, heartbeat stored and self-check passed {} s after its first start",
                f.version, f.from_version, f.took_s
            ),
        ),
        Outcome::RolledBack { reason } => (
            TaskEventKind::RolledBack,
            TaskOutcome::Failed,
            format!("rolled back to version {}: {reason}", f.from_version),
        ),
    };
    match ledger.get(f.task_id) {
        Ok(Some(mut record)) if record.state != TaskState::Done => {
            let event = TaskEvent {
                v: ProtocolVersion,
                task_id: f.task_id,
                seq: f.events + 1,
                kind,
                task: None,
                message: message.clone(),
                at: OffsetDateTime::now_utc(),
            };
            if let Err(e) = outbox.task_event(&event) {
                warn!(task = %f.task_id, error = %e, "cannot spool the update's last event");
            }
            crate::tasks::finish(ledger, outbox, &mut record, outcome, message, None, f.events + 1);
        }
        Ok(_) => {}
        Err(e) => warn!(task = %f.task_id, error = %e, "cannot read the update task's record"),
    }
    if let Err(e) = layout.save(&st) {
        warn!(error = %e, "cannot record that the update was reported");
    }
}
