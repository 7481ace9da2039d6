//! The support chat: a customer's conversations with the assistant, stored per tenant.
//!
//! - [`start`], [`list`], [`get`]: conversations (optionally about one appliance), each
//!   with its messages and, on the assistant's, their proposals.
//! - [`post_message`]: a checked [`CustomerText`] is stored with the conversation locked
//!   (superseding any waiting proposal), then the assistant is asked with no lock held, and
//!   its reply and its plan (one proposal per step, in order) are stored; the leading
//!   low-risk steps of a tenant that opted out of confirming them are queued at once.
//! - [`confirm_proposal`]: a waiting proposal becomes a task through
//!   [`tasks::queue_in`](super::tasks::queue_in) (the task API's own validation), audited
//!   with the actor `assistant` on behalf of the customer; [`confirm_plan`] does so for
//!   every waiting step of a message's plan at once, in order, all or none.
//! - [`settings`], [`set_settings`]: whether low-risk proposals wait for confirmation.
//! - [`Follower`]: what the event stream reads each time it looks (messages after a cursor,
//!   proposals that changed, their tasks' status and log), as [`StreamEvent`]s.
//!
//! This module translates between the stored rows (`db::support`, `db::appliances`) and the
//! assistant's own types (`assistant::{Context, Turn, Answer}`); neither of those layers
//! knows the other.

use std::collections::HashMap;

use hearth_protocol::{ApplianceId, ConversationId, MessageId, ProposalId, TaskId, TenantId};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::tasks::{self, NewTask, TaskError};
use super::Services;
use crate::assistant::{
    ApplianceFacts, AssistantError, Context, Lang, TaskFacts, Turn, Usage, MAX_TURNS, MAX_TURN_CHARS,
};
use crate::config::TasksConfig;
use crate::db::appliances::{self, Appliance};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::support::{self as store, Conversation, Message, NewMessage, NewProposal, ProposalRow};
use crate::db::tasks::{EventRow, Task};
use crate::db::{self, tenant_tx};
use crate::model::{ActorKind, MessageRole, ProposalStatus, TaskStatus};

/// How many conversations [`list`] returns (the most recently active).
pub const LIST_LIMIT: i64 = 50;
/// Most messages the assistant reads back (the conversation's latest).
const HISTORY: i64 = 20;
/// Most appliances the assistant is told about.
const MAX_APPLIANCES: i64 = 500;
/// Recent tasks per appliance the assistant is told about (for "is my box ok?"), on at most
/// this many appliances.
const RECENT_TASKS: i64 = 5;
const RECENT_TASK_APPLIANCES: usize = 10;

/// One conversation with its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Oldest first, each assistant message with its proposal.
    pub messages: Vec<Message>,
}

/// A customer's message and the assistant's reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct Exchange {
    /// The customer's message as stored.
    pub customer: Message,
    /// The assistant's reply, with its proposal if it suggests a task.
    pub assistant: Message,
}

/// The tenant's assistant settings in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// Whether low-risk proposals wait for confirmation (high-risk ones always do).
    pub confirm_low_risk: bool,
    /// The tenant's own choice; `null` follows the service's default.
    pub tenant_choice: Option<bool>,
    pub service_default: bool,
}

/// What a customer wrote, checked: not blank, at most [`MAX_TURN_CHARS`] characters once
/// trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerText(String);

