//! Catalog tasks and configuration applies, run one at a time by the [`Worker`].
//!
//! The event loop owner decodes `down/task` and `down/config`, records a task in the
//! [`ledger`] as it arrives, and queues a [`Job`]; the worker, a separate tokio task, takes
//! jobs one by one, so the MQTT event loop keeps being polled while a playbook runs and no
//! two playbooks ever run at once on the appliance.
//!
//! For a task the worker: answers a task id it has finished already with the stored result
//! (one found running after a restart is failed, never run again); checks the action and
//! parameters with the agent's own catalog (a refusal is `rejected` with the rule's
//! message); refuses a task past its deadline (`timed_out`); otherwise marks it running,
//! emits `received`, runs the playbook with the [`Runner`], turns each callback line into a
//! [`TaskEvent`] (seq 1, 2, …) and ends with a [`TaskResult`] carrying the play recap.
//! Events and results go to the spool ([`Outbox`]); the result is also kept in the ledger.
//!
//! - [`ledger`]: the on-disk record that makes each task id run at most once.
//!
//! Running a playbook ([`crate::runner`]) is shared with configuration applies.

pub mod ledger;

use std::time::Duration;

use hearth_protocol::artifact::UPDATE_ACTION;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{
    ConfigDocument, Outcome, PlayStats, ProtocolVersion, TaskDispatch, TaskEvent, TaskEventKind, TaskResult,
};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::ledger::{Ledger, LedgerError, Record, TaskState, RESTARTED_MESSAGE};
use crate::desired::Desired;
use crate::runner::callback::PlayEvent;
use crate::runner::Runner;
use crate::spool::Outbox;
use crate::update::install::{Step, Updater};

/// How long finished tasks stay in the ledger (redeliveries older than this are unlikely:
/// the control plane times tasks out at their deadline).
pub const LEDGER_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// How often finished tasks whose result could not be put in the spool (its file system
/// full) are spooled again while the agent runs. Before, only the next start did, so a
/// task finished on a full disk stayed `running` at the control plane until its deadline
/// although space came back (found by the fault suite, deploy/faults, `disk-full`).
pub const UNREPORTED_RETRY: Duration = Duration::from_secs(10);

/// Something for the worker to do.
pub enum Job {
    Task(TaskDispatch),
    Config(ConfigDocument),
}

impl std::fmt::Debug for Job {
    /// Names the job only: parameters and documents may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Task(d) => {
                f.debug_struct("Task").field("task_id", &d.task_id).field("action", &d.action).finish_non_exhaustive()
            }
            Job::Config(c) => f.debug_struct("Config").field("version", &c.version).finish_non_exhaustive(),
        }
    }
}

/// Runs tasks and configuration applies, one at a time.
#[derive(Debug)]
pub struct Worker {
    /// The agent's own installed catalog.
    pub catalog: Catalog,
    pub policy: Policy,
    pub runner: Runner,
    pub ledger: Ledger,
    pub outbox: Outbox,
    pub desired: Desired,
    /// The longest any playbook may run, whatever the task's deadline.
    pub task_timeout: Duration,
    /// Runs `agent.update` tasks; `None` refuses them.
    pub updater: Option<Updater>,
}

