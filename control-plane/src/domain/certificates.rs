//! Certificate renewal: an appliance asks, over the MQTT connection its current certificate
//! authenticated, for a certificate for a new key; the control plane signs it for the
//! appliance id of the topic (the CSR's subject is ignored) or says why not.
//!
//! Rules, in the order they are checked, each refusal with a stable code:
//! - the appliance must exist, not be revoked (`revoked`) and its tenant not be suspended
//!   (`tenant_suspended`);
//! - a renewal id already answered gets the same certificate again (`reissued`), if the CSR
//!   is the same one; another CSR under that id is `invalid_csr`;
//! - at most one new certificate per appliance per `pki.renewal_min_interval_s`
//!   (`too_frequent`), so a flood of requests signs nothing;
//! - the CSR must parse, verify and use an accepted key type (`invalid_csr`), and its key
//!   must never have been certified for this appliance before (`same_key`);
//! - then every other still-valid certificate of the appliance except the one it is
//!   connected with is revoked (reason `superseded`): there are never two valid
//!   certificates of which the control plane cannot say which is in use.
//!
//! Each certificate issued is audited once (`certificate.renewed`); answering a retry with
//! the same certificate is only counted (`reissued`).

use hearth_protocol::{ApplianceId, CertificateRequest, RenewalOutcome};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Services;
use crate::db::audit::{Actor, Recorder};
use crate::db::certificates::{self as store, NewIssue};
use crate::pki::{self, PkiError};

/// Why a renewal was refused; [`RenewalRefused::code`] is what the appliance is told.
#[derive(Debug, thiserror::Error)]
pub enum RenewalRefused {
    #[error("this appliance is not known to the control plane")]
    UnknownAppliance,
    #[error("this appliance has been revoked")]
    Revoked,
    #[error("this appliance's customer account is suspended")]
    TenantSuspended,
    #[error("the certificate request is not valid: {0}")]
    InvalidCsr(String),
    #[error("the request is for a key already certified for this appliance; make a new key")]
    SameKey,
    #[error("a certificate was renewed less than {min_s} s ago; try again later")]
    TooFrequent { min_s: u64 },
    /// The CA could not sign, or the database failed: not the appliance's fault; it asks
    /// again later.
    #[error("the control plane cannot renew certificates right now")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RenewalRefused {
    pub fn code(&self) -> &'static str {
        match self {
            RenewalRefused::UnknownAppliance | RenewalRefused::Revoked => "revoked",
            RenewalRefused::TenantSuspended => "tenant_suspended",
            RenewalRefused::InvalidCsr(_) => "invalid_csr",
            RenewalRefused::SameKey => "same_key",
            RenewalRefused::TooFrequent { .. } => "too_frequent",
            RenewalRefused::Unavailable(_) => "unavailable",
        }
    }
}

impl From<sqlx::Error> for RenewalRefused {
    fn from(e: sqlx::Error) -> Self {
        RenewalRefused::Unavailable(Box::new(e))
    }
}

/// A certificate for the renewal.
#[derive(Debug, Clone)]
pub struct Renewed {
    pub certificate_pem: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// `true`: this renewal id was answered before and this is the same certificate.
    pub again: bool,
}

/// Decides one renewal request of `appliance` (the topic's id, which the broker's ACL ties
/// to the connection's certificate). Counted in `hearth_certificate_renewals_total{outcome}`.
pub async fn renew(
    svc: &Services,
    appliance: ApplianceId,
    req: &CertificateRequest,
) -> Result<Renewed, RenewalRefused> {
    let outcome = decide(svc, appliance, req).await;
    let label = match &outcome {
        Ok(r) if r.again => "reissued",
        Ok(_) => "issued",
        Err(e) => e.code(),
    };
    svc.metrics.certificate_renewals.with_label_values(&[label]).inc();
    match &outcome {
        Ok(r) => tracing::info!(%appliance, serial = %r.serial, again = r.again, "certificate renewed"),
        Err(RenewalRefused::Unavailable(e)) => tracing::error!(%appliance, error = %e, "certificate renewal failed"),
        Err(e) => tracing::warn!(%appliance, code = e.code(), reason = %e, "certificate renewal refused"),
    }
    outcome
}

