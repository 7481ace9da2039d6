//! The presence sweeper: marks offline the appliances whose heartbeats stopped without a
//! last will reaching us (broker restart, lost message, network partition), and keeps the
//! `hearth_appliances_online` gauge current. Every replica runs it; each sweep is
//! idempotent. (Tasks past their deadline are timed out next to their dispatch, in
//! `dispatch::run_sweeps`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::{appliances, presence};
use crate::metrics::Metrics;
use crate::ticker::Ticker;

/// Marks offline, every `every`, the appliances not seen for `offline_after` — once this
/// replica has been able to hear the fleet for that long: since it started, since its MQTT
/// connection (`mqtt_connected`) was last down (an outage holds it off for `offline_after`
/// at most), since PostgreSQL last failed the sweeper and
/// since its ingest writer last failed a batch and had not stored one since. Silence
/// nobody could store (every replica down, the broker or the database away) is not the
/// appliances' silence: sweeping right after such an outage marked the whole fleet offline
/// and online again a moment later (found by the fault suite, deploy/faults, `pg-outage`
/// and `replicas-kill-both`).
pub async fn run_sweeper(
    pool: PgPool,
    metrics: Arc<Metrics>,
    offline_after: Duration,
    every: Duration,
    mqtt_connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(every, shutdown);
    let mut deaf_at = Instant::now();
    let mut down_since: Option<Instant> = None;
    // The writer's failed batches and its stored ones (the batch time is observed on success).
    let mut errors = metrics.ingest_batch_errors.get();
    let mut stored_at_error: Option<u64> = None;
    while ticker.tick().await {
        // A broker outage holds the sweep off for `offline_after` at most: one longer than
        // that is real silence (the appliances cannot be reached), so they go offline then.
        if mqtt_connected.load(Ordering::Relaxed) {
            down_since = None;
        } else if down_since.get_or_insert_with(Instant::now).elapsed() < offline_after {
            deaf_at = Instant::now();
        }
        let (e, stored) = (metrics.ingest_batch_errors.get(), metrics.ingest_batch_seconds.get_sample_count());
        if e != errors {
            errors = e;
            stored_at_error = Some(stored);
        }
        match stored_at_error {
            // Failing and nothing stored since: heartbeats wait in the writer's retry.
            Some(s) if s == stored => deaf_at = Instant::now(),
            Some(_) => stored_at_error = None,
            None => {}
        }
        if deaf_at.elapsed() >= offline_after {
            match presence::sweep(&pool, offline_after).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics.sweeper_offline.inc_by(n);
                    tracing::info!(appliances = n, "marked offline after missed heartbeats");
                }
                Err(e) => {
                    deaf_at = Instant::now();
                    tracing::warn!(error = %e, "presence sweep failed");
                }
            }
        }
        match appliances::count_online(&pool).await {
            Ok(n) => metrics.appliances_online.set(n),
            Err(e) => {
                deaf_at = Instant::now();
                tracing::warn!(error = %e, "counting online appliances failed");
            }
        }
    }
}
