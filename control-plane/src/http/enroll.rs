//! `POST /api/v1/enroll`: an appliance redeems its one-time token and gets a certificate
//! for the key it generated (CN = its appliance id), the CA chain and the broker address.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_protocol::api::{EnrollRequest, EnrollResponse, ErrorBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::db::enrollment::{self, Refusal, TOKEN_PREFIX};
use crate::pki::PkiError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(enroll))
}

const MAX_TOKEN_LEN: usize = 128;
const MAX_CSR_LEN: usize = 16 * 1024;

/// Enroll an appliance.
///
/// Redeems a one-time enrollment token (`hearth_et_…`, in the body: no `Authorization`
/// header) and signs the appliance's CSR. A refused CSR leaves the token usable.
#[utoipa::path(
    post,
    path = "/api/v1/enroll",
    tag = "enrollment",
    request_body = EnrollRequest,
    responses(
        (status = 200, description = "The appliance's certificate, the CA chain and the broker address", body = EnrollResponse),
        (status = 400, description = "`invalid_body` (malformed JSON) or `invalid_csr` (not a CSR, weak key, larger than 16 KiB)", body = ErrorBody),
        (status = 401, description = "`enrollment_token_invalid`: the token is not valid", body = ErrorBody),
        (status = 409, description = "`enrollment_token_used`: the token was already redeemed", body = ErrorBody),
        (status = 410, description = "`enrollment_token_expired`: the token has expired", body = ErrorBody),
    )
)]
async fn enroll(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<ApiJson<EnrollResponse>, ApiError> {
    if !req.token.starts_with(TOKEN_PREFIX) || req.token.len() > MAX_TOKEN_LEN {
        return Err(refused(Refusal::Unknown));
    }
    if req.csr_pem.len() > MAX_CSR_LEN {
        return Err(ApiError::bad_request("invalid_csr", format!("csr_pem is larger than {MAX_CSR_LEN} bytes")));
    }

    // Redeem and record in one transaction: if the CSR is refused, the token stays usable.
    let mut tx = s.domain.pool.begin().await?;
    let claim = enrollment::redeem(&mut tx, &req.token).await?.map_err(refused)?;
    let issued = s.domain.ca.sign_appliance(&req.csr_pem, claim.appliance, s.domain.appliance_cert_days).map_err(
        |e| match e {
            PkiError::BadCsr(_) | PkiError::WeakKey => ApiError::bad_request("invalid_csr", e.to_string()),
            other => ApiError::Internal(other.to_string()),
        },
    )?;
    enrollment::record_certificate(&mut tx, claim, &issued.serial_hex, issued.not_after).await?;
    tx.commit().await?;

    tracing::info!(appliance = %claim.appliance, tenant = %claim.tenant, serial = %issued.serial_hex, "appliance enrolled");
    Ok(ApiJson(EnrollResponse {
        appliance_id: claim.appliance,
        certificate_pem: issued.pem,
        ca_chain_pem: s.domain.ca.chain_pem().to_owned(),
        broker: s.domain.broker.clone(),
    }))
}

fn refused(r: Refusal) -> ApiError {
    let (status, code, message) = match r {
        Refusal::Unknown => {
            (StatusCode::UNAUTHORIZED, "enrollment_token_invalid", "this enrollment token is not valid")
        }
        Refusal::Used => (
            StatusCode::CONFLICT,
            "enrollment_token_used",
            "this enrollment token was already used; create a new one for the appliance",
        ),
        Refusal::Expired => (
            StatusCode::GONE,
            "enrollment_token_expired",
            "this enrollment token has expired; create a new one for the appliance",
        ),
        Refusal::Revoked => {
            (StatusCode::FORBIDDEN, "appliance_revoked", "this appliance has been revoked and cannot enroll")
        }
        Refusal::Suspended => (
            StatusCode::FORBIDDEN,
            "tenant_suspended",
            "this appliance's customer account is suspended; contact the service operator",
        ),
    };
    ApiError::Refused { status, code, message: message.into() }
}
