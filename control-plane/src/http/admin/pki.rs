//! The fleet CA's rotation (`/api/v1/admin/pki/rotation`): where it stands, start, finish.
//! The rules are in [`crate::domain::ca_rotation`], shared with `hearth-control-plane pki`.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_protocol::api::ErrorBody;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson, BadRequest, ForbiddenForRole};
use super::super::{AppState, RequestId};
use crate::db::audit::Recorder;
use crate::domain::ca_rotation::{self, FinishedRotation, RotationStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status, start)).routes(routes!(finish))
}

/// Where the fleet CA's rotation stands.
///
/// The CA that signs, the retiring one during a rotation, and how many appliances
/// (enrolled, not revoked) hold a certificate from each.
#[utoipa::path(
    get,
    path = "/api/v1/admin/pki/rotation",
    operation_id = "admin_ca_rotation",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The CAs and the appliances on each", body = RotationStatus),
        (status = 403, response = ForbiddenForRole),
    )
)]
async fn status(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<RotationStatus>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(ca_rotation::status(&s.domain.revoker, &s.domain.pool).await?))
}

/// Start a rotation of the fleet CA.
///
/// A new CA signs every certificate from now on; the current one becomes the retiring CA,
/// still trusted by the broker and listed in the chain appliances get. Connected appliances
/// on the retiring CA are asked to renew (`pki.rotation_notices_per_s`, each within
/// `pki.rotation_renew_within_s`); the others renew when they come back. Audited.
#[utoipa::path(
    post,
    path = "/api/v1/admin/pki/rotation",
    operation_id = "admin_start_ca_rotation",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 201, description = "Started", body = RotationStatus),
        (status = 403, response = ForbiddenForRole),
        (status = 409, description = "`rotation_in_progress`: finish the rotation under way first; \
                                      `pki_not_writable`: this control plane cannot write the PKI directory (run \
                                      the CLI where it can), nothing was changed", body = ErrorBody),
    )
)]
async fn start(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
) -> Result<(StatusCode, ApiJson<RotationStatus>), ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let status = ca_rotation::start(&s.domain.revoker, &s.domain.pool, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::CREATED, ApiJson(status)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Finish {
    /// Finish even though appliances still depend on the retiring CA: they are cut off and
    /// listed (they come back with an operator's enrollment token). Default `false`.
    #[serde(default)]
    force: bool,
}

/// Finish the rotation.
///
/// The broker's and the API's server certificates are issued again by the new CA, the
/// retiring CA stops being trusted (its certificate is archived, its key deleted) and the
/// broker is reloaded. Refused while appliances still hold a certificate from the retiring
/// CA, unless `force`. Audited, with the appliances cut off.
#[utoipa::path(
    post,
    path = "/api/v1/admin/pki/rotation/finish",
    operation_id = "admin_finish_ca_rotation",
    tag = "admin",
    security(("operator_token" = [])),
    request_body = Finish,
    responses(
        (status = 200, description = "Finished", body = FinishedRotation),
        (status = 400, response = BadRequest),
        (status = 403, response = ForbiddenForRole),
        (status = 409, description = "`rotation_not_started`: no rotation is under way; \
                                      `appliances_depend_on_retiring_ca`: appliances still hold a certificate \
                                      from the retiring CA, `details` is `{\"count\", \"appliances\"}` (up to 100); \
                                      `pki_not_writable`: this control plane cannot write the PKI directory (run \
                                      the CLI where it can), nothing was changed",
            body = ErrorBody),
    )
)]
async fn finish(
    State(s): State<AppState>,
    op: OperatorAuth,
    rid: RequestId,
    ApiJson(b): ApiJson<Finish>,
) -> Result<ApiJson<FinishedRotation>, ApiError> {
    op.require(Permission::Manage)?;
    let actor = op.actor();
    let audit = Recorder::new(&actor, Some(&rid.0));
    Ok(ApiJson(ca_rotation::finish(&s.domain.revoker, &s.domain.pool, audit, b.force).await?))
}
