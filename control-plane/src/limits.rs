//! Rate limits (governor, GCRA). One limiter per key — a tenant for API requests and
//! assistant messages, an appliance for MQTT messages — built from the quotas of the
//! tenant's plan, or `limits.*`: a rate per period and a bucket of `burst` requests. A
//! limiter whose quota changed is rebuilt, and idle keys are evicted so memory stays
//! bounded by the tenants and appliances active in the last [`IDLE_EVICTION`]. Throttled
//! requests are counted by kind only (`hearth_rate_limited_total{kind}`), never by tenant
//! or appliance, to keep label cardinality bounded.
//!
//! Quotas come from PostgreSQL and are read again every `limits.refresh_s`, so a plan
//! change applies within that time without a restart:
//! - the HTTP layer and the support chat read a tenant's quotas on demand ([`QuotaCache`],
//!   one query per tenant at most every `refresh_s`);
//! - the MQTT ingest must not query per message and its topics name only the appliance, so
//!   [`ApplianceRates`] keeps the rate of every appliance whose tenant's plan differs from
//!   the defaults, replaced as a whole by one query every `refresh_s` (a background task,
//!   [`keep_mqtt_rates_fresh`]); every other appliance gets `limits.mqtt_*`. A message then
//!   costs two hash lookups (the rate, the appliance's limiter). What the ingest drops over
//!   the limit, and what it keeps, is decided in `ingest::consumer`.
//!
//! Across replicas: each replica limits what it sees. The ingress routes a tenant to one
//! replica (consistent hashing on the credential, see deploy/README.md), so one replica's
//! bucket is the tenant's whole API limit. MQTT messages reach the replicas through a
//! shared subscription, which spreads an appliance's messages over them (round robin): with
//! N replicas an appliance may get up to N times its quota through, still bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

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

impl Rate {
    /// From a plan's (or the defaults') numbers; a quota is at least 1.
    pub fn from_quota(per_period: i32, burst: i32) -> Rate {
        let n = |v: i32| u32::try_from(v.max(1)).unwrap_or(1);
        Rate { per_period: n(per_period), burst: n(burst) }
    }
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

/// The MQTT rate of each appliance whose tenant is on a plan with MQTT quotas other than
/// the defaults, for the ingest's hot path: a lookup here never touches PostgreSQL. The map
/// is replaced as a whole by [`ApplianceRates::refresh`] (one query), so an appliance whose
/// tenant changed plan, or went back to the defaults, gets its new rate at the next refresh.
pub struct ApplianceRates {
    defaults: LimitsConfig,
    /// `limits.mqtt_*`.
    default: Rate,
    refresh: Duration,
    rates: RwLock<HashMap<ApplianceId, Rate>>,
}

impl std::fmt::Debug for ApplianceRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplianceRates")
            .field("default", &self.default)
            .field("refresh", &self.refresh)
            .field("appliances", &self.len())
            .finish()
    }
}

impl ApplianceRates {
    pub fn new(defaults: LimitsConfig) -> Self {
        let q = Quotas::from(defaults);
        ApplianceRates {
            defaults,
            default: Rate::from_quota(q.mqtt_per_minute, q.mqtt_burst),
            refresh: Duration::from_secs(u64::from(defaults.refresh_s.max(1))),
            rates: RwLock::new(HashMap::new()),
        }
    }

    /// The appliance's rate: its plan's, or `limits.mqtt_*`.
    pub fn get(&self, appliance: &ApplianceId) -> Rate {
        let rates = self.rates.read().unwrap_or_else(|p| p.into_inner());
        rates.get(appliance).copied().unwrap_or(self.default)
    }

    /// `limits.mqtt_per_minute` and `limits.mqtt_burst`.
    pub fn default_rate(&self) -> Rate {
        self.default
    }

    /// Replaces every entry (appliances left out get the defaults); returns how many there
    /// are. The new map is built before the lock is taken, so readers wait only for a swap.
    pub fn replace(&self, rates: impl IntoIterator<Item = (ApplianceId, Rate)>) -> usize {
        let fresh: HashMap<ApplianceId, Rate> = rates.into_iter().filter(|(_, r)| *r != self.default).collect();
        let n = fresh.len();
        let old = {
            let mut rates = self.rates.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *rates, fresh)
        };
        drop(old); // freed after the lock is released
        n
    }

    /// Reads the rates of appliances on a plan again (one query); returns how many.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let rows = plans::mqtt_rates(pool, self.defaults).await?;
        Ok(self.replace(rows.into_iter().map(|(id, per, burst)| (id, Rate::from_quota(per, burst)))))
    }

    /// `limits.refresh_s`.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    pub fn len(&self) -> usize {
        self.rates.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Refreshes [`RateLimits::mqtt_rates`] every `limits.refresh_s` until `shutdown`. On a