impl CustomerText {
    pub fn parse(text: &str) -> Result<CustomerText, SupportError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SupportError::EmptyMessage);
        }
        let length = text.chars().count();
        if length > MAX_TURN_CHARS {
            return Err(SupportError::MessageTooLong { length, max: MAX_TURN_CHARS });
        }
        Ok(CustomerText(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("conversation not found")]
    ConversationNotFound,
    #[error("proposal not found")]
    ProposalNotFound,
    /// The appliance a new conversation is about is not the tenant's.
    #[error("appliance not found")]
    ApplianceNotFound,
    #[error("text must not be empty")]
    EmptyMessage,
    #[error("the message is {length} characters long; at most {max} are allowed")]
    MessageTooLong { length: usize, max: usize },
    #[error("this conversation has reached its {max} messages; open a new one", max = MAX_TURNS)]
    ConversationFull,
    #[error("{}", not_pending(*.0))]
    ProposalNotPending(ProposalStatus),
    /// The assistant refused the conversation itself (never the customer's words: those
    /// get a reply).
    #[error(transparent)]
    Assistant(#[from] AssistantError),
    /// The task answering the message ended abnormally.
    #[error("the assistant's task failed: {0}")]
    AnswerFailed(#[from] tokio::task::JoinError),
    /// Queuing the proposal's task was refused.
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn not_pending(status: ProposalStatus) -> &'static str {
    match status {
        ProposalStatus::Confirmed => "this proposal was already confirmed; its task is running or done",
        _ => "this proposal was superseded by a later message; ask again",
    }
}

/// Opens a conversation, optionally about one of the tenant's appliances.
pub async fn start(
    svc: &Services,
    tenant: TenantId,
    appliance: Option<ApplianceId>,
    started_by: &Actor,
) -> Result<ConversationDetail, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    if let Some(a) = appliance {
        appliances::get(&mut tx, tenant, a).await?.ok_or(SupportError::ApplianceNotFound)?;
    }
    let conversation = store::create_conversation(&mut tx, tenant, appliance, &started_by.label()).await?;
    tx.commit().await?;
    Ok(ConversationDetail { conversation, messages: Vec::new() })
}

/// The tenant's [`LIST_LIMIT`] most recently active conversations, newest first.
pub async fn list(svc: &Services, tenant: TenantId) -> Result<Vec<Conversation>, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let conversations = store::list_conversations(&mut tx, tenant, LIST_LIMIT).await?;
    tx.commit().await?;
    Ok(conversations)
}

/// One conversation with its messages and proposals.
pub async fn get(svc: &Services, tenant: TenantId, id: ConversationId) -> Result<ConversationDetail, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let conversation =
        store::get_conversation(&mut tx, tenant, id, false).await?.ok_or(SupportError::ConversationNotFound)?;
    let messages = store::messages(&mut tx, tenant, id, 0).await?;
    tx.commit().await?;
    Ok(ConversationDetail { conversation, messages })
}

/// Stores the customer's message, asks the assistant and stores its reply with its proposal.
///
/// The customer's message is stored (and shown on the event stream) before the assistant is
/// asked, which may take the LLM's time; no lock is held meanwhile. The answer is asked for
/// and stored in a task of its own, so a client that goes away mid-answer still finds the
/// reply in the conversation afterwards.
pub async fn post_message(
    svc: &Services,
    tenant: TenantId,
    id: ConversationId,
    text: CustomerText,
    audit: Recorder<'_>,
) -> Result<Exchange, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let conversation =
        store::get_conversation(&mut tx, tenant, id, true).await?.ok_or(SupportError::ConversationNotFound)?;
    if store::count_messages(&mut tx, tenant, id).await? + 2 > MAX_TURNS as i64 {
        return Err(SupportError::ConversationFull);
    }
    let ctx = context(&mut tx, svc, tenant, conversation.appliance_id).await?;
    let history = store::recent_messages(&mut tx, tenant, id, HISTORY - 1).await?;
    let customer = store::append_message(
        &mut tx,
        tenant,
        id,
        NewMessage { role: MessageRole::Customer, text: text.as_str(), backend: None, degraded: false },
    )
    .await?;
    store::supersede_pending(&mut tx, tenant, id).await?;
    tx.commit().await?;

    let mut turns: Vec<Turn> = history.iter().map(turn).collect();
    turns.push(Turn::customer(text.0));
    let (actor, request_id) = (audit.actor.clone(), audit.request_id.map(str::to_owned));
    let assistant = tokio::spawn(answer(svc.clone(), tenant, id, ctx, turns, actor, request_id)).await??;
    Ok(Exchange { customer, assistant })
}

