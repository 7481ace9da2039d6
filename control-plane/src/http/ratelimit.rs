//! The tenant API's rate limit, as a layer in front of every route: a request to an
//! operation a customer credential opens (`openapi::is_customer_operation`, the same list that
//! documents the `429`) with such a credential (API key or sign-in session of an active
//! tenant) takes one request from its tenant's bucket (`limits::RateLimits`). Refused: `429 rate_limited` with
//! `Retry-After`; every such response, refused or not, says which limit applies and what is
//! left (`X-RateLimit-Kind`, `X-RateLimit-Policy`, `X-RateLimit-Remaining`); a handler that
//! applies a tighter limit of its own (the support chat's `assistant`) describes that one
//! instead, through [`refusal`] and [`describe`]. Operators,
//! enrollment, sign-in, health, metrics and the docs are not limited here, whatever
//! credential a request to them carries (failed credentials and sign-ins have the
//! bad-credential limits of `limits::CredentialLimits`, checked in `auth`).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{bearer, Caller};
use super::error::ApiError;
use super::AppState;
use crate::db::{tenants, users};
use hearth_protocol::TenantId;

use crate::limits::Decision;

pub(super) async fn enforce(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limited = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| super::openapi::is_customer_operation(req.method(), route.as_str()));
    if !limited {
        return next.run(req).await;
    }
    let customer = bearer(req.headers())
        .is_some_and(|t| t.starts_with(tenants::API_KEY_PREFIX) || t.starts_with(users::SESSION_PREFIX));
    if !customer {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // The extractors reuse this resolution (it is cached in the request's extensions).
    let tenant = match Caller::resolve(&mut parts, &s).await {
        Ok(Caller::TenantKey { tenant, active: true, .. } | Caller::TenantUser { tenant, active: true, .. }) => {
            Some(tenant)
        }
        _ => None, // the handler's extractor answers 401/403 as documented
    };
    let req = Request::from_parts(parts, body);
    let Some(tenant) = tenant else { return next.run(req).await };
    let decision = match s.rate_limits.check_api(&s.domain.pool, tenant).await {
        Ok(d) => d,
        Err(e) => return ApiError::Database(e).into_response(),
    };
    if decision.retry_after.is_some() {
        return refusal(&s, tenant, &decision);
    }
    let mut r = next.run(req).await;
    // A handler that applied a tighter limit (the assistant's) already described it.
    if !r.headers().contains_key("x-ratelimit-kind") {
        describe(&mut r, &decision);
    }
    r
}

/// The `429 rate_limited` answer to a refused decision, with `Retry-After` and the limit's
/// headers; counted in `hearth_rate_limited_total{kind}`.
pub(super) fn refusal(s: &AppState, tenant: TenantId, decision: &Decision) -> Response {
    s.metrics.rate_limited.with_label_values(&[decision.kind.as_str()]).inc();
    let wait = decision.retry_after.unwrap_or_default();
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let message = format!(
        "too many requests: this account's {} limit is {}; try again in {secs} s",
        decision.kind.as_str(),
        decision.policy()
    );
    // The first refusal of the hour is told to the tenant (`quota.exhausted`), off the
    // request's path.
    if s.rate_limits.first_refusal(tenant, decision.kind) {
        let (pool, quota) =
            (s.domain.pool.clone(), format!("{}_per_{}", decision.kind.as_str(), decision.kind.period()));
        let (limit, told) = (i64::from(decision.rate.per_period), message.clone());
        tokio::spawn(async move {
            crate::domain::events::quota_exhausted(&pool, tenant, &quota, limit, &told).await;
        });
    }
    let mut r =
        ApiError::Refused { status: StatusCode::TOO_MANY_REQUESTS, code: "rate_limited", message }.into_response();
    r.headers_mut().insert(RETRY_AFTER, secs.into());
    describe(&mut r, decision);
    r
}

/// Says which limit applies to the response and what is left of it.
pub(super) fn describe(r: &mut Response, d: &Decision) {
    let h = r.headers_mut();
    h.insert("x-ratelimit-kind", HeaderValue::from_static(d.kind.as_str()));
    if let Ok(v) = HeaderValue::from_str(&d.policy()) {
        h.insert("x-ratelimit-policy", v);
    }
    h.insert("x-ratelimit-remaining", d.remaining.into());
}
