//! The support chat: a customer's conversations with the assistant, stored per tenant.
//!
//! - `POST /api/v1/support/conversations` opens one (optionally about one appliance);
//!   `GET` lists them, `GET …/{id}` shows one with its messages.
//! - `POST …/{id}/messages` stores the customer's message, asks the assistant (limited per
//!   tenant by the plan's `assistant_per_hour`), stores the reply and its proposal, and
//!   returns both. A proposal waits for `POST …/{id}/proposals/{pid}/confirm`, which
//!   creates the task through the task API's own validation, audited with the actor
//!   `assistant`; a low-risk one runs at once if the tenant opted out of confirming them
//!   (`PUT /api/v1/support/settings`). A request of several steps gets a plan: one proposal
//!   per step on the same message (`plan`, in order; `proposal` is its first step), each
//!   confirmable on its own, or all together with `POST …/{id}/messages/{message_id}/confirm`.
//!   Writing again supersedes a waiting proposal.
//! - `GET …/{id}/events` ([`stream`]): server-sent events of the conversation's messages,
//!   its proposals' changes and their tasks' progress.
//! - `GET /support` ([`page`]): the web page customers chat on.
//!
//! The rules are in [`crate::domain::support`]; a handler here parses, authorises (and
//! counts a message against the assistant limit), calls one operation and responds.

mod page;
mod stream;

pub use stream::{StreamSlots, MAX_STREAMS_PER_TENANT};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::{ApplianceId, ConversationId, MessageId, ProposalId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Owner, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, OwnerForbidden, TenantForbidden};
use super::{ratelimit, AppState, RequestId};
use crate::db::audit::Recorder;
use crate::db::support::{Conversation, ProposalRow};
use crate::domain::support::{self, ConversationDetail, CustomerText, Exchange, Settings};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_conversation, list_conversations))
        .routes(routes!(get_conversation))
        .routes(routes!(post_message))
        .routes(routes!(confirm_proposal))
        .routes(routes!(confirm_plan))
        .routes(routes!(stream::events))
        .routes(routes!(get_settings, put_settings))
        .merge(page::router())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartConversation {
    /// The appliance the chat is about (used when the customer names none).
    appliance_id: Option<ApplianceId>,
}

/// Open a conversation with the support assistant.
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    request_body = StartConversation,
    responses(
        (status = 201, description = "Opened", body = ConversationDetail,
            headers(("Location" = String, description = "`/api/v1/support/conversations/{id}`"))),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn start_conversation(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    ApiJson(req): ApiJson<StartConversation>,
) -> Result<Response, ApiError> {
    let detail = support::start(&s.domain, tenant, req.appliance_id, &caller.actor()).await?;
    let location = format!("/api/v1/support/conversations/{}", detail.conversation.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], ApiJson(detail)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct ConversationList {
    /// The 50 most recently active, newest first.
    conversations: Vec<Conversation>,
}

/// The tenant's conversations.
#[utoipa::path(
    get,
    path = "/api/v1/support/conversations",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "Conversations", body = ConversationList),
        (status = 403, response = TenantForbidden),
    )
)]
async fn list_conversations(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<ApiJson<ConversationList>, ApiError> {
    Ok(ApiJson(ConversationList { conversations: support::list(&s.domain, tenant).await? }))
}

/// One conversation with its messages and proposals.
#[utoipa::path(
    get,
    path = "/api/v1/support/conversations/{id}",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetail),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
    )
)]
async fn get_conversation(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    id: Result<Path<ConversationId>, PathRejection>,
) -> Result<ApiJson<ConversationDetail>, ApiError> {
    let Path(id) = id?;
    Ok(ApiJson(support::get(&s.domain, tenant, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    /// What the customer wrote (at most 4000 characters).
    text: String,
}

/// Write to the assistant: the reply and, when the customer asks for something the catalog
/// does, a proposed task (run after confirmation).
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations/{id}/messages",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = ConversationId, Path, description = "The conversation")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "The customer's message and the assistant's reply", body = Exchange,
            headers(
                ("X-RateLimit-Kind" = String, description = "`assistant`: the limit this request counted against"),
                ("X-RateLimit-Policy" = String, description = "The tenant's assistant quota, e.g. `60 per hour, burst 5`"),
                ("X-RateLimit-Remaining" = u32, description = "Messages that may still come at once"),
            )),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`conversation_full`: the conversation has reached its 200 messages; open \
                                      a new one", body = ErrorBody),
        (status = 422, description = "`message_too_long`: more than 4000 characters", body = ErrorBody),
        (status = 429, description = "`rate_limited`: `X-RateLimit-Kind` says which limit fired, `assistant` (the \
                                      plan's `assistant_per_hour`) or `api`; `Retry-After` when to try again",
            body = ErrorBody,
            headers(
                ("Retry-After" = u64, description = "Seconds until a message will be accepted"),
                ("X-RateLimit-Kind" = String, description = "`assistant` or `api`"),
                ("X-RateLimit-Policy" = String, description = "The quota, e.g. `60 per hour, burst 5`"),
                ("X-RateLimit-Remaining" = u32, description = "What is left: 0"),
            )),
    )
)]
async fn post_message(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    id: Result<Path<ConversationId>, PathRejection>,
    ApiJson(req): ApiJson<PostMessage>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    // Checked first: a message refused for its text costs no assistant quota.
    let text = CustomerText::parse(&req.text)?;
    // Before the operation's transaction: the check may read the tenant's quotas on a
    // connection of its own, which must not wait while this request holds one.
    let decision = s.rate_limits.check_assistant(&s.domain.pool, tenant).await?;
    if decision.retry_after.is_some() {
        return Ok(ratelimit::refusal(&s, tenant, &decision));
    }
    let exchange =
        support::post_message(&s.domain, tenant, id, text, Recorder::new(&caller.actor(), Some(&rid.0))).await?;
    let mut r = (StatusCode::CREATED, ApiJson(exchange)).into_response();
    ratelimit::describe(&mut r, &decision);
    Ok(r)
}

