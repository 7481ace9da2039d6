//! A rollout's policy: waves, the gate between them, abort criteria, retries, the
//! execution timeout and the maintenance window. Validated once ([`Policy::validate`]),
//! stored with its defaults filled in, and read by the advancer through the small pure
//! functions here (wave sizes, the start rate, the gate, the abort check), which the unit
//! tests pin down.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::TasksConfig;
use crate::domain::Invalid;

/// How the target is split into waves. Each list is cumulative and strictly increasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Waves {
    /// Cumulative percentages of the target, ending at 100 (e.g. `[1, 10, 50, 100]`).
    Percent(Vec<f64>),
    /// Cumulative counts (e.g. `[10, 100, 1000]`); whatever is left is one last wave.
    Count(Vec<u64>),
    /// One wave, started at a rate that grows: `base_per_minute` at first, multiplied by
    /// `increase_factor` each time as many executions as the current rate have succeeded
    /// (AWS IoT Jobs' exponential rollout), up to `max_per_minute` if set.
    Exponential { base_per_minute: u32, increase_factor: f64 },
}

impl Default for Waves {
    fn default() -> Self {
        Waves::Percent(vec![1.0, 10.0, 50.0, 100.0])
    }
}

/// When the next wave may open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The share of the open wave that must have finished (succeeded, failed, rejected or
    /// timed out), 0–100. An offline appliance has not finished: at 100 one offline
    /// appliance holds the rollout until it returns.
    #[serde(default = "Gate::default_percent")]
    pub finished_percent: f64,
    /// Wait for an approval (`POST …/approve`) before each new wave.
    #[serde(default)]
    pub approval: bool,
}

impl Gate {
    fn default_percent() -> f64 {
        100.0
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate { finished_percent: Self::default_percent(), approval: false }
    }
}

/// Stop the rollout when too many executions fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Abort when failed + rejected + timed out is above this share (0–100) of the finished
    /// executions…
    pub failure_percent: f64,
    /// …once at least this many have finished.
    #[serde(default = "Abort::default_min")]
    pub min_finished: u32,
}

impl Abort {
    fn default_min() -> u32 {
        10
    }
}

/// Retries of failed or timed-out executions (a rejection is not retried: the agent's own
/// catalog check will refuse it again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Further attempts after the first, 0–10.
    #[serde(default)]
    pub max: u32,
    /// The wait before the first retry, doubled for each further one (1 s – 1 day).
    #[serde(default = "Retries::default_backoff")]
    pub backoff_s: u64,
}

impl Retries {
    fn default_backoff() -> u64 {
        60
    }
}

impl Default for Retries {
    fn default() -> Self {
        Retries { max: 0, backoff_s: Self::default_backoff() }
    }
}

/// Hours of the appliance's day in which executions may start: `[start_hour, end_hour)`,
/// wrapping past midnight when `end_hour < start_hour` (`22`–`5`). Appliance-local time
/// is its reported UTC offset (UTC while it has reported none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start_hour: u8,
    pub end_hour: u8,
}

impl Window {
    /// Whether an execution may start at this local hour.
    pub fn contains(&self, hour: u8) -> bool {
        if self.start_hour < self.end_hour {
            (self.start_hour..self.end_hour).contains(&hour)
        } else {
            hour >= self.start_hour || hour < self.end_hour
        }
    }
}

/// Everything that decides how a rollout goes out. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub waves: Waves,
    /// At most this many executions start per minute (default: no limit but the waves').
    #[serde(default)]
    pub max_per_minute: Option<u32>,
    #[serde(default)]
    pub gate: Gate,
    /// Abort criteria; default: above 10 % of at least 10 finished. `null` never aborts.
    #[serde(default = "Policy::default_abort")]
    pub abort: Option<Abort>,
    #[serde(default)]
    pub retries: Retries,
    /// Seconds one attempt may take (a task's deadline; default `tasks.default_deadline_s`).
    #[serde(default)]
    pub execution_timeout_s: Option<u64>,
    #[serde(default)]
    pub window: Option<Window>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            waves: Waves::default(),
            max_per_minute: None,
            gate: Gate::default(),
            abort: Policy::default_abort(),
            retries: Retries::default(),
            execution_timeout_s: None,
            window: None,
        }
    }
}

const MAX_WAVES: usize = 20;

fn percent(param: &'static str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(Invalid::new(param, format!("{param} must be between 0 and 100")))
    }
}

impl Policy {
    fn default_abort() -> Option<Abort> {
        Some(Abort { failure_percent: 10.0, min_finished: Abort::default_min() })
    }

