//! Rate limits (governor, GCRA). One limiter per key — a tenant for API requests and
//! assistant messages, an appliance for MQTT messages — built from the quotas of the
//! tenant's plan, or `limits.*`: a rate per period and a bucket of `burst` requests. A
//! limiter whose quota changed is rebuilt, and idle keys are evicted so memory stays
//! bounded by the tenants and appliances active in the last [`IDLE_EVICTION`]. Throttled
//! requests are counted by kind only (`hearth_rate_limited_total{kind}`), never by tenant
//! or appliance, to keep label cardinality bounded.
//!
//! Bad credentials have limits of their own, fed by failures only and checked before any
//! lookup or hashing: [`CredentialLimits`].
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
use std::net::{IpAddr, Ipv6Addr};
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

use crate::config::{AuthConfig, LimitsConfig};
use crate::db::plans::{self, Quotas};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Which limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    pub fn period(self) -> &'static str {
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
    /// MQTT status messages, per appliance, at [`PRESENCE_RATE`] (see `ingest::consumer`).
    pub presence: Limiters<ApplianceId>,
    pub quotas: QuotaCache,
    /// The MQTT rates of appliances on a plan (the rest get the defaults).
    pub mqtt_rates: ApplianceRates,
    /// When each tenant was last told `quota.exhausted` for a limit by this replica (the
    /// database dedups across replicas; this keeps a flood of refusals off the database).
    told: std::sync::Mutex<std::collections::HashMap<(TenantId, LimitKind), Instant>>,
}

/// Status messages of one appliance: an agent sends one or two per connection (`online`,
/// then `offline` or its last will), so this lets a box on a bad link reconnect every few
/// seconds for a minute and still bounds one that publishes status in a loop.
pub const PRESENCE_RATE: Rate = Rate { per_period: 30, burst: 30 };

/// A tenant is told that a limit refused it at most this often.
pub const TELL_EXHAUSTED_EVERY: Duration = Duration::from_secs(3600);

/// Keys unused for this long are forgotten (a returning tenant or appliance starts with a
/// full bucket, which is what an idle one has anyway).
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

impl RateLimits {
    pub fn new(defaults: LimitsConfig) -> Self {
        RateLimits {
            api: Limiters::new(LimitKind::Api),
            assistant: Limiters::new(LimitKind::Assistant),
            mqtt: Limiters::new(LimitKind::Mqtt),
            presence: Limiters::new(LimitKind::Mqtt),
            quotas: QuotaCache::new(defaults),
            mqtt_rates: ApplianceRates::new(defaults),
            told: Default::default(),
        }
    }

    /// Whether a refusal of `tenant` by `kind` should be told as `quota.exhausted`: the
    /// first in [`TELL_EXHAUSTED_EVERY`] on this replica.
    pub fn first_refusal(&self, tenant: TenantId, kind: LimitKind) -> bool {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match told.get(&(tenant, kind)) {
            Some(at) if now.duration_since(*at) < TELL_EXHAUSTED_EVERY => false,
            _ => {
                told.insert((tenant, kind), now);
                true
            }
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

    /// One MQTT status message of an appliance, at [`PRESENCE_RATE`], apart from
    /// [`RateLimits::check_mqtt`]'s allowance.
    pub fn check_presence(&self, appliance: &ApplianceId) -> Decision {
        self.presence.check(appliance, PRESENCE_RATE)
    }

    /// Periodic housekeeping (the serve loop calls it every minute).
    pub fn evict(&self) -> usize {
        self.quotas.evict_stale();
        self.told.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, at| at.elapsed() < TELL_EXHAUSTED_EVERY);
        self.api.evict_idle(IDLE_EVICTION)
            + self.assistant.evict_idle(IDLE_EVICTION)
            + self.mqtt.evict_idle(IDLE_EVICTION)
            + self.presence.evict_idle(IDLE_EVICTION)
    }
}

/// Failures of one kind of key, each key a bucket that fills by one per failure and drains
/// at `per_minute`; a key whose bucket holds `burst` failures must wait. Unlike the
/// governor buckets above, a check does not take anything: only a failure counts, so a
/// caller who gets it right is never slowed by having been checked.
#[derive(Debug)]
pub struct FailureCounters<K> {
    burst: f64,
    per_second: f64,
    entries: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> FailureCounters<K> {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self::draining(burst, f64::from(per_minute.max(1)) / 60.0)
    }

