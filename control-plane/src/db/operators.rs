//! Operator tokens: `hearth_ot_<43 chars>`, SHA-256 stored, each with a role.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `support` | read everything, create tasks on a customer's behalf; no deletes, no credentials |
//! | `viewer` | read only |

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::secret::Secret;
use crate::token;

pub const TOKEN_PREFIX: &str = "hearth_ot_";

/// `admin`: everything; `support`: read everything and create tasks on a customer's behalf;
/// `viewer`: read only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = OperatorRole)]
pub enum Role {
    Admin,
    Support,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Support => "support",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "support" => Ok(Role::Support),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("unknown operator role {other:?} (admin, support or viewer)")),
        }
    }
}

/// An operator token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OperatorToken {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = Role)]
    pub role: RoleColumn,
    /// `hearth_ot_` and the token's first six characters.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// [`Role`] read from its text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoleColumn(pub Role);

impl TryFrom<String> for RoleColumn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(RoleColumn)
    }
}

/// The authenticated operator of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

const COLUMNS: &str = "id, name, role, prefix, created_at, created_by, revoked_at";

/// Issues a token; the token is returned once.
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<(OperatorToken, Secret<String>), sqlx::Error> {
    let secret = token::generate(TOKEN_PREFIX);
    let row = sqlx::query_as(&format!(
        "INSERT INTO operator_tokens (id, name, role, token_hash, prefix, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(role.as_str())
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
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<Option<OperatorToken>, sqlx::Error> {
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
    let row: Option<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, role FROM operator_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token::hash(secret))
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(id, name, role)| role.parse().ok().map(|role| Operator { id, name, role })))
}
