//! hearth-control-plane's integration tests, against real services only: a fresh
//! PostgreSQL database per test (`#[sqlx::test]`, DATABASE_URL must point at a server), a
//! Mosquitto started per test with the shipped configuration and certificates made by
//! `pki init`, and the real agent.

mod admin;
mod agent_tasks;
mod agent_update;
mod api;
mod artifacts;
mod assistant;
mod broker_security;
mod certificates;
mod client_identity;
mod console;
mod credentials;
mod desired;
mod e2e;
mod enroll;
mod fleet_sim;
mod ingest;
mod input;
mod isolation;
mod labels;
mod limits;
mod openapi;
mod operator_sign_in;
mod real_model;
mod rollouts;
mod supervision;
mod support;
mod support_chat;
mod tasks;
mod webhooks;
