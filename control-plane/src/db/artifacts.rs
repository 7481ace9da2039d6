//! Signed agent builds, content-addressed by SHA-256, in PostgreSQL (`agent_artifacts`).
//! The one storage interface for builds: store, list, look up, and read a byte range (what
//! a resumable download serves), so another backend would replace only this module.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// A build as listed (without its bytes).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Artifact {
    /// SHA-256 of the build, hex: its id.
    pub sha256: String,
    pub version: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    pub size: i64,
    /// The signing key's id (first 8 bytes of its SHA-256, hex).
    pub key_id: String,
    /// The signed manifest (JSON), which agents check against their own keys.
    pub signature: String,
    pub uploaded_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

const COLUMNS: &str = "sha256, version, arch, size, key_id, signature, uploaded_by, created_at";

/// What storing a build did.
#[derive(Debug)]
pub enum Stored {
    New(Artifact),
    /// The same build was there already.
    Existing(Artifact),
    /// Another build holds this version and architecture.
    Conflict(Artifact),
}

/// Stores a build; the same bytes again change nothing.
#[allow(clippy::too_many_arguments)]
pub async fn put(
    conn: &mut PgConnection,
    sha256: &str,
    version: &str,
    arch: &str,
    key_id: &str,
    signature: &str,
    data: &[u8],
    uploaded_by: &str,
) -> Result<Stored, sqlx::Error> {
    let inserted: Option<Artifact> = sqlx::query_as(&format!(
        "INSERT INTO agent_artifacts (sha256, version, arch, size, key_id, signature, data, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(sha256)
    .bind(version)
    .bind(arch)
    .bind(data.len() as i64)
    .bind(key_id)
    .bind(signature)
    .bind(data)
    .bind(uploaded_by)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(a) = inserted {
        return Ok(Stored::New(a));
    }
    if let Some(a) = get(&mut *conn, sha256).await? {
        return Ok(Stored::Existing(a));
    }
    let other: Artifact =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM agent_artifacts WHERE version = $1 AND arch = $2"))
            .bind(version)
            .bind(arch)
            .fetch_one(conn)
            .await?;
    Ok(Stored::Conflict(other))
}

pub async fn get(conn: &mut PgConnection, sha256: &str) -> Result<Option<Artifact>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM agent_artifacts WHERE sha256 = $1"))
        .bind(sha256)
        .fetch_optional(conn)
        .await
}

/// The builds of one version (one per architecture).
pub async fn of_version(conn: &mut PgConnection, version: &str) -> Result<Vec<Artifact>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM agent_artifacts WHERE version = $1 ORDER BY arch"))
        .bind(version)
        .fetch_all(conn)
        .await
}

/// Every build, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Artifact>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM agent_artifacts ORDER BY created_at DESC, sha256"))
        .fetch_all(pool)
        .await
}

/// `len` bytes of a build from `offset` (fewer at its end); `None` if there is no such build.
pub async fn read_range(pool: &PgPool, sha256: &str, offset: i64, len: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
    // substring() on an EXTERNAL (uncompressed, out-of-line) value reads only the chunks
    // it needs.
    sqlx::query_scalar("SELECT substring(data FROM ($2 + 1)::int FOR $3::int) FROM agent_artifacts WHERE sha256 = $1")
        .bind(sha256)
        .bind(offset)
        .bind(len)
        .fetch_optional(pool)
        .await
}
