//! The audit trail: who changed what, when, before and after, under which request. Rows
//! are appended in the same transaction as the change they describe (a rolled-back change
//! leaves no entry) and are never updated or deleted (a trigger refuses it).

use hearth_protocol::TenantId;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::model::ActorKind;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<String>,
    /// A human label: operator token name, user e-mail, API key prefix.
    pub name: Option<String>,
}

impl Actor {
    pub fn cli() -> Actor {
        let user = std::env::var("USER").ok();
        Actor { kind: ActorKind::Cli, id: None, name: user }
    }
    pub fn system() -> Actor {
        Actor { kind: ActorKind::System, id: None, name: None }
    }
    /// An operator, by its token's id and name.
    pub fn operator(id: impl ToString, name: &str) -> Actor {
        Actor { kind: ActorKind::Operator, id: Some(id.to_string()), name: Some(name.to_owned()) }
    }
    /// A tenant's API key, by its id and prefix.
    pub fn tenant_key(id: impl ToString, prefix: &str) -> Actor {
        Actor { kind: ActorKind::TenantKey, id: Some(id.to_string()), name: Some(prefix.to_owned()) }
    }
    /// A signed-in tenant user, by id and e-mail address.
    pub fn tenant_user(id: impl ToString, email: &str) -> Actor {
        Actor { kind: ActorKind::TenantUser, id: Some(id.to_string()), name: Some(email.to_owned()) }
    }
    /// The label stored in `created_by` columns.
    pub fn label(&self) -> String {
        match (&self.name, &self.id) {
            (Some(n), _) => format!("{}:{n}", self.kind),
            (None, Some(id)) => format!("{}:{id}", self.kind),
            (None, None) => self.kind.as_str().to_string(),
        }
    }
}

/// One change.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a Actor,
    pub action: &'a str,
    pub target_kind: &'a str,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<&'a str>,
}

pub async fn record(conn: &mut PgConnection, e: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor_kind, actor_id, actor_name, action, target_kind, target_id,
                                before, after, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.tenant)
    .bind(e.actor.kind)
    .bind(&e.actor.id)
    .bind(&e.actor.name)
    .bind(e.action)
    .bind(e.target_kind)
    .bind(e.target_id)
    .bind(e.before)
    .bind(e.after)
    .bind(e.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// One audit trail entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditRow {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub tenant_id: Option<TenantId>,
    pub actor_kind: ActorKind,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

/// Filters for [`list`]; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<TenantId>,
    pub actor_kind: Option<ActorKind>,
    pub actor_id: Option<String>,
    /// Exact action, or a prefix ending in `.` (`tenant.` matches `tenant.create`, …).
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Entries older than this id (paging backwards from the newest).
    pub before_id: Option<i64>,
}

/// Newest first.
pub async fn list(pool: &PgPool, f: &Filter, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    let action_like = f.action.as_ref().map(|a| if a.ends_with('.') { format!("{a}%") } else { a.clone() });
    sqlx::query_as(
        "SELECT id, at, tenant_id, actor_kind, actor_id, actor_name, action, target_kind, target_id, before, after,
                request_id
         FROM audit_log
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR actor_kind = $2)
           AND ($3::text IS NULL OR actor_id = $3)
           AND ($4::text IS NULL OR action LIKE $4)
           AND ($5::text IS NULL OR target_id = $5)
           AND ($6::text IS NULL OR request_id = $6)
           AND ($7::timestamptz IS NULL OR at >= $7)
           AND ($8::timestamptz IS NULL OR at < $8)
           AND ($9::int8 IS NULL OR id < $9)
         ORDER BY id DESC LIMIT $10",
    )
    .bind(f.tenant)
    .bind(f.actor_kind)
    .bind(&f.actor_id)
    .bind(action_like)
    .bind(&f.target_id)
    .bind(&f.request_id)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One actor under one request: records its changes.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    pub actor: &'a Actor,
    pub request_id: Option<&'a str>,
}

impl<'a> Recorder<'a> {
    pub fn new(actor: &'a Actor, request_id: Option<&'a str>) -> Self {
        Recorder { actor, request_id }
    }

    /// Appends one entry; `target` is (kind, id).
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        tenant: Option<TenantId>,
        action: &str,
        target: (&str, String),
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), sqlx::Error> {
        record(
            conn,
            Entry {
                tenant,
                actor: self.actor,
                action,
                target_kind: target.0,
                target_id: Some(target.1),
                before,
                after,
                request_id: self.request_id,
            },
        )
        .await
    }
}

/// A value as the audit trail stores it.
pub fn snapshot<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}
