//! Who is calling. `Authorization: Bearer …` is resolved once per request into a
//! [`Caller`] (cached in the request's extensions) by its prefix:
//!
//! | prefix | credential | extractors that accept it |
//! |---|---|---|
//! | `hearth_tk_` | tenant API key | [`Tenant`] |
//! | `hearth_st_` | tenant user's sign-in session | [`Tenant`], [`Owner`] (role owner) |
//! | `hearth_ot_` | operator token | [`OperatorAuth`] |
//!
//! A handler that takes [`Tenant`] cannot run unauthenticated and gets the tenant id from
//! the credential, never from the request; every repository function it calls takes that
//! id. A suspended tenant's keys and sessions are refused with `403 tenant_suspended`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use hearth_protocol::{ApiKeyId, TenantId, UserId};

use super::error::ApiError;
use super::AppState;
use crate::db::audit::Actor;
use crate::db::operators::{self, Operator};
use crate::db::tenants;
use crate::db::users;
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

    /// Resolves (once per request) the credential of `parts`.
    pub(super) async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let secret = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let caller = if secret.starts_with(tenants::API_KEY_PREFIX) {
            tenants::authenticate(&state.domain.pool, secret).await?.map(|k| Caller::TenantKey {
                tenant: k.tenant,
                key_id: k.key_id,
                prefix: k.prefix,
                active: k.active,
            })
        } else if secret.starts_with(users::SESSION_PREFIX) {
            users::authenticate(&state.domain.pool, secret).await?.map(|u| Caller::TenantUser {
                tenant: u.tenant,
                user: u.id,
                email: u.email,
                role: u.role,
                active: u.tenant_active,
            })
        } else if secret.starts_with(operators::TOKEN_PREFIX) {
            operators::authenticate(&state.domain.pool, secret).await?.map(Caller::Operator)
        } else {
            None
        };
        let caller = caller.ok_or(ApiError::Unauthorized)?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
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
