//! Who is calling. `Authorization: Bearer …` is resolved once per request into a
//! [`Caller`] (cached in the request's extensions) by its prefix:
//!
//! | prefix | credential | extractors that accept it |
//! |---|---|---|
//! | `hearth_tk_` | tenant API key | [`Tenant`] |
//! | `hearth_st_` | tenant user's sign-in session | [`Tenant`], [`Owner`] (role owner) |
//! | `hearth_ot_` | operator token | [`OperatorAuth`] |
//!
//! Without an `Authorization` header, the console's session cookie ([`CONSOLE_COOKIE`],
//! `hearth_oc_…`, set by `POST /api/v1/console/login`) authenticates an operator the same
//! way; a request that changes something (any method but GET, HEAD and OPTIONS) must then
//! also carry the session's CSRF token in `X-CSRF-Token`, or it is `403 csrf_failed`. A
//! bearer credential, when sent, always wins over the cookie (scripts and the CLI never
//! need a CSRF token).
//!
//! A handler that takes [`Tenant`] cannot run unauthenticated and gets the tenant id from
//! the credential, never from the request; every repository function it calls takes that
//! id. A suspended tenant's keys and sessions are refused with `403 tenant_suspended`.
//!
//! Before a credential is looked up, the bad-credential limits
//! ([`crate::limits::CredentialLimits`]) are asked about its [`Source`] and the credential
//! itself; a refusal is `429 too_many_failures` with `Retry-After`, and a credential that
//! does not authenticate counts as a failure of both.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use hearth_protocol::{ApiKeyId, TenantId, UserId};

use super::error::ApiError;
use super::AppState;
use crate::db::audit::Actor;
use crate::db::operator_accounts as console_sessions;
use crate::db::operators::{self, Operator};
use crate::db::tenants;
use crate::db::users;
use crate::domain::operator_accounts;
use crate::model::{OperatorRole, UserRole};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    TenantKey { tenant: TenantId, key_id: ApiKeyId, prefix: String, active: bool },
    TenantUser { tenant: TenantId, user: UserId, email: String, role: UserRole, active: bool },
    Operator(Operator),
}

impl Caller {
    /// As the audit trail names it.
    pub fn actor(&self) -> Actor {
        match self {
            Caller::TenantKey { key_id, prefix, .. } => Actor::tenant_key(key_id, prefix),
            Caller::TenantUser { user, email, .. } => Actor::tenant_user(user, email),
            Caller::Operator(op) => Actor::operator(op.id, &op.name),
        }
    }

    /// Resolves (once per request: the outcome, a refusal too, is kept in the request's
    /// extensions) the credential of `parts`.
    pub(super) async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        if let Some(Refused(refusal)) = parts.extensions.get::<Refused>() {
            return Err(refusal.map_or(ApiError::Unauthorized, ApiError::TooManyFailures));
        }
        let (secret, from_cookie) = match bearer(&parts.headers) {
            Some(b) => (b.to_owned(), false),
            None => (console_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?.to_owned(), true),
        };
        let source = Source::of(parts, state);
        if let Err(t) = state.credentials.check_bearer(source, &secret) {
            state.metrics.credential_refusals.with_label_values(&[t.scope.as_str()]).inc();
            parts.extensions.insert(Refused(Some(t)));
            return Err(ApiError::TooManyFailures(t));
        }
        let caller = Self::look_up(&secret, state).await?;
        let Some(caller) = caller else {
            state.credentials.bearer_failed(source, &secret);
            parts.extensions.insert(Refused(None));
            return Err(ApiError::Unauthorized);
        };
        if from_cookie && !parts.method.is_safe() {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !operator_accounts::csrf_matches(&secret, sent) {
                return Err(csrf_failed());
            }
        }
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }

    async fn look_up(secret: &str, state: &AppState) -> Result<Option<Caller>, ApiError> {
        let lookups = &state.metrics.credential_lookups;
        let caller = if secret.starts_with(tenants::API_KEY_PREFIX) {
            lookups.with_label_values(&["api_key"]).inc();
            tenants::authenticate(&state.domain.pool, secret).await?.map(|k| Caller::TenantKey {
                tenant: k.tenant,
                key_id: k.key_id,
                prefix: k.prefix,
                active: k.active,
            })
        } else if secret.starts_with(users::SESSION_PREFIX) {
            lookups.with_label_values(&["session"]).inc();
            users::authenticate(&state.domain.pool, secret).await?.map(|u| Caller::TenantUser {
                tenant: u.tenant,
                user: u.id,
                email: u.email,
                role: u.role,
                active: u.tenant_active,
            })
        } else if secret.starts_with(operators::TOKEN_PREFIX) {
            lookups.with_label_values(&["operator_token"]).inc();
            operators::authenticate(&state.domain.pool, secret).await?.map(Caller::Operator)
        } else if secret.starts_with(console_sessions::SESSION_PREFIX) {
            lookups.with_label_values(&["console_session"]).inc();
            console_sessions::authenticate(&state.domain.pool, secret).await?.map(|(op, _)| Caller::Operator(op))
        } else {
            None
        };
        Ok(caller)
    }
}

/// A credential of this request that was refused (`None`: it did not authenticate).
#[derive(Debug, Clone, Copy)]
struct Refused(Option<crate::limits::TooManyFailures>);

/// Where a request comes from, as the bad-credential limits key it: the peer's address,
/// or, when the peer is one of `auth.trusted_proxies`, the address `X-Forwarded-For` names
/// (read from the right: the first hop that is not a trusted proxy). A peer that is not
/// trusted cannot choose its source with the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(pub IpAddr);

