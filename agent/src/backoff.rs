//! The reconnect policy: how long to wait before the next connection attempt ([`Backoff`])
//! and how long one attempt may take ([`ConnectTimeout`]), so that a fleet reconnecting to a
//! restarted or busy broker spreads out instead of arriving all at once, and gets in quickly
//! once the broker can take it.
//!
//! Measured with `deploy/bench/reconnect-storm.sh` (docs/architecture.md, "The agent's
//! connection"): with plain exponential backoff and a fixed 5 s connection timeout, 10,000
//! appliances took 66–72 s to come back after a 5 s broker restart, the tail made of
//! attempts that timed out in the broker's handshake queue and then waited out caps grown
//! to 16–32 s. Two changes remove that tail:
//! - after a connection that was *healthy* (up for at least [`HEALTHY_AFTER`]) dropped, the
//!   cap stops at [`RECOVERY_MAX`] for [`RECOVERY_WINDOW`] (a broker restart, a network
//!   blip: the broker is most likely back soon); past the window (a long outage) it grows to
//!   the configured maximum. A connection that drops sooner does not start over, so a
//!   connection that is accepted and then closed again and again still backs off fully;
//! - the connection timeout starts at [`CONNECT_TIMEOUT_INITIAL`] and doubles after every
//!   attempt that timed out, up to [`CONNECT_TIMEOUT_MAX`]: an attempt waiting in a busy
//!   broker's queue is worth waiting for (giving up wastes the handshake work the broker
//!   already did and sends the appliance to the back of the queue).
//!
//! The delays keep full jitter (uniform in `[0, cap]`): no synchronized herd.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// A connection that lasted this long was healthy: its drop starts the backoff over, with
/// the recovery cap.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// The largest delay while recovering from the drop of a healthy connection.
pub const RECOVERY_MAX: Duration = Duration::from_secs(8);
/// How long after that drop the recovery cap applies (then the configured maximum).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);
/// The first connection attempt's timeout (TCP connect, TLS handshake and CONNACK).
pub const CONNECT_TIMEOUT_INITIAL: Duration = Duration::from_secs(10);
/// The longest connection timeout, reached after attempts timed out.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Exponential backoff with full jitter: the `k`-th delay (from 0) after a healthy
/// connection dropped is uniform in `[0, min(cap, initial * 2^k)]`, where `cap` is
/// `min(recovery_max, max)` during the recovery window and `max` after it.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    recovery_max: Duration,
    recovery_window: Duration,
    attempt: u32,
    /// When the current connection was accepted (`None`: not connected).
    connected_at: Option<Instant>,
    /// When the last healthy connection dropped (`None`: never connected yet, or the
    /// recovery window does not apply).
    recovering_since: Option<Instant>,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (a `max` below `initial` is
    /// raised to `initial`), with the default recovery cap and window.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            recovery_max: RECOVERY_MAX,
            recovery_window: RECOVERY_WINDOW,
            attempt: 0,
            connected_at: None,
            recovering_since: None,
        }
    }

    /// The cap while recovering from a healthy connection's drop, and for how long.
    pub fn with_recovery(mut self, max: Duration, window: Duration) -> Self {
        self.recovery_max = max;
        self.recovery_window = window;
        self
    }

    /// The upper bound of the next delay at `now`.
    pub fn current_cap(&self, now: Instant) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        let grown = self.initial.saturating_mul(factor).min(self.max);
        match self.recovering_since {
            Some(since) if now.saturating_duration_since(since) < self.recovery_window => {
                grown.min(self.recovery_max.max(self.initial))
            }
            _ => grown,
        }
    }

    /// The connection was accepted at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// A connection attempt failed or the connection dropped at `now`: a random delay in
    /// `[0, current_cap()]`. If a connection that lasted [`HEALTHY_AFTER`] just dropped, the
    /// backoff starts over and the recovery window opens; otherwise the cap doubles for the
    /// next call.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Duration {
        let cap = self.next_cap(now);
        let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=cap_ns))
    }

    /// The cap the next delay is drawn under (after starting over if a healthy connection
    /// just dropped); grows the cap for the call after.
    fn next_cap(&mut self, now: Instant) -> Duration {
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= HEALTHY_AFTER {
                self.attempt = 0;
                self.recovering_since = Some(now);
            }
        }
        let cap = self.current_cap(now);
        if self.initial.saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX)) < self.max {
            self.attempt = self.attempt.saturating_add(1);
        }
        cap
    }

    /// How many delays have grown the cap since the last start-over.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// The connection timeout: [`CONNECT_TIMEOUT_INITIAL`], doubled after every attempt that
/// timed out, at most [`CONNECT_TIMEOUT_MAX`], back to the start once connected. Whole
/// seconds (what the MQTT client takes).
#[derive(Debug, Clone)]
pub struct ConnectTimeout {
    initial_s: u64,
    max_s: u64,
    current_s: u64,
}

