//! `GET /api/v1/support/conversations/{id}/events`: the conversation as server-sent
//! events, so a page shows replies and task progress as they happen.
//!
//! | event | data | when |
//! |---|---|---|
//! | `message` | a message (with its proposal), `id:` its number | each message after the cursor |
//! | `proposal` | a proposal | it appears or changes (confirmed, superseded, task created) |
//! | `task` | `{proposal_id, task}`: the task without its log | its status changes |
//! | `task_event` | `{task_id, event}`: one event of the task's log | each new event |
//! | `end` | `{reason}` | the stream closes (conversation gone, time's up, shutdown) |
//!
//! The stream replays messages after `?after=N` or `Last-Event-ID` (from the start when
//! neither is given), then the state of every proposal and task, then follows. It reads
//! PostgreSQL every half second in a tenant transaction, so it works the same whichever
//! replica wrote the change; it ends after 30 minutes (the client reconnects with
//! `Last-Event-ID`, which checks its credential again) or at shutdown. A comment every 15 s
//! keeps proxies from closing an idle stream. A tenant may have 20 streams open at once
//! (429 `too_many_streams` beyond). What is new at each look is found by
//! [`Follower`] (`domain::support`); this module paces the looks and writes the events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ConversationId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::super::auth::Tenant;
use super::super::error::{ApiError, ApiQuery, BadRequest, NotFound, TenantForbidden};
use super::super::AppState;
use crate::domain::support::{EndReason, Follower, StreamEnd, StreamEvent};

/// The names of the stream's events (`StreamEvent::name`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[allow(dead_code)] // Only its schema is used.
#[serde(rename_all = "snake_case")]
pub(in crate::http) enum StreamEventName {
    Message,
    Proposal,
    Task,
    TaskEvent,
    End,
}

/// One server-sent event of the stream, as a reader (or a validator) parses it: OpenAPI 3.1
/// describes a `text/event-stream` response by the schema of one event.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Only its schema is used: the events are written by `event`.
pub(in crate::http) struct StreamFrame {
    event: StreamEventName,
    /// One JSON object: the `StreamEvent` of the event's name.
    #[schema(content_media_type = "application/json")]
    data: String,
    /// `message` events: the message's number, for `Last-Event-ID`.
    id: Option<String>,
}

const POLL: Duration = Duration::from_millis(500);
/// Most streams one tenant may have open at once (each polls PostgreSQL).
pub const MAX_STREAMS_PER_TENANT: usize = 20;
const STREAM_MAX: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct After {
    /// Replay messages numbered above this (default: all). `Last-Event-ID` does the same.
    after: Option<i32>,
}

/// Follow a conversation: its messages, proposals and tasks' progress, as server-sent events.
#[utoipa::path(
    get,
    path = "/api/v1/support/conversations/{id}/events",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ConversationId, Path, description = "The conversation"), After,
        ("Last-Event-ID" = Option<i32>, Header, description = "Resume after this message number")),
    responses(
        (status = 200, description = "`text/event-stream`: events `message`, `proposal`, `task`, `task_event` and \
                                      `end` (see the module documentation); the schema is each event's: its \
                                      `data` is one JSON object, the `StreamEvent` of its name",
            content_type = "text/event-stream", body = StreamFrame),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 429, description = "`too_many_streams`: the tenant has 20 streams open already; \
                                      `rate_limited`: the API limit (`X-RateLimit-Kind: api`)", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    id: Result<Path<ConversationId>, PathRejection>,
    after: Result<ApiQuery<After>, ApiError>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let ApiQuery(after) = after?;
    let from_header = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let cursor = after.after.or(from_header).unwrap_or(0);
    // Refuses an unknown conversation with a 404, not an empty stream.
    let follower = Follower::open(&s.domain, tenant, id, cursor).await?;
    let slot = s.streams.take(tenant).ok_or_else(|| ApiError::Refused {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_streams",
        message: format!(
            "this account already has {MAX_STREAMS_PER_TENANT} event streams open; close one (or wait for it to end)"
        ),
    })?;

    let (out, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        follow(s, follower, out).await;
        drop(slot);
    });
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    let mut r = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    // Proxies (nginx) must not buffer the stream.
    r.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(r)
}

/// Looks at the conversation every [`POLL`] until the client goes away, the stream's time
/// is up or the server shuts down.
async fn follow(s: AppState, mut follower: Follower, out: mpsc::Sender<Event>) {
    let deadline = tokio::time::Instant::now() + STREAM_MAX;
    let reason = loop {
        match follower.poll(&s.domain).await {
            Ok(Some(events)) => {
                for e in events {
                    if out.send(event(&e)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            Ok(None) => break EndReason::ConversationGone,
            Err(e) => {
                let conversation = follower.conversation();
                tracing::warn!(error = %e, %conversation, "support stream: could not read the conversation");
                break EndReason::Error;
            }
        }
        tokio::select! {
            _ = out.closed() => return,
            _ = s.shutdown.cancelled() => break EndReason::Shutdown,
            _ = tokio::time::sleep_until(deadline) => break EndReason::Reconnect,
            _ = tokio::time::sleep(POLL) => {}
        }
    };
    let _ = out.send(event(&StreamEvent::End(StreamEnd { reason }))).await;
}

/// The server-sent event: its name, its payload as JSON, and for a message its number as
/// the event id (what `Last-Event-ID` resumes after).
fn event(e: &StreamEvent) -> Event {
    let event = Event::default().event(e.name()).data(serde_json::to_string(e).unwrap_or_else(|_| "null".into()));
    match e {
        StreamEvent::Message(m) => event.id(m.seq.to_string()),
        _ => event,
    }
}

/// Open streams per tenant, so one tenant cannot keep unbounded pollers running.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<TenantId, usize>>,
}

/// One open stream; gives its slot back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<StreamSlots>,
    tenant: TenantId,
}

impl StreamSlots {
    /// A slot for one more stream of `tenant`, or `None` at [`MAX_STREAMS_PER_TENANT`].
    pub fn take(self: &Arc<Self>, tenant: TenantId) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(tenant).or_default();
        if *n >= MAX_STREAMS_PER_TENANT {
            return None;
        }
        *n += 1;
        Some(Slot { slots: self.clone(), tenant })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_a_bounded_number_of_streams_and_slots_come_back() {
        let slots = Arc::new(StreamSlots::default());
        let (a, b) = (TenantId::new(), TenantId::new());
        let held: Vec<Slot> = (0..MAX_STREAMS_PER_TENANT).map(|_| slots.take(a).expect("a slot")).collect();
        assert!(slots.take(a).is_none(), "one too many");
        assert!(slots.take(b).is_some(), "another tenant is not affected");
        drop(held);
        assert!(slots.take(a).is_some());
        assert!(slots.open.lock().unwrap().get(&a).is_none_or(|n| *n == 0));
    }
}
