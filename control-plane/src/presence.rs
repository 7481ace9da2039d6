//! The presence sweeper: marks offline the appliances whose heartbeats stopped without a
//! last will reaching us (broker restart, lost message, network partition), and keeps the
//! `hearth_appliances_online` gauge current. Every replica runs it; each sweep is
//! idempotent. (Tasks past their deadline are timed out next to their dispatch, in
//! `dispatch::run_task_timeouts`.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::{appliances, presence};
use crate::metrics::Metrics;
use crate::ticker::Ticker;

pub async fn run_sweeper(
    pool: PgPool,
    metrics: Arc<Metrics>,
    offline_after: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.tick().await {
        match presence::sweep(&pool, offline_after).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.sweeper_offline.inc_by(n);
                tracing::info!(appliances = n, "marked offline after missed heartbeats");
            }
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
        match appliances::count_online(&pool).await {
            Ok(n) => metrics.appliances_online.set(n),
            Err(e) => tracing::warn!(error = %e, "counting online appliances failed"),
        }
    }
}
