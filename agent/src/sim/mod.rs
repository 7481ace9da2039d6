//! The fleet simulator behind `hearth-fleet-sim`: many appliances in one process, for load
//! tests of the broker, the ingest, the dispatcher and reconnect storms.
//!
//! Each simulated appliance is one tokio task with its own certificate, its own
//! mutual-TLS MQTT connection and its own rumqttc event loop, built by the agent's own code:
//! [`connection::mqtt_options`](crate::connection::mqtt_options) (client id, persistent
//! session, last will, TLS), [`connection::announce`](crate::connection::announce) on every
//! connect, [`connection::renew_session`](crate::connection::renew_session) and
//! [`Backoff`](crate::backoff::Backoff) (full jitter) and
//! [`ConnectTimeout`](crate::backoff::ConnectTimeout) on every reconnect, and
//! [`connection::try_heartbeat`](crate::connection::try_heartbeat) with
//! [`Facts::heartbeat`](crate::facts::Facts::heartbeat) for heartbeats. What it does not
//! share with the agent: facts are synthetic (one boot id per simulated appliance, not read
//! from `/proc`), nothing is spooled on disk, and tasks are answered without running
//! Ansible — a task the embedded catalog accepts is reported `received` then `succeeded`
//! (message "simulated"), any other is `rejected` with the catalog's reason, like the agent
//! would. A configuration document is reported applied at once. Certificates are renewed
//! by the agent's protocol, in memory ([`renewal`]): all at once after `renew_after`, or
//! when a `down/cert/renew` notice asks.
//!
//! Identities come from a [`Bundle`] (`hearth_protocol::bundle`) written by
//! `hearth-control-plane appliance bulk-create`. [`count`] is a trivial subscriber that only counts what the broker
//! delivers, to measure the broker's own ceiling for the same traffic.

pub mod appliance;
pub mod count;
mod renewal;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::bundle::{BundleAppliance, BundleError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use stats::{Snapshot, Stats};

/// What the simulator could not do.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{}: the bundle holds {have} appliances, {wanted} were asked for", path.display())]
    TooFew { path: PathBuf, have: usize, wanted: usize },
    #[error("{0}")]
    Invalid(String),
}

/// How the simulated fleet behaves.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub host: String,
    pub port: u16,
    /// Heartbeat interval of each appliance (fleet rate = appliances / interval).
    pub heartbeat_interval: Duration,
    /// Each interval is drawn uniformly from `interval × [1 − jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Connections started per second.
    pub ramp_per_s: f64,
    pub keep_alive: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The backoff's cap while recovering from a healthy connection's drop (the agent's:
    /// [`RECOVERY_MAX`](crate::backoff::RECOVERY_MAX)).
    pub backoff_recovery_max: Duration,
    /// The first attempt's connection timeout and the largest it grows to after timeouts
    /// (the agent's: [`ConnectTimeout::default`](crate::backoff::ConnectTimeout)).
    pub connect_timeout: Duration,
    pub connect_timeout_max: Duration,
    /// Every appliance asks for a new certificate this long after the fleet started (all
    /// due at once: a renewal storm). Without it an appliance renews only when a
    /// `down/cert/renew` notice tells it to.
    pub renew_after: Option<Duration>,
    /// This share (0–1) of the appliances fails every task it gets, chosen by appliance id
    /// (the same ones every time, as a bad change fails on one kind of box): a rollout's
    /// abort criteria can be measured against it.
    pub task_failure_share: f64,
}

impl FleetOptions {
    pub fn validate(&self) -> Result<(), SimError> {
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(SimError::Invalid("the heartbeat interval must be at least 100 ms".into()));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(SimError::Invalid("--jitter must be in [0, 1)".into()));
        }
        if !(0.0..=1.0).contains(&self.task_failure_share) {
            return Err(SimError::Invalid("--task-failure-share must be in [0, 1]".into()));
        }
        if !(self.ramp_per_s.is_finite() && self.ramp_per_s > 0.0) {
            return Err(SimError::Invalid("--ramp must be a positive number of connections per second".into()));
        }
        Ok(())
    }
}

/// Runs `appliances` until `stop` is cancelled, starting their connections at
/// `ramp_per_s`; each leaves as the agent does (`offline`, then a clean disconnect).
pub async fn run_fleet(
    ca_pem: &str,
    appliances: &[BundleAppliance],
    opts: &FleetOptions,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), SimError> {
    opts.validate()?;
    let opts = Arc::new(opts.clone());
    let ca_pem: Arc<str> = Arc::from(ca_pem);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for (i, a) in appliances.iter().enumerate() {
        let at = start + Duration::from_secs_f64(i as f64 / opts.ramp_per_s);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        let sim = appliance::Simulated::new(a.clone(), ca_pem.clone(), opts.clone(), stats.clone())
            .renewing_at(opts.renew_after.map(|d| start + d));
        tasks.spawn(sim.run(stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a simulated appliance panicked");
        }
    }
    Ok(())
}
