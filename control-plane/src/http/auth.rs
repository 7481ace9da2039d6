//! The tenant extractor: `Authorization: Bearer hearth_tk_…` resolved to a [`TenantId`].
//! A handler that takes [`Tenant`] cannot run unauthenticated, and every repository
//! function it calls takes the tenant id.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hearth_protocol::TenantId;

use super::error::ApiError;
use super::AppState;
use crate::db::tenants;

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        match tenants::authenticate(&state.pool, key).await? {
            Some(id) => Ok(Tenant(id)),
            None => Err(ApiError::Unauthorized),
        }
    }
}
