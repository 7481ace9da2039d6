//! `hearth-agent`: the daemon that runs on each Hearth appliance.
//!
//! - [`enroll`](mod@enroll): one-time enrollment — make a key pair, trade a CSR and a
//!   one-time token for a client certificate over HTTPS, store the identity in the state
//!   directory.
//! - [`run`](mod@run): the long-running part — one mutual-TLS MQTT connection,
//!   `online`/`offline` presence with a per-connection session, heartbeats, reconnects with
//!   backoff, catalog tasks and the desired configuration.
//! - [`tasks`]: running catalog tasks (one at a time) and the task ledger that makes each
//!   task id run at most once.
//! - [`desired`]: applying the desired configuration document and remembering it.
//! - [`runner`]: one `ansible-playbook` run and the callback-line mapping; `tasks` and
//!   `desired` both use it, and it uses neither.
//! - [`update`]: the agent updating itself — signed builds downloaded over HTTPS, two
//!   slots, the launcher, the health gate and the rollback.
//! - [`spool`]: the on-disk spool every task event, task result and configuration report
//!   goes through, removed only when the broker acknowledges it.
//! - [`config`]: `agent.toml` and `HEARTH_AGENT_*` settings; [`state`]: the state directory.
//! - [`facts`], [`backoff`], [`connection`]: the pieces `run` is made of.
//! - [`https`]: the HTTPS client enrollment and the updater talk to the control plane with.
//! - [`process`]: logging and the stop signals, set up the same way by both binaries.
//! - [`sim`]: the fleet simulator (`hearth-fleet-sim`), many appliances in one process
//!   built from those same pieces.
//!
//! Topics and payloads come from `hearth_protocol`; nothing here formats them by hand.

pub mod backoff;
pub mod config;
pub mod connection;
pub mod desired;
pub mod enroll;
pub mod facts;
pub mod https;
pub mod process;
pub mod renewal;
pub mod run;
pub mod runner;
pub mod sim;
pub mod spool;
pub mod state;
pub mod tasks;
pub mod update;

pub use config::AgentConfig;
pub use enroll::{enroll, EnrollError, EnrollOptions};
pub use run::{run, RunError};
pub use state::State;

/// This agent's version, as reported in heartbeats and compared by updates: the build's
/// `HEARTH_AGENT_VERSION` when it was stamped with one (a release, or a test build), else the
/// package version.
pub const VERSION: &str = match option_env!("HEARTH_AGENT_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// An error and its causes on one line (`error: cause: cause…`), skipping causes whose text
/// the message already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = cause.source();
    }
    s
}