impl Worker {
    /// Settles what an earlier run of the agent left: tasks found `running` are finished as
    /// failed ([`RESTARTED_MESSAGE`]), finished results not yet spooled are spooled, old
    /// records are pruned. Returns the tasks that were received but never started, oldest
    /// first, to be queued again.
    pub fn recover(&self) -> Result<Vec<TaskDispatch>, LedgerError> {
        let mut queued = Vec::new();
        // An agent update in flight is finished by the update itself (committed or rolled
        // back), not failed for the restart it asked for.
        let update = self.updater.as_ref().and_then(Updater::in_flight);
        for mut record in self.ledger.all()? {
            if Some(record.task_id) == update {
                continue;
            }
            match record.state {
                TaskState::Running => {
                    warn!(task = %record.task_id, action = %record.action, "the task was running when the agent stopped; reporting it failed");
                    self.finish(&mut record, Outcome::Failed, RESTARTED_MESSAGE.into(), None, 0);
                }
                TaskState::Done if !record.reported => match record.result.clone() {
                    Some(result) => self.report(&mut record, &result),
                    None => {
                        self.finish(&mut record, Outcome::Failed, "the task's record is incomplete".into(), None, 0);
                    }
                },
                TaskState::Done => {}
                TaskState::Received => match record.dispatch.take() {
                    Some(d) => queued.push(d),
                    None => {
                        self.finish(&mut record, Outcome::Failed, "the task's record is incomplete".into(), None, 0);
                    }
                },
            }
        }
        let cutoff = OffsetDateTime::now_utc() - LEDGER_RETENTION;
        match self.ledger.prune(cutoff) {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "pruned old task records"),
            Err(e) => warn!(error = %e, "cannot prune old task records"),
        }
        Ok(queued)
    }

    /// Takes jobs (first `initial`, then from `jobs`) until `cancel` fires or the queue
    /// closes. A playbook running when `cancel` fires is stopped and its task reported
    /// failed ("agent shutting down").
    pub async fn run(mut self, initial: Vec<Job>, mut jobs: mpsc::Receiver<Job>, cancel: CancellationToken) {
        let mut initial = initial.into_iter();
        let mut retry = tokio::time::interval_at(Instant::now() + UNREPORTED_RETRY, UNREPORTED_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let job = match initial.next() {
                Some(j) => j,
                None => tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    job = jobs.recv() => match job {
                        Some(j) => j,
                        None => return,
                    },
                    _ = retry.tick() => {
                        self.report_unreported();
                        continue;
                    }
                },
            };
            if cancel.is_cancelled() {
                return;
            }
            match job {
                Job::Task(d) => {
                    let switched = self.task(d, &cancel).await.is_none()
                        && self.updater.as_ref().is_some_and(|u| u.restart.is_cancelled());
                    if switched {
                        // An agent update switched: the agent restarts into the new version.
                        return;
                    }
                }
                Job::Config(doc) => {
                    let deadline = Instant::now() + self.task_timeout;
                    self.desired.handle(doc, &self.runner, deadline, &cancel, &self.outbox).await;
                }
            }
        }
    }

    /// Handles one task from arrival to result (see the module documentation) and returns
    /// the result it reported; `None` when an agent update switched to a new version, whose
    /// start reports the result.
    pub async fn task(&self, d: TaskDispatch, cancel: &CancellationToken) -> Option<TaskResult> {
        if d.action == UPDATE_ACTION {
            if self.updater.as_ref().and_then(Updater::in_flight) == Some(d.task_id) {
                info!(task = %d.task_id, "the agent update is in flight already");
                return None;
            }
            return self.update(d, cancel).await;
        }
        Some(self.run_task(d, cancel).await)
    }

    /// The task's record, ready to start; or, when it must not start (done already, left
    /// running by an earlier run, unreadable), the result to answer with.
    fn open_record(&self, d: &TaskDispatch) -> Result<Record, TaskResult> {
        let id = d.task_id;
        let mut record = match self.ledger.get(id) {
            Ok(Some(r)) => r,
            Ok(None) => Record {
                task_id: id,
                state: TaskState::Received,
                action: d.action.clone(),
                received_at: OffsetDateTime::now_utc(),
                dispatch: None,
                result: None,
                reported: false,
            },
            Err(e) => {
                error!(task = %id, error = %e, "cannot read the task's record; not running it");
                let mut record = Record {
                    task_id: id,
                    state: TaskState::Done,
                    action: d.action.clone(),
                    received_at: OffsetDateTime::now_utc(),
                    dispatch: None,
                    result: None,
                    reported: false,
                };
                let message = format!("cannot read the task ledger: {e}");
                return Err(self.finish(&mut record, Outcome::Failed, message, None, 0));
            }
        };
        match record.state {
            TaskState::Done => {
                if let Some(result) = record.result.clone() {
                    info!(task = %id, "task already done; sending its result again");
                    self.report(&mut record, &result);
                    return Err(result);
                }
                let message = "the task's record is incomplete".to_string();
                Err(self.finish(&mut record, Outcome::Failed, message, None, 0))
            }
            TaskState::Running => {
                // Only an earlier run of the agent can have left it running (this one runs
                // tasks one at a time and finishes each before taking the next).
                Err(self.finish(&mut record, Outcome::Failed, RESTARTED_MESSAGE.into(), None, 0))
            }
            TaskState::Received => Ok(record),
        }
    }

    /// Marks the task running in the ledger (`Err`: the failure result; without the record
    /// a crash could make the task run twice, so it does not run).
    fn mark_running(&self, record: &mut Record) -> Result<(), TaskResult> {
        record.state = TaskState::Running;
        record.dispatch = None;
        if let Err(e) = self.ledger.put(record) {
            error!(task = %record.task_id, error = %e, "cannot record the task as running; not running it");
            let message = format!("cannot record the task on disk: {e}");
            return Err(self.finish(record, Outcome::Failed, message, None, 0));
        }
        Ok(())
    }

    /// An `agent.update` task ([`crate::update`]): `None` once the new version is installed
    /// and the agent restarts into it.
    async fn update(&self, d: TaskDispatch, cancel: &CancellationToken) -> Option<TaskResult> {
        let id = d.task_id;
        let mut record = match self.open_record(&d) {
            Ok(r) => r,
            Err(result) => return Some(result),
        };
        let Some(updater) = &self.updater else {
            let message = "this agent was started without self-update".to_string();
            return Some(self.finish(&mut record, Outcome::Rejected, message, None, 0));
        };
        if d.deadline <= OffsetDateTime::now_utc() {
            let message = "the deadline passed before the task could start".to_string();
            return Some(self.finish(&mut record, Outcome::TimedOut, message, None, 0));
        }
        if let Err(result) = self.mark_running(&mut record) {
            return Some(result);
        }
        info!(task = %id, "running an agent update");
        let mut seq: u64 = 0;
        let mut emit = |kind: TaskEventKind, message: String| {
            seq += 1;
            let event = TaskEvent {
                v: ProtocolVersion,
                task_id: id,
                seq,
                kind,
                task: None,
                message,
                at: OffsetDateTime::now_utc(),
            };
            if let Err(err) = self.outbox.task_event(&event) {
                warn!(task = %id, seq, error = %err, "cannot spool a task event; dropping it");
            }
            seq
        };
        emit(TaskEventKind::Received, format!("accepted {UPDATE_ACTION} from version {}", crate::VERSION));
        match updater.run(&d, &mut emit, cancel).await {
            Step::Done(outcome, message) => Some(self.finish(&mut record, outcome, message, None, seq)),
            Step::Switched => None,
        }
    }

    async fn run_task(&self, d: TaskDispatch, cancel: &CancellationToken) -> TaskResult {
        let id = d.task_id;
        let mut record = match self.open_record(&d) {
            Ok(r) => r,
            Err(result) => return result,
        };

        let (playbook, params) = match self.catalog.validate(&d.action, &d.params, &self.policy) {
            Ok((action, params)) => (action.playbook.clone(), params),
            Err(rejection) => {
                info!(task = %id, action = %d.action, rule = rejection.rule, param = rejection.param.as_deref(), "task rejected");
                return self.finish(&mut record, Outcome::Rejected, rejection.message, None, 0);
            }
        };
        let now = OffsetDateTime::now_utc();
        if d.deadline <= now {
            let message = "the deadline passed before the task could start".to_string();
            return self.finish(&mut record, Outcome::TimedOut, message, None, 0);
        }
        if let Err(result) = self.mark_running(&mut record) {
            return result;
        }

        info!(task = %id, action = %d.action, "running task");
        let mut seq: u64 = 0;
        let mut emit = |e: PlayEvent| {
            seq += 1;
            let event = TaskEvent {
                v: ProtocolVersion,
                task_id: id,
                seq,
                kind: e.kind,
                task: e.task,
                message: e.message,
                at: OffsetDateTime::now_utc(),
            };
            if let Err(err) = self.outbox.task_event(&event) {
                warn!(task = %id, seq, error = %err, "cannot spool a task event; dropping it");
            }
        };
        emit(PlayEvent { kind: TaskEventKind::Received, task: None, message: format!("accepted {}", d.action) });
        let remaining = Duration::try_from(d.deadline - now).unwrap_or_default().min(self.task_timeout);
        let report = self
            .runner
            .run(&playbook, "params", Value::Object(params), Instant::now() + remaining, cancel, &mut emit)
            .await;
        self.finish(&mut record, report.outcome(), report.message(), report.stats, seq)
    }

    /// Stores the result in the ledger, spools it, and marks it reported.
    fn finish(
        &self,
        record: &mut Record,
        outcome: Outcome,
        message: String,
        stats: Option<PlayStats>,
        events: u64,
    ) -> TaskResult {
        finish(&self.ledger, &self.outbox, record, outcome, message, stats, events)
    }

    fn report(&self, record: &mut Record, result: &TaskResult) {
        report(&self.ledger, &self.outbox, record, result)
    }

    /// Spools the results of finished tasks that are not in the spool yet.
    fn report_unreported(&self) {
        let records = match self.ledger.all() {
            Ok(records) => records,
            Err(e) => {
                warn!(error = %e, "cannot read the task ledger to report finished tasks");
                return;
            }
        };
        for mut record in records {
            if record.state != TaskState::Done || record.reported {
                continue;
            }
            if let Some(result) = record.result.clone() {
                info!(task = %record.task_id, "spooling a finished task's result again");
                self.report(&mut record, &result);
            }
        }
    }
}

