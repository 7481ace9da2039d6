//! Hearth's control plane: the multi-tenant cloud side of the fleet. Layers, arrows
//! pointing down only (see `docs/architecture.md`, "Control plane layers"):
//!
//! - Ways in: [`http`] (the axum API), [`admin_cli`] (the operator CLI), [`ingest`] (the
//!   MQTT consumer and the batched PostgreSQL writer), [`dispatch`] (sends queued tasks and
//!   due configuration documents once, from any replica, and times tasks out), [`renewal`]
//!   (answers appliances' certificate renewal requests), [`rotation`] (a fleet CA rotation
//!   at run time: the PKI watch and asking appliances to renew), [`presence`] (the sweeper
//!   that marks silent appliances offline), [`events`] (the event sequencer, the alert
//!   sweep, retention), [`deliver`] (the webhook deliverer).
//! - Rules: [`domain`], one module per capability (tasks, support chat, tenants, accounts,
//!   operators, plans, audit, appliances and revocation, enrollment, certificate renewal,
//!   CA rotation, desired configuration, rollouts, events, webhooks),
//!   each with its operations and its error enum; [`assistant`], the support assistant's
//!   engine (catalog-validated proposals; Ollama or rules).
//! - Storage: [`db`], PostgreSQL access, migrations, tenant-scoped transactions (RLS).
//! - Vocabulary: [`model`], every stored state and role as a type.
//! - Infrastructure: [`pki`] (the fleet CA, certificates, the CRL), [`revocation`] (making
//!   a revocation bite at the broker), [`broker_config`] (Mosquitto's configuration),
//!   [`mqtt`] (the control plane's MQTT connection settings), [`limits`] (rate limits),
//!   [`metrics`], [`config`] (layered configuration), [`secret`], [`token`], [`ticker`].
//! - [`serve`]: every part started under one supervisor and shutdown token;
//!   [`provision`]: bulk provisioning for load tests (`appliance bulk-create`).

pub mod admin_cli;
pub mod assistant;
pub mod broker_config;
pub mod config;
pub mod db;
pub mod deliver;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod pki;
pub mod presence;
pub mod provision;
pub mod renewal;
pub mod revocation;
pub mod rotation;
pub mod secret;
pub mod serve;
pub mod ticker;
pub mod token;
pub mod totp;
