//! Operator tokens: issued (with a role), listed, revoked, each change audited. The admin
//! API and the operator CLI both go through these operations.

use hearth_protocol::OperatorId;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{label, Invalid};
use crate::db::audit::{snapshot, Recorder};
use crate::db::operators::{self as store, OperatorToken};
use crate::model::OperatorRole;

/// Longest operator token label.
pub const NAME_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A newly issued operator token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedOperator {
    #[serde(flatten)]
    pub info: OperatorToken,
    /// The token itself: shown this once, stored only as a hash.
    pub token: String,
}

/// Every operator token, revoked ones too, oldest first (never the tokens themselves).
pub async fn list(pool: &PgPool) -> Result<Vec<OperatorToken>, OperatorError> {
    Ok(store::list(pool).await?)
}

/// Issues an operator token named `name` with `role`, audited (`operator.issue`); the token
/// is returned this once.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: OperatorRole,
    audit: Recorder<'_>,
) -> Result<IssuedOperator, OperatorError> {
    let name = label("name", name, NAME_MAX)?;
    let mut tx = pool.begin().await?;
    let (info, token) = store::create(&mut tx, name, role, &audit.actor.label()).await?;
    audit.record(&mut tx, None, "operator.issue", ("operator", info.id.to_string()), None, snapshot(&info)).await?;
    tx.commit().await?;
    Ok(IssuedOperator { info, token: token.expose().clone() })
}

/// Revokes an operator token (it stops working at once), audited (`operator.revoke`).
pub async fn revoke(pool: &PgPool, id: OperatorId, audit: Recorder<'_>) -> Result<OperatorToken, OperatorError> {
    let mut tx = pool.begin().await?;
    let revoked = store::revoke(&mut tx, id).await?.ok_or(OperatorError::NotFound)?;
    audit.record(&mut tx, None, "operator.revoke", ("operator", id.to_string()), None, snapshot(&revoked)).await?;
    tx.commit().await?;
    Ok(revoked)
}
