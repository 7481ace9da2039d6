//! The support chat: a customer's conversations with the assistant, stored per tenant.
//!
//! - `POST /api/v1/support/conversations` opens one (optionally about one appliance);
//!   `GET` lists them, `GET …/{id}` shows one with its messages.
//! - `POST …/{id}/messages` stores the customer's message, asks the assistant (limited per
//!   tenant by the plan's `assistant_per_hour`), stores the reply and its proposal, and
//!   returns both. A proposal waits for `POST …/{id}/proposals/{pid}/confirm`, which
//!   creates the task through the task API's own validation, audited with the actor
//!   `assistant`; a low-risk one runs at once if the tenant opted out of confirming them
//!   (`PUT /api/v1/support/settings`). Writing again supersedes a waiting proposal.
//! - `GET …/{id}/events` ([`stream`]): server-sent events of the conversation's messages,
//!   its proposals' changes and their tasks' progress.
//! - `GET /support` ([`page`]): the web page customers chat on.

mod page;
mod stream;

pub use stream::{StreamSlots, MAX_STREAMS_PER_TENANT};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_protocol::api::ErrorBody;
use hearth_protocol::ApplianceId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Caller, Owner, Tenant};
use super::error::{ApiError, ApiJson, BadRequest, NotFound, OwnerForbidden, TenantForbidden};
use super::{ratelimit, AppState, RequestId};
use crate::assistant::{self, ApplianceFacts, Context, Turn, MAX_TURNS, MAX_TURN_CHARS};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::support::{self, Conversation, Message, ProposalRow};
use crate::db::{appliances, tenant_tx};
use crate::domain::tasks::{queue_in, NewTask};
use crate::model::ActorKind;

/// Most messages the assistant reads back (the conversation's latest).
const HISTORY: i64 = 20;
/// Most appliances the assistant is told about.
const MAX_APPLIANCES: i64 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_conversation, list_conversations))
        .routes(routes!(get_conversation))
        .routes(routes!(post_message))
        .routes(routes!(confirm_proposal))
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

#[derive(Debug, Serialize, ToSchema)]
struct ConversationDetail {
    #[serde(flatten)]
    conversation: Conversation,
    /// Oldest first, each assistant message with its proposal.
    messages: Vec<Message>,
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
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    if let Some(a) = req.appliance_id {
        appliances::get(&mut tx, tenant, a).await?.ok_or(ApiError::NotFound("appliance"))?;
    }
    let conversation = support::create_conversation(&mut tx, tenant, req.appliance_id, &caller.actor().label()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/support/conversations/{}", conversation.id))],
        ApiJson(ConversationDetail { conversation, messages: Vec::new() }),
    )
        .into_response())
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
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let conversations = support::list_conversations(&mut tx, tenant, 50).await?;
    tx.commit().await?;
    Ok(ApiJson(ConversationList { conversations }))
}