/// Asks the assistant and stores its reply with its proposal (queued at once when no
/// confirmation is needed). `actor` wrote the message being answered.
async fn answer(
    svc: Services,
    tenant: TenantId,
    id: ConversationId,
    ctx: Context,
    turns: Vec<Turn>,
    actor: Actor,
    request_id: Option<String>,
) -> Result<Message, SupportError> {
    let asked = std::time::Instant::now();
    let answer = svc.assistant.respond(&ctx, &turns).await?;
    let backend = answer.backend_used.as_str();
    svc.metrics.assistant_duration.with_label_values(&[backend]).observe(asked.elapsed().as_secs_f64());
    svc.metrics.assistant_answers.with_label_values(&[backend, if answer.degraded { "true" } else { "false" }]).inc();

    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    store::get_conversation(&mut tx, tenant, id, true).await?.ok_or(SupportError::ConversationNotFound)?;
    let reply = NewMessage {
        role: MessageRole::Assistant,
        text: &answer.reply,
        backend: Some(backend),
        degraded: answer.degraded,
    };
    let mut reply = store::append_message(&mut tx, tenant, id, reply).await?;
    let mut queued = false;
    // Steps run in order: only the leading ones that need no confirmation start at once.
    let mut run_now = true;
    for (i, p) in answer.proposals.iter().enumerate() {
        let proposal = NewProposal {
            appliance_id: p.appliance_id,
            action: &p.action,
            params: &p.params,
            risk: p.risk,
            needs_confirmation: p.needs_confirmation,
            step: i as i32 + 1,
            summary: &p.summary,
            language: p.language.code(),
        };
        let mut row = store::insert_proposal(&mut tx, tenant, id, reply.id, proposal).await?;
        run_now &= !p.needs_confirmation;
        if run_now {
            // The tenant opted out of confirming low-risk tasks: it runs now. If the task
            // API refuses it (the appliance was revoked meanwhile…), it waits for a
            // confirmation, which will say why, and so do the steps after it.
            let audit = Recorder::new(&actor, request_id.as_deref());
            match run(&mut tx, &svc.tasks, tenant, row.clone(), audit, false).await {
                Ok(confirmed) => {
                    row = confirmed;
                    queued = true;
                }
                Err(SupportError::Database(e) | SupportError::Task(TaskError::Database(e))) => return Err(e.into()),
                Err(refusal) => {
                    run_now = false;
                    tracing::warn!(proposal = %row.id, error = %refusal, "support: could not queue a proposal at once")
                }
            }
        }
        reply.plan.push(row);
    }
    reply.proposal = reply.plan.first().cloned();
    tx.commit().await?;
    if queued {
        svc.wake.wake();
    }
    Ok(reply)
}

