//! Counters the simulated appliances share (lock-free), and a point-in-time copy of them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Cumulative counters for the whole simulated fleet.
#[derive(Debug, Default)]
pub struct Stats {
    /// Appliance tasks started (the connection ramp).
    pub started: AtomicU64,
    /// Connection attempts (TCP + TLS + MQTT CONNECT), first ones and reconnects.
    pub connect_attempts: AtomicU64,
    /// CONNACKs received.
    pub connected: AtomicU64,
    /// Connections up right now.
    pub online: AtomicI64,
    /// Failed attempts and dropped connections.
    pub connection_errors: AtomicU64,
    /// Heartbeats handed to the MQTT client.
    pub heartbeats_queued: AtomicU64,
    /// Heartbeats written to the connection (QoS 0: the last the sender knows of them).
    pub heartbeats_written: AtomicU64,
    /// Heartbeats not sent because the client's request queue was full.
    pub heartbeats_skipped: AtomicU64,
    /// Tasks answered `succeeded` / `rejected`.
    pub tasks_succeeded: AtomicU64,
    pub tasks_rejected: AtomicU64,
    /// Configuration documents reported applied.
    pub configs_applied: AtomicU64,
    /// Receipts from the control plane.
    pub receipts: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub started: u64,
    pub connect_attempts: u64,
    pub connected: u64,
    pub online: i64,
    pub connection_errors: u64,
    pub heartbeats_queued: u64,
    pub heartbeats_written: u64,
    pub heartbeats_skipped: u64,
    pub tasks_succeeded: u64,
    pub tasks_rejected: u64,
    pub configs_applied: u64,
    pub receipts: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            started: self.started.load(Relaxed),
            connect_attempts: self.connect_attempts.load(Relaxed),
            connected: self.connected.load(Relaxed),
            online: self.online.load(Relaxed),
            connection_errors: self.connection_errors.load(Relaxed),
            heartbeats_queued: self.heartbeats_queued.load(Relaxed),
            heartbeats_written: self.heartbeats_written.load(Relaxed),
            heartbeats_skipped: self.heartbeats_skipped.load(Relaxed),
            tasks_succeeded: self.tasks_succeeded.load(Relaxed),
            tasks_rejected: self.tasks_rejected.load(Relaxed),
            configs_applied: self.configs_applied.load(Relaxed),
            receipts: self.receipts.load(Relaxed),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
