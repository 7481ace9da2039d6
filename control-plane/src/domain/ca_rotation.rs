//! Rotating the fleet CA: start (a new CA signs from now on, the old one stays trusted as
//! the retiring CA), follow (how many appliances hold a certificate from each), finish (the
//! old CA is no longer trusted; refused while appliances still depend on it, unless forced).
//!
//! The files are `crate::pki`'s ([`pki::rotate`], [`pki::finish_rotation`]); this module
//! adds what needs the database: the appliances counted per CA, the audit, a lock so two
//! operators (or replicas, or the CLI) never rotate at once, and making the change bite at
//! once (every replica reloads the CA within [`crate::serve`]'s PKI watch; this one reloads
//! now, issues the CRL with a list per CA and runs `pki.crl_reload_command`, which makes
//! Mosquitto read its CA bundle, server certificate and CRL again).
//!
//! Appliances move by renewing: the rotation notices part of `serve` asks each connected
//! appliance still on another CA to renew (`down/cert/renew`), and the renewal's answer
//! carries the bundle of both CAs, so the appliance trusts the broker before and after the
//! broker's certificate changes CA at the end.

use serde::Serialize;

use crate::db::audit::Recorder;
use crate::db::certificates::{self as store, Dependent};
use crate::pki::{self, CaInfo, PkiError};
use crate::revocation::{RevocationError, Revoker};

/// How many dependents a refused finish (or a forced one) lists.
pub const LISTED_DEPENDENTS: i64 = 100;
/// New CAs are valid this long (as `pki init`'s).
const CA_DAYS: i64 = 3650;
/// The server certificates issued again at the end (as `pki init`'s).
const SERVICE_DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("a CA rotation is already under way (since {since}); finish it first")]
    InProgress { since: String },
    #[error("no CA rotation is under way")]
    NotRotating,
    #[error(
        "{count} appliance(s) still hold a certificate from the retiring CA and would be cut off; wait until they \
         renew, or finish with force"
    )]
    Dependents { count: i64, appliances: Vec<Dependent> },
    /// The PKI directory cannot be written here (Compose and Kubernetes mount it read-only
    /// into the control plane); nothing was changed.
    #[error(
        "the PKI directory cannot be written here ({path}: {reason}); nothing was changed: run `hearth-control-plane \
         pki rotate-ca` / `finish-rotation` where the PKI directory is writable"
    )]
    NotWritable { path: String, reason: String },
    #[error("the PKI files: {0}")]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Where a rotation stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RotationStatus {
    /// `true` between `rotate-ca` and `finish-rotation`.
    pub rotating: bool,
    /// When the rotation under way started (RFC 3339).
    pub started_at: Option<String>,
    /// The CA that signs new certificates.
    pub signing_ca: CaInfo,
    /// The CA being replaced, still trusted (during a rotation).
    pub retiring_ca: Option<CaInfo>,
    /// Appliances (enrolled, not revoked) whose certificate is from the signing CA.
    pub appliances_on_signing_ca: i64,
    /// …from another CA (the retiring one): they still depend on it.
    pub appliances_on_other_ca: i64,
    /// Of those, the ones online now (being asked to renew).
    pub appliances_on_other_ca_online: i64,
}

/// What finishing did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FinishedRotation {
    /// The CA no longer trusted (its certificate is archived, its key deleted).
    pub retired_ca: String,
    pub signing_ca: CaInfo,
    /// How many appliances were cut off (only with force).
    pub cut_off: i64,
    /// Up to 100 of them.
    pub cut_off_appliances: Vec<Dependent>,
}

pub async fn status(revoker: &Revoker, pool: &sqlx::PgPool) -> Result<RotationStatus, RotationError> {
    // Another replica or the CLI may have changed the files since this one last looked.
    revoker.ca().reload()?;
    let ca = revoker.ca().get();
    let counts = store::count_by_ca(pool, ca.signing_sha256()).await?;
    Ok(RotationStatus {
        rotating: ca.retiring_info().is_some(),
        started_at: pki::rotation_started(revoker.ca().dir())?,
        signing_ca: ca.signing_info().clone(),
        retiring_ca: ca.retiring_info().cloned(),
        appliances_on_signing_ca: counts.on_signing,
        appliances_on_other_ca: counts.on_other,
        appliances_on_other_ca_online: counts.on_other_online,
    })
}