/// What the assistant knows of the tenant: its appliances that can still run tasks, their
/// latest facts, and whether low-risk tasks wait for confirmation.
async fn context(
    conn: &mut PgConnection,
    svc: &Services,
    tenant: TenantId,
    current: Option<ApplianceId>,
) -> Result<Context, sqlx::Error> {
    let boxes = appliances::list(conn, tenant, None, MAX_APPLIANCES).await?;
    let facts: Vec<ApplianceFacts> = boxes.iter().filter(|a| a.revoked_at.is_none()).map(facts).collect();
    let ids: Vec<ApplianceId> = facts.iter().take(RECENT_TASK_APPLIANCES).map(|a| a.id).collect();
    let recent = db::tasks::recent_for_appliances(conn, tenant, &ids, RECENT_TASKS)
        .await?
        .into_iter()
        .map(|t| TaskFacts {
            appliance_id: t.appliance_id,
            action: t.action,
            params: match t.params {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
            status: t.status.to_string(),
            at: t.finished_at.unwrap_or(t.created_at),
        })
        .collect();
    let mut ctx = Context::new(facts, &svc.assistant_config);
    ctx.current_appliance = current;
    ctx.recent_tasks = recent;
    if let Some(choice) = store::confirm_low_risk(conn, tenant).await? {
        ctx.confirm_low_risk = choice;
    }
    Ok(ctx)
}

/// An appliance as the assistant sees it: facts from its latest heartbeat (`metrics`);
/// addresses are not reported yet.
fn facts(a: &Appliance) -> ApplianceFacts {
    let m: Option<serde_json::Value> = a.metrics.as_ref().and_then(|raw| serde_json::from_str(raw.get()).ok());
    let m = m.as_ref();
    let usage = |key: &str| m.and_then(|m| serde_json::from_value::<Usage>(m.get(key)?.clone()).ok());
    ApplianceFacts {
        id: a.id,
        name: a.name.clone(),
        status: a.status.to_string(),
        last_seen: a.last_seen,
        agent_version: a.agent_version.clone(),
        addresses: Vec::new(),
        disk: usage("root_fs"),
        memory: usage("memory"),
        uptime_s: m.and_then(|m| m.get("uptime_s")?.as_u64()),
    }
}

/// A stored message as a turn of the conversation the assistant reads.
fn turn(m: &Message) -> Turn {
    // The assistant's own long answers (knowledge articles) are cut to what a turn may hold.
    Turn { role: m.role, text: m.text.chars().take(MAX_TURN_CHARS).collect() }
}

/// Creates the proposal's task (validated again by the task API's own path) and marks the
/// proposal confirmed. The audit trail names the assistant as the actor, on behalf of the
/// customer `audit` names, who confirmed (`confirmed`: also recorded as
/// `support.proposal.confirm`) or wrote, when no confirmation was needed.
async fn run(
    tx: &mut PgConnection,
    cfg: &TasksConfig,
    tenant: TenantId,
    proposal: ProposalRow,
    audit: Recorder<'_>,
    confirmed: bool,
) -> Result<ProposalRow, SupportError> {
    let params = match &proposal.params {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let assistant =
        Actor { kind: ActorKind::Assistant, id: Some(proposal.id.to_string()), name: Some(audit.actor.label()) };
    let req = NewTask { action: proposal.action.clone(), params, deadline_s: None };
    let task =
        tasks::queue_in(tx, cfg, tenant, proposal.appliance_id, req, Recorder::new(&assistant, audit.request_id))
            .await?;
    let row = store::confirm(tx, tenant, proposal.id, task).await?;
    if confirmed {
        audit
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

/// Confirms a waiting proposal: its task is created (validated again, as by the task API)
/// and the dispatcher woken.
pub async fn confirm_proposal(
    svc: &Services,
    tenant: TenantId,
    conversation: ConversationId,
    id: ProposalId,
    audit: Recorder<'_>,
) -> Result<ProposalRow, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let proposal =
        store::lock_proposal(&mut tx, tenant, conversation, id).await?.ok_or(SupportError::ProposalNotFound)?;
    if proposal.status != ProposalStatus::Pending {
        return Err(SupportError::ProposalNotPending(proposal.status));
    }
    let row = run(&mut tx, &svc.tasks, tenant, proposal, audit, true).await?;
    tx.commit().await?;
    svc.wake.wake();
    Ok(row)
}

/// Confirms every waiting step of the plan proposed in `message`, in order, in one
/// transaction: all their tasks are created, or (one refused) none.
pub async fn confirm_plan(
    svc: &Services,
    tenant: TenantId,
    conversation: ConversationId,
    message: MessageId,
    audit: Recorder<'_>,
) -> Result<Vec<ProposalRow>, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    store::get_conversation(&mut tx, tenant, conversation, false).await?.ok_or(SupportError::ConversationNotFound)?;
    let plan = store::lock_plan(&mut tx, tenant, conversation, message).await?;
    let Some(first) = plan.first() else { return Err(SupportError::ProposalNotFound) };
    if !plan.iter().any(|p| p.status == ProposalStatus::Pending) {
        let status = plan.iter().find(|p| p.status != ProposalStatus::Confirmed).unwrap_or(first).status;
        return Err(SupportError::ProposalNotPending(status));
    }
    let mut rows = Vec::with_capacity(plan.len());
    for p in plan {
        if p.status == ProposalStatus::Pending {
            rows.push(run(&mut tx, &svc.tasks, tenant, p, Recorder::new(audit.actor, audit.request_id), true).await?);
        } else {
            rows.push(p);
        }
    }
    tx.commit().await?;
    svc.wake.wake();
    Ok(rows)
}

/// The tenant's assistant settings.
pub async fn settings(svc: &Services, tenant: TenantId) -> Result<Settings, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let choice = store::confirm_low_risk(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(settings_with(svc, choice))
}

/// Sets (or, with `None`, resets to the service's default) whether low-risk proposals wait
/// for confirmation; audited (`support.settings.update`).
pub async fn set_settings(
    svc: &Services,
    tenant: TenantId,
    confirm_low_risk: Option<bool>,
    audit: Recorder<'_>,
) -> Result<Settings, SupportError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let before = store::confirm_low_risk(&mut tx, tenant).await?;
    store::set_confirm_low_risk(&mut tx, tenant, confirm_low_risk).await?;
    audit
        .record(
            &mut tx,
            Some(tenant),
            "support.settings.update",
            ("tenant", tenant.to_string()),
            Some(serde_json::json!({ "confirm_low_risk": before })),
            Some(serde_json::json!({ "confirm_low_risk": confirm_low_risk })),
        )
        .await?;
    tx.commit().await?;
    Ok(settings_with(svc, confirm_low_risk))
}

fn settings_with(svc: &Services, choice: Option<bool>) -> Settings {
    let service_default = svc.assistant_config.confirm_low_risk;
    Settings { confirm_low_risk: choice.unwrap_or(service_default), tenant_choice: choice, service_default }
}

/// One event of a conversation's event stream: its `data` is the JSON of the variant.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StreamEvent {
    /// `message`: a message (with its proposal); the stream's event id is its `seq`.
    Message(Message),
    /// `proposal`: a proposal appeared or changed (confirmed, superseded, task created).
    Proposal(ProposalRow),
    /// `task`: a proposal's task changed status (the task without its log).
    Task(TaskChange),
    /// `task_event`: one new line of a task's log.
    TaskEvent(TaskLogLine),
    /// `end`: the stream closes.
    End(StreamEnd),
}

