//! Request and response shapes more than one resource's handlers use (handler modules
//! never import each other; what they share lives here).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::TaskId;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiJson;
use crate::model::TaskStatus;

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskCreated {
    id: TaskId,
    /// Always `queued`.
    status: TaskStatus,
}

/// `202 Accepted` with the new task's `Location`.
pub fn created(id: TaskId) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/tasks/{id}"))],
        ApiJson(TaskCreated { id, status: TaskStatus::Queued }),
    )
        .into_response()
}

// The API keys of a tenant: the customer's own (`/api/v1/keys`) and the operators'
// (`/api/v1/admin/tenants/{id}/keys`); both call `domain::tenants`.

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label, e.g. "home-assistant".
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// Revoked ones too, oldest first; never the keys themselves.
    pub keys: Vec<crate::db::tenants::ApiKey>,
}