/// Stores a task's result in the ledger, spools it, and marks it reported (also for an
/// agent update, whose result the next binary reports).
pub fn finish(
    ledger: &Ledger,
    outbox: &Outbox,
    record: &mut Record,
    outcome: Outcome,
    message: String,
    stats: Option<PlayStats>,
    events: u64,
) -> TaskResult {
    let result = TaskResult {
        v: ProtocolVersion,
        task_id: record.task_id,
        outcome,
        message: Some(message),
        stats,
        events,
        at: OffsetDateTime::now_utc(),
    };
    record.state = TaskState::Done;
    record.dispatch = None;
    record.result = Some(result.clone());
    record.reported = false;
    if let Err(e) = ledger.put(record) {
        error!(task = %record.task_id, error = %e, "cannot record the task's result");
    }
    info!(task = %record.task_id, action = %record.action, ?outcome, "task finished");
    report(ledger, outbox, record, &result);
    result
}

/// Spools `result` and records that it was.
fn report(ledger: &Ledger, outbox: &Outbox, record: &mut Record, result: &TaskResult) {
    match outbox.task_result(result) {
        Ok(_) => {
            if !record.reported {
                record.reported = true;
                if let Err(e) = ledger.put(record) {
                    warn!(task = %record.task_id, error = %e, "cannot record that the result was spooled");
                }
            }
        }
        Err(e) => error!(task = %record.task_id, error = %e, "cannot spool the task's result"),
    }
}