/// database error the previous rates stay in force until the next turn.
pub async fn keep_mqtt_rates_fresh(limits: Arc<RateLimits>, pool: PgPool, shutdown: CancellationToken) {
    let mut ticker = crate::ticker::Ticker::after(limits.mqtt_rates.refresh_interval(), shutdown);
    while ticker.tick().await {
        match limits.mqtt_rates.refresh(&pool).await {
            Ok(n) => tracing::trace!(appliances = n, "MQTT rates of appliances on a plan read again"),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the MQTT rates of appliances on a plan; the previous ones stay")
            }
        }
    }
}

/// Every limit the control plane enforces, shared by the HTTP layer, the support chat and
/// the ingest.
#[derive(Debug)]
pub struct RateLimits {
    pub api: Limiters<TenantId>,
    /// Support assistant messages, per tenant (each may cost an LLM call).
    pub assistant: Limiters<TenantId>,
    /// MQTT messages, per appliance (taken by the ingest's consumer).
    pub mqtt: Limiters<ApplianceId>,
    pub quotas: QuotaCache,
    /// The MQTT rates of appliances on a plan (the rest get the defaults).
    pub mqtt_rates: ApplianceRates,
}

/// Keys unused for this long are forgotten (a returning tenant or appliance starts with a
/// full bucket, which is what an idle one has anyway).
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

impl RateLimits {
    pub fn new(defaults: LimitsConfig) -> Self {
        RateLimits {
            api: Limiters::new(LimitKind::Api),
            assistant: Limiters::new(LimitKind::Assistant),
            mqtt: Limiters::new(LimitKind::Mqtt),
            quotas: QuotaCache::new(defaults),
            mqtt_rates: ApplianceRates::new(defaults),
        }
    }

    /// One tenant API request.
    pub async fn check_api(&self, pool: &PgPool, tenant: TenantId) -> Result<Decision, sqlx::Error> {
        let q = self.quotas.get(pool, tenant).await?;
        let rate = Rate::from_quota(q.api_per_minute, q.api_burst);
        Ok(self.api.check(&tenant, rate))
    }

    /// One support assistant message of a tenant.
    pub async fn check_assistant(&self, pool: &PgPool, tenant: TenantId) -> Result<Decision, sqlx::Error> {
        let q = self.quotas.get(pool, tenant).await?;
        let rate = Rate::from_quota(q.assistant_per_hour, q.assistant_burst);
        Ok(self.assistant.check(&tenant, rate))
    }

    /// One MQTT message of an appliance, at its rate (no database access: see
    /// [`ApplianceRates`]). The caller decides what a refusal means for the message.
    pub fn check_mqtt(&self, appliance: &ApplianceId) -> Decision {
        self.mqtt.check(appliance, self.mqtt_rates.get(appliance))
    }

    /// Periodic housekeeping (the serve loop calls it every minute).
    pub fn evict(&self) -> usize {
        self.quotas.evict_stale();
        self.api.evict_idle(IDLE_EVICTION)
            + self.assistant.evict_idle(IDLE_EVICTION)
            + self.mqtt.evict_idle(IDLE_EVICTION)
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

    fn defaults() -> LimitsConfig {
        crate::config::Config::default().limits
    }

    #[test]
    fn appliances_on_a_plan_get_its_rate_and_the_others_the_defaults() {
        let rates = ApplianceRates::new(defaults());
        let default = Rate { per_period: defaults().mqtt_per_minute, burst: defaults().mqtt_burst };
        assert_eq!(rates.default_rate(), default);
        let (on_plan, same_as_default, other) = (ApplianceId::new(), ApplianceId::new(), ApplianceId::new());
        let small = Rate::from_quota(60, 5);
        assert_eq!(rates.replace([(on_plan, small), (same_as_default, default)]), 1, "defaults are not kept");
        assert_eq!(rates.get(&on_plan), small);
        assert_eq!((rates.get(&same_as_default), rates.get(&other)), (default, default));

        // The next refresh replaces everything: a tenant back on the defaults loses its entry.
        assert_eq!(rates.replace([(other, Rate::from_quota(0, -3))]), 1);
        assert_eq!(rates.get(&on_plan), default);
        assert_eq!(rates.get(&other), Rate { per_period: 1, burst: 1 }, "a quota is at least 1");
        assert_eq!(rates.refresh_interval(), Duration::from_secs(u64::from(defaults().refresh_s)));
    }

    #[test]
    fn an_appliance_takes_from_its_own_bucket_at_its_rate() {
        let limits = RateLimits::new(defaults());
        let (a, b) = (ApplianceId::new(), ApplianceId::new());
        limits.mqtt_rates.replace([(a, Rate::from_quota(60, 2))]);
        let got: Vec<bool> = (0..3).map(|_| limits.check_mqtt(&a).allowed()).collect();
        assert_eq!(got, [true, true, false]);
        let d = limits.check_mqtt(&b);
        assert!(d.allowed());
        assert_eq!((d.kind, d.remaining), (LimitKind::Mqtt, defaults().mqtt_burst - 1));
        assert_eq!(d.policy(), format!("{} per minute, burst {}", defaults().mqtt_per_minute, defaults().mqtt_burst));
        assert_eq!(limits.mqtt.len(), 2);
    }
}
