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
