//! Per-tenant rate limits (governor, GCRA). One limiter per key (a tenant for API requests),
//! built from the tenant's quotas (its plan's, or `limits.*`): a rate per period and a
//! bucket of `burst` requests. Quotas are read from PostgreSQL at most every
//! `limits.refresh_s` per tenant, so a plan change applies within that time without a
//! restart, and a limiter whose quota changed is rebuilt. Idle keys are evicted so memory
//! stays bounded with many tenants. Throttled requests are counted by kind only
//! (`hearth_rate_limited_total{kind}`), never by tenant, to keep label cardinality bounded.
//!
//! Across replicas: each replica limits what it sees; the ingress routes a tenant to one
//! replica (consistent hashing on the credential, see deploy/README.md), so one replica's
//! bucket is the tenant's whole limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hearth_protocol::TenantId;
use sqlx::PgPool;

use crate::config::LimitsConfig;
use crate::db::plans::{self, Quotas};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Which limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Tenant API requests (per minute).
    Api,
    /// Support assistant messages (per hour).
    Assistant,
    /// MQTT messages of one appliance (per minute).
    Mqtt,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Api => "api",
            LimitKind::Assistant => "assistant",
            LimitKind::Mqtt => "mqtt",
        }
    }
    fn period(self) -> &'static str {
        match self {
            LimitKind::Assistant => "hour",
            LimitKind::Api | LimitKind::Mqtt => "minute",
        }
    }
}

/// A rate and a bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period (minute or hour, by kind).
    pub per_period: u32,
    /// How many may come at once (the bucket's size).
    pub burst: u32,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub kind: LimitKind,
    pub rate: Rate,
    /// Requests that could still come at once after this one.
    pub remaining: u32,
    /// `Some` when refused: when to try again.
    pub retry_after: Option<Duration>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }
    /// `600 per minute, burst 100`: the policy, for the response headers.
    pub fn policy(&self) -> String {
        format!("{} per {}, burst {}", self.rate.per_period, self.kind.period(), self.rate.burst)
    }
}

struct Entry {
    rate: Rate,
    limiter: Arc<Limiter>,
    last_used: Instant,
}

/// One kind of limit, a limiter per key.
pub struct Limiters<K> {
    kind: LimitKind,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K> std::fmt::Debug for Limiters<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.entries.lock().map(|e| e.len()).unwrap_or_default();
        f.debug_struct("Limiters").field("kind", &self.kind).field("keys", &keys).finish()
    }
}

impl<K: Hash + Eq + Clone> Limiters<K> {
    pub fn new(kind: LimitKind) -> Self {
        Limiters { kind, entries: Mutex::new(HashMap::new()) }
    }

    /// Takes one request of `key` under `rate`.
    pub fn check(&self, key: &K, rate: Rate) -> Decision {
        let limiter = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
                rate,
                limiter: Arc::new(build(self.kind, rate)),
                last_used: now,
            });
            if entry.rate != rate {
                *entry = Entry { rate, limiter: Arc::new(build(self.kind, rate)), last_used: now };
            }
            entry.last_used = now;
            entry.limiter.clone()
        };
        match limiter.check() {
            Ok(state) => {
                Decision { kind: self.kind, rate, remaining: state.remaining_burst_capacity(), retry_after: None }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision { kind: self.kind, rate, remaining: 0, retry_after: Some(wait) }
            }
        }
    }

    /// Forgets keys not used for `idle`; returns how many.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|_, e| e.last_used.elapsed() < idle);
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn build(kind: LimitKind, rate: Rate) -> Limiter {
    let n = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = match kind {
        LimitKind::Assistant => Quota::per_hour(n(rate.per_period)),
        LimitKind::Api | LimitKind::Mqtt => Quota::per_minute(n(rate.per_period)),
    }
    .allow_burst(n(rate.burst));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// Tenants' quotas as last read from PostgreSQL.
#[derive(Debug)]
pub struct QuotaCache {
    defaults: LimitsConfig,
    refresh: Duration,
    entries: Mutex<HashMap<TenantId, (Quotas, Instant)>>,
}

impl QuotaCache {
    pub fn new(defaults: LimitsConfig) -> Self {
        QuotaCache {
            defaults,
            refresh: Duration::from_secs(u64::from(defaults.refresh_s)),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's quotas, read again when older than `limits.refresh_s`.
    pub async fn get(&self, pool: &PgPool, tenant: TenantId) -> Result<Quotas, sqlx::Error> {
        if let Some((q, at)) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&tenant) {
            if at.elapsed() < self.refresh {
                return Ok(*q);
            }
        }
        let mut conn = pool.acquire().await?;
        let (_, q) = plans::quotas_for(&mut conn, tenant, self.defaults).await?;
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant, (q, Instant::now()));
        Ok(q)
    }

    /// Drops entries older than the refresh time (they would be read again anyway).
    pub fn evict_stale(&self) {
        let refresh = self.refresh;
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (_, at)| at.elapsed() < refresh);
    }
}