/// Starts a rotation: a new CA signs from now on; both are trusted.
pub async fn start(
    revoker: &Revoker,
    pool: &sqlx::PgPool,
    audit: Recorder<'_>,
) -> Result<RotationStatus, RotationError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    revoker.ca().reload()?;
    let old = revoker.ca().get();
    if let Some(since) = pki::rotation_started(revoker.ca().dir())? {
        return Err(RotationError::InProgress { since });
    }
    // Certificates recorded without their CA were all signed by the one there was.
    store::name_first_ca(&mut tx, old.signing_sha256()).await?;
    let new = pki::rotate(revoker.ca().dir(), CA_DAYS).map_err(not_writable)?;
    let before = serde_json::json!({ "signing_ca": old.signing_sha256() });
    let after = serde_json::json!({ "signing_ca": new, "retiring_ca": old.signing_sha256() });
    audit.record(&mut tx, None, "pki.rotation_started", ("ca", new.clone()), Some(before), Some(after)).await?;
    tx.commit().await?;
    tracing::info!(signing_ca = %new, retiring_ca = %old.signing_sha256(), "fleet CA rotation started");
    bite(revoker).await;
    status(revoker, pool).await
}

/// Ends the rotation. Refused with [`RotationError::Dependents`] while appliances still hold
/// a certificate from another CA, unless `force` (they are then listed in the answer and
/// the audit, and need an operator's enrollment token to come back).
pub async fn finish(
    revoker: &Revoker,
    pool: &sqlx::PgPool,
    audit: Recorder<'_>,
    force: bool,
) -> Result<FinishedRotation, RotationError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    revoker.ca().reload()?;
    let ca = revoker.ca().get();
    if ca.retiring_info().is_none() {
        return Err(RotationError::NotRotating);
    }
    let counts = store::count_by_ca(pool, ca.signing_sha256()).await?;
    let dependents = match counts.on_other {
        0 => Vec::new(),
        _ => store::dependents(pool, ca.signing_sha256(), LISTED_DEPENDENTS).await?,
    };
    if counts.on_other > 0 && !force {
        return Err(RotationError::Dependents { count: counts.on_other, appliances: dependents });
    }
    let done = pki::finish_rotation(revoker.ca().dir(), SERVICE_DAYS).map_err(not_writable)?;
    let after = serde_json::json!({
        "signing_ca": ca.signing_sha256(),
        "cut_off": counts.on_other,
        "cut_off_appliances": dependents.iter().map(|d| d.id.to_string()).collect::<Vec<_>>(),
    });
    let target = ("ca", done.retired_sha256.clone());
    audit.record(&mut tx, None, "pki.rotation_finished", target, None, Some(after)).await?;
    tx.commit().await?;
    tracing::info!(
        retired_ca = %done.retired_sha256,
        archived = %done.archived.display(),
        cut_off = counts.on_other,
        "fleet CA rotation finished"
    );
    bite(revoker).await;
    Ok(FinishedRotation {
        retired_ca: done.retired_sha256,
        signing_ca: revoker.ca().get().signing_info().clone(),
        cut_off: counts.on_other,
        cut_off_appliances: dependents,
    })
}

/// A write refused by the file system, told apart from other PKI failures. Both steps write
/// first what can be written again harmlessly, so a refused first write changes nothing.
fn not_writable(e: PkiError) -> RotationError {
    match e {
        PkiError::Io { path, source }
            if matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            RotationError::NotWritable { path: path.display().to_string(), reason: source.to_string() }
        }
        other => RotationError::Pki(other),
    }
}

/// One rotation step at a time, across replicas and the CLI (released at commit).
async fn lock(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hearth.ca_rotation'))").execute(tx).await?;
    Ok(())
}

/// This replica's CA now, and a CRL with one list per trusted CA, which also makes the
/// broker read its CA bundle and certificate again. A failure is logged: the files are
/// already right, and the PKI watch of each replica retries.
async fn bite(revoker: &Revoker) {
    if let Err(e) = revoker.ca().reload() {
        tracing::error!(error = %e, "could not load the rotated CA; the PKI watch tries again");
        return;
    }
    if let Err(e) = revoker.publish_crl().await {
        let hint = matches!(e, RevocationError::Reload(_))
            .then_some("; reload the broker by hand so it trusts the new CA bundle")
            .unwrap_or_default();
        tracing::error!(error = %e, "could not publish the CRL after a CA rotation step{hint}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_read_only_pki_directory_is_told_apart_from_other_failures() {
        let io = |kind| PkiError::Io { path: "/hearth/pki/ca-retiring.key".into(), source: Error::from(kind) };
        for kind in [ErrorKind::PermissionDenied, ErrorKind::ReadOnlyFilesystem] {
            let e = not_writable(io(kind));
            assert!(matches!(&e, RotationError::NotWritable { path, .. } if path == "/hearth/pki/ca-retiring.key"));
            assert!(e.to_string().contains("pki rotate-ca"), "{e}");
        }
        assert!(matches!(not_writable(io(ErrorKind::StorageFull)), RotationError::Pki(_)));
        assert!(matches!(not_writable(PkiError::NoRotation), RotationError::Pki(_)));
    }
}