impl Default for ConnectTimeout {
    fn default() -> Self {
        Self::new(CONNECT_TIMEOUT_INITIAL, CONNECT_TIMEOUT_MAX)
    }
}

impl ConnectTimeout {
    /// From `initial` (at least 1 s) up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial_s = initial.as_secs().max(1);
        Self { initial_s, max_s: max.as_secs().max(initial_s), current_s: initial_s }
    }

    /// The timeout for the next attempt, in seconds.
    pub fn secs(&self) -> u64 {
        self.current_s
    }

    /// An attempt timed out: the next one waits twice as long (up to the maximum).
    pub fn timed_out(&mut self) {
        self.current_s = self.current_s.saturating_mul(2).min(self.max_s);
    }

    /// Connected: the next attempt (after a drop) starts at the initial timeout.
    pub fn connected(&mut self) {
        self.current_s = self.initial_s;
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The caps of the next `n` delays (and each delay drawn under its cap).
    fn caps(b: &mut Backoff, now: Instant, n: usize, rng: &mut StdRng) -> Vec<u128> {
        (0..n)
            .map(|_| {
                let mut probe = b.clone();
                let d = probe.next_delay(now, rng);
                let cap = b.next_cap(now);
                assert!(d <= cap, "{d:?} > {cap:?}");
                cap.as_millis()
            })
            .collect()
    }

    #[test]
    fn caps_grow_then_stop_at_max_before_any_connection() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        assert_eq!(caps(&mut b, now, 10, &mut rng), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000]);
    }

    #[test]
    fn after_a_healthy_connection_the_cap_stays_low_for_the_recovery_window() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        caps(&mut b, t0, 8, &mut rng);
        b.connected(t0);
        let drop = t0 + HEALTHY_AFTER;
        assert_eq!(caps(&mut b, drop, 7, &mut rng), [1000, 2000, 4000, 8000, 8000, 8000, 8000]);
        // Past the window the cap grows on to the maximum.
        let later = drop + RECOVERY_WINDOW;
        assert_eq!(caps(&mut b, later, 3, &mut rng), [60000, 60000, 60000]);
    }

    #[test]
    fn a_connection_that_drops_at_once_does_not_start_over() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        caps(&mut b, t0, 5, &mut rng);
        b.connected(t0);
        assert_eq!(caps(&mut b, t0 + HEALTHY_AFTER / 2, 2, &mut rng), [32000, 60000]);
    }

    #[test]
    fn never_exceeds_cap_even_after_many_attempts() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(4);
        let now = Instant::now();
        for i in 0..10_000 {
            let cap = b.current_cap(now);
            let d = b.next_delay(now, &mut rng);
            assert!(d <= cap, "attempt {i}: {d:?} > {cap:?}");
            assert!(d <= 60_000 * MS);
        }
        let mut huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        for _ in 0..100 {
            huge.next_delay(now, &mut rng);
        }
    }

    #[test]
    fn jitter_is_spread_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        for k in [0u32, 3, 10] {
            let n = 4000;
            let mut sum = 0.0;
            let mut min = Duration::MAX;
            let mut b = Backoff::new(1000 * MS, 60_000 * MS);
            for _ in 0..k {
                b.next_delay(now, &mut rng);
            }
            let cap = b.current_cap(now);
            for _ in 0..n {
                let mut probe = b.clone();
                let d = probe.next_delay(now, &mut rng);
                min = min.min(d);
                sum += d.as_secs_f64();
            }
            let mean = sum / f64::from(n);
            let half = cap.as_secs_f64() / 2.0;
            assert!((mean - half).abs() < half * 0.05, "k={k}: mean {mean} vs {half}");
            assert!(min < cap / 20, "k={k}: smallest delay {min:?} should be near 0");
        }
    }

    #[test]
    fn max_below_initial_is_raised_and_recovery_never_goes_below_initial() {
        let now = Instant::now();
        let mut b = Backoff::new(500 * MS, 100 * MS);
        assert_eq!(b.current_cap(now), 500 * MS);
        b.next_delay(now, &mut StdRng::seed_from_u64(6));
        assert_eq!(b.current_cap(now), 500 * MS);
        let mut b = Backoff::new(20_000 * MS, 60_000 * MS);
        b.connected(now);
        b.next_delay(now + HEALTHY_AFTER, &mut StdRng::seed_from_u64(7));
        assert_eq!(b.current_cap(now + HEALTHY_AFTER), 20_000 * MS);
    }

    #[test]
    fn connect_timeout_doubles_on_timeouts_and_starts_over_when_connected() {
        let mut t = ConnectTimeout::default();
        let mut seen = vec![t.secs()];
        for _ in 0..4 {
            t.timed_out();
            seen.push(t.secs());
        }
        assert_eq!(seen, [10, 20, 40, 60, 60]);
        t.connected();
        assert_eq!(t.secs(), 10);
        assert_eq!(ConnectTimeout::new(Duration::ZERO, Duration::ZERO).secs(), 1);
    }
}
