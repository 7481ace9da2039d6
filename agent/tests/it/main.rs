//! Integration tests of `hearth-agent`: the spool, the task ledger and worker with a real
//! `ansible-playbook`, the desired configuration, and the whole agent against a real
//! Mosquitto.
//!
//! Tests that run playbooks need `ansible-playbook` (ansible-core) and fail without it;
//! the broker test needs `mosquitto` and fails without it.

mod broker;
mod desired;
mod spool;
mod support;
mod tasks;
