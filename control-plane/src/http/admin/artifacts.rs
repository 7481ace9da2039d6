//! Signed agent builds: the list (operators read it; builds are uploaded with the CLI,
//! `hearth-control-plane artifact upload`, after `artifact sign` offline). The rules are in
//! [`crate::domain::artifacts`].

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::auth::{OperatorAuth, Permission};
use super::super::error::{ApiError, ApiJson};
use super::super::AppState;
use crate::db::artifacts::Artifact;
use crate::domain::artifacts;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The uploaded agent builds, newest first, each with its signed manifest.
#[utoipa::path(
    get,
    path = "/api/v1/admin/artifacts",
    operation_id = "admin_list_artifacts",
    tag = "admin",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The builds", body = Vec<Artifact>),
    )
)]
async fn list(State(s): State<AppState>, op: OperatorAuth) -> Result<ApiJson<Vec<Artifact>>, ApiError> {
    op.require(Permission::Read)?;
    Ok(ApiJson(artifacts::list(&s.domain.pool).await.map_err(ApiError::Database)?))
}
