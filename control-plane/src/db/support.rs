//! The support chat's records: conversations, their messages (numbered 1, 2, 3… per
//! conversation, the event stream's cursor) and the tasks the assistant proposed in them.
//! Every function takes the tenant and filters by it, and runs in a tenant transaction
//! (`db::tenant_tx`), so row-level security backs each filter.

use hearth_protocol::catalog::Risk;
use hearth_protocol::{ApplianceId, ConversationId, MessageId, ProposalId, TaskId, TenantId};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::model::{MessageRole, ProposalStatus};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Conversation {
    pub id: ConversationId,
    /// The appliance the chat is about when the customer names none.
    pub appliance_id: Option<ApplianceId>,
    /// `tenant_user:<e-mail>` or `tenant_key:<prefix>`.
    pub started_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A task the assistant proposed: one step of the plan its message proposes.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SupportProposal)]
pub struct ProposalRow {
    pub id: ProposalId,
    #[serde(skip)]
    pub message_id: MessageId,
    pub appliance_id: ApplianceId,
    /// A catalog action.
    pub action: String,
    /// As the catalog validator returned them: what the task will store.
    #[schema(value_type = Object)]
    pub params: Value,
    /// `low` or `high`.
    pub risk: String,
    /// False only for low-risk actions of a tenant that opted out of confirming them (the
    /// task was then created at once).
    pub needs_confirmation: bool,
    /// Its place in the message's plan: 1, 2, 3… in the order the customer asked.
    pub step: i32,
    /// What it does, in words of the customer's language (the action id is `action`).
    pub summary: String,
    /// The customer's language: `en`, `de` or `es`.
    pub language: String,
    /// `pending` (waits for the customer), `confirmed` (the task exists), `superseded` (the
    /// customer wrote again first; it can no longer be confirmed).
    pub status: ProposalStatus,
    pub task_id: Option<TaskId>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SupportMessage)]
pub struct Message {
    pub id: MessageId,
    /// 1, 2, 3… within the conversation.
    pub seq: i32,
    pub role: MessageRole,
    /// Plain text (the assistant's may hold a little markdown).
    #[sqlx(rename = "body")]
    pub text: String,
    /// Assistant messages: `rules` or `ollama`.
    pub backend: Option<String>,
    /// The LLM had failed and the rules backend answered (the text says so).
    pub degraded: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The first (or only) task this message proposes, if any: `plan[0]`.
    #[sqlx(skip)]
    pub proposal: Option<ProposalRow>,
    /// Every task this message proposes, in order (several steps of one request); empty when
    /// none.
    #[sqlx(skip)]
    pub plan: Vec<ProposalRow>,
}

const CONVERSATION: &str = "id, appliance_id, started_by, created_at, updated_at";
const MESSAGE: &str = "id, seq, role, body, backend, degraded, created_at";
const PROPOSAL: &str = "id, message_id, appliance_id, action, params, risk, needs_confirmation, step, summary, \
                        language, status, task_id, decided_at";

pub async fn create_conversation(
    conn: &mut PgConnection,
    tenant: TenantId,
    appliance: Option<ApplianceId>,
    started_by: &str,
) -> Result<Conversation, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO support_conversations (id, tenant_id, appliance_id, started_by) VALUES ($1, $2, $3, $4)
         RETURNING {CONVERSATION}"
    ))
    .bind(ConversationId::new())
    .bind(tenant)
    .bind(appliance)
    .bind(started_by)
    .fetch_one(conn)
    .await
}

/// The tenant's conversations, most recently active first.
pub async fn list_conversations(
    conn: &mut PgConnection,
    tenant: TenantId,
    limit: i64,
) -> Result<Vec<Conversation>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {CONVERSATION} FROM support_conversations WHERE tenant_id = $1 ORDER BY updated_at DESC, id DESC
         LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One conversation; `lock` holds its row until the transaction ends, so that messages are
