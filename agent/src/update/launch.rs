//! What `hearth-agent run` does first, before anything else: pick the binary to run.
//!
//! The supervisor (systemd's `Restart=on-failure`, or the quickstart's restart loop) always
//! starts the *installed* binary. It reads `update.toml`, and:
//!
//! - a trial in progress: counts this start; past [`MAX_STARTS`] starts, or past the health
//!   window, the trial is rolled back (the previous binary is current again, the reason is
//!   kept to be reported) — so a new version that crashes at start, or hangs, ends in the
//!   old one;
//! - the installed binary's file changed since a slot became current (a package upgraded by
//!   hand): the installed binary runs again, and a trial in progress is rolled back;
//! - then, if a slot is current, `exec`s its binary with the same arguments (same process,
//!   so the supervisor sees one service); a binary that cannot be executed is rolled back.
//!
//! A slot's binary runs this too and finds itself already running: it goes on.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use tracing::{error, info, warn};

use super::{Layout, Slot, UpdateState, MAX_STARTS};

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// Go on in this process.
    RunHere,
    /// Replace this process with that binary.
    Exec(PathBuf),
}

/// Decides which binary runs, updating `update.toml` (see the module documentation).
/// Problems are logged and the installed binary runs: an update must never keep the agent
/// from starting.
pub fn prepare(state_dir: &Path) -> Launch {
    let exe = match std::env::current_exe().and_then(|p| p.canonicalize()) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot tell which binary this is; running it");
            return Launch::RunHere;
        }
    };
    let layout = Layout::new(state_dir);
    if let Ok(slots) = layout.slots_dir().canonicalize() {
        if exe.starts_with(slots) {
            return Launch::RunHere;
        }
    }
    let mut st = match layout.load() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot read the update state; running the installed binary");
            return Launch::RunHere;
        }
    };
    let installed_id = match std::fs::metadata(&exe) {
        Ok(m) => Some(file_id(&m)),
        Err(e) => {
            warn!(error = %e, binary = %exe.display(), "cannot read the installed binary");
            None
        }
    };
    let before = st.clone();
    let launch = decide(&mut st, &layout, &exe, installed_id, OffsetDateTime::now_utc());
    if st != before {
        if let Err(e) = layout.save(&st) {
            error!(error = %e, "cannot record the update state; running the installed binary");
            return Launch::RunHere;
        }
    }
    launch
}

/// [`prepare`]'s decision on the state it read (changed in place).
fn decide(
    st: &mut UpdateState,
    layout: &Layout,
    exe: &Path,
    installed_id: Option<String>,
    now: OffsetDateTime,
) -> Launch {
    st.installed_path = Some(exe.to_path_buf());
    if st.current == Slot::Installed && st.trial.is_none() {
        st.installed_id = installed_id;
        return Launch::RunHere;
    }
    if let (Some(recorded), Some(now_id)) = (&st.installed_id, &installed_id) {
        if recorded != now_id {
            warn!(
                version = crate::VERSION,
                "the installed binary was replaced (a package upgrade by hand?); running it"
            );
            st.roll_back(format!(
                "the installed binary was replaced by version {} (a package upgrade)",
                crate::VERSION
            ));
            st.current = Slot::Installed;
            st.current_version = None;
            st.installed_id = installed_id;
            return Launch::RunHere;
        }
    }
    if st.installed_id.is_none() {
        st.installed_id = installed_id;
    }
    if let Some(trial) = st.trial.as_mut() {
        trial.starts += 1;
        let first = *trial.first_start.get_or_insert(now);
        let (version, starts, window_s) = (trial.version.clone(), trial.starts, trial.window_s);
        if starts > MAX_STARTS {
            st.roll_back(format!(
                "version {version} was started {MAX_STARTS} times and never passed its health gate (it exited or was stopped each time)"
            ));
        } else if now > first + time::Duration::seconds(window_s as i64) {
            st.roll_back(format!("version {version} did not pass its health gate within {window_s} s"));
        } else {
            info!(%version, start = starts, of = MAX_STARTS, "starting the new agent version on trial");
        }
    }
    match layout.binary(st.current) {
        None => Launch::RunHere,
        Some(path) if path.is_file() => Launch::Exec(path),
        Some(path) => {
            if st.trial.is_some() {
                st.roll_back(format!("the new version's binary is missing ({})", path.display()));
            } else {
                error!(binary = %path.display(), "the current agent binary is missing; running the installed one");
                st.current = Slot::Installed;
                st.current_version = None;
            }
            match layout.binary(st.current) {
                Some(previous) if previous.is_file() => Launch::Exec(previous),
                _ => {
                    st.current = Slot::Installed;
                    st.current_version = None;
                    Launch::RunHere
                }
            }
        }
    }
}

/// What identifies the installed binary's file: a package upgrade writes a new file
/// (another inode, size or modification time). Cheap enough for every start, unlike a
/// digest of the whole binary.
fn file_id(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}:{}:{}:{}.{}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