impl StreamEvent {
    /// The event's name on the stream.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Message(_) => "message",
            StreamEvent::Proposal(_) => "proposal",
            StreamEvent::Task(_) => "task",
            StreamEvent::TaskEvent(_) => "task_event",
            StreamEvent::End(_) => "end",
        }
    }
}

/// A proposal's task, without its log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskChange {
    pub proposal_id: ProposalId,
    pub task: Task,
    /// Once it has finished: what it did in words of the customer's language ("Emma can now
    /// sign in"), or that it did not work; the task's own `message`, `stats` and log stay
    /// the technical account.
    pub outcome: Option<String>,
}

/// One event of a task's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskLogLine {
    pub task_id: TaskId,
    pub event: EventRow,
}

/// Why the stream closed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct StreamEnd {
    pub reason: EndReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The conversation no longer exists.
    ConversationGone,
    /// The conversation could not be read (logged).
    Error,
    /// The server is shutting down.
    Shutdown,
    /// The stream has been open its maximum time: reconnect (with `Last-Event-ID`).
    Reconnect,
}

/// What one follower of a conversation has been told, and the queries that find what is new.
#[derive(Debug)]
pub struct Follower {
    tenant: TenantId,
    conversation: ConversationId,
    /// The last message number sent.
    cursor: i32,
    proposals: HashMap<ProposalId, ProposalRow>,
    tasks: HashMap<TaskId, TaskSeen>,
}

/// Per task: its last status and the last event number sent; done once final with its whole
/// log sent.
#[derive(Debug, Default)]
struct TaskSeen {
    status: Option<TaskStatus>,
    last_seq: i64,
    done: bool,
}

