//! The real agent, enrolled through the API and run in-process against a sandbox root.

use std::path::{Path, PathBuf};

use hearth_agent::AgentConfig;
use hearth_control_plane::pki::files;
use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{appliance, ControlPlane, Pki};

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible")
}

/// An enrolled agent with a sandbox root, not yet running.
pub struct Appliance {
    pub id: ApplianceId,
    pub state: tempfile::TempDir,
    pub sandbox: tempfile::TempDir,
}

impl Appliance {
    pub async fn enroll(cp: &ControlPlane, pki: &Pki, pool: &PgPool, tenant: TenantId, name: &str) -> Appliance {
        let (id, token) = appliance(pool, tenant, name).await;
        let state = tempfile::tempdir().expect("state");
        let enrolled = hearth_agent::enroll(hearth_agent::EnrollOptions {
            server: cp.url.clone(),
            token: token.into(),
            ca_file: Some(pki.path(files::CA_CERT)),
            state_dir: state.path().to_owned(),
            force: false,
        })
        .await
        .expect("enroll");
        assert_eq!(enrolled.appliance_id, id, "enrolled as the appliance that was registered");
        Appliance { id, state, sandbox: tempfile::tempdir().expect("sandbox") }
    }

    pub fn start(&self) -> (CancellationToken, tokio::task::JoinHandle<Result<(), hearth_agent::RunError>>) {
        self.start_with(|_| {})
    }

    /// [`Self::start`] with some settings changed.
    pub fn start_with(
        &self,
        change: impl FnOnce(&mut AgentConfig),
    ) -> (CancellationToken, tokio::task::JoinHandle<Result<(), hearth_agent::RunError>>) {
        let token = CancellationToken::new();
        let mut config = AgentConfig {
            state_dir: self.state.path().to_owned(),
            heartbeat_interval_s: 1,
            backoff_initial_ms: 200,
            backoff_max_ms: 1000,
            ansible_dir: ansible_dir(),
            hearth_root: self.sandbox.path().to_owned(),
            manage_services: false,
            ..Default::default()
        };
        change(&mut config);
        (token.clone(), tokio::spawn(hearth_agent::run(config, token)))
    }

    pub fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.sandbox.path().join(rel)).unwrap_or_default()
    }
}