/// The answer an appliance gets on `down/cert`.
pub fn answer(svc: &Services, outcome: &Result<Renewed, RenewalRefused>) -> RenewalOutcome {
    match outcome {
        Ok(r) => RenewalOutcome::Issued {
            certificate_pem: r.certificate_pem.clone(),
            ca_chain_pem: svc.ca.get().chain_pem().to_owned(),
            serial: r.serial.clone(),
            not_after: r.not_after,
        },
        Err(e) => RenewalOutcome::Refused { code: e.code().to_owned(), message: e.to_string() },
    }
}

async fn decide(svc: &Services, appliance: ApplianceId, req: &CertificateRequest) -> Result<Renewed, RenewalRefused> {
    let csr_sha256 = Sha256::digest(req.csr_pem.as_bytes());
    let mut tx = svc.pool.begin().await?;
    let holder = store::lock_holder(&mut tx, appliance).await?.ok_or(RenewalRefused::UnknownAppliance)?;
    if holder.revoked {
        return Err(RenewalRefused::Revoked);
    }
    if holder.tenant_suspended {
        return Err(RenewalRefused::TenantSuspended);
    }
    let audit = Actor::system();
    let audit = Recorder::new(&audit, None);
    if let Some(done) = store::for_renewal(&mut tx, appliance, req.renewal).await? {
        if done.csr_sha256.as_deref() != Some(csr_sha256.as_slice()) {
            return Err(RenewalRefused::InvalidCsr("this renewal id was used for another request".into()));
        }
        // The same certificate again (a retry): counted, not audited again.
        return Ok(Renewed {
            certificate_pem: done.certificate_pem,
            serial: done.serial,
            not_after: done.not_after,
            again: true,
        });
    }
    if let Some(last) = store::last_renewal_at(&mut tx, appliance).await? {
        let since = OffsetDateTime::now_utc() - last;
        if since < svc.renewal_min_interval {
            return Err(RenewalRefused::TooFrequent { min_s: svc.renewal_min_interval.as_secs() });
        }
    }
    let refusal = |e: PkiError| match e {
        PkiError::BadCsr(_) | PkiError::WeakKey => RenewalRefused::InvalidCsr(e.to_string()),
        other => RenewalRefused::Unavailable(Box::new(other)),
    };
    // Checked before signing: a refused key costs no signature.
    let key_sha256 = pki::csr_public_key_sha256(&req.csr_pem).map_err(refusal)?;
    if store::key_was_certified(&mut tx, appliance, &key_sha256).await? {
        return Err(RenewalRefused::SameKey);
    }
    let issued = svc.ca.get().sign_appliance(&req.csr_pem, appliance, svc.appliance_cert_lifetime).map_err(refusal)?;
    // An unknown serial is not believed: nothing is revoked on its word.
    let superseded = if store::is_own(&mut tx, appliance, &req.current_serial).await? {
        store::supersede_unused(&mut tx, appliance, &req.current_serial).await?
    } else {
        Vec::new()
    };
    store::record(
        &mut tx,
        &NewIssue {
            appliance,
            tenant: holder.tenant_id,
            renewal: Some(req.renewal),
            serial: &issued.serial_hex,
            public_key_sha256: &issued.public_key_sha256,
            csr_sha256: Some(csr_sha256.as_slice()),
            certificate_pem: &issued.pem,
            not_after: issued.not_after,
            issuer_sha256: &issued.issuer_sha256,
        },
    )
    .await?;
    let renewed =
        Renewed { certificate_pem: issued.pem, serial: issued.serial_hex, not_after: issued.not_after, again: false };
    record(&audit, &mut tx, holder.tenant_id, appliance, &renewed).await?;
    tx.commit().await?;
    if !superseded.is_empty() {
        tracing::info!(%appliance, serials = ?superseded, "unused certificates superseded by a renewal revoked");
        if let Err(e) = svc.revoker.publish_crl().await {
            tracing::error!(error = %e, "could not publish the CRL after a renewal; the next one carries it");
        }
    }
    Ok(renewed)
}

async fn record(
    audit: &Recorder<'_>,
    conn: &mut sqlx::PgConnection,
    tenant: hearth_protocol::TenantId,
    appliance: ApplianceId,
    r: &Renewed,
) -> Result<(), sqlx::Error> {
    let after = serde_json::json!({ "serial": r.serial, "not_after": r.not_after });
    audit
        .record(conn, Some(tenant), "certificate.renewed", ("appliance", appliance.to_string()), None, Some(after))
        .await
}