    /// `burst` failures, forgotten at `per_second`.
    pub fn draining(burst: u32, per_second: f64) -> Self {
        FailureCounters {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(f64::MIN_POSITIVE),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, (level, at): (f64, Instant), now: Instant) -> f64 {
        (level - now.saturating_duration_since(at).as_secs_f64() * self.per_second).max(0.0)
    }

    /// `Some(wait)` while `key` has used up its failures.
    pub fn wait(&self, key: &K) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let level = self.level(*entries.get(key)?, Instant::now());
        (level > self.burst - 1.0).then(|| Duration::from_secs_f64((level - (self.burst - 1.0)) / self.per_second))
    }

    /// Counts one failure of `key`.
    pub fn fail(&self, key: &K) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let level = entries.get(key).map_or(0.0, |e| self.level(*e, now));
        entries.insert(key.clone(), (level + 1.0, now));
    }

    /// Forgets `key`'s failures.
    pub fn clear(&self, key: &K) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Forgets keys whose failures have drained away; returns how many.
    pub fn evict_drained(&self) -> usize {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|_, e| self.level(*e, now) > 0.0);
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which failure limit refused a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureScope {
    /// Too many failures from this source address.
    Source,
    /// The same bearer credential failed too often.
    Credential,
    /// Too many failed sign-ins for this address from this source.
    AccountFromSource,
    /// Too many failed sign-ins for this address from everywhere (a short wait).
    Account,
}

impl FailureScope {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureScope::Source => "source",
            FailureScope::Credential => "credential",
            FailureScope::AccountFromSource => "account_source",
            FailureScope::Account => "account",
        }
    }
}

/// A credential refused before it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFailures {
    pub scope: FailureScope,
    pub retry_after: Duration,
}

impl TooManyFailures {
    /// Whole seconds to wait, at least 1 (for `Retry-After`).
    pub fn retry_after_s(&self) -> u64 {
        (self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)).max(1)
    }
}

/// A source as the limits key it: an IPv4 address, or the /64 of an IPv6 address (one
/// subscriber usually holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// How long a source that signed in to an address stays exempt from that address's
/// all-sources limit.
pub const KNOWN_SOURCE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The bad-credential limits (`auth.*`), checked before any credential is looked up or any
/// password hashed, and fed only by failures:
///
/// | bucket | key | refuses |
/// |---|---|---|
/// | source | source address (IPv6: /64) | every credential and sign-in from it |
/// | credential | SHA-256 of the presented bearer credential | that credential only |
/// | account from source | (address, source) | sign-ins for that address from that source |
/// | account | address | sign-ins for that address from sources that never signed in to it |
///
/// The account buckets key the address as typed (lower-cased), whether or not an account
/// has it, so they answer alike for known and unknown addresses. A stranger filling an
/// address's buckets from elsewhere does not stop its owner: the (address, source) bucket
/// is the owner's own, and a source that signed in to the address within
/// [`KNOWN_SOURCE_TTL`] skips the all-sources bucket, which in any case only slows (it
/// drains at `account_failures_per_minute`). Kept in memory per replica: with N replicas
/// an attacker gets at most N times the attempts.
#[derive(Debug)]
pub struct CredentialLimits {
    source: FailureCounters<IpAddr>,
    credential: FailureCounters<Vec<u8>>,
    account_source: FailureCounters<(String, IpAddr)>,
    account: FailureCounters<String>,
    known_sources: Mutex<HashMap<(String, IpAddr), Instant>>,
}

impl CredentialLimits {
    pub fn new(cfg: &AuthConfig) -> Self {
        // The (address, source) bucket holds `max_failed_logins` and drains in `lockout_s`.
        let burst = cfg.max_failed_logins.max(1);
        CredentialLimits {
            source: FailureCounters::new(cfg.source_failures_burst, cfg.source_failures_per_minute),
            credential: FailureCounters::new(cfg.credential_failures_burst, cfg.credential_failures_per_minute),
            account_source: FailureCounters::draining(burst, f64::from(burst) / cfg.lockout_s.max(1) as f64),
            account: FailureCounters::new(cfg.account_failures_burst, cfg.account_failures_per_minute),
            known_sources: Mutex::new(HashMap::new()),
        }
    }

    fn refuse(scope: FailureScope, wait: Option<Duration>) -> Result<(), TooManyFailures> {
        match wait {
            Some(retry_after) => Err(TooManyFailures { scope, retry_after }),
            None => Ok(()),
        }
    }

    /// Before a bearer credential is looked up.
    pub fn check_bearer(&self, source: IpAddr, secret: &str) -> Result<(), TooManyFailures> {
        Self::refuse(FailureScope::Source, self.source.wait(&source_key(source)))?;
        Self::refuse(FailureScope::Credential, self.credential.wait(&crate::token::hash(secret)))
    }