/// Confirm a proposed task: it is created (validated again, as by the task API) and runs.
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations/{id}/proposals/{proposal_id}/confirm",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("proposal_id" = ProposalId, Path, description = "The proposal"),
    ),
    responses(
        (status = 202, description = "Confirmed: the task is queued (`task_id`)", body = ProposalRow,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}` of the new task"))),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`proposal_not_pending`: already confirmed, or superseded by a later \
                                      message; `appliance_revoked`: the appliance can no longer run tasks",
            body = ErrorBody),
        (status = 422, description = "`invalid_params`: the catalog refuses the task (e.g. it changed since)",
            body = ErrorBody),
    )
)]
async fn confirm_proposal(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ids: Result<Path<(ConversationId, ProposalId)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((conversation, id)) = ids?;
    let actor = caller.actor();
    let row =
        support::confirm_proposal(&s.domain, tenant, conversation, id, Recorder::new(&actor, Some(&rid.0))).await?;
    let location = row.task_id.map(|t| format!("/api/v1/tasks/{t}")).unwrap_or_default();
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], ApiJson(row)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct ConfirmedPlan {
    /// Every step of the message's plan, in order, the ones that were waiting now confirmed
    /// with their `task_id`.
    proposals: Vec<ProposalRow>,
}

/// Confirm every waiting step of the plan an assistant message proposes, in order: all their
/// tasks are created (each validated again, as by the task API), or none.
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations/{id}/messages/{message_id}/confirm",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("message_id" = MessageId, Path, description = "The assistant message that proposes the plan"),
    ),
    responses(
        (status = 202, description = "Confirmed: the tasks are queued, in the plan's order", body = ConfirmedPlan),
        (status = 400, response = BadRequest),
        (status = 403, response = TenantForbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "`proposal_not_pending`: no step is waiting any more (confirmed, or \
                                      superseded by a later message); `appliance_revoked`: the appliance can no \
                                      longer run tasks (then none was created)",
            body = ErrorBody),
        (status = 422, description = "`invalid_params`: the catalog refuses a step (then none was created)",
            body = ErrorBody),
    )
)]
async fn confirm_plan(
    State(s): State<AppState>,
    Tenant(tenant): Tenant,
    caller: Caller,
    rid: RequestId,
    ids: Result<Path<(ConversationId, MessageId)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((conversation, message)) = ids?;
    let actor = caller.actor();
    let proposals =
        support::confirm_plan(&s.domain, tenant, conversation, message, Recorder::new(&actor, Some(&rid.0))).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(ConfirmedPlan { proposals })).into_response())
}

/// The tenant's assistant settings.
#[utoipa::path(
    get,
    path = "/api/v1/support/settings",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "The settings in force", body = Settings),
        (status = 403, response = TenantForbidden),
    )
)]
async fn get_settings(State(s): State<AppState>, Tenant(tenant): Tenant) -> Result<ApiJson<Settings>, ApiError> {
    Ok(ApiJson(support::settings(&s.domain, tenant).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutSettings {
    /// `false`: low-risk proposals run without confirmation; `null`: the service's default.
    confirm_low_risk: Option<bool>,
}

/// Change the tenant's assistant settings (owners).
#[utoipa::path(
    put,
    path = "/api/v1/support/settings",
    tag = "support",
    security(("session_token" = [])),
    request_body = PutSettings,
    responses(
        (status = 200, description = "The settings now in force", body = Settings),
        (status = 400, response = BadRequest),
        (status = 403, response = OwnerForbidden),
    )
)]
async fn put_settings(
    State(s): State<AppState>,
    owner: Owner,
    rid: RequestId,
    ApiJson(req): ApiJson<PutSettings>,
) -> Result<ApiJson<Settings>, ApiError> {
    let audit = Recorder::new(&owner.actor, Some(&rid.0));
    Ok(ApiJson(support::set_settings(&s.domain, owner.tenant, req.confirm_low_risk, audit).await?))
}
