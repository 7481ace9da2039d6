//! The event log's background parts, on every replica: the sequencer (gives committed
//! events their cursor position and queues their webhook deliveries; one replica at a time
//! under an advisory lock), the alert sweep (the tenants' alert rules; idempotent across
//! replicas) and retention.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::events as store;
use crate::domain::events::AlertRules;
use crate::metrics::Metrics;
use crate::ticker::Ticker;

/// How often the sequencer looks for new events (the latency it adds at most).
pub const SEQUENCE_EVERY: Duration = Duration::from_millis(200);
const SEQUENCE_BATCH: i64 = 5000;
pub const ALERT_SWEEP_EVERY: Duration = Duration::from_secs(15);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Numbers new events and wakes the deliverer when it queued deliveries.
pub async fn sequencer(pool: PgPool, wake: Arc<Notify>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut ticker = Ticker::new(SEQUENCE_EVERY, shutdown);
    while ticker.tick().await {
        loop {
            match store::sequence(&pool, SEQUENCE_BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    metrics.events_sequenced.inc_by(n);
                    wake.notify_one();
                    if (n as i64) < SEQUENCE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sequence events");
                    break;
                }
            }
        }
    }
}

/// Applies the alert rules every [`ALERT_SWEEP_EVERY`]. Certificates are warned about
/// when they end within `expiring_within`.
pub async fn alert_sweeper(pool: PgPool, expiring_within: time::Duration, shutdown: CancellationToken) {
    let defaults = AlertRules::default();
    let mut ticker = Ticker::new(ALERT_SWEEP_EVERY, shutdown);
    while ticker.tick().await {
        match store::sweep_alerts(&pool, defaults.offline_minutes, defaults.drift_minutes, expiring_within).await {
            Ok(s) if s.raised + s.resolved > 0 => tracing::info!(raised = s.raised, resolved = s.resolved, "alerts"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sweep alerts"),
        }
    }
}

/// Deletes events past the retention (their delivery log with them).
pub async fn retention(pool: PgPool, days: u32, shutdown: CancellationToken) {
    let mut ticker = Ticker::new(RETENTION_EVERY, shutdown);
    while ticker.tick().await {
        match store::purge(&pool, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "old events deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old events"),
        }
    }
}