/// appended one at a time.
pub async fn get_conversation(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ConversationId,
    lock: bool,
) -> Result<Option<Conversation>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!("SELECT {CONVERSATION} FROM support_conversations WHERE tenant_id = $1 AND id = $2{lock}"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The conversation's messages after `after_seq`, oldest first, each with its proposal.
pub async fn messages(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    after_seq: i32,
) -> Result<Vec<Message>, sqlx::Error> {
    let mut messages: Vec<Message> = sqlx::query_as(&format!(
        "SELECT {MESSAGE} FROM support_messages WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3
         ORDER BY seq"
    ))
    .bind(tenant)
    .bind(conversation)
    .bind(after_seq)
    .fetch_all(&mut *conn)
    .await?;
    if messages.iter().any(|m| m.role == MessageRole::Assistant) {
        for p in proposals(conn, tenant, conversation).await? {
            if let Some(m) = messages.iter_mut().find(|m| m.id == p.message_id) {
                m.plan.push(p);
            }
        }
        for m in &mut messages {
            m.plan.sort_by_key(|p| p.step);
            m.proposal = m.plan.first().cloned();
        }
    }
    Ok(messages)
}

/// The last `n` messages, oldest first (the history the assistant reads).
pub async fn recent_messages(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    n: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let mut messages: Vec<Message> = sqlx::query_as(&format!(
        "SELECT {MESSAGE} FROM support_messages WHERE tenant_id = $1 AND conversation_id = $2
         ORDER BY seq DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(conversation)
    .bind(n)
    .fetch_all(conn)
    .await?;
    messages.reverse();
    Ok(messages)
}

/// How many messages the conversation has.
pub async fn count_messages(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM support_messages WHERE tenant_id = $1 AND conversation_id = $2")
        .bind(tenant)
        .bind(conversation)
        .fetch_one(conn)
        .await
}

/// A message to append.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub role: MessageRole,
    pub text: &'a str,
    /// The assistant's: the backend that answered (`rules`, `ollama`).
    pub backend: Option<&'a str>,
    /// The assistant's: the LLM had failed and the rules answered.
    pub degraded: bool,
}

/// Appends a message (call with the conversation locked).
pub async fn append_message(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    m: NewMessage<'_>,
) -> Result<Message, sqlx::Error> {
    let message: Message = sqlx::query_as(&format!(
        "INSERT INTO support_messages (id, conversation_id, tenant_id, seq, role, body, backend, degraded)
         SELECT $1, $2, $3, COALESCE(max(seq), 0) + 1, $4, $5, $6, $7
           FROM support_messages WHERE conversation_id = $2
         RETURNING {MESSAGE}"
    ))
    .bind(MessageId::new())
    .bind(conversation)
    .bind(tenant)
    .bind(m.role)
    .bind(m.text)
    .bind(m.backend)
    .bind(m.degraded)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE support_conversations SET updated_at = now() WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(conversation)
        .execute(conn)
        .await?;
    Ok(message)
}

/// A task the assistant proposed, as validated by the catalog.
#[derive(Debug, Clone, Copy)]
pub struct NewProposal<'a> {
    pub appliance_id: ApplianceId,
    pub action: &'a str,
    pub params: &'a Map<String, Value>,
    pub risk: Risk,
    pub needs_confirmation: bool,
    /// 1, 2, 3… within the message's plan.
    pub step: i32,
    pub summary: &'a str,
    pub language: &'a str,
}

/// Records one step of the plan the assistant proposed in `message`.
pub async fn insert_proposal(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    message: MessageId,
    p: NewProposal<'_>,
) -> Result<ProposalRow, sqlx::Error> {
    let risk = match p.risk {
        Risk::Low => "low",
        Risk::High => "high",
    };
    sqlx::query_as(&format!(
        "INSERT INTO support_proposals (id, tenant_id, conversation_id, message_id, appliance_id, action, params,
                                        risk, needs_confirmation, step, summary, language)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {PROPOSAL}"
    ))
    .bind(ProposalId::new())
    .bind(tenant)
    .bind(conversation)
    .bind(message)
    .bind(p.appliance_id)
    .bind(p.action)
    .bind(Value::Object(p.params.clone()))
    .bind(risk)
    .bind(p.needs_confirmation)
    .bind(p.step)
    .bind(p.summary)
    .bind(p.language)
    .fetch_one(conn)
    .await
}

/// The conversation's proposals, oldest first.
pub async fn proposals(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
) -> Result<Vec<ProposalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PROPOSAL} FROM support_proposals WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id, step"
    ))
    .bind(tenant)
    .bind(conversation)
    .fetch_all(conn)
    .await
}

/// One proposal, its row locked until the transaction ends.
pub async fn lock_proposal(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    id: ProposalId,
) -> Result<Option<ProposalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PROPOSAL} FROM support_proposals WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3
         FOR UPDATE"
    ))
    .bind(tenant)
    .bind(conversation)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The plan proposed in one message, in step order, its rows locked until the transaction
/// ends.
pub async fn lock_plan(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
    message: MessageId,
) -> Result<Vec<ProposalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PROPOSAL} FROM support_proposals WHERE tenant_id = $1 AND conversation_id = $2 AND message_id = $3
         ORDER BY step FOR UPDATE"
    ))
    .bind(tenant)
    .bind(conversation)
    .bind(message)
    .fetch_all(conn)
    .await
}

/// Marks a proposal confirmed, with the task created for it.
pub async fn confirm(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ProposalId,
    task: TaskId,
) -> Result<ProposalRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE support_proposals SET status = 'confirmed', task_id = $3, decided_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {PROPOSAL}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(task)
    .fetch_one(conn)
    .await
}

/// The customer wrote again: proposals still waiting can no longer be confirmed.
pub async fn supersede_pending(
    conn: &mut PgConnection,
    tenant: TenantId,
    conversation: ConversationId,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE support_proposals SET status = 'superseded', decided_at = now()
         WHERE tenant_id = $1 AND conversation_id = $2 AND status = 'pending'",
    )
    .bind(tenant)
    .bind(conversation)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Whether the tenant wants low-risk proposals confirmed (`None`: the service's default).
pub async fn confirm_low_risk(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<bool>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, Option<bool>>("SELECT assistant_confirm_low_risk FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?
        .flatten())
}

/// Sets (or, with `None`, resets to the service's default) the tenant's choice.
pub async fn set_confirm_low_risk(
    conn: &mut PgConnection,
    tenant: TenantId,
    value: Option<bool>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET assistant_confirm_low_risk = $2 WHERE id = $1")
        .bind(tenant)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}