/// One conversation with its messages and proposals.
#[utoipa::path(
    get,
    path = "/api/v1/support/conversations/{id}",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The conversation")),
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
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<ApiJson<ConversationDetail>, ApiError> {
    let Path(id) = id?;
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let conversation =
        support::get_conversation(&mut tx, tenant, id, false).await?.ok_or(ApiError::NotFound("conversation"))?;
    let messages = support::messages(&mut tx, tenant, id, 0).await?;
    tx.commit().await?;
    Ok(ApiJson(ConversationDetail { conversation, messages }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    /// What the customer wrote (at most 4000 characters).
    text: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Exchange {
    /// The customer's message as stored.
    customer: Message,
    /// The assistant's reply, with its proposal if it suggests a task.
    assistant: Message,
}

/// Write to the assistant: the reply and, when the customer asks for something the catalog
/// does, a proposed task (run after confirmation).
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations/{id}/messages",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(("id" = Uuid, Path, description = "The conversation")),
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
    id: Result<Path<Uuid>, PathRejection>,
    ApiJson(req): ApiJson<PostMessage>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let text = req.text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("invalid_body", "text must not be empty"));
    }
    let len = text.chars().count();
    if len > MAX_TURN_CHARS {
        return Err(ApiError::Unprocessable {
            code: "message_too_long",
            message: format!("the message is {len} characters long; at most {MAX_TURN_CHARS} are allowed"),
            details: serde_json::json!({ "max": MAX_TURN_CHARS, "length": len }),
        });
    }

    // Before the transaction: the check may read the tenant's quotas on a connection of its
    // own, which must not wait while this request holds one.
    let decision = s.rate_limits.check_assistant(&s.domain.pool, tenant).await?;
    if decision.retry_after.is_some() {
        return Ok(ratelimit::refusal(&s, &decision));
    }
    // The customer's message is stored (and shown on the stream) before the assistant is asked,
    // which may take the LLM's time; no lock is held meanwhile.
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let conversation =
        support::get_conversation(&mut tx, tenant, id, true).await?.ok_or(ApiError::NotFound("conversation"))?;
    if support::count_messages(&mut tx, tenant, id).await? + 2 > MAX_TURNS as i64 {
        return Err(ApiError::Conflict {
            code: "conversation_full",
            message: format!("this conversation has reached its {MAX_TURNS} messages; open a new one"),
        });
    }
    let ctx = context(&mut tx, &s, tenant, conversation.appliance_id).await?;
    let history = support::recent_messages(&mut tx, tenant, id, HISTORY - 1).await?;
    let customer = support::append_message(&mut tx, tenant, id, assistant::Role::Customer, text, None).await?;
    support::supersede_pending(&mut tx, tenant, id).await?;
    tx.commit().await?;

    let mut turns: Vec<Turn> = history.iter().map(turn).collect();
    turns.push(Turn::customer(text));
    // Answered and stored in a task of its own: a client that goes away mid-answer (an LLM
    // may take seconds) still finds the reply in the conversation afterwards.
    let reply = tokio::spawn(answer(s.clone(), tenant, id, ctx, turns, caller, rid))
        .await
        .map_err(|e| ApiError::Internal(format!("the assistant's task failed: {e}")))??;
    let mut r = (StatusCode::CREATED, ApiJson(Exchange { customer, assistant: reply })).into_response();
    ratelimit::describe(&mut r, &decision);
    Ok(r)
}

/// Asks the assistant and stores its reply with its proposal (queued at once when no
/// confirmation is needed).
async fn answer(
    s: AppState,
    tenant: hearth_protocol::TenantId,
    id: Uuid,
    ctx: Context,
    turns: Vec<Turn>,
    caller: Caller,
    rid: RequestId,
) -> Result<Message, ApiError> {
    let asked = std::time::Instant::now();
    let answer = s.domain.assistant.respond(&ctx, &turns).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let backend = answer.backend_used.as_str();
    s.metrics.assistant_duration.with_label_values(&[backend]).observe(asked.elapsed().as_secs_f64());
    s.metrics.assistant_answers.with_label_values(&[backend, if answer.degraded { "true" } else { "false" }]).inc();

    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    support::get_conversation(&mut tx, tenant, id, true).await?.ok_or(ApiError::NotFound("conversation"))?;
    let mut reply =
        support::append_message(&mut tx, tenant, id, assistant::Role::Assistant, &answer.reply, Some(&answer)).await?;
    let mut queued = false;
    if let Some(p) = &answer.proposal {
        let mut row = support::insert_proposal(&mut tx, tenant, id, reply.id, p).await?;
        if !p.needs_confirmation {
            // The tenant opted out of confirming low-risk tasks: it runs now. If the task
            // API refuses it (the appliance was revoked meanwhile…), it waits for a
            // confirmation, which will say why.
            match run(&mut tx, &s, tenant, row.clone(), &caller, None, &rid).await {
                Ok(confirmed) => {
                    row = confirmed;
                    queued = true;
                }
                Err(ApiError::Database(e)) => return Err(e.into()),
                Err(refusal) => {
                    tracing::warn!(proposal = %row.id, error = %refusal, "support: could not queue a proposal at once")
                }
            }
        }
        reply.proposal = Some(row);
    }
    tx.commit().await?;
    if queued {
        s.domain.wake.wake();
    }
    Ok(reply)
}

/// What the assistant knows of the tenant: its appliances that can still run tasks, their
/// latest facts, and whether low-risk tasks wait for confirmation.
async fn context(
    conn: &mut PgConnection,
    s: &AppState,
    tenant: hearth_protocol::TenantId,
    current: Option<ApplianceId>,
) -> Result<Context, ApiError> {
    let boxes = appliances::list(conn, tenant, None, MAX_APPLIANCES).await?;
    let facts: Vec<ApplianceFacts> =
        boxes.iter().filter(|a| a.revoked_at.is_none()).map(ApplianceFacts::from).collect();
    let mut ctx = Context::new(facts, &s.domain.assistant_config);
    ctx.current_appliance = current;
    if let Some(choice) = support::confirm_low_risk(conn, tenant).await? {
        ctx.confirm_low_risk = choice;
    }
    Ok(ctx)
}

