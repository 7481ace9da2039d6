//! Agent builds: an upload is refused unless it is signed by one of `artifacts.public_keys`
//! and matches its signed manifest (size, SHA-256, an ELF for the named architecture), and
//! is within `artifacts.max_bytes`. The signing key never reaches the control plane:
//! `hearth-control-plane artifact sign` runs offline, on the operator's machine.

use hearth_protocol::artifact::{self, ArtifactError, SignedManifest};
use sqlx::{PgConnection, PgPool};

use crate::config::ArtifactsConfig;
use crate::db::artifacts::{self as store, Artifact, Stored};
use crate::db::audit::{snapshot, Recorder};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no signing key is trusted: set `artifacts.public_keys` (the .pub file of `artifact keygen`)")]
    NoKeys,
    #[error("the build is {size} bytes, more than artifacts.max_bytes ({max})")]
    TooLarge { size: u64, max: u64 },
    /// The signature or the build does not hold up.
    #[error("{0}")]
    Refused(ArtifactError),
    #[error("version {version} for {arch} is already another build ({sha256})")]
    VersionTaken { version: String, arch: String, sha256: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks and stores a build with its signed manifest, audited (`artifact.upload`). The same
/// build again is answered with what is stored (nothing changes).
pub async fn upload(
    pool: &PgPool,
    cfg: &ArtifactsConfig,
    data: &[u8],
    signed: &SignedManifest,
    audit: Recorder<'_>,
) -> Result<Artifact, UploadError> {
    let keys = cfg.keys();
    if keys.is_empty() {
        return Err(UploadError::NoKeys);
    }
    if data.len() as u64 > cfg.max_bytes {
        return Err(UploadError::TooLarge { size: data.len() as u64, max: cfg.max_bytes });
    }
    artifact::verify(signed, &keys).map_err(UploadError::Refused)?;
    artifact::check_binary(data, &signed.manifest).map_err(UploadError::Refused)?;
    let m = &signed.manifest;
    let manifest =
        serde_json::to_string(signed).map_err(|e| UploadError::Refused(ArtifactError::BadKey(e.to_string())))?;
    let mut tx = pool.begin().await?;
    let arch = m.arch.as_str();
    let stored =
        store::put(&mut tx, &m.sha256, &m.version, arch, &signed.key_id, &manifest, data, &audit.actor.label()).await?;
    let a = match stored {
        Stored::New(a) => {
            audit.record(&mut tx, None, "artifact.upload", ("artifact", a.sha256.clone()), None, snapshot(&a)).await?;
            a
        }
        Stored::Existing(a) if a.version == m.version && a.arch == arch => a,
        Stored::Existing(a) | Stored::Conflict(a) => {
            return Err(UploadError::VersionTaken { version: a.version, arch: a.arch, sha256: a.sha256 })
        }
    };
    tx.commit().await?;
    tracing::info!(sha256 = %a.sha256, version = %a.version, arch = %a.arch, "agent build stored");
    Ok(a)
}

/// Every build, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Artifact>, sqlx::Error> {
    store::list(pool).await
}

/// The signed manifests of a version's builds (one per architecture uploaded): what an
/// agent update rollout sends, and what each agent checks against its own keys.
pub async fn signed_builds(conn: &mut PgConnection, version: &str) -> Result<Vec<SignedManifest>, sqlx::Error> {
    let builds = store::of_version(conn, version).await?;
    Ok(builds
        .into_iter()
        .filter_map(|a| match serde_json::from_str::<SignedManifest>(&a.signature) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(sha256 = %a.sha256, error = %e, "a stored build's manifest does not read; leaving it out");
                None
            }
        })
        .collect())
}
