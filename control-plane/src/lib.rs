//! Hearth's control plane: the multi-tenant cloud side of the fleet.
//!
//! - [`http`]: the axum API (tenant API, enrollment, health, metrics).
//! - [`ingest`]: the MQTT consumer and the batched PostgreSQL writer.
//! - [`dispatch`]: sends queued tasks and due configuration documents, once, from any replica.
//! - [`presence`]: the sweeper that marks silent appliances offline and times out tasks.
//! - [`db`]: PostgreSQL access, migrations, and tenant-scoped transactions (RLS).
//! - [`pki`]: the fleet CA, certificate issuance and the CRL; [`revocation`]: making a
//!   revocation take effect at the broker; [`broker_config`]: Mosquitto's configuration
//!   for this fleet.
//! - [`admin_cli`]: the operator CLI (tenants, plans, keys, users, operators, revocation).
//! - [`provision`]: bulk provisioning of appliances for load tests (`appliance bulk-create`).
//! - [`config`]: layered configuration; [`serve`]: wiring it all under one shutdown token.
//! - [`assistant`]: the support assistant (catalog-validated proposals; Ollama or rules).

pub mod admin_cli;
pub mod assistant;
pub mod broker_config;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod pki;
pub mod presence;
pub mod provision;
pub mod revocation;
pub mod secret;
pub mod serve;
pub mod ticker;
pub mod token;