/// Every limit the control plane enforces, shared by the HTTP layer, the support chat and
/// the ingest.
#[derive(Debug)]
pub struct RateLimits {
    pub api: Limiters<TenantId>,
    /// Support assistant messages, per tenant (each may cost an LLM call).
    pub assistant: Limiters<TenantId>,
    pub quotas: QuotaCache,
}

/// Keys unused for this long are forgotten (a returning tenant starts with a full bucket,
/// which is what an idle tenant has anyway).
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

impl RateLimits {
    pub fn new(defaults: LimitsConfig) -> Self {
        RateLimits {
            api: Limiters::new(LimitKind::Api),
            assistant: Limiters::new(LimitKind::Assistant),
            quotas: QuotaCache::new(defaults),
        }
    }

    /// One tenant API request.
    pub async fn check_api(&self, pool: &PgPool, tenant: TenantId) -> Result<Decision, sqlx::Error> {
        let q = self.quotas.get(pool, tenant).await?;
        let rate = Rate { per_period: q.api_per_minute.max(1) as u32, burst: q.api_burst.max(1) as u32 };
        Ok(self.api.check(&tenant, rate))
    }

    /// One support assistant message of a tenant.
    pub async fn check_assistant(&self, pool: &PgPool, tenant: TenantId) -> Result<Decision, sqlx::Error> {
        let q = self.quotas.get(pool, tenant).await?;
        let rate = Rate { per_period: q.assistant_per_hour.max(1) as u32, burst: q.assistant_burst.max(1) as u32 };
        Ok(self.assistant.check(&tenant, rate))
    }

    /// Periodic housekeeping (the serve loop calls it every minute).
    pub fn evict(&self) -> usize {
        self.quotas.evict_stale();
        self.api.evict_idle(IDLE_EVICTION) + self.assistant.evict_idle(IDLE_EVICTION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let l = Limiters::new(LimitKind::Api);
        let rate = Rate { per_period: 60, burst: 3 };
        let got: Vec<Decision> = (0..5).map(|_| l.check(&"a", rate)).collect();
        assert_eq!(got.iter().map(|d| d.remaining).collect::<Vec<_>>(), [2, 1, 0, 0, 0]);
        assert!(got[..3].iter().all(Decision::allowed));
        let wait = got[3].retry_after.expect("refused");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1), "{wait:?}");
        // Another key has its own bucket.
        assert!(l.check(&"b", rate).allowed());
        assert_eq!(got[0].policy(), "60 per minute, burst 3");
    }

    #[test]
    fn a_new_quota_rebuilds_the_limiter_and_idle_keys_go() {
        let l = Limiters::new(LimitKind::Assistant);
        let small = Rate { per_period: 1, burst: 1 };
        assert!(l.check(&1, small).allowed());
        assert!(!l.check(&1, small).allowed());
        assert!(l.check(&1, Rate { per_period: 10, burst: 5 }).allowed(), "a plan change applies");
        assert_eq!(l.len(), 1);
        assert_eq!(l.evict_idle(Duration::from_secs(3600)), 0);
        assert_eq!(l.evict_idle(Duration::ZERO), 1);
        assert!(l.is_empty());
    }
}
