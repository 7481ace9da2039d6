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

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// A list's `limit` query parameter checked (1 to 1000) and defaulted (100).
pub fn page_size(l: Option<i64>) -> Result<i64, super::error::ApiError> {
    let l = l.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&l) {
        Ok(l)
    } else {
        Err(super::error::ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_LIMIT}")))
    }
}

// Fleet rollouts: the tenant's (`/api/v1/rollouts`) and the operators'
// (`/api/v1/admin/rollouts`) routes share their query shapes, the steering verbs and the
// progress stream; both call `domain::rollouts`.

pub mod rollouts {
    use std::convert::Infallible;
    use std::time::Duration;

    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::{IntoResponse, Response};
    use hearth_protocol::RolloutId;
    use serde::{Deserialize, Serialize};
    use tokio::sync::mpsc;
    use utoipa::{IntoParams, ToSchema};

    use super::super::error::ApiError;
    use super::super::AppState;
    pub use super::page_size as limit;
    use crate::domain::rollouts::{self, RolloutError, RolloutView, Steer, Who};
    use crate::model::{ExecutionState, RolloutState};

    #[derive(Debug, Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    pub struct ListQuery {
        /// Only rollouts in this state.
        #[param(inline)]
        pub state: Option<RolloutState>,
        /// Page size, 1 to 1000 (default 100).
        pub limit: Option<i64>,
        /// The `next_after` of the previous page.
        pub after: Option<RolloutId>,
    }

    #[derive(Debug, Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    pub struct ExecutionQuery {
        /// Only executions in this state (`pending` lists the appliances still waiting,
        /// offline ones with `online: false`).
        #[param(inline)]
        pub state: Option<ExecutionState>,
        /// Page size, 1 to 1000 (default 100).
        pub limit: Option<i64>,
        /// The `next_after` of the previous page.
        pub after: Option<i32>,
    }

    /// What `POST …/rollouts/{id}/{action}` does.
    #[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Action {
        /// Start nothing new (what runs finishes); resumable.
        Pause,
        /// Continue a paused rollout.
        Resume,
        /// Open the next wave of a rollout waiting for approval.
        Approve,
        /// Stop for good: what has not reached an appliance is cancelled.
        Cancel,
    }

    impl From<Action> for Steer {
        fn from(a: Action) -> Steer {
            match a {
                Action::Pause => Steer::Pause,
                Action::Resume => Steer::Resume,
                Action::Approve => Steer::Approve,
                Action::Cancel => Steer::Cancel,
            }
        }
    }

    /// One server-sent event of a rollout's progress stream.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)] // Only its schema is used: the events are written by `stream`.
    pub struct ProgressFrame {
        /// `progress` (the rollout with its counts, each time they change) or `end`
        /// (`{"reason"}`: `finished`, `gone`, `reconnect`, `shutdown`, `error`).
        event: String,
        /// One JSON object: a rollout (`progress`) or `{"reason"}` (`end`).
        #[schema(content_media_type = "application/json")]
        data: String,
    }

    #[derive(Debug, Serialize)]
    struct End {
        reason: &'static str,
    }

    const POLL: Duration = Duration::from_secs(1);
    const STREAM_MAX: Duration = Duration::from_secs(30 * 60);

    /// The rollout as server-sent events: `progress` now and whenever it changes, `end` once
    /// it finished (after its last `progress`), after 30 minutes, or at shutdown. Reads
    /// PostgreSQL every second, so any replica serves it.
    pub async fn stream(s: AppState, who: Who, id: RolloutId) -> Result<Response, ApiError> {
        // An unknown rollout is a 404, not an empty stream.
        let first = rollouts::get(&s.domain.pool, who, id).await?;
        let slot = match who {
            Who::Tenant(t) => Some(s.streams.take(t).ok_or_else(|| ApiError::Refused {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_streams",
                message: "this account has too many event streams open; close one (or wait for it to end)".into(),
            })?),
            Who::Operator => None,
        };
        let (out, mut rx) = mpsc::channel::<Event>(16);
        tokio::spawn(async move {
            follow(&s, who, first, &out).await;
            drop(slot);
        });
        let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
        let mut r = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
        r.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
        Ok(r)
    }

    fn progress(v: &RolloutView) -> Event {
        Event::default().event("progress").data(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
    }

    async fn follow(s: &AppState, who: Who, first: RolloutView, out: &mpsc::Sender<Event>) {
        let deadline = tokio::time::Instant::now() + STREAM_MAX;
        let mut last = serde_json::to_value(&first).ok();
        if out.send(progress(&first)).await.is_err() {
            return;
        }
        let mut finished = first.state.is_final();
        let reason = loop {
            if finished {
                break "finished";
            }
            tokio::select! {
                _ = out.closed() => return,
                _ = s.shutdown.cancelled() => break "shutdown",
                _ = tokio::time::sleep_until(deadline) => break "reconnect",
                _ = tokio::time::sleep(POLL) => {}
            }
            match rollouts::get(&s.domain.pool, who, first.id).await {
                Ok(v) => {
                    finished = v.state.is_final();
                    let now = serde_json::to_value(&v).ok();
                    if now != last {
                        last = now;
                        if out.send(progress(&v)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RolloutError::NotFound) => break "gone",
                Err(e) => {
                    tracing::warn!(error = %e, rollout = %first.id, "rollout stream: could not read the rollout");
                    break "error";
                }
            }
        };
        let end = Event::default().event("end").data(serde_json::to_string(&End { reason }).unwrap_or_default());
        let _ = out.send(end).await;
    }
}

// Events and webhooks: the tenant's (`/api/v1/events`, `/api/v1/webhooks`) and the
// operators' (`/api/v1/admin/events`, `/api/v1/admin/webhooks`) routes share their query
// shapes; both call `domain::events` and `domain::webhooks`.

pub mod events {
    use hearth_protocol::{ApplianceId, TenantId};
    use serde::Deserialize;
    use utoipa::IntoParams;

    pub use super::page_size as limit;
    use crate::db::events::Filter;

    #[derive(Debug, Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    pub struct EventQuery {
        /// Events after this position (the `next` of the previous page; 0 or absent: from
        /// the oldest kept).
        pub after: Option<i64>,
        /// One type (`task.failed`) or a category (`task.*`).
        #[serde(rename = "type")]
        #[param(rename = "type")]
        pub kind: Option<String>,
        pub appliance_id: Option<ApplianceId>,
        /// Page size, 1 to 1000 (default 100).
        pub limit: Option<i64>,
    }

    #[derive(Debug, Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    pub struct AdminEventQuery {
        pub after: Option<i64>,
        #[serde(rename = "type")]
        #[param(rename = "type")]
        pub kind: Option<String>,
        pub appliance_id: Option<ApplianceId>,
        /// Only this tenant's events.
        pub tenant_id: Option<TenantId>,
        pub limit: Option<i64>,
    }

    impl EventQuery {
        pub fn filter(&self) -> Filter {
            Filter {
                after: self.after.unwrap_or(0),
                kind: self.kind.clone(),
                appliance: self.appliance_id,
                tenant: None,
            }
        }
    }

    impl AdminEventQuery {
        pub fn filter(&self) -> Filter {
            Filter {
                after: self.after.unwrap_or(0),
                kind: self.kind.clone(),
                appliance: self.appliance_id,
                tenant: self.tenant_id,
            }
        }
    }

    #[derive(Debug, Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    pub struct DeliveryQuery {
        /// Only deliveries in this state: `pending`, `delivered`, `failed`.
        pub state: Option<String>,
        /// Older than this delivery (the `next_before` of the previous page).
        pub before: Option<i64>,
        /// Page size, 1 to 1000 (default 100).
        pub limit: Option<i64>,
    }
}
