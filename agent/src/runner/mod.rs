//! Running one playbook with the real `ansible-playbook`, as the architecture's "Running a
//! playbook" contract says. Catalog tasks ([`crate::tasks`]) and configuration applies
//! ([`crate::desired`]) both run their playbooks through the [`Runner`]; it knows neither.
//!
//! ```text
//! ANSIBLE_CONFIG=<ansible_dir>/ansible.cfg ansible-playbook <ansible_dir>/<playbook> -e @<vars.json>
//! ```
//!
//! `vars.json` (mode 0600, in a fresh 0700 temporary directory removed afterwards) holds the
//! run's own variable (`params` for a task, `config` for `site.yml`) plus `hearth_root` and
//! `hearth_manage_services`. The child gets no stdin, runs in its own process group (so a
//! timeout or shutdown stops Ansible's workers too) and is killed if the run is dropped.
//! Each stdout line goes through [`parse_line`]; the last lines of stderr are kept for the
//! failure message. The run is stopped at its deadline ([`RunEnd::TimedOut`]) or when
//! cancelled ([`RunEnd::Cancelled`]).
//!
//! - [`callback`]: the `hearth_events` stdout lines → events (pure).

pub mod callback;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hearth_protocol::{Outcome, PlayStats};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::callback::{parse_line, truncate_chars, CallbackLine, PlayEvent};

/// How many stderr lines are kept for the failure message.
pub const STDERR_TAIL_LINES: usize = 20;
/// Longest stdout or stderr line read, in bytes; the rest of a longer line is discarded.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// After a timeout, how long Ansible gets to stop on SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// After `ansible-playbook` exits, how long its output may keep coming (a process it left
/// behind could hold the pipe open forever).
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Longest result message, in characters (a result may hold 8 KiB).
pub const MAX_RESULT_MESSAGE_CHARS: usize = 2000;

/// How to run playbooks on this appliance.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `ansible-playbook` command.
    pub ansible_playbook: PathBuf,
    /// The installed `ansible/` directory.
    pub ansible_dir: PathBuf,
    /// `hearth_root` for the playbooks.
    pub hearth_root: PathBuf,
    /// `hearth_manage_services` for the playbooks.
    pub manage_services: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// `ansible-playbook` exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// Stopped at the deadline.
    TimedOut,
    /// Stopped because the agent is shutting down.
    Cancelled,
    /// Could not be started.
    NotStarted(String),
}

/// What a run produced besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub end: RunEnd,
    /// The play recap, if the callback printed one.
    pub stats: Option<PlayStats>,
    /// The first failed task: its name and message.
    pub first_failure: Option<(Option<String>, String)>,
    /// The last lines of stderr.
    pub stderr_tail: Vec<String>,
}

/// The message of a task or apply stopped by shutdown.
pub const SHUTDOWN_MESSAGE: &str = "agent shutting down";

impl RunReport {
    /// A report for a run that could not start.
    pub fn not_started(why: impl Into<String>) -> Self {
        RunReport { end: RunEnd::NotStarted(why.into()), stats: None, first_failure: None, stderr_tail: Vec::new() }
    }

    /// Succeeded when `ansible-playbook` exited 0 and no task failed.
    pub fn outcome(&self) -> Outcome {
        match self.end {
            RunEnd::Exited(Some(0)) if self.stats.is_none_or(|s| s.failed == 0) => Outcome::Succeeded,
            RunEnd::TimedOut => Outcome::TimedOut,
            _ => Outcome::Failed,
        }
    }

