//! The domain layer: every operation the control plane offers, with its rules, between the
//! ways in (`http/`, the operator CLI, the support chat) and storage (`db/`).
//!
//! One module per capability; each owns its operations and its own error enum, and knows
//! nothing of HTTP. A handler parses the request, authorises the caller, calls one
//! operation and maps its error (`http/error.rs`); the same operation serves the operator
//! CLI and the support assistant, so a rule lives in exactly one place.
//!
//! - [`tasks`]: queue a catalog task (deadline, catalog validation, audit), read, list, cancel.
//! - [`support`]: the support chat: conversations, a customer's message and the assistant's
//!   answer, confirming a proposal (through [`tasks`]), the tenant's settings, what the event
//!   stream sends.
//! - [`tenants`]: tenants (create, change, suspend/reactivate, delete with revocation) and
//!   their API keys (issued, listed, revoked by owners and operators alike).
//! - [`accounts`]: sign-in, sign-out, password change, the account view, members (the last
//!   owner stays).
//! - [`operators`]: operator tokens; [`plans`]: plans and their quotas; [`audit`]: reading
//!   the audit trail.
//!
//! The operator CLI has no [`Services`] (no dispatcher, CA or assistant): the operations it
//! shares with the API take only what they need (a pool, the dispatcher's `Wake`, the
//! `Revoker`) and an audit `Recorder`.
//! - [`appliances`]: the tenant's appliances and inventory, registration (enrollment token),
//!   the operators' fleet view, revocation (and a deleted tenant's appliances revoked).
//! - [`labels`]: appliances' key=value labels (tenants' own, operators' `fleet/` ones).
//! - [`enrollment`]: an appliance redeems its token and gets its certificate.
//! - [`certificates`]: an appliance renews its certificate before it expires.
//! - [`ca_rotation`]: replace the fleet CA (start, progress per CA, finish).
//! - [`artifacts`]: signed agent builds (upload checked against the trusted keys, list).
//! - [`rollouts`]: fleet rollouts — a task or a configuration overlay to many appliances in
//!   waves, with gates, abort criteria and retries; the advancer that moves them.
//! - [`desired`]: desired configuration — tenant defaults, per-appliance overrides, drift;
//!   merging, validation and secrets sealed at rest.
//! - [`events`]: the event log read with a cursor, the event types and their data, the
//!   tenants' alert rules; [`webhooks`]: webhook endpoints (secrets, rotation, the delivery
//!   log, replay), their URL rules and Standard Webhooks signatures.
//!
//! Arrows point one way: `http` → `domain` → `db` → `model`. A domain module may call
//! another (the support chat queues tasks through [`tasks`]); `db` never calls up.

pub mod accounts;
pub mod appliances;
pub mod artifacts;
pub mod audit;
pub mod ca_rotation;
pub mod certificates;
pub mod desired;
pub mod enrollment;
pub mod events;
pub mod labels;
pub mod operator_accounts;
pub mod operators;
pub mod plans;
pub mod rollouts;
pub mod support;
pub mod tasks;
pub mod tenants;
pub mod webhooks;

use std::sync::Arc;

use hearth_protocol::api::BrokerAddress;
use sqlx::PgPool;
use tokio::sync::Notify;

use self::desired::secrets::SecretKey;
use crate::assistant::{Assistant, AssistantConfig};
use crate::config::{AuthConfig, LimitsConfig, TasksConfig};
use crate::metrics::Metrics;
use crate::pki::SharedCa;
use crate::revocation::Revoker;

/// What the operations need, built once by `serve` and shared (cheap to clone).
#[derive(Debug, Clone)]
pub struct Services {
    pub pool: PgPool,
    /// Wakes the dispatcher when work for appliances was queued.
    pub wake: Wake,
    pub tasks: TasksConfig,
    pub auth: AuthConfig,
    /// Quotas of tenants without a plan.
    pub limits: LimitsConfig,
    /// Issues the CRL and disconnects revoked appliances.
    pub revoker: Arc<Revoker>,
    pub ca: Arc<SharedCa>,
    /// The broker address handed to enrolling appliances.
    pub broker: BrokerAddress,
    pub appliance_cert_lifetime: time::Duration,
    /// At most one renewed certificate per appliance per this long.
    pub renewal_min_interval: std::time::Duration,
    /// Seals configuration secrets; `None` when `secrets.key` is not configured.
    pub secrets: Option<SecretKey>,
    /// The support assistant (rules, or Ollama with the rules as fallback).
    pub assistant: Arc<Assistant>,
    pub assistant_config: AssistantConfig,
    pub metrics: Arc<Metrics>,
    /// Webhook delivery settings (which receivers are allowed).
    pub webhooks: crate::config::WebhooksConfig,
}

impl Services {
    /// What the webhook endpoint operations need.
    pub fn webhooks(&self) -> webhooks::Context<'_> {
        webhooks::Context {
            pool: &self.pool,
            key: self.secrets.as_ref(),
            allow: webhooks::target::Allow::from(&self.webhooks),
            limits: self.limits,
        }
    }
}

/// Wakes the dispatcher at once (a task was queued, a configuration changed, an appliance
/// came online); without it the dispatcher still looks every second. Cloned into whatever
/// queues work for appliances.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves when [`Wake::wake`] was called (the dispatcher waits on it).
    pub async fn notified(&self) {
        self.0.notified().await
    }
}

/// A value of a request that breaks a rule: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The field, as the request names it.
    pub param: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(param: &'static str, message: impl Into<String>) -> Self {
        Invalid { param, message: message.into() }
    }
}

/// Cuts a page fetched with `limit + 1` rows to `limit`; returns the cursor of the next page
/// (`None` on the last one).
pub fn next_page<T, C>(rows: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> Option<C> {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// A name or label: 1 to `max` characters once trimmed; returns it trimmed.
pub fn label<'a>(param: &'static str, value: &'a str, max: usize) -> Result<&'a str, Invalid> {
    let trimmed = value.trim();
    let n = trimmed.chars().count();
    if n == 0 || n > max {
        return Err(Invalid::new(param, format!("{param} must be 1 to {max} characters")));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(label("name", "  kitchen ", 10), Ok("kitchen"));
        assert_eq!(label("name", "   ", 10).unwrap_err().param, "name");
        assert!(label("name", "ééééé", 5).is_ok());
        assert!(label("name", "ééééé", 4).is_err());
    }
}
