//! Reconnect delays: exponential backoff with full jitter, so that a fleet reconnecting to
//! a restarted broker spreads out instead of arriving all at once.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: the `k`-th delay (from 0) is uniform in
/// `[0, min(max, initial * 2^k)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (a `max` below `initial` is
    /// raised to `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// The upper bound of the next delay.
    pub fn current_cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random delay in `[0, current_cap()]`; the cap doubles for the next call.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let cap = self.current_cap();
        if cap < self.max {
            self.attempt = self.attempt.saturating_add(1);
        }
        let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=cap_ns))
    }

    /// Starts over at `initial` (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays have grown the cap since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn caps_grow_then_stop_at_max() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        let mut caps = Vec::new();
        for _ in 0..10 {
            caps.push(b.current_cap().as_millis());
            let d = b.next_delay(&mut rng);
            assert!(d <= 60_000 * MS);
        }
        assert_eq!(caps, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000]);
    }

    #[test]
    fn never_exceeds_cap_even_after_many_attempts() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(2);
        for i in 0..10_000 {
            let cap = b.current_cap();
            let d = b.next_delay(&mut rng);
            assert!(d <= cap, "attempt {i}: {d:?} > {cap:?}");
            assert!(d <= 60_000 * MS);
        }
        let mut huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        for _ in 0..100 {
            huge.next_delay(&mut rng);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(1000 * MS, 60_000 * MS);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.current_cap(), 32_000 * MS);
        b.reset();
        assert_eq!(b.current_cap(), 1000 * MS);
        assert!(b.next_delay(&mut rng) <= 1000 * MS);
    }

    #[test]
    fn jitter_is_spread_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(4);
        for k in [0u32, 3, 10] {
            let n = 4000;
            let mut sum = 0.0;
            let mut min = Duration::MAX;
            let mut b = Backoff::new(1000 * MS, 60_000 * MS);
            for _ in 0..k {
                b.next_delay(&mut rng);
            }
            let cap = b.current_cap();
            for _ in 0..n {
                let mut probe = b.clone();
                let d = probe.next_delay(&mut rng);
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
    fn max_below_initial_is_raised() {
        let mut b = Backoff::new(500 * MS, 100 * MS);
        assert_eq!(b.current_cap(), 500 * MS);
        b.next_delay(&mut StdRng::seed_from_u64(5));
        assert_eq!(b.current_cap(), 500 * MS);
    }
}