    /// The recap on success, otherwise what went wrong (first failed task, exit status,
    /// stderr tail).
    pub fn message(&self) -> String {
        let recap = self.stats.map(|s| {
            format!(
                "ok={} changed={} failed={} skipped={} unreachable={}",
                s.ok, s.changed, s.failed, s.skipped, s.unreachable
            )
        });
        let mut parts: Vec<String> = Vec::new();
        match &self.end {
            RunEnd::Exited(Some(0)) if self.outcome() == Outcome::Succeeded => {
                return recap.unwrap_or_else(|| "the playbook finished".into());
            }
            RunEnd::Exited(code) => {
                if let Some((task, msg)) = &self.first_failure {
                    parts.push(match task {
                        Some(t) => format!("task {t:?} failed: {msg}"),
                        None => format!("a task failed: {msg}"),
                    });
                }
                parts.push(match code {
                    Some(c) => format!("ansible-playbook exited with status {c}"),
                    None => "ansible-playbook was killed by a signal".into(),
                });
            }
            RunEnd::TimedOut => parts.push("the run did not finish before its deadline and was stopped".into()),
            RunEnd::Cancelled => return SHUTDOWN_MESSAGE.into(),
            RunEnd::NotStarted(why) => return truncate_chars(why, MAX_RESULT_MESSAGE_CHARS),
        }
        if let Some(r) = recap {
            parts.push(r);
        }
        if !self.stderr_tail.is_empty() && self.end != RunEnd::TimedOut {
            parts.push(format!("stderr:\n{}", self.stderr_tail.join("\n")));
        }
        truncate_chars(&parts.join("; "), MAX_RESULT_MESSAGE_CHARS)
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`]; cancel-safe (a partial line stays in `buf`).
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    overflow: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, buf: Vec::new(), overflow: false }
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        self.overflow = false;
        line
    }

    /// The next line without its newline; `None` at the end.
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok((!self.buf.is_empty() || self.overflow).then(|| self.take()));
            }
            let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.buf.len());
            if chunk.len() > room {
                self.overflow = true;
            }
            self.buf.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
            self.inner.consume(used);
            if done {
                return Ok(Some(self.take()));
            }
        }
    }
}

/// Kills the child's process group when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<rustix::process::Pid>,
}

impl GroupGuard {
    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pgid) = self.pgid {
            if let Err(e) = rustix::process::kill_process_group(pgid, signal) {
                debug!(error = %e, "cannot signal the playbook's process group");
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::KILL);
    }
}

/// Writes `vars.json` (0600) into `dir`.
fn write_vars(dir: &Path, vars: &Value) -> std::io::Result<PathBuf> {
    let path = dir.join("vars.json");
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    let bytes = serde_json::to_vec(vars).map_err(std::io::Error::other)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(path)
}

/// Whether `playbook` is a plain relative path inside the ansible directory.
fn inside(playbook: &str) -> bool {
    let p = Path::new(playbook);
    !playbook.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Runner {
    /// The variables file's content: `{<key>: value, "hearth_root": …,
    /// "hearth_manage_services": …}`.
    pub fn vars(&self, key: &str, value: Value) -> Value {
        let mut vars = Map::new();
        vars.insert(key.to_string(), value);
        vars.insert("hearth_root".into(), Value::String(self.hearth_root.to_string_lossy().into_owned()));
        vars.insert("hearth_manage_services".into(), Value::Bool(self.manage_services));
        Value::Object(vars)
    }

    /// Runs `<ansible_dir>/<playbook>` with `{<key>: value, …}` as extra variables until it
    /// ends, `deadline` passes or `cancel` fires, handing each event to `on_event`.
    pub async fn run(
        &self,
        playbook: &str,
        key: &str,
        value: Value,
        deadline: Instant,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(PlayEvent) + Send),
    ) -> RunReport {
        if !inside(playbook) {
            return RunReport::not_started(format!(
                "the catalog names a playbook outside the ansible directory: {:?}",
                truncate_chars(playbook, 128)
            ));
        }
        // The directory (0700) and the file (0600) hold parameters or a configuration
        // document that may contain secrets; dropping `tmp` removes both.
        let tmp = match tempfile::Builder::new().prefix("hearth-run-").tempdir() {
            Ok(t) => t,
            Err(e) => return RunReport::not_started(format!("cannot create a temporary directory: {e}")),
        };
        let vars_path = match write_vars(tmp.path(), &self.vars(key, value)) {
            Ok(p) => p,
            Err(e) => return RunReport::not_started(format!("cannot write vars.json: {e}")),
        };
        let mut extra = OsString::from("@");
        extra.push(&vars_path);
        let mut cmd = Command::new(&self.ansible_playbook);
        // Only our ansible.cfg decides how Ansible behaves: inherited ANSIBLE_* settings
        // would override it. Ansible refuses to start without a UTF-8 locale.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ANSIBLE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C.UTF-8");
        cmd.arg(self.ansible_dir.join(playbook))
            .arg("-e")
            .arg(extra)
            .env("ANSIBLE_CONFIG", self.ansible_dir.join("ansible.cfg"))
            .env("PYTHONUNBUFFERED", "1")
            .env("ANSIBLE_NOCOLOR", "1")
            .current_dir(&self.ansible_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return RunReport::not_started(format!("cannot start {}: {e}", self.ansible_playbook.display())),
        };
        let mut guard = GroupGuard {
            pgid: child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw),
        };
        let report = supervise(&mut child, &guard, deadline, cancel, on_event).await;
        // Reaped: the group id may be reused from now on, so do not signal it again.
        if child.try_wait().ok().flatten().is_some() {
            guard.pgid = None;
        }
        drop(tmp);
        report
    }
}