/// Replaces this process with `binary`, passing this process's arguments. Returns only if
/// that fails. "Text file busy" is retried for a moment: a process forked while the binary
/// was being written holds the write descriptor until it execs in turn.
pub fn exec(binary: &Path) -> std::io::Error {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    info!(binary = %binary.display(), "starting");
    let mut attempts = 0;
    loop {
        let err = std::process::Command::new(binary).args(&args).exec();
        attempts += 1;
        if err.kind() != std::io::ErrorKind::ExecutableFileBusy || attempts >= 20 {
            return err;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs [`prepare`] and execs what it picks; a binary that cannot be executed is rolled
/// back and the choice made again. Returns when this process should go on.
pub fn launch(state_dir: &Path) {
    for _ in 0..3 {
        let Launch::Exec(binary) = prepare(state_dir) else { return };
        let err = exec(&binary);
        error!(binary = %binary.display(), error = %err, "cannot start the agent binary");
        let layout = Layout::new(state_dir);
        let Ok(mut st) = layout.load() else { return };
        if st.trial.is_some() {
            st.roll_back(format!("the new version cannot be started: {err}"));
        } else {
            st.current = Slot::Installed;
            st.current_version = None;
        }
        if layout.save(&st).is_err() {
            return;
        }
    }
}

/// After `run` returned: when an update has just switched (a trial not started yet),
/// restarts through the installed binary, which starts the new version. Returns only if
/// there is nothing to restart into, or the exec failed (then the error).
pub fn restart_if_switched(state_dir: &Path) -> Option<std::io::Error> {
    let st = Layout::new(state_dir).load().ok()?;
    let trial = st.trial.as_ref()?;
    if trial.starts > 0 {
        return None;
    }
    let installed = st.installed_path.clone().or_else(|| std::env::current_exe().ok())?;
    info!(version = %trial.version, "restarting into the new agent version");
    Some(exec(&installed))
}

/// Rolls the trial back with `reason` and restarts through the installed binary (which then
/// runs the previous version). Returns only if the exec failed.
pub fn roll_back_and_restart(state_dir: &Path, reason: String) -> std::io::Error {
    let layout = Layout::new(state_dir);
    let mut st = layout.load().unwrap_or_default();
    st.roll_back(reason);
    if let Err(e) = layout.save(&st) {
        error!(error = %e, "cannot record the rollback");
    }
    let installed = st.installed_path.clone().or_else(|| std::env::current_exe().ok()).unwrap_or_default();
    exec(&installed)
}

#[cfg(test)]
mod tests {
    use hearth_protocol::TaskId;

    use super::super::{Outcome, Trial};
    use super::*;

    fn slot_binary(layout: &Layout, slot: Slot) -> PathBuf {
        let p = layout.binary(slot).unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"\x7fELF").unwrap();
        p
    }

    fn on_trial(starts: u32) -> UpdateState {
        UpdateState {
            current: Slot::A,
            current_version: Some("1.1.0".into()),
            installed_id: Some("aa".into()),
            trial: Some(Trial {
                task_id: TaskId::new(),
                from: Slot::Installed,
                from_version: "1.0.0".into(),
                to: Slot::A,
                version: "1.1.0".into(),
                events: 3,
                starts,
                first_start: None,
                window_s: 60,
            }),
            ..Default::default()
        }
    }

    fn reason(st: &UpdateState) -> String {
        match &st.finished.as_ref().expect("finished").outcome {
            Outcome::RolledBack { reason } => reason.clone(),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn nothing_installed_runs_here_and_records_the_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let mut st = UpdateState::default();
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            decide(&mut st, &layout, Path::new("/usr/bin/hearth-agent"), Some("aa".into()), now),
            Launch::RunHere
        );
        assert_eq!(st.installed_id.as_deref(), Some("aa"));
        assert_eq!(st.installed_path.as_deref(), Some(Path::new("/usr/bin/hearth-agent")));
    }

    #[test]
    fn a_trial_gets_three_starts_then_the_previous_binary_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let a = slot_binary(&layout, Slot::A);
        let mut st = on_trial(0);
        let now = OffsetDateTime::now_utc();
        let exe = Path::new("/usr/bin/hearth-agent");
        for start in 1..=MAX_STARTS {
            assert_eq!(decide(&mut st, &layout, exe, Some("aa".into()), now), Launch::Exec(a.clone()));
            assert_eq!(st.trial.as_ref().unwrap().starts, start);
        }
        assert_eq!(decide(&mut st, &layout, exe, Some("aa".into()), now), Launch::RunHere);
        assert_eq!(st.current, Slot::Installed);
        assert!(st.trial.is_none());
        assert!(reason(&st).contains("started 3 times"), "{}", reason(&st));
    }

    #[test]
    fn a_trial_past_its_window_is_rolled_back_at_the_next_start() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        slot_binary(&layout, Slot::A);
        let b = slot_binary(&layout, Slot::B);
        let mut st = on_trial(1);
        // From slot B (an earlier update) to slot A.
        st.current = Slot::A;
        let trial = st.trial.as_mut().unwrap();
        trial.from = Slot::B;
        trial.first_start = Some(OffsetDateTime::now_utc() - time::Duration::seconds(120));
        let launch = decide(&mut st, &layout, Path::new("/x"), Some("aa".into()), OffsetDateTime::now_utc());
        assert_eq!(launch, Launch::Exec(b));
        assert_eq!(st.current, Slot::B);
        assert_eq!(st.current_version.as_deref(), Some("1.0.0"));
        assert!(reason(&st).contains("within 60 s"), "{}", reason(&st));
    }

    #[test]
    fn a_package_upgrade_by_hand_wins_over_the_slot() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        slot_binary(&layout, Slot::A);
        let mut st = on_trial(0);
        st.trial = None;
        let now = OffsetDateTime::now_utc();
        assert!(matches!(decide(&mut st, &layout, Path::new("/x"), Some("aa".into()), now), Launch::Exec(_)));
        assert_eq!(decide(&mut st, &layout, Path::new("/x"), Some("bb".into()), now), Launch::RunHere);
        assert_eq!(st.current, Slot::Installed);
        assert_eq!(st.installed_id.as_deref(), Some("bb"));
    }

    #[test]
    fn a_missing_slot_binary_is_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let mut st = on_trial(0);
        let now = OffsetDateTime::now_utc();
        assert_eq!(decide(&mut st, &layout, Path::new("/x"), Some("aa".into()), now), Launch::RunHere);
        assert_eq!(st.current, Slot::Installed);
        assert!(reason(&st).contains("missing"));
    }
}