impl Source {
    fn of(parts: &Parts, state: &AppState) -> IpAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip().to_canonical());
        source_address(peer, &parts.headers, &state.trusted_proxies)
    }
}

/// The source of a request from `peer` with `headers`, trusting `X-Forwarded-For` from
/// `trusted` peers only.
pub fn source_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut source = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip())) else {
            break; // garbage: the last trusted hop is the best we know
        };
        source = ip.to_canonical();
        if !is_trusted(&source) {
            break;
        }
    }
    source
}

impl FromRequestParts<AppState> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Source(Source::of(parts, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer is the source, whatever it claims.
        assert_eq!(source_address(ip("198.51.100.1"), &xff("203.0.113.9"), &trusted), ip("198.51.100.1"));
        // Through a trusted proxy: the right-most hop that is not a trusted proxy.
        assert_eq!(source_address(ip("10.0.0.2"), &xff("1.2.3.4, 203.0.113.9, 10.0.0.7"), &trusted), ip("203.0.113.9"));
        // No header, or garbage: the proxy itself.
        assert_eq!(source_address(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
        assert_eq!(source_address(ip("10.0.0.2"), &xff("nonsense"), &trusted), ip("10.0.0.2"));
        assert_eq!(source_address(ip("10.0.0.2"), &xff("[2001:db8::1]:4711"), &trusted), ip("2001:db8::1"));
    }
}

/// The console's session cookie: `__Host-` makes browsers insist on `Secure`, `Path=/` and
/// no `Domain`, so no other host or path can plant or read it.
pub const CONSOLE_COOKIE: &str = "__Host-hearth_console";
/// The header that carries a console session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn csrf_failed() -> ApiError {
    ApiError::Refused {
        status: StatusCode::FORBIDDEN,
        code: "csrf_failed",
        message: "a change made with the console's session cookie must carry the session's X-CSRF-Token header".into(),
    }
}

/// The value of the console's session cookie, if the request carries it.
pub(super) fn console_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == CONSOLE_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that stores `secret` for `max_age_s` seconds.
pub(super) fn console_cookie_header(secret: &str, max_age_s: u64) -> String {
    format!("{CONSOLE_COOKIE}={secret}; Path=/; Max-Age={max_age_s}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the console cookie.
pub(super) fn console_cookie_clear() -> String {
    format!("{CONSOLE_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The credential of `Authorization: Bearer …`, if there is one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
}

fn suspended() -> ApiError {
    ApiError::Refused {
        status: StatusCode::FORBIDDEN,
        code: "tenant_suspended",
        message: "this customer account is suspended; contact the service operator".into(),
    }
}

/// The authenticated tenant of a request (an API key or a signed-in user of that tenant).
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::resolve(parts, state).await? {
            Caller::TenantKey { tenant, active, .. } | Caller::TenantUser { tenant, active, .. } => {
                if active {
                    Ok(Tenant(tenant))
                } else {
                    Err(suspended())
                }
            }
            Caller::Operator(_) => Err(ApiError::Refused {
                status: StatusCode::FORBIDDEN,
                code: "wrong_credential",
                message: "this is a customer endpoint; operators use /api/v1/admin/…".into(),
            }),
        }
    }
}

/// Any authenticated caller (for handlers that audit: take it next to [`Tenant`]; the
/// credential is looked up once).
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Caller::resolve(parts, state).await
    }
}

/// A signed-in owner of an active tenant: manages that tenant's members and API keys.
/// API keys cannot (a leaked key must not be able to mint more keys or accounts).
#[derive(Debug, Clone)]
pub struct Owner {
    pub tenant: TenantId,
    pub user: UserId,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::resolve(parts, state).await?;
        match &caller {
            Caller::TenantUser { active: false, .. } | Caller::TenantKey { active: false, .. } => Err(suspended()),
            Caller::TenantUser { tenant, user, role: UserRole::Owner, .. } => {
                Ok(Owner { tenant: *tenant, user: *user, actor: caller.actor() })
            }
            _ => Err(ApiError::Refused {
                status: StatusCode::FORBIDDEN,
                code: "owner_required",
                message: "only a signed-in owner of the account may do this".into(),
            }),
        }
    }
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read anything (every role).
    Read,
    /// Create tasks on a customer's appliance (admin, support).
    ActForCustomer,
    /// Everything else: create, change, delete, issue and revoke credentials (admin).
    Manage,
}

/// An authenticated operator (`hearth_ot_…`).
#[derive(Debug, Clone)]
pub struct OperatorAuth(pub Operator);

impl OperatorAuth {
    /// `403 forbidden_for_role` unless the operator's role allows `p`.
    pub fn require(&self, p: Permission) -> Result<&Operator, ApiError> {
        let allowed = matches!(
            (self.0.role, p),
            (OperatorRole::Admin, _)
                | (OperatorRole::Support, Permission::Read | Permission::ActForCustomer)
                | (OperatorRole::Viewer, Permission::Read)
        );
        if allowed {
            Ok(&self.0)
        } else {
            Err(ApiError::Refused {
                status: StatusCode::FORBIDDEN,
                code: "forbidden_for_role",
                message: format!("the operator role `{}` may not do this", self.0.role.as_str()),
            })
        }
    }

    pub fn actor(&self) -> Actor {
        Caller::Operator(self.0.clone()).actor()
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::resolve(parts, state).await? {
            Caller::Operator(op) => Ok(OperatorAuth(op)),
            _ => Err(ApiError::Unauthorized),
        }
    }
}
