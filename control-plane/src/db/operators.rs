//! Operator tokens: `hearth_ot_<43 chars>`, SHA-256 stored, each with a role
//! ([`OperatorRole`]).
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `support` | read everything, create tasks on a customer's behalf; no deletes, no credentials |
//! | `viewer` | read only |

use hearth_protocol::OperatorId;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::OperatorRole;
use crate::secret::Secret;
use crate::token;

pub const TOKEN_PREFIX: &str = "hearth_ot_";

/// An operator token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OperatorToken {
    pub id: OperatorId,
    pub name: String,
    pub role: OperatorRole,
    /// `hearth_ot_` and the token's first six characters.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// The authenticated operator of a request.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Operator {
    pub id: OperatorId,
    pub name: String,
    pub role: OperatorRole,
}

const COLUMNS: &str = "id, name, role, prefix, created_at, created_by, revoked_at";

/// Issues a token; the token is returned once.
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    role: OperatorRole,
    created_by: &str,
) -> Result<(OperatorToken, Secret<String>), sqlx::Error> {
    let secret = token::generate(TOKEN_PREFIX);
    let row = sqlx::query_as(&format!(
        "INSERT INTO operator_tokens (id, name, role, token_hash, prefix, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(OperatorId::new())
    .bind(name)
    .bind(role)
    .bind(token::hash(secret.expose()))
    .bind(token::display_prefix(secret.expose()))
    .bind(created_by)
    .fetch_one(conn)
    .await?;
    Ok((row, secret))
}

pub async fn list(pool: &PgPool) -> Result<Vec<OperatorToken>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM operator_tokens ORDER BY created_at, id")).fetch_all(pool).await
}

/// Revokes a token; `None` if there is no such token, the row (revoked earlier or now) otherwise.
pub async fn revoke(conn: &mut PgConnection, id: OperatorId) -> Result<Option<OperatorToken>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE operator_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Option<Operator>, sqlx::Error> {
    if !secret.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    sqlx::query_as("SELECT id, name, role FROM operator_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
        .bind(token::hash(secret))
        .fetch_optional(pool)
        .await
}
