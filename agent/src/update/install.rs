//! The `agent.update` task, up to the restart into the new version.
//!
//! Everything the control plane sends is checked again here with what *this* agent trusts:
//! the manifest's signature against `update_public_keys`, the architecture, the version (a
//! downgrade only when the rollout allows it), the size against `update_max_bytes`; the
//! downloaded bytes against the signed size and SHA-256 and the ELF header. Only then is the
//! build installed in the free slot, the trial recorded (`update.toml`), and the agent
//! restarted into it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use hearth_protocol::artifact::{self, AgentUpdate, Arch, VerifyingKey, Version};
use hearth_protocol::{Outcome, TaskDispatch, TaskEventKind, TaskId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::download::{DownloadError, Reach};
use super::{Layout, Trial};

/// Runs `agent.update` tasks.
#[derive(Debug, Clone)]
pub struct Updater {
    pub layout: Layout,
    /// The keys of `update_public_keys`.
    pub keys: Vec<VerifyingKey>,
    pub window_s: u64,
    pub max_bytes: u64,
    /// How to reach the control plane over HTTPS as this appliance (the client is made
    /// when an update needs it, not at every start).
    pub control_plane: Reach,
    /// Cancelled once a new version is installed: the agent stops and restarts into it.
    pub restart: CancellationToken,
}

/// How an update task goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// It ends here, with this outcome.
    Done(Outcome, String),
    /// The new version is installed and the trial recorded: the agent restarts into it,
    /// which finishes the task (committed, or rolled back).
    Switched,
}

impl Updater {
    /// The update task the update state still has to finish, if any.
    pub fn in_flight(&self) -> Option<TaskId> {
        self.layout.load().ok().and_then(|s| s.task_in_flight())
    }

    /// Runs the task. `emit` sends a task event and returns its sequence number.
    pub async fn run(
        &self,
        d: &TaskDispatch,
        emit: &mut (dyn FnMut(TaskEventKind, String) -> u64 + Send),
        cancel: &CancellationToken,
    ) -> Step {
        let update: AgentUpdate = match serde_json::from_value(Value::Object(d.params.clone())) {
            Ok(u) => u,
            Err(e) => return Step::Done(Outcome::Rejected, format!("the update's parameters are not valid: {e}")),
        };
        let manifest = match self.check(&update) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Step::Done(Outcome::Succeeded, format!("already running version {}", crate::VERSION));
            }
            Err(refusal) => return Step::Done(Outcome::Rejected, refusal),
        };
        let mut st = match self.layout.load() {
            Ok(s) => s,
            Err(e) => return Step::Done(Outcome::Failed, format!("cannot read the update state: {e}")),
        };
        if let Some(t) = &st.trial {
            return Step::Done(Outcome::Rejected, format!("version {} is still on trial", t.version));
        }
        let cp = match self.control_plane.client() {
            Ok(cp) => cp,
            Err(e) => return Step::Done(Outcome::Failed, e.to_string()),
        };
        info!(version = %manifest.version, size = manifest.size, "downloading the agent build");
        let part = match cp.download(&manifest, &self.layout.downloads_dir(), cancel).await {
            Ok(p) => p,
            Err(e @ DownloadError::Mismatch(_)) => return Step::Done(Outcome::Rejected, format!("refused: {e}")),
            Err(e) => return Step::Done(Outcome::Failed, format!("the download failed: {e}")),
        };
        emit(
            TaskEventKind::Downloaded,
            format!(
                "downloaded version {} ({} bytes, sha256 {}); signature, digest and architecture checked",
                manifest.version, manifest.size, manifest.sha256
            ),
        );

        let slot = st.current.free();
        let installed = match self.install(&part, slot) {
            Ok(p) => p,
            Err(e) => return Step::Done(Outcome::Failed, format!("cannot install the build: {e}")),
        };
        let events = emit(
            TaskEventKind::Switched,
            format!(
                "installed version {} in slot {slot} beside version {}; restarting into it (health window {} s)",
                manifest.version,
                crate::VERSION,
                self.window_s
            ),
        );
        st.trial = Some(Trial {
            task_id: d.task_id,
            from: st.current,
            from_version: crate::VERSION.into(),
            to: slot,
            version: manifest.version.clone(),
            events,
            starts: 0,
            first_start: None,
            window_s: self.window_s,
        });
        st.current = slot;
        st.current_version = Some(manifest.version.clone());
        if let Err(e) = self.layout.save(&st) {
            return Step::Done(Outcome::Failed, format!("cannot record the switch: {e}"));
        }
        info!(version = %manifest.version, %slot, binary = %installed.display(), "agent update installed; restarting into it");
        self.restart.cancel();
        Step::Switched
    }

    /// The manifest to install (`None`: this version runs already), or why the update is
    /// refused.
    fn check(&self, update: &AgentUpdate) -> Result<Option<artifact::Manifest>, String> {
        if self.keys.is_empty() {
            return Err("this agent accepts no updates: `update_public_keys` is empty in its configuration".into());
        }
        let arch = Arch::this()
            .ok_or_else(|| format!("no builds exist for this architecture ({})", std::env::consts::ARCH))?;
        let build = update.build_for(arch).ok_or_else(|| format!("the update has no build for {arch}"))?;
        artifact::verify(build, &self.keys).map_err(|e| format!("refused: {e}"))?;
        let m = &build.manifest;
        if m.version != update.version {
            return Err(format!("the build is signed as version {}, not {}", m.version, update.version));
        }
        if m.size > self.max_bytes {
            return Err(format!("the build is {} bytes, more than update_max_bytes ({})", m.size, self.max_bytes));
        }
        let target = Version::parse(&m.version).map_err(|e| e.to_string())?;
        let running = Version::parse(crate::VERSION).ok();
        match running.as_ref().map(|r| target.cmp(r)) {
            Some(std::cmp::Ordering::Equal) => Ok(None),
            Some(std::cmp::Ordering::Less) if !update.allow_downgrade => Err(format!(
                "version {} is older than the running {}: a downgrade must be allowed by the rollout",
                m.version,
                crate::VERSION
            )),
            _ => Ok(Some(m.clone())),
        }
    }

    /// Moves the checked download into `slot` as an executable.
    fn install(&self, part: &std::path::Path, slot: super::Slot) -> std::io::Result<PathBuf> {
        let target = self.layout.binary(slot).ok_or_else(|| std::io::Error::other("not a slot"))?;
        let dir = target.parent().ok_or_else(|| std::io::Error::other("slot without a directory"))?;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(part, &target)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(target)
    }
}