/// Reads the child's output until it ends, the deadline passes or `cancel` fires.
async fn supervise(
    child: &mut Child,
    guard: &GroupGuard,
    deadline: Instant,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(PlayEvent) + Send),
) -> RunReport {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::new();
        if let Some(stderr) = stderr {
            let mut lines = LineReader::new(BufReader::new(stderr));
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(truncate_chars(&line, 500));
            }
        }
        tail
    });

    let mut stats = None;
    let mut first_failure = None;
    let mut exit: Option<Option<i32>> = None;
    let mut stopped: Option<RunEnd> = None;
    let mut output_until: Option<Instant> = None;
    let mut lines = stdout.map(|s| LineReader::new(BufReader::new(s)));
    let mut stdout_open = lines.is_some();

    while stdout_open || exit.is_none() {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                guard.signal(rustix::process::Signal::KILL);
                stopped = Some(RunEnd::Cancelled);
                break;
            }
            _ = tokio::time::sleep_until(deadline) => {
                guard.signal(rustix::process::Signal::TERM);
                if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                    guard.signal(rustix::process::Signal::KILL);
                }
                stopped = Some(RunEnd::TimedOut);
                break;
            }
            _ = tokio::time::sleep_until(output_until.unwrap_or_else(Instant::now)), if output_until.is_some() => {
                debug!("ansible-playbook exited but its output is still open; not waiting for it");
                break;
            }
            status = child.wait(), if exit.is_none() => {
                exit = Some(match status {
                    Ok(s) => s.code(),
                    Err(e) => {
                        warn!(error = %e, "cannot wait for ansible-playbook");
                        None
                    }
                });
                output_until = Some(Instant::now() + OUTPUT_GRACE);
            }
            line = async {
                match lines.as_mut() {
                    Some(l) => l.next_line().await,
                    None => Ok(None),
                }
            }, if stdout_open => {
                match line {
                    Ok(Some(line)) => match parse_line(&line) {
                        Some(CallbackLine::Stats(s)) => stats = Some(s),
                        Some(CallbackLine::Event(e)) => {
                            if e.kind == hearth_protocol::TaskEventKind::TaskFailed && first_failure.is_none() {
                                first_failure = Some((e.task.clone(), e.message.clone()));
                            }
                            on_event(e);
                        }
                        None => {}
                    },
                    Ok(None) => stdout_open = false,
                    Err(e) => {
                        warn!(error = %e, "cannot read ansible-playbook's output");
                        stdout_open = false;
                    }
                }
            }
        }
    }
    if stopped.is_some() {
        // Reap it (it was signalled); bounded, in case it is stuck in the kernel.
        let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
    }
    let stderr_tail = match tokio::time::timeout(OUTPUT_GRACE, stderr_task).await {
        Ok(Ok(tail)) => tail.into_iter().collect(),
        _ => Vec::new(),
    };
    RunReport { end: stopped.unwrap_or(RunEnd::Exited(exit.flatten())), stats, first_failure, stderr_tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_bounds_lines() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("a\n\n{long}\nlast");
        let mut r = LineReader::new(BufReader::new(input.as_bytes()));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("a"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some(""));
        assert_eq!(r.next_line().await.unwrap().map(|l| l.len()), Some(MAX_LINE_BYTES));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("last"));
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[test]
    fn playbook_paths_stay_inside() {
        assert!(inside("playbooks/users_add.yml"));
        assert!(inside("site.yml"));
        for bad in ["", "/etc/x.yml", "../x.yml", "playbooks/../../x.yml", "./x.yml"] {
            assert!(!inside(bad), "{bad}");
        }
    }

    #[test]
    fn outcomes_and_messages() {
        let stats = PlayStats { ok: 2, changed: 1, ..PlayStats::default() };
        let ok =
            RunReport { end: RunEnd::Exited(Some(0)), stats: Some(stats), first_failure: None, stderr_tail: vec![] };
        assert_eq!(ok.outcome(), Outcome::Succeeded);
        assert_eq!(ok.message(), "ok=2 changed=1 failed=0 skipped=0 unreachable=0");
        let failed = RunReport {
            end: RunEnd::Exited(Some(2)),
            first_failure: Some((Some("t".into()), "boom".into())),
            stderr_tail: vec!["ERROR! x".into()],
            ..ok.clone()
        };
        assert_eq!(failed.outcome(), Outcome::Failed);
        assert_eq!(
            failed.message(),
            "task \"t\" failed: boom; ansible-playbook exited with status 2; \
             ok=2 changed=1 failed=0 skipped=0 unreachable=0; stderr:\nERROR! x"
        );
        let counted = RunReport { stats: Some(PlayStats { failed: 1, ..stats }), ..ok.clone() };
        assert_eq!(counted.outcome(), Outcome::Failed);
        let timed_out = RunReport { end: RunEnd::TimedOut, ..ok.clone() };
        assert_eq!(timed_out.outcome(), Outcome::TimedOut);
        let cancelled = RunReport { end: RunEnd::Cancelled, ..ok.clone() };
        assert_eq!((cancelled.outcome(), cancelled.message().as_str()), (Outcome::Failed, SHUTDOWN_MESSAGE));
        let missing = RunReport::not_started("cannot start x");
        assert_eq!((missing.outcome(), missing.message().as_str()), (Outcome::Failed, "cannot start x"));
    }
}