    /// Checks every rule and fills in the execution timeout; a refusal names the field.
    pub fn validate(mut self, tasks: &TasksConfig) -> Result<Policy, Invalid> {
        match &self.waves {
            Waves::Percent(p) => {
                if p.is_empty() || p.len() > MAX_WAVES {
                    return Err(Invalid::new("policy.waves", format!("give 1 to {MAX_WAVES} waves")));
                }
                for v in p {
                    if !v.is_finite() || *v <= 0.0 || *v > 100.0 {
                        return Err(Invalid::new("policy.waves", "each wave is a percentage above 0, at most 100"));
                    }
                }
                if p.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(Invalid::new(
                        "policy.waves",
                        "waves must be strictly increasing (they are cumulative)",
                    ));
                }
                if p.last() != Some(&100.0) {
                    return Err(Invalid::new("policy.waves", "the last wave must be 100 (the whole target)"));
                }
            }
            Waves::Count(c) => {
                if c.is_empty() || c.len() > MAX_WAVES {
                    return Err(Invalid::new("policy.waves", format!("give 1 to {MAX_WAVES} waves")));
                }
                if c[0] == 0 || c.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(Invalid::new(
                        "policy.waves",
                        "waves must be strictly increasing counts above 0 (they are cumulative)",
                    ));
                }
            }
            Waves::Exponential { base_per_minute, increase_factor } => {
                if *base_per_minute == 0 {
                    return Err(Invalid::new("policy.waves", "base_per_minute must be at least 1"));
                }
                if !increase_factor.is_finite() || !(1.0..=5.0).contains(increase_factor) {
                    return Err(Invalid::new("policy.waves", "increase_factor must be between 1 and 5"));
                }
            }
        }
        if self.max_per_minute == Some(0) {
            return Err(Invalid::new("policy.max_per_minute", "max_per_minute must be at least 1"));
        }
        percent("policy.gate.finished_percent", self.gate.finished_percent)?;
        if let Some(a) = &self.abort {
            percent("policy.abort.failure_percent", a.failure_percent)?;
            if a.min_finished == 0 {
                return Err(Invalid::new("policy.abort.min_finished", "min_finished must be at least 1"));
            }
        }
        if self.retries.max > 10 {
            return Err(Invalid::new("policy.retries.max", "at most 10 retries"));
        }
        if !(1..=86_400).contains(&self.retries.backoff_s) {
            return Err(Invalid::new("policy.retries.backoff_s", "backoff_s must be between 1 and 86400"));
        }
        let timeout = self.execution_timeout_s.unwrap_or(tasks.default_deadline_s);
        if timeout == 0 || timeout > tasks.max_deadline_s {
            return Err(Invalid::new(
                "policy.execution_timeout_s",
                format!("execution_timeout_s must be between 1 and {}", tasks.max_deadline_s),
            ));
        }
        self.execution_timeout_s = Some(timeout);
        if let Some(w) = self.window {
            if w.start_hour > 23 || w.end_hour > 23 {
                return Err(Invalid::new("policy.window", "hours are 0 to 23"));
            }
            if w.start_hour == w.end_hour {
                return Err(Invalid::new(
                    "policy.window",
                    "the window never opens (start_hour equals end_hour); leave it out to allow any hour",
                ));
            }
        }
        Ok(self)
    }

    /// The execution timeout (filled in by [`Self::validate`]).
    pub fn timeout_s(&self) -> u64 {
        self.execution_timeout_s.unwrap_or(1)
    }

    /// Cumulative wave sizes for a target of `n` appliances: strictly increasing, the last
    /// one `n` (waves that would be empty at this size are dropped). Empty for `n = 0`.
    pub fn wave_sizes(&self, n: u64) -> Vec<u64> {
        if n == 0 {
            return Vec::new();
        }
        let mut sizes: Vec<u64> = match &self.waves {
            Waves::Percent(p) => p.iter().map(|pct| ((pct * n as f64 / 100.0).ceil() as u64).clamp(1, n)).collect(),
            Waves::Count(c) => c.iter().map(|&k| k.min(n)).chain([n]).collect(),
            Waves::Exponential { .. } => vec![n],
        };
        sizes.dedup();
        if sizes.last() != Some(&n) {
            sizes.push(n);
        }
        sizes
    }

    /// Executions that may start per minute once `succeeded` have succeeded; `None`: no limit.
    pub fn rate_per_minute(&self, succeeded: u64) -> Option<u64> {
        let cap = self.max_per_minute.map(u64::from);
        match self.waves {
            Waves::Exponential { base_per_minute, increase_factor } => {
                let mut rate = base_per_minute as f64;
                let mut threshold = rate;
                while succeeded as f64 >= threshold && cap.is_none_or(|c| rate < c as f64) {
                    rate *= increase_factor;
                    if increase_factor <= 1.0 {
                        break;
                    }
                    threshold += rate;
                }
                let rate = rate.floor().max(1.0) as u64;
                Some(cap.map_or(rate, |c| rate.min(c)))
            }
            _ => cap,
        }
    }

    /// Whether a wave of `size` executions with `finished` of them over passes the gate.
    pub fn gate_passed(&self, size: u64, finished: u64) -> bool {
        size == 0 || finished as f64 * 100.0 >= self.gate.finished_percent * size as f64
    }

    /// Why the rollout must abort, if it must.
    pub fn abort_reason(&self, finished: u64, failures: u64) -> Option<String> {
        let a = self.abort.as_ref()?;
        if finished < a.min_finished as u64 || finished == 0 {
            return None;
        }
        let rate = failures as f64 * 100.0 / finished as f64;
        (rate > a.failure_percent).then(|| {
            format!(
                "{failures} of {finished} finished executions failed, were rejected or timed out ({rate:.1} %), \
                 above the abort threshold of {} %",
                a.failure_percent
            )
        })
    }

    /// The wait before attempt `attempts + 1` after a failed attempt number `attempts`.
    pub fn backoff_s(&self, attempts: u32) -> u64 {
        let doubled = self.retries.backoff_s.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
        doubled.min(86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> TasksConfig {
        TasksConfig { default_deadline_s: 600, max_deadline_s: 86_400, rollout_interval_ms: 1000, rollout_batch: 500 }
    }

    fn policy(v: serde_json::Value) -> Result<Policy, Invalid> {
        serde_json::from_value::<Policy>(v).expect("parses").validate(&tasks())
    }

    #[test]
    fn defaults_are_canary_waves_with_an_abort() {
        let p = policy(serde_json::json!({})).unwrap();
        assert_eq!(p.wave_sizes(10_000), vec![100, 1_000, 5_000, 10_000]);
        assert_eq!(p.execution_timeout_s, Some(600));
        assert!(p.abort_reason(9, 9).is_none(), "below the minimum count");
        assert!(p.abort_reason(10, 2).is_some());
        assert!(p.abort_reason(10, 1).is_none(), "10 % is not above 10 %");
    }

    #[test]
    fn small_targets_drop_empty_waves() {
        let p = policy(serde_json::json!({})).unwrap();
        assert_eq!(p.wave_sizes(3), vec![1, 2, 3]);
        assert_eq!(p.wave_sizes(1), vec![1]);
        assert!(p.wave_sizes(0).is_empty());
        let c = policy(serde_json::json!({"waves": {"count": [2, 5]}})).unwrap();
        assert_eq!(c.wave_sizes(100), vec![2, 5, 100]);
        assert_eq!(c.wave_sizes(4), vec![2, 4]);
    }

    #[test]
    fn bad_policies_name_their_field() {
        let cases = [
            (serde_json::json!({"waves": {"percent": [10, 5, 100]}}), "policy.waves"),
            (serde_json::json!({"waves": {"percent": [10, 50]}}), "policy.waves"),
            (serde_json::json!({"waves": {"percent": []}}), "policy.waves"),
            (serde_json::json!({"waves": {"count": [0, 5]}}), "policy.waves"),
            (
                serde_json::json!({"waves": {"exponential": {"base_per_minute": 0, "increase_factor": 2}}}),
                "policy.waves",
            ),
            (serde_json::json!({"abort": {"failure_percent": 101}}), "policy.abort.failure_percent"),
            (serde_json::json!({"abort": {"failure_percent": -1}}), "policy.abort.failure_percent"),
            (serde_json::json!({"gate": {"finished_percent": 150}}), "policy.gate.finished_percent"),
            (serde_json::json!({"window": {"start_hour": 3, "end_hour": 3}}), "policy.window"),
            (serde_json::json!({"window": {"start_hour": 3, "end_hour": 24}}), "policy.window"),
            (serde_json::json!({"execution_timeout_s": 0}), "policy.execution_timeout_s"),
            (serde_json::json!({"retries": {"max": 11}}), "policy.retries.max"),
        ];
        for (v, param) in cases {
            assert_eq!(policy(v.clone()).unwrap_err().param, param, "{v}");
        }
    }

    #[test]
    fn exponential_rate_grows_with_successes_up_to_the_cap() {
        let p = policy(serde_json::json!({
            "waves": {"exponential": {"base_per_minute": 10, "increase_factor": 2}}, "max_per_minute": 50
        }))
        .unwrap();
        assert_eq!(p.wave_sizes(1000), vec![1000]);
        assert_eq!(p.rate_per_minute(0), Some(10));
        assert_eq!(p.rate_per_minute(9), Some(10));
        assert_eq!(p.rate_per_minute(10), Some(20));
        assert_eq!(p.rate_per_minute(30), Some(40));
        assert_eq!(p.rate_per_minute(1_000_000), Some(50));
        assert_eq!(policy(serde_json::json!({})).unwrap().rate_per_minute(5), None);
    }

    #[test]
    fn gate_window_and_backoff() {
        let p = policy(serde_json::json!({"gate": {"finished_percent": 90}, "retries": {"max": 3, "backoff_s": 10}}))
            .unwrap();
        assert!(!p.gate_passed(10, 8));
        assert!(p.gate_passed(10, 9));
        assert_eq!((p.backoff_s(1), p.backoff_s(2), p.backoff_s(3)), (10, 20, 40));
        let night = Window { start_hour: 22, end_hour: 5 };
        assert!(night.contains(23) && night.contains(0) && night.contains(4));
        assert!(!night.contains(5) && !night.contains(12));
        let day = Window { start_hour: 9, end_hour: 17 };
        assert!(day.contains(9) && !day.contains(17));
    }
}
