//! `POST /api/v1/enroll`: an appliance redeems its one-time token and gets a certificate
//! for the key it generated (CN = its appliance id), the CA chain and the broker address.
//! The rules are in [`crate::domain::enrollment`].

use axum::extract::State;
use hearth_protocol::api::{EnrollRequest, EnrollResponse, ErrorBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::domain::enrollment;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(enroll))
}

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
        (status = 403, description = "`appliance_revoked` (the appliance was revoked) or `tenant_suspended` (its \
                                      customer account is suspended)", body = ErrorBody),
        (status = 409, description = "`enrollment_token_used`: the token was already redeemed", body = ErrorBody),
        (status = 410, description = "`enrollment_token_expired`: the token has expired", body = ErrorBody),
    )
)]
async fn enroll(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<ApiJson<EnrollResponse>, ApiError> {
    Ok(ApiJson(enrollment::enroll(&s.domain, &req).await?))
}