fn turn(m: &Message) -> Turn {
    // The assistant's own long answers (knowledge articles) are cut to what a turn may hold.
    let text: String = m.text.chars().take(MAX_TURN_CHARS).collect();
    if m.role == "customer" {
        Turn::customer(text)
    } else {
        Turn::assistant(text)
    }
}

/// Creates the proposal's task (validated again by the task API's own path) and marks the
/// proposal confirmed. The audit trail names the assistant as the actor, on behalf of the
/// customer who confirmed (or wrote, when no confirmation was needed).
async fn run(
    tx: &mut PgConnection,
    s: &AppState,
    tenant: hearth_protocol::TenantId,
    proposal: ProposalRow,
    caller: &Caller,
    confirmed_by: Option<&Actor>,
    rid: &RequestId,
) -> Result<ProposalRow, ApiError> {
    let params = match &proposal.params {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let actor =
        Actor { kind: ActorKind::Assistant, id: Some(proposal.id.to_string()), name: Some(caller.actor().label()) };
    let req = NewTask { action: proposal.action.clone(), params, deadline_s: None };
    let task =
        queue_in(tx, &s.domain.tasks, tenant, proposal.appliance_id, req, Recorder::new(&actor, Some(&rid.0))).await?;
    let row = support::confirm(tx, tenant, proposal.id, task).await?;
    if let Some(who) = confirmed_by {
        Recorder::new(who, Some(&rid.0))
            .record(
                tx,
                Some(tenant),
                "support.proposal.confirm",
                ("support_proposal", row.id.to_string()),
                snapshot(&proposal),
                snapshot(&row),
            )
            .await?;
    }
    tracing::info!(proposal = %row.id, %task, action = %row.action, "support: proposal confirmed, task queued");
    Ok(row)
}

/// Confirm a proposed task: it is created (validated again, as by the task API) and runs.
#[utoipa::path(
    post,
    path = "/api/v1/support/conversations/{id}/proposals/{proposal_id}/confirm",
    tag = "support",
    security(("tenant_key" = []), ("session_token" = [])),
    params(
        ("id" = Uuid, Path, description = "The conversation"),
        ("proposal_id" = Uuid, Path, description = "The proposal"),
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
    ids: Result<Path<(Uuid, Uuid)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((conversation, id)) = ids?;
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let proposal =
        support::lock_proposal(&mut tx, tenant, conversation, id).await?.ok_or(ApiError::NotFound("proposal"))?;
    if proposal.status != "pending" {
        return Err(ApiError::Conflict {
            code: "proposal_not_pending",
            message: match proposal.status.as_str() {
                "confirmed" => "this proposal was already confirmed; its task is running or done".into(),
                _ => "this proposal was superseded by a later message; ask again".into(),
            },
        });
    }
    let row = run(&mut tx, &s, tenant, proposal, &caller, Some(&caller.actor()), &rid).await?;
    tx.commit().await?;
    s.domain.wake.wake();
    let location = row.task_id.map(|t| format!("/api/v1/tasks/{t}")).unwrap_or_default();
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], ApiJson(row)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct Settings {
    /// Whether low-risk proposals wait for confirmation (high-risk ones always do).
    confirm_low_risk: bool,
    /// The tenant's own choice; `null` follows the service's default.
    tenant_choice: Option<bool>,
    service_default: bool,
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
    let mut tx = tenant_tx(&s.domain.pool, tenant).await?;
    let choice = support::confirm_low_risk(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(ApiJson(settings(&s, choice)))
}

fn settings(s: &AppState, choice: Option<bool>) -> Settings {
    let service_default = s.domain.assistant_config.confirm_low_risk;
    Settings { confirm_low_risk: choice.unwrap_or(service_default), tenant_choice: choice, service_default }
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
    let mut tx = tenant_tx(&s.domain.pool, owner.tenant).await?;
    let before = support::confirm_low_risk(&mut tx, owner.tenant).await?;
    support::set_confirm_low_risk(&mut tx, owner.tenant, req.confirm_low_risk).await?;
    Recorder::new(&owner.actor, Some(&rid.0))
        .record(
            &mut tx,
            Some(owner.tenant),
            "support.settings.update",
            ("tenant", owner.tenant.to_string()),
            Some(serde_json::json!({ "confirm_low_risk": before })),
            Some(serde_json::json!({ "confirm_low_risk": req.confirm_low_risk })),
        )
        .await?;
    tx.commit().await?;
    Ok(ApiJson(settings(&s, req.confirm_low_risk)))
}