impl Follower {
    /// Follows one of the tenant's conversations from after message `after` (0: all).
    pub async fn open(
        svc: &Services,
        tenant: TenantId,
        conversation: ConversationId,
        after: i32,
    ) -> Result<Follower, SupportError> {
        let mut tx = tenant_tx(&svc.pool, tenant).await?;
        store::get_conversation(&mut tx, tenant, conversation, false)
            .await?
            .ok_or(SupportError::ConversationNotFound)?;
        tx.commit().await?;
        Ok(Follower { tenant, conversation, cursor: after.max(0), proposals: HashMap::new(), tasks: HashMap::new() })
    }

    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }

    /// One look at the conversation, in a tenant transaction: the events not yet seen (new
    /// messages, then changed proposals, then their tasks' new log lines and status
    /// changes); `None` if the conversation is gone.
    pub async fn poll(&mut self, svc: &Services) -> Result<Option<Vec<StreamEvent>>, SupportError> {
        let (tenant, conversation) = (self.tenant, self.conversation);
        let mut tx = tenant_tx(&svc.pool, tenant).await?;
        if store::get_conversation(&mut tx, tenant, conversation, false).await?.is_none() {
            return Ok(None);
        }
        let mut events = Vec::new();
        for m in store::messages(&mut tx, tenant, conversation, self.cursor).await? {
            self.cursor = m.seq;
            if let Some(p) = &m.proposal {
                self.proposals.insert(p.id, p.clone());
            }
            events.push(StreamEvent::Message(m));
        }
        for p in store::proposals(&mut tx, tenant, conversation).await? {
            if self.proposals.get(&p.id) != Some(&p) {
                events.push(StreamEvent::Proposal(p.clone()));
                self.proposals.insert(p.id, p);
            }
        }
        let running: Vec<(ProposalId, TaskId)> =
            self.proposals.values().filter_map(|p| Some((p.id, p.task_id?))).collect();
        for (proposal_id, task_id) in running {
            let proposal = self.proposals.get(&proposal_id).cloned();
            let seen = self.tasks.entry(task_id).or_default();
            if seen.done {
                continue;
            }
            let Some(task) = db::tasks::get(&mut tx, tenant, task_id).await? else { continue };
            let log = db::tasks::events(&mut tx, tenant, task_id).await?;
            let sent = seen.last_seq;
            for e in log.iter().filter(|e| e.seq > sent) {
                seen.last_seq = e.seq;
                events.push(StreamEvent::TaskEvent(TaskLogLine { task_id, event: e.clone() }));
            }
            let log_complete = task.events_expected.is_none_or(|n| log.len() as i64 >= n);
            seen.done = task.status.is_final() && log_complete;
            if Some(task.status) != seen.status {
                seen.status = Some(task.status);
                let outcome = proposal.as_ref().and_then(|p| outcome(p, &task));
                events.push(StreamEvent::Task(TaskChange { proposal_id, task, outcome }));
            }
        }
        tx.commit().await?;
        Ok(Some(events))
    }
}

/// A finished task of a proposal in the customer's words.
pub fn outcome(p: &ProposalRow, task: &Task) -> Option<String> {
    let params = match &p.params {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let lang = Lang::from_code(&p.language);
    match task.status {
        TaskStatus::Succeeded => Some(crate::assistant::outcome(&p.action, &params, true, lang)),
        TaskStatus::Failed | TaskStatus::TimedOut => Some(crate::assistant::outcome(&p.action, &params, false, lang)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_text_is_trimmed_and_bounded() {
        assert_eq!(CustomerText::parse("  hello ").unwrap().as_str(), "hello");
        assert!(matches!(CustomerText::parse(" \n "), Err(SupportError::EmptyMessage)));
        assert!(CustomerText::parse(&"é".repeat(MAX_TURN_CHARS)).is_ok());
        let long = "x".repeat(MAX_TURN_CHARS + 1);
        assert!(
            matches!(CustomerText::parse(&long), Err(SupportError::MessageTooLong { length, .. }) if length == MAX_TURN_CHARS + 1)
        );
    }

    #[test]
    fn stream_events_serialise_as_their_payload() {
        let end = StreamEvent::End(StreamEnd { reason: EndReason::ConversationGone });
        assert_eq!(end.name(), "end");
        assert_eq!(serde_json::to_value(&end).unwrap(), serde_json::json!({ "reason": "conversation_gone" }));
    }
}
