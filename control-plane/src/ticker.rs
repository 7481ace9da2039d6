//! A period that ends at shutdown, for the control plane's background loops (sweepers,
//! refreshers): `while ticker.tick().await { … }` runs at once (or after one period), then every `period`, and
//! stops when the token is cancelled. A tick missed while the body ran is delayed, not
//! bunched.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Ticker {
    interval: Interval,
    shutdown: CancellationToken,
}

impl Ticker {
    pub fn new(period: Duration, shutdown: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker { interval, shutdown }
    }

    /// Like [`Ticker::new`], but the first tick comes after one `period`, not at once (for
    /// work that was just done at start-up).
    pub fn after(period: Duration, shutdown: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker { interval, shutdown }
    }

    /// Waits for the next tick: `true`, or `false` once shutdown was asked for.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}
