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
    /// Attempts that gave up at the connection timeout (still in the broker's queue).
    pub connect_timeouts: AtomicU64,
    /// Heartbeats handed to the MQTT client.
    pub heartbeats_queued: AtomicU64,
    /// Heartbeats written to the connection (QoS 0: the last the sender knows of them).
    pub heartbeats_written: AtomicU64,
    /// Heartbeats not sent because the client's request queue was full.
    pub heartbeats_skipped: AtomicU64,
    /// Tasks answered `succeeded` / `rejected`.
    pub tasks_succeeded: AtomicU64,
    pub tasks_rejected: AtomicU64,
    pub tasks_failed: AtomicU64,
    /// Configuration documents reported applied.
    pub configs_applied: AtomicU64,
    /// Receipts from the control plane.
    pub receipts: AtomicU64,
    /// Certificate requests sent (retries included), certificates issued, renewals
    /// refused, appliances connected with their new certificate, new pairs the broker
    /// refused (the old pair is kept).
    pub renewals_asked: AtomicU64,
    pub renewals_issued: AtomicU64,
    pub renewals_refused: AtomicU64,
    pub renewed: AtomicU64,
    pub renewals_failed: AtomicU64,
    /// The longest switch to a new certificate: from the answer to the CONNACK with the
    /// new pair (milliseconds).
    pub renewal_switch_max_ms: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub started: u64,
    pub connect_attempts: u64,
    pub connected: u64,
    pub online: i64,
    pub connection_errors: u64,
    pub connect_timeouts: u64,
    pub heartbeats_queued: u64,
    pub heartbeats_written: u64,
    pub heartbeats_skipped: u64,
    pub tasks_succeeded: u64,
    pub tasks_rejected: u64,
    pub tasks_failed: u64,
    pub configs_applied: u64,
    pub receipts: u64,
    pub renewals_asked: u64,
    pub renewals_issued: u64,
    pub renewals_refused: u64,
    pub renewed: u64,
    pub renewals_failed: u64,
    pub renewal_switch_max_ms: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            started: self.started.load(Relaxed),
            connect_attempts: self.connect_attempts.load(Relaxed),
            connected: self.connected.load(Relaxed),
            online: self.online.load(Relaxed),
            connection_errors: self.connection_errors.load(Relaxed),
            connect_timeouts: self.connect_timeouts.load(Relaxed),
            heartbeats_queued: self.heartbeats_queued.load(Relaxed),
            heartbeats_written: self.heartbeats_written.load(Relaxed),
            heartbeats_skipped: self.heartbeats_skipped.load(Relaxed),
            tasks_succeeded: self.tasks_succeeded.load(Relaxed),
            tasks_rejected: self.tasks_rejected.load(Relaxed),
            tasks_failed: self.tasks_failed.load(Relaxed),
            configs_applied: self.configs_applied.load(Relaxed),
            receipts: self.receipts.load(Relaxed),
            renewals_asked: self.renewals_asked.load(Relaxed),
            renewals_issued: self.renewals_issued.load(Relaxed),
            renewals_refused: self.renewals_refused.load(Relaxed),
            renewed: self.renewed.load(Relaxed),
            renewals_failed: self.renewals_failed.load(Relaxed),
            renewal_switch_max_ms: self.renewal_switch_max_ms.load(Relaxed),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
