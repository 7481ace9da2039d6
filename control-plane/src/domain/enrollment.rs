//! Enrollment: an appliance redeems its one-time token (`hearth_et_…`) and gets a
//! certificate for the key it generated (CN = its appliance id, `clientAuth` only), the CA
//! chain and the broker address.
//!
//! The token is consumed in the statement that checks it (two concurrent enrollments with
//! one token cannot both win), in the same transaction that records the certificate: a
//! refused CSR leaves the token usable. Revoked appliances and suspended tenants' ones are
//! refused. The certificate's public key is recorded as the appliance's sealing key when
//! the agent says it opens sealed configuration secrets (`sealed_formats`). Tokens are issued when an appliance is registered
//! ([`super::appliances::register`]).

use hearth_protocol::api::{EnrollRequest, EnrollResponse};
use hearth_protocol::sealed;

use super::Services;
use crate::db::enrollment::{self as store, Refusal, TOKEN_PREFIX};
use crate::db::{appliances, certificates};
use crate::pki::PkiError;

/// The longest token accepted (longer ones are refused without a query).
pub const MAX_TOKEN_LEN: usize = 128;
/// The largest CSR accepted, in bytes.
pub const MAX_CSR_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("this enrollment token is not valid")]
    TokenInvalid,
    #[error("this enrollment token was already used; create a new one for the appliance")]
    TokenUsed,
    #[error("this enrollment token has expired; create a new one for the appliance")]
    TokenExpired,
    #[error("this appliance has been revoked and cannot enroll")]
    ApplianceRevoked,
    #[error("this appliance's customer account is suspended; contact the service operator")]
    TenantSuspended,
    #[error("csr_pem is larger than {max} bytes")]
    CsrTooLarge { max: usize },
    /// Not a CSR, a bad signature, or a weak key.
    #[error(transparent)]
    InvalidCsr(PkiError),
    /// The CA could not sign (not the CSR's fault).
    #[error("cannot issue the certificate: {0}")]
    Pki(PkiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Refusal> for EnrollError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unknown => EnrollError::TokenInvalid,
            Refusal::Used => EnrollError::TokenUsed,
            Refusal::Expired => EnrollError::TokenExpired,
            Refusal::Revoked => EnrollError::ApplianceRevoked,
            Refusal::Suspended => EnrollError::TenantSuspended,
        }
    }
}

/// Redeems the token and signs the CSR, in one transaction.
pub async fn enroll(svc: &Services, req: &EnrollRequest) -> Result<EnrollResponse, EnrollError> {
    let token = req.token.expose();
    if !token.starts_with(TOKEN_PREFIX) || token.len() > MAX_TOKEN_LEN {
        return Err(EnrollError::TokenInvalid);
    }
    if req.csr_pem.len() > MAX_CSR_LEN {
        return Err(EnrollError::CsrTooLarge { max: MAX_CSR_LEN });
    }

    // Redeem and record in one transaction: if the CSR is refused, the token stays usable.
    let mut tx = svc.pool.begin().await?;
    let claim = store::redeem(&mut tx, token).await??;
    let ca = svc.ca.get();
    let issued =
        ca.sign_appliance(&req.csr_pem, claim.appliance, svc.appliance_cert_lifetime).map_err(|e| match e {
            PkiError::BadCsr(_) | PkiError::WeakKey => EnrollError::InvalidCsr(e),
            other => EnrollError::Pki(other),
        })?;
    store::record_certificate(&mut tx, claim, &issued.serial_hex, issued.not_after, &issued.issuer_sha256).await?;
    certificates::record_issue(
        &mut tx,
        &certificates::NewIssue {
            appliance: claim.appliance,
            tenant: claim.tenant,
            renewal: None,
            serial: &issued.serial_hex,
            public_key_sha256: &issued.public_key_sha256,
            csr_sha256: None,
            certificate_pem: &issued.pem,
            not_after: issued.not_after,
            issuer_sha256: &issued.issuer_sha256,
        },
    )
    .await?;
    // Configuration secrets are sealed to the certificate's key if the agent can open them
    // (format 1 needs a P-256 key); otherwise they take the fallback way (see `dispatch`).
    let sealing_key = issued.p256_public_key.as_deref().filter(|_| req.sealed_formats.contains(&sealed::FORMAT));
    appliances::set_sealing_key(&mut tx, claim.appliance, sealing_key).await?;
    // Enrolling again (an operator's new token for the same appliance): the certificates it
    // held before are revoked; their keys may be anywhere.
    let superseded = certificates::supersede_unused(&mut tx, claim.appliance, &issued.serial_hex).await?;
    tx.commit().await?;
    if !superseded.is_empty() {
        tracing::info!(appliance = %claim.appliance, serials = ?superseded, "earlier certificates revoked at enrollment");
        if let Err(e) = svc.revoker.publish_crl().await {
            tracing::error!(error = %e, "could not publish the CRL after an enrollment; the next one carries them");
        }
    }

    tracing::info!(appliance = %claim.appliance, tenant = %claim.tenant, serial = %issued.serial_hex, "appliance enrolled");
    Ok(EnrollResponse {
        appliance_id: claim.appliance,
        certificate_pem: issued.pem,
        ca_chain_pem: ca.chain_pem().to_owned(),
        broker: svc.broker.clone(),
    })
}