    /// A bearer credential that did not authenticate.
    pub fn bearer_failed(&self, source: IpAddr, secret: &str) {
        self.source.fail(&source_key(source));
        self.credential.fail(&crate::token::hash(secret));
    }

    fn known(&self, email: &str, source: IpAddr) -> bool {
        let known = self.known_sources.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&(email.to_string(), source)).is_some_and(|at| at.elapsed() < KNOWN_SOURCE_TTL)
    }

    /// Before a sign-in's password is hashed.
    pub fn check_sign_in(&self, source: IpAddr, email: &str) -> Result<(), TooManyFailures> {
        let (source, email) = (source_key(source), email.trim().to_lowercase());
        Self::refuse(FailureScope::Source, self.source.wait(&source))?;
        Self::refuse(FailureScope::AccountFromSource, self.account_source.wait(&(email.clone(), source)))?;
        if self.known(&email, source) {
            return Ok(());
        }
        Self::refuse(FailureScope::Account, self.account.wait(&email))
    }

    /// A sign-in that failed (unknown address or wrong password alike).
    pub fn sign_in_failed(&self, source: IpAddr, email: &str) {
        let (source, email) = (source_key(source), email.trim().to_lowercase());
        self.source.fail(&source);
        self.account_source.fail(&(email.clone(), source));
        if !self.known(&email, source) {
            self.account.fail(&email);
        }
    }

    /// A sign-in that succeeded: this source's failures for the address are forgotten and
    /// it skips the address's all-sources limit from now on.
    pub fn signed_in(&self, source: IpAddr, email: &str) {
        let key = (email.trim().to_lowercase(), source_key(source));
        self.account_source.clear(&key);
        self.known_sources.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now());
    }

    /// Periodic housekeeping (with the rate limiters'): drained buckets and expired known
    /// sources go.
    pub fn evict(&self) -> usize {
        let known = {
            let mut k = self.known_sources.lock().unwrap_or_else(|p| p.into_inner());
            let before = k.len();
            k.retain(|_, at| at.elapsed() < KNOWN_SOURCE_TTL);
            before - k.len()
        };
        known
            + self.source.evict_drained()
            + self.credential.evict_drained()
            + self.account_source.evict_drained()
            + self.account.evict_drained()
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

    #[test]
    fn failures_fill_a_bucket_that_drains_and_checks_take_nothing() {
        let f = FailureCounters::new(3, 60);
        for _ in 0..10 {
            assert_eq!(f.wait(&"a"), None, "checking alone never refuses");
        }
        f.fail(&"a");
        f.fail(&"a");
        assert_eq!(f.wait(&"a"), None);
        f.fail(&"a");
        let wait = f.wait(&"a").expect("three failures refuse");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(f.wait(&"b"), None, "another key has its own bucket");
        assert_eq!(f.evict_drained(), 0);
        f.clear(&"a");
        assert_eq!(f.wait(&"a"), None);
    }

    fn auth() -> AuthConfig {
        crate::config::Config::default().auth
    }

    #[test]
    fn a_stranger_fills_the_address_buckets_but_not_the_owners() {
        let cfg = AuthConfig { account_failures_burst: 10, ..auth() };
        let limits = CredentialLimits::new(&cfg);
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        let strangers: Vec<IpAddr> = (1..=4).map(|i| format!("203.0.113.{i}").parse().unwrap()).collect();
        limits.signed_in(owner, "ann@example.com");
        for s in &strangers[..2] {
            for _ in 0..cfg.max_failed_logins {
                limits.check_sign_in(*s, "Ann@Example.com").expect("not yet");
                limits.sign_in_failed(*s, "Ann@Example.com");
            }
            let refused = limits.check_sign_in(*s, "ann@example.com").unwrap_err();
            assert_eq!(refused.scope, FailureScope::AccountFromSource);
            assert_eq!(refused.retry_after_s(), cfg.lockout_s / u64::from(cfg.max_failed_logins));
        }
        // Ten failures from two sources: the address's all-sources burst of ten is used up…
        let refused = limits.check_sign_in(strangers[2], "ann@example.com").unwrap_err();
        assert_eq!(refused.scope, FailureScope::Account);
        assert!(refused.retry_after_s() <= 60 / u64::from(cfg.account_failures_per_minute) * 2);
        // …but the owner's source is theirs, and known.
        assert_eq!(limits.check_sign_in(owner, "ann@example.com"), Ok(()));
    }

    #[test]
    fn sources_are_keyed_by_address_or_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
